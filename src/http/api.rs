//! `/api/v2`: the operator API. Every route needs `Authorization: Bearer <CONVEYOR_API_TOKEN>`;
//! without a token configured the API is off.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderName, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use serde_json::json;
use subtle::ConstantTimeEq;

use super::{AppState, Refusal};
use crate::engine::logs::LogLine;
use crate::engine::{RunState, artifacts, logs, runs};
use crate::pipeline::changes::ChangedFile;
use crate::report::Outcome;
use crate::webhook::inbox::{self, DeliveryRow, Replay};

const MAX_PAGE: i64 = 500;

/// Every route needs the token, reads too: they show private repositories' names, issue
/// titles and failures.
pub(super) fn authorize(state: &AppState, headers: &HeaderMap) -> Result<(), Refusal> {
    let presented = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    operator_token(state, presented)
}

/// Whether `presented` is the operator token, however it came (a header, the sign-in form).
pub(super) fn operator_token(state: &AppState, presented: &str) -> Result<(), Refusal> {
    let Some(expected) = &state.api_token else {
        return Err(Refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            "the API is off: set CONVEYOR_API_TOKEN to enable it, then send `Authorization: Bearer <token>`".into(),
        ));
    };
    if bool::from(
        presented
            .as_bytes()
            .ct_eq(expected.expose_secret().as_bytes()),
    ) {
        Ok(())
    } else {
        Err(Refusal(
            StatusCode::UNAUTHORIZED,
            "missing or wrong bearer token".into(),
        ))
    }
}

/// A page of `GET /api/v2/deliveries`.
#[derive(Serialize, JsonSchema)]
pub struct DeliveryPage {
    deliveries: Vec<DeliveryRow>,
    /// The `before` of the following page; `null` on the last one.
    next: Option<i64>,
}

#[derive(Deserialize, schemars::JsonSchema)]
pub struct DeliveryQuery {
    outcome: Option<String>,
    /// Continue after this page: the `next` value of the previous page.
    before: Option<i64>,
    limit: Option<i64>,
}

pub async fn list_deliveries(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<DeliveryQuery>,
) -> Result<Response, Refusal> {
    authorize(&state, &headers)?;
    let limit = query.limit.unwrap_or(100).clamp(1, MAX_PAGE);
    let rows = inbox::list(&state.pool, query.outcome.as_deref(), query.before, limit)
        .await
        .map_err(database)?;
    let next = (rows.len() as i64 == limit)
        .then(|| rows.last().map(|r| r.seq))
        .flatten();
    let page = DeliveryPage {
        deliveries: rows,
        next,
    };
    Ok(Json(page).into_response())
}

pub async fn replay_delivery(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, Refusal> {
    authorize(&state, &headers)?;
    match inbox::replay(&state.pool, &id).await.map_err(database)? {
        Replay::Queued => {
            state.deliveries_added.notify_one();
            tracing::info!(delivery_id = %id, "delivery replay requested");
            Ok((StatusCode::ACCEPTED, Json(json!({ "replaying": id }))).into_response())
        }
        Replay::NotFound => Err(Refusal(StatusCode::NOT_FOUND, format!("no delivery {id}"))),
        Replay::PayloadGone => Err(Refusal(
            StatusCode::CONFLICT,
            format!("delivery {id} can no longer be replayed: retention deleted its payload"),
        )),
    }
}

fn database(err: sqlx::Error) -> Refusal {
    tracing::error!(error = %err, "API query failed");
    Refusal(
        StatusCode::SERVICE_UNAVAILABLE,
        "database unavailable".into(),
    )
}

/// Lines of a run's log served in one page at most.
const MAX_LOG_PAGE: i64 = 5_000;

async fn run_or_404(state: &AppState, id: i64) -> Result<runs::Run, Refusal> {
    runs::get(&state.pool, id)
        .await
        .map_err(database)?
        .ok_or_else(|| Refusal(StatusCode::NOT_FOUND, format!("no run {id}")))
}

/// `GET /api/v2/runs/{id}`: the run, its steps (attempts, durations), why it failed if it
/// did, what it changed, the run it retries, and where its diff, logs and page are.
pub async fn get_run(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<i64>,
) -> Result<Response, Refusal> {
    authorize(&state, &headers)?;
    Ok(Json(run_view(&state, id).await?).into_response())
}

/// A run as `GET /api/v2/runs/{id}` shows it.
#[derive(Serialize, JsonSchema)]
pub struct RunView {
    id: i64,
    task: i64,
    attempt: i32,
    /// The run before this one: the task's previous attempt, or the last run of the task
    /// this one's task retries.
    previous_run: Option<i64>,
    /// The run this one retries (of the task its task runs again), for a retry's first run.
    retry_of: Option<i64>,
    state: RunState,
    running: bool,
    pipeline: String,
    started_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
    time_used_ms: i64,
    base_sha: Option<String>,
    head_sha: Option<String>,
    branch: Option<String>,
    pull_request_url: Option<String>,
    definition_sha: Option<String>,
    /// How the run ended: `{kind, detail}`, as its reports tell it.
    #[schemars(with = "Option<serde_json::Value>")]
    outcome: Option<Outcome>,
    failure: Option<String>,
    /// Why the run did not succeed, as a stable snake_case type.
    error_type: Option<String>,
    failed_step: Option<String>,
    last_successful_step: Option<String>,
    remediation: Option<String>,
    questions: Option<String>,
    clarification: Clarification,
    steps: Vec<StepView>,
    /// What the run changed, once it reached an approval or published.
    files: Option<Vec<ChangedFile>>,
    diff: Option<DiffView>,
    links: RunLinks,
}

#[derive(Serialize, JsonSchema)]
struct Clarification {
    rounds: i32,
    answers: usize,
}

#[derive(Serialize, JsonSchema)]
struct StepView {
    position: i32,
    name: String,
    command: String,
    exit_code: Option<i32>,
    timed_out: bool,
    attempts: i32,
    duration_ms: i64,
}

#[derive(Serialize, JsonSchema)]
struct DiffView {
    /// The diff's full size.
    bytes: i64,
    /// Whether only its first part is kept.
    truncated: bool,
    base_sha: String,
    head_sha: String,
}

#[derive(Serialize, JsonSchema)]
struct RunLinks {
    #[serde(rename = "self")]
    itself: String,
    page: String,
    diff: String,
    logs: String,
    task: String,
}

/// Run `id` as the API shows it.
pub(super) async fn run_view(state: &AppState, id: i64) -> Result<RunView, Refusal> {
    let run = run_or_404(state, id).await?;
    let steps = runs::steps(&state.pool, id)
        .await
        .map_err(database)?
        .into_iter()
        .map(|step| StepView {
            position: step.position,
            name: step.name,
            command: step.command,
            exit_code: step.exit_code,
            timed_out: step.timed_out,
            attempts: step.attempts,
            duration_ms: step.duration_ms,
        })
        .collect();
    let artifacts = artifacts::get(&state.pool, id).await.map_err(database)?;
    let failed = run.error_type.is_some();
    // A task's first run follows another task's last only when that task retries it.
    let retry_of = (run.attempt == 1).then_some(run.previous_run_id).flatten();
    let (files, diff) = match artifacts {
        Some(artifacts) => (
            Some(artifacts.files.0),
            Some(DiffView {
                bytes: artifacts.diff_bytes,
                truncated: artifacts.truncated,
                base_sha: artifacts.base_sha,
                head_sha: artifacts.head_sha,
            }),
        ),
        None => (None, None),
    };
    Ok(RunView {
        id: run.id,
        task: run.task_id,
        attempt: run.attempt,
        previous_run: run.previous_run_id,
        retry_of,
        state: run.state,
        running: run.state.is_live(),
        pipeline: run.pipeline,
        started_at: run.started_at,
        finished_at: run.finished_at,
        time_used_ms: run.time_used_ms,
        base_sha: run.base_sha,
        head_sha: run.head_sha,
        branch: run.branch,
        pull_request_url: run.pull_request_url,
        definition_sha: run.definition_sha,
        outcome: run.outcome.map(|outcome| outcome.0),
        failure: run.failure,
        error_type: run.error_type,
        failed_step: run.failed_step,
        last_successful_step: failed.then_some(run.last_successful_step).flatten(),
        remediation: run.remediation,
        questions: run.questions,
        clarification: Clarification {
            rounds: run.clarification_rounds,
            answers: run.answers.len(),
        },
        steps,
        files,
        diff,
        links: RunLinks {
            itself: format!("/api/v2/runs/{id}"),
            page: format!("/runs/{id}"),
            diff: format!("/api/v2/runs/{id}/diff"),
            logs: format!("/api/v2/runs/{id}/logs"),
            task: format!("/api/v2/tasks/{}", run.task_id),
        },
    })
}

/// `GET /api/v2/runs/{id}/diff`: the diff against the run's base as `text/x-diff`, its full
/// size in `X-Conveyor-Diff-Bytes` and `X-Conveyor-Diff-Truncated: true` when the body
/// holds only its first part.
pub async fn get_run_diff(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<i64>,
) -> Result<Response, Refusal> {
    authorize(&state, &headers)?;
    run_or_404(&state, id).await?;
    let artifacts = artifacts::get(&state.pool, id)
        .await
        .map_err(database)?
        .ok_or_else(|| {
            Refusal(
                StatusCode::NOT_FOUND,
                format!(
                    "run {id} has no diff: it has not reached an approval step or published yet"
                ),
            )
        })?;
    Ok((
        [
            (
                header::CONTENT_TYPE,
                "text/x-diff; charset=utf-8".to_owned(),
            ),
            (
                HeaderName::from_static("x-conveyor-diff-bytes"),
                artifacts.diff_bytes.to_string(),
            ),
            (
                HeaderName::from_static("x-conveyor-diff-truncated"),
                artifacts.truncated.to_string(),
            ),
        ],
        artifacts.diff,
    )
        .into_response())
}

/// A page of `GET /api/v2/runs/{id}/logs`.
#[derive(Serialize, JsonSchema)]
pub struct LogPage {
    run: i64,
    state: RunState,
    /// Whether more lines may come.
    running: bool,
    lines: Vec<LogLine>,
    /// The `after` of the following page.
    next: i64,
}

#[derive(Deserialize, schemars::JsonSchema)]
pub struct LogQuery {
    /// Lines after this `seq`: the `next` of the previous page.
    after: Option<i64>,
    limit: Option<i64>,
}

/// `GET /api/v2/runs/{id}/logs?after=SEQ&limit=N`: the run's log lines in order; `next` is
/// the `after` of the following page, and `running` says whether more may come.
pub async fn get_run_logs(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Query(query): Query<LogQuery>,
) -> Result<Response, Refusal> {
    authorize(&state, &headers)?;
    // Read before the lines: a run seen still running after its last lines were read has
    // no line the follower will miss by asking again.
    let run = run_or_404(&state, id).await?;
    let after = query.after.unwrap_or(0).max(0);
    let limit = query.limit.unwrap_or(1_000).clamp(1, MAX_LOG_PAGE);
    let lines = logs::page(&state.pool, id, after, limit)
        .await
        .map_err(database)?;
    let next = lines.last().map_or(after, |line| line.seq);
    let page = LogPage {
        run: id,
        state: run.state,
        running: run.state.is_live(),
        lines,
        next,
    };
    Ok(Json(page).into_response())
}
