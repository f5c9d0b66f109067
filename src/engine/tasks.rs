//! Tasks: creation, lookup and guarded state changes.

use serde_json::json;
use sqlx::{PgConnection, PgExecutor};

use super::events;
use super::state::{TaskState, TransitionError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTask {
    pub installation_id: i64,
    pub repo_owner: String,
    pub repo_name: String,
    pub default_branch: String,
    pub issue_number: i64,
    pub title: String,
    pub body: String,
    pub pipeline: String,
    pub delivery_id: Option<i64>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Task {
    pub id: i64,
    pub installation_id: i64,
    pub repo_owner: String,
    pub repo_name: String,
    pub default_branch: String,
    pub issue_number: i64,
    pub title: String,
    pub body: String,
    pub pipeline: String,
    pub state: TaskState,
    pub lease_epoch: i64,
    /// Attempts started so far, the running one included.
    pub attempts: i32,
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Transition(#[from] TransitionError),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
}

pub(crate) const TASK_COLUMNS: &str = "id, installation_id, repo_owner, repo_name, default_branch, issue_number, \
     title, body, pipeline, state, lease_epoch, attempts";

/// Creates a queued task; `None` when the issue already has a live task or the delivery
/// already created one.
pub async fn create(conn: &mut PgConnection, task: &NewTask) -> sqlx::Result<Option<i64>> {
    let id: Option<i64> = sqlx::query_scalar(
        "INSERT INTO tasks (installation_id, repo_owner, repo_name, default_branch, issue_number,
                            title, body, pipeline, delivery_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         ON CONFLICT DO NOTHING
         RETURNING id",
    )
    .bind(task.installation_id)
    .bind(&task.repo_owner)
    .bind(&task.repo_name)
    .bind(&task.default_branch)
    .bind(task.issue_number)
    .bind(&task.title)
    .bind(&task.body)
    .bind(&task.pipeline)
    .bind(task.delivery_id)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(id) = id {
        sqlx::query(
            "INSERT INTO repositories (owner, name) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(&task.repo_owner)
        .bind(&task.repo_name)
        .execute(&mut *conn)
        .await?;
        events::record(
            &mut *conn,
            id,
            None,
            "created",
            json!({ "delivery": task.delivery_id }),
        )
        .await?;
        wake_workers(&mut *conn).await?;
    }
    Ok(id)
}

pub async fn get(db: impl PgExecutor<'_>, id: i64) -> sqlx::Result<Option<Task>> {
    sqlx::query_as(&format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = $1"))
        .bind(id)
        .fetch_optional(db)
        .await
}

/// Moves a task held under lease `epoch` to `to`, refusing stale leases and transitions the
/// state machine does not allow. Call inside a transaction.
pub async fn transition(
    conn: &mut PgConnection,
    task_id: i64,
    epoch: i64,
    to: TaskState,
) -> Result<(), EngineError> {
    let row: Option<(TaskState, i64)> =
        sqlx::query_as("SELECT state, lease_epoch FROM tasks WHERE id = $1 FOR UPDATE")
            .bind(task_id)
            .fetch_optional(&mut *conn)
            .await?;
    let (from, current_epoch) = row.ok_or(TransitionError::NotFound { task_id })?;
    if current_epoch != epoch {
        return Err(TransitionError::StaleLease { task_id, epoch }.into());
    }
    if !from.can_become(to) {
        return Err(TransitionError::NotAllowed { task_id, from, to }.into());
    }
    set_state(conn, task_id, from, to, json!({ "from": from, "to": to })).await?;
    Ok(())
}

/// Writes a state change the caller has checked, keeping the repository's running count
/// and the audit trail in step, and waking workers when a slot frees up.
async fn set_state(
    conn: &mut PgConnection,
    task_id: i64,
    from: TaskState,
    to: TaskState,
    detail: serde_json::Value,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE tasks SET state = $2, updated_at = now(),
                process_id = CASE WHEN $2 = 'running' THEN process_id END
         WHERE id = $1",
    )
    .bind(task_id)
    .bind(to)
    .execute(&mut *conn)
    .await?;
    if from == TaskState::Running {
        sqlx::query(
            "UPDATE repositories r SET running = r.running - 1
             FROM tasks t WHERE t.id = $1 AND r.owner = t.repo_owner AND r.name = t.repo_name",
        )
        .bind(task_id)
        .execute(&mut *conn)
        .await?;
    }
    // A freed repository slot or a finished blocker may let a queued task run.
    if from == TaskState::Running || to.is_final() {
        wake_workers(&mut *conn).await?;
    }
    events::record(&mut *conn, task_id, None, "state", detail).await
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rescued {
    /// Back in the queue for another attempt.
    Requeued,
    /// Its attempts were used up.
    Failed,
}

/// Takes a running task away from a process that stopped heartbeating: back to the queue,
/// or failed when its attempts are used up. The lease epoch moves on, so a result the lost
/// process still sends is refused.
pub async fn rescue(conn: &mut PgConnection, task_id: i64) -> Result<Rescued, EngineError> {
    let row: Option<(TaskState, i32, i32, Option<String>)> = sqlx::query_as(
        "UPDATE tasks SET lease_epoch = lease_epoch + 1
         WHERE id = $1
         RETURNING state, attempts, max_attempts, process_id",
    )
    .bind(task_id)
    .fetch_optional(&mut *conn)
    .await?;
    let (state, attempts, max_attempts, process) =
        row.ok_or(TransitionError::NotFound { task_id })?;
    let (to, rescued) = if attempts < max_attempts {
        (TaskState::Queued, Rescued::Requeued)
    } else {
        (TaskState::Failed, Rescued::Failed)
    };
    if state != TaskState::Running {
        return Err(TransitionError::NotAllowed {
            task_id,
            from: state,
            to,
        }
        .into());
    }
    let detail = json!({ "from": state, "to": to, "rescued_from": process, "attempts": attempts });
    set_state(conn, task_id, state, to, detail).await?;
    Ok(rescued)
}

/// Gives a running task back to the queue from a process shutting down, without counting the
/// attempt: the task did not fail, its process left. Refused if the lease moved on.
pub async fn hand_back(
    conn: &mut PgConnection,
    task_id: i64,
    epoch: i64,
) -> Result<(), EngineError> {
    let row: Option<TaskState> = sqlx::query_scalar(
        "UPDATE tasks SET lease_epoch = lease_epoch + 1, attempts = GREATEST(attempts - 1, 0)
         WHERE id = $1 AND lease_epoch = $2
         RETURNING state",
    )
    .bind(task_id)
    .bind(epoch)
    .fetch_optional(&mut *conn)
    .await?;
    let from = row.ok_or(TransitionError::StaleLease { task_id, epoch })?;
    if !from.can_become(TaskState::Queued) {
        return Err(TransitionError::NotAllowed {
            task_id,
            from,
            to: TaskState::Queued,
        }
        .into());
    }
    set_state(
        conn,
        task_id,
        from,
        TaskState::Queued,
        json!({ "from": from, "to": TaskState::Queued, "handed_back": true }),
    )
    .await?;
    Ok(())
}

/// Ends a failed attempt by scheduling the next one after `delay`, if the lease still holds.
pub async fn schedule_retry(
    conn: &mut PgConnection,
    task_id: i64,
    epoch: i64,
    delay: std::time::Duration,
) -> Result<(), EngineError> {
    transition(conn, task_id, epoch, TaskState::Scheduled).await?;
    sqlx::query("UPDATE tasks SET run_after = now() + make_interval(secs => $2) WHERE id = $1")
        .bind(task_id)
        .bind(delay.as_secs_f64())
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Queues every scheduled task whose retry is due; returns how many.
pub async fn queue_due_retries(conn: &mut PgConnection) -> sqlx::Result<usize> {
    let due: Vec<i64> = sqlx::query_scalar(
        "SELECT id FROM tasks WHERE state = 'scheduled' AND run_after <= now()
         ORDER BY run_after
         FOR UPDATE SKIP LOCKED",
    )
    .fetch_all(&mut *conn)
    .await?;
    for &task_id in &due {
        let detail = json!({ "from": TaskState::Scheduled, "to": TaskState::Queued });
        set_state(
            conn,
            task_id,
            TaskState::Scheduled,
            TaskState::Queued,
            detail,
        )
        .await?;
    }
    if !due.is_empty() {
        wake_workers(&mut *conn).await?;
    }
    Ok(due.len())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cancel {
    /// The task was queued and is now cancelled.
    Cancelled,
    /// The task is running; its worker will stop it and end it cancelled.
    Requested,
}

/// Cancels a queued task at once, or asks the worker of a running one to stop it.
pub async fn cancel(conn: &mut PgConnection, task_id: i64) -> Result<Cancel, EngineError> {
    let state: Option<TaskState> =
        sqlx::query_scalar("SELECT state FROM tasks WHERE id = $1 FOR UPDATE")
            .bind(task_id)
            .fetch_optional(&mut *conn)
            .await?;
    match state.ok_or(TransitionError::NotFound { task_id })? {
        from @ (TaskState::Queued | TaskState::Scheduled) => {
            set_state(
                conn,
                task_id,
                from,
                TaskState::Cancelled,
                json!({ "from": from, "to": TaskState::Cancelled }),
            )
            .await?;
            Ok(Cancel::Cancelled)
        }
        TaskState::Running => {
            sqlx::query("UPDATE tasks SET cancel_requested = true WHERE id = $1")
                .bind(task_id)
                .execute(&mut *conn)
                .await?;
            events::record(&mut *conn, task_id, None, "cancel_requested", json!({})).await?;
            Ok(Cancel::Requested)
        }
        from => Err(TransitionError::NotAllowed {
            task_id,
            from,
            to: TaskState::Cancelled,
        }
        .into()),
    }
}

/// Whether someone asked for the running task to stop.
pub async fn cancel_requested(db: impl PgExecutor<'_>, task_id: i64) -> sqlx::Result<bool> {
    sqlx::query_scalar("SELECT cancel_requested FROM tasks WHERE id = $1")
        .bind(task_id)
        .fetch_optional(db)
        .await
        .map(|flag| flag.unwrap_or(false))
}

/// Tells every process's idle workers (`LISTEN conveyor_tasks`) to look for work; delivered
/// when the caller's transaction commits.
pub async fn wake_workers(db: impl PgExecutor<'_>) -> sqlx::Result<()> {
    sqlx::query("SELECT pg_notify('conveyor_tasks', '')")
        .execute(db)
        .await?;
    Ok(())
}

/// The task a delivery created, if any.
pub async fn created_by_delivery(
    db: impl PgExecutor<'_>,
    delivery_id: i64,
) -> sqlx::Result<Option<i64>> {
    sqlx::query_scalar("SELECT id FROM tasks WHERE delivery_id = $1")
        .bind(delivery_id)
        .fetch_optional(db)
        .await
}

/// Deletes up to `batch` tasks finished more than `age` ago, with their runs, step results
/// and audit trail; returns how many.
pub async fn delete_finished(
    db: impl PgExecutor<'_>,
    age: std::time::Duration,
    batch: i64,
) -> sqlx::Result<u64> {
    let done = sqlx::query(
        "DELETE FROM tasks WHERE id IN (
             SELECT id FROM tasks
             WHERE state IN ('succeeded', 'failed', 'cancelled')
               AND updated_at < now() - make_interval(secs => $1)
             LIMIT $2
             FOR UPDATE SKIP LOCKED
         )",
    )
    .bind(age.as_secs_f64())
    .bind(batch)
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}
