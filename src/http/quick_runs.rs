//! `/api/v2/quick-runs…`: a prompt run once on a repository, off the board, and promoted
//! onto it when it is worth keeping.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::AppState;
use super::board::{ApiError, OPERATOR, check, correlation_id, task_base, task_or_404};
use crate::engine::quick_runs::{self, PromoteError, QuickRun};

/// The body of `POST /api/v2/quick-runs`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewQuickRun {
    repository: String,
    prompt: String,
    pipeline: Option<String>,
    /// The branch its run starts from, when Conveyor has not seen the repository's default
    /// branch yet.
    base_branch: Option<String>,
}

impl From<PromoteError> for ApiError {
    fn from(err: PromoteError) -> Self {
        let message = err.to_string();
        match err {
            PromoteError::NotFound(_) => Self::new(StatusCode::NOT_FOUND, "not_found", message),
            PromoteError::AlreadyPromoted(_) => {
                Self::new(StatusCode::CONFLICT, "already_promoted", message)
            }
            PromoteError::Db(err) => err.into(),
        }
    }
}

async fn quick_run_or_404(state: &AppState, id: i64) -> Result<QuickRun, ApiError> {
    quick_runs::get(&state.pool, id).await?.ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no quick run {id}"),
        )
    })
}

/// `POST /api/v2/quick-runs`: queued at once; 201 with the quick run and its `Location`.
pub async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<NewQuickRun>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    check(&state, &headers)?;
    let Json(body) = body?;
    if body.prompt.trim().is_empty() {
        return Err(ApiError::invalid("prompt must not be empty"));
    }
    let mut tx = state.pool.begin().await?;
    let mut base = task_base(&mut tx, &body.repository, body.base_branch).await?;
    base.correlation_id = Some(correlation_id(&headers));
    if let Some(pipeline) = body.pipeline {
        base.pipeline = pipeline;
    }
    let id = quick_runs::create(&mut tx, &base, &body.prompt, OPERATOR).await?;
    tx.commit().await?;
    let shown = quick_run_or_404(&state, id).await?;
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, format!("/api/v2/quick-runs/{id}"))],
        Json(shown),
    )
        .into_response())
}

/// `GET /api/v2/quick-runs/{id}`.
pub async fn get(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<i64>,
) -> Result<Response, ApiError> {
    check(&state, &headers)?;
    Ok(Json(quick_run_or_404(&state, id).await?).into_response())
}

/// `POST /api/v2/quick-runs/{id}/promote`: its task goes on the board (source
/// `promoted_quick_action`); 201 with the task as the board shows it.
pub async fn promote(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<i64>,
) -> Result<Response, ApiError> {
    check(&state, &headers)?;
    let mut tx = state.pool.begin().await?;
    let task_id = quick_runs::promote(&mut tx, id, OPERATOR).await?;
    tx.commit().await?;
    let task = task_or_404(&state, task_id).await?;
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, format!("/api/v2/tasks/{task_id}"))],
        Json(task),
    )
        .into_response())
}
