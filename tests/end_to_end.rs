//! A labelled issue travels the whole way: signed webhook, task, worker, clone, steps,
//! branch, pull request, check run, status comment — against the fake GitHub.

mod support;

use axum::http::StatusCode;
use conveyor::engine::{RunState, TaskState};
use conveyor::engine::{events, runs};
use sqlx::PgPool;
use support::{Harness, INSTALLATION_ID, OWNER, REPO, labeled_issue};

/// REST calls (git traffic aside) as `METHOD path`, in order.
fn rest_calls(harness: &Harness) -> Vec<String> {
    harness
        .github
        .requests()
        .into_iter()
        .filter(|r| !r.path.contains(".git/"))
        .map(|r| {
            format!(
                "{} {} {}",
                r.method,
                r.path.split('?').next().unwrap(),
                r.status
            )
        })
        .collect()
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn labeled_issue_becomes_a_pull_request(pool: sqlx::PgPool) {
    let harness = Harness::start(pool).await;
    harness.add_repo_with_pipeline();

    let (status, _) = harness
        .post_signed(
            "issues",
            "d-1",
            &labeled_issue(7, "Add release notes", "conveyor"),
        )
        .await;
    assert_eq!(status, 202);
    assert_eq!(harness.request_outcome("d-1").await, "task_created");
    let [task_id] = harness.task_ids().await[..] else {
        panic!("expected one task")
    };
    assert_eq!(harness.final_state(task_id).await, TaskState::Succeeded);
    harness.settled().await;

    let branch = "conveyor/7-add-release-notes";
    let head = harness
        .github
        .branch_sha(OWNER, REPO, branch)
        .expect("branch pushed");
    assert_eq!(
        harness
            .github
            .file_at(OWNER, REPO, branch, "NOTES.md")
            .as_deref(),
        Some("Add release notes\n")
    );

    let pulls = harness.github.pull_requests(OWNER, REPO);
    assert_eq!(pulls.len(), 1);
    assert_eq!(
        (pulls[0].head.as_str(), pulls[0].base.as_str()),
        (branch, "main")
    );
    assert_eq!(pulls[0].title, "Add release notes");
    assert!(pulls[0].body.as_deref().unwrap().contains("Closes #7"));

    let checks = harness.github.check_runs(OWNER, REPO);
    assert_eq!(checks.len(), 1);
    assert_eq!(checks[0].name, "conveyor");
    assert_eq!(checks[0].head_sha, head);
    assert_eq!(
        (checks[0].status.as_str(), checks[0].conclusion.as_deref()),
        ("completed", Some("success"))
    );
    let summary = checks[0].output_summary.as_deref().unwrap();
    assert!(
        summary.contains("`implement`") && summary.contains("`verify`"),
        "{summary}"
    );

    let comment = &harness.final_comment(7).await;
    assert_eq!(
        harness.github.comments(OWNER, REPO, 7).len(),
        1,
        "one status comment, edited in place"
    );
    assert_eq!(comment.edits.len(), 1);
    assert!(
        comment.edits[0].contains("is running pipeline `default`"),
        "{}",
        comment.edits[0]
    );
    let pull_url = format!("https://github.com/{OWNER}/{REPO}/pull/{}", pulls[0].number);
    assert!(comment.body.contains(&pull_url), "{}", comment.body);

    assert!(
        harness.workspaces_left().is_empty(),
        "workspace not removed: {:?}",
        harness.workspaces_left()
    );
    assert_eq!(
        rest_calls(&harness),
        [
            format!("POST /app/installations/{INSTALLATION_ID}/access_tokens 201"),
            format!("GET /repos/{OWNER}/{REPO}/contents/.github/conveyor.yml 200"),
            format!("POST /repos/{OWNER}/{REPO}/issues/7/comments 201"),
            format!("GET /repos/{OWNER}/{REPO}/pulls 200"),
            format!("POST /repos/{OWNER}/{REPO}/pulls 201"),
            format!("POST /repos/{OWNER}/{REPO}/check-runs 201"),
            format!(
                "PATCH /repos/{OWNER}/{REPO}/issues/comments/{} 200",
                comment.id
            ),
        ],
        "no unexpected GitHub call"
    );

    let runs = runs::for_task(&harness.pool, task_id).await.unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].branch.as_deref(), Some(branch));
    assert_eq!(runs[0].head_sha.as_deref(), Some(head.as_str()));
    let steps = runs::steps(&harness.pool, runs[0].id).await.unwrap();
    assert_eq!(
        steps
            .iter()
            .map(|s| (s.name.as_str(), s.exit_code))
            .collect::<Vec<_>>(),
        [("implement", Some(0)), ("verify", Some(0))]
    );
    assert_eq!(steps[0].output, "implemented issue 7\n");
    let trail: Vec<String> = events::for_task(&harness.pool, task_id)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(
        trail,
        [
            "created",
            "claimed",
            "run",
            "run",
            "step_started",
            "step_completed",
            "step_started",
            "step_completed",
            "run",
            "state"
        ]
    );
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn the_token_never_reaches_git_config_or_steps(pool: sqlx::PgPool) {
    let harness = Harness::start(pool).await;
    let pipeline = "pipelines:\n  default:\n    steps:\n      - name: snoop\n        run: cat .git/config; env; git config --list\n";
    harness.add_repo(&[(".github/conveyor.yml", pipeline)]);
    let (task_id, state) = harness.label_and_finish("d-snoop", 4, "Snoop").await;
    assert_eq!(state, TaskState::Succeeded);

    let run = &runs::for_task(&harness.pool, task_id).await.unwrap()[0];
    let output = &runs::steps(&harness.pool, run.id).await.unwrap()[0].output;
    assert!(
        output.contains("[remote \"origin\"]"),
        "the step saw the clone: {output}"
    );
    let tokens = harness.github.issued_tokens();
    assert!(!tokens.is_empty());
    for token in tokens {
        assert!(!output.contains(&token), "token visible to the step");
    }
    assert!(
        !output.to_lowercase().contains("extraheader") && !output.contains("GIT_CONFIG"),
        "{output}"
    );
    assert!(!output.contains("BEGIN RSA PRIVATE KEY") && !output.contains(support::WEBHOOK_SECRET));
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn a_failing_step_pushes_nothing_and_names_the_step(pool: sqlx::PgPool) {
    let harness = Harness::start(pool).await;
    let pipeline = "pipelines:\n  default:\n    steps:\n      - name: implement\n        run: echo changed > NOTES.md\n      - name: verify\n        run: \"echo 'assertion failed: widgets == 3' >&2; exit 101\"\n";
    harness.add_repo(&[(".github/conveyor.yml", pipeline)]);

    let (task_id, state) = harness.label_and_finish("d-2", 8, "Break it").await;
    assert_eq!(state, TaskState::Failed);

    assert_eq!(
        harness
            .github
            .branch_sha(OWNER, REPO, "conveyor/8-break-it"),
        None
    );
    assert!(harness.github.pull_requests(OWNER, REPO).is_empty());
    assert!(harness.github.check_runs(OWNER, REPO).is_empty());
    let body = &harness.final_comment(8).await.body;
    assert_eq!(harness.github.comments(OWNER, REPO, 8).len(), 1);
    assert!(
        body.contains("step `verify` exited with code 101"),
        "{body}"
    );
    assert!(body.contains("assertion failed: widgets == 3"), "{body}");
    assert!(body.contains("Nothing was pushed"), "{body}");
    let run = &runs::for_task(&harness.pool, task_id).await.unwrap()[0];
    assert_eq!(
        run.failure.as_deref(),
        Some("step `verify` exited with 101")
    );
    assert!(harness.workspaces_left().is_empty());
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn a_missing_pipeline_file_fails_with_the_remedy(pool: sqlx::PgPool) {
    let harness = Harness::start(pool).await;
    harness.add_repo(&[("README.md", "# widgets\n")]);

    let (_, state) = harness.label_and_finish("d-3", 9, "Anything").await;
    assert_eq!(state, TaskState::Failed);

    let body = &harness.final_comment(9).await.body;
    assert!(
        body.contains("`.github/conveyor.yml` was not found"),
        "{body}"
    );
    assert!(
        body.contains("Add it to the default branch") && body.contains("pipelines:\n  default:"),
        "{body}"
    );
    assert!(harness.github.pull_requests(OWNER, REPO).is_empty());
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn an_invalid_pipeline_file_fails_saying_what_is_wrong(pool: sqlx::PgPool) {
    let harness = Harness::start(pool).await;
    let broken =
        "pipelines:\n  default:\n    steps:\n      - name: implement\n        script: make\n";
    harness.add_repo(&[(".github/conveyor.yml", broken)]);

    let (_, state) = harness.label_and_finish("d-4", 10, "Anything").await;
    assert_eq!(state, TaskState::Failed);
    let body = &harness.final_comment(10).await.body;
    assert!(
        body.contains("is not valid") && body.contains("unknown field `script`"),
        "{body}"
    );
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn steps_that_change_nothing_succeed_without_a_pull_request(pool: sqlx::PgPool) {
    let harness = Harness::start(pool).await;
    let pipeline =
        "pipelines:\n  default:\n    steps:\n      - name: check\n        run: test -f README.md\n";
    harness.add_repo(&[(".github/conveyor.yml", pipeline), ("README.md", "x\n")]);
    let (_, state) = harness.label_and_finish("d-5", 11, "Check only").await;
    assert_eq!(state, TaskState::Succeeded);
    assert!(harness.github.pull_requests(OWNER, REPO).is_empty());
    assert!(
        harness
            .final_comment(11)
            .await
            .body
            .contains("changed no files")
    );
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn a_label_on_a_repository_the_installation_cannot_reach_is_refused(pool: sqlx::PgPool) {
    let harness = Harness::start(pool).await;
    // No repository is added: GitHub refuses a token for it, a failure of Conveyor's side.
    harness
        .post_signed("issues", "d-6", &labeled_issue(12, "Nowhere", "conveyor"))
        .await;
    // Its settings cannot be read: the label is refused for good, not tried again and again.
    let outcome = harness.request_outcome("d-6").await;
    assert!(
        outcome.starts_with("failed:")
            && outcome.contains("not accessible to the parent installation"),
        "{outcome}"
    );
    assert!(harness.task_ids().await.is_empty());
    let attempts: i32 = sqlx::query_scalar("SELECT attempts FROM requests")
        .fetch_one(&harness.pool)
        .await
        .unwrap();
    assert_eq!(attempts, 0);
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn a_failed_step_is_retried_by_the_pipelines_policy_in_one_comment(pool: sqlx::PgPool) {
    let harness = Harness::start(pool).await;
    let pipeline = "pipelines:\n  default:\n    retry: {attempts: 2, backoff_seconds: 1}\n    steps:\n      - name: flaky\n        run: sh check.sh\n";
    harness.add_repo(&[
        (".github/conveyor.yml", pipeline),
        ("check.sh", "echo flake >&2; exit 3\n"),
    ]);
    let task_id = harness.label("d-7", 13, "Flaky").await;
    // The steps cannot keep anything between attempts; the repository is mended meanwhile.
    harness.reach(task_id, TaskState::Scheduled).await;
    harness
        .github
        .push_files(OWNER, REPO, "main", &[("check.sh", "echo fine\n")], &[]);
    let state = harness.final_state(task_id).await;
    assert_eq!(state, TaskState::Succeeded);
    let runs = runs::for_task(&harness.pool, task_id).await.unwrap();
    let states: Vec<_> = runs.iter().map(|r| r.state).collect();
    assert_eq!(
        states,
        [
            conveyor::engine::RunState::Failed,
            conveyor::engine::RunState::Completed
        ]
    );
    let comment = support::wait_until("the final comment", || async {
        harness
            .github
            .comments(OWNER, REPO, 13)
            .into_iter()
            .find(|c| c.body.contains("finished pipeline"))
    })
    .await;
    assert_eq!(
        harness.github.comments(OWNER, REPO, 13).len(),
        1,
        "one status comment for both attempts"
    );
    assert!(
        comment.edits.iter().any(|e| e.contains("will try again")),
        "{:?}",
        comment.edits
    );
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn cancelling_a_running_task_says_so_in_its_status_comment(pool: PgPool) {
    let harness = Harness::start(pool).await;
    harness.add_repo(&[(
        ".github/conveyor.yml",
        "pipelines:\n  default:\n    steps:\n      - name: slow\n        run: sleep 60\n",
    )]);
    let (status, reply) = harness
        .post_signed(
            "issues",
            "cancel-1",
            &labeled_issue(7, "Slow work", "conveyor"),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{reply}");
    let task_id = support::wait_until("the task", || async {
        harness.task_ids().await.first().copied()
    })
    .await;
    harness.reach(task_id, TaskState::Running).await;
    let running = support::wait_until("the running comment", || async {
        let comments = harness.github.comments(OWNER, REPO, 7);
        comments
            .into_iter()
            .find(|c| c.body.contains("is running pipeline"))
    })
    .await;
    // Someone deletes it: the stop is reported in a new one.
    harness.github.delete_comment(OWNER, REPO, running.id);

    let (status, reply) = harness
        .api(
            "POST",
            &format!("/api/v2/tasks/{task_id}/cancel"),
            Some(support::API_TOKEN),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{reply}");
    assert_eq!(harness.final_state(task_id).await, TaskState::Cancelled);
    let comment = harness.final_comment(7).await;
    assert!(
        comment.body.contains("the task was cancelled"),
        "{}",
        comment.body
    );
    assert_eq!(
        harness.github.comments(OWNER, REPO, 7).len(),
        1,
        "one status comment"
    );
    let runs = runs::for_task(&harness.pool, task_id).await.unwrap();
    assert_eq!(
        runs.iter().map(|run| run.state).collect::<Vec<_>>(),
        [RunState::Cancelled]
    );
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn a_session_that_cannot_make_a_workspace_is_unhealthy_and_the_waiting_issue_hears_why(
    pool: PgPool,
) {
    // The data directory is a file: no workspace can be made under it.
    let blocked = tempfile::tempdir().unwrap();
    let data_dir = blocked.path().join("data");
    std::fs::write(&data_dir, "not a directory").unwrap();
    let harness = Harness::start_configured(pool, |config| {
        config.workers = 1;
        config.data_dir = data_dir.clone();
        config.report_waiting_after_secs = 0;
    })
    .await;
    harness.add_repo_with_pipeline();

    harness
        .post_signed("issues", "h-1", &labeled_issue(7, "First", "conveyor"))
        .await;
    let first = support::wait_until("the first task", || async {
        harness.task_ids().await.first().copied()
    })
    .await;
    harness.reach(first, TaskState::Scheduled).await;
    let failed = harness.final_comment(7).await;
    assert!(
        failed.body.contains("could not create a workspace"),
        "{}",
        failed.body
    );

    harness
        .post_signed("issues", "h-2", &labeled_issue(8, "Second", "conveyor"))
        .await;
    let second = support::wait_until("the second task", || async {
        harness.task_ids().await.get(1).copied()
    })
    .await;
    let reason = "waiting: no healthy worker session";
    support::wait_until("the waiting issue to hear why", || async {
        let comments = harness.github.comments(OWNER, REPO, 8);
        comments
            .iter()
            .any(|c| c.body.contains(reason))
            .then_some(())
    })
    .await;
    let (status, task) = harness
        .api(
            "GET",
            &format!("/api/v2/tasks/{second}"),
            Some(support::API_TOKEN),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(task["waiting"], reason, "{task}");
    assert_eq!(harness.state(second).await, TaskState::Queued);

    // Mended: the session's next check passes and it runs the waiting task.
    std::fs::remove_file(&data_dir).unwrap();
    std::fs::create_dir(&data_dir).unwrap();
    assert_eq!(harness.final_state(second).await, TaskState::Succeeded);
    harness.settled().await;
    let comments = harness.github.comments(OWNER, REPO, 8);
    assert_eq!(comments.len(), 1, "the run took over the waiting comment");
    assert!(
        comments[0].body.contains("finished pipeline"),
        "{}",
        comments[0].body
    );
    assert!(
        comments[0].edits.iter().any(|body| body.contains(reason)),
        "{:?}",
        comments[0].edits
    );
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn huge_output_and_a_long_title_still_fit_githubs_limits(pool: PgPool) {
    let harness = Harness::start(pool).await;
    // 5,000 short lines, then one of 300 KB; a title starting "Fail" fails the step after it.
    let script = "#!/bin/sh
seq 1 5000
head -c 300000 /dev/zero | tr '\\0' x
echo
printf '%s\\n' \"$CONVEYOR_TASK_TITLE\" > NOTES.md
case \"$CONVEYOR_TASK_TITLE\" in Fail*) exit 1;; esac
";
    let pipeline = "pipelines:\n  default:\n    steps:\n      - name: implement\n        run: ./scripts/work.sh\n";
    harness.add_repo(&[
        (".github/conveyor.yml", pipeline),
        ("scripts/work.sh", script),
    ]);

    let title = "Ship it ".repeat(50);
    let (_, state) = harness.label_and_finish("d-long-1", 21, &title).await;
    assert_eq!(state, TaskState::Succeeded);
    let pulls = harness.github.pull_requests(OWNER, REPO);
    assert_eq!(pulls.len(), 1);
    assert_eq!(pulls[0].title.chars().count(), 256);
    assert!(pulls[0].title.starts_with("Ship it Ship it") && pulls[0].title.ends_with('…'));
    let checks = harness.github.check_runs(OWNER, REPO);
    assert_eq!(checks.len(), 1);

    let (_, state) = harness
        .label_and_finish("d-long-2", 22, "Fail loudly")
        .await;
    assert_eq!(state, TaskState::Failed);
    let body = harness.final_comment(22).await.body;
    assert!(body.chars().count() <= 65_535);
    assert!(
        body.contains("step `implement` exited with code 1"),
        "{body}"
    );
    assert!(
        body.contains("4999\n5000\nxxx"),
        "the last lines are quoted: {body}"
    );
    assert!(
        body.contains("characters cut]"),
        "the long line is cut: {body}"
    );

    let refused: Vec<_> = harness
        .github
        .requests()
        .into_iter()
        .filter(|r| r.status >= 400)
        .collect();
    assert!(refused.is_empty(), "GitHub refused: {refused:?}");
}
