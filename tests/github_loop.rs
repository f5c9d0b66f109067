//! The GitHub loop, through the real router, real Postgres and the fake GitHub: approval
//! gates on the check run and in comments, slash commands, and the events that cancel or
//! run a task again.

mod support;

use conveyor::engine::TaskState;
use conveyor::engine::events;
use support::fake_github::CheckRun;
use support::{Harness, OWNER, REPO, WORK_SCRIPT, payloads, wait_until};

/// A pipeline whose work waits for a person's approval before it is verified and proposed.
const GATED_PIPELINE: &str = "pipelines:
  default:
    steps:
      - name: implement
        run: ./scripts/do-the-work.sh
      - name: review
        approval:
          message: Check the change before the pull request opens
      - name: verify
        run: grep -q . NOTES.md
";

const REQUESTER: &str = "alice";
const WRITER: &str = "wendy";
const READER: &str = "rita";

async fn gated(pool: sqlx::PgPool) -> Harness {
    let harness = Harness::start(pool).await;
    harness.add_repo(&[
        (".github/conveyor.yml", GATED_PIPELINE),
        ("scripts/do-the-work.sh", WORK_SCRIPT),
        ("README.md", "# widgets\n"),
    ]);
    harness
        .github
        .set_permission(OWNER, REPO, REQUESTER, "write");
    harness.github.set_permission(OWNER, REPO, WRITER, "write");
    harness.github.set_permission(OWNER, REPO, READER, "read");
    harness
}

/// Labels issue 7 as the requester and waits for its run to park at the gate; returns the
/// task and the `action_required` check run.
async fn parked(harness: &Harness) -> (i64, CheckRun) {
    let body = payloads::labeled_issue_by(7, "Add release notes", "conveyor", REQUESTER, "User");
    let (status, _) = harness.post_signed("issues", "label-7", &body).await;
    assert_eq!(status, 202);
    assert_eq!(harness.request_outcome("label-7").await, "task_created");
    let task_id = harness.task_ids().await[0];
    harness.reach(task_id, TaskState::AwaitingApproval).await;
    harness.settled().await;
    let branch = "conveyor/7-add-release-notes";
    let head = harness
        .github
        .branch_sha(OWNER, REPO, branch)
        .expect("work pushed at the gate");
    let checks = harness.github.check_runs(OWNER, REPO);
    assert_eq!(checks.len(), 1, "{checks:#?}");
    let check = checks[0].clone();
    assert_eq!(
        (check.name.as_str(), check.head_sha.as_str()),
        ("conveyor", head.as_str())
    );
    assert_eq!(
        (check.status.as_str(), check.conclusion.as_deref()),
        ("completed", Some("action_required"))
    );
    let actions: Vec<(&str, &str)> = check
        .actions
        .iter()
        .map(|action| (action.identifier.as_str(), action.label.as_str()))
        .collect();
    assert_eq!(actions, [("approve", "Approve"), ("reject", "Reject")]);
    let summary = check.output_summary.as_deref().unwrap();
    assert!(summary.contains("NOTES.md"), "the files changed: {summary}");
    assert!(
        summary.contains("`implement`"),
        "the steps so far: {summary}"
    );
    let comment = harness.github.comments(OWNER, REPO, 7);
    assert_eq!(comment.len(), 1);
    assert!(
        comment[0].body.contains("waits for approval"),
        "{}",
        comment[0].body
    );
    assert!(
        comment[0].body.contains("`/conveyor approve`"),
        "{}",
        comment[0].body
    );
    (task_id, check)
}

async fn click(
    harness: &Harness,
    delivery: &str,
    check: &CheckRun,
    identifier: &str,
    login: &str,
) -> String {
    let body = payloads::check_run_action(
        check.id as i64,
        &check.head_sha,
        check.external_id.as_deref().unwrap(),
        identifier,
        login,
    );
    let (status, _) = harness.post_signed("check_run", delivery, &body).await;
    assert_eq!(status, 202);
    harness.request_outcome(delivery).await
}

async fn comment(
    harness: &Harness,
    delivery: &str,
    issue: i64,
    login: &str,
    text: &str,
) -> (u64, String) {
    let id = harness
        .github
        .add_user_comment(OWNER, REPO, issue as u64, login, text);
    let body = payloads::issue_comment(issue, false, id, text, login, "User");
    let (status, _) = harness.post_signed("issue_comment", delivery, &body).await;
    assert_eq!(status, 202);
    (id, harness.request_outcome(delivery).await)
}

async fn approvals(harness: &Harness, task_id: i64) -> Vec<serde_json::Value> {
    events::for_task(&harness.pool, task_id)
        .await
        .unwrap()
        .into_iter()
        .filter(|event| event.kind == "approval")
        .map(|event| event.detail)
        .collect()
}

/// After approval, the run goes on from the approved commit and ends with a pull request
/// and a successful check run on its last commit.
async fn assert_finished_after_approval(harness: &Harness, task_id: i64, approver: &str) {
    assert_eq!(harness.final_state(task_id).await, TaskState::Succeeded);
    harness.settled().await;
    assert_eq!(harness.github.pull_requests(OWNER, REPO).len(), 1);
    let checks = harness.github.check_runs(OWNER, REPO);
    let last = checks.last().unwrap();
    assert_eq!(
        (last.status.as_str(), last.conclusion.as_deref()),
        ("completed", Some("success")),
        "{checks:#?}"
    );
    assert!(last.actions.is_empty(), "no buttons once decided");
    let comment = harness.final_comment(7).await;
    assert!(
        comment.body.contains("finished pipeline"),
        "{}",
        comment.body
    );
    assert!(
        comment.body.contains(&format!("approved by @{approver}")),
        "{}",
        comment.body
    );
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn an_approval_gate_parks_the_run_until_a_writer_clicks_approve(pool: sqlx::PgPool) {
    let harness = gated(pool).await;
    let (task_id, check) = parked(&harness).await;
    assert_eq!(
        sqlx::query_scalar::<_, i32>("SELECT running FROM repositories")
            .fetch_one(&harness.pool)
            .await
            .unwrap(),
        0,
        "a parked run holds no repository slot"
    );

    let refused = click(&harness, "click-reader", &check, "approve", READER).await;
    assert!(
        refused.starts_with("refused:") && refused.contains("write"),
        "{refused}"
    );
    let refused = click(&harness, "click-requester", &check, "approve", REQUESTER).await;
    assert!(refused.starts_with("refused:"), "{refused}");
    assert_eq!(
        harness.state(task_id).await,
        TaskState::AwaitingApproval,
        "refusals change nothing"
    );
    harness.settled().await;
    let replies: Vec<String> = harness
        .github
        .comments(OWNER, REPO, 7)
        .into_iter()
        .map(|c| c.body)
        .filter(|body| body.contains("conveyor:reply"))
        .collect();
    assert_eq!(replies.len(), 2, "each refusal is answered: {replies:#?}");
    assert!(
        replies.iter().any(|r| r.contains(&format!("@{READER}"))),
        "{replies:#?}"
    );

    assert_eq!(
        click(&harness, "click-writer", &check, "approve", WRITER).await,
        format!("approved task {task_id}")
    );
    assert_finished_after_approval(&harness, task_id, WRITER).await;
    let gate = harness
        .github
        .check_run_history(OWNER, REPO, check.id)
        .pop()
        .unwrap();
    assert_eq!(
        gate.conclusion.as_deref(),
        Some("success"),
        "the gate's check run says it was approved"
    );

    let decisions = approvals(&harness, task_id).await;
    let accepted: Vec<(bool, &str)> = decisions
        .iter()
        .map(|d| (d["accepted"].as_bool().unwrap(), d["by"].as_str().unwrap()))
        .collect();
    assert_eq!(
        accepted,
        [(false, READER), (false, REQUESTER), (true, WRITER)]
    );
    assert!(decisions[0]["refused"].as_str().unwrap().contains("write"));
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn a_comment_approves_as_the_button_does(pool: sqlx::PgPool) {
    let harness = gated(pool).await;
    let (task_id, _) = parked(&harness).await;
    let (id, outcome) = comment(
        &harness,
        "approve-1",
        7,
        WRITER,
        "Looks right.\n\n/conveyor approve",
    )
    .await;
    assert_eq!(outcome, format!("approved task {task_id}"));
    harness.settled().await;
    assert_eq!(harness.github.reactions(OWNER, REPO, id), ["+1"]);
    assert_finished_after_approval(&harness, task_id, WRITER).await;
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn a_rejection_ends_the_run_with_its_reason(pool: sqlx::PgPool) {
    let harness = gated(pool).await;
    let (task_id, check) = parked(&harness).await;
    let (id, outcome) = comment(
        &harness,
        "reject-1",
        7,
        WRITER,
        "/conveyor reject the notes are wrong",
    )
    .await;
    assert_eq!(outcome, format!("rejected task {task_id}"));
    assert_eq!(harness.final_state(task_id).await, TaskState::Failed);
    harness.settled().await;
    assert_eq!(harness.github.reactions(OWNER, REPO, id), ["+1"]);
    assert!(
        harness.github.pull_requests(OWNER, REPO).is_empty(),
        "nothing proposed"
    );
    let gate = harness
        .github
        .check_run_history(OWNER, REPO, check.id)
        .pop()
        .unwrap();
    assert_eq!(gate.conclusion.as_deref(), Some("failure"));
    assert!(gate.actions.is_empty());
    let text = format!(
        "{} {}",
        gate.output_title.clone().unwrap_or_default(),
        gate.output_summary.clone().unwrap_or_default()
    );
    assert!(
        text.contains(WRITER) && text.contains("the notes are wrong"),
        "{text}"
    );
    let status = harness.final_comment(7).await;
    assert!(
        status.body.contains(&format!("rejected by @{WRITER}")),
        "{}",
        status.body
    );
    assert!(
        status.body.contains("the notes are wrong"),
        "{}",
        status.body
    );
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn an_approval_after_the_branch_moved_is_refused(pool: sqlx::PgPool) {
    let harness = gated(pool).await;
    let (task_id, check) = parked(&harness).await;
    harness.github.push_files(
        OWNER,
        REPO,
        "conveyor/7-add-release-notes",
        &[("NOTES.md", "someone else's text\n")],
        &[],
    );
    let refused = click(&harness, "click-late", &check, "approve", WRITER).await;
    assert!(refused.contains("the branch moved"), "{refused}");
    assert_eq!(harness.state(task_id).await, TaskState::AwaitingApproval);
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn a_parked_run_survives_a_restart_of_every_process(pool: sqlx::PgPool) {
    let mut harness = gated(pool).await;
    let (task_id, check) = parked(&harness).await;
    harness.restart().await;
    assert_eq!(
        click(&harness, "click-after-restart", &check, "approve", WRITER).await,
        format!("approved task {task_id}")
    );
    assert_finished_after_approval(&harness, task_id, WRITER).await;
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn a_gate_whose_paths_were_not_touched_passes_by_itself(pool: sqlx::PgPool) {
    let harness = Harness::start(pool).await;
    let pipeline = GATED_PIPELINE.replace(
        "          message: Check the change before the pull request opens\n",
        "          required_for_paths: [\"src/**\"]\n",
    );
    harness.add_repo(&[
        (".github/conveyor.yml", &pipeline),
        ("scripts/do-the-work.sh", WORK_SCRIPT),
    ]);
    let task_id = harness.label("label-auto", 7, "Add release notes").await;
    assert_eq!(harness.final_state(task_id).await, TaskState::Succeeded);
    let decisions = approvals(&harness, task_id).await;
    assert_eq!(decisions.len(), 1);
    assert_eq!(decisions[0]["automatic"], true);
    assert_eq!(decisions[0]["changed"], serde_json::json!(["NOTES.md"]));
    let comment = harness.final_comment(7).await;
    assert!(
        comment.body.contains("`review`"),
        "the gate is in the timeline: {}",
        comment.body
    );
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn commands_in_code_quotes_or_from_bots_are_ignored_and_unknown_ones_get_help(
    pool: sqlx::PgPool,
) {
    let harness = Harness::start(pool).await;
    harness.add_repo_with_pipeline();
    for (delivery, text) in [
        ("code", "```\n/conveyor run\n```"),
        ("quote", "> /conveyor run"),
        ("inline", "try `/conveyor run`"),
    ] {
        let body = payloads::issue_comment(7, false, 900, text, REQUESTER, "User");
        harness.post_signed("issue_comment", delivery, &body).await;
        assert_eq!(
            harness.outcome(delivery).await,
            "ignored: no command in the comment"
        );
    }
    let body = payloads::issue_comment(7, false, 901, "/conveyor run", "helper[bot]", "Bot");
    harness.post_signed("issue_comment", "bot", &body).await;
    assert_eq!(
        harness.request_outcome("bot").await,
        "ignored: sender is a bot"
    );
    let edited = payloads::issue_comment_edited(7, false, 902, "/conveyor run", REQUESTER, "User");
    harness
        .post_signed("issue_comment", "edited", &edited)
        .await;
    assert_eq!(
        harness.outcome("edited").await,
        "ignored: event not handled"
    );
    assert!(harness.task_ids().await.is_empty());

    let (id, outcome) = comment(&harness, "unknown", 7, REQUESTER, "/conveyor deploy now").await;
    assert!(outcome.contains("unknown command `deploy`"), "{outcome}");
    harness.settled().await;
    assert_eq!(harness.github.reactions(OWNER, REPO, id), ["-1"]);
    let replies = harness.github.comments(OWNER, REPO, 7);
    let reply = replies
        .iter()
        .find(|c| c.body.contains("conveyor:reply"))
        .unwrap();
    assert!(
        reply.body.contains("Unknown command `deploy`"),
        "{}",
        reply.body
    );
    assert!(
        reply.body.contains("/conveyor approve"),
        "the help lists the commands: {}",
        reply.body
    );
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn run_retry_and_status_from_comments(pool: sqlx::PgPool) {
    let harness = Harness::start(pool).await;
    harness.add_repo_with_pipeline();
    harness.github.set_permission(OWNER, REPO, WRITER, "write");
    harness.github.set_permission(OWNER, REPO, READER, "read");

    let (id, outcome) = comment(&harness, "run-reader", 7, READER, "/conveyor run").await;
    assert!(outcome.starts_with("refused:"), "{outcome}");
    harness.settled().await;
    assert_eq!(harness.github.reactions(OWNER, REPO, id), ["-1"]);

    let (id, outcome) = comment(&harness, "run", 7, WRITER, "/conveyor run").await;
    assert!(outcome.contains("created"), "{outcome}");
    let first = harness.task_ids().await[0];
    assert_eq!(harness.final_state(first).await, TaskState::Succeeded);
    harness.settled().await;
    assert_eq!(harness.github.reactions(OWNER, REPO, id), ["+1"]);

    let (_, outcome) = comment(&harness, "retry", 7, WRITER, "/conveyor retry").await;
    assert!(
        outcome.contains(&format!("retrying task {first}")),
        "{outcome}"
    );
    let second = *harness.task_ids().await.last().unwrap();
    assert_ne!(first, second);
    assert_eq!(harness.final_state(second).await, TaskState::Succeeded);
    let retry_of: Option<i64> = sqlx::query_scalar("SELECT retry_of FROM tasks WHERE id = $1")
        .bind(second)
        .fetch_one(&harness.pool)
        .await
        .unwrap();
    assert_eq!(retry_of, Some(first));
    harness.settled().await;
    assert_eq!(
        harness.github.pull_requests(OWNER, REPO).len(),
        1,
        "the same pull request"
    );

    let (id, outcome) = comment(&harness, "status", 7, READER, "/conveyor status").await;
    assert!(outcome.starts_with("status of task"), "{outcome}");
    harness.settled().await;
    assert_eq!(harness.github.reactions(OWNER, REPO, id), ["eyes"]);
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn cancel_stops_a_running_step(pool: sqlx::PgPool) {
    let harness = Harness::start(pool).await;
    let marker = format!("{}.{}", 70 + fastrand::u32(..1000), fastrand::u32(..1000));
    harness.add_repo(&[
        (
            ".github/conveyor.yml",
            "pipelines:\n  default:\n    steps:\n      - name: slow\n        run: sh slow.sh\n",
        ),
        ("slow.sh", &format!("sleep {marker}\n")),
    ]);
    harness.github.set_permission(OWNER, REPO, WRITER, "write");
    let task_id = harness.label("label-slow", 7, "Slow work").await;
    wait_until("the step runs", || async {
        (!support::processes_with(&marker).is_empty()).then_some(())
    })
    .await;
    let (_, outcome) = comment(&harness, "cancel", 7, WRITER, "/conveyor cancel").await;
    assert_eq!(outcome, format!("cancelled task {task_id}"));
    assert_eq!(harness.final_state(task_id).await, TaskState::Cancelled);
    wait_until("the step's processes are gone", || async {
        support::processes_with(&marker).is_empty().then_some(())
    })
    .await;
    let comment = harness.final_comment(7).await;
    assert!(
        comment.body.contains(&format!("cancelled by @{WRITER}")),
        "{}",
        comment.body
    );
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn unlabelling_cancels_and_a_rerequested_check_run_retries(pool: sqlx::PgPool) {
    let harness = Harness::start(pool).await;
    harness.add_repo_with_pipeline();
    harness
        .github
        .set_permission(OWNER, REPO, REQUESTER, "write");
    let task_id = harness.label("label-1", 7, "Add release notes").await;
    assert_eq!(harness.final_state(task_id).await, TaskState::Succeeded);
    harness.settled().await;
    let check = harness.github.check_runs(OWNER, REPO).pop().unwrap();

    let body = payloads::check_run_rerequested(
        check.id as i64,
        &check.head_sha,
        check.external_id.as_deref().unwrap(),
        REQUESTER,
    );
    harness.post_signed("check_run", "rerun", &body).await;
    let outcome = harness.request_outcome("rerun").await;
    assert!(
        outcome.contains(&format!("retrying task {task_id}")),
        "{outcome}"
    );
    let retry = *harness.task_ids().await.last().unwrap();

    let body = payloads::issue_unlabeled(7, "Add release notes", "conveyor", REQUESTER);
    harness.post_signed("issues", "unlabel", &body).await;
    let outcome = harness.request_outcome("unlabel").await;
    if outcome.starts_with("cancelled") {
        assert_eq!(harness.final_state(retry).await, TaskState::Cancelled);
    } else {
        // The retry ran to its end before the label came off: nothing was live to cancel.
        assert_eq!(outcome, "ignored: no live task");
        assert!(harness.final_state(retry).await.is_final());
    }
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn run_on_a_pull_request_pushes_to_its_branch_and_refuses_forks(pool: sqlx::PgPool) {
    let harness = Harness::start(pool).await;
    harness.add_repo_with_pipeline();
    harness.github.set_permission(OWNER, REPO, WRITER, "write");
    harness
        .github
        .push_files(OWNER, REPO, "feature", &[("feature.txt", "x\n")], &[]);
    let before = harness.github.branch_sha(OWNER, REPO, "feature").unwrap();
    let pull = harness
        .github
        .open_pull_request_from(OWNER, REPO, "feature", "main", "A feature") as i64;

    let id = harness
        .github
        .add_user_comment(OWNER, REPO, pull as u64, WRITER, "/conveyor run");
    let body = payloads::issue_comment(pull, true, id, "/conveyor run", WRITER, "User");
    harness.post_signed("issue_comment", "pr-run", &body).await;
    let outcome = harness.request_outcome("pr-run").await;
    assert!(outcome.contains("created"), "{outcome}");
    let task_id = harness.task_ids().await[0];
    assert_eq!(harness.final_state(task_id).await, TaskState::Succeeded);
    harness.settled().await;

    let after = harness.github.branch_sha(OWNER, REPO, "feature").unwrap();
    assert_ne!(before, after, "a commit on the pull request's branch");
    assert_eq!(
        harness.github.log(OWNER, REPO, "feature")[1],
        before,
        "on top of its head"
    );
    assert_eq!(
        harness.github.pull_requests(OWNER, REPO).len(),
        1,
        "no second pull request"
    );
    let status = harness.final_comment(pull as u64).await;
    assert!(
        status
            .body
            .contains(&format!("the changes are in #{pull} (branch `feature`)")),
        "{}",
        status.body
    );
    let checks = harness.github.check_runs(OWNER, REPO);
    let on_head: Vec<&CheckRun> = checks.iter().filter(|c| c.head_sha == after).collect();
    assert_eq!(on_head.len(), 1, "{checks:#?}");
    assert_eq!(on_head[0].conclusion.as_deref(), Some("success"));
    // Made at once on the head the run started from (queued, or already in progress when a
    // worker took the run before the outbox delivered it), and closed once the run pushed.
    let started_on = checks
        .iter()
        .find(|c| c.head_sha == before)
        .expect("a check run on the pull request's head as it was");
    let first = &harness.github.check_run_history(OWNER, REPO, started_on.id)[0];
    assert!(
        ["queued", "in_progress"].contains(&first.status.as_str()),
        "{first:#?}"
    );
    assert_eq!(
        started_on.conclusion.as_deref(),
        Some("neutral"),
        "{started_on:#?}"
    );

    let fork = harness.github.open_fork_pull_request(
        OWNER,
        REPO,
        "mallory",
        "evil",
        &before,
        "main",
        "From a fork",
    ) as i64;
    let id = harness
        .github
        .add_user_comment(OWNER, REPO, fork as u64, WRITER, "/conveyor run");
    let body = payloads::issue_comment(fork, true, id, "/conveyor run", WRITER, "User");
    harness
        .post_signed("issue_comment", "fork-run", &body)
        .await;
    let outcome = harness.request_outcome("fork-run").await;
    assert!(outcome.contains("fork"), "{outcome}");
    assert_eq!(harness.task_ids().await.len(), 1);
    harness.settled().await;
    assert_eq!(harness.github.reactions(OWNER, REPO, id), ["-1"]);
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn a_parked_run_whose_check_run_github_refused_gets_it_back_at_start(pool: sqlx::PgPool) {
    let mut harness = gated(pool).await;
    harness.github.inject(
        "POST",
        &format!("/repos/{OWNER}/{REPO}/check-runs"),
        vec![support::fake_github::Injected::status(422).with_message("Validation Failed")],
    );
    let body = payloads::labeled_issue_by(7, "Add release notes", "conveyor", REQUESTER, "User");
    harness.post_signed("issues", "label-7", &body).await;
    assert_eq!(harness.request_outcome("label-7").await, "task_created");
    let task_id = harness.task_ids().await[0];
    harness.reach(task_id, TaskState::AwaitingApproval).await;
    harness.settled().await;
    assert!(
        harness.github.check_runs(OWNER, REPO).is_empty(),
        "GitHub refused the check run"
    );

    harness.restart().await;
    let check = wait_until("the parked run's check run", || async {
        harness.github.check_runs(OWNER, REPO).pop()
    })
    .await;
    assert_eq!(check.conclusion.as_deref(), Some("action_required"));
    assert_eq!(
        click(&harness, "click-restored", &check, "approve", WRITER).await,
        format!("approved task {task_id}")
    );
    assert_finished_after_approval(&harness, task_id, WRITER).await;
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn a_review_comment_is_answered_on_its_own_thread_family(pool: sqlx::PgPool) {
    let harness = Harness::start(pool).await;
    harness.add_repo_with_pipeline();
    harness
        .github
        .push_files(OWNER, REPO, "feature", &[("feature.txt", "x\n")], &[]);
    let pull = harness
        .github
        .open_pull_request_from(OWNER, REPO, "feature", "main", "A feature") as i64;
    let id = harness
        .github
        .add_review_comment(OWNER, REPO, pull as u64, READER, "/conveyor help");
    let body = payloads::review_comment(pull, id, "/conveyor help", READER, "User");
    harness
        .post_signed("pull_request_review_comment", "review-help", &body)
        .await;
    assert_eq!(harness.request_outcome("review-help").await, "help");
    harness.settled().await;
    assert_eq!(harness.github.reactions(OWNER, REPO, id), ["+1"]);
    let replies = harness.github.comments(OWNER, REPO, pull as u64);
    assert_eq!(replies.len(), 1);
    assert!(
        replies[0].body.contains("/conveyor approve"),
        "{}",
        replies[0].body
    );
}
