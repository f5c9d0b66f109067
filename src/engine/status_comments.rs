//! Where each task's one status comment is, and the deferral reason it was last asked to
//! show. Only the outbox writes the comment; these records tell it which comment to edit.

use sqlx::PgExecutor;

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct StatusComment {
    /// `None` until the outbox has posted it.
    pub comment_id: Option<i64>,
    /// The deferral reason the comment shows while the task waits for its first run.
    pub waiting: Option<String>,
}

pub async fn get(db: impl PgExecutor<'_>, task_id: i64) -> sqlx::Result<Option<StatusComment>> {
    sqlx::query_as("SELECT comment_id, waiting FROM status_comments WHERE task_id = $1")
        .bind(task_id)
        .fetch_optional(db)
        .await
}

/// Records the comment the outbox posted or edited.
pub async fn set_comment(
    db: impl PgExecutor<'_>,
    task_id: i64,
    comment_id: i64,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO status_comments (task_id, comment_id) VALUES ($1, $2)
         ON CONFLICT (task_id) DO UPDATE SET comment_id = $2",
    )
    .bind(task_id)
    .bind(comment_id)
    .execute(db)
    .await?;
    Ok(())
}

/// Records the deferral reason the comment is to show.
pub async fn set_waiting(db: impl PgExecutor<'_>, task_id: i64, reason: &str) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO status_comments (task_id, waiting) VALUES ($1, $2)
         ON CONFLICT (task_id) DO UPDATE SET waiting = $2",
    )
    .bind(task_id)
    .bind(reason)
    .execute(db)
    .await?;
    Ok(())
}
