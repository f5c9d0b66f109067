//! Clarification round-trips through the real router, real Postgres, the real sandbox and
//! the fake GitHub: a step asks its requester questions (exit code 75), the run waits without
//! a worker, and the requester's next plain comment sends it back to that step with the
//! answer; or the rounds run out, nobody answers in time, or the run is cancelled.

mod support;

use conveyor::engine::TaskState;
use serde_json::Value;
use support::{API_TOKEN, Harness, OWNER, REPO, payloads, wait_until};

const REQUESTER: &str = "alice";
const OTHER: &str = "bob";
const BRANCH: &str = "conveyor/7-pick-a-colour";

/// Writes notes first, then asks which colour until it has an answer, which it keeps.
const ASKING_PIPELINE: &str = r#"pipelines:
  default:
    steps:
      - name: implement
        run: echo "notes" > NOTES.md
      - name: ask
        run: if [ -s "$CONVEYOR_ANSWERS_FILE" ]; then cp "$CONVEYOR_ANSWERS_FILE" answer.md; else echo "Which colour?" > "$CONVEYOR_QUESTIONS_FILE"; exit 75; fi
"#;

/// Asks every time it runs, allowed one round; asking is no failure its retries repeat.
const ALWAYS_ASKING_PIPELINE: &str = r#"pipelines:
  default:
    clarification: {max_rounds: 1, timeout_hours: 5}
    steps:
      - name: ask
        retries: 2
        run: echo "Round $(ls /conveyor | grep -c '^answers-')?" > "$CONVEYOR_QUESTIONS_FILE"; exit 75
"#;

async fn repo_with(pool: sqlx::PgPool, pipeline: &str) -> Harness {
    let harness = Harness::start(pool).await;
    harness.add_repo(&[
        (".github/conveyor.yml", pipeline),
        ("README.md", "# widgets\n"),
    ]);
    harness
        .github
        .set_permission(OWNER, REPO, REQUESTER, "write");
    harness.github.set_permission(OWNER, REPO, OTHER, "write");
    harness
}

/// Labels issue 7 as the requester and waits for its run to ask; returns the task.
async fn asked(harness: &Harness) -> i64 {
    let body = payloads::labeled_issue_by(7, "Pick a colour", "conveyor", REQUESTER, "User");
    let (status, _) = harness.post_signed("issues", "label-7", &body).await;
    assert_eq!(status, 202);
    assert_eq!(harness.request_outcome("label-7").await, "task_created");
    let task_id = harness.task_ids().await[0];
    harness.reach(task_id, TaskState::AwaitingInput).await;
    harness.settled().await;
    task_id
}

/// `login` comments `text` on issue 7; returns the comment's id and the delivery's outcome
/// (the request's, when one was queued).
async fn comment(harness: &Harness, delivery: &str, login: &str, text: &str) -> (u64, String) {
    let id = harness.github.add_user_comment(OWNER, REPO, 7, login, text);
    let body = payloads::issue_comment(7, false, id, text, login, "User");
    let (status, _) = harness.post_signed("issue_comment", delivery, &body).await;
    assert_eq!(status, 202);
    let outcome = harness.outcome(delivery).await;
    if outcome == "request_queued" {
        (id, harness.request_outcome(delivery).await)
    } else {
        (id, outcome)
    }
}

async fn status_comment(harness: &Harness, task_id: i64) -> String {
    let marker = format!("<!-- conveyor:task:{task_id} -->");
    let mine: Vec<String> = harness
        .github
        .comments(OWNER, REPO, 7)
        .into_iter()
        .map(|c| c.body)
        .filter(|body| body.starts_with(&marker))
        .collect();
    assert_eq!(mine.len(), 1, "one status comment: {mine:#?}");
    mine.into_iter().next().unwrap()
}

async fn latest_run(harness: &Harness, task_id: i64) -> Value {
    let (status, task) = harness
        .api("GET", &format!("/api/v2/tasks/{task_id}"), Some(API_TOKEN))
        .await;
    assert_eq!(status, 200, "{task}");
    let run_id = task["runs"].as_array().unwrap().last().unwrap().clone();
    let (status, run) = harness
        .api("GET", &format!("/api/v2/runs/{run_id}"), Some(API_TOKEN))
        .await;
    assert_eq!(status, 200, "{run}");
    run
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn a_question_waits_for_the_requesters_plain_comment_and_the_step_runs_again_with_it(
    pool: sqlx::PgPool,
) {
    let harness = repo_with(pool, ASKING_PIPELINE).await;
    let task_id = asked(&harness).await;

    assert_eq!(
        sqlx::query_scalar::<_, i32>("SELECT running FROM repositories")
            .fetch_one(&harness.pool)
            .await
            .unwrap(),
        0,
        "a run waiting for an answer holds no repository slot"
    );
    let status = status_comment(&harness, task_id).await;
    assert!(status.contains("waiting for your answer"), "{status}");
    assert!(status.contains("> Which colour?"), "{status}");
    assert!(status.contains("plain comment"), "{status}");
    let checks = harness.github.check_runs(OWNER, REPO);
    assert_eq!(checks.len(), 1, "{checks:#?}");
    let check = &checks[0];
    assert_eq!(
        (check.status.as_str(), check.conclusion.as_deref()),
        ("in_progress", None),
        "{check:#?}"
    );
    assert!(check.actions.is_empty(), "no approval buttons: {check:#?}");
    assert!(
        check
            .output_summary
            .as_deref()
            .unwrap()
            .contains("Which colour?"),
        "{check:#?}"
    );
    let pushed = harness
        .github
        .branch_sha(OWNER, REPO, BRANCH)
        .expect("the work so far is pushed before the run waits");
    assert_eq!(check.head_sha, pushed);
    assert_eq!(
        harness
            .github
            .file_at(OWNER, REPO, &pushed, "NOTES.md")
            .as_deref(),
        Some("notes\n")
    );
    let run = latest_run(&harness, task_id).await;
    assert_eq!(run["state"], "awaiting_input", "{run}");
    assert_eq!(run["questions"], "Which colour?", "{run}");
    assert_eq!(run["clarification"]["rounds"], 1, "{run}");

    // Someone else's comment, an edit of the requester's and a bot's are no answers.
    let (_, outcome) = comment(&harness, "other-1", OTHER, "red").await;
    assert!(outcome.starts_with("ignored:"), "{outcome}");
    let edited = payloads::issue_comment_edited(7, false, 4242, "green", REQUESTER, "User");
    let (status, _) = harness
        .post_signed("issue_comment", "edited-1", &edited)
        .await;
    assert_eq!(status, 202);
    assert!(harness.outcome("edited-1").await.starts_with("ignored:"));
    let id = harness
        .github
        .add_user_comment(OWNER, REPO, 7, "ci[bot]", "purple");
    let bot = payloads::issue_comment(7, false, id, "purple", "ci[bot]", "Bot");
    harness.post_signed("issue_comment", "bot-1", &bot).await;
    assert!(harness.outcome("bot-1").await.starts_with("ignored:"));
    assert_eq!(harness.state(task_id).await, TaskState::AwaitingInput);

    // The requester's login as GitHub spells it in the comment, whatever its case.
    let (id, outcome) = comment(&harness, "answer-1", "Alice", "blue").await;
    assert_eq!(outcome, format!("answered the questions of task {task_id}"));
    assert_eq!(harness.final_state(task_id).await, TaskState::Succeeded);
    harness.settled().await;
    assert_eq!(harness.github.reactions(OWNER, REPO, id), ["eyes"]);
    let pulls = harness.github.pull_requests(OWNER, REPO);
    assert_eq!(pulls.len(), 1, "{pulls:#?}");
    let head = harness.github.branch_sha(OWNER, REPO, BRANCH).unwrap();
    assert_eq!(
        harness
            .github
            .file_at(OWNER, REPO, &head, "answer.md")
            .as_deref(),
        Some("blue")
    );
    assert_eq!(
        harness
            .github
            .file_at(OWNER, REPO, &head, "NOTES.md")
            .as_deref(),
        Some("notes\n"),
        "the work from before the question is kept"
    );
    let run = latest_run(&harness, task_id).await;
    assert_eq!(run["state"], "completed", "{run}");
    assert_eq!(
        run["attempt"], 1,
        "the answered run went on, no new attempt"
    );
    let status = status_comment(&harness, task_id).await;
    assert!(status.contains("finished pipeline"), "{status}");
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn a_run_waiting_for_an_answer_can_be_cancelled_but_not_approved(pool: sqlx::PgPool) {
    let harness = repo_with(pool, ASKING_PIPELINE).await;
    let task_id = asked(&harness).await;
    let (_, outcome) = comment(&harness, "approve-1", OTHER, "/conveyor approve").await;
    assert!(outcome.contains("not waiting for an approval"), "{outcome}");
    assert_eq!(harness.state(task_id).await, TaskState::AwaitingInput);
    let too_long = "é".repeat(40_000);
    let (id, outcome) = comment(&harness, "long-answer", REQUESTER, &too_long).await;
    assert!(outcome.contains("80000 bytes long"), "{outcome}");
    assert_eq!(harness.state(task_id).await, TaskState::AwaitingInput);
    harness.settled().await;
    assert_eq!(harness.github.reactions(OWNER, REPO, id), ["-1"]);
    let replies: Vec<String> = harness
        .github
        .comments(OWNER, REPO, 7)
        .into_iter()
        .map(|c| c.body)
        .filter(|body| body.contains("not taken as the answer"))
        .collect();
    assert_eq!(replies.len(), 1, "{replies:#?}");
    let (_, outcome) = comment(&harness, "cancel-1", REQUESTER, "/conveyor cancel").await;
    assert_eq!(outcome, format!("cancelled task {task_id}"));
    assert_eq!(harness.final_state(task_id).await, TaskState::Cancelled);
    let run = latest_run(&harness, task_id).await;
    assert_eq!(run["state"], "cancelled", "{run}");
    let (_, outcome) = comment(&harness, "late-answer", REQUESTER, "blue").await;
    assert!(outcome.starts_with("ignored:"), "{outcome}");
    harness.settled().await;
    let status = status_comment(&harness, task_id).await;
    assert!(status.contains("cancelled"), "{status}");
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn asking_again_after_the_last_round_fails_the_run_as_no_answer(pool: sqlx::PgPool) {
    let harness = repo_with(pool, ALWAYS_ASKING_PIPELINE).await;
    let task_id = asked(&harness).await;
    assert!(
        status_comment(&harness, task_id)
            .await
            .contains("> Round 0?")
    );
    let run = latest_run(&harness, task_id).await;
    assert_eq!(run["steps"][0]["attempts"], 1, "{run}");
    let (_, outcome) = comment(&harness, "answer-1", REQUESTER, "go on").await;
    assert_eq!(outcome, format!("answered the questions of task {task_id}"));
    assert_eq!(harness.final_state(task_id).await, TaskState::Failed);
    harness.settled().await;
    let run = latest_run(&harness, task_id).await;
    assert_eq!(run["error_type"], "no_answer", "{run}");
    assert_eq!(run["failed_step"], "ask", "{run}");
    assert!(
        run["failure"].as_str().unwrap().contains("max_rounds"),
        "{run}"
    );
    let status = status_comment(&harness, task_id).await;
    assert!(status.contains("`no_answer`"), "{status}");
    let check = harness.github.check_runs(OWNER, REPO).pop().unwrap();
    assert_eq!(check.conclusion.as_deref(), Some("failure"), "{check:#?}");
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn questions_nobody_answers_in_time_fail_the_run_as_no_answer(pool: sqlx::PgPool) {
    let harness = repo_with(pool, ALWAYS_ASKING_PIPELINE).await;
    let task_id = asked(&harness).await;
    // Within the pipeline's five hours the run keeps waiting.
    sqlx::query(
        "UPDATE runs SET questions_asked_at = now() - interval '4 hours' WHERE task_id = $1",
    )
    .bind(task_id)
    .execute(&harness.pool)
    .await
    .unwrap();
    conveyor::housekeeping::unanswered::expire(&harness.pool)
        .await
        .unwrap();
    assert_eq!(harness.state(task_id).await, TaskState::AwaitingInput);
    sqlx::query(
        "UPDATE runs SET questions_asked_at = now() - interval '6 hours' WHERE task_id = $1",
    )
    .bind(task_id)
    .execute(&harness.pool)
    .await
    .unwrap();
    // The scheduler's periodic pass ends it.
    assert_eq!(harness.final_state(task_id).await, TaskState::Failed);
    harness.settled().await;
    let run = latest_run(&harness, task_id).await;
    assert_eq!(run["state"], "failed", "{run}");
    assert_eq!(run["error_type"], "no_answer", "{run}");
    assert_eq!(run["failed_step"], "ask", "{run}");
    assert!(
        run["failure"].as_str().unwrap().contains("within 5 hours"),
        "{run}"
    );
    let status = status_comment(&harness, task_id).await;
    assert!(status.contains("`no_answer`"), "{status}");
    assert!(!status.contains("waiting for your answer"), "{status}");
    let check = harness.github.check_runs(OWNER, REPO).pop().unwrap();
    assert_eq!(
        (check.status.as_str(), check.conclusion.as_deref()),
        ("completed", Some("failure")),
        "{check:#?}"
    );
    let (_, outcome) = comment(&harness, "too-late", REQUESTER, "blue").await;
    assert!(outcome.starts_with("ignored:"), "{outcome}");
    wait_until("nothing more queued", || async {
        let queued: i64 = sqlx::query_scalar("SELECT count(*) FROM tasks WHERE state = 'queued'")
            .fetch_one(&harness.pool)
            .await
            .unwrap();
        (queued == 0).then_some(())
    })
    .await;
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn a_question_asked_on_someone_elses_commit_is_marked_by_a_commit_of_conveyors(
    pool: sqlx::PgPool,
) {
    let harness = repo_with(pool, ALWAYS_ASKING_PIPELINE).await;
    let theirs = harness
        .github
        .push_files(OWNER, REPO, BRANCH, &[("THEIRS.md", "mine\n")], &[]);
    let task_id = asked(&harness).await;
    let head = harness.github.branch_sha(OWNER, REPO, BRANCH).unwrap();
    assert_ne!(head, theirs, "their commit is not taken for Conveyor's");
    assert_eq!(
        harness.github.log(OWNER, REPO, &head)[1],
        theirs,
        "built on theirs"
    );
    let run = latest_run(&harness, task_id).await;
    assert_eq!(run["head_sha"], head.as_str(), "{run}");
    let check = harness.github.check_runs(OWNER, REPO).pop().unwrap();
    assert_eq!(check.head_sha, head);
    assert_eq!(check.status, "in_progress", "{check:#?}");
}
