//! `/api/v2/import/prd…`: a markdown task list previewed as a plan, or committed as tasks,
//! their dependencies and an import job, all or nothing.

use std::num::NonZeroUsize;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::AppState;
use super::board::{ApiError, OPERATOR, check, correlation_id, task_base};
use crate::engine::imports::{self, Commit};
use crate::engine::parents::FailurePolicy;
use crate::engine::prd::{self, Granularity, Plan, PlanOptions, PrdError};
use crate::engine::tasks::NewTask;

/// The body of both `POST /api/v2/import/prd/preview` and `…/commit`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportPrd {
    repository: String,
    markdown: String,
    granularity: Option<Granularity>,
    /// Tasks start ready rather than in the backlog (commit only).
    auto_ready: Option<bool>,
    max_parallelism_hint: Option<NonZeroUsize>,
    /// What a failed sub-task does to its siblings (commit only; `stop` when absent).
    failure_policy: Option<FailurePolicy>,
    /// The branch the tasks' runs start from, when Conveyor has not seen the repository's
    /// default branch yet.
    base_branch: Option<String>,
}

impl ImportPrd {
    fn options(&self) -> PlanOptions {
        PlanOptions {
            granularity: self.granularity.unwrap_or_default(),
            max_parallelism_hint: self.max_parallelism_hint,
        }
    }
}

impl From<PrdError> for ApiError {
    fn from(err: PrdError) -> Self {
        let mut extra = json!({ "line": err.line() });
        if let PrdError::Cycle { keys } = &err {
            extra["keys"] = json!(keys);
        }
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            err.code(),
            err.to_string(),
        )
        .with(extra)
    }
}

/// Checks the request and plans its task list: the repository must be one the tasks could
/// be made for, and the list must hold together.
async fn plan(
    state: &AppState,
    headers: &HeaderMap,
    body: Result<Json<ImportPrd>, axum::extract::rejection::JsonRejection>,
) -> Result<(ImportPrd, NewTask, Plan), ApiError> {
    check(state, headers)?;
    let Json(body) = body?;
    let mut conn = state.pool.acquire().await?;
    let mut base = task_base(&mut conn, &body.repository, body.base_branch.clone()).await?;
    base.correlation_id = Some(correlation_id(headers));
    let plan = prd::plan(&body.markdown, body.options())?;
    Ok((body, base, plan))
}

/// `POST /api/v2/import/prd/preview`: the plan (tasks, edges, roots, waves); nothing is
/// made.
pub async fn preview(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<ImportPrd>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let (_, _, plan) = plan(&state, &headers, body).await?;
    Ok(Json(plan).into_response())
}

/// `POST /api/v2/import/prd/commit`: every task of the plan, in one transaction; 201 with
/// the import job and its `Location`.
pub async fn commit(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<ImportPrd>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let (body, base, plan) = plan(&state, &headers, body).await?;
    let how = Commit {
        base: &base,
        granularity: body.options().granularity,
        auto_ready: body.auto_ready.unwrap_or(false),
        by: OPERATOR,
        max_parallelism: body
            .max_parallelism_hint
            .map(|n| i32::try_from(n.get()).unwrap_or(i32::MAX)),
        failure_policy: body.failure_policy.unwrap_or_default(),
    };
    let mut tx = state.pool.begin().await?;
    let job = imports::commit(&mut tx, &plan, &how).await?;
    tx.commit().await?;
    let mut shown = serde_json::to_value(&job).expect("an import job serialises");
    shown["waves"] = json!(plan.waves);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, format!("/api/v2/import/{}", job.id))],
        Json(shown),
    )
        .into_response())
}

/// `GET /api/v2/import/{job_id}`.
pub async fn get_job(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<i64>,
) -> Result<Response, ApiError> {
    check(&state, &headers)?;
    let job = imports::get(&state.pool, id).await?.ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no import job {id}"),
        )
    })?;
    Ok(Json(job).into_response())
}
