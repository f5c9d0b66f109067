//! The axum router: webhook intake, health, and (later) the API and pages.

mod api;
mod body_budget;
mod health;
mod webhook;

use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
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
}

/// A refused request: its status and a sentence saying why, as `{"error": …}`.
pub struct Refusal(pub StatusCode, pub String);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
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
        .route("/api/v2/tasks/{id}", get(api::get_task))
        .route("/api/v2/runs/{id}", get(api::get_run))
        .route("/api/v2/runs/{id}/diff", get(api::get_run_diff))
        .route("/api/v2/runs/{id}/logs", get(api::get_run_logs))
        .route("/api/v2/tasks/{id}/cancel", post(api::cancel_task))
        .route("/api/v2/tasks/{id}/blockers", post(api::add_blocker))
        .route(
            "/api/v2/repositories/{owner}/{name}/stop",
            post(api::stop_repository),
        )
        .route(
            "/api/v2/repositories/{owner}/{name}/pause",
            post(api::pause_repository),
        )
        .route(
            "/api/v2/repositories/{owner}/{name}/resume",
            post(api::resume_repository),
        )
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}
