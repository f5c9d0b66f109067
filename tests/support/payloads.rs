//! Webhook bodies for the loop's events, made from GitHub's own example payloads
//! (`shared/fixtures/github-webhooks`) patched to the test installation and repository
//! (`acme/widgets`, default branch `main`), the given actors, and the time they are made.
//! Each returns the JSON bytes to sign and post.

use chrono::{SecondsFormat, Utc};
use serde_json::{Value, json};

use super::fake_github::{APP_ID, account_id};
use super::{INSTALLATION_ID, OWNER, REPO, fixture};

const API: &str = "https://api.github.com";

/// `issue_comment`/`created`: `login` (of type `user_type`, `User` or `Bot`) comments `body` on
/// issue `issue`, or on pull request `issue` when `is_pull_request`.
pub fn issue_comment(
    issue: i64,
    is_pull_request: bool,
    comment_id: u64,
    body: &str,
    login: &str,
    user_type: &str,
) -> Vec<u8> {
    comment_event(
        "issue_comment/created.payload.json",
        issue,
        is_pull_request,
        comment_id,
        body,
        login,
        user_type,
    )
}

/// `issue_comment`/`edited`: as [`issue_comment`], for a comment `login` edited to `body`.
pub fn issue_comment_edited(
    issue: i64,
    is_pull_request: bool,
    comment_id: u64,
    body: &str,
    login: &str,
    user_type: &str,
) -> Vec<u8> {
    comment_event(
        "issue_comment/edited.payload.json",
        issue,
        is_pull_request,
        comment_id,
        body,
        login,
        user_type,
    )
}

fn comment_event(
    fixture_path: &str,
    issue: i64,
    is_pull_request: bool,
    comment_id: u64,
    body: &str,
    login: &str,
    user_type: &str,
) -> Vec<u8> {
    let mut payload = for_repository(fixture_path, login, user_type);
    let full = full_name();
    let kind = if is_pull_request { "pull" } else { "issues" };
    let html = format!("https://github.com/{full}/{kind}/{issue}");
    let issue_json = &mut payload["issue"];
    issue_json["number"] = issue.into();
    issue_json["url"] = format!("{API}/repos/{full}/issues/{issue}").into();
    issue_json["html_url"] = html.clone().into();
    issue_json["updated_at"] = now().into();
    if is_pull_request {
        issue_json["pull_request"] = json!({
            "url": format!("{API}/repos/{full}/pulls/{issue}"),
            "html_url": html,
            "diff_url": format!("{html}.diff"),
            "patch_url": format!("{html}.patch"),
            "merged_at": null,
        });
    } else if let Some(fields) = issue_json.as_object_mut() {
        fields.remove("pull_request");
    }
    let comment = &mut payload["comment"];
    comment["id"] = comment_id.into();
    comment["body"] = body.into();
    comment["url"] = format!("{API}/repos/{full}/issues/comments/{comment_id}").into();
    comment["html_url"] =
        format!("https://github.com/{full}/issues/{issue}#issuecomment-{comment_id}").into();
    comment["issue_url"] = format!("{API}/repos/{full}/issues/{issue}").into();
    comment["created_at"] = now().into();
    comment["updated_at"] = now().into();
    // GitHub labels authors by their ties to the repository; who may act is for the
    // permission API to say, so the payload claims none.
    comment["author_association"] = "NONE".into();
    set_account(&mut comment["user"], login, user_type);
    bytes(payload)
}

/// `pull_request_review_comment`/`created`: `login` comments `body` on the diff of pull
/// request `pull`.
pub fn review_comment(
    pull: i64,
    comment_id: u64,
    body: &str,
    login: &str,
    user_type: &str,
) -> Vec<u8> {
    let mut payload = for_repository(
        "pull_request_review_comment/created.payload.json",
        login,
        user_type,
    );
    let full = full_name();
    let comment = &mut payload["comment"];
    comment["id"] = comment_id.into();
    comment["body"] = body.into();
    comment["url"] = format!("{API}/repos/{full}/pulls/comments/{comment_id}").into();
    comment["html_url"] =
        format!("https://github.com/{full}/pull/{pull}#discussion_r{comment_id}").into();
    comment["pull_request_url"] = format!("{API}/repos/{full}/pulls/{pull}").into();
    comment["created_at"] = now().into();
    comment["updated_at"] = now().into();
    comment["author_association"] = "NONE".into();
    set_account(&mut comment["user"], login, user_type);
    let pr = &mut payload["pull_request"];
    pr["number"] = pull.into();
    pr["url"] = format!("{API}/repos/{full}/pulls/{pull}").into();
    pr["html_url"] = format!("https://github.com/{full}/pull/{pull}").into();
    for side in ["head", "base"] {
        set_repository(&mut pr[side]["repo"]);
    }
    bytes(payload)
}

/// `check_run`/`requested_action`: `login` clicks the button `identifier` on Conveyor's
/// check run `check_run_id` on `head_sha`.
pub fn check_run_action(
    check_run_id: i64,
    head_sha: &str,
    external_id: &str,
    identifier: &str,
    login: &str,
) -> Vec<u8> {
    let mut payload = check_run_event(
        "check_run/requested_action.payload.json",
        check_run_id,
        head_sha,
        external_id,
        login,
    );
    payload["requested_action"] = json!({ "identifier": identifier });
    bytes(payload)
}

/// `check_run`/`rerequested`: `login` asks GitHub to run Conveyor's check run again.
pub fn check_run_rerequested(
    check_run_id: i64,
    head_sha: &str,
    external_id: &str,
    login: &str,
) -> Vec<u8> {
    bytes(check_run_event(
        "check_run/rerequested.payload.json",
        check_run_id,
        head_sha,
        external_id,
        login,
    ))
}

fn check_run_event(
    fixture_path: &str,
    check_run_id: i64,
    head_sha: &str,
    external_id: &str,
    login: &str,
) -> Value {
    let mut payload = for_repository(fixture_path, login, "User");
    let full = full_name();
    let run = &mut payload["check_run"];
    run["id"] = check_run_id.into();
    run["name"] = "conveyor".into();
    run["head_sha"] = head_sha.into();
    run["external_id"] = external_id.into();
    run["url"] = format!("{API}/repos/{full}/check-runs/{check_run_id}").into();
    run["html_url"] = format!("https://github.com/{full}/runs/{check_run_id}").into();
    // The fixture's pull requests belong to another repository.
    run["pull_requests"] = json!([]);
    set_app(&mut run["app"]);
    let suite = &mut run["check_suite"];
    suite["head_sha"] = head_sha.into();
    suite["pull_requests"] = json!([]);
    if suite.get("app").is_some() {
        set_app(&mut suite["app"]);
    }
    payload
}

/// `check_suite`/`rerequested`: `login` asks GitHub to run the checks of `head_sha` (on
/// `head_branch`) again.
pub fn check_suite_rerequested(head_sha: &str, head_branch: &str, login: &str) -> Vec<u8> {
    let mut payload = for_repository("check_suite/rerequested.payload.json", login, "User");
    let suite = &mut payload["check_suite"];
    suite["head_sha"] = head_sha.into();
    suite["after"] = head_sha.into();
    suite["head_branch"] = head_branch.into();
    suite["pull_requests"] = json!([]);
    suite["updated_at"] = now().into();
    set_app(&mut suite["app"]);
    if suite.get("head_commit").is_some() {
        suite["head_commit"]["id"] = head_sha.into();
        suite["head_commit"]["tree_id"] = head_sha.into();
    }
    bytes(payload)
}

/// `issues`/`labeled`: `login` (of type `user_type`) puts `label` on issue `issue`.
pub fn labeled_issue_by(
    issue: i64,
    title: &str,
    label: &str,
    login: &str,
    user_type: &str,
) -> Vec<u8> {
    let mut payload = issue_event(
        "issues/labeled.payload.json",
        issue,
        title,
        login,
        user_type,
    );
    payload["label"]["name"] = label.into();
    bytes(payload)
}

/// `issues`/`unlabeled`: `login` takes `label` off issue `issue`.
pub fn issue_unlabeled(issue: i64, title: &str, label: &str, login: &str) -> Vec<u8> {
    let mut payload = issue_event("issues/unlabeled.payload.json", issue, title, login, "User");
    payload["label"]["name"] = label.into();
    bytes(payload)
}

/// `issues`/`closed`: `login` closes issue `issue`. The fixtures hold no `closed` example; this
/// is the `reopened` one turned round (action, state and `closed_at`).
pub fn issue_closed(issue: i64, title: &str, login: &str) -> Vec<u8> {
    let mut payload = issue_event("issues/reopened.payload.json", issue, title, login, "User");
    payload["action"] = "closed".into();
    payload["issue"]["state"] = "closed".into();
    payload["issue"]["closed_at"] = now().into();
    bytes(payload)
}

fn issue_event(fixture_path: &str, issue: i64, title: &str, login: &str, user_type: &str) -> Value {
    let mut payload = for_repository(fixture_path, login, user_type);
    let full = full_name();
    let issue_json = &mut payload["issue"];
    issue_json["number"] = issue.into();
    issue_json["title"] = title.into();
    issue_json["url"] = format!("{API}/repos/{full}/issues/{issue}").into();
    issue_json["html_url"] = format!("https://github.com/{full}/issues/{issue}").into();
    issue_json["updated_at"] = now().into();
    payload
}

/// `pull_request`/`closed`: `login` closes pull request `number` from branch `head_ref` into
/// `main`, merging it when `merged`.
pub fn pull_request_closed(number: i64, merged: bool, head_ref: &str, login: &str) -> Vec<u8> {
    let mut payload = for_repository("pull_request/closed.payload.json", login, "User");
    let full = full_name();
    payload["number"] = number.into();
    let pr = &mut payload["pull_request"];
    pr["number"] = number.into();
    pr["url"] = format!("{API}/repos/{full}/pulls/{number}").into();
    pr["html_url"] = format!("https://github.com/{full}/pull/{number}").into();
    pr["state"] = "closed".into();
    pr["merged"] = merged.into();
    pr["closed_at"] = now().into();
    pr["updated_at"] = now().into();
    pr["merged_at"] = if merged { now().into() } else { Value::Null };
    if merged {
        set_account(&mut pr["merged_by"], login, "User");
    } else {
        pr["merged_by"] = Value::Null;
    }
    pr["head"]["ref"] = head_ref.into();
    pr["head"]["label"] = format!("{OWNER}:{head_ref}").into();
    pr["base"]["ref"] = "main".into();
    pr["base"]["label"] = format!("{OWNER}:main").into();
    for side in ["head", "base"] {
        set_repository(&mut pr[side]["repo"]);
    }
    bytes(payload)
}

/// The fixture at `fixture_path`, delivered to the test installation about `acme/widgets`,
/// sent by `login`.
fn for_repository(fixture_path: &str, login: &str, user_type: &str) -> Value {
    let mut payload = fixture(fixture_path);
    payload["installation"] = json!({
        "id": INSTALLATION_ID,
        "node_id": "MDIzOkludGVncmF0aW9uSW5zdGFsbGF0aW9uMTAwMQ==",
    });
    set_repository(&mut payload["repository"]);
    if payload.get("organization").is_some() {
        payload["organization"]["login"] = OWNER.into();
    }
    set_account(&mut payload["sender"], login, user_type);
    payload
}

fn set_repository(repo: &mut Value) {
    repo["name"] = REPO.into();
    repo["full_name"] = full_name().into();
    repo["owner"]["login"] = OWNER.into();
    repo["default_branch"] = "main".into();
    repo["html_url"] = format!("https://github.com/{}", full_name()).into();
    repo["url"] = format!("{API}/repos/{}", full_name()).into();
}

/// Makes `account` the account `login`, a `user_type` (`User` or `Bot`), in the full shape
/// GitHub sends.
fn set_account(account: &mut Value, login: &str, user_type: &str) {
    let id = account_id(login);
    let api = format!(
        "{API}/users/{}",
        login.replace('[', "%5B").replace(']', "%5D")
    );
    *account = json!({
        "login": login,
        "id": id,
        "node_id": format!("U_{id}"),
        "avatar_url": format!("https://avatars.githubusercontent.com/u/{id}?v=4"),
        "gravatar_id": "",
        "url": api,
        "html_url": format!("https://github.com/{login}"),
        "followers_url": format!("{api}/followers"),
        "following_url": format!("{api}/following{{/other_user}}"),
        "gists_url": format!("{api}/gists{{/gist_id}}"),
        "starred_url": format!("{api}/starred{{/owner}}{{/repo}}"),
        "subscriptions_url": format!("{api}/subscriptions"),
        "organizations_url": format!("{api}/orgs"),
        "repos_url": format!("{api}/repos"),
        "events_url": format!("{api}/events{{/privacy}}"),
        "received_events_url": format!("{api}/received_events"),
        "type": user_type,
        "user_view_type": "public",
        "site_admin": false,
    });
}

/// The check run or suite's App is Conveyor.
fn set_app(app: &mut Value) {
    app["id"] = APP_ID.into();
    app["slug"] = "conveyor".into();
    app["name"] = "Conveyor".into();
}

fn full_name() -> String {
    format!("{OWNER}/{REPO}")
}

fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn bytes(payload: Value) -> Vec<u8> {
    serde_json::to_vec(&payload).expect("a JSON value serializes")
}
