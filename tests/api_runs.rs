//! Driving runs through the operator API: `POST /api/v2/tasks/{id}/retry` and
//! `POST /api/v2/runs/{id}/approve|reject` go by the rules of `/conveyor retry` and of the
//! gate's buttons, with the real router, real Postgres, real pipelines and the fake GitHub.

mod support;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use conveyor::engine::{TaskState, events, runs, tasks};
use serde_json::{Value, json};
use support::{
    API_TOKEN, Harness, OWNER, REPO, WORK_SCRIPT, assert_documented, payloads, send_located,
};

const REQUESTER: &str = "alice";

/// `agent` writes the work; `test` fails in the first task and passes in any later one, so
/// that a retry from `test` can only pass on the agent's work kept from the failed run.
const RETRYING: &str = "pipelines:
  default:
    steps:
      - {name: agent, run: 'echo agent | tee -a WORK.md'}
      - {name: test, retryable: true, run: 'grep -qx agent WORK.md && test \"$CONVEYOR_TASK_ID\" -gt 1'}
";

/// A pipeline whose work waits for a person's approval before it is verified and proposed.
const GATED: &str = "pipelines:
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

/// A POST with the operator token, an optional JSON body and an optional Idempotency-Key;
/// the status, the `Location` and the body.
async fn post(
    harness: &Harness,
    path: &str,
    body: Option<&Value>,
    key: Option<&str>,
) -> (StatusCode, Option<String>, Value) {
    let mut request = Request::builder()
        .method("POST")
        .uri(path)
        .header("authorization", format!("Bearer {API_TOKEN}"));
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    let body = match body {
        Some(body) => {
            request = request.header("content-type", "application/json");
            Body::from(body.to_string())
        }
        None => Body::empty(),
    };
    send_located(&harness.router, request.body(body).unwrap()).await
}

async fn retrying(pool: sqlx::PgPool) -> Harness {
    let harness = Harness::start(pool).await;
    harness.add_repo(&[
        (".github/conveyor.yml", RETRYING),
        ("README.md", "# widgets\n"),
    ]);
    harness
        .github
        .set_permission(OWNER, REPO, REQUESTER, "write");
    harness
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn the_api_retries_a_failed_task_by_the_rule_of_the_retry_command(pool: sqlx::PgPool) {
    let harness = retrying(pool).await;
    let failed = harness.label("label-7", 7, "Fix the widget").await;
    assert_eq!(harness.final_state(failed).await, TaskState::Failed);
    harness.settled().await;
    let failed_run = runs::latest(&harness.pool, failed).await.unwrap().unwrap();

    // Refused by policy: a step that does not declare `retryable: true`; nothing starts.
    let path = format!("/api/v2/tasks/{failed}/retry");
    let (status, _, body) = post(&harness, &path, Some(&json!({"step": "agent"})), None).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["code"], "retry_refused", "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("step `agent` does not declare `retryable: true`"),
        "{message}"
    );
    let (status, _, body) = post(&harness, "/api/v2/tasks/999999/retry", None, None).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
    let (status, _, body) = post(&harness, &path, Some(&json!({"stepp": "test"})), None).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(harness.task_ids().await, [failed]);

    // Allowed: a new task linked to the failed one, from `test` on the agent's work.
    let body = json!({"step": "test"});
    let (status, location, created) = post(&harness, &path, Some(&body), Some("retry-1")).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let retry_id = created["id"].as_i64().unwrap();
    assert_ne!(retry_id, failed);
    assert_eq!(location, Some(format!("/api/v2/tasks/{retry_id}")));
    let retry = tasks::get(&harness.pool, retry_id).await.unwrap().unwrap();
    assert_eq!(
        (retry.retry_of, retry.retry_from_run, retry.retry_from_step),
        (Some(failed), Some(failed_run.id), Some(1))
    );
    assert_eq!(retry.requested_by.as_deref(), Some("api:operator"));
    assert_eq!(retry.issue_number, Some(7));

    // The same request again with its key makes nothing more: it points at the first.
    let (status, again, body) = post(&harness, &path, Some(&body), Some("retry-1")).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["code"], "duplicate_request");
    assert_eq!(again, location);
    // Without the key, a task retried already is refused: its retry is the one to retry.
    let (status, _, body) = post(&harness, &path, None, None).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains(&format!("retried already as task {retry_id}")),
        "{body}"
    );
    assert_eq!(harness.task_ids().await, [failed, retry_id]);

    assert_eq!(harness.final_state(retry_id).await, TaskState::Succeeded);
    let run = runs::latest(&harness.pool, retry_id)
        .await
        .unwrap()
        .unwrap();
    let (status, shown) = harness
        .api("GET", &format!("/api/v2/runs/{}", run.id), Some(API_TOKEN))
        .await;
    assert_eq!(status, StatusCode::OK, "{shown}");
    assert_eq!(shown["retry_of"], failed_run.id, "{shown}");
    assert_documented("/api/v2/runs/{id}", "get", 200, &shown);
    let (status, logs) = harness
        .api(
            "GET",
            &format!("/api/v2/runs/{}/logs", failed_run.id),
            Some(API_TOKEN),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{logs}");
    assert!(!logs["lines"].as_array().unwrap().is_empty(), "{logs}");
    assert_documented("/api/v2/runs/{id}/logs", "get", 200, &logs);
    // The earlier run keeps its typed failure.
    let (_, earlier) = harness
        .api(
            "GET",
            &format!("/api/v2/runs/{}", failed_run.id),
            Some(API_TOKEN),
        )
        .await;
    assert_eq!(
        (
            &earlier["state"],
            &earlier["failed_step"],
            &earlier["retry_of"]
        ),
        (&json!("failed"), &json!("test"), &Value::Null),
        "{earlier}"
    );
    assert_eq!(earlier["error_type"], json!(failed_run.error_type));
    assert_documented("/api/v2/runs/{id}", "get", 200, &earlier);
    assert!(earlier["error_type"].is_string(), "{earlier}");

    // GitHub hears of the retry as of one asked for there: its own status comment.
    harness.settled().await;
    let comments = harness.github.comments(OWNER, REPO, 7);
    assert!(
        comments
            .iter()
            .any(|comment| comment.body.contains(&format!("conveyor:task:{retry_id} "))),
        "{comments:#?}"
    );
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn a_task_still_in_the_queue_is_not_retried(pool: sqlx::PgPool) {
    let harness = Harness::start_idle(pool).await;
    harness.add_repo(&[(".github/conveyor.yml", RETRYING)]);
    let queued = harness.label("label-7", 7, "Fix the widget").await;
    let (status, _, body) = post(
        &harness,
        &format!("/api/v2/tasks/{queued}/retry"),
        None,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["code"], "retry_refused");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("is still queued"),
        "{body}"
    );
    assert_eq!(harness.task_ids().await, [queued]);
}

async fn gated(pool: sqlx::PgPool) -> Harness {
    let harness = Harness::start(pool).await;
    harness.add_repo(&[
        (".github/conveyor.yml", GATED),
        ("scripts/do-the-work.sh", WORK_SCRIPT),
        ("README.md", "# widgets\n"),
    ]);
    harness
        .github
        .set_permission(OWNER, REPO, REQUESTER, "write");
    harness
}

/// Labels issue 7 and waits for its run to park at the gate; the task, the run and the id
/// of the gate's check run.
async fn parked(harness: &Harness) -> (i64, i64, u64) {
    let body = payloads::labeled_issue_by(7, "Add release notes", "conveyor", REQUESTER, "User");
    let (status, _) = harness.post_signed("issues", "label-7", &body).await;
    assert_eq!(status, 202);
    assert_eq!(harness.request_outcome("label-7").await, "task_created");
    let task_id = harness.task_ids().await[0];
    harness.reach(task_id, TaskState::AwaitingApproval).await;
    harness.settled().await;
    let run = runs::latest(&harness.pool, task_id).await.unwrap().unwrap();
    let checks = harness.github.check_runs(OWNER, REPO);
    assert_eq!(checks.len(), 1, "{checks:#?}");
    assert_eq!(checks[0].conclusion.as_deref(), Some("action_required"));
    (task_id, run.id, checks[0].id)
}

async fn approvals(harness: &Harness, task_id: i64) -> Vec<Value> {
    events::for_task(&harness.pool, task_id)
        .await
        .unwrap()
        .into_iter()
        .filter(|event| event.kind == "approval")
        .map(|event| event.detail)
        .collect()
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn the_operator_approves_a_parked_run_as_a_click_on_github_would(pool: sqlx::PgPool) {
    let harness = gated(pool).await;
    let (task_id, run_id, check_id) = parked(&harness).await;
    let path = format!("/api/v2/runs/{run_id}/approve");

    let (status, location, shown) = post(&harness, &path, None, Some("approve-1")).await;
    assert_eq!(status, StatusCode::OK, "{shown}");
    assert_eq!(location, Some(format!("/api/v2/runs/{run_id}")));
    assert_eq!(shown["id"], run_id);
    assert_documented("/api/v2/runs/{id}/approve", "post", 200, &shown);
    assert!(
        shown["files"]
            .as_array()
            .is_some_and(|files| !files.is_empty()),
        "{shown}"
    );
    let (status, again, body) = post(&harness, &path, None, Some("approve-1")).await;
    assert_eq!(
        (status, body["code"].as_str(), again.as_deref()),
        (
            StatusCode::CONFLICT,
            Some("duplicate_request"),
            location.as_deref()
        )
    );

    assert_eq!(harness.final_state(task_id).await, TaskState::Succeeded);
    harness.settled().await;
    let gate = harness
        .github
        .check_run_history(OWNER, REPO, check_id)
        .pop()
        .unwrap();
    assert_eq!(gate.conclusion.as_deref(), Some("success"), "{gate:#?}");
    assert!(gate.actions.is_empty(), "no buttons once decided");
    let comment = harness.final_comment(7).await;
    assert!(
        comment.body.contains("approved by @api:operator"),
        "{}",
        comment.body
    );
    assert_eq!(harness.github.pull_requests(OWNER, REPO).len(), 1);

    // The audit trail names the operator, not a GitHub login.
    let decisions = approvals(&harness, task_id).await;
    assert_eq!(decisions.len(), 1, "{decisions:#?}");
    assert_eq!(
        (
            &decisions[0]["by"],
            &decisions[0]["source"],
            &decisions[0]["accepted"]
        ),
        (&json!("api:operator"), &json!("api"), &json!(true))
    );

    // The run waits for nothing any more.
    let (status, _, body) = post(&harness, &path, None, None).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["code"], "not_awaiting_approval");
    let (status, _, body) = post(&harness, "/api/v2/runs/999999/reject", None, None).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn the_operator_rejects_a_parked_run_with_a_reason(pool: sqlx::PgPool) {
    let harness = gated(pool).await;
    let (task_id, run_id, check_id) = parked(&harness).await;
    let path = format!("/api/v2/runs/{run_id}/reject");
    let reason = json!({"reason": "the notes are wrong"});
    let (status, _, shown) = post(&harness, &path, Some(&reason), None).await;
    assert_eq!(status, StatusCode::OK, "{shown}");
    assert_eq!(shown["state"], "failed", "{shown}");
    assert_documented("/api/v2/runs/{id}/reject", "post", 200, &shown);
    assert_eq!(harness.final_state(task_id).await, TaskState::Failed);

    harness.settled().await;
    assert!(harness.github.pull_requests(OWNER, REPO).is_empty());
    let gate = harness
        .github
        .check_run_history(OWNER, REPO, check_id)
        .pop()
        .unwrap();
    assert_eq!(gate.conclusion.as_deref(), Some("failure"));
    assert!(gate.actions.is_empty());
    let status_comment = harness.final_comment(7).await;
    assert!(
        status_comment.body.contains("rejected by @api:operator")
            && status_comment.body.contains("the notes are wrong"),
        "{}",
        status_comment.body
    );
    let decisions = approvals(&harness, task_id).await;
    assert_eq!(decisions[0]["by"], "api:operator");
    assert_eq!(decisions[0]["reason"], "the notes are wrong");
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn a_board_task_retried_keeps_its_card(pool: sqlx::PgPool) {
    let harness = retrying(pool).await;
    harness.install().await;
    let new = json!({
        "repository": "acme/widgets", "title": "Add a changelog", "task_type": "docs",
        "priority": 3, "base_branch": "main", "labels": ["docs"],
        "acceptance_criteria": ["CHANGELOG.md exists"],
    });
    let (status, task) = harness.api_json("POST", "/api/v2/tasks", &new).await;
    assert_eq!(status, StatusCode::CREATED, "{task}");
    let failed = task["id"].as_i64().unwrap();
    let (status, _, body) =
        post(&harness, &format!("/api/v2/tasks/{failed}/run"), None, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(harness.final_state(failed).await, TaskState::Failed);

    let (status, _, retry) = post(
        &harness,
        &format!("/api/v2/tasks/{failed}/retry"),
        None,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{retry}");
    let fields = [
        "source",
        "task_type",
        "priority",
        "labels",
        "acceptance_criteria",
    ];
    for field in fields {
        assert_eq!(retry[field], task[field], "{field}: {retry}");
    }
    assert_eq!(retry["github"], Value::Null, "no issue behind it either");
    let retry_id = retry["id"].as_i64().unwrap();
    assert_eq!(harness.final_state(retry_id).await, TaskState::Succeeded);
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn the_operator_is_refused_as_a_person_would_be(pool: sqlx::PgPool) {
    let harness = gated(pool).await;
    let (task_id, run_id, _) = parked(&harness).await;
    // The branch moved since the run asked: the approval would be of another commit.
    harness.github.push_files(
        OWNER,
        REPO,
        "conveyor/7-add-release-notes",
        &[("NOTES.md", "someone else's text\n")],
        &[],
    );
    let (status, _, body) = post(
        &harness,
        &format!("/api/v2/runs/{run_id}/approve"),
        None,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["code"], "approval_stale");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("the branch moved"),
        "{body}"
    );
    assert_eq!(harness.state(task_id).await, TaskState::AwaitingApproval);
    let decisions = approvals(&harness, task_id).await;
    assert_eq!(
        (&decisions[0]["by"], &decisions[0]["accepted"]),
        (&json!("api:operator"), &json!(false)),
        "the refusal is in the audit trail"
    );

    // A task the operator started is theirs: approving it is self-approval, which the
    // repository does not allow.
    harness.install().await;
    let new = json!({
        "repository": "acme/widgets", "title": "Add a changelog", "task_type": "docs",
        "priority": 1, "base_branch": "main",
    });
    let (status, task) = harness.api_json("POST", "/api/v2/tasks", &new).await;
    assert_eq!(status, StatusCode::CREATED, "{task}");
    let own = task["id"].as_i64().unwrap();
    let (status, _, body) = post(&harness, &format!("/api/v2/tasks/{own}/run"), None, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    harness.reach(own, TaskState::AwaitingApproval).await;
    let own_run = runs::latest(&harness.pool, own).await.unwrap().unwrap();
    let (status, _, body) = post(
        &harness,
        &format!("/api/v2/runs/{}/approve", own_run.id),
        None,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["code"], "approval_forbidden");
    // Rejecting one's own run is stopping it, which the operator may do.
    let (status, _, body) = post(
        &harness,
        &format!("/api/v2/runs/{}/reject", own_run.id),
        None,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(harness.final_state(own).await, TaskState::Failed);
}
