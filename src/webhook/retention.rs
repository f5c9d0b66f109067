//! Dropping old delivery payloads in batches, so the inbox stays small; outcomes stay.

use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::inbox;

const BATCH: i64 = 1000;
const INTERVAL: Duration = Duration::from_secs(3600);

/// Drops every payload older than `age`, a batch per statement; returns how many.
pub async fn prune(pool: &PgPool, age: Duration) -> sqlx::Result<u64> {
    let mut total = 0;
    loop {
        let done = inbox::drop_old_payloads(pool, age, BATCH).await?;
        total += done;
        if done < BATCH as u64 {
            return Ok(total);
        }
    }
}

/// Prunes at start and hourly until `shutdown`.
pub async fn run(pool: PgPool, age: Duration, shutdown: CancellationToken) {
    loop {
        match prune(&pool, age).await {
            Ok(0) => {}
            Ok(dropped) => tracing::info!(dropped, "old delivery payloads deleted"),
            Err(err) => tracing::warn!(error = %err, "delivery retention failed"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(INTERVAL) => {}
        }
    }
}
