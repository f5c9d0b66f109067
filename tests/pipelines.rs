//! Which pipeline a task runs, and which definition of it: chosen by a command, a label or
//! the file's `task_types`, and pinned by the run's first attempt for every attempt after it.

mod support;

use conveyor::engine::{TaskState, runs, tasks};
use serde_json::Value;
use support::{Harness, OWNER, REPO, payloads};

const REQUESTER: &str = "alice";

/// Three pipelines that each write their own name, and bugs go to `fix`.
const CHOOSING: &str = "task_types: {bug: fix, documentation: docs}
pipelines:
  default: {steps: [{name: work, run: 'echo default > NOTES.md'}]}
  fix: {steps: [{name: work, run: 'echo fix > NOTES.md'}]}
  docs: {steps: [{name: work, run: 'echo docs > NOTES.md'}]}
";

async fn choosing(harness: Harness) -> Harness {
    harness.add_repo(&[
        (".github/conveyor.yml", CHOOSING),
        ("README.md", "# widgets\n"),
    ]);
    harness
        .github
        .set_permission(OWNER, REPO, REQUESTER, "write");
    harness
}

/// `labeled` as GitHub sends it when `added` is put on issue `issue`, which then carries
/// `labels` (the added one among them).
fn labeled(issue: i64, added: &str, labels: &[&str]) -> Vec<u8> {
    let body = payloads::labeled_issue_by(issue, "Fix the widget", added, REQUESTER, "User");
    with_labels(body, labels)
}

fn with_labels(body: Vec<u8>, labels: &[&str]) -> Vec<u8> {
    let mut payload: Value = serde_json::from_slice(&body).unwrap();
    let template = payload["issue"]["labels"][0].clone();
    payload["issue"]["labels"] = labels
        .iter()
        .map(|name| {
            let mut label = template.clone();
            label["name"] = (*name).into();
            label
        })
        .collect();
    serde_json::to_vec(&payload).unwrap()
}

async fn label(harness: &Harness, delivery: &str, issue: i64, added: &str, labels: &[&str]) {
    let (status, _) = harness
        .post_signed("issues", delivery, &labeled(issue, added, labels))
        .await;
    assert_eq!(status, 202);
}

async fn comment(harness: &Harness, delivery: &str, issue: i64, text: &str, labels: &[&str]) {
    let id = harness
        .github
        .add_user_comment(OWNER, REPO, issue as u64, REQUESTER, text);
    let body = payloads::issue_comment(issue, false, id, text, REQUESTER, "User");
    let (status, _) = harness
        .post_signed("issue_comment", delivery, &with_labels(body, labels))
        .await;
    assert_eq!(status, 202);
}

async fn task_of(harness: &Harness, issue: i64) -> tasks::Task {
    let id: i64 =
        sqlx::query_scalar("SELECT id FROM tasks WHERE issue_number = $1 ORDER BY id DESC LIMIT 1")
            .bind(issue)
            .fetch_one(&harness.pool)
            .await
            .unwrap();
    tasks::get(&harness.pool, id).await.unwrap().unwrap()
}

/// Replies Conveyor posted on the issue.
fn replies(harness: &Harness, issue: u64) -> Vec<String> {
    harness
        .github
        .comments(OWNER, REPO, issue)
        .into_iter()
        .map(|comment| comment.body)
        .filter(|body| body.contains("conveyor:reply"))
        .collect()
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn labels_choose_the_pipeline_through_task_types_or_a_label_naming_it(pool: sqlx::PgPool) {
    let harness = choosing(Harness::start_idle(pool).await).await;
    let cases: &[(i64, &str, &[&str], &str)] = &[
        (1, "conveyor", &["conveyor"], "default"),
        (2, "conveyor", &["question", "conveyor"], "default"),
        (3, "conveyor", &["bug", "conveyor"], "fix"),
        (4, "conveyor", &["documentation", "bug", "conveyor"], "docs"),
        // A label naming the pipeline wins over the task type, and starts the task alone.
        (5, "conveyor", &["bug", "conveyor:docs", "conveyor"], "docs"),
        (6, "conveyor:docs", &["bug", "conveyor:docs"], "docs"),
    ];
    for (issue, added, labels, expected) in cases {
        let delivery = format!("label-{issue}");
        label(&harness, &delivery, *issue, added, labels).await;
        assert_eq!(harness.request_outcome(&delivery).await, "task_created");
        assert_eq!(
            task_of(&harness, *issue).await.pipeline,
            *expected,
            "{labels:?}"
        );
    }
    label(&harness, "label-other", 9, "bug", &["bug"]).await;
    assert_eq!(
        harness.request_outcome("label-other").await,
        "ignored: label is not the trigger"
    );
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn a_label_naming_no_pipeline_starts_nothing_and_says_which_exist(pool: sqlx::PgPool) {
    let harness = choosing(Harness::start_idle(pool).await).await;
    label(
        &harness,
        "label-nope",
        7,
        "conveyor:deploy",
        &["conveyor:deploy"],
    )
    .await;
    let outcome = harness.request_outcome("label-nope").await;
    assert!(outcome.starts_with("refused:"), "{outcome}");
    assert!(harness.task_ids().await.is_empty());
    harness.settled().await;
    let replies = replies(&harness, 7);
    assert_eq!(replies.len(), 1, "{replies:?}");
    assert!(
        replies[0].contains("The label `conveyor:deploy` started nothing")
            && replies[0]
                .contains("no pipeline named `deploy` (it defines: `default`, `docs`, `fix`)"),
        "{}",
        replies[0]
    );
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn run_names_the_pipeline_and_may_lower_the_runs_budget(pool: sqlx::PgPool) {
    let harness = choosing(Harness::start_idle(pool).await).await;
    comment(&harness, "run-nope", 7, "/conveyor run deploy", &["bug"]).await;
    let outcome = harness.request_outcome("run-nope").await;
    assert!(
        outcome.starts_with("refused:")
            && outcome.contains("(it defines: `default`, `docs`, `fix`)"),
        "{outcome}"
    );
    assert!(harness.task_ids().await.is_empty());

    comment(&harness, "run-bug", 7, "/conveyor run", &["bug"]).await;
    harness.request_outcome("run-bug").await;
    let task = task_of(&harness, 7).await;
    assert_eq!(
        (task.pipeline.as_str(), task.timeout_minutes),
        ("fix", None)
    );
    tasks::cancel(&mut harness.pool.acquire().await.unwrap(), task.id, None)
        .await
        .unwrap();

    comment(
        &harness,
        "run-docs",
        7,
        "/conveyor run docs timeout=1h30m",
        &["bug"],
    )
    .await;
    harness.request_outcome("run-docs").await;
    let task = task_of(&harness, 7).await;
    assert_eq!(
        (task.pipeline.as_str(), task.timeout_minutes),
        ("docs", Some(90))
    );
    harness.settled().await;
    let replies = replies(&harness, 7);
    assert_eq!(replies.len(), 1, "one refusal: {replies:?}");
    assert!(
        replies[0].contains("no pipeline named `deploy`"),
        "{replies:?}"
    );
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn a_chosen_pipeline_runs(pool: sqlx::PgPool) {
    let harness = choosing(Harness::start(pool).await).await;
    label(&harness, "label-bug", 7, "conveyor", &["bug", "conveyor"]).await;
    harness.request_outcome("label-bug").await;
    let task = task_of(&harness, 7).await;
    assert_eq!(harness.final_state(task.id).await, TaskState::Succeeded);
    let branch = "conveyor/7-fix-the-widget";
    assert_eq!(
        harness
            .github
            .file_at(OWNER, REPO, branch, "NOTES.md")
            .as_deref(),
        Some("fix\n")
    );
}

/// A pipeline whose one step prints which version of the file it is and fails, so that the
/// task is tried again after a few seconds.
fn failing_pipeline(version: &str) -> String {
    format!(
        "pipelines:
  default:
    retry: {{attempts: 2, backoff_seconds: 3, max_backoff_seconds: 3}}
    steps: [{{name: work, run: 'echo {version}; exit 1'}}]
"
    )
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn every_attempt_goes_by_the_definition_its_first_attempt_read(pool: sqlx::PgPool) {
    let harness = Harness::start(pool).await;
    harness.add_repo(&[
        (".github/conveyor.yml", &failing_pipeline("version-one")),
        ("README.md", "# widgets\n"),
    ]);
    harness
        .github
        .set_permission(OWNER, REPO, REQUESTER, "write");
    let task_id = harness.label("label-7", 7, "Fix the widget").await;
    harness.reach(task_id, TaskState::Scheduled).await;
    let changed = harness.github.push_files(
        OWNER,
        REPO,
        "main",
        &[(".github/conveyor.yml", &failing_pipeline("version-two"))],
        &[],
    );
    assert_eq!(harness.final_state(task_id).await, TaskState::Failed);

    let attempts = runs::for_task(&harness.pool, task_id).await.unwrap();
    assert_eq!(attempts.len(), 2);
    for run in &attempts {
        let steps = runs::steps(&harness.pool, run.id).await.unwrap();
        assert_eq!(steps[0].output, "version-one\n", "attempt {}", run.attempt);
        assert_eq!(run.definition_hash, attempts[0].definition_hash);
        assert_eq!(run.definition_sha, attempts[0].definition_sha);
    }
    assert_ne!(
        attempts[0].definition_sha.as_deref(),
        Some(changed.as_str())
    );

    // A new run, asked for by a person, reads the file as it is now.
    harness.settled().await;
    comment(&harness, "retry-7", 7, "/conveyor retry", &[]).await;
    harness.request_outcome("retry-7").await;
    let retry = task_of(&harness, 7).await;
    assert_ne!(retry.id, task_id);
    assert_eq!(harness.final_state(retry.id).await, TaskState::Failed);
    let run = runs::latest(&harness.pool, retry.id)
        .await
        .unwrap()
        .unwrap();
    let steps = runs::steps(&harness.pool, run.id).await.unwrap();
    assert_eq!(steps[0].output, "version-two\n");
    assert_eq!(run.definition_sha.as_deref(), Some(changed.as_str()));
    assert_ne!(run.definition_hash, attempts[0].definition_hash);

    // Its status comment says the file changed since the last run on the issue; the first
    // task's, whose attempts all went by one file, does not.
    harness.settled().await;
    let said = |task_id: i64| {
        harness
            .github
            .comments(OWNER, REPO, 7)
            .into_iter()
            .find(|comment| comment.body.contains(&format!("conveyor:task:{task_id} ")))
            .map(|comment| comment.body)
            .unwrap()
    };
    let expected = format!(
        "`.github/conveyor.yml` changed since run {} on this issue: this run goes by the file as of commit {changed}.",
        attempts[1].id
    );
    assert!(said(retry.id).contains(&expected), "{}", said(retry.id));
    assert!(
        !said(task_id).contains("changed since run"),
        "{}",
        said(task_id)
    );
}

/// `agent` writes the work; `test` fails in the first task and passes in any later one, so
/// that a retry from `test` can only pass on the agent's work kept from the failed run.
const RETRYING: &str = "pipelines:
  default:
    steps:
      - {name: agent, run: 'echo agent >> WORK.md'}
      - {name: test, retryable: true, run: 'grep -qx agent WORK.md && test \"$CONVEYOR_TASK_ID\" -gt 1'}
      - {name: lint check, retryable: true, run: 'true'}
";

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn retry_from_a_step_takes_up_the_failed_run_at_that_step(pool: sqlx::PgPool) {
    let harness = Harness::start(pool).await;
    harness.add_repo(&[
        (".github/conveyor.yml", RETRYING),
        ("README.md", "# widgets\n"),
    ]);
    harness
        .github
        .set_permission(OWNER, REPO, REQUESTER, "write");
    let failed = harness.label("label-7", 7, "Fix the widget").await;
    assert_eq!(harness.final_state(failed).await, TaskState::Failed);
    harness.settled().await;
    let failed_run = runs::latest(&harness.pool, failed).await.unwrap().unwrap();

    // Refused: a step that does not exist, one not declared retryable, one after the
    // failure; each reply says why and no task starts.
    let refusals = [
        (
            "retry-nope",
            "/conveyor retry nope",
            "pipeline `default` has no step `nope` (its steps: `agent`, `test`, `lint check`)",
        ),
        (
            "retry-agent",
            "/conveyor retry agent",
            "step `agent` does not declare `retryable: true`",
        ),
        (
            "retry-lint",
            "/conveyor retry \"lint check\"",
            "step `lint check` comes after `test`, where the run failed",
        ),
    ];
    for (delivery, text, why) in refusals {
        comment(&harness, delivery, 7, text, &[]).await;
        let outcome = harness.request_outcome(delivery).await;
        assert!(outcome.contains(why), "{text}: {outcome}");
    }
    harness.settled().await;
    let replies = replies(&harness, 7);
    assert_eq!(replies.len(), refusals.len(), "{replies:?}");
    for ((_, text, why), reply) in refusals.iter().zip(&replies) {
        assert!(reply.contains(why), "{text}: {reply}");
    }
    assert_eq!(task_of(&harness, 7).await.id, failed);

    // Allowed: the new task starts at `test` on the agent's work, by the same definition.
    comment(&harness, "retry-test", 7, "/conveyor retry test", &[]).await;
    let outcome = harness.request_outcome("retry-test").await;
    assert!(outcome.contains("from step `test`"), "{outcome}");
    let retry = task_of(&harness, 7).await;
    assert_eq!(
        (retry.retry_of, retry.retry_from_run, retry.retry_from_step),
        (Some(failed), Some(failed_run.id), Some(1))
    );
    assert_eq!(harness.final_state(retry.id).await, TaskState::Succeeded);
    let run = runs::latest(&harness.pool, retry.id)
        .await
        .unwrap()
        .unwrap();
    let steps: Vec<String> = runs::steps(&harness.pool, run.id)
        .await
        .unwrap()
        .into_iter()
        .map(|step| step.name)
        .collect();
    assert_eq!(steps, ["test", "lint check"]);
    assert_eq!(run.definition_hash, failed_run.definition_hash);
    assert_eq!(run.base_sha, failed_run.base_sha);
    let branch = "conveyor/7-fix-the-widget";
    assert_eq!(
        harness
            .github
            .file_at(OWNER, REPO, branch, "WORK.md")
            .as_deref(),
        Some("agent\n"),
        "the agent ran once, in the failed run"
    );

    // A run that did not fail is not retried from a step.
    harness.settled().await;
    comment(&harness, "retry-again", 7, "/conveyor retry test", &[]).await;
    let outcome = harness.request_outcome("retry-again").await;
    assert!(
        outcome.contains("only a failed run is retried from a step"),
        "{outcome}"
    );
}
