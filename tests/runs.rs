//! Runs in depth, through the real router, real Postgres and the fake GitHub: step logs
//! written while a step runs, step retries, the run's budget, artifacts, and each typed
//! failure as the runs API shows it.

mod support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use conveyor::engine::TaskState;
use serde_json::Value;
use support::fake_github::Injected;
use support::{API_TOKEN, Harness, OWNER, REPO, payloads, wait_until, wait_until_within};
use tower::ServiceExt;

const REQUESTER: &str = "alice";
const WRITER: &str = "wendy";

/// A harness whose repository holds `pipeline` and `files`.
async fn with_pipeline(pool: sqlx::PgPool, pipeline: &str, files: &[(&str, &str)]) -> Harness {
    let harness = Harness::start(pool).await;
    let mut all = vec![
        (".github/conveyor.yml", pipeline),
        ("README.md", "# widgets\n"),
    ];
    all.extend_from_slice(files);
    harness.add_repo(&all);
    harness
        .github
        .set_permission(OWNER, REPO, REQUESTER, "write");
    harness.github.set_permission(OWNER, REPO, WRITER, "write");
    harness
}

/// The id of the task's latest run, once it has one.
async fn run_of(harness: &Harness, task_id: i64) -> i64 {
    wait_until(&format!("a run of task {task_id}"), || async {
        sqlx::query_scalar("SELECT max(id) FROM runs WHERE task_id = $1")
            .bind(task_id)
            .fetch_one(&harness.pool)
            .await
            .unwrap()
    })
    .await
}

async fn api(harness: &Harness, path: &str) -> Value {
    let (status, body) = harness.api("GET", path, Some(API_TOKEN)).await;
    assert_eq!(status, StatusCode::OK, "{path}: {body}");
    body
}

/// The run as the API shows it once it is over (failed, cancelled, interrupted or done).
async fn ended_run(harness: &Harness, run_id: i64) -> Value {
    wait_until_within(
        &format!("run {run_id} over"),
        Duration::from_secs(60),
        || async {
            let run = api(harness, &format!("/api/v2/runs/{run_id}")).await;
            let over = !matches!(
                run["state"].as_str(),
                Some("pending" | "running" | "awaiting_approval")
            );
            over.then_some(run)
        },
    )
    .await
}

/// A GET through the router with the API token: status, headers and the body as text.
async fn get_raw(harness: &Harness, path: &str) -> (StatusCode, HeaderMap, String) {
    let request = Request::get(path)
        .header("authorization", format!("Bearer {API_TOKEN}"))
        .body(Body::empty())
        .unwrap();
    let response = harness.router.clone().oneshot(request).await.unwrap();
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    (
        parts.status,
        parts.headers,
        String::from_utf8(bytes.to_vec()).unwrap(),
    )
}

/// Every log line of the run, paged through `after` as a follower would.
async fn all_lines(harness: &Harness, run_id: i64) -> Vec<Value> {
    let mut lines = Vec::new();
    let mut after = 0;
    loop {
        let page = api(
            harness,
            &format!("/api/v2/runs/{run_id}/logs?after={after}&limit=5000"),
        )
        .await;
        let got = page["lines"].as_array().unwrap().clone();
        if got.is_empty() {
            return lines;
        }
        after = page["next"].as_i64().unwrap();
        lines.extend(got);
    }
}

fn texts(lines: &[Value]) -> Vec<&str> {
    lines
        .iter()
        .map(|line| line["line"].as_str().unwrap())
        .collect()
}

/// The work tree of the one run under way whose step created `marker`.
async fn waiting_workspace(harness: &Harness, marker: &str) -> PathBuf {
    wait_until(&format!("a step waiting with {marker}"), || async {
        harness
            .workspaces_left()
            .into_iter()
            .map(|run| run.join("repo"))
            .find(|repo| repo.join(marker).exists())
    })
    .await
}

/// A step that says it waits, then waits for the test to create `go` in its work tree.
const WAIT_FOR_GO: &str = "touch waiting; while [ ! -f go ]; do sleep 0.05; done";

async fn release(harness: &Harness) {
    let repo = waiting_workspace(harness, "waiting").await;
    std::fs::write(repo.join("go"), "").unwrap();
}

/// Labels issue `number` as the requester; the task it creates.
async fn label(harness: &Harness, number: i64) -> i64 {
    let delivery = format!("label-{number}");
    let body =
        payloads::labeled_issue_by(number, "Add release notes", "conveyor", REQUESTER, "User");
    let (status, _) = harness.post_signed("issues", &delivery, &body).await;
    assert_eq!(status, 202);
    assert_eq!(harness.request_outcome(&delivery).await, "task_created");
    sqlx::query_scalar("SELECT id FROM tasks WHERE issue_number = $1 ORDER BY id DESC LIMIT 1")
        .bind(number)
        .fetch_one(&harness.pool)
        .await
        .unwrap()
}

async fn comment(harness: &Harness, delivery: &str, issue: i64, login: &str, text: &str) {
    let id = harness
        .github
        .add_user_comment(OWNER, REPO, issue as u64, login, text);
    let body = payloads::issue_comment(issue, false, id, text, login, "User");
    let (status, _) = harness.post_signed("issue_comment", delivery, &body).await;
    assert_eq!(status, 202);
    harness.request_outcome(delivery).await;
}

/// The failure fields of a run as the API shows them.
fn failure_of(run: &Value) -> (&str, Option<&str>, Option<&str>) {
    assert!(
        run["remediation"]
            .as_str()
            .is_some_and(|hint| !hint.is_empty()),
        "a failed run says what to do: {run}"
    );
    (
        run["error_type"]
            .as_str()
            .unwrap_or_else(|| panic!("no error_type: {run}")),
        run["failed_step"].as_str(),
        run["last_successful_step"].as_str(),
    )
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn logs_arrive_while_the_step_runs_and_are_followed_with_after(pool: sqlx::PgPool) {
    let pipeline = format!(
        "pipelines:\n  default:\n    steps:\n      - name: talk\n        run: echo first line; echo second line; {WAIT_FOR_GO}; echo after release\n"
    );
    let harness = with_pipeline(pool, &pipeline, &[]).await;
    let task_id = label(&harness, 7).await;
    let run_id = run_of(&harness, task_id).await;
    let path = format!("/api/v2/runs/{run_id}/logs");
    let early = wait_until("the first lines stored", || async {
        let page = api(&harness, &path).await;
        (page["lines"].as_array().unwrap().len() >= 2).then_some(page)
    })
    .await;
    assert_eq!(early["running"], true, "{early}");
    let lines = early["lines"].as_array().unwrap();
    assert_eq!(texts(lines), ["first line", "second line"], "{early}");
    for line in lines {
        assert_eq!(
            (line["step"].as_str(), line["attempt"].as_i64()),
            (Some("talk"), Some(1))
        );
        assert!(line["ts"].as_str().is_some(), "{line}");
    }
    assert!(lines[0]["seq"].as_i64() < lines[1]["seq"].as_i64());
    let one = api(&harness, &format!("{path}?limit=1")).await;
    assert_eq!(texts(one["lines"].as_array().unwrap()), ["first line"]);
    assert_eq!(one["next"], lines[0]["seq"]);
    let after = early["next"].as_i64().unwrap();
    assert_eq!(after, lines[1]["seq"].as_i64().unwrap());

    release(&harness).await;
    assert_eq!(harness.final_state(task_id).await, TaskState::Succeeded);
    let rest = api(&harness, &format!("{path}?after={after}")).await;
    assert_eq!(
        texts(rest["lines"].as_array().unwrap()),
        ["after release"],
        "{rest}"
    );
    assert_eq!(rest["running"], false);
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn the_run_routes_need_the_token_and_name_an_unknown_run(pool: sqlx::PgPool) {
    let harness = Harness::start_idle(pool).await;
    for path in [
        "/api/v2/runs/1",
        "/api/v2/runs/1/diff",
        "/api/v2/runs/1/logs",
    ] {
        let (status, _) = harness.api("GET", path, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
        let (status, _) = harness.api("GET", path, Some("wrong")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
        let (status, body) = harness.api("GET", path, Some(API_TOKEN)).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(body["message"], "no run 1", "{path}: {body}");
    }
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn a_steps_log_keeps_its_head_and_tail_and_splits_long_lines(pool: sqlx::PgPool) {
    let pipeline = "pipelines:
  default:
    steps:
      - name: chatty
        run: seq 1 8000 | sed 's/^/line /'; printf 'a\\0b\\377c\\n'; head -c 10000 /dev/zero | tr '\\0' x; echo
";
    let harness = with_pipeline(pool, pipeline, &[]).await;
    let task_id = label(&harness, 7).await;
    assert_eq!(harness.final_state(task_id).await, TaskState::Succeeded);
    let run_id = run_of(&harness, task_id).await;
    let lines = all_lines(&harness, run_id).await;
    let text = texts(&lines);
    // 8,004 lines: 8,000 numbered, one with a NUL and a bad byte, 10,000 bytes in 3 pieces.
    assert_eq!(text.len(), 2_000 + 1 + 3_000, "head, the cut and the tail");
    assert_eq!((text[0], text[1_999]), ("line 1", "line 2000"));
    assert_eq!(text[2_000], "… conveyor: 3004 lines of output cut here …");
    assert_eq!(text[2_001], "line 5005");
    assert_eq!(text[4_996], "line 8000");
    assert_eq!(
        text[4_997], "ab\u{fffd}c",
        "NUL dropped, invalid UTF-8 replaced"
    );
    let pieces: Vec<usize> = text[4_998..].iter().map(|piece| piece.len()).collect();
    assert_eq!(pieces, [4096, 4096, 1808]);
    assert!(
        text[4_998..]
            .iter()
            .all(|piece| piece.bytes().all(|b| b == b'x'))
    );
    let run = api(&harness, &format!("/api/v2/runs/{run_id}")).await;
    assert_eq!(run["error_type"], Value::Null, "{run}");
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn a_failed_step_runs_again_alone_up_to_its_retries(pool: sqlx::PgPool) {
    let pipeline = "pipelines:
  default:
    steps:
      - name: prepare
        run: echo ready
      - name: flaky
        retries: 2
        run: n=$(cat .git/tries 2>/dev/null || echo 0); n=$((n+1)); echo $n > .git/tries; echo \"try $n\"; [ $n -ge 3 ]
";
    let harness = with_pipeline(pool, pipeline, &[]).await;
    let task_id = label(&harness, 7).await;
    assert_eq!(harness.final_state(task_id).await, TaskState::Succeeded);
    let run_id = run_of(&harness, task_id).await;
    let run = api(&harness, &format!("/api/v2/runs/{run_id}")).await;
    let steps = run["steps"].as_array().unwrap();
    let attempts: Vec<(&str, i64, i64)> = steps
        .iter()
        .map(|step| {
            (
                step["name"].as_str().unwrap(),
                step["attempts"].as_i64().unwrap(),
                step["exit_code"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(attempts, [("prepare", 1, 0), ("flaky", 3, 0)], "{run}");
    let lines = all_lines(&harness, run_id).await;
    let logged: Vec<(&str, i64, &str)> = lines
        .iter()
        .map(|line| {
            (
                line["step"].as_str().unwrap(),
                line["attempt"].as_i64().unwrap(),
                line["line"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        logged,
        [
            ("prepare", 1, "ready"),
            ("flaky", 1, "try 1"),
            ("flaky", 2, "try 2"),
            ("flaky", 3, "try 3"),
        ]
    );
    let comment = harness.final_comment(7).await;
    assert!(
        comment.body.contains("| `flaky` | ✅ passed (attempt 3) |"),
        "{}",
        comment.body
    );
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn a_verify_step_is_retried_twice_by_default_then_the_run_fails(pool: sqlx::PgPool) {
    let pipeline = "pipelines:
  default:
    steps:
      - name: implement
        run: echo implementing
      - name: verify
        run: echo checking; exit 1
";
    let harness = with_pipeline(pool, pipeline, &[]).await;
    let task_id = label(&harness, 7).await;
    assert_eq!(harness.final_state(task_id).await, TaskState::Failed);
    let run_id = run_of(&harness, task_id).await;
    let run = ended_run(&harness, run_id).await;
    assert_eq!(
        failure_of(&run),
        ("step_failed", Some("verify"), Some("implement"))
    );
    assert!(
        run["remediation"].as_str().unwrap().contains("`verify`"),
        "{run}"
    );
    assert_eq!(run["steps"][1]["attempts"], 3, "{run}");
    let attempts: Vec<i64> = all_lines(&harness, run_id)
        .await
        .iter()
        .filter(|line| line["step"] == "verify")
        .map(|line| line["attempt"].as_i64().unwrap())
        .collect();
    assert_eq!(attempts, [1, 2, 3]);
    let comment = harness.final_comment(7).await;
    for expected in [
        "| `verify` | ❌ exit 1 (attempt 3) |",
        "**Error type:** `step_failed` · **failed step:** `verify` · **last successful step:** `implement`",
        &format!("/runs/{run_id})"),
        &format!("/api/v2/runs/{run_id}/logs)"),
    ] {
        assert!(
            comment.body.contains(expected),
            "{expected}: {}",
            comment.body
        );
    }
}

/// A pipeline whose work waits at an approval before a step that would outlast the budget.
const BUDGETED: &str = "pipelines:
  default:
    timeout_minutes: 1
    steps:
      - name: implement
        run: echo notes > NOTES.md
      - name: review
        approval:
          message: Check the notes
      - name: slow
        run: echo slow starts; sleep 30
";

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn the_budget_counts_every_pass_and_stops_the_step_it_runs_out_in(pool: sqlx::PgPool) {
    let harness = with_pipeline(pool, BUDGETED, &[]).await;
    let task_id = label(&harness, 7).await;
    harness.reach(task_id, TaskState::AwaitingApproval).await;
    let run_id = run_of(&harness, task_id).await;
    let parked = api(&harness, &format!("/api/v2/runs/{run_id}")).await;
    assert!(parked["time_used_ms"].as_i64().unwrap() > 0, "{parked}");
    // As if the first pass had taken 58 of the run's 60 seconds: the pass after the approval
    // has two left, however long the run waited at the gate.
    sqlx::query("UPDATE runs SET time_used_ms = 58000 WHERE id = $1")
        .bind(run_id)
        .execute(&harness.pool)
        .await
        .unwrap();
    let started = Instant::now();
    comment(&harness, "approve-7", 7, WRITER, "/conveyor approve").await;
    assert_eq!(harness.final_state(task_id).await, TaskState::Failed);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    let run = ended_run(&harness, run_id).await;
    assert_eq!(
        failure_of(&run),
        ("budget_exceeded", Some("slow"), Some("review"))
    );
    assert!(run["time_used_ms"].as_i64().unwrap() >= 59_000, "{run}");
    let slow: Vec<String> = all_lines(&harness, run_id)
        .await
        .iter()
        .filter(|line| line["step"] == "slow")
        .map(|line| line["line"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        slow,
        [
            "slow starts",
            "conveyor: step stopped: the run's time budget ran out"
        ]
    );
    let comment = harness.final_comment(7).await;
    assert!(
        comment.body.contains("1-minute budget in step `slow`"),
        "{}",
        comment.body
    );
}

/// One test takes a minute: a step's timeout cannot be set below one.
#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn a_step_past_its_timeout_is_a_step_timeout(pool: sqlx::PgPool) {
    let pipeline = "pipelines:
  default:
    steps:
      - name: implement
        run: echo ok
      - name: hang
        timeout_minutes: 1
        run: sleep 300
";
    let harness = with_pipeline(pool, pipeline, &[]).await;
    let task_id = label(&harness, 7).await;
    let run_id = run_of(&harness, task_id).await;
    let run = wait_until_within("the step timed out", Duration::from_secs(90), || async {
        let run = api(&harness, &format!("/api/v2/runs/{run_id}")).await;
        (run["state"] == "failed").then_some(run)
    })
    .await;
    assert_eq!(
        failure_of(&run),
        ("step_timeout", Some("hang"), Some("implement"))
    );
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn a_broken_pipeline_file_is_definition_invalid(pool: sqlx::PgPool) {
    let harness = with_pipeline(pool, "pipelines: [broken\n", &[]).await;
    let task_id = label(&harness, 7).await;
    assert_eq!(harness.final_state(task_id).await, TaskState::Failed);
    let run = ended_run(&harness, run_of(&harness, task_id).await).await;
    assert_eq!(failure_of(&run), ("definition_invalid", None, None));
    assert!(
        run["remediation"]
            .as_str()
            .unwrap()
            .contains("conveyor.yml")
    );
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn a_repository_gone_from_the_remote_is_clone_failed(pool: sqlx::PgPool) {
    let pipeline = format!(
        "pipelines:\n  default:\n    steps:\n      - name: a\n        run: {WAIT_FOR_GO}\n"
    );
    let harness = with_pipeline(pool, &pipeline, &[]).await;
    let first = label(&harness, 7).await;
    release(&harness).await;
    assert_eq!(harness.final_state(first).await, TaskState::Succeeded);
    std::fs::remove_dir_all(harness.github.git_dir(OWNER, REPO)).unwrap();
    let task_id = label(&harness, 8).await;
    let run = ended_run(&harness, run_of(&harness, task_id).await).await;
    assert_eq!(failure_of(&run), ("clone_failed", None, None));
    let states: Vec<String> = sqlx::query_scalar(
        "SELECT detail->>'to' FROM task_events WHERE run_id = $1 AND kind = 'run' ORDER BY id",
    )
    .bind(run["id"].as_i64().unwrap())
    .fetch_all(&harness.pool)
    .await
    .unwrap();
    assert_eq!(states, ["pending", "failed"], "no step ever ran");
    harness.reach(task_id, TaskState::Scheduled).await;
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn a_push_the_remote_refuses_is_push_rejected(pool: sqlx::PgPool) {
    let pipeline = "pipelines:\n  default:\n    steps:\n      - name: write\n        run: echo notes > NOTES.md\n";
    let harness = with_pipeline(pool, pipeline, &[]).await;
    let hook = harness
        .github
        .git_dir(OWNER, REPO)
        .join("hooks/pre-receive");
    std::fs::create_dir_all(hook.parent().unwrap()).unwrap();
    std::fs::write(
        &hook,
        "#!/bin/sh\necho 'protected branch: pushes are refused' >&2\nexit 1\n",
    )
    .unwrap();
    std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let task_id = label(&harness, 7).await;
    let run = ended_run(&harness, run_of(&harness, task_id).await).await;
    assert_eq!(failure_of(&run), ("push_rejected", None, Some("write")));
    assert!(
        run["failure"].as_str().unwrap().contains("git push failed"),
        "{run}"
    );
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn changing_a_protected_path_is_protected_path(pool: sqlx::PgPool) {
    let pipeline = "pipelines:\n  default:\n    steps:\n      - name: write\n        run: mkdir -p .github/workflows && echo x > .github/workflows/ci.yml\n";
    let harness = with_pipeline(pool, pipeline, &[]).await;
    let task_id = label(&harness, 7).await;
    assert_eq!(harness.final_state(task_id).await, TaskState::Failed);
    let run = ended_run(&harness, run_of(&harness, task_id).await).await;
    assert_eq!(failure_of(&run), ("protected_path", None, Some("write")));
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn github_refusing_conveyors_token_is_github_error(pool: sqlx::PgPool) {
    let pipeline = format!(
        "pipelines:\n  default:\n    steps:\n      - name: write\n        run: echo notes > NOTES.md; {WAIT_FOR_GO}\n"
    );
    let harness = with_pipeline(pool, &pipeline, &[]).await;
    // Tokens that need replacing at every use: the push asks GitHub for a new one.
    harness.github.set_token_ttl(Duration::from_secs(240));
    let task_id = label(&harness, 7).await;
    waiting_workspace(&harness, "waiting").await;
    harness.settled().await;
    harness.github.inject(
        "POST",
        "/app/installations/*/access_tokens",
        vec![Injected::status(403).with_message("This installation has been suspended"); 5],
    );
    release(&harness).await;
    let run = ended_run(&harness, run_of(&harness, task_id).await).await;
    assert_eq!(failure_of(&run), ("github_error", None, Some("write")));
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn a_cancel_while_a_step_runs_is_cancelled(pool: sqlx::PgPool) {
    let pipeline = format!(
        "pipelines:\n  default:\n    steps:\n      - name: a\n        run: {WAIT_FOR_GO}\n"
    );
    let harness = with_pipeline(pool, &pipeline, &[]).await;
    let task_id = label(&harness, 7).await;
    waiting_workspace(&harness, "waiting").await;
    let (status, body) = harness
        .api(
            "POST",
            &format!("/api/v2/tasks/{task_id}/cancel"),
            Some(API_TOKEN),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(harness.final_state(task_id).await, TaskState::Cancelled);
    let run_id = run_of(&harness, task_id).await;
    let run = wait_until("the cancel recorded", || async {
        let run = api(&harness, &format!("/api/v2/runs/{run_id}")).await;
        run["error_type"].is_string().then_some(run)
    })
    .await;
    assert_eq!(failure_of(&run).0, "cancelled");
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn a_rejection_at_the_gate_is_rejected(pool: sqlx::PgPool) {
    let harness = with_pipeline(pool, BUDGETED, &[]).await;
    let task_id = label(&harness, 7).await;
    harness.reach(task_id, TaskState::AwaitingApproval).await;
    comment(
        &harness,
        "reject-7",
        7,
        WRITER,
        "/conveyor reject not like this",
    )
    .await;
    assert_eq!(harness.final_state(task_id).await, TaskState::Failed);
    let run = ended_run(&harness, run_of(&harness, task_id).await).await;
    assert_eq!(failure_of(&run), ("rejected", None, Some("implement")));
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn a_worker_that_dies_mid_step_leaves_an_interrupted_run(pool: sqlx::PgPool) {
    let pipeline = format!(
        "pipelines:\n  default:\n    steps:\n      - name: a\n        run: {WAIT_FOR_GO}\n"
    );
    let mut harness = with_pipeline(pool, &pipeline, &[]).await;
    let task_id = label(&harness, 7).await;
    let run_id = run_of(&harness, task_id).await;
    waiting_workspace(&harness, "waiting").await;
    harness.restart().await;
    let run = ended_run(&harness, run_id).await;
    assert_eq!(run["state"], "interrupted", "{run}");
    assert_eq!(failure_of(&run).0, "interrupted");
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn the_diff_and_the_files_changed_are_served_with_their_sizes(pool: sqlx::PgPool) {
    let pipeline = "pipelines:
  default:
    steps:
      - name: change
        run: printf 'one\\ntwo\\nthree\\n' > NOTES.md; rm README.md; printf '\\0\\1\\2' > blob.bin; seq 1 200000 > big.txt
";
    let harness = with_pipeline(pool, pipeline, &[]).await;
    let task_id = label(&harness, 7).await;
    assert_eq!(harness.final_state(task_id).await, TaskState::Succeeded);
    harness.settled().await;
    let run_id = run_of(&harness, task_id).await;
    let run = api(&harness, &format!("/api/v2/runs/{run_id}")).await;
    let files: Vec<(&str, &str, Option<u64>, Option<u64>)> = run["files"]
        .as_array()
        .unwrap_or_else(|| panic!("no files: {run}"))
        .iter()
        .map(|file| {
            (
                file["path"].as_str().unwrap(),
                file["status"]["kind"].as_str().unwrap(),
                file["lines_added"].as_u64(),
                file["lines_deleted"].as_u64(),
            )
        })
        .collect();
    assert_eq!(
        files,
        [
            ("NOTES.md", "added", Some(3), Some(0)),
            ("README.md", "deleted", Some(0), Some(1)),
            ("big.txt", "added", Some(200_000), Some(0)),
            ("blob.bin", "added", None, None),
        ],
        "{run}"
    );
    let full = run["diff"]["bytes"].as_u64().unwrap();
    assert!(full > 1024 * 1024, "{run}");
    assert_eq!(run["diff"]["truncated"], true);
    let (status, headers, diff) = get_raw(&harness, &format!("/api/v2/runs/{run_id}/diff")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "text/x-diff; charset=utf-8");
    assert_eq!(headers["x-conveyor-diff-bytes"], full.to_string().as_str());
    assert_eq!(headers["x-conveyor-diff-truncated"], "true");
    assert!(
        diff.len() <= 1024 * 1024 && diff.ends_with('\n'),
        "{}",
        diff.len()
    );
    assert!(
        diff.starts_with("diff --git a/NOTES.md b/NOTES.md"),
        "{}",
        &diff[..200]
    );
    assert!(diff.contains("+three\n") && diff.contains("-# widgets\n"));

    let check = harness
        .github
        .check_runs(OWNER, REPO)
        .pop()
        .expect("a check run");
    let details = check.details_url.unwrap();
    assert!(details.ends_with(&format!("/runs/{run_id}")), "{details}");
    assert!(
        check
            .output_summary
            .unwrap()
            .contains(&format!("/api/v2/runs/{run_id}/diff")),
        "the check run links the diff"
    );
    let comment = harness.final_comment(7).await;
    assert!(
        comment
            .body
            .contains(&format!("/api/v2/runs/{run_id}/diff)")),
        "{}",
        comment.body
    );
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn a_failed_run_keeps_what_its_work_tree_held(pool: sqlx::PgPool) {
    let pipeline = "pipelines:\n  default:\n    steps:\n      - name: half\n        run: echo draft > NOTES.md; exit 2\n";
    let harness = with_pipeline(pool, pipeline, &[]).await;
    let task_id = label(&harness, 7).await;
    assert_eq!(harness.final_state(task_id).await, TaskState::Failed);
    let run_id = run_of(&harness, task_id).await;
    let (status, _, diff) = get_raw(&harness, &format!("/api/v2/runs/{run_id}/diff")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(diff.contains("+draft\n"), "{diff}");
    let run = api(&harness, &format!("/api/v2/runs/{run_id}")).await;
    assert_eq!(run["files"][0]["path"], "NOTES.md", "{run}");
    assert_eq!(run["diff"]["truncated"], false);
    assert_eq!(failure_of(&run), ("step_failed", Some("half"), None));
}

/// The run table Postgres enforces is the one `RunState::next` gives, pair for pair.
#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn postgres_enforces_the_run_table_the_engine_has(pool: sqlx::PgPool) {
    use conveyor::engine::RunState;
    let stored: Vec<(RunState, RunState)> = sqlx::query_as(
        "SELECT from_state, to_state FROM run_transitions ORDER BY from_state, to_state",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let mut table: Vec<(RunState, RunState)> = RunState::ALL
        .into_iter()
        .flat_map(|from| from.next().iter().map(move |to| (from, *to)))
        .collect();
    let order = |state: &RunState| RunState::ALL.iter().position(|s| s == state);
    let mut stored_sorted = stored.clone();
    stored_sorted.sort_by_key(|(from, to)| (order(from), order(to)));
    table.sort_by_key(|(from, to)| (order(from), order(to)));
    assert_eq!(stored_sorted, table);
}

/// Whatever statement tries it, a change the table does not allow is refused and the run
/// keeps its state; an allowed one is recorded with the step it stopped at.
#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn an_invalid_run_transition_is_refused_and_changes_nothing(pool: sqlx::PgPool) {
    let task = support::feed::a_task(&pool).await;
    let run: i64 = sqlx::query_scalar(
        "INSERT INTO runs (task_id, attempt, pipeline) VALUES ($1, 1, 'default') RETURNING id",
    )
    .bind(task)
    .fetch_one(&pool)
    .await
    .unwrap();
    let skipped = sqlx::query("UPDATE runs SET state = 'completed' WHERE id = $1")
        .bind(run)
        .execute(&pool)
        .await
        .expect_err("a pending run has not run: it cannot have completed");
    assert!(
        skipped
            .to_string()
            .contains("invalid run transition from pending to completed"),
        "{skipped}"
    );
    for to in ["running", "completed"] {
        sqlx::query("UPDATE runs SET state = $2::run_state WHERE id = $1")
            .bind(run)
            .bind(to)
            .execute(&pool)
            .await
            .unwrap();
    }
    for to in ["pending", "running", "failed", "awaiting_approval"] {
        let err = sqlx::query("UPDATE runs SET state = $2::run_state WHERE id = $1")
            .bind(run)
            .bind(to)
            .execute(&pool)
            .await
            .expect_err(to);
        let err = err.as_database_error().expect("a database error");
        assert_eq!(err.code().as_deref(), Some("23514"), "{err}");
        assert!(
            err.message()
                .contains(&format!("invalid run transition from completed to {to}")),
            "{err}"
        );
    }
    let (state, events): (String, i64) = sqlx::query_as(
        "SELECT r.state::text, (SELECT count(*) FROM task_events e WHERE e.run_id = r.id AND e.kind = 'run')
         FROM runs r WHERE r.id = $1",
    )
    .bind(run)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(state, "completed");
    assert_eq!(
        events, 3,
        "made pending, started, completed; nothing refused"
    );
}
