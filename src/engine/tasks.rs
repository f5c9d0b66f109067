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
/// state machine does not allow. One statement: it needs no transaction of its own.
pub async fn transition(
    conn: &mut PgConnection,
    task_id: i64,
    epoch: i64,
    to: TaskState,
) -> Result<(), EngineError> {
    end_lease(conn, &Ending::new(task_id, epoch, to)).await
}

/// How the holder of a task's lease ends it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ending {
    pub task_id: i64,
    pub epoch: i64,
    pub to: TaskState,
    /// With `to` scheduled: how long until the retry is due.
    pub retry_in: Option<std::time::Duration>,
}

impl Ending {
    pub fn new(task_id: i64, epoch: i64, to: TaskState) -> Self {
        Self {
            task_id,
            epoch,
            to,
            retry_in: None,
        }
    }
}

/// Ends one lease; see [`end_leases`].
pub async fn end_lease(conn: &mut PgConnection, ending: &Ending) -> Result<(), EngineError> {
    set_state(conn, Change::from(ending)).await
}

/// Ends many leases in one statement (each one checked on its own); a result per ending, in
/// order.
pub async fn end_leases(
    conn: &mut PgConnection,
    endings: &[Ending],
) -> sqlx::Result<Vec<Result<(), TransitionError>>> {
    let changes: Vec<Change> = endings.iter().map(Change::from).collect();
    set_states(conn, &changes).await
}

/// One guarded state change: applied if the state machine allows it from the task's
/// current state and, when `epoch` is given, the lease is still that epoch.
struct Change {
    task_id: i64,
    epoch: Option<i64>,
    to: TaskState,
    retry_in: Option<std::time::Duration>,
    /// Added to the from/to recorded in the audit trail.
    detail: serde_json::Value,
}

impl From<&Ending> for Change {
    fn from(ending: &Ending) -> Self {
        Self {
            task_id: ending.task_id,
            epoch: Some(ending.epoch),
            to: ending.to,
            retry_in: ending.retry_in,
            detail: json!({}),
        }
    }
}

impl Change {
    fn unguarded(task_id: i64, to: TaskState, detail: serde_json::Value) -> Self {
        Self {
            task_id,
            epoch: None,
            to,
            retry_in: None,
            detail,
        }
    }
}

/// What a task was when a state change looked at it.
#[derive(sqlx::FromRow)]
struct Found {
    id: i64,
    state: TaskState,
    lease_epoch: i64,
    moved: bool,
}

/// Applies guarded state changes in one statement, keeping the repositories' running counts
/// and the audit trail in step, and closing the open run of a task taken from its worker
/// (a worker closes its own run with its result); a result per change, in order. The
/// allowed transitions are passed in from [`TaskState::can_become`], the one place that
/// rule lives.
///
/// Other processes' idle workers are woken (`NOTIFY`) only when queued work appears or a
/// finished task had dependents. A slot freed by a finished task is not announced: the
/// worker that freed it claims next, and wakes its own process's idle sessions if there is
/// more. Announcing every completion would cost more than the claim itself: a notifying
/// commit holds a cluster-wide lock through its WAL flush, so those commits cannot be
/// grouped.
async fn set_states(
    conn: &mut PgConnection,
    changes: &[Change],
) -> sqlx::Result<Vec<Result<(), TransitionError>>> {
    let (allowed_from, allowed_to): (Vec<TaskState>, Vec<TaskState>) = TaskState::ALL
        .into_iter()
        .flat_map(|to| to.sources().into_iter().map(move |from| (from, to)))
        .unzip();
    let found: Vec<Found> = sqlx::query_as(
        "WITH change AS (
             SELECT * FROM unnest($1::BIGINT[], $2::BIGINT[], $3::task_state[],
                                  $4::FLOAT8[], $5::JSONB[])
                 AS c(task_id, epoch, to_state, retry_in, detail)
         ), allowed AS (
             SELECT * FROM unnest($6::task_state[], $7::task_state[]) AS a(from_state, to_state)
         ), old AS (
             SELECT t.id, t.state, t.lease_epoch FROM tasks t
             WHERE t.id IN (SELECT task_id FROM change)
             ORDER BY t.id
             FOR UPDATE
         ), moved AS (
             UPDATE tasks t
             SET state = c.to_state, updated_at = now(),
                 process_id = CASE WHEN c.to_state = 'running' THEN t.process_id END,
                 run_after = CASE WHEN c.retry_in IS NOT NULL
                                  THEN now() + make_interval(secs => c.retry_in)
                                  ELSE t.run_after END
             FROM old JOIN change c ON c.task_id = old.id
             WHERE t.id = old.id
               AND (old.state, c.to_state) IN (SELECT from_state, to_state FROM allowed)
               AND (c.epoch IS NULL OR old.lease_epoch = c.epoch)
             RETURNING t.id, old.state AS from_state, t.state AS to_state, c.detail,
                       t.repo_owner, t.repo_name
         ), slots AS (
             UPDATE repositories r SET running = r.running - freed.n
             FROM (SELECT repo_owner, repo_name, count(*) AS n FROM moved
                   WHERE from_state = 'running' GROUP BY repo_owner, repo_name) freed
             WHERE r.owner = freed.repo_owner AND r.name = freed.repo_name
         ), interrupted AS (
             UPDATE runs SET finished_at = now(),
                 state = CASE WHEN moved.to_state = 'cancelled' THEN 'cancelled'::run_state
                              ELSE 'interrupted' END
             FROM moved
             WHERE runs.task_id = moved.id AND moved.from_state = 'running'
               AND runs.state = 'running'
         ), audit AS (
             INSERT INTO task_events (task_id, kind, detail)
             SELECT id, 'state', jsonb_build_object('from', from_state, 'to', to_state) || detail
             FROM moved
         ), wake AS (
             SELECT count(pg_notify($8, '')) FROM moved
             WHERE to_state = 'queued'
                OR (to_state IN ('succeeded', 'failed', 'cancelled')
                    AND EXISTS (SELECT 1 FROM task_blockers WHERE blocker_id = moved.id))
         )
         SELECT old.id, old.state, old.lease_epoch, moved.id IS NOT NULL AS moved
         FROM old LEFT JOIN moved ON moved.id = old.id, wake",
    )
    .bind(changes.iter().map(|c| c.task_id).collect::<Vec<_>>())
    .bind(changes.iter().map(|c| c.epoch).collect::<Vec<_>>())
    .bind(changes.iter().map(|c| c.to).collect::<Vec<_>>())
    .bind(
        changes
            .iter()
            .map(|c| c.retry_in.map(|delay| delay.as_secs_f64()))
            .collect::<Vec<_>>(),
    )
    .bind(changes.iter().map(|c| c.detail.clone()).collect::<Vec<_>>())
    .bind(allowed_from)
    .bind(allowed_to)
    .bind(WAKE_CHANNEL)
    .fetch_all(&mut *conn)
    .await?;
    Ok(changes
        .iter()
        .map(
            |change| match found.iter().find(|f| f.id == change.task_id) {
                Some(found) if found.moved => Ok(()),
                found => Err(refusal(
                    change.task_id,
                    found.map(|f| (f.state, f.lease_epoch)),
                    change.epoch,
                    change.to,
                )),
            },
        )
        .collect())
}

/// Applies one unguarded-by-lease change (the caller holds the task row).
async fn set_state(conn: &mut PgConnection, change: Change) -> Result<(), EngineError> {
    let mut results = set_states(conn, std::slice::from_ref(&change)).await?;
    Ok(results.pop().expect("one result per change")?)
}

/// Why a change of task `task_id` to `to` under lease `epoch` was refused, given what the
/// task was (`None`: no such task).
fn refusal(
    task_id: i64,
    found: Option<(TaskState, i64)>,
    epoch: Option<i64>,
    to: TaskState,
) -> TransitionError {
    match (found, epoch) {
        (None, _) => TransitionError::NotFound { task_id },
        (Some((_, current)), Some(epoch)) if current != epoch => {
            TransitionError::StaleLease { task_id, epoch }
        }
        (Some((from, _)), _) => TransitionError::NotAllowed { task_id, from, to },
    }
}

/// Why a change of a task that had to be running was refused.
async fn refused_unless_running(
    conn: &mut PgConnection,
    task_id: i64,
    epoch: Option<i64>,
    to: TaskState,
) -> EngineError {
    match get(&mut *conn, task_id).await {
        Ok(task) => refusal(task_id, task.map(|t| (t.state, t.lease_epoch)), epoch, to).into(),
        Err(err) => err.into(),
    }
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
    take_back(conn, task_id, None, None).await
}

/// Takes a running task back from a worker session that crashed while holding lease
/// `epoch`: like a rescue, but refused if the lease already moved on.
pub async fn crashed(
    conn: &mut PgConnection,
    task_id: i64,
    epoch: i64,
    message: &str,
) -> Result<Rescued, EngineError> {
    take_back(conn, task_id, Some(epoch), Some(message)).await
}

/// Requeues a running task with its attempt counted, or fails it when attempts are used up.
async fn take_back(
    conn: &mut PgConnection,
    task_id: i64,
    epoch: Option<i64>,
    crash: Option<&str>,
) -> Result<Rescued, EngineError> {
    let row: Option<(i32, i32, Option<String>)> = sqlx::query_as(
        "UPDATE tasks SET lease_epoch = lease_epoch + 1
         WHERE id = $1 AND state = 'running' AND ($2::BIGINT IS NULL OR lease_epoch = $2)
         RETURNING attempts, max_attempts, process_id",
    )
    .bind(task_id)
    .bind(epoch)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((attempts, max_attempts, process)) = row else {
        return Err(refused_unless_running(conn, task_id, epoch, TaskState::Queued).await);
    };
    let (to, rescued) = if attempts < max_attempts {
        (TaskState::Queued, Rescued::Requeued)
    } else {
        (TaskState::Failed, Rescued::Failed)
    };
    let mut detail = json!({ "rescued_from": process, "attempts": attempts });
    if let Some(message) = crash {
        detail["crashed"] = json!(message);
    }
    set_state(conn, Change::unguarded(task_id, to, detail)).await?;
    Ok(rescued)
}

/// Gives a running task back to the queue from a process shutting down, without counting the
/// attempt: the task did not fail, its process left. Refused if the lease moved on.
pub async fn hand_back(
    conn: &mut PgConnection,
    task_id: i64,
    epoch: i64,
) -> Result<(), EngineError> {
    let moved_on = sqlx::query(
        "UPDATE tasks SET lease_epoch = lease_epoch + 1, attempts = GREATEST(attempts - 1, 0)
         WHERE id = $1 AND lease_epoch = $2 AND state = 'running'",
    )
    .bind(task_id)
    .bind(epoch)
    .execute(&mut *conn)
    .await?;
    if moved_on.rows_affected() == 0 {
        return Err(refused_unless_running(conn, task_id, Some(epoch), TaskState::Queued).await);
    }
    let detail = json!({ "handed_back": true });
    set_state(conn, Change::unguarded(task_id, TaskState::Queued, detail)).await
}

/// Queues every scheduled task whose retry is due; returns how many.
pub async fn queue_due_retries(conn: &mut PgConnection) -> Result<usize, EngineError> {
    let due: Vec<i64> = sqlx::query_scalar(
        "SELECT id FROM tasks WHERE state = 'scheduled' AND run_after <= now()
         ORDER BY run_after
         FOR UPDATE SKIP LOCKED",
    )
    .fetch_all(&mut *conn)
    .await?;
    for &task_id in &due {
        set_state(
            conn,
            Change::unguarded(task_id, TaskState::Queued, json!({})),
        )
        .await?;
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
        TaskState::Queued | TaskState::Scheduled => {
            set_state(
                conn,
                Change::unguarded(task_id, TaskState::Cancelled, json!({})),
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

/// Whether the task is running under lease `epoch` and nobody asked it to stop.
pub async fn lease_held(db: impl PgExecutor<'_>, task_id: i64, epoch: i64) -> sqlx::Result<bool> {
    sqlx::query_scalar(
        "SELECT EXISTS (
             SELECT 1 FROM tasks
             WHERE id = $1 AND lease_epoch = $2 AND state = 'running' AND NOT cancel_requested
         )",
    )
    .bind(task_id)
    .bind(epoch)
    .fetch_one(db)
    .await
}

/// The `LISTEN`/`NOTIFY` channel on which idle workers are told to look for work.
pub const WAKE_CHANNEL: &str = "conveyor_tasks";

/// Tells every process's idle workers to look for work; delivered when the caller's
/// transaction commits.
pub async fn wake_workers(db: impl PgExecutor<'_>) -> sqlx::Result<()> {
    sqlx::query("SELECT pg_notify($1, '')")
        .bind(WAKE_CHANNEL)
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
