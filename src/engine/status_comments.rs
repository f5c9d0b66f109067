//! Where each task's one status comment is, and the deferral reason it last showed.

use sqlx::PgExecutor;

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
