//! The axum router: webhook intake, health, metrics, the API and its event feed (and the
//! operator's pages, `pages`, outside the API document); each API route is
//! added with its OpenAPI description (`openapi`).

mod api;
mod board;
mod body_budget;
mod events;
mod health;
mod idempotency;
mod import;
mod openapi;
mod pages;
mod projects;
mod quick_runs;
mod runs;
mod setup;
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

use crate::engine::quick_runs as engine_quick_runs;
use crate::engine::{board_view, event_feed, imports, prd, repositories};
use crate::github::{Credentials, GitHubApp};
use crate::requests::lookup::Lookups;
use crate::setup::SetupSettings;
use crate::webhook::writer::InboxWriter;
use openapi::{Documented, Guard, Operation};
use tower_http::trace::TraceLayer;

pub use body_budget::BodyBudget;

/// GitHub caps webhook payloads at 25 MB.
pub const MAX_WEBHOOK_BYTES: usize = 25 * 1024 * 1024;

#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    /// The App and the webhook secret, from the environment or set-up.
    pub credentials: Credentials,
    /// What `/` and `/setup` need of the configuration.
    pub setup: Arc<SetupSettings>,
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
    pub event_wakeups: event_feed::Wakeups,
    /// The board's table in force (`FEATURE_PRD_AUTO_APPROVE_REVIEW`).
    pub board_rules: crate::engine::board::Rules,
    /// What the API asks GitHub when a rule needs it (a retry's pull request, where a gate's
    /// branch is), as the App in `credentials`, once there is one.
    pub github: Arc<GitHubApp>,
    /// Permissions GitHub gave lately, for the pages' signed-in people (shared with the
    /// request workers).
    pub lookups: Arc<Lookups>,
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
    let (routes, _) = documented();
    routes
        .merge(setup_pages())
        .merge(pages::routes())
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            idempotency::guard,
        ))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// The operator's HTML pages for set-up: not part of the API, so not in its document.
fn setup_pages() -> Router<AppState> {
    Router::new()
        .route("/", get(setup::status))
        .route("/setup", get(setup::start))
        .route("/setup/callback", get(setup::callback))
}

/// Where the document is served; it describes itself too.
const OPENAPI_PATH: &str = "/api/v2/openapi.json";

/// Every route, with the document that describes them all.
pub fn documented() -> (Router<AppState>, serde_json::Value) {
    use Guard::{Open, Signature, Token};
    let mut api = Documented::<AppState>::new();
    let task = Some(api.schema::<board_view::BoardTask>());
    let event = api.schema::<events::FeedPage>();
    let project = Some(api.schema::<repositories::ProjectStatus>());
    let plan = Some(api.schema::<prd::Plan>());
    let job = Some(api.schema::<imports::ImportJob>());
    let quick_run = Some(api.schema::<engine_quick_runs::QuickRun>());
    let (create_task, transition, dependency, run_task) = (
        api.schema::<board::CreateTask>(),
        api.schema::<board::Transition>(),
        api.schema::<board::NewDependency>(),
        api.schema::<board::RunTask>(),
    );
    let (list_query, feed_query, delivery_query, log_query) = (
        api.schema::<board::ListQuery>(),
        api.schema::<events::FeedQuery>(),
        api.schema::<api::DeliveryQuery>(),
        api.schema::<api::LogQuery>(),
    );
    let (import_prd, new_quick_run) = (
        api.schema::<import::ImportPrd>(),
        api.schema::<quick_runs::NewQuickRun>(),
    );
    let (run, deliveries, log_page) = (
        Some(api.schema::<api::RunView>()),
        Some(api.schema::<api::DeliveryPage>()),
        Some(api.schema::<api::LogPage>()),
    );
    let (retry_task, gate_decision) = (
        api.schema::<runs::RetryTask>(),
        api.schema::<runs::GateDecision>(),
    );
    let mut api = api
        .route(
            "GET",
            "/healthz",
            get(health::healthz),
            Operation::new("Alive", Open).answers(200, "the process answers", None),
        )
        .route(
            "GET",
            "/readyz",
            get(health::readyz),
            Operation::new("Ready: the database answers", Open).answers(200, "ready", None),
        )
        .route(
            "GET",
            "/metrics",
            get(health::metrics),
            Operation::new("Prometheus metrics", Open).answers(200, "text exposition format", None),
        )
        .route(
            "POST",
            "/webhooks/github",
            post(webhook::receive),
            Operation::new(
                "A GitHub webhook delivery, stored before it is acknowledged",
                Signature,
            )
            .answers(202, "stored", None),
        )
        .route(
            "GET",
            "/api/v2/deliveries",
            get(api::list_deliveries),
            Operation::new("Deliveries received, newest first", Token)
                .query(delivery_query)
                .answers(200, "a page of deliveries", deliveries),
        )
        .route(
            "POST",
            "/api/v2/deliveries/{id}/replay",
            post(api::replay_delivery),
            Operation::new("Interpret a delivery again", Token).answers(
                202,
                "queued for interpretation",
                None,
            ),
        )
        .route(
            "POST",
            "/api/v2/tasks",
            post(board::create_task),
            Operation::new("Create a task in the backlog", Token)
                .body(create_task)
                .answers(201, "the task, with its Location", task.clone()),
        )
        .route(
            "GET",
            "/api/v2/tasks",
            get(board::list_tasks),
            Operation::new("Tasks, newest first, filtered and paged by cursor", Token)
                .query(list_query)
                .answers(200, "`{tasks, next}`", None),
        )
        .route(
            "GET",
            "/api/v2/tasks/board",
            get(board::board),
            Operation::new("The board: a column per state with its count", Token).answers(
                200,
                "`{columns: [{state, count, tasks}]}`",
                None,
            ),
        )
        .route(
            "GET",
            "/api/v2/tasks/{id}",
            get(board::get_task),
            Operation::new("A task with its runs, waiting reason and events", Token).answers(
                200,
                "the task",
                task.clone(),
            ),
        )
        .route(
            "POST",
            "/api/v2/tasks/{id}/transition",
            post(board::transition),
            Operation::new("Move a task on the board", Token)
                .body(transition)
                .answers(200, "the task", task.clone()),
        )
        .route(
            "POST",
            "/api/v2/tasks/{id}/run",
            post(board::run_task),
            Operation::new(
                "Make a task ready for the scheduler, or force a blocked one into the queue",
                Token,
            )
            .optional_body(run_task)
            .answers(200, "the task, with its Location", task.clone()),
        )
        .route(
            "POST",
            "/api/v2/tasks/{id}/retry",
            post(runs::retry_task),
            Operation::new(
                "Run a finished task again as a new task linked to it, from a step of its failed run if given",
                Token,
            )
            .optional_body(retry_task)
            .answers(201, "the new task, with its Location", task.clone()),
        )
        .route(
            "POST",
            "/api/v2/tasks/{id}/cancel",
            post(board::cancel_task),
            Operation::new("Cancel a task (a running one stops within seconds)", Token)
                .answers(200, "cancelled", task.clone())
                .answers(202, "its worker is stopping it", task.clone()),
        )
        .route(
            "POST",
            "/api/v2/tasks/{id}/dependencies",
            post(board::add_dependency),
            Operation::new("Make a task wait for another", Token)
                .body(dependency)
                .answers(200, "the task", task.clone()),
        )
        .route(
            "DELETE",
            "/api/v2/tasks/{id}/dependencies/{dep_id}",
            delete(board::remove_dependency),
            Operation::new("Remove a dependency", Token).answers(200, "the task", task.clone()),
        )
        .route(
            "GET",
            "/api/v2/state-machine",
            get(board::state_machine),
            Operation::new(
                "The transition tables of tasks, runs, the queue and projects",
                Token,
            )
            .answers(
                200,
                "`{task, run, queue, project}`: each state with the states it may become",
                None,
            ),
        )
        .route(
            "GET",
            "/api/v2/events",
            get(events::list),
            Operation::new("Events after a cursor, in commit order", Token)
                .query(feed_query.clone())
                .answers(200, "`{events, next}`", Some(event)),
        )
        .route(
            "GET",
            "/api/v2/events/stream",
            get(events::stream),
            Operation::new(
                "Events as Server-Sent Events, resumed with Last-Event-ID",
                Token,
            )
            .query(feed_query.clone())
            .answers(200, "text/event-stream", None),
        )
        .route(
            "GET",
            "/ws",
            get(events::websocket),
            Operation::new(
                "Events over a WebSocket: `{id, type, ts, projectId, payload}`",
                Token,
            )
            .query(feed_query)
            .answers(101, "switching to the WebSocket", None),
        )
        .route(
            "POST",
            "/api/v2/import/prd/preview",
            post(import::preview),
            Operation::new("Plan a PRD task list; nothing is made", Token)
                .body(import_prd.clone())
                .answers(200, "tasks, edges, blocked roots and waves", plan),
        )
        .route(
            "POST",
            "/api/v2/import/prd/commit",
            post(import::commit),
            Operation::new(
                "Make every task of a PRD task list in one transaction",
                Token,
            )
            .body(import_prd)
            .answers(201, "the import job, with its Location", job.clone()),
        )
        .route(
            "GET",
            "/api/v2/import/{job_id}",
            get(import::get_job),
            Operation::new("An import job", Token).answers(200, "the import job", job),
        )
        .route(
            "POST",
            "/api/v2/quick-runs",
            post(quick_runs::create),
            Operation::new("Run a pipeline with a prompt, off the board", Token)
                .body(new_quick_run)
                .answers(201, "the quick run, with its Location", quick_run.clone()),
        )
        .route(
            "GET",
            "/api/v2/quick-runs/{id}",
            get(quick_runs::get),
            Operation::new("A quick run", Token).answers(200, "the quick run", quick_run),
        )
        .route(
            "POST",
            "/api/v2/quick-runs/{id}/promote",
            post(quick_runs::promote),
            Operation::new("Put a quick run's task on the board", Token).answers(
                201,
                "the board task",
                task,
            ),
        )
        .route(
            "GET",
            "/api/v2/runs/{id}",
            get(api::get_run),
            Operation::new(
                "A run: steps, typed failure, changes, the run it retries, links",
                Token,
            )
            .answers(200, "the run", run.clone()),
        )
        .route(
            "POST",
            "/api/v2/runs/{id}/approve",
            post(runs::approve_run),
            Operation::new("Approve the gate a run waits at, as the operator", Token)
                .optional_body(gate_decision.clone())
                .answers(200, "the run, with its Location", run.clone()),
        )
        .route(
            "POST",
            "/api/v2/runs/{id}/reject",
            post(runs::reject_run),
            Operation::new(
                "Reject the gate a run waits at, as the operator: the run fails",
                Token,
            )
            .optional_body(gate_decision)
            .answers(200, "the run, with its Location", run),
        )
        .route(
            "GET",
            "/api/v2/runs/{id}/diff",
            get(api::get_run_diff),
            Operation::new("A run's diff against its base", Token).answers(
                200,
                "the diff (bounded, full size noted)",
                None,
            ),
        )
        .route(
            "GET",
            "/api/v2/runs/{id}/logs",
            get(api::get_run_logs),
            Operation::new("A run's step logs, followed with `after`", Token)
                .query(log_query)
                .answers(200, "timestamped lines", log_page),
        )
        .route(
            "GET",
            "/api/v2/projects/{owner}/{name}/status",
            get(projects::status),
            Operation::new(
                "Where a repository stands: state, queue, running, latest runs",
                Token,
            )
            .answers(200, "the status", project.clone()),
        );
    let controls = [
        (
            "/api/v2/projects/{owner}/{name}/pause",
            "/api/v2/repositories/{owner}/{name}/pause",
            post(projects::pause),
            "Pause claiming: running → paused",
        ),
        (
            "/api/v2/projects/{owner}/{name}/resume",
            "/api/v2/repositories/{owner}/{name}/resume",
            post(projects::resume),
            "Resume claiming: paused or stopped → running",
        ),
        (
            "/api/v2/projects/{owner}/{name}/stop",
            "/api/v2/repositories/{owner}/{name}/stop",
            post(projects::stop),
            "Pause and cancel all its work: → stopping → stopped",
        ),
    ];
    for (path, first_name, handler, summary) in controls {
        for served in [path, first_name] {
            let operation =
                Operation::new(summary, Token).answers(200, "the status", project.clone());
            api = api.route("POST", served, handler.clone(), operation);
        }
    }
    api.finish(OPENAPI_PATH)
}
