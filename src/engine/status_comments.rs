//! Where each task's one status comment is, the deferral reason it last showed, and the
//! waiting reports being written to it.

use std::time::Duration;

use sqlx::PgExecutor;
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct StatusComment {
    pub comment_id: i64,
    /// The deferral reason the comment shows; `None` once a run has taken it over.
    pub waiting: Option<String>,
}

pub async fn get(db: impl PgExecutor<'_>, task_id: i64) -> sqlx::Result<Option<StatusComment>> {
    sqlx::query_as("SELECT comment_id, waiting FROM status_comments WHERE task_id = $1")
        .bind(task_id)
        .fetch_optional(db)
        .await
}

/// Records the task's status comment and what it shows about waiting.
pub async fn set(
    db: impl PgExecutor<'_>,
    task_id: i64,
    comment: &StatusComment,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO status_comments (task_id, comment_id, waiting) VALUES ($1, $2, $3)
         ON CONFLICT (task_id) DO UPDATE SET comment_id = $2, waiting = $3",
    )
    .bind(task_id)
    .bind(comment.comment_id)
    .bind(&comment.waiting)
    .execute(db)
    .await?;
    Ok(())
}

/// Marks the task's status comment as being written by the waiting report `writer`, if the
/// task is still queued under lease `epoch` (never claimed since it was read) and no other
/// report younger than `abandoned_after` is being written; `false` otherwise. The task row
/// is locked for this statement only, so that a claim either comes before it (and the task
/// is no longer queued) or after it (and its run finds the mark).
pub async fn begin_waiting_write(
    db: impl PgExecutor<'_>,
    task_id: i64,
    epoch: i64,
    writer: Uuid,
    abandoned_after: Duration,
) -> sqlx::Result<bool> {
    let marked: Option<i64> = sqlx::query_scalar(
        "INSERT INTO waiting_report_writes (task_id, writer)
         SELECT id, $3 FROM tasks
         WHERE id = $1 AND state = 'queued' AND lease_epoch = $2
         FOR SHARE
         ON CONFLICT (task_id) DO UPDATE SET writer = EXCLUDED.writer, started_at = now()
             WHERE waiting_report_writes.started_at < now() - make_interval(secs => $4)
         RETURNING task_id",
    )
    .bind(task_id)
    .bind(epoch)
    .bind(writer)
    .bind(abandoned_after.as_secs_f64())
    .fetch_optional(db)
    .await?;
    Ok(marked.is_some())
}

/// Records the comment the waiting report `writer` wrote and clears its mark, in one
/// statement; `false` when the mark is no longer `writer`'s (it was abandoned and taken
/// over), and nothing was recorded.
pub async fn finish_waiting_write(
    db: impl PgExecutor<'_>,
    task_id: i64,
    writer: Uuid,
    comment: &StatusComment,
) -> sqlx::Result<bool> {
    let recorded: Option<i64> = sqlx::query_scalar(
        "WITH mine AS (
             DELETE FROM waiting_report_writes WHERE task_id = $1 AND writer = $2
             RETURNING task_id
         )
         INSERT INTO status_comments (task_id, comment_id, waiting)
         SELECT task_id, $3, $4 FROM mine
         ON CONFLICT (task_id) DO UPDATE SET comment_id = $3, waiting = $4
         RETURNING task_id",
    )
    .bind(task_id)
    .bind(writer)
    .bind(comment.comment_id)
    .bind(&comment.waiting)
    .fetch_optional(db)
    .await?;
    Ok(recorded.is_some())
}

/// Clears the mark of the waiting report `writer`, which wrote nothing.
pub async fn abandon_waiting_write(
    db: impl PgExecutor<'_>,
    task_id: i64,
    writer: Uuid,
) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM waiting_report_writes WHERE task_id = $1 AND writer = $2")
        .bind(task_id)
        .bind(writer)
        .execute(db)
        .await?;
    Ok(())
}

/// Whether a waiting report younger than `abandoned_after` is being written to the task's
/// status comment.
pub async fn waiting_write_in_flight(
    db: impl PgExecutor<'_>,
    task_id: i64,
    abandoned_after: Duration,
) -> sqlx::Result<bool> {
    sqlx::query_scalar(
        "SELECT EXISTS (
             SELECT 1 FROM waiting_report_writes
             WHERE task_id = $1 AND started_at >= now() - make_interval(secs => $2)
         )",
    )
    .bind(task_id)
    .bind(abandoned_after.as_secs_f64())
    .fetch_one(db)
    .await
}
