//! `POST /api/v2/tasks/{id}/retry` and `POST /api/v2/runs/{id}/approve|reject`: the rules
//! the GitHub loop's commands and buttons go by (`engine::retries`, `engine::approvals`),
//! asked by the operator token. The operator is recorded as such (`api:operator`), and
//! GitHub is told of a decision as it is of one taken there: the gate's check run and the
//! status comment.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::AppState;
use super::board::{ApiError, OPERATOR, check, correlation_id, task_or_404};
use crate::authz::{Actor, Permission};
use crate::engine::approvals::{self, Decided, GateRefusal, Verdict};
use crate::engine::retries::{self, Retry, RetryRefused};
use crate::engine::{runs, tasks};
use crate::github::{GitHubApp, InstallationClient};
use crate::pipeline::definition::Settings;
use crate::requests::forge::OnGitHub;

/// Longest reason taken with a decision: it is shown on GitHub.
const MAX_REASON_CHARS: usize = 2_000;

/// The body of `POST /api/v2/tasks/{id}/retry`, which may be left out.
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryTask {
    /// Start again at this step of the failed run, on the work its steps had left; the
    /// step must declare `retryable: true`. Without it the whole pipeline runs again.
    step: Option<String>,
}

/// The body of `POST /api/v2/runs/{id}/approve|reject`, which may be left out.
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GateDecision {
    /// Why, shown with the decision on GitHub.
    reason: Option<String>,
}

/// The operator as the rules see a person: never a bot, and with every permission.
const OPERATOR_ACTOR: Actor<'static> = Actor {
    login: OPERATOR,
    is_bot: false,
};

fn app(state: &AppState) -> Result<&Arc<GitHubApp>, ApiError> {
    if state.credentials.app().is_none() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "github_unavailable",
            "no GitHub App is configured (GITHUB_APP_ID, or set-up at /setup): Conveyor cannot ask GitHub what this needs",
        ));
    }
    Ok(&state.github)
}

/// A failure of the database or of GitHub while a rule was decided: nothing was kept.
fn failed(err: anyhow::Error) -> ApiError {
    if let Some(err) = err.downcast_ref::<sqlx::Error>() {
        tracing::error!(error = %err, "API query failed");
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "database unavailable",
        );
    }
    tracing::warn!(error = %format!("{err:#}"), "GitHub could not be asked");
    ApiError::new(
        StatusCode::BAD_GATEWAY,
        "github_unavailable",
        "GitHub could not be asked what this needs; nothing changed, try again",
    )
}

/// `POST /api/v2/tasks/{id}/retry` `{"step"?}`: the task again, as a new task linked to
/// it (`retry_of`). 201 with the new task and its `Location`; 409 `retry_refused` when the
/// rule refuses it.
pub async fn retry_task(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    body: Result<Option<Json<RetryTask>>, JsonRejection>,
) -> Result<Response, ApiError> {
    check(&state, &headers)?;
    let body = body?.map(|Json(body)| body).unwrap_or_default();
    let github = app(&state)?;
    let mut tx = state.pool.begin().await?;
    let task = tasks::get(&mut *tx, id).await?.ok_or_else(|| {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no task {id}"))
    })?;
    let client = github.installation(task.installation_id, &task.repo_name);
    let ask = Retry {
        task_id: id,
        step: body.step.as_deref(),
        by: OPERATOR,
        default_branch: None,
        correlation_id: Some(correlation_id(&headers)),
    };
    let retried = retries::retry(&mut tx, &ask, &forge(&client, &task))
        .await
        .map_err(failed)?
        .map_err(retry_refused)?;
    tx.commit().await?;
    let shown = task_or_404(&state, retried.task_id).await?;
    Ok((
        StatusCode::CREATED,
        [(
            header::LOCATION,
            format!("/api/v2/tasks/{}", retried.task_id),
        )],
        Json(shown),
    )
        .into_response())
}

fn forge<'a>(client: &'a InstallationClient, task: &'a tasks::Task) -> OnGitHub<'a> {
    OnGitHub {
        client,
        owner: &task.repo_owner,
        name: &task.repo_name,
    }
}

fn retry_refused(refused: RetryRefused) -> ApiError {
    let message = refused.to_string();
    match refused {
        RetryRefused::NoTask(_) => ApiError::new(StatusCode::NOT_FOUND, "not_found", message),
        _ => ApiError::new(StatusCode::CONFLICT, "retry_refused", message),
    }
}

/// `POST /api/v2/runs/{id}/approve` `{"reason"?}`.
pub async fn approve_run(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    body: Result<Option<Json<GateDecision>>, JsonRejection>,
) -> Result<Response, ApiError> {
    decide(state, headers, id, true, body).await
}

/// `POST /api/v2/runs/{id}/reject` `{"reason"?}`: the run fails with the rejection as its
/// reason.
pub async fn reject_run(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    body: Result<Option<Json<GateDecision>>, JsonRejection>,
) -> Result<Response, ApiError> {
    decide(state, headers, id, false, body).await
}

/// The operator's verdict on the gate run `id` waits at. 200 with the run and its
/// `Location`; 409 `not_awaiting_approval` when it waits at none.
async fn decide(
    state: AppState,
    headers: HeaderMap,
    id: i64,
    approve: bool,
    body: Result<Option<Json<GateDecision>>, JsonRejection>,
) -> Result<Response, ApiError> {
    check(&state, &headers)?;
    let body = body?.map(|Json(body)| body).unwrap_or_default();
    let reason = body
        .reason
        .as_deref()
        .map(str::trim)
        .filter(|r| !r.is_empty());
    if reason.is_some_and(|reason| reason.chars().count() > MAX_REASON_CHARS) {
        return Err(ApiError::invalid(format!(
            "reason must be at most {MAX_REASON_CHARS} characters"
        )));
    }
    let github = app(&state)?;
    let mut tx = state.pool.begin().await?;
    let run = runs::get(&mut *tx, id)
        .await?
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no run {id}")))?;
    let task = tasks::get(&mut *tx, run.task_id)
        .await?
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no run {id}")))?;
    let client = github.installation(task.installation_id, &task.repo_name);
    let verdict = Verdict {
        task_id: task.id,
        run_id: Some(id),
        approve,
        actor: OPERATOR_ACTOR,
        // The token is the operator's: who runs Conveyor may do all it does.
        permission: Permission::Admin,
        reason,
        seen_sha: None,
        source: "api",
    };
    // Who may decide is pinned in the gate; the rest of the settings says which GitHub bots
    // are heard, and the operator is no GitHub account.
    let settings = Settings::default();
    let decided = approvals::decide(&mut tx, &verdict, &settings, &forge(&client, &task))
        .await
        .map_err(failed)?;
    // A refusal is in the audit trail too.
    tx.commit().await?;
    if let Decided::Refused(why) = decided {
        return Err(gate_refused(why));
    }
    let shown = super::api::run_view(&state, id).await?;
    Ok((
        [(header::LOCATION, format!("/api/v2/runs/{id}"))],
        Json(shown),
    )
        .into_response())
}

fn gate_refused(why: GateRefusal) -> ApiError {
    let message = why.to_string();
    match why {
        GateRefusal::NotWaiting => {
            ApiError::new(StatusCode::CONFLICT, "not_awaiting_approval", message)
        }
        GateRefusal::NotAllowed(_) => {
            ApiError::new(StatusCode::FORBIDDEN, "approval_forbidden", message)
        }
        GateRefusal::OtherCommit { .. } | GateRefusal::BranchMoved { .. } => {
            ApiError::new(StatusCode::CONFLICT, "approval_stale", message)
        }
    }
}
