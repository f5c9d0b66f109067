//! Dependencies between tasks: a blocked task waits until every blocker has succeeded or
//! been cancelled. Readiness is derived when claiming, never stored, so blockers finishing
//! at the same moment cannot make a task ready twice.

use sqlx::PgConnection;

/// SQL condition, true while the task aliased `t` has a blocker that neither succeeded nor
/// was cancelled. Claiming and explaining a wait both use it, so they cannot disagree.
pub(crate) const UNFINISHED_BLOCKERS: &str = "EXISTS (
    SELECT 1 FROM task_blockers d JOIN tasks b ON b.id = d.blocker_id
    WHERE d.task_id = t.id AND b.state NOT IN ('succeeded', 'cancelled')
)";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BlockerError {
    #[error("task {0} does not exist")]
    NotFound(i64),
    #[error("task {task} cannot wait for itself or for a task that waits for it ({blocker})")]
    Cycle { task: i64, blocker: i64 },
    #[error("task {0} is no longer queued; only a queued task can gain a blocker")]
    NotQueued(i64),
    #[error("database: {0}")]
    Db(String),
}

impl From<sqlx::Error> for BlockerError {
    fn from(err: sqlx::Error) -> Self {
        Self::Db(err.to_string())
    }
}

/// Makes `task` wait for `blocker`. Call inside a transaction: both tasks are locked, so a
/// concurrent edge cannot close a cycle.
pub async fn add(conn: &mut PgConnection, task: i64, blocker: i64) -> Result<(), BlockerError> {
    let states: Vec<(i64, bool)> = sqlx::query_as(
        "SELECT id, state = 'queued' FROM tasks WHERE id = ANY($1) ORDER BY id FOR UPDATE",
    )
    .bind([task, blocker].as_slice())
    .fetch_all(&mut *conn)
    .await?;
    for id in [task, blocker] {
        if !states.iter().any(|(found, _)| *found == id) {
            return Err(BlockerError::NotFound(id));
        }
    }
    if !states.iter().any(|(id, queued)| *id == task && *queued) {
        return Err(BlockerError::NotQueued(task));
    }
    let cycle: bool = sqlx::query_scalar(
        "WITH RECURSIVE upstream (id) AS (
             SELECT $2::BIGINT
             UNION
             SELECT b.blocker_id FROM task_blockers b JOIN upstream u ON b.task_id = u.id
         )
         SELECT EXISTS (SELECT 1 FROM upstream WHERE id = $1)",
    )
    .bind(task)
    .bind(blocker)
    .fetch_one(&mut *conn)
    .await?;
    if cycle {
        return Err(BlockerError::Cycle { task, blocker });
    }
    sqlx::query(
        "INSERT INTO task_blockers (task_id, blocker_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
    )
    .bind(task)
    .bind(blocker)
    .execute(&mut *conn)
    .await?;
    Ok(())
}
