//! The operator's pages, rendered on the server: the board, a task, a run with its live log,
//! and the repositories with their controls. They read and change through the same engine
//! functions as the API; `auth` decides who may see them.

mod access;
mod auth;
mod board;
pub(super) mod layout;
mod repositories;
mod run;
mod task;

use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use maud::html;

use super::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/signin", get(auth::form).post(auth::sign_in))
        .route("/signin/github", get(auth::with_github))
        .route("/auth/callback", get(auth::callback))
        .route("/signout", post(auth::sign_out))
        .route("/tasks", get(board::board))
        .route("/tasks/{id}", get(task::task))
        .route("/runs/{id}", get(run::run))
        .route("/runs/{id}/log/stream", get(run::log_stream))
        .route("/repositories", get(repositories::list))
        .route(
            "/repositories/{owner}/{name}/{action}",
            post(repositories::control),
        )
}

/// A page that cannot be shown, or a form that was refused: its status and a sentence.
#[derive(Debug)]
pub struct PageError {
    status: StatusCode,
    message: String,
}

impl PageError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }
}

impl From<sqlx::Error> for PageError {
    fn from(err: sqlx::Error) -> Self {
        tracing::error!(error = %err, "page query failed");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "The database is unavailable; try again in a moment.",
        )
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let title = self.status.canonical_reason().unwrap_or("Error").to_owned();
        let page = layout::page(
            &title,
            None,
            html! {
                h1 { (title) }
                p role="alert" { (self.message) }
                p { a href="/tasks" { "Back to the board" } }
            },
        );
        (self.status, page).into_response()
    }
}
