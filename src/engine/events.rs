//! The audit trail of tasks.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgExecutor;

pub async fn record(
    db: impl PgExecutor<'_>,
    task_id: i64,
    run_id: Option<i64>,
    kind: &str,
    detail: Value,
) -> sqlx::Result<()> {
    sqlx::query("INSERT INTO task_events (task_id, run_id, kind, detail) VALUES ($1, $2, $3, $4)")
        .bind(task_id)
        .bind(run_id)
        .bind(kind)
        .bind(detail)
        .execute(db)
        .await?;
    Ok(())
}

#[derive(Debug, sqlx::FromRow)]
pub struct TaskEvent {
    pub kind: String,
    pub run_id: Option<i64>,
    pub detail: Value,
    pub at: DateTime<Utc>,
}

pub async fn for_task(db: impl PgExecutor<'_>, task_id: i64) -> sqlx::Result<Vec<TaskEvent>> {
    sqlx::query_as(
        "SELECT kind, run_id, detail, at FROM task_events WHERE task_id = $1 ORDER BY id",
    )
    .bind(task_id)
    .fetch_all(db)
    .await
}
