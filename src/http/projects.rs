//! Projects (repositories, seed 004 §5): `GET /api/v2/projects/{owner}/{repo}/status` and the
//! operator's pause, resume and stop, also under `/api/v2/repositories/…`. The table of
//! changes is `engine::repositories::ProjectState`'s.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};

use super::AppState;
use super::board::{ApiError, check};
use crate::engine::repositories::{self, ProjectStatus, RepositoryError};

impl From<RepositoryError> for ApiError {
    fn from(err: RepositoryError) -> Self {
        let message = err.to_string();
        match err {
            RepositoryError::NotFound(_) => Self::new(StatusCode::NOT_FOUND, "not_found", message),
            RepositoryError::InvalidChange { from, to, .. } => {
                let allowed: Vec<&str> = from.next().iter().map(|s| s.as_str()).collect();
                Self::new(StatusCode::CONFLICT, "invalid_transition", message)
                    .with(json!({ "from": from, "to": to, "allowed": allowed }))
            }
            RepositoryError::Db(err) => {
                tracing::error!(error = %err, "API query failed");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "database unavailable",
                )
            }
        }
    }
}

async fn current(state: &AppState, owner: &str, name: &str) -> Result<ProjectStatus, ApiError> {
    let mut conn = state.pool.acquire().await?;
    Ok(repositories::status(&mut conn, owner, name).await?)
}

/// `GET …/status`: state, queue depth, running and parked work, latest runs.
pub async fn status(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((owner, name)): Path<(String, String)>,
) -> Result<Json<ProjectStatus>, ApiError> {
    check(&state, &headers)?;
    Ok(Json(current(&state, &owner, &name).await?))
}

/// `POST …/pause`: `running → paused`.
pub async fn pause(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((owner, name)): Path<(String, String)>,
) -> Result<Json<ProjectStatus>, ApiError> {
    set_paused(state, headers, owner, name, true).await
}

/// `POST …/resume`: `paused` or `stopped → running`.
pub async fn resume(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((owner, name)): Path<(String, String)>,
) -> Result<Json<ProjectStatus>, ApiError> {
    set_paused(state, headers, owner, name, false).await
}

async fn set_paused(
    state: AppState,
    headers: HeaderMap,
    owner: String,
    name: String,
    paused: bool,
) -> Result<Json<ProjectStatus>, ApiError> {
    check(&state, &headers)?;
    let mut tx = state.pool.begin().await?;
    repositories::set_paused(&mut tx, &owner, &name, paused).await?;
    tx.commit().await?;
    Ok(Json(current(&state, &owner, &name).await?))
}

/// `POST …/stop`: pause and cancel all its live tasks; `stopping` until the running ones
/// have ended, then `stopped`.
pub async fn stop(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((owner, name)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    check(&state, &headers)?;
    let mut tx = state.pool.begin().await?;
    let cancelled = repositories::stop(&mut tx, &owner, &name).await?;
    tx.commit().await?;
    let status = current(&state, &owner, &name).await?;
    let mut shown = serde_json::to_value(&status).unwrap_or_default();
    shown["cancelled"] = json!(cancelled);
    Ok(Json(shown))
}
