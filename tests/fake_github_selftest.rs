//! Self-tests of the fake GitHub used by the integration tests.

#[path = "support/fake_github/mod.rs"]
mod fake_github;

use std::path::Path;
use std::process::Output;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use base64::Engine as _;
use fake_github::{APP_ID, FakeGitHub, Injected};
use hmac::{Hmac, Mac as _};
use serde_json::{Value, json};
use sha2::Sha256;

const INSTALLATION: i64 = 77;
const OTHER_INSTALLATION: i64 = 78;

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn sign(claims: &Value) -> String {
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(fake_github::private_key_pem().as_bytes())
        .expect("test private key");
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
        claims,
        &key,
    )
    .expect("sign jwt")
}

fn app_jwt() -> String {
    sign(&json!({"iat": now() - 60, "exp": now() + 540, "iss": APP_ID}))
}

async fn setup() -> FakeGitHub {
    let fake = FakeGitHub::start().await;
    fake.add_installation(INSTALLATION, "acme");
    fake.add_installation(OTHER_INSTALLATION, "other");
    fake.add_repo(
        INSTALLATION,
        "acme",
        "widgets",
        &[
            ("README.md", "# widgets\n"),
            ("scripts/build.sh", "#!/bin/sh\necho build\n"),
        ],
    );
    fake.add_repo(OTHER_INSTALLATION, "other", "secret", &[("a.txt", "a\n")]);
    fake
}

async fn exchange(fake: &FakeGitHub, installation: i64, jwt: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!(
            "{}/app/installations/{installation}/access_tokens",
            fake.url
        ))
        .bearer_auth(jwt)
        .header("accept", "application/vnd.github+json")
        .send()
        .await
        .expect("request")
}

/// `POST /app/installations/{installation}/access_tokens` with `body`.
async fn exchange_for(fake: &FakeGitHub, installation: i64, body: &Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!(
            "{}/app/installations/{installation}/access_tokens",
            fake.url
        ))
        .bearer_auth(app_jwt())
        .header("accept", "application/vnd.github+json")
        .json(body)
        .send()
        .await
        .expect("request")
}

/// A token narrowed as `body` asks.
async fn scoped_token(fake: &FakeGitHub, body: Value) -> String {
    let resp = exchange_for(fake, INSTALLATION, &body).await;
    assert_eq!(resp.status(), 201, "{body}");
    let token: Value = resp.json().await.unwrap();
    token["token"].as_str().unwrap().to_string()
}

async fn token(fake: &FakeGitHub, installation: i64) -> String {
    let resp = exchange(fake, installation, &app_jwt()).await;
    assert_eq!(resp.status(), 201);
    let body: Value = resp.json().await.unwrap();
    body["token"].as_str().unwrap().to_string()
}

async fn message(resp: reqwest::Response) -> String {
    let body: Value = resp.json().await.expect("json error body");
    body["message"].as_str().expect("message").to_string()
}

fn api(
    fake: &FakeGitHub,
    method: reqwest::Method,
    path: &str,
    tok: &str,
) -> reqwest::RequestBuilder {
    reqwest::Client::new()
        .request(method, format!("{}{path}", fake.url))
        .header("authorization", format!("Bearer {tok}"))
        .header("accept", "application/vnd.github+json")
}

/// Runs git isolated from the user's configuration; `extra_header` is passed
/// the way Conveyor does it (GIT_CONFIG_COUNT).
async fn git(dir: &Path, args: &[&str], extra_header: Option<&str>) -> Output {
    let mut cmd = tokio::process::Command::new("git");
    cmd.current_dir(dir)
        .args(args)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_AUTHOR_NAME", "Self Test")
        .env("GIT_AUTHOR_EMAIL", "self@test.invalid")
        .env("GIT_COMMITTER_NAME", "Self Test")
        .env("GIT_COMMITTER_EMAIL", "self@test.invalid")
        .env_remove("GIT_ASKPASS")
        .env_remove("SSH_ASKPASS")
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE");
    match extra_header {
        Some(value) => {
            cmd.env("GIT_CONFIG_COUNT", "1")
                .env("GIT_CONFIG_KEY_0", "http.extraHeader")
                .env("GIT_CONFIG_VALUE_0", value);
        }
        None => {
            cmd.env_remove("GIT_CONFIG_COUNT");
        }
    }
    cmd.output().await.expect("run git")
}

fn basic(tok: &str) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(format!("x-access-token:{tok}"));
    format!("Authorization: Basic {b64}")
}

fn assert_ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Pushes a new branch with one extra commit straight into the bare repo.
async fn push_branch_locally(fake: &FakeGitHub, branch: &str) -> String {
    let work = tempfile::tempdir().unwrap();
    let bare = fake.git_dir("acme", "widgets");
    let out = git(
        work.path(),
        &["clone", "--quiet", bare.to_str().unwrap(), "wt"],
        None,
    )
    .await;
    assert_ok(&out, "local clone");
    let wt = work.path().join("wt");
    std::fs::write(wt.join("feature.txt"), "feature\n").unwrap();
    assert_ok(&git(&wt, &["add", "feature.txt"], None).await, "add");
    assert_ok(
        &git(&wt, &["commit", "--quiet", "-m", "feature"], None).await,
        "commit",
    );
    let refspec = format!("HEAD:refs/heads/{branch}");
    assert_ok(
        &git(&wt, &["push", "--quiet", "origin", &refspec], None).await,
        "local push",
    );
    fake.branch_sha("acme", "widgets", branch).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn valid_jwt_is_exchanged_for_an_installation_token() {
    let fake = setup().await;
    let resp = exchange(&fake, INSTALLATION, &app_jwt()).await;
    assert_eq!(resp.status(), 201);
    let headers = resp.headers().clone();
    assert_eq!(
        headers["content-type"], "application/json; charset=utf-8",
        "content type"
    );
    assert_eq!(headers["x-ratelimit-limit"], "5000");
    assert_eq!(headers["x-ratelimit-resource"], "core");
    for name in [
        "x-ratelimit-remaining",
        "x-ratelimit-reset",
        "x-ratelimit-used",
        "x-github-request-id",
    ] {
        assert!(headers.contains_key(name), "missing header {name}");
    }
    let body: Value = resp.json().await.unwrap();
    let tok = body["token"].as_str().unwrap();
    assert!(tok.starts_with("ghs_"), "{tok}");
    assert_eq!(tok.len(), 40);
    assert!(tok[4..].chars().all(|c| c.is_ascii_alphanumeric()));
    let expires = chrono::DateTime::parse_from_rfc3339(body["expires_at"].as_str().unwrap())
        .unwrap()
        .timestamp();
    assert!(
        (expires - now() - 3600).abs() <= 5,
        "expires_at ~1h from now"
    );
    assert!(body["expires_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(body["permissions"]["contents"], "write");
    assert_eq!(body["permissions"]["metadata"], "read");
    assert_eq!(body["repository_selection"], "all");
    assert!(body.get("repositories").is_none(), "not narrowed: {body}");
    let parsed: octocrab::models::InstallationToken = serde_json::from_value(body.clone()).unwrap();
    assert_eq!(parsed.token, tok);
    assert_eq!(fake.issued_tokens(), vec![tok.to_string()]);

    // `iss` as a string is accepted too.
    let jwt = sign(&json!({"iat": now() - 60, "exp": now() + 540, "iss": APP_ID.to_string()}));
    assert_eq!(exchange(&fake, INSTALLATION, &jwt).await.status(), 201);

    // Unknown installation.
    let resp = exchange(&fake, 999, &app_jwt()).await;
    assert_eq!(resp.status(), 404);
    assert_eq!(message(resp).await, "Not Found");

    let reqs = fake.requests();
    assert_eq!(reqs.len(), 3);
    assert_eq!(reqs[0].method, "POST");
    assert_eq!(
        reqs[0].path,
        format!("/app/installations/{INSTALLATION}/access_tokens")
    );
    assert_eq!(reqs[0].status, 201);
    assert!(
        reqs[0]
            .authorization
            .as_deref()
            .unwrap()
            .starts_with("Bearer ey")
    );
    assert_eq!(reqs[2].status, 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_jwts_are_rejected() {
    let fake = setup().await;

    let too_far = sign(&json!({"iat": now() - 60, "exp": now() + 3600, "iss": APP_ID}));
    let resp = exchange(&fake, INSTALLATION, &too_far).await;
    assert_eq!(resp.status(), 401);
    assert_eq!(
        message(resp).await,
        "'Expiration time' claim ('exp') is too far in the future"
    );

    let expired = sign(&json!({"iat": now() - 700, "exp": now() - 100, "iss": APP_ID}));
    assert_eq!(exchange(&fake, INSTALLATION, &expired).await.status(), 401);

    let future_iat = sign(&json!({"iat": now() + 300, "exp": now() + 540, "iss": APP_ID}));
    assert_eq!(
        exchange(&fake, INSTALLATION, &future_iat).await.status(),
        401
    );

    let no_exp = sign(&json!({"iat": now() - 60, "iss": APP_ID}));
    assert_eq!(exchange(&fake, INSTALLATION, &no_exp).await.status(), 401);

    let wrong_iss = sign(&json!({"iat": now() - 60, "exp": now() + 540, "iss": 1}));
    assert_eq!(
        exchange(&fake, INSTALLATION, &wrong_iss).await.status(),
        401
    );

    let hs256 = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"iat": now() - 60, "exp": now() + 540, "iss": APP_ID}),
        &jsonwebtoken::EncodingKey::from_secret(b"secret"),
    )
    .unwrap();
    let resp = exchange(&fake, INSTALLATION, &hs256).await;
    assert_eq!(resp.status(), 401);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["message"], "A JSON web token could not be decoded");
    assert_eq!(body["documentation_url"], "https://docs.github.com/rest");
    assert_eq!(body["status"], "401");

    assert_eq!(exchange(&fake, INSTALLATION, "garbage").await.status(), 401);
    let resp = reqwest::Client::new()
        .post(format!(
            "{}/app/installations/{INSTALLATION}/access_tokens",
            fake.url
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);

    assert!(fake.issued_tokens().is_empty());
    assert!(fake.requests().iter().all(|r| r.status == 401));
}

#[tokio::test(flavor = "multi_thread")]
async fn expired_and_unknown_installation_tokens_are_rejected() {
    let fake = setup().await;
    fake.set_token_ttl(Duration::ZERO);
    let expired = token(&fake, INSTALLATION).await;
    fake.set_token_ttl(Duration::from_secs(3600));
    let valid = token(&fake, INSTALLATION).await;
    let path = "/repos/acme/widgets/issues/1/comments";

    let resp = api(&fake, reqwest::Method::POST, path, &expired)
        .json(&json!({"body": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(message(resp).await, "Bad credentials");

    let resp = api(&fake, reqwest::Method::POST, path, "ghs_notarealtoken")
        .json(&json!({"body": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);

    // Missing credentials.
    let resp = reqwest::Client::new()
        .post(format!("{}{path}", fake.url))
        .json(&json!({"body": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);

    // The `token` scheme works as well as `Bearer`.
    let resp = reqwest::Client::new()
        .post(format!("{}{path}", fake.url))
        .header("authorization", format!("token {valid}"))
        .json(&json!({"body": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    assert_eq!(fake.comments("acme", "widgets", 1).len(), 1);
    assert_eq!(fake.issued_tokens(), vec![expired, valid]);
}

#[tokio::test(flavor = "multi_thread")]
async fn comments_are_created_edited_and_recorded() {
    let fake = setup().await;
    let tok = token(&fake, INSTALLATION).await;

    let resp = api(
        &fake,
        reqwest::Method::POST,
        "/repos/acme/widgets/issues/7/comments",
        &tok,
    )
    .json(&json!({"body": "Run queued"}))
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status(), 201);
    let created: Value = resp.json().await.unwrap();
    let id = created["id"].as_u64().unwrap();
    assert_eq!(created["body"], "Run queued");
    assert_eq!(created["user"]["login"], "conveyor[bot]");
    assert_eq!(created["user"]["type"], "Bot");
    assert_eq!(
        created["html_url"],
        format!("https://github.com/acme/widgets/issues/7#issuecomment-{id}")
    );
    let parsed: octocrab::models::issues::Comment = serde_json::from_value(created).unwrap();
    assert_eq!(parsed.body.as_deref(), Some("Run queued"));

    let edit_path = format!("/repos/acme/widgets/issues/comments/{id}");
    for body in ["Run started", "Run finished"] {
        let resp = api(&fake, reqwest::Method::PATCH, &edit_path, &tok)
            .json(&json!({ "body": body }))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let updated: Value = resp.json().await.unwrap();
        assert_eq!(updated["id"].as_u64(), Some(id));
        assert_eq!(updated["body"], body);
    }

    let comments = fake.comments("acme", "widgets", 7);
    assert_eq!(comments.len(), 1);
    assert_eq!(comments[0].id, id);
    assert_eq!(comments[0].body, "Run finished");
    assert_eq!(comments[0].edits, vec!["Run queued", "Run started"]);
    assert_eq!(comments[0].user_login, "conveyor[bot]");
    assert!(fake.comments("acme", "widgets", 8).is_empty());

    // Validation and not-found cases.
    let resp = api(
        &fake,
        reqwest::Method::POST,
        "/repos/acme/widgets/issues/7/comments",
        &tok,
    )
    .json(&json!({}))
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status(), 422);
    assert_eq!(message(resp).await, "Validation Failed");
    let resp = api(
        &fake,
        reqwest::Method::PATCH,
        "/repos/acme/widgets/issues/comments/123",
        &tok,
    )
    .json(&json!({"body": "x"}))
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status(), 404);
    // A repo of another installation is invisible.
    let resp = api(
        &fake,
        reqwest::Method::POST,
        "/repos/other/secret/issues/1/comments",
        &tok,
    )
    .json(&json!({"body": "x"}))
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status(), 404);
    let resp = api(
        &fake,
        reqwest::Method::GET,
        "/repos/acme/widgets/nope",
        &tok,
    )
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(message(resp).await, "Not Found");

    let reqs = fake.requests();
    let statuses: Vec<u16> = reqs.iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![201, 201, 200, 200, 422, 404, 404, 404]);
    assert_eq!(reqs[1].path, "/repos/acme/widgets/issues/7/comments");
    assert_eq!(reqs[2].method, "PATCH");
    assert_eq!(reqs[2].path, edit_path);
    assert_eq!(
        reqs[2].authorization.as_deref(),
        Some(format!("Bearer {tok}").as_str())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn pull_requests_are_created_listed_and_validated() {
    let fake = setup().await;
    let tok = token(&fake, INSTALLATION).await;
    let head_sha = push_branch_locally(&fake, "conveyor/run-1").await;
    let create = |body: Value| {
        api(
            &fake,
            reqwest::Method::POST,
            "/repos/acme/widgets/pulls",
            &tok,
        )
        .json(&body)
    };

    let resp = create(json!({
        "title": "Run 1", "head": "conveyor/run-1", "base": "main", "body": "Automated",
    }))
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status(), 201);
    let pr: Value = resp.json().await.unwrap();
    assert_eq!(pr["number"], 100);
    assert_eq!(pr["state"], "open");
    assert_eq!(pr["html_url"], "https://github.com/acme/widgets/pull/100");
    assert_eq!(pr["head"]["label"], "acme:conveyor/run-1");
    assert_eq!(pr["head"]["sha"], head_sha.as_str());
    assert_eq!(pr["base"]["ref"], "main");
    let parsed: octocrab::models::pulls::PullRequest = serde_json::from_value(pr).unwrap();
    assert_eq!(parsed.number, 100);

    // Duplicate (same head and base, `owner:branch` form).
    let resp = create(json!({"title": "Again", "head": "acme:conveyor/run-1", "base": "main"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 422);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["message"], "Validation Failed");
    assert_eq!(
        body["errors"][0]["message"],
        "A pull request already exists for acme:conveyor/run-1."
    );
    assert_eq!(body["errors"][0]["code"], "custom");

    // Unknown head branch.
    let resp = create(json!({"title": "X", "head": "missing", "base": "main"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 422);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["errors"][0]["field"], "head");
    assert_eq!(body["errors"][0]["code"], "invalid");

    // Missing title.
    let resp = create(json!({"head": "conveyor/run-1", "base": "main"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 422);

    // Listing.
    let list = |query: &str| {
        api(
            &fake,
            reqwest::Method::GET,
            &format!("/repos/acme/widgets/pulls?{query}"),
            &tok,
        )
        .send()
    };
    let resp = list("head=acme:conveyor/run-1&state=open").await.unwrap();
    assert_eq!(resp.status(), 200);
    let items: Vec<Value> = resp.json().await.unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["number"], 100);
    let items: Vec<Value> = list("head=acme:other-branch")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(items.is_empty());
    let items: Vec<Value> = list("head=acme:conveyor/run-1&state=closed")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(items.is_empty());
    let items: Vec<Value> = list("state=all").await.unwrap().json().await.unwrap();
    assert_eq!(items.len(), 1);

    let prs = fake.pull_requests("acme", "widgets");
    assert_eq!(prs.len(), 1);
    assert_eq!(prs[0].number, 100);
    assert_eq!(prs[0].title, "Run 1");
    assert_eq!(prs[0].body.as_deref(), Some("Automated"));
    assert_eq!(prs[0].head, "conveyor/run-1");
    assert_eq!(prs[0].base, "main");
    assert_eq!(prs[0].state, "open");
}

#[tokio::test(flavor = "multi_thread")]
async fn check_runs_follow_github_rules() {
    let fake = setup().await;
    let tok = token(&fake, INSTALLATION).await;
    let main_sha = fake.branch_sha("acme", "widgets", "main").unwrap();
    let post = |body: Value| {
        api(
            &fake,
            reqwest::Method::POST,
            "/repos/acme/widgets/check-runs",
            &tok,
        )
        .json(&body)
        .send()
    };

    let missing = "0123456789abcdef0123456789abcdef01234567";
    let resp = post(json!({"name": "conveyor", "head_sha": missing}))
        .await
        .unwrap();
    assert_eq!(resp.status(), 422);
    assert_eq!(
        message(resp).await,
        format!("No commit found for SHA: {missing}")
    );

    let resp = post(json!({"name": "conveyor", "head_sha": main_sha, "status": "completed"}))
        .await
        .unwrap();
    assert_eq!(resp.status(), 422);

    let resp = post(json!({
        "name": "conveyor", "head_sha": main_sha,
        "details_url": "https://conveyor.example/runs/1", "external_id": "run-1",
        "output": {"title": "Queued", "summary": "Waiting"},
    }))
    .await
    .unwrap();
    assert_eq!(resp.status(), 201);
    let run: Value = resp.json().await.unwrap();
    assert_eq!(run["status"], "queued");
    assert_eq!(run["conclusion"], Value::Null);
    assert_eq!(run["head_sha"], main_sha.as_str());
    assert_eq!(run["app"]["id"], APP_ID);
    assert_eq!(run["output"]["title"], "Queued");
    let parsed: octocrab::models::checks::CheckRun = serde_json::from_value(run.clone()).unwrap();
    assert_eq!(parsed.name, "conveyor");
    let id = run["id"].as_u64().unwrap();

    let patch = |body: Value| {
        api(
            &fake,
            reqwest::Method::PATCH,
            &format!("/repos/acme/widgets/check-runs/{id}"),
            &tok,
        )
        .json(&body)
        .send()
    };
    let resp = patch(json!({"status": "completed"})).await.unwrap();
    assert_eq!(resp.status(), 422);
    let resp = patch(json!({"status": "in_progress"})).await.unwrap();
    assert_eq!(resp.status(), 200);
    let resp = patch(json!({
        "conclusion": "success",
        "output": {"title": "Passed", "summary": "All good", "text": "log"},
    }))
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);
    let run: Value = resp.json().await.unwrap();
    assert_eq!(run["status"], "completed");
    assert_eq!(run["conclusion"], "success");
    assert!(run["completed_at"].is_string());

    let resp = api(
        &fake,
        reqwest::Method::PATCH,
        "/repos/acme/widgets/check-runs/1",
        &tok,
    )
    .json(&json!({"status": "in_progress"}))
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status(), 404);

    let runs = fake.check_runs("acme", "widgets");
    assert_eq!(runs.len(), 1);
    let r = &runs[0];
    assert_eq!(r.id, id);
    assert_eq!(r.name, "conveyor");
    assert_eq!(r.head_sha, main_sha);
    assert_eq!(r.status, "completed");
    assert_eq!(r.conclusion.as_deref(), Some("success"));
    assert_eq!(r.output_title.as_deref(), Some("Passed"));
    assert_eq!(r.output_summary.as_deref(), Some("All good"));
    assert_eq!(r.output_text.as_deref(), Some("log"));
    assert_eq!(
        r.details_url.as_deref(),
        Some("https://conveyor.example/runs/1")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn git_clone_and_push_over_http() {
    let fake = setup().await;
    let tok = token(&fake, INSTALLATION).await;
    let work = tempfile::tempdir().unwrap();
    let url = format!("{}/acme/widgets.git", fake.url);
    let auth = basic(&tok);

    let out = git(work.path(), &["clone", "--quiet", &url, "wt"], Some(&auth)).await;
    assert_ok(&out, "clone over http");
    let wt = work.path().join("wt");
    assert_eq!(
        std::fs::read_to_string(wt.join("README.md")).unwrap(),
        "# widgets\n"
    );
    let ls = git(&wt, &["ls-files", "-s", "scripts/build.sh"], None).await;
    assert!(String::from_utf8_lossy(&ls.stdout).starts_with("100755 "));
    let branch = git(&wt, &["rev-parse", "--abbrev-ref", "HEAD"], None).await;
    assert_eq!(String::from_utf8_lossy(&branch.stdout).trim(), "main");

    std::fs::write(wt.join("out.txt"), "result\n").unwrap();
    assert_ok(&git(&wt, &["add", "out.txt"], None).await, "add");
    assert_ok(
        &git(&wt, &["commit", "--quiet", "-m", "result"], None).await,
        "commit",
    );
    let out = git(
        &wt,
        &["push", "--quiet", "origin", "HEAD:refs/heads/feature"],
        Some(&auth),
    )
    .await;
    assert_ok(&out, "push over http");
    let local = git(&wt, &["rev-parse", "HEAD"], None).await;
    let local = String::from_utf8_lossy(&local.stdout).trim().to_string();
    assert_eq!(
        fake.branch_sha("acme", "widgets", "feature").as_deref(),
        Some(local.as_str())
    );
    assert_eq!(
        fake.file_at("acme", "widgets", "feature", "out.txt")
            .as_deref(),
        Some("result\n")
    );
    assert_eq!(fake.file_at("acme", "widgets", "main", "out.txt"), None);
    assert_ne!(fake.branch_sha("acme", "widgets", "main"), Some(local));

    // A push larger than http.postBuffer (1 MiB) is sent with chunked encoding.
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let big: Vec<u8> = (0..2 * 1024 * 1024)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            (state >> 56) as u8
        })
        .collect();
    std::fs::write(wt.join("big.bin"), &big).unwrap();
    assert_ok(&git(&wt, &["add", "big.bin"], None).await, "add big");
    assert_ok(
        &git(&wt, &["commit", "--quiet", "-m", "big"], None).await,
        "commit big",
    );
    let out = git(
        &wt,
        &["push", "--quiet", "origin", "HEAD:refs/heads/big"],
        Some(&auth),
    )
    .await;
    assert_ok(&out, "large push over http");
    let head = git(&wt, &["rev-parse", "HEAD"], None).await;
    assert_eq!(
        fake.branch_sha("acme", "widgets", "big"),
        Some(String::from_utf8_lossy(&head.stdout).trim().to_string())
    );

    let reqs = fake.requests();
    assert!(
        reqs.iter()
            .any(|r| r.path == "/acme/widgets.git/git-receive-pack" && r.status == 200)
    );
    assert!(reqs.iter().any(|r| {
        r.path
            .starts_with("/acme/widgets.git/info/refs?service=git-upload-pack")
    }));
    let git_reqs: Vec<_> = reqs.iter().filter(|r| r.path.contains(".git/")).collect();
    assert!(git_reqs.iter().all(|r| r.status == 200), "{git_reqs:?}");
    assert!(
        git_reqs
            .iter()
            .all(|r| r.authorization.as_deref() == Some(&auth["Authorization: ".len()..]))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn git_requires_a_valid_token_for_the_repo() {
    let fake = setup().await;
    let work = tempfile::tempdir().unwrap();
    let url = format!("{}/acme/widgets.git", fake.url);

    // No credentials: git gets a 401 challenge and (without a prompt) fails.
    let out = git(work.path(), &["clone", "--quiet", &url, "a"], None).await;
    assert!(!out.status.success());
    let reqs = fake.requests();
    assert_eq!(reqs.last().unwrap().status, 401);
    assert_eq!(reqs.last().unwrap().authorization, None);

    let resp = reqwest::get(format!("{url}/info/refs?service=git-upload-pack"))
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(resp.headers()["www-authenticate"], "Basic realm=\"GitHub\"");

    // A token of another installation cannot see the repo.
    let other = token(&fake, OTHER_INSTALLATION).await;
    let out = git(
        work.path(),
        &["clone", "--quiet", &url, "b"],
        Some(&basic(&other)),
    )
    .await;
    assert!(!out.status.success());
    assert_eq!(fake.requests().last().unwrap().status, 404);

    // Expired token.
    fake.set_token_ttl(Duration::ZERO);
    let expired = token(&fake, INSTALLATION).await;
    let out = git(
        work.path(),
        &["clone", "--quiet", &url, "c"],
        Some(&basic(&expired)),
    )
    .await;
    assert!(!out.status.success());
    assert_eq!(fake.requests().last().unwrap().status, 401);

    // Wrong user name.
    fake.set_token_ttl(Duration::from_secs(3600));
    let tok = token(&fake, INSTALLATION).await;
    let b64 = base64::engine::general_purpose::STANDARD.encode(format!("someone:{tok}"));
    let resp = reqwest::Client::new()
        .get(format!("{url}/info/refs?service=git-upload-pack"))
        .header("authorization", format!("Basic {b64}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);

    // Unknown repo with a valid token.
    let resp = reqwest::Client::new()
        .get(format!(
            "{}/acme/nope.git/info/refs?service=git-upload-pack",
            fake.url
        ))
        .header("authorization", &basic(&tok)["Authorization: ".len()..])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);

    // And with it the real repo works.
    let out = git(
        work.path(),
        &["clone", "--quiet", &url, "d"],
        Some(&basic(&tok)),
    )
    .await;
    assert_ok(&out, "clone with valid token");
}

/// The responses are understood by octocrab (which Conveyor may use as its
/// REST client) when it is pointed at the fake with an installation token.
#[tokio::test(flavor = "multi_thread")]
async fn octocrab_client_understands_the_fake() {
    use octocrab::params::checks::{CheckRunConclusion, CheckRunOutput, CheckRunStatus};

    let fake = setup().await;
    let tok = token(&fake, INSTALLATION).await;
    let head_sha = push_branch_locally(&fake, "conveyor/run-2").await;
    let octo = octocrab::Octocrab::builder()
        .base_uri(fake.url.as_str())
        .unwrap()
        .personal_token(tok.clone())
        .build()
        .unwrap();

    let issues = octo.issues("acme", "widgets");
    let comment = issues.create_comment(3, "first").await.unwrap();
    let edited = issues.update_comment(comment.id, "second").await.unwrap();
    assert_eq!(edited.body.as_deref(), Some("second"));
    assert_eq!(fake.comments("acme", "widgets", 3)[0].edits, vec!["first"]);

    let pulls = octo.pulls("acme", "widgets");
    let pr = pulls
        .create("Run 2", "conveyor/run-2", "main")
        .body("body")
        .send()
        .await
        .unwrap();
    assert_eq!(pr.number, 100);
    assert_eq!(pr.head.sha, head_sha);
    let page = pulls
        .list()
        .head("acme:conveyor/run-2")
        .state(octocrab::params::State::Open)
        .send()
        .await
        .unwrap();
    assert_eq!(page.items.len(), 1);
    let err = pulls
        .create("Run 2", "conveyor/run-2", "main")
        .send()
        .await
        .unwrap_err();
    match err {
        octocrab::Error::GitHub { source, .. } => {
            assert_eq!(source.status_code.as_u16(), 422);
            assert_eq!(source.message, "Validation Failed");
        }
        other => panic!("unexpected error {other:?}"),
    }

    let checks = octo.checks("acme", "widgets");
    let run = checks
        .create_check_run("conveyor", head_sha.clone())
        .status(CheckRunStatus::InProgress)
        .send()
        .await
        .unwrap();
    let done = checks
        .update_check_run(run.id)
        .conclusion(CheckRunConclusion::Failure)
        .output(CheckRunOutput {
            title: "Failed".into(),
            summary: "step 2 failed".into(),
            text: Some("log tail".into()),
            annotations: vec![],
            images: vec![],
        })
        .send()
        .await
        .unwrap();
    assert_eq!(done.conclusion.as_deref(), Some("failure"));
    let runs = fake.check_runs("acme", "widgets");
    assert_eq!(runs[0].status, "completed");
    assert_eq!(runs[0].output_text.as_deref(), Some("log tail"));

    let reqs = fake.requests();
    assert!(
        reqs.iter()
            .skip(1)
            .all(|r| r.authorization.as_deref() == Some(format!("Bearer {tok}").as_str())),
        "{reqs:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn injected_failures_are_served_in_order_then_handling_resumes() {
    let fake = setup().await;
    let tok = token(&fake, INSTALLATION).await;
    fake.inject(
        "POST",
        "/repos/acme/widgets/issues/*/comments",
        vec![Injected::status(502), Injected::status(502)],
    );
    let path = "/repos/acme/widgets/issues/5/comments";

    // Another method on the same path is not intercepted.
    let resp = api(&fake, reqwest::Method::GET, path, &tok)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    for _ in 0..2 {
        let resp = api(&fake, reqwest::Method::POST, path, &tok)
            .json(&json!({"body": "hi"}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 502);
        let headers = resp.headers().clone();
        assert_eq!(headers["content-type"], "application/json; charset=utf-8");
        assert_eq!(headers["x-ratelimit-limit"], "5000");
        assert!(headers.contains_key("x-github-request-id"));
        let body: Value = resp.json().await.unwrap();
        assert_eq!(
            body,
            json!({"message": "Bad Gateway", "documentation_url": "https://docs.github.com/rest"})
        );
        assert!(
            fake.comments("acme", "widgets", 5).is_empty(),
            "state unchanged"
        );
    }
    let resp = api(&fake, reqwest::Method::POST, path, &tok)
        .json(&json!({"body": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    assert_eq!(fake.comments("acme", "widgets", 5).len(), 1);

    let statuses: Vec<u16> = fake
        .requests()
        .iter()
        .filter(|r| r.method == "POST" && r.path == path)
        .map(|r| r.status)
        .collect();
    assert_eq!(statuses, vec![502, 502, 201]);

    // `*` matches exactly one segment.
    fake.inject("GET", "/repos/acme/*", vec![Injected::status(500)]);
    let resp = api(&fake, reqwest::Method::GET, path, &tok)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = api(&fake, reqwest::Method::GET, "/repos/acme/widgets?x=1", &tok)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 500);
    assert_eq!(message(resp).await, "Internal Server Error");
    let last = fake.requests().pop().unwrap();
    assert_eq!(
        (last.path.as_str(), last.status),
        ("/repos/acme/widgets?x=1", 500)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn injected_headers_win_and_injection_precedes_auth() {
    let fake = setup().await;
    let secondary =
        "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.";
    fake.inject(
        "post",
        "/app/installations/*/access_tokens",
        vec![
            Injected::status(403)
                .with_message(secondary)
                .with_header("retry-after", "7")
                .with_header("x-ratelimit-remaining", "0"),
        ],
    );
    // No credentials at all: the injected response still comes first.
    let resp = reqwest::Client::new()
        .post(format!(
            "{}/app/installations/{INSTALLATION}/access_tokens",
            fake.url
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let headers = resp.headers().clone();
    assert_eq!(headers["retry-after"], "7");
    assert_eq!(headers["x-ratelimit-remaining"], "0");
    assert_eq!(headers.get_all("x-ratelimit-remaining").iter().count(), 1);
    assert_eq!(headers["x-ratelimit-limit"], "5000");
    assert!(headers.contains_key("x-github-request-id"));
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["message"], secondary);
    assert_eq!(body["documentation_url"], "https://docs.github.com/rest");

    // Exhausted: the next exchange is handled normally.
    let resp = exchange(&fake, INSTALLATION, &app_jwt()).await;
    assert_eq!(resp.status(), 201);
    assert_eq!(fake.issued_tokens().len(), 1);

    // Statuses without a body.
    let tok = fake.mint_token(INSTALLATION);
    fake.inject(
        "GET",
        "/repos/acme/widgets/pulls",
        vec![Injected::status(304).with_header("etag", "\"abc\"")],
    );
    let resp = api(
        &fake,
        reqwest::Method::GET,
        "/repos/acme/widgets/pulls",
        &tok,
    )
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status(), 304);
    assert_eq!(resp.headers()["etag"], "\"abc\"");
    assert!(resp.bytes().await.unwrap().is_empty());

    let statuses: Vec<u16> = fake.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![403, 201, 304]);
}

#[tokio::test(flavor = "multi_thread")]
async fn revoked_tokens_are_rejected_on_rest_and_git() {
    let fake = setup().await;
    let exchanged = token(&fake, INSTALLATION).await;
    let minted = fake.mint_token(INSTALLATION);
    let path = "/repos/acme/widgets/issues/1/comments";
    let git_refs = |tok: &str| {
        let creds =
            base64::engine::general_purpose::STANDARD.encode(format!("x-access-token:{tok}"));
        reqwest::Client::new()
            .get(format!(
                "{}/acme/widgets.git/info/refs?service=git-upload-pack",
                fake.url
            ))
            .header("authorization", format!("Basic {creds}"))
            .send()
    };
    for tok in [&exchanged, &minted] {
        let resp = api(&fake, reqwest::Method::GET, path, tok)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(git_refs(tok).await.unwrap().status(), 200);
    }

    fake.revoke_tokens();
    for tok in [&exchanged, &minted] {
        let resp = api(&fake, reqwest::Method::GET, path, tok)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401);
        assert_eq!(message(resp).await, "Bad credentials");
        assert_eq!(git_refs(tok).await.unwrap().status(), 401);
    }

    let fresh = token(&fake, INSTALLATION).await;
    let resp = api(&fake, reqwest::Method::GET, path, &fresh)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(git_refs(&fresh).await.unwrap().status(), 200);
    let fresh_minted = fake.mint_token(INSTALLATION);
    assert_eq!(git_refs(&fresh_minted).await.unwrap().status(), 200);
    assert_eq!(fake.issued_tokens().len(), 4);
}

fn issues_payload(number: u64) -> Value {
    json!({
        "action": "labeled",
        "issue": {"number": number, "title": format!("Issue {number}")},
        "label": {"name": "conveyor"},
        "repository": {"id": 5000 + number, "full_name": "acme/widgets"},
        "installation": {"id": INSTALLATION},
    })
}

fn list_deliveries(fake: &FakeGitHub, url: &str, jwt: Option<&str>) -> reqwest::RequestBuilder {
    let url = if url.starts_with("http") {
        url.to_string()
    } else {
        format!("{}{url}", fake.url)
    };
    let req = reqwest::Client::new()
        .get(url)
        .header("accept", "application/vnd.github+json");
    match jwt {
        Some(jwt) => req.bearer_auth(jwt),
        None => req,
    }
}

fn next_link(resp: &reqwest::Response) -> Option<String> {
    let link = resp.headers().get("link")?.to_str().unwrap();
    let (target, rel) = link.split_once(">; ").unwrap();
    assert_eq!(rel, "rel=\"next\"", "{link}");
    Some(target.strip_prefix('<').unwrap().to_string())
}

#[tokio::test(flavor = "multi_thread")]
async fn app_hook_deliveries_are_listed_newest_first_and_paginated() {
    let fake = FakeGitHub::start().await;
    fake.add_installation(INSTALLATION, "acme");
    let guids: Vec<String> = (0..5).map(|_| uuid::Uuid::new_v4().to_string()).collect();
    let mut ids = Vec::new();
    for (i, guid) in guids.iter().enumerate() {
        let code = if i == 2 { 503 } else { 200 };
        ids.push(fake.add_hook_delivery(
            guid,
            "issues",
            Some("labeled"),
            code,
            issues_payload(i as u64),
        ));
    }
    let ping = fake.add_hook_delivery(
        "ping-guid",
        "ping",
        None,
        200,
        json!({"zen": "Keep it simple."}),
    );

    // The App JWT is required.
    let resp = list_deliveries(&fake, "/app/hook/deliveries", None)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let installation_token = fake.mint_token(INSTALLATION);
    let resp = list_deliveries(&fake, "/app/hook/deliveries", Some(&installation_token))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let expired = sign(&json!({"iat": now() - 700, "exp": now() - 100, "iss": APP_ID}));
    let resp = list_deliveries(&fake, "/app/hook/deliveries", Some(&expired))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);

    let jwt = app_jwt();
    let resp = list_deliveries(&fake, "/app/hook/deliveries", Some(&jwt))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(next_link(&resp).is_none());
    let all: Vec<Value> = resp.json().await.unwrap();
    assert_eq!(all.len(), 6);
    assert_eq!(all[0]["id"].as_i64(), Some(ping));
    assert_eq!(all[0]["action"], Value::Null);
    assert_eq!(all[0]["installation_id"], Value::Null);
    assert_eq!(all[0]["repository_id"], Value::Null);
    let newest_issue = &all[1];
    let mut keys: Vec<&str> = newest_issue
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "action",
            "delivered_at",
            "duration",
            "event",
            "guid",
            "id",
            "installation_id",
            "redelivery",
            "repository_id",
            "status",
            "status_code",
            "throttled_at",
        ]
    );
    assert_eq!(newest_issue["id"].as_i64(), Some(ids[4]));
    assert_eq!(newest_issue["guid"], guids[4].as_str());
    assert_eq!(newest_issue["event"], "issues");
    assert_eq!(newest_issue["action"], "labeled");
    assert_eq!(newest_issue["redelivery"], false);
    assert_eq!(newest_issue["status"], "OK");
    assert_eq!(newest_issue["status_code"], 200);
    assert_eq!(newest_issue["installation_id"], INSTALLATION);
    assert_eq!(newest_issue["repository_id"], 5004);
    assert!(newest_issue["duration"].is_f64());
    assert_eq!(newest_issue["throttled_at"], Value::Null);
    chrono::DateTime::parse_from_rfc3339(newest_issue["delivered_at"].as_str().unwrap()).unwrap();
    let failed = all
        .iter()
        .find(|d| d["id"].as_i64() == Some(ids[2]))
        .unwrap();
    assert_eq!(failed["status"], "Invalid HTTP Response: 503");
    assert_eq!(failed["status_code"], 503);

    // Pagination through `Link: <...>; rel="next"`, over the 5 `issues`
    // deliveries plus the ping.
    let mut url = "/app/hook/deliveries?per_page=2".to_string();
    let mut pages = Vec::new();
    let mut seen = Vec::new();
    loop {
        let resp = list_deliveries(&fake, &url, Some(&jwt))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let next = next_link(&resp);
        let page: Vec<Value> = resp.json().await.unwrap();
        pages.push(page.len());
        seen.extend(page.iter().map(|d| d["guid"].as_str().unwrap().to_string()));
        match next {
            Some(next) => {
                let prefix = format!("{}/app/hook/deliveries?per_page=2&cursor=", fake.url);
                assert!(next.starts_with(&prefix), "{next}");
                url = next;
            }
            None => break,
        }
    }
    assert_eq!(pages, vec![2, 2, 2]);
    let mut expected: Vec<String> = guids.iter().rev().cloned().collect();
    expected.insert(0, "ping-guid".to_string());
    assert_eq!(seen, expected);

    // 5 deliveries only, 2 per page: the last page has one.
    let fake5 = FakeGitHub::start().await;
    for guid in &guids {
        fake5.add_hook_delivery(guid, "issues", Some("labeled"), 200, issues_payload(1));
    }
    let mut url = "/app/hook/deliveries?per_page=2".to_string();
    let mut pages = Vec::new();
    loop {
        let resp = list_deliveries(&fake5, &url, Some(&jwt))
            .send()
            .await
            .unwrap();
        let next = next_link(&resp);
        pages.push(resp.json::<Vec<Value>>().await.unwrap().len());
        match next {
            Some(next) => url = next,
            None => break,
        }
    }
    assert_eq!(pages, vec![2, 2, 1]);

    // `per_page` is capped at 100; a bad cursor is rejected.
    let resp = list_deliveries(&fake, "/app/hook/deliveries?per_page=1000", Some(&jwt))
        .send()
        .await
        .unwrap();
    assert!(next_link(&resp).is_none());
    assert_eq!(resp.json::<Vec<Value>>().await.unwrap().len(), 6);
    let resp = list_deliveries(&fake, "/app/hook/deliveries?cursor=bogus", Some(&jwt))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
}

type Received = (axum::http::HeaderMap, axum::body::Bytes);

/// A stand-in for Conveyor's webhook endpoint that answers with `status`.
async fn webhook_receiver(
    status: Arc<AtomicU16>,
) -> (String, tokio::sync::mpsc::UnboundedReceiver<Received>) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Received>();
    let app = axum::Router::new().route(
        "/webhook",
        axum::routing::post(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let tx = tx.clone();
                let status = status.clone();
                async move {
                    let _ = tx.send((headers, body));
                    axum::http::StatusCode::from_u16(status.load(Ordering::SeqCst)).unwrap()
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}/webhook"), rx)
}

async fn redeliver(fake: &FakeGitHub, id: &str, jwt: Option<&str>) -> reqwest::Response {
    let req = reqwest::Client::new()
        .post(format!("{}/app/hook/deliveries/{id}/attempts", fake.url))
        .header("accept", "application/vnd.github+json");
    let req = match jwt {
        Some(jwt) => req.bearer_auth(jwt),
        None => req,
    };
    req.send().await.unwrap()
}

async fn wait_for_deliveries(fake: &FakeGitHub, n: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while fake.hook_deliveries().len() < n {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {n} deliveries: {:?}",
            fake.hook_deliveries()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn redelivery_posts_the_signed_payload_to_the_webhook_target() {
    const SECRET: &str = "hook secret";
    let fake = FakeGitHub::start().await;
    let status = Arc::new(AtomicU16::new(200));
    let (target, mut received) = webhook_receiver(status.clone()).await;
    fake.set_webhook_target(&target, SECRET);
    let guid = uuid::Uuid::new_v4().to_string();
    let payload = issues_payload(9);
    let id = fake.add_hook_delivery(&guid, "issues", Some("labeled"), 503, payload.clone());

    let resp = redeliver(&fake, &id.to_string(), None).await;
    assert_eq!(resp.status(), 401);
    assert!(fake.redelivery_requests().is_empty());

    let jwt = app_jwt();
    let resp = redeliver(&fake, &id.to_string(), Some(&jwt)).await;
    assert_eq!(resp.status(), 202);
    assert_eq!(resp.json::<Value>().await.unwrap(), json!({}));
    let (headers, body) = tokio::time::timeout(Duration::from_secs(10), received.recv())
        .await
        .expect("redelivery within 10s")
        .expect("receiver alive");
    assert_eq!(headers["x-github-event"], "issues");
    assert_eq!(headers["x-github-delivery"], guid.as_str());
    assert!(headers.contains_key("x-github-hook-id"));
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(headers["user-agent"], "GitHub-Hookshot/fake");
    let signature = headers["x-hub-signature-256"].to_str().unwrap();
    let hex_sig = signature.strip_prefix("sha256=").expect("sha256= prefix");
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(&body);
    mac.verify_slice(&hex::decode(hex_sig).unwrap())
        .expect("valid X-Hub-Signature-256");
    assert_eq!(serde_json::from_slice::<Value>(&body).unwrap(), payload);

    wait_for_deliveries(&fake, 2).await;
    let resp = list_deliveries(&fake, "/app/hook/deliveries", Some(&jwt))
        .send()
        .await
        .unwrap();
    let list: Vec<Value> = resp.json().await.unwrap();
    assert_eq!(list.len(), 2);
    let redelivered = &list[0];
    assert_ne!(redelivered["id"].as_i64(), Some(id));
    assert_eq!(redelivered["guid"], guid.as_str());
    assert_eq!(redelivered["redelivery"], true);
    assert_eq!(redelivered["status"], "OK");
    assert_eq!(redelivered["status_code"], 200);
    assert_eq!(redelivered["event"], "issues");
    assert_eq!(redelivered["action"], "labeled");
    assert_eq!(redelivered["installation_id"], INSTALLATION);
    assert_eq!(list[1]["id"].as_i64(), Some(id));
    assert_eq!(list[1]["redelivery"], false);

    // A failing target is recorded as such.
    status.store(500, Ordering::SeqCst);
    let resp = redeliver(&fake, &id.to_string(), Some(&jwt)).await;
    assert_eq!(resp.status(), 202);
    let (headers, _) = tokio::time::timeout(Duration::from_secs(10), received.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(headers["x-github-delivery"], guid.as_str());
    wait_for_deliveries(&fake, 3).await;
    let last = fake.hook_deliveries().pop().unwrap();
    assert!(last.redelivery);
    assert_eq!(last.guid, guid);
    assert_eq!(last.status_code, 500);
    assert_eq!(last.status, "Invalid HTTP Response: 500");
    assert_eq!(fake.redelivery_requests(), vec![id, id]);
}

#[tokio::test(flavor = "multi_thread")]
async fn redelivering_an_unknown_delivery_is_not_found() {
    let fake = FakeGitHub::start().await;
    let jwt = app_jwt();
    let resp = redeliver(&fake, "999", Some(&jwt)).await;
    assert_eq!(resp.status(), 404);
    assert_eq!(message(resp).await, "Not Found");
    assert_eq!(redeliver(&fake, "abc", Some(&jwt)).await.status(), 404);

    // Without a webhook target, a known delivery is accepted but nothing is sent.
    let id = fake.add_hook_delivery("g-1", "issues", Some("opened"), 200, issues_payload(1));
    assert_eq!(
        redeliver(&fake, &id.to_string(), Some(&jwt)).await.status(),
        202
    );
    assert_eq!(fake.redelivery_requests(), vec![999, id]);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(fake.hook_deliveries().len(), 1);
}

/// The permissions Conveyor asks for a run's token.
fn run_permissions() -> Value {
    json!({"contents": "write", "pull_requests": "write", "issues": "write", "checks": "write"})
}

#[tokio::test(flavor = "multi_thread")]
async fn token_requests_are_narrowed_to_what_the_installation_holds() {
    let fake = setup().await;
    fake.add_repo(INSTALLATION, "acme", "gadgets", &[("a.txt", "a\n")]);

    let resp = exchange_for(
        &fake,
        INSTALLATION,
        &json!({"repositories": ["widgets"], "permissions": run_permissions()}),
    )
    .await;
    assert_eq!(resp.status(), 201);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body["permissions"],
        json!({
            "contents": "write", "pull_requests": "write", "issues": "write",
            "checks": "write", "metadata": "read",
        })
    );
    assert_eq!(body["repository_selection"], "selected");
    let repos = body["repositories"].as_array().unwrap();
    assert_eq!(repos.len(), 1);
    assert_eq!(repos[0]["full_name"], "acme/widgets");
    let parsed: octocrab::models::InstallationToken = serde_json::from_value(body.clone()).unwrap();
    assert_eq!(parsed.repositories.unwrap().len(), 1);

    // By id, and fewer permissions than the installation holds.
    let both = exchange_for(
        &fake,
        INSTALLATION,
        &json!({"repositories": ["widgets", "gadgets"]}),
    )
    .await;
    let both: Value = both.json().await.unwrap();
    let gadgets_id = both["repositories"][1]["id"].as_u64().unwrap();
    assert_eq!(both["repositories"][1]["name"], "gadgets");
    assert_eq!(both["permissions"]["checks"], "write", "all granted ones");
    let resp = exchange_for(
        &fake,
        INSTALLATION,
        &json!({"repository_ids": [gadgets_id], "permissions": {"contents": "read"}}),
    )
    .await;
    assert_eq!(resp.status(), 201);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["repositories"][0]["name"], "gadgets");
    assert_eq!(
        body["permissions"],
        json!({"contents": "read", "metadata": "read"})
    );
    let issued = fake.issued_tokens().len();

    // A repository outside the installation, or named with its owner.
    for repositories in [json!(["nope"]), json!(["secret"]), json!(["acme/widgets"])] {
        let resp = exchange_for(&fake, INSTALLATION, &json!({"repositories": repositories})).await;
        assert_eq!(resp.status(), 422, "{repositories}");
        assert_eq!(
            message(resp).await,
            "There is at least one repository that does not exist or is not accessible to the parent installation."
        );
    }
    let resp = exchange_for(&fake, INSTALLATION, &json!({"repository_ids": [999_999]})).await;
    assert_eq!(resp.status(), 422);

    // A permission the installation was not granted, or not at that level.
    for permissions in [
        json!({"workflows": "write"}),
        json!({"administration": "write"}),
        json!({"metadata": "write"}),
        json!({"contents": "write", "administration": "read"}),
    ] {
        let resp = exchange_for(
            &fake,
            INSTALLATION,
            &json!({"repositories": ["widgets"], "permissions": permissions}),
        )
        .await;
        assert_eq!(resp.status(), 422, "{permissions}");
        assert_eq!(
            message(resp).await,
            "The permissions requested are not granted to this installation."
        );
    }
    fake.set_installation_permissions(INSTALLATION, &[("contents", "read"), ("metadata", "read")]);
    let resp = exchange_for(
        &fake,
        INSTALLATION,
        &json!({"permissions": run_permissions()}),
    )
    .await;
    assert_eq!(resp.status(), 422, "write asked, read granted");
    let resp = exchange_for(
        &fake,
        INSTALLATION,
        &json!({"permissions": {"contents": "execute"}}),
    )
    .await;
    assert_eq!(resp.status(), 422);
    assert_eq!(fake.issued_tokens().len(), issued, "refusals issue nothing");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_scoped_token_reaches_its_repository_with_its_permissions_only() {
    let fake = setup().await;
    fake.add_repo(INSTALLATION, "acme", "gadgets", &[("a.txt", "a\n")]);
    let main_sha = fake.branch_sha("acme", "widgets", "main").unwrap();
    let run = scoped_token(
        &fake,
        json!({"repositories": ["widgets"], "permissions": run_permissions()}),
    )
    .await;
    let comment = |repo: &str, tok: &str| {
        api(
            &fake,
            reqwest::Method::POST,
            &format!("/repos/acme/{repo}/issues/1/comments"),
            tok,
        )
        .json(&json!({"body": "hi"}))
        .send()
    };
    assert_eq!(comment("widgets", &run).await.unwrap().status(), 201);
    let resp = comment("gadgets", &run).await.unwrap();
    assert_eq!(resp.status(), 404, "another repository of the installation");
    assert_eq!(message(resp).await, "Not Found");

    // REST calls needing a permission the token lacks.
    let issues_only = scoped_token(
        &fake,
        json!({"repositories": ["widgets"], "permissions": {"issues": "write"}}),
    )
    .await;
    assert_eq!(
        comment("widgets", &issues_only).await.unwrap().status(),
        201
    );
    let resp = api(
        &fake,
        reqwest::Method::POST,
        "/repos/acme/widgets/check-runs",
        &issues_only,
    )
    .json(&json!({"name": "conveyor", "head_sha": main_sha}))
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status(), 403);
    assert_eq!(
        message(resp).await,
        "Resource not accessible by integration"
    );
    let resp = api(
        &fake,
        reqwest::Method::GET,
        "/repos/acme/widgets/pulls",
        &issues_only,
    )
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status(), 403);
    let read_only = scoped_token(&fake, json!({"permissions": {"issues": "read"}})).await;
    assert_eq!(comment("widgets", &read_only).await.unwrap().status(), 403);
    let resp = api(
        &fake,
        reqwest::Method::GET,
        "/repos/acme/widgets/issues/1/comments",
        &read_only,
    )
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(fake.comments("acme", "widgets", 1).len(), 2);

    // git: the token's repository only, and pushing needs contents:write.
    let work = tempfile::tempdir().unwrap();
    let url = |repo: &str| format!("{}/acme/{repo}.git", fake.url);
    let out = git(
        work.path(),
        &["clone", "--quiet", &url("gadgets"), "other"],
        Some(&basic(&run)),
    )
    .await;
    assert!(!out.status.success());
    assert_eq!(fake.requests().last().unwrap().status, 404);
    let out = git(
        work.path(),
        &["clone", "--quiet", &url("widgets"), "wt"],
        Some(&basic(&issues_only)),
    )
    .await;
    assert!(!out.status.success(), "cloning needs contents:read");
    assert_eq!(fake.requests().last().unwrap().status, 403);

    let contents_read = scoped_token(
        &fake,
        json!({"repositories": ["widgets"], "permissions": {"contents": "read"}}),
    )
    .await;
    let out = git(
        work.path(),
        &["clone", "--quiet", &url("widgets"), "wt"],
        Some(&basic(&contents_read)),
    )
    .await;
    assert_ok(&out, "clone with contents:read");
    let wt = work.path().join("wt");
    std::fs::write(wt.join("out.txt"), "result\n").unwrap();
    assert_ok(&git(&wt, &["add", "out.txt"], None).await, "add");
    assert_ok(
        &git(&wt, &["commit", "--quiet", "-m", "result"], None).await,
        "commit",
    );
    let push = |tok: String| {
        let wt = wt.clone();
        async move {
            git(
                &wt,
                &["push", "--quiet", "origin", "HEAD:refs/heads/feature"],
                Some(&basic(&tok)),
            )
            .await
        }
    };
    let out = push(contents_read).await;
    assert!(!out.status.success(), "pushing needs contents:write");
    assert_eq!(fake.requests().last().unwrap().status, 403);
    assert_eq!(fake.branch_sha("acme", "widgets", "feature"), None);
    assert_ok(&push(run).await, "push with contents:write");
    assert!(fake.branch_sha("acme", "widgets", "feature").is_some());
}

#[tokio::test(flavor = "multi_thread")]
async fn bodies_and_titles_over_githubs_limits_are_refused() {
    let fake = setup().await;
    let tok = token(&fake, INSTALLATION).await;
    let main_sha = fake.branch_sha("acme", "widgets", "main").unwrap();
    push_branch_locally(&fake, "conveyor/long").await;
    let post = |path: &str, body: Value| {
        api(
            &fake,
            reqwest::Method::POST,
            &format!("/repos/acme/widgets/{path}"),
            &tok,
        )
        .json(&body)
        .send()
    };

    // Comment bodies: 65,536 characters, counted as characters, not bytes.
    let resp = post("issues/1/comments", json!({"body": "é".repeat(65_536)}))
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let resp = post("issues/1/comments", json!({"body": "x".repeat(65_537)}))
        .await
        .unwrap();
    assert_eq!(resp.status(), 422);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["message"], "Validation Failed");
    assert_eq!(body["errors"][0]["field"], "body");

    // Pull request titles: 256 characters.
    let pull = |title: String| {
        post(
            "pulls",
            json!({"title": title, "head": "conveyor/long", "base": "main"}),
        )
    };
    let resp = pull("t".repeat(257)).await.unwrap();
    assert_eq!(resp.status(), 422);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["message"], "Validation Failed");
    assert_eq!(
        body["errors"][0]["message"],
        "title is too long (maximum is 256 characters)"
    );
    assert!(fake.pull_requests("acme", "widgets").is_empty());
    assert_eq!(pull("é".repeat(256)).await.unwrap().status(), 201);

    // Check run output: summary and text 65,535 characters, title 256.
    let check = |title: String, summary: String, text: Option<String>| {
        post(
            "check-runs",
            json!({
                "name": "conveyor", "head_sha": main_sha,
                "output": {"title": title, "summary": summary, "text": text},
            }),
        )
    };
    let ok = |n: usize| "s".repeat(n);
    for (title, summary, text) in [
        (ok(256), ok(65_536), None),
        (ok(256), ok(1), Some(ok(65_536))),
        (ok(257), ok(1), None),
    ] {
        let resp = check(title, summary, text).await.unwrap();
        assert_eq!(resp.status(), 422);
    }
    assert!(fake.check_runs("acme", "widgets").is_empty());
    let resp = check(ok(256), ok(65_535), Some("é".repeat(65_535)))
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
}

// ---------------------------------------------------------------------------
// The GitHub loop: reactions, collaborators, check-run lists and actions, pull requests,
// contents, outages.
// ---------------------------------------------------------------------------

/// The target of the `rel` link of a paginated answer, if it has one.
fn rel_link(resp: &reqwest::Response, rel: &str) -> Option<String> {
    let header = resp.headers().get("link")?.to_str().unwrap();
    header.split(", ").find_map(|link| {
        let (target, this_rel) = link.split_once(">; ")?;
        (this_rel == format!("rel=\"{rel}\"")).then(|| target.trim_start_matches('<').to_owned())
    })
}

async fn send(request: reqwest::RequestBuilder) -> (u16, Value) {
    let resp = request.send().await.expect("request");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread")]
async fn reactions_are_made_once_per_content_and_listed_per_comment_kind() {
    let fake = setup().await;
    let tok = token(&fake, INSTALLATION).await;
    let comment = fake.add_user_comment("acme", "widgets", 7, "alice", "/conveyor run");
    let react = |area: &str, id: u64, content: Value| {
        api(
            &fake,
            reqwest::Method::POST,
            &format!("/repos/acme/widgets/{area}/comments/{id}/reactions"),
            &tok,
        )
        .json(&json!({ "content": content }))
    };

    let (status, first) = send(react("issues", comment, json!("+1"))).await;
    assert_eq!(status, 201);
    assert_eq!(first["content"], "+1");
    assert_eq!(first["user"]["login"], "conveyor[bot]");
    let (status, again) = send(react("issues", comment, json!("+1"))).await;
    assert_eq!((status, &again["id"]), (200, &first["id"]), "already there");
    assert_eq!(send(react("issues", comment, json!("eyes"))).await.0, 201);
    for bad in [json!("thumbsup"), json!(1)] {
        assert_eq!(send(react("issues", comment, bad)).await.0, 422);
    }
    let (status, body) = send(
        api(
            &fake,
            reqwest::Method::POST,
            &format!("/repos/acme/widgets/issues/comments/{comment}/reactions"),
            &tok,
        )
        .json(&json!({})),
    )
    .await;
    assert_eq!(status, 422);
    assert_eq!(
        body["message"],
        "Invalid request.\n\n\"content\" wasn't supplied."
    );
    assert_eq!(send(react("issues", 999, json!("+1"))).await.0, 404);
    assert_eq!(fake.reactions("acme", "widgets", comment), ["+1", "eyes"]);

    let list = |query: &str| {
        api(
            &fake,
            reqwest::Method::GET,
            &format!("/repos/acme/widgets/issues/comments/{comment}/reactions{query}"),
            &tok,
        )
    };
    let (_, all) = send(list("")).await;
    let contents: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["content"].as_str().unwrap())
        .collect();
    assert_eq!(contents, ["+1", "eyes"]);
    let (_, eyes) = send(list("?content=eyes")).await;
    assert_eq!(eyes.as_array().unwrap().len(), 1);
    assert_eq!(send(list("?content=nope")).await.0, 422);

    // The comment shows its author and the reactions on it.
    let (_, shown) = send(api(
        &fake,
        reqwest::Method::GET,
        &format!("/repos/acme/widgets/issues/comments/{comment}"),
        &tok,
    ))
    .await;
    assert_eq!(shown["user"]["login"], "alice");
    assert_eq!(shown["user"]["type"], "User");
    assert_eq!(shown["performed_via_github_app"], Value::Null);
    assert_eq!(shown["reactions"]["total_count"], 2);
    assert_eq!(shown["reactions"]["eyes"], 1);

    // Review comments are reacted to under /pulls, and only there.
    let review = fake.add_review_comment("acme", "widgets", 100, "bob", "/conveyor approve");
    assert_eq!(send(react("pulls", review, json!("rocket"))).await.0, 201);
    assert_eq!(send(react("issues", review, json!("rocket"))).await.0, 404);
    assert_eq!(send(react("pulls", comment, json!("rocket"))).await.0, 404);
    assert_eq!(fake.reactions("acme", "widgets", review), ["rocket"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn reacting_needs_write_on_issues_or_pull_requests() {
    let fake = setup().await;
    let comment = fake.add_user_comment("acme", "widgets", 7, "alice", "hi");
    let review = fake.add_review_comment("acme", "widgets", 100, "bob", "hi");
    for (permissions, issue_status, review_status) in [
        (json!({"issues": "read", "pull_requests": "read"}), 403, 403),
        (json!({"issues": "write"}), 201, 403),
        (json!({"pull_requests": "write"}), 201, 201),
    ] {
        let tok = scoped_token(&fake, json!({ "permissions": permissions })).await;
        for (area, id, expected) in [
            ("issues", comment, issue_status),
            ("pulls", review, review_status),
        ] {
            let (status, body) = send(
                api(
                    &fake,
                    reqwest::Method::POST,
                    &format!("/repos/acme/widgets/{area}/comments/{id}/reactions"),
                    &tok,
                )
                .json(&json!({"content": "eyes"})),
            )
            .await;
            assert_eq!(status / 100, expected / 100, "{permissions} {area}: {body}");
            if expected == 403 {
                assert_eq!(body["message"], "Resource not accessible by integration");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn collaborator_permission_reports_the_role_and_its_legacy_permission() {
    let fake = setup().await;
    let tok = token(&fake, INSTALLATION).await;
    for (login, role) in [
        ("ada", "admin"),
        ("max", "maintain"),
        ("wes", "write"),
        ("tia", "triage"),
        ("rob", "read"),
    ] {
        fake.set_permission("acme", "widgets", login, role);
    }
    fake.add_user_comment("acme", "widgets", 1, "nora", "drive-by");
    let permission = |login: &str| {
        api(
            &fake,
            reqwest::Method::GET,
            &format!("/repos/acme/widgets/collaborators/{login}/permission"),
            &tok,
        )
    };
    for (login, legacy, role, push) in [
        ("ada", "admin", "admin", true),
        ("max", "write", "maintain", true),
        ("WES", "write", "write", true),
        ("tia", "read", "triage", false),
        ("rob", "read", "read", false),
        ("nora", "none", "none", false),
    ] {
        let (status, body) = send(permission(login)).await;
        assert_eq!(status, 200, "{login}");
        assert_eq!(body["permission"], legacy, "{login}");
        assert_eq!(body["role_name"], role, "{login}");
        assert_eq!(
            body["user"]["login"].as_str().unwrap().to_lowercase(),
            login.to_lowercase()
        );
        assert_eq!(body["user"]["permissions"]["push"], push, "{login}");
    }
    let (status, body) = send(permission("nobody-at-all")).await;
    assert_eq!((status, body["message"].as_str()), (404, Some("Not Found")));

    // Reading who may do what takes the repository's metadata permission.
    fake.set_installation_permissions(INSTALLATION, &[("issues", "write")]);
    let tok = token(&fake, INSTALLATION).await;
    let (status, _) = send(api(
        &fake,
        reqwest::Method::GET,
        "/repos/acme/widgets/collaborators/ada/permission",
        &tok,
    ))
    .await;
    assert_eq!(status, 403);
}

/// Creates a check run through the API; returns its id.
async fn create_check_run(fake: &FakeGitHub, tok: &str, body: Value) -> u64 {
    let (status, run) = send(
        api(
            fake,
            reqwest::Method::POST,
            "/repos/acme/widgets/check-runs",
            tok,
        )
        .json(&body),
    )
    .await;
    assert_eq!(status, 201, "{run}");
    run["id"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn check_runs_are_listed_for_a_ref_filtered_and_paginated() {
    let fake = setup().await;
    let tok = token(&fake, INSTALLATION).await;
    let sha = fake.branch_sha("acme", "widgets", "main").unwrap();
    let older = create_check_run(
        &fake,
        &tok,
        json!({"name": "conveyor", "head_sha": sha, "external_id": "a"}),
    )
    .await;
    let newer = create_check_run(&fake, &tok, json!({"name": "conveyor", "head_sha": sha, "external_id": "b", "conclusion": "success", "output": {"title": "t", "summary": "s"}})).await;
    let lint = create_check_run(&fake, &tok, json!({"name": "lint", "head_sha": sha})).await;
    let list = |git_ref: &str, query: &str| {
        api(
            &fake,
            reqwest::Method::GET,
            &format!("/repos/acme/widgets/commits/{git_ref}/check-runs{query}"),
            &tok,
        )
    };
    let ids = |body: &Value| -> Vec<u64> {
        body["check_runs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_u64().unwrap())
            .collect()
    };

    for (git_ref, query, expected) in [
        ("main", "", vec![lint, newer]),
        (sha.as_str(), "?filter=all", vec![lint, newer, older]),
        (
            "main",
            "?check_name=conveyor&filter=all",
            vec![newer, older],
        ),
        (
            "main",
            "?check_name=conveyor&status=queued&filter=all",
            vec![older],
        ),
        ("main", "?app_id=1&filter=all", vec![]),
    ] {
        let (status, body) = send(list(git_ref, query)).await;
        assert_eq!(status, 200, "{git_ref}{query}");
        assert_eq!(ids(&body), expected, "{git_ref}{query}");
        assert_eq!(body["total_count"], expected.len(), "{git_ref}{query}");
    }
    assert_eq!(send(list("main", "?filter=some")).await.0, 422);
    let (status, body) = send(list("no-such-branch", "")).await;
    assert_eq!(status, 422);
    assert_eq!(body["message"], "No commit found for SHA: no-such-branch");

    // Pages of one: each says where the next is, the last says nothing more.
    let resp = list("main", "?filter=all&per_page=1").send().await.unwrap();
    let link = rel_link(&resp, "next").expect("a next page");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        (ids(&body), body["total_count"].as_u64()),
        (vec![lint], Some(3))
    );
    let resp = reqwest::Client::new()
        .get(&link)
        .bearer_auth(&tok)
        .send()
        .await
        .unwrap();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(ids(&body), [newer]);
    let resp = list("main", "?filter=all&per_page=1&page=3")
        .send()
        .await
        .unwrap();
    assert!(rel_link(&resp, "next").is_none());
    assert!(rel_link(&resp, "prev").unwrap().ends_with("page=2"));
    let body: Value = resp.json().await.unwrap();
    assert_eq!(ids(&body), [older]);

    // Listing needs checks: read.
    let tok = scoped_token(&fake, json!({"permissions": {"contents": "read"}})).await;
    let (status, _) = send(api(
        &fake,
        reqwest::Method::GET,
        "/repos/acme/widgets/commits/main/check-runs",
        &tok,
    ))
    .await;
    assert_eq!(status, 403);
}

#[tokio::test(flavor = "multi_thread")]
async fn check_run_actions_are_held_to_githubs_limits_and_every_state_is_kept() {
    let fake = setup().await;
    let tok = token(&fake, INSTALLATION).await;
    let sha = fake.branch_sha("acme", "widgets", "main").unwrap();
    let action = |label: &str, description: &str, identifier: &str| json!({"label": label, "description": description, "identifier": identifier});
    let approve = action("Approve", "Let the run go on", "approve");
    let reject = action("Reject", "End the run as failed", "reject");
    let id = create_check_run(
        &fake,
        &tok,
        json!({"name": "conveyor", "head_sha": sha, "status": "in_progress"}),
    )
    .await;
    let patch = |body: Value| {
        api(
            &fake,
            reqwest::Method::PATCH,
            &format!("/repos/acme/widgets/check-runs/{id}"),
            &tok,
        )
        .json(&body)
    };
    let (status, body) = send(patch(json!({
        "conclusion": "action_required",
        "output": {"title": "Waiting for approval", "summary": "s"},
        "actions": [approve, reject],
    })))
    .await;
    assert_eq!(status, 200, "{body}");

    let twenty = "x".repeat(20);
    let forty = "x".repeat(40);
    for actions in [
        json!([approve, reject, approve, reject]),
        json!([action(&format!("{twenty}x"), "d", "i")]),
        json!([action("l", &format!("{forty}x"), "i")]),
        json!([action("l", "d", &format!("{twenty}x"))]),
        json!([{"label": "l", "description": "d"}]),
        json!("approve"),
    ] {
        let (status, body) = send(patch(json!({ "actions": actions }))).await;
        assert_eq!(status, 422, "{actions}: {body}");
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .starts_with("Invalid request.")
        );
    }
    let (status, _) = send(patch(
        json!({"actions": [action(&twenty, &forty, &twenty)]}),
    ))
    .await;
    assert_eq!(status, 200, "at the limits");
    let (status, _) = send(patch(json!({
        "status": "completed", "conclusion": "success",
        "output": {"title": "Passed", "summary": "s"}, "actions": [],
    })))
    .await;
    assert_eq!(status, 200);

    let history = fake.check_run_history("acme", "widgets", id);
    let states: Vec<(&str, Option<&str>, usize)> = history
        .iter()
        .map(|r| (r.status.as_str(), r.conclusion.as_deref(), r.actions.len()))
        .collect();
    assert_eq!(
        states,
        [
            ("in_progress", None, 0),
            ("completed", Some("action_required"), 2),
            ("completed", Some("action_required"), 1),
            ("completed", Some("success"), 0),
        ],
        "refused updates leave no trace"
    );
    assert_eq!(history[1].actions[0].identifier, "approve");
    assert_eq!(history[1].actions[1].label, "Reject");
    assert_eq!(history.last(), fake.check_runs("acme", "widgets").last());
}

#[tokio::test(flavor = "multi_thread")]
async fn pull_requests_show_their_head_base_and_fork_and_how_they_closed() {
    let fake = setup().await;
    let tok = token(&fake, INSTALLATION).await;
    let first = fake.push_files("acme", "widgets", "feature", &[("f.txt", "1\n")], &[]);
    let same = fake.open_pull_request_from("acme", "widgets", "feature", "main", "A feature");
    let fork_sha = "ab".repeat(20);
    let fork = fake.open_fork_pull_request(
        "acme",
        "widgets",
        "mallory",
        "patch-1",
        &fork_sha,
        "main",
        "From a fork",
    );
    let get = |n: u64| {
        api(
            &fake,
            reqwest::Method::GET,
            &format!("/repos/acme/widgets/pulls/{n}"),
            &tok,
        )
    };

    let (status, pr) = send(get(same)).await;
    assert_eq!(status, 200);
    assert_eq!(pr["head"]["ref"], "feature");
    assert_eq!(pr["head"]["sha"], first.as_str());
    assert_eq!(pr["head"]["repo"]["full_name"], "acme/widgets");
    assert_eq!(pr["base"]["ref"], "main");
    assert_eq!(
        (pr["state"].as_str(), pr["merged"].as_bool()),
        (Some("open"), Some(false))
    );
    let parsed: octocrab::models::pulls::PullRequest = serde_json::from_value(pr).unwrap();
    assert_eq!(parsed.number, same);

    // The head follows the branch.
    let second = fake.push_files("acme", "widgets", "feature", &[("f.txt", "2\n")], &[]);
    let (_, pr) = send(get(same)).await;
    assert_eq!(pr["head"]["sha"], second.as_str());

    let (_, pr) = send(get(fork)).await;
    assert_eq!(pr["head"]["repo"]["full_name"], "mallory/widgets");
    assert_eq!(pr["head"]["repo"]["fork"], true);
    assert_eq!(pr["head"]["label"], "mallory:patch-1");
    assert_eq!(pr["head"]["sha"], fork_sha.as_str());
    assert_eq!(pr["user"]["login"], "mallory");
    assert_eq!(pr["base"]["repo"]["full_name"], "acme/widgets");

    fake.close_pull_request("acme", "widgets", same, true);
    fake.close_pull_request("acme", "widgets", fork, false);
    let (_, pr) = send(get(same)).await;
    assert_eq!(
        (pr["state"].as_str(), pr["merged"].as_bool()),
        (Some("closed"), Some(true))
    );
    assert!(pr["merged_at"].is_string());
    assert_eq!(
        fake.branch_sha("acme", "widgets", "main").as_deref(),
        Some(second.as_str())
    );
    let (_, pr) = send(get(fork)).await;
    assert_eq!(
        (pr["state"].as_str(), pr["merged"].as_bool()),
        (Some("closed"), Some(false))
    );

    let records = fake.pull_requests("acme", "widgets");
    assert_eq!(
        records
            .iter()
            .map(|p| (p.head_sha.as_str(), p.head_repo.as_str(), p.merged))
            .collect::<Vec<_>>(),
        [
            (second.as_str(), "acme/widgets", true),
            (fork_sha.as_str(), "mallory/widgets", false),
        ]
    );
    assert_eq!(send(get(4242)).await.0, 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn contents_are_served_raw_or_as_json_from_any_ref() {
    let fake = setup().await;
    let tok = token(&fake, INSTALLATION).await;
    let big = "b".repeat(1024 * 1024 + 1);
    fake.push_files(
        "acme",
        "widgets",
        "feature",
        &[("docs/a b.md", "spaced\n"), ("big.txt", &big)],
        &[
            ("link-to-readme", "README.md"),
            ("link-out", "../../etc/passwd"),
        ],
    );
    let get = |path: &str, accept: &str| {
        reqwest::Client::new()
            .get(format!("{}/repos/acme/widgets/contents/{path}", fake.url))
            .bearer_auth(&tok)
            .header("accept", accept)
    };
    const JSON: &str = "application/vnd.github+json";
    const RAW: &str = "application/vnd.github.raw+json";
    const OBJECT: &str = "application/vnd.github.object+json";

    let (status, file) = send(get("README.md", JSON)).await;
    assert_eq!(status, 200);
    assert_eq!(
        (file["type"].as_str(), file["encoding"].as_str()),
        (Some("file"), Some("base64"))
    );
    let content: String = file["content"].as_str().unwrap().split('\n').collect();
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(content)
        .unwrap();
    assert_eq!(decoded, b"# widgets\n");
    assert_eq!(file["size"], 10);
    let parsed: octocrab::models::repos::Content = serde_json::from_value(file).unwrap();
    assert_eq!(parsed.path, "README.md");

    let resp = get("README.md", RAW).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        !resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    assert_eq!(resp.bytes().await.unwrap().as_ref(), b"# widgets\n");

    // Other refs, missing paths and refs.
    assert_eq!(send(get("docs/a%20b.md?ref=feature", JSON)).await.0, 200);
    let resp = get("docs/a%20b.md?ref=feature", RAW).send().await.unwrap();
    assert_eq!(resp.text().await.unwrap(), "spaced\n");
    assert_eq!(send(get("docs/a%20b.md", JSON)).await.0, 404, "not on main");
    let (status, body) = send(get("README.md?ref=nope", JSON)).await;
    assert_eq!(
        (status, body["message"].as_str()),
        (404, Some("No commit found for the ref nope"))
    );

    // Directories are lists, whatever the media type, except as an object.
    for accept in [JSON, RAW] {
        let (status, listing) = send(get("scripts", accept)).await;
        assert_eq!(status, 200);
        let names: Vec<(&str, &str)> = listing
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e["name"].as_str().unwrap(), e["type"].as_str().unwrap()))
            .collect();
        assert_eq!(names, [("build.sh", "file")]);
    }
    let (_, root) = send(get("?ref=feature", JSON)).await;
    let names: Vec<&str> = root
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "README.md",
            "big.txt",
            "docs",
            "link-out",
            "link-to-readme",
            "scripts"
        ]
    );
    let (_, object) = send(get("scripts", OBJECT)).await;
    assert_eq!(object["type"], "dir");
    assert_eq!(object["entries"][0]["path"], "scripts/build.sh");

    // A link to a file is that file; a link elsewhere is described.
    let resp = get("link-to-readme?ref=feature", RAW).send().await.unwrap();
    assert_eq!(resp.text().await.unwrap(), "# widgets\n");
    let (_, link) = send(get("link-out?ref=feature", RAW)).await;
    assert_eq!(
        (link["type"].as_str(), link["target"].as_str()),
        (Some("symlink"), Some("../../etc/passwd"))
    );

    // Over 1 MB: raw only, or an object without content.
    let (status, body) = send(get("big.txt?ref=feature", JSON)).await;
    assert_eq!(status, 403);
    assert_eq!(body["errors"][0]["code"], "too_large");
    let resp = get("big.txt?ref=feature", RAW).send().await.unwrap();
    assert_eq!(resp.bytes().await.unwrap().len(), big.len());
    let (_, object) = send(get("big.txt?ref=feature", OBJECT)).await;
    assert_eq!(
        (object["encoding"].as_str(), object["content"].as_str()),
        (Some("none"), Some(""))
    );

    // Reading contents takes the contents permission.
    let tok = scoped_token(&fake, json!({"permissions": {"issues": "write"}})).await;
    let resp = reqwest::Client::new()
        .get(format!(
            "{}/repos/acme/widgets/contents/README.md",
            fake.url
        ))
        .bearer_auth(&tok)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
}

#[tokio::test(flavor = "multi_thread")]
async fn issue_comments_are_listed_a_page_at_a_time() {
    let fake = setup().await;
    let tok = token(&fake, INSTALLATION).await;
    for n in 0..35 {
        fake.add_user_comment("acme", "widgets", 3, "alice", &format!("comment {n}"));
    }
    let resp = api(
        &fake,
        reqwest::Method::GET,
        "/repos/acme/widgets/issues/3/comments",
        &tok,
    )
    .send()
    .await
    .unwrap();
    let next = rel_link(&resp, "next").expect("a second page");
    let first: Vec<Value> = resp.json().await.unwrap();
    assert_eq!(first.len(), 30, "GitHub's default page");
    assert_eq!(first[0]["body"], "comment 0");
    let second: Vec<Value> = reqwest::Client::new()
        .get(&next)
        .bearer_auth(&tok)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(second.len(), 5);
    assert_eq!(second[4]["body"], "comment 34");
    let resp = api(
        &fake,
        reqwest::Method::GET,
        "/repos/acme/widgets/issues/3/comments?per_page=100",
        &tok,
    )
    .send()
    .await
    .unwrap();
    assert!(rel_link(&resp, "next").is_none());
    assert_eq!(resp.json::<Vec<Value>>().await.unwrap().len(), 35);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_outage_answers_every_rest_call_until_it_passes_or_is_lifted() {
    let fake = setup().await;
    let tok = token(&fake, INSTALLATION).await;
    let comment = || {
        api(
            &fake,
            reqwest::Method::POST,
            "/repos/acme/widgets/issues/1/comments",
            &tok,
        )
        .json(&json!({"body": "hello"}))
    };

    let started = std::time::Instant::now();
    // Long enough that the calls below fall inside it on a loaded machine.
    fake.outage(502, Duration::from_secs(5));
    let (status, body) = send(comment()).await;
    assert_eq!(
        (status, body["message"].as_str()),
        (502, Some("Bad Gateway"))
    );
    assert_eq!(
        exchange(&fake, INSTALLATION, &app_jwt()).await.status(),
        502
    );
    // git over HTTP is not part of the REST outage.
    let work = tempfile::tempdir().unwrap();
    let remote = format!("{}/acme/widgets.git", fake.url);
    let out = git(work.path(), &["ls-remote", &remote], Some(&basic(&tok))).await;
    assert_ok(&out, "ls-remote during an outage");
    assert!(fake.comments("acme", "widgets", 1).is_empty());
    while send(comment()).await.0 == 502 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        started.elapsed() >= Duration::from_secs(5),
        "it lasted its time"
    );

    // Queued injections wait for the end of an outage.
    fake.inject(
        "POST",
        "/repos/acme/widgets/issues/*/comments",
        vec![Injected::status(500)],
    );
    let outage = fake.outage_until_lifted(503);
    assert_eq!(send(comment()).await.0, 503);
    assert_eq!(send(comment()).await.0, 503);
    outage.lift();
    assert_eq!(send(comment()).await.0, 500);
    assert_eq!(send(comment()).await.0, 201);

    let mut statuses: Vec<u16> = fake
        .calls("POST", "/repos/acme/widgets/issues/*/comments")
        .iter()
        .map(|r| r.status)
        .collect();
    statuses.dedup();
    assert_eq!(statuses, [502, 201, 503, 500, 201]);
    assert_eq!(fake.comments("acme", "widgets", 1).len(), 2);
    assert!(
        fake.calls("GET", "/repos/acme/widgets/issues/*/comments")
            .is_empty()
    );
}
