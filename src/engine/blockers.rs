//! Dependencies between tasks: a blocked task waits until every blocker is done or
//! cancelled on the board (a blocker whose pull request waits in review still holds its
//! dependents back). Readiness is derived when claiming, never stored, so blockers finishing
//! at the same moment cannot make a task ready twice.

use sqlx::PgConnection;

/// SQL condition, true while the blocker aliased `b` is neither done nor cancelled.
macro_rules! unresolved {
    () => {
        "b.board_state NOT IN ('done', 'cancelled')"
    };
}
pub(crate) const UNRESOLVED: &str = unresolved!();

/// SQL condition, true while the task aliased `t` has an unresolved blocker. Claiming, the
/// board and explaining a wait all use it, so they cannot disagree.
pub(crate) const UNFINISHED_BLOCKERS: &str = concat!(
    "EXISTS (SELECT 1 FROM task_blockers d JOIN tasks b ON b.id = d.blocker_id
             WHERE d.task_id = t.id AND ",
    unresolved!(),
    ")"
);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BlockerError {
    #[error("task {0} does not exist")]
    NotFound(i64),
    #[error("task {task} cannot wait for itself or for a task that waits for it ({blocker})")]
    Cycle { task: i64, blocker: i64 },
    #[error(
        "task {0} has started or ended; only a task in the backlog or ready can gain a blocker"
    )]
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
        "SELECT id, state IN ('queued', 'held') FROM tasks WHERE id = ANY($1) ORDER BY id FOR UPDATE",
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

/// A task's blockers that are neither done nor cancelled, oldest first.
pub async fn unresolved(conn: &mut PgConnection, task: i64) -> sqlx::Result<Vec<i64>> {
    sqlx::query_scalar(&format!(
        "SELECT d.blocker_id FROM task_blockers d JOIN tasks b ON b.id = d.blocker_id
         WHERE d.task_id = $1 AND {UNRESOLVED}
         ORDER BY d.blocker_id"
    ))
    .bind(task)
    .fetch_all(conn)
    .await
}

/// Removes the edge that made `task` wait for `blocker`; false when there was none.
pub async fn remove(conn: &mut PgConnection, task: i64, blocker: i64) -> sqlx::Result<bool> {
    let removed = sqlx::query("DELETE FROM task_blockers WHERE task_id = $1 AND blocker_id = $2")
        .bind(task)
        .bind(blocker)
        .execute(conn)
        .await?;
    Ok(removed.rows_affected() > 0)
}
