//! Retrying a task: the one rule behind `/conveyor retry [STEP]`, a check run's re-run and
//! `POST /api/v2/tasks/{id}/retry`. A retry is a new task linked to the one it runs again
//! (`retry_of`); its first run links to that task's last run (`previous_run_id`), whose
//! steps, artifacts and typed failure stay as they were.

use sqlx::PgConnection;

use super::forge::Forge;
use super::runs;
use super::state::TaskState;
use super::tasks::{self, BoardFields, NewTask, RetryFrom, TASK_COLUMNS, Task};
use crate::outbox::{self, Effect, Place};
use crate::pipeline::definition;

const WHOLE: &str = "`/conveyor retry` without a step runs the whole pipeline again";

/// A retry asked for: the task to run again, from `step` when given.
#[derive(Debug, Clone)]
pub struct Retry<'a> {
    pub task_id: i64,
    pub step: Option<&'a str>,
    /// Who asked: the new task's requester.
    pub by: &'a str,
    /// The repository's default branch as the asker last saw it; the task's otherwise.
    pub default_branch: Option<&'a str>,
    /// The delivery or API request that asked.
    pub correlation_id: Option<String>,
}

/// Why a retry was refused, by policy: nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RetryRefused {
    #[error("no task {0}")]
    NoTask(i64),
    #[error("task {task_id} is still {}; wait for it or `/conveyor cancel` it first", .state.words())]
    Live { task_id: i64, state: TaskState },
    #[error("task {task_id} was retried already as task {retry}; retry that one")]
    Retried { task_id: i64, retry: i64 },
    #[error("the pull request of task {task_id} was {how}; nothing more runs for it")]
    PullRequestEnded { task_id: i64, how: &'static str },
    #[error("task {task_id} {}; only a failed run is retried from a step, and {WHOLE}", .state.words())]
    NotFailed { task_id: i64, state: TaskState },
    #[error("task {task_id} failed before it read its pipeline; {WHOLE}")]
    NoDefinition { task_id: i64 },
    #[error("run {run_id} failed before its steps ran or after them; {WHOLE}")]
    NoFailedStep { run_id: i64 },
    /// The run's own pipeline definition does not let it start again at the step.
    #[error("{0}")]
    Step(String),
    #[error("run {run_id} kept no work to start from (larger than {} MiB, or unreadable); {WHOLE}", runs::MAX_WORK_BYTES >> 20)]
    NoWork { run_id: i64 },
    /// The task's pull request is no place to run any more.
    #[error("{0}")]
    PullRequest(String),
    #[error("the issue already has a live task")]
    LiveTwin,
}

/// The task a retry made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retried {
    pub task_id: i64,
    /// The task it runs again.
    pub retry_of: i64,
}

/// Runs task `ask.task_id` again as a new task, in the caller's transaction: the whole
/// pipeline, or, from `ask.step`, the failed run's pipeline at that step on top of its
/// work. The new task's status comment (and check run, on a pull request) are queued.
pub async fn retry(
    conn: &mut PgConnection,
    ask: &Retry<'_>,
    forge: &impl Forge,
) -> anyhow::Result<Result<Retried, RetryRefused>> {
    // Held, so two retries of one task cannot both pass the checks below.
    let last: Option<Task> = sqlx::query_as(&format!(
        "SELECT {TASK_COLUMNS} FROM tasks WHERE id = $1 FOR UPDATE"
    ))
    .bind(ask.task_id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(last) = last else {
        return Ok(Err(RetryRefused::NoTask(ask.task_id)));
    };
    if !last.state.is_final() {
        return Ok(Err(RetryRefused::Live {
            task_id: last.id,
            state: last.state,
        }));
    }
    let retry: Option<i64> = sqlx::query_scalar("SELECT max(id) FROM tasks WHERE retry_of = $1")
        .bind(last.id)
        .fetch_one(&mut *conn)
        .await?;
    if let Some(retry) = retry {
        return Ok(Err(RetryRefused::Retried {
            task_id: last.id,
            retry,
        }));
    }
    let ended: Option<String> = sqlx::query_scalar(
        "SELECT kind FROM task_events
         WHERE task_id = $1 AND kind IN ('pull_request_merged', 'pull_request_closed')
         ORDER BY id DESC LIMIT 1",
    )
    .bind(last.id)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(kind) = ended {
        let how = if kind == "pull_request_merged" {
            "merged"
        } else {
            "closed"
        };
        return Ok(Err(RetryRefused::PullRequestEnded {
            task_id: last.id,
            how,
        }));
    }
    let retry_from = match ask.step {
        Some(step) => match retry_point(conn, &last, step).await? {
            Ok(from) => Some(from),
            Err(why) => return Ok(Err(why)),
        },
        None => None,
    };
    let pull_request = match last.pull_request {
        Some(number) => match forge.pull_request(number).await? {
            Ok(target) => Some(target),
            Err(why) => return Ok(Err(RetryRefused::PullRequest(why))),
        },
        None => None,
    };
    let task = NewTask {
        installation_id: last.installation_id,
        repo_owner: last.repo_owner.clone(),
        repo_name: last.repo_name.clone(),
        default_branch: ask
            .default_branch
            .map_or_else(|| last.default_branch.clone(), str::to_owned),
        issue_number: last.issue_number,
        title: last.title.clone(),
        body: last.body.clone(),
        pipeline: last.pipeline.clone(),
        delivery_id: None,
        requested_by: Some(ask.by.to_owned()),
        pull_request,
        retry_of: Some(last.id),
        timeout_minutes: None,
        retry_from,
        board: BoardFields::default(),
        correlation_id: ask.correlation_id.clone(),
    };
    let Some(task_id) = tasks::create(conn, &task).await? else {
        return Ok(Err(RetryRefused::LiveTwin));
    };
    // The same card's work again: what the board shows of it carries over.
    sqlx::query(
        "UPDATE tasks t SET source = l.source, task_type = l.task_type, priority = l.priority,
             labels = l.labels, assignee = l.assignee,
             acceptance_criteria = l.acceptance_criteria, context_files = l.context_files,
             parent_id = l.parent_id
         FROM tasks l WHERE t.id = $1 AND l.id = $2",
    )
    .bind(task_id)
    .bind(last.id)
    .execute(&mut *conn)
    .await?;
    let mut effects = vec![Effect::StatusComment { task_id }];
    if let Some(pull) = &task.pull_request {
        effects.push(Effect::CheckRun {
            task_id,
            head_sha: pull.head_sha.clone(),
        });
    }
    outbox::enqueue(conn, &Place::from(&last), &effects).await?;
    tracing::info!(task_id, retry_of = last.id, step = ask.step, "task retried");
    Ok(Ok(Retried {
        task_id,
        retry_of: last.id,
    }))
}

/// Where a retry from `step` takes up the failed task `last`: its last run, at `step`, as
/// that run's own pipeline definition allows.
async fn retry_point(
    conn: &mut PgConnection,
    last: &Task,
    step: &str,
) -> sqlx::Result<Result<RetryFrom, RetryRefused>> {
    if last.state != TaskState::Failed {
        return Ok(Err(RetryRefused::NotFailed {
            task_id: last.id,
            state: last.state,
        }));
    }
    let run = runs::latest(&mut *conn, last.id).await?;
    let Some((run, text)) = run.and_then(|run| Some((run.clone(), run.definition?))) else {
        return Ok(Err(RetryRefused::NoDefinition { task_id: last.id }));
    };
    let Some(failed) = &run.failed_step else {
        return Ok(Err(RetryRefused::NoFailedStep { run_id: run.id }));
    };
    let pipeline = match definition::parse(&text, &last.pipeline) {
        Ok(pipeline) => pipeline,
        Err(err) => return Ok(Err(RetryRefused::Step(err.to_string()))),
    };
    let position = match pipeline.retry_point(&last.pipeline, step, failed) {
        Ok(position) => position,
        Err(err) => return Ok(Err(RetryRefused::Step(err.to_string()))),
    };
    if !runs::has_work(&mut *conn, run.id).await? {
        return Ok(Err(RetryRefused::NoWork { run_id: run.id }));
    }
    Ok(Ok(RetryFrom {
        run_id: run.id,
        position: position as i32,
    }))
}
