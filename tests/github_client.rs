//! The GitHub client against the fake: retries, rate limits, token refresh, typed errors,
//! the redelivery sweep, and secrets kept out of logs.

mod support;

use std::time::{Duration, Instant};

use conveyor::github::client::Repo;
use conveyor::github::{AppCredentials, GitHubApp, GitHubError};
use conveyor::webhook::redelivery;
use fake_github::Injected;
use secrecy::ExposeSecret;
use support::{
    Captured, FakeGitHub, Harness, INSTALLATION_ID, OWNER, REPO, fake_github, labeled_issue,
};

const REPO_REF: Repo<'static> = Repo {
    owner: OWNER,
    name: REPO,
};
const COMMENTS: &str = "/repos/acme/widgets/issues/1/comments";

fn statuses(github: &FakeGitHub, path: &str) -> Vec<u16> {
    github
        .requests()
        .into_iter()
        .filter(|r| r.path == path)
        .map(|r| r.status)
        .collect()
}

#[tokio::test]
async fn server_errors_are_retried_until_one_effect() {
    let (app, github) = support::app_and_fake().await;
    github.inject(
        "POST",
        COMMENTS,
        vec![Injected::status(502), Injected::status(502)],
    );
    let comment = app
        .installation(INSTALLATION_ID, REPO)
        .create_comment(REPO_REF, 1, "hello")
        .await
        .unwrap();
    assert_eq!(statuses(&github, COMMENTS), [502, 502, 201]);
    let comments = github.comments(OWNER, REPO, 1);
    assert_eq!(comments.len(), 1);
    assert_eq!(comments[0].id as i64, comment.id);
}

#[tokio::test]
async fn a_429_waits_for_retry_after() {
    let (app, github) = support::app_and_fake().await;
    github.inject(
        "POST",
        COMMENTS,
        vec![Injected::status(429).with_header("retry-after", "1")],
    );
    let started = Instant::now();
    app.installation(INSTALLATION_ID, REPO)
        .create_comment(REPO_REF, 1, "hello")
        .await
        .unwrap();
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(statuses(&github, COMMENTS), [429, 201]);
    assert_eq!(github.comments(OWNER, REPO, 1).len(), 1);
}

#[tokio::test]
async fn an_upserted_comment_is_edited_or_posted_again_once_deleted() {
    let (app, github) = support::app_and_fake().await;
    let client = app.installation(INSTALLATION_ID, REPO);
    let first = client
        .upsert_comment(REPO_REF, 1, None, "one")
        .await
        .unwrap();
    let edited = client
        .upsert_comment(REPO_REF, 1, Some(first.id), "two")
        .await
        .unwrap();
    assert_eq!(edited.id, first.id);
    github.delete_comment(OWNER, REPO, first.id as u64);
    let again = client
        .upsert_comment(REPO_REF, 1, Some(first.id), "three")
        .await
        .unwrap();
    assert_ne!(again.id, first.id);
    let comments = github.comments(OWNER, REPO, 1);
    assert_eq!(
        comments.iter().map(|c| c.body.as_str()).collect::<Vec<_>>(),
        ["three"]
    );
}

#[tokio::test]
async fn an_exhausted_quota_waits_for_the_reset() {
    let (app, github) = support::app_and_fake().await;
    let reset = (chrono::Utc::now().timestamp() + 1).to_string();
    github.inject(
        "POST",
        COMMENTS,
        vec![
            Injected::status(403)
                .with_message("API rate limit exceeded for installation ID 1001.")
                .with_header("x-ratelimit-remaining", "0")
                .with_header("x-ratelimit-reset", &reset),
        ],
    );
    let started = Instant::now();
    app.installation(INSTALLATION_ID, REPO)
        .create_comment(REPO_REF, 1, "hello")
        .await
        .unwrap();
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(statuses(&github, COMMENTS), [403, 201]);
    assert_eq!(github.comments(OWNER, REPO, 1).len(), 1);
}

#[tokio::test]
async fn not_found_and_validation_errors_are_typed_and_not_retried() {
    let (app, github) = support::app_and_fake().await;
    let client = app.installation(INSTALLATION_ID, REPO);
    let missing = Repo {
        owner: OWNER,
        name: "missing",
    };
    let err = client.create_comment(missing, 1, "x").await.unwrap_err();
    assert!(matches!(err, GitHubError::NotFound { .. }), "{err:?}");
    assert!(!err.is_retryable());
    let err = client
        .create_pull_request(REPO_REF, "t", "no-such-branch", "main", "b")
        .await
        .unwrap_err();
    assert!(matches!(err, GitHubError::Unprocessable { .. }), "{err:?}");
    let calls = github
        .requests()
        .into_iter()
        .filter(|r| r.path.starts_with("/repos/"))
        .count();
    assert_eq!(calls, 2, "one request each");
}

#[tokio::test]
async fn each_repository_gets_its_own_token_with_only_the_permissions_conveyor_needs() {
    let (app, github) = support::app_and_fake().await;
    github.add_repo(INSTALLATION_ID, OWNER, "gadgets", &[("README.md", "y\n")]);
    let gadgets = Repo {
        owner: OWNER,
        name: "gadgets",
    };
    app.installation(INSTALLATION_ID, REPO)
        .create_comment(REPO_REF, 1, "widgets")
        .await
        .unwrap();
    let client = app.installation(INSTALLATION_ID, "gadgets");
    client.create_comment(gadgets, 1, "gadgets").await.unwrap();
    // Same repository (spelt otherwise): the cached token.
    app.installation(INSTALLATION_ID, "Gadgets")
        .create_comment(gadgets, 2, "again")
        .await
        .unwrap();

    let minted: Vec<serde_json::Value> = github
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with("/access_tokens"))
        .map(|r| r.body.expect("a JSON body"))
        .collect();
    let permissions = serde_json::json!({
        "contents": "write", "pull_requests": "write", "issues": "write", "checks": "write",
    });
    assert_eq!(
        minted,
        [
            serde_json::json!({"repositories": ["widgets"], "permissions": permissions}),
            serde_json::json!({"repositories": ["gadgets"], "permissions": permissions}),
        ]
    );
    assert_eq!(github.issued_tokens().len(), 2, "one token per repository");

    // A token for one repository is refused by the other.
    let err = client
        .create_comment(REPO_REF, 1, "elsewhere")
        .await
        .unwrap_err();
    assert!(matches!(err, GitHubError::NotFound { .. }), "{err:?}");
    let token = client.token().await.unwrap();
    assert_eq!(github.issued_tokens()[1], token.expose_secret());

    // A repository outside the installation gets no token at all.
    let err = app
        .installation(INSTALLATION_ID, "missing")
        .token()
        .await
        .unwrap_err();
    assert!(matches!(err, GitHubError::Unprocessable { .. }), "{err:?}");
    assert_eq!(github.issued_tokens().len(), 2);
}

#[tokio::test]
async fn tokens_are_shared_refreshed_before_expiry_and_after_a_401() {
    let (app, github) = support::app_and_fake().await;
    let client = app.installation(INSTALLATION_ID, REPO);
    let calls =
        (0..10).map(|i| client.create_comment(REPO_REF, 1, if i % 2 == 0 { "a" } else { "b" }));
    for result in futures_util::future::join_all(calls).await {
        result.unwrap();
    }
    assert_eq!(
        github.issued_tokens().len(),
        1,
        "concurrent callers share one token request"
    );

    // A token within five minutes of expiry is replaced before use.
    github.set_token_ttl(Duration::from_secs(5 * 60 + 1));
    github.revoke_tokens();
    client
        .create_comment(REPO_REF, 1, "after revocation")
        .await
        .unwrap();
    assert_eq!(
        github.issued_tokens().len(),
        2,
        "a refused token is replaced once"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    client
        .create_comment(REPO_REF, 1, "near expiry")
        .await
        .unwrap();
    assert_eq!(
        github.issued_tokens().len(),
        3,
        "a token about to expire is replaced"
    );
    assert_eq!(github.comments(OWNER, REPO, 1).len(), 12);
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn the_sweep_redelivers_failed_deliveries_that_are_not_stored(pool: sqlx::PgPool) {
    let harness = Harness::start(pool).await;
    let url = harness.listen().await;
    harness
        .github
        .set_webhook_target(&format!("{url}/webhooks/github"), support::WEBHOOK_SECRET);
    let payload =
        |n| serde_json::from_slice::<serde_json::Value>(&labeled_issue(n, "Lost", "bug")).unwrap();
    let lost =
        harness
            .github
            .add_hook_delivery("lost-guid", "issues", Some("labeled"), 502, payload(1));
    harness
        .github
        .add_hook_delivery("stored-guid", "issues", Some("labeled"), 504, payload(2));
    harness
        .github
        .add_hook_delivery("fine-guid", "issues", Some("labeled"), 202, payload(3));
    harness
        .post_signed(
            "issues",
            "stored-guid",
            &serde_json::to_vec(&payload(2)).unwrap(),
        )
        .await;

    let app = {
        let config = support::config(&harness.github, harness.data_dir.path(), None);
        GitHubApp::new(
            &harness.github.url,
            AppCredentials::from_config(&config.github)
                .unwrap()
                .unwrap(),
        )
        .unwrap()
    };
    let report = redelivery::sweep(&harness.pool, &app).await.unwrap();
    assert_eq!(report.redelivered, ["lost-guid"]);
    assert_eq!(report.examined, 3);
    assert_eq!(harness.github.redelivery_requests(), [lost]);
    assert_eq!(
        harness.outcome("lost-guid").await,
        "ignored: label is not the trigger"
    );

    let again = redelivery::sweep(&harness.pool, &app).await.unwrap();
    assert!(again.redelivered.is_empty(), "now stored: {again:?}");
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn logs_of_a_full_run_hold_no_token_key_or_secret(pool: sqlx::PgPool) {
    let (captured, _guard) = Captured::logs();

    let harness = Harness::start(pool).await;
    harness.add_repo_with_pipeline();
    harness.github.inject(
        "POST",
        COMMENTS.replace("/1/", "/5/").as_str(),
        vec![Injected::status(502)],
    );
    harness
        .post_signed("issues", "d-logs", &labeled_issue(5, "Log me", "conveyor"))
        .await;
    harness.outcome("d-logs").await;
    let task_id = harness.task_ids().await[0];
    harness.final_state(task_id).await;
    harness.final_comment(5).await;

    let logs = captured.text();
    assert!(
        logs.contains("run started") && logs.contains("branch pushed"),
        "the run was logged"
    );
    let tokens = harness.github.issued_tokens();
    assert!(!tokens.is_empty());
    let mut secrets: Vec<String> = tokens;
    secrets.extend(
        harness
            .github
            .requests()
            .into_iter()
            .filter_map(|r| r.authorization)
            .map(|a| a.split_whitespace().last().unwrap().to_owned()),
    );
    secrets.push(support::WEBHOOK_SECRET.to_owned());
    let key_line = fake_github::private_key_pem()
        .lines()
        .nth(3)
        .unwrap()
        .to_owned();
    secrets.push(key_line);
    for secret in secrets {
        assert!(
            !logs.contains(&secret),
            "a secret reached the logs: {}…",
            &secret[..8.min(secret.len())]
        );
    }
}
