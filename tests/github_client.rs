//! The GitHub client against the fake: retries, rate limits, token refresh, typed errors,
//! the calls of the comment and approval loop, the redelivery sweep, and secrets kept out
//! of logs.

mod support;

use std::time::{Duration, Instant};

use conveyor::github::client::{
    CheckRunAction, CheckRunOutput, CheckRunUpdate, CommentRef, NewCheckRun, Reaction, Repo,
};
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
    assert_eq!(harness.outcome("lost-guid").await, "request_queued");

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
    harness.request_outcome("d-logs").await;
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

fn check_run_output(title: &str) -> CheckRunOutput {
    CheckRunOutput {
        title: title.to_owned(),
        summary: "summary".to_owned(),
        text: None,
    }
}

fn approval_actions() -> Vec<CheckRunAction> {
    [("Approve", "approve"), ("Reject", "reject")]
        .into_iter()
        .map(|(label, identifier)| CheckRunAction {
            label: label.to_owned(),
            description: format!("{label} the change"),
            identifier: identifier.to_owned(),
        })
        .collect()
}

fn new_check_run(head_sha: &str, external_id: &str) -> NewCheckRun {
    NewCheckRun {
        name: "conveyor".to_owned(),
        head_sha: head_sha.to_owned(),
        status: "queued",
        conclusion: None,
        details_url: None,
        external_id: Some(external_id.to_owned()),
        output: check_run_output("Queued"),
        actions: Vec::new(),
    }
}

#[tokio::test]
async fn reactions_go_on_issue_and_review_comments_once() {
    let (app, github) = support::app_and_fake().await;
    let client = app.installation(INSTALLATION_ID, REPO);
    let comment = github.add_user_comment(OWNER, REPO, 1, "alice", "/conveyor run");
    let review = github.add_review_comment(OWNER, REPO, 100, "bob", "/conveyor approve");

    github.inject(
        "POST",
        "/repos/acme/widgets/issues/comments/*/reactions",
        vec![Injected::status(502)],
    );
    for _ in 0..2 {
        client
            .add_reaction(
                REPO_REF,
                CommentRef::Issue(comment as i64),
                Reaction::PlusOne,
            )
            .await
            .unwrap();
    }
    client
        .add_reaction(
            REPO_REF,
            CommentRef::ReviewComment(review as i64),
            Reaction::Eyes,
        )
        .await
        .unwrap();
    assert_eq!(github.reactions(OWNER, REPO, comment), ["+1"]);
    assert_eq!(github.reactions(OWNER, REPO, review), ["eyes"]);
    let path = format!("/repos/acme/widgets/issues/comments/{comment}/reactions");
    assert_eq!(
        statuses(&github, &path),
        [502, 201, 200],
        "a repeat is no error"
    );

    let err = client
        .add_reaction(
            REPO_REF,
            CommentRef::ReviewComment(comment as i64),
            Reaction::MinusOne,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, GitHubError::NotFound { .. }), "{err:?}");
}

#[tokio::test]
async fn permissions_are_read_and_logins_without_an_account_have_none() {
    let (app, github) = support::app_and_fake().await;
    let client = app.installation(INSTALLATION_ID, REPO);
    github.set_permission(OWNER, REPO, "wes", "write");
    github.set_permission(OWNER, REPO, "max", "maintain");
    github.set_permission(OWNER, REPO, "rob", "read");
    github.add_user_comment(OWNER, REPO, 1, "nora", "hello");
    for (login, permission, role) in [
        ("wes", "write", Some("write")),
        ("max", "write", Some("maintain")),
        ("rob", "read", Some("read")),
        ("nora", "none", Some("none")),
        ("ghost-of-a-user", "none", None),
        ("renovate[bot]", "none", None),
    ] {
        let answer = client
            .collaborator_permission(REPO_REF, login)
            .await
            .unwrap();
        assert_eq!(
            (answer.permission.as_str(), answer.role_name.as_deref()),
            (permission, role),
            "{login}"
        );
    }
    let asked: Vec<String> = github
        .calls("GET", "/repos/acme/widgets/collaborators/*/permission")
        .into_iter()
        .map(|r| r.path)
        .collect();
    assert_eq!(
        asked.last().map(String::as_str),
        Some("/repos/acme/widgets/collaborators/renovate%5Bbot%5D/permission")
    );
}

#[tokio::test]
async fn a_check_run_is_updated_and_found_again_by_its_external_id() {
    let (app, github) = support::app_and_fake().await;
    let client = app.installation(INSTALLATION_ID, REPO);
    let sha = github.branch_sha(OWNER, REPO, "main").unwrap();

    let mut waiting = new_check_run(&sha, "task-7");
    waiting.status = "completed";
    waiting.conclusion = Some("action_required");
    waiting.actions = approval_actions();
    let created = client.create_check_run(REPO_REF, &waiting).await.unwrap();
    let found = client
        .find_check_run(REPO_REF, &sha, "conveyor", "task-7")
        .await
        .unwrap();
    assert_eq!(found.map(|run| run.id), Some(created.id));
    for (head_sha, name, external_id) in [
        (sha.as_str(), "conveyor", "task-8"),
        (sha.as_str(), "lint", "task-7"),
        ("main", "conveyor", "task-8"),
    ] {
        let found = client
            .find_check_run(REPO_REF, head_sha, name, external_id)
            .await
            .unwrap();
        assert!(found.is_none(), "{head_sha} {name} {external_id}");
    }

    let update = CheckRunUpdate {
        status: "completed",
        conclusion: Some("success"),
        details_url: Some("https://conveyor.example/runs/7".to_owned()),
        output: check_run_output("Approved by wes"),
        actions: Vec::new(),
    };
    let updated = client
        .update_check_run(REPO_REF, created.id, &update)
        .await
        .unwrap();
    assert_eq!(updated.id, created.id);
    let history = github.check_run_history(OWNER, REPO, created.id as u64);
    let states: Vec<(Option<&str>, usize)> = history
        .iter()
        .map(|r| (r.conclusion.as_deref(), r.actions.len()))
        .collect();
    assert_eq!(states, [(Some("action_required"), 2), (Some("success"), 0)]);
    let sent = github
        .calls("PATCH", "/repos/acme/widgets/check-runs/*")
        .pop()
        .and_then(|r| r.body)
        .unwrap();
    assert_eq!(
        sent["actions"],
        serde_json::json!([]),
        "an empty list clears the buttons"
    );

    let mut too_many = update.clone();
    too_many.actions = [approval_actions(), approval_actions()].concat();
    let err = client
        .update_check_run(REPO_REF, created.id, &too_many)
        .await
        .unwrap_err();
    assert!(matches!(err, GitHubError::Unprocessable { .. }), "{err:?}");
    let err = client
        .update_check_run(REPO_REF, created.id + 1000, &update)
        .await
        .unwrap_err();
    assert!(matches!(err, GitHubError::NotFound { .. }), "{err:?}");
    assert_eq!(
        github
            .check_run_history(OWNER, REPO, created.id as u64)
            .len(),
        2
    );
}

#[tokio::test]
async fn finding_a_check_run_reads_every_page_and_takes_the_newest() {
    let (app, github) = support::app_and_fake().await;
    let client = app.installation(INSTALLATION_ID, REPO);
    let sha = github.branch_sha(OWNER, REPO, "main").unwrap();
    let first = client
        .create_check_run(REPO_REF, &new_check_run(&sha, "retried"))
        .await
        .unwrap();
    for n in 0..100 {
        client
            .create_check_run(REPO_REF, &new_check_run(&sha, &format!("other-{n}")))
            .await
            .unwrap();
    }
    let found = client
        .find_check_run(REPO_REF, &sha, "conveyor", "retried")
        .await
        .unwrap();
    assert_eq!(
        found.map(|run| run.id),
        Some(first.id),
        "on the second page"
    );
    let lists = github.calls("GET", "/repos/acme/widgets/commits/*/check-runs");
    assert_eq!(lists.len(), 2);
    assert!(lists[0].path.contains("filter=all"), "{}", lists[0].path);

    let second = client
        .create_check_run(REPO_REF, &new_check_run(&sha, "retried"))
        .await
        .unwrap();
    let found = client
        .find_check_run(REPO_REF, &sha, "conveyor", "retried")
        .await
        .unwrap();
    assert_eq!(found.map(|run| run.id), Some(second.id));
}

#[tokio::test]
async fn pull_requests_are_read_with_their_head_and_base() {
    let (app, github) = support::app_and_fake().await;
    let client = app.installation(INSTALLATION_ID, REPO);
    let head = github.push_files(OWNER, REPO, "feature", &[("f.txt", "f\n")], &[]);
    let same = github.open_pull_request_from(OWNER, REPO, "feature", "main", "A feature");
    let fork_sha = "cd".repeat(20);
    let fork =
        github.open_fork_pull_request(OWNER, REPO, "mallory", "patch-1", &fork_sha, "main", "Fork");

    let pr = client.pull_request(REPO_REF, same as i64).await.unwrap();
    assert_eq!(
        (pr.number, pr.state.as_str(), pr.merged),
        (same as i64, "open", false)
    );
    assert_eq!(
        (pr.head.ref_name.as_str(), pr.head.sha.as_str()),
        ("feature", head.as_str())
    );
    assert_eq!(pr.head.repo.unwrap().full_name, "acme/widgets");
    assert_eq!(pr.base.ref_name, "main");
    assert!(pr.html_url.ends_with(&format!("/pull/{same}")));

    let pr = client.pull_request(REPO_REF, fork as i64).await.unwrap();
    assert_eq!(pr.head.repo.unwrap().full_name, "mallory/widgets");
    assert_eq!(pr.head.sha, fork_sha);

    github.close_pull_request(OWNER, REPO, same, true);
    let pr = client.pull_request(REPO_REF, same as i64).await.unwrap();
    assert_eq!((pr.state.as_str(), pr.merged), ("closed", true));

    // A deleted fork leaves the head without a repository.
    let mut gone = Injected::status(200);
    gone.body = serde_json::json!({
        "number": fork, "html_url": "https://github.com/acme/widgets/pull/101", "state": "open",
        "head": {"ref": "patch-1", "sha": fork_sha, "repo": null},
        "base": {"ref": "main", "sha": head, "repo": {"full_name": "acme/widgets"}},
    });
    github.inject(
        "GET",
        &format!("/repos/acme/widgets/pulls/{fork}"),
        vec![gone],
    );
    let pr = client.pull_request(REPO_REF, fork as i64).await.unwrap();
    assert!(pr.head.repo.is_none());
    assert!(!pr.merged);

    let err = client.pull_request(REPO_REF, 4242).await.unwrap_err();
    assert!(matches!(err, GitHubError::NotFound { .. }), "{err:?}");
}

#[tokio::test]
async fn files_are_read_raw_from_a_ref_and_missing_ones_are_none() {
    let (app, github) = support::app_and_fake().await;
    let client = app.installation(INSTALLATION_ID, REPO);
    let big = "z".repeat(3 * 1024 * 1024 / 2);
    github.push_files(
        OWNER,
        REPO,
        "conveyor/setup",
        &[
            (".github/conveyor.yml", "pipelines: {}\n"),
            ("docs/a b#1.md", "odd name\n"),
            ("big.bin", &big),
        ],
        &[],
    );
    let read =
        |path: &'static str, git_ref: &'static str| client.file_contents(REPO_REF, path, git_ref);

    assert_eq!(
        read(".github/conveyor.yml", "conveyor/setup")
            .await
            .unwrap()
            .as_deref(),
        Some(&b"pipelines: {}\n"[..])
    );
    assert_eq!(
        read("docs/a b#1.md", "conveyor/setup")
            .await
            .unwrap()
            .as_deref(),
        Some(&b"odd name\n"[..])
    );
    assert_eq!(
        read("big.bin", "conveyor/setup")
            .await
            .unwrap()
            .map(|b| b.len()),
        Some(big.len())
    );
    assert_eq!(
        read("README.md", "main").await.unwrap().as_deref(),
        Some(&b"x\n"[..])
    );
    let sha = github.branch_sha(OWNER, REPO, "main").unwrap();
    assert!(
        client
            .file_contents(REPO_REF, "README.md", &sha)
            .await
            .unwrap()
            .is_some()
    );
    for (path, git_ref) in [
        (".github/conveyor.yml", "main"),
        ("README.md", "no-such-branch"),
    ] {
        assert!(
            read(path, git_ref).await.unwrap().is_none(),
            "{path}@{git_ref}"
        );
    }
    let err = read("docs", "conveyor/setup").await.unwrap_err();
    assert!(
        matches!(&err, GitHubError::NotAFile { kind, .. } if kind == "directory"),
        "{err:?}"
    );
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn every_comment_of_an_issue_is_read_across_pages() {
    let (app, github) = support::app_and_fake().await;
    let client = app.installation(INSTALLATION_ID, REPO);
    for n in 0..130 {
        let login = if n % 2 == 0 { "alice" } else { "renovate[bot]" };
        github.add_user_comment(OWNER, REPO, 9, login, &format!("comment {n}"));
    }
    client.create_comment(REPO_REF, 9, "status").await.unwrap();
    let comments = client.issue_comments(REPO_REF, 9).await.unwrap();
    assert_eq!(comments.len(), 131);
    assert_eq!(
        (comments[1].body.as_str(), comments[1].user_login.as_str()),
        ("comment 1", "renovate[bot]")
    );
    assert_eq!(comments[130].user_login, "conveyor[bot]");
    assert!(
        comments.windows(2).all(|w| w[0].id < w[1].id),
        "oldest first"
    );
    assert_eq!(
        github
            .calls("GET", "/repos/acme/widgets/issues/9/comments")
            .len(),
        2,
        "pages of 100"
    );
    assert!(
        client
            .issue_comments(REPO_REF, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn failures_that_outlast_the_retries_say_whether_and_when_to_try_again() {
    let (app, github) = support::app_and_fake().await;
    let client = app.installation(INSTALLATION_ID, REPO);
    let sha = github.branch_sha(OWNER, REPO, "main").unwrap();

    // A rate limit longer than the client waits comes back at once, with its wait.
    github.inject(
        "GET",
        "/repos/acme/widgets/commits/*/check-runs",
        vec![Injected::status(429).with_header("retry-after", "3600")],
    );
    let started = Instant::now();
    let err = client
        .find_check_run(REPO_REF, &sha, "conveyor", "x")
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(err.is_retryable());
    assert_eq!(err.retry_after(), Some(Duration::from_secs(3600)));

    // An outage longer than the retries: retryable, with no wait named.
    let outage = github.outage_until_lifted(502);
    let err = client.pull_request(REPO_REF, 1).await.unwrap_err();
    assert!(
        matches!(err, GitHubError::Status { status: 502, .. }),
        "{err:?}"
    );
    assert!(err.is_retryable());
    assert_eq!(err.retry_after(), None);
    assert_eq!(
        statuses(&github, "/repos/acme/widgets/pulls/1"),
        [502, 502, 502, 502],
        "every attempt"
    );
    outage.lift();
    let err = client.pull_request(REPO_REF, 1).await.unwrap_err();
    assert!(matches!(err, GitHubError::NotFound { .. }), "{err:?}");
}

/// The payload builders the loop's tests sign and post: each parses as the GitHub event it
/// claims to be and says what it was asked to.
#[test]
fn payloads_of_the_loop_are_githubs_events_about_the_test_repository() {
    use octocrab::models::webhook_events::WebhookEvent;
    use support::payloads;

    let sha = "5bd5f196a46b8222fb7484f05faba41a73cf34bd";
    /// (event, body, action, sender, (JSON pointer, value) pairs the payload holds)
    type Case = (&'static str, Vec<u8>, &'static str, &'static str, Fields);
    type Fields = Vec<(&'static str, serde_json::Value)>;
    let cases: Vec<Case> = vec![
        (
            "issue_comment",
            payloads::issue_comment(7, false, 901, "/conveyor run", "alice", "User"),
            "created",
            "alice",
            vec![
                ("/issue/number", 7.into()),
                ("/comment/id", 901.into()),
                ("/comment/body", "/conveyor run".into()),
                ("/comment/user/login", "alice".into()),
                ("/comment/user/type", "User".into()),
            ],
        ),
        (
            "issue_comment",
            payloads::issue_comment(8, true, 902, "/conveyor retry", "dependabot[bot]", "Bot"),
            "created",
            "dependabot[bot]",
            vec![
                (
                    "/issue/pull_request/url",
                    "https://api.github.com/repos/acme/widgets/pulls/8".into(),
                ),
                ("/comment/user/type", "Bot".into()),
                ("/sender/type", "Bot".into()),
            ],
        ),
        (
            "issue_comment",
            payloads::issue_comment_edited(7, false, 901, "/conveyor cancel", "alice", "User"),
            "edited",
            "alice",
            vec![("/comment/body", "/conveyor cancel".into())],
        ),
        (
            "pull_request_review_comment",
            payloads::review_comment(12, 903, "/conveyor approve", "wes", "User"),
            "created",
            "wes",
            vec![
                ("/pull_request/number", 12.into()),
                ("/comment/id", 903.into()),
                (
                    "/comment/pull_request_url",
                    "https://api.github.com/repos/acme/widgets/pulls/12".into(),
                ),
            ],
        ),
        (
            "check_run",
            payloads::check_run_action(55, sha, "task-3", "approve", "wes"),
            "requested_action",
            "wes",
            vec![
                ("/check_run/id", 55.into()),
                ("/check_run/name", "conveyor".into()),
                ("/check_run/head_sha", sha.into()),
                ("/check_run/external_id", "task-3".into()),
                ("/check_run/app/id", fake_github::APP_ID.into()),
                ("/requested_action/identifier", "approve".into()),
            ],
        ),
        (
            "check_run",
            payloads::check_run_rerequested(56, sha, "task-4", "rob"),
            "rerequested",
            "rob",
            vec![
                ("/check_run/id", 56.into()),
                ("/check_run/external_id", "task-4".into()),
            ],
        ),
        (
            "check_suite",
            payloads::check_suite_rerequested(sha, "conveyor/issue-7", "rob"),
            "rerequested",
            "rob",
            vec![
                ("/check_suite/head_sha", sha.into()),
                ("/check_suite/head_branch", "conveyor/issue-7".into()),
                ("/check_suite/app/id", fake_github::APP_ID.into()),
            ],
        ),
        (
            "issues",
            payloads::issue_unlabeled(7, "Fix it", "conveyor", "alice"),
            "unlabeled",
            "alice",
            vec![
                ("/issue/number", 7.into()),
                ("/label/name", "conveyor".into()),
            ],
        ),
        (
            "issues",
            payloads::issue_closed(7, "Fix it", "alice"),
            "closed",
            "alice",
            vec![
                ("/issue/state", "closed".into()),
                ("/issue/title", "Fix it".into()),
            ],
        ),
        (
            "issues",
            payloads::labeled_issue_by(9, "Add a thing", "conveyor", "renovate[bot]", "Bot"),
            "labeled",
            "renovate[bot]",
            vec![("/issue/number", 9.into()), ("/sender/type", "Bot".into())],
        ),
        (
            "pull_request",
            payloads::pull_request_closed(101, true, "conveyor/issue-7", "wes"),
            "closed",
            "wes",
            vec![
                ("/number", 101.into()),
                ("/pull_request/merged", true.into()),
                ("/pull_request/head/ref", "conveyor/issue-7".into()),
                ("/pull_request/head/repo/full_name", "acme/widgets".into()),
                ("/pull_request/merged_by/login", "wes".into()),
            ],
        ),
        (
            "pull_request",
            payloads::pull_request_closed(102, false, "feature", "alice"),
            "closed",
            "alice",
            vec![
                ("/pull_request/merged", false.into()),
                ("/pull_request/merged_at", serde_json::Value::Null),
            ],
        ),
    ];
    for (event, body, action, sender, fields) in cases {
        let what = format!("{event}.{action}");
        WebhookEvent::try_from_header_and_body(event, &body)
            .unwrap_or_else(|err| panic!("{what}: {err}"));
        let payload: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(payload["action"], action, "{what}");
        assert_eq!(payload["installation"]["id"], INSTALLATION_ID, "{what}");
        assert_eq!(payload["repository"]["full_name"], "acme/widgets", "{what}");
        assert_eq!(payload["repository"]["default_branch"], "main", "{what}");
        assert_eq!(payload["sender"]["login"], sender, "{what}");
        assert_eq!(
            payload["sender"]["id"],
            fake_github::account_id(sender),
            "{what}: the fake knows the sender by the same id"
        );
        for (pointer, expected) in fields {
            assert_eq!(
                payload.pointer(pointer),
                Some(&expected),
                "{what} {pointer}"
            );
        }
    }
}
