//! The axum router: webhook intake, health, and (later) the API and pages.

mod health;
mod webhook;

use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};
use secrecy::SecretString;
use sqlx::PgPool;
use tokio::sync::Notify;
use tower_http::trace::TraceLayer;

/// GitHub caps webhook payloads at 25 MB; axum's default body limit is lower.
pub const MAX_WEBHOOK_BYTES: usize = 25 * 1024 * 1024;

#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub webhook_secret: Option<Arc<SecretString>>,
    /// Fired after a delivery is stored, so interpretation starts at once.
    pub deliveries_added: Arc<Notify>,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route(
            "/webhooks/github",
            post(webhook::receive).layer(axum::extract::DefaultBodyLimit::max(MAX_WEBHOOK_BYTES)),
        )
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}
