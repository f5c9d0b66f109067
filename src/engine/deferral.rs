//! Why a queued task is still waiting, in words a person can act on. The API shows it, and
//! the status comment of a task that has waited a while.

use std::time::Duration;

use sqlx::PgExecutor;

use super::blockers::UNFINISHED_BLOCKERS;
use super::tasks::{TASK_COLUMNS, Task};

/// SQL expression for the deferral reason of the queued task `t` of repository `r`. The
/// first cause that holds is named: the one a person would have to act on first.
fn reason_sql() -> String {
    format!(
        "CASE
             WHEN {UNFINISHED_BLOCKERS} THEN 'waiting: blocked by unfinished tasks'
             WHEN r.paused THEN 'waiting: repository paused'
             WHEN r.running >= r.max_running
                 THEN format('waiting: repository limit %s/%s', r.running, r.max_running)
             WHEN NOT EXISTS (SELECT 1 FROM worker_processes WHERE healthy_sessions > 0)
                 THEN 'waiting: no healthy worker session'
             ELSE 'waiting: no free worker session'
         END"
    )
}

/// Why the task waits; `None` unless it is queued.
pub async fn reason(db: impl PgExecutor<'_>, task_id: i64) -> sqlx::Result<Option<String>> {
    sqlx::query_scalar(&format!(
        "SELECT {}
         FROM tasks t JOIN repositories r ON r.owner = t.repo_owner AND r.name = t.repo_name
         WHERE t.id = $1 AND t.state = 'queued'",
        reason_sql()
    ))
    .bind(task_id)
    .fetch_optional(db)
    .await
}

/// A task that has waited a while, with why.
#[derive(Debug, sqlx::FromRow)]
pub struct Waiting {
    #[sqlx(flatten)]
    pub task: Task,
    pub reason: String,
}

/// Up to `limit` tasks, first in queue order, queued for at least `age` and never run,
/// whose status comment does not show their current deferral reason yet.
pub async fn unreported(
    db: impl PgExecutor<'_>,
    age: Duration,
    limit: i64,
) -> sqlx::Result<Vec<Waiting>> {
    sqlx::query_as(&format!(
        "SELECT {TASK_COLUMNS}, reason FROM (
             SELECT t.*, {reason} AS reason, c.waiting AS shown
             FROM tasks t
             JOIN repositories r ON r.owner = t.repo_owner AND r.name = t.repo_name
             LEFT JOIN status_comments c ON c.task_id = t.id
             WHERE t.state = 'queued' AND t.attempts = 0
               AND t.updated_at <= now() - make_interval(secs => $1)
         ) waiting
         WHERE reason IS DISTINCT FROM shown
         ORDER BY priority DESC, created_at, id
         LIMIT $2",
        reason = reason_sql(),
    ))
    .bind(age.as_secs_f64())
    .bind(limit)
    .fetch_all(db)
    .await
}
