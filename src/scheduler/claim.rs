//! The claim: one statement moves the next ready task from queued to running.

use serde_json::json;
use sqlx::PgPool;

use crate::engine::events;
use crate::engine::tasks::{TASK_COLUMNS, Task};

/// Claims the highest-priority, oldest queued task for `worker`, bumping its lease epoch.
pub async fn claim_next(pool: &PgPool, worker: &str) -> sqlx::Result<Option<Task>> {
    let mut tx = pool.begin().await?;
    let task: Option<Task> = sqlx::query_as(&format!(
        "UPDATE tasks
         SET state = 'running', lease_epoch = lease_epoch + 1, claimed_by = $1, updated_at = now()
         WHERE id = (
             SELECT id FROM tasks
             WHERE state = 'queued'
             ORDER BY priority DESC, created_at, id
             LIMIT 1
             FOR UPDATE SKIP LOCKED
         )
         RETURNING {TASK_COLUMNS}"
    ))
    .bind(worker)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(task) = &task {
        events::record(
            &mut *tx,
            task.id,
            None,
            "claimed",
            json!({ "worker": worker, "epoch": task.lease_epoch }),
        )
        .await?;
    }
    tx.commit().await?;
    Ok(task)
}
