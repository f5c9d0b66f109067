//! `/api/v2/tasks…` and `/api/v2/state-machine`: the board's API. Every change goes
//! through `engine::board` and `engine::tasks`, as the GitHub loop's do. Errors are
//! `{"code", "message"}` with a stable snake_case code.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use sqlx::PgConnection;

use super::api::authorize;
use super::{AppState, Refusal};
use crate::engine::blockers::{self, BlockerError};
use crate::engine::board::{self, BoardState, MoveError};
use crate::engine::board_view::{self, BoardTask, Filter};
use crate::engine::parents::FailurePolicy;
use crate::engine::repositories::{self, ProjectState};
use crate::engine::tasks::{self, BoardFields, NewTask};
use crate::engine::{RunState, TaskState};

const MAX_PAGE: i64 = 200;
/// Tasks shown in each column of `GET /api/v2/tasks/board`; the count covers them all.
const COLUMN_TASKS: i64 = 50;
/// Who the API acts as, in the audit trail: the operator token.
pub(super) const OPERATOR: &str = "api:operator";

/// A refused API request: its status, a stable code, a sentence, and fields that help.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    extra: Value,
}

impl ApiError {
    pub(super) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            extra: json!({}),
        }
    }

    pub(super) fn with(mut self, extra: Value) -> Self {
        self.extra = extra;
        self
    }

    pub(super) fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({ "code": self.code, "message": self.message });
        if let (Some(body), Value::Object(extra)) = (body.as_object_mut(), self.extra) {
            body.extend(extra);
        }
        (self.status, Json(body)).into_response()
    }
}

/// A JSON body the handler's type does not take: 422 with serde's reason.
impl From<axum::extract::rejection::JsonRejection> for ApiError {
    fn from(rejection: axum::extract::rejection::JsonRejection) -> Self {
        Self::invalid(rejection.body_text())
    }
}

/// A query string the handler's type does not take: 422 with serde's reason.
impl From<axum::extract::rejection::QueryRejection> for ApiError {
    fn from(rejection: axum::extract::rejection::QueryRejection) -> Self {
        Self::invalid(rejection.body_text())
    }
}

impl From<Refusal> for ApiError {
    fn from(Refusal(status, message): Refusal) -> Self {
        Self::new(status, Refusal::code(status), message)
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(err: sqlx::Error) -> Self {
        tracing::error!(error = %err, "API query failed");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "database unavailable",
        )
    }
}

impl From<MoveError> for ApiError {
    fn from(err: MoveError) -> Self {
        let message = err.to_string();
        match err {
            MoveError::NotFound(_) => Self::new(StatusCode::NOT_FOUND, "not_found", message),
            MoveError::InvalidTransition { from, to, allowed } => {
                Self::new(StatusCode::CONFLICT, "invalid_transition", message)
                    .with(json!({ "from": from, "to": to, "allowed": allowed }))
            }
            MoveError::ClaimOnly => Self::new(StatusCode::CONFLICT, "claim_only", message),
            MoveError::RunInProgress => Self::new(StatusCode::CONFLICT, "run_in_progress", message),
            MoveError::BlockedBy { blockers, .. } => {
                Self::new(StatusCode::CONFLICT, "blocked_by_dependencies", message)
                    .with(json!({ "blocked_by": blockers }))
            }
            MoveError::LiveTwin(twin) => {
                Self::new(StatusCode::CONFLICT, "live_twin", message).with(json!({ "task": twin }))
            }
            MoveError::Parent(_) => Self::new(StatusCode::CONFLICT, "parent_task", message),
            MoveError::NotForceable(from) => {
                Self::new(StatusCode::CONFLICT, "not_forceable", message)
                    .with(json!({ "from": from }))
            }
            MoveError::Engine(tasks::EngineError::Db(err)) => err.into(),
            MoveError::Engine(tasks::EngineError::Transition(err)) => {
                Self::new(StatusCode::CONFLICT, "invalid_transition", err.to_string())
            }
        }
    }
}

impl From<BlockerError> for ApiError {
    fn from(err: BlockerError) -> Self {
        let message = err.to_string();
        match err {
            BlockerError::NotFound(_) => Self::new(StatusCode::NOT_FOUND, "not_found", message),
            BlockerError::Cycle { .. } => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "dependency_cycle",
                message,
            ),
            BlockerError::NotQueued(_) => Self::new(StatusCode::CONFLICT, "task_started", message),
            BlockerError::Db(err) => {
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

pub(super) fn check(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    authorize(state, headers).map_err(ApiError::from)
}

/// The body of `POST /api/v2/tasks`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTask {
    repository: String,
    title: String,
    task_type: String,
    priority: i32,
    description: Option<String>,
    pipeline: Option<String>,
    labels: Option<Vec<String>>,
    assignee: Option<String>,
    acceptance_criteria: Option<Vec<String>>,
    context_files: Option<Vec<String>>,
    blocked_by: Option<Vec<i64>>,
    parent_id: Option<i64>,
    /// For a parent: how many of its children may run at once (no limit when absent).
    max_parallelism: Option<std::num::NonZeroU16>,
    /// For a parent: what a failed child does to the rest (`stop` when absent).
    failure_policy: Option<FailurePolicy>,
    /// The branch its runs start from, when Conveyor has not seen the repository's default
    /// branch in a webhook yet.
    base_branch: Option<String>,
}

const MAX_TITLE_CHARS: usize = 256;

/// What every task made through the API for `repository` (`owner/name`) starts from: the
/// installation that reaches it, its name as GitHub spells it, the branch its runs start
/// from (`base_branch`, else the default branch Conveyor last saw), the `default` pipeline
/// and the operator as the one who asked. Refused when the App is not installed there or no branch is known.
pub(super) async fn task_base(
    conn: &mut PgConnection,
    repository: &str,
    base_branch: Option<String>,
) -> Result<NewTask, ApiError> {
    let (owner, name) = repository
        .split_once('/')
        .filter(|(owner, name)| !owner.is_empty() && !name.is_empty() && !name.contains('/'))
        .ok_or_else(|| ApiError::invalid("repository must be `owner/name`"))?;
    let Some(installed) = repositories::installed(&mut *conn, owner, name).await? else {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown_repository",
            format!("Conveyor is not installed on {repository}: install the App on it first"),
        ));
    };
    let Some(default_branch) = base_branch.or(installed.default_branch) else {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "base_branch_unknown",
            format!("Conveyor has not seen {repository}'s default branch yet: give `base_branch`"),
        ));
    };
    Ok(NewTask {
        installation_id: installed.installation_id,
        repo_owner: installed.owner,
        repo_name: installed.name,
        default_branch,
        pipeline: "default".to_owned(),
        requested_by: Some(OPERATOR.to_owned()),
        ..NewTask::default()
    })
}

/// `POST /api/v2/tasks`: a task in the backlog, waiting for a move to ready. 201 with the
/// task and its `Location`.
pub async fn create_task(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<CreateTask>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    check(&state, &headers)?;
    let Json(body) = body?;
    let title = body.title.trim();
    if title.is_empty() || title.chars().count() > MAX_TITLE_CHARS {
        return Err(ApiError::invalid(format!(
            "title must be 1 to {MAX_TITLE_CHARS} characters"
        )));
    }
    if body.task_type.trim().is_empty() {
        return Err(ApiError::invalid("task_type must not be empty"));
    }
    let mut tx = state.pool.begin().await?;
    let base = task_base(&mut tx, &body.repository, body.base_branch.clone()).await?;
    if let Some(parent) = body.parent_id {
        let Some(parent) = tasks::get(&mut *tx, parent).await? else {
            return Err(ApiError::invalid(format!("no parent task {parent}")));
        };
        // The claim limits a parent's children under its repository's lock.
        if (&parent.repo_owner, &parent.repo_name) != (&base.repo_owner, &base.repo_name) {
            return Err(ApiError::invalid(format!(
                "parent task {} is in {}/{}: a child lives in its parent's repository",
                parent.id, parent.repo_owner, parent.repo_name
            )));
        }
        if !matches!(parent.state, TaskState::Queued | TaskState::Held) {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "task_started",
                format!(
                    "parent task {} has started or ended: only a task in the backlog or ready gains children",
                    parent.id
                ),
            ));
        }
    }
    let task = NewTask {
        title: title.to_owned(),
        body: body.description.unwrap_or_default(),
        pipeline: body.pipeline.unwrap_or(base.pipeline),
        board: BoardFields {
            state: BoardState::Backlog,
            source: "manual",
            task_type: body.task_type,
            priority: body.priority,
            labels: body.labels.unwrap_or_default(),
            assignee: body.assignee,
            acceptance_criteria: body.acceptance_criteria.unwrap_or_default(),
            context_files: body.context_files.unwrap_or_default(),
            parent_id: body.parent_id,
            max_parallelism: body.max_parallelism.map(|n| i32::from(n.get())),
            failure_policy: body.failure_policy.unwrap_or_default(),
        },
        correlation_id: Some(correlation_id(&headers)),
        ..base
    };
    let id = tasks::create(&mut tx, &task)
        .await?
        .expect("a task without an issue or a delivery has no twin");
    for blocker in body.blocked_by.unwrap_or_default() {
        blockers::add(&mut tx, id, blocker).await?;
    }
    tx.commit().await?;
    let shown = task_or_404(&state, id).await?;
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, format!("/api/v2/tasks/{id}"))],
        Json(shown),
    )
        .into_response())
}

/// The id that ties what a request starts to the request: the client's `X-Request-Id`
/// when it sent a usable one, else a new one.
pub(super) fn correlation_id(headers: &HeaderMap) -> String {
    headers
        .get("x-request-id")
        .and_then(|value| value.to_str().ok())
        .map(str::trim)
        .filter(|id| !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_graphic()))
        .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned)
}

pub(super) async fn task_or_404(state: &AppState, id: i64) -> Result<BoardTask, ApiError> {
    board_view::get(&state.pool, id, &state.github_web_url)
        .await?
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no task {id}")))
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct ListQuery {
    state: Option<String>,
    repo: Option<String>,
    label: Option<String>,
    #[serde(rename = "type")]
    task_type: Option<String>,
    /// The `next` of the previous page.
    cursor: Option<i64>,
    limit: Option<i64>,
}

impl ListQuery {
    fn filter(&self) -> Result<Filter, ApiError> {
        let state = match &self.state {
            Some(name) => Some(BoardState::parse(name).ok_or_else(|| {
                ApiError::invalid(format!("unknown state `{name}`"))
                    .with(json!({ "states": BoardState::ALL }))
            })?),
            None => None,
        };
        Ok(Filter {
            state,
            repository: self.repo.clone(),
            label: self.label.clone(),
            task_type: self.task_type.clone(),
            ..Filter::default()
        })
    }
}

/// `GET /api/v2/tasks?state=&repo=&label=&type=&cursor=&limit=`: newest first; `next` is
/// the cursor of the following page.
pub async fn list_tasks(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<ListQuery>,
) -> Result<Response, ApiError> {
    check(&state, &headers)?;
    let filter = query.filter()?;
    let limit = query.limit.unwrap_or(50).clamp(1, MAX_PAGE);
    let tasks = board_view::list(
        &state.pool,
        &filter,
        query.cursor,
        limit,
        &state.github_web_url,
    )
    .await?;
    let next = (tasks.len() as i64 == limit)
        .then(|| tasks.last().map(|task| task.id))
        .flatten();
    Ok(Json(json!({ "tasks": tasks, "next": next })).into_response())
}

/// `GET /api/v2/tasks/board`: a column per state, in the board's order, each with its
/// count and its newest tasks.
pub async fn board(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<ListQuery>,
) -> Result<Response, ApiError> {
    check(&state, &headers)?;
    let filter = query.filter()?;
    let counts = board_view::counts(&state.pool, &filter).await?;
    let mut columns = Vec::with_capacity(counts.len());
    for (column, count) in counts {
        let filter = Filter {
            state: Some(column),
            ..filter.clone()
        };
        let tasks = if count == 0 {
            Vec::new()
        } else {
            board_view::list(
                &state.pool,
                &filter,
                None,
                COLUMN_TASKS,
                &state.github_web_url,
            )
            .await?
        };
        columns.push(json!({ "state": column, "count": count, "tasks": tasks }));
    }
    Ok(Json(json!({ "columns": columns })).into_response())
}

/// `GET /api/v2/tasks/{id}`: the task as the board shows it, with its queue state, its
/// runs (with the gate a run waits or waited at), why it waits, and its audit trail.
pub async fn get_task(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<i64>,
) -> Result<Response, ApiError> {
    check(&state, &headers)?;
    let task = task_or_404(&state, id).await?;
    let waiting = crate::engine::deferral::reason(&state.pool, id).await?;
    let runs = crate::engine::runs::for_task(&state.pool, id).await?;
    let runs: Vec<_> = runs
        .iter()
        .map(|run| {
            json!({
                "id": run.id,
                "attempt": run.attempt,
                "state": run.state,
                "running": run.state.is_live(),
                "pipeline": run.pipeline,
                "failure": run.failure,
                "error_type": run.error_type,
                "outcome": run.outcome.as_ref().map(|outcome| &outcome.0),
                "branch": run.branch,
                "head_sha": run.head_sha,
                "pull_request_url": run.pull_request_url,
                "previous_run": run.previous_run_id,
                "approval": run.approval.as_ref().map(|gate| &gate.0),
            })
        })
        .collect();
    let trail: Vec<_> = crate::engine::events::for_task(&state.pool, id)
        .await?
        .into_iter()
        .map(|event| json!({ "kind": event.kind, "run": event.run_id, "detail": event.detail }))
        .collect();
    let mut shown = serde_json::to_value(&task).expect("a task serialises");
    shown["waiting"] = json!(waiting);
    shown["run_details"] = json!(runs);
    shown["events"] = json!(trail);
    Ok(Json(shown).into_response())
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Transition {
    to: String,
    reason: Option<String>,
}

/// `POST /api/v2/tasks/{id}/transition` `{"to", "reason"?}`.
pub async fn transition(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    body: Result<Json<Transition>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    check(&state, &headers)?;
    let Json(body) = body?;
    let to = BoardState::parse(&body.to).ok_or_else(|| {
        ApiError::invalid(format!("unknown state `{}`", body.to))
            .with(json!({ "states": BoardState::ALL }))
    })?;
    move_and_show(&state, id, to, body.reason.as_deref()).await
}

async fn move_and_show(
    state: &AppState,
    id: i64,
    to: BoardState,
    reason: Option<&str>,
) -> Result<Response, ApiError> {
    let mut tx = state.pool.begin().await?;
    let shown = board::move_task(&mut tx, id, to, reason, OPERATOR, state.board_rules).await?;
    tx.commit().await?;
    let status = if shown == to {
        StatusCode::OK
    } else {
        // A running task's cancel: its worker stops it.
        StatusCode::ACCEPTED
    };
    Ok((status, Json(task_or_404(state, id).await?)).into_response())
}

/// The body of `POST /api/v2/tasks/{id}/run`, optional.
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunTask {
    /// Queue the task although it is blocked; the operator and `reason` are recorded.
    #[serde(default)]
    force: bool,
    /// Why: required with `force`.
    reason: Option<String>,
}

/// `POST /api/v2/tasks/{id}/run` (`{"force": true, "reason"}` optional): ready the task for
/// the scheduler (from the backlog, blocked, or done to run again); forced, queue it even
/// while it is blocked, with the operator and the reason in its audit trail.
pub async fn run_task(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    body: Result<Option<Json<RunTask>>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    check(&state, &headers)?;
    let body = body?.map(|Json(body)| body).unwrap_or_default();
    let mut started = if body.force {
        let reason = body
            .reason
            .as_deref()
            .map(str::trim)
            .filter(|reason| !reason.is_empty())
            .ok_or_else(|| ApiError::invalid("a forced run needs a `reason`"))?;
        let mut tx = state.pool.begin().await?;
        board::force_run(&mut tx, id, reason, OPERATOR).await?;
        tx.commit().await?;
        Json(task_or_404(&state, id).await?).into_response()
    } else {
        move_and_show(&state, id, BoardState::Ready, body.reason.as_deref()).await?
    };
    // What a repeat of this request (same Idempotency-Key) is pointed at.
    if let Ok(location) = format!("/api/v2/tasks/{id}").parse() {
        started.headers_mut().insert(header::LOCATION, location);
    }
    Ok(started)
}

/// `POST /api/v2/tasks/{id}/cancel`: a waiting task is cancelled at once (200); a running
/// one is stopped by its worker within seconds (202).
pub async fn cancel_task(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<i64>,
) -> Result<Response, ApiError> {
    check(&state, &headers)?;
    move_and_show(&state, id, BoardState::Cancelled, None).await
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewDependency {
    /// The task this one waits for.
    #[serde(alias = "blocker")]
    blocked_by: i64,
}

/// `POST /api/v2/tasks/{id}/dependencies` `{"blocked_by": <task id>}`: the task waits until
/// that one is done or cancelled; a cycle is refused.
pub async fn add_dependency(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    body: Result<Json<NewDependency>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    check(&state, &headers)?;
    let Json(body) = body?;
    let mut tx = state.pool.begin().await?;
    blockers::add(&mut tx, id, body.blocked_by).await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(task_or_404(&state, id).await?)).into_response())
}

/// `DELETE /api/v2/tasks/{id}/dependencies/{dep_id}`.
pub async fn remove_dependency(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((id, blocker)): Path<(i64, i64)>,
) -> Result<Response, ApiError> {
    check(&state, &headers)?;
    let mut tx = state.pool.begin().await?;
    if !blockers::remove(&mut tx, id, blocker).await? {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("task {id} does not wait for task {blocker}"),
        ));
    }
    // Its last blocker gone, a ready task may be claimed now.
    tasks::wake_workers(&mut *tx).await?;
    tx.commit().await?;
    Ok(Json(task_or_404(&state, id).await?).into_response())
}

/// `GET /api/v2/state-machine`: both transition tables, each state with the states it may
/// go to.
pub async fn state_machine(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    check(&state, &headers)?;
    let task = table(&BoardState::ALL, BoardState::as_str, |from| {
        from.next(state.board_rules)
    });
    let run = table(&RunState::ALL, RunState::as_str, RunState::next);
    let queue = table(&TaskState::ALL, TaskState::as_str, |from| {
        TaskState::ALL
            .into_iter()
            .filter(|to| from.can_become(*to))
            .collect::<Vec<_>>()
    });
    let project = table(&ProjectState::ALL, ProjectState::as_str, ProjectState::next);
    Ok(
        Json(json!({ "task": task, "run": run, "queue": queue, "project": project }))
            .into_response(),
    )
}

/// A transition table as JSON: each state's name with the states it may become.
fn table<S: Copy, N: serde::Serialize>(
    states: &[S],
    name: fn(S) -> &'static str,
    next: impl Fn(S) -> N,
) -> serde_json::Map<String, Value> {
    states
        .iter()
        .map(|&from| (name(from).to_owned(), json!(next(from))))
        .collect()
}
