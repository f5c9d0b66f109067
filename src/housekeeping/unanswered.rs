//! Runs whose questions nobody answered in time end failed (`no_answer`), with their reports
//! queued: a task must not wait for an answer forever.

use sqlx::PgPool;

use crate::engine::clarification;
use crate::engine::tasks::EngineError;

/// Fails every run whose questions waited longer than its pipeline's `timeout_hours`; returns
/// how many.
pub async fn expire(pool: &PgPool) -> Result<usize, EngineError> {
    let mut tx = pool.begin().await?;
    let failed = clarification::expire(&mut tx).await?;
    tx.commit().await?;
    for task_id in &failed {
        tracing::info!(
            task_id = task_id,
            "run failed: its questions went unanswered"
        );
    }
    Ok(failed.len())
}
