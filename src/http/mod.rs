//! The axum router: webhook intake, health, and (later) the API and pages.

mod api;
mod board;
mod body_budget;
mod events;
mod health;
mod idempotency;
mod import;
mod projects;
mod quick_runs;
mod webhook;

use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use secrecy::SecretString;
use serde_json::json;
use sqlx::PgPool;
use tokio::sync::Notify;

use crate::webhook::writer::InboxWriter;
use tower_http::trace::TraceLayer;

pub use body_budget::BodyBudget;

/// GitHub caps webhook payloads at 25 MB.
pub const MAX_WEBHOOK_BYTES: usize = 25 * 1024 * 1024;

#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub webhook_secret: Option<Arc<SecretString>>,
    /// `CONVEYOR_API_TOKEN`; without it the API is off.
    pub api_token: Option<Arc<SecretString>>,
    /// Bounds the memory and time webhook bodies take while they arrive.
    pub webhook_bodies: BodyBudget,
    /// Fired after a delivery is stored, so interpretation starts at once.
    pub deliveries_added: Arc<Notify>,
    /// Stores verified deliveries, many per commit.
    pub inbox: InboxWriter,
    /// Where issues are on the web (`GITHUB_GIT_URL`: GitHub's, or an Enterprise server's).
    pub github_web_url: Arc<str>,
    /// Wakes every follower of the event feed when events are committed.
    pub events_added: Arc<Notify>,
}

/// A refused request: its status and a sentence saying why, as `{"code", "message"}` with
/// the code named after the status.
pub struct Refusal(pub StatusCode, pub String);

impl Refusal {
    /// The stable code of a refusal that has no more specific one.
    pub fn code(status: StatusCode) -> &'static str {
        match status {
            StatusCode::BAD_REQUEST => "bad_request",
            StatusCode::UNAUTHORIZED => "unauthorized",
            StatusCode::FORBIDDEN => "forbidden",
            StatusCode::NOT_FOUND => "not_found",
            StatusCode::CONFLICT => "conflict",
            StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
            StatusCode::UNPROCESSABLE_ENTITY => "invalid_request",
            StatusCode::TOO_MANY_REQUESTS => "too_many_requests",
            StatusCode::SERVICE_UNAVAILABLE => "unavailable",
            _ => "error",
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let body = json!({ "code": Self::code(self.0), "message": self.1 });
        (self.0, Json(body)).into_response()
    }
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .route("/webhooks/github", post(webhook::receive))
        .route("/api/v2/deliveries", get(api::list_deliveries))
        .route("/api/v2/deliveries/{id}/replay", post(api::replay_delivery))
        .route(
            "/api/v2/tasks",
            get(board::list_tasks).post(board::create_task),
        )
        .route("/api/v2/tasks/board", get(board::board))
        .route("/api/v2/tasks/{id}", get(board::get_task))
        .route("/api/v2/tasks/{id}/transition", post(board::transition))
        .route("/api/v2/tasks/{id}/run", post(board::run_task))
        .route(
            "/api/v2/tasks/{id}/dependencies",
            post(board::add_dependency),
        )
        .route(
            "/api/v2/tasks/{id}/dependencies/{dep_id}",
            delete(board::remove_dependency),
        )
        .route("/api/v2/state-machine", get(board::state_machine))
        .route("/api/v2/events", get(events::list))
        .route("/api/v2/events/stream", get(events::stream))
        .route("/ws", get(events::websocket))
        .route("/api/v2/import/prd/preview", post(import::preview))
        .route("/api/v2/import/prd/commit", post(import::commit))
        .route("/api/v2/import/{job_id}", get(import::get_job))
        .route("/api/v2/quick-runs", post(quick_runs::create))
        .route("/api/v2/quick-runs/{id}", get(quick_runs::get))
        .route("/api/v2/quick-runs/{id}/promote", post(quick_runs::promote))
        .route("/api/v2/runs/{id}", get(api::get_run))
        .route("/api/v2/runs/{id}/diff", get(api::get_run_diff))
        .route("/api/v2/runs/{id}/logs", get(api::get_run_logs))
        .route("/api/v2/tasks/{id}/cancel", post(board::cancel_task))
        .route(
            "/api/v2/projects/{owner}/{name}/status",
            get(projects::status),
        )
        .route(
            "/api/v2/projects/{owner}/{name}/pause",
            post(projects::pause),
        )
        .route(
            "/api/v2/projects/{owner}/{name}/resume",
            post(projects::resume),
        )
        .route("/api/v2/projects/{owner}/{name}/stop", post(projects::stop))
        // The same controls under their first names.
        .route(
            "/api/v2/repositories/{owner}/{name}/pause",
            post(projects::pause),
        )
        .route(
            "/api/v2/repositories/{owner}/{name}/resume",
            post(projects::resume),
        )
        .route(
            "/api/v2/repositories/{owner}/{name}/stop",
            post(projects::stop),
        )
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            idempotency::guard,
        ))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}
