//! Self-tests of the fake GitHub used by the integration tests.

#[path = "support/fake_github.rs"]
mod fake_github;

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use base64::Engine as _;
use fake_github::{APP_ID, FakeGitHub};
use serde_json::{Value, json};

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
    assert_eq!(body["repository_selection"], "selected");
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
