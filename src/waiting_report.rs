//! Telling an issue why its task waits. A task queued for a while that has never run gets
//! its status comment early, naming what holds it (`waiting: repository limit 1/1`); the
//! comment is edited when the reason changes, and shows the run once it starts. The reason
//! is recorded and the comment queued in the outbox in one transaction, so each reason is
//! shown once.

use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::engine::deferral;
use crate::engine::status_comments;
use crate::outbox;

/// Reasons recorded per pass at most: GitHub limits how fast content may be created.
const PER_PASS: i64 = 10;

/// Reports on tasks queued for `after` or longer, until `shutdown`.
pub async fn run(pool: PgPool, after: Duration, shutdown: CancellationToken) {
    let interval = (after / 2).clamp(Duration::from_millis(250), Duration::from_secs(5));
    loop {
        if let Err(err) = report(&pool, after).await {
            tracing::warn!(error = %format!("{err:#}"), "reporting waiting tasks failed");
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

/// One pass: records the current deferral reason of each task queued for `after` or longer
/// whose comment does not show it yet, and queues the comment. Returns how many.
pub async fn report(pool: &PgPool, after: Duration) -> anyhow::Result<usize> {
    let mut tx = pool.begin().await?;
    let waiting = deferral::unreported(&mut *tx, after, PER_PASS).await?;
    for task in &waiting {
        status_comments::set_waiting(&mut *tx, task.task.id, &task.reason).await?;
        outbox::sync_status_comment(&mut tx, task.task.id).await?;
        tracing::info!(task_id = task.task.id, waiting = %task.reason, "status comment will say why the task waits");
    }
    tx.commit().await?;
    Ok(waiting.len())
}
