//! Retention: old delivery payloads, decided requests, delivered effects, long-finished
//! tasks and expired idempotency keys are deleted in batches, so no statement holds locks
//! for long.

use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::engine::{idempotency, tasks};
use crate::outbox;
use crate::requests::queue;
use crate::webhook::inbox;

const BATCH: i64 = 1000;
const INTERVAL: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// Delivery payloads older than this are dropped; the delivery and its outcome stay.
    /// Requests decided and effects delivered longer ago than this are deleted too.
    pub delivery_payloads: Duration,
    /// Tasks finished longer ago than this are deleted with their runs, steps and events.
    pub finished_tasks: Duration,
}

/// Drops every delivery payload older than `age`; returns how many.
pub async fn prune_payloads(pool: &PgPool, age: Duration) -> sqlx::Result<u64> {
    in_batches(|| inbox::drop_old_payloads(pool, age, BATCH)).await
}

/// Deletes every request decided and every effect delivered more than `age` ago; returns
/// how many.
pub async fn prune_requests_and_effects(pool: &PgPool, age: Duration) -> sqlx::Result<u64> {
    let requests = in_batches(|| queue::delete_processed(pool, age, BATCH)).await?;
    let effects = in_batches(|| outbox::delete_delivered(pool, age, BATCH)).await?;
    Ok(requests + effects)
}

/// Deletes every task that finished more than `age` ago; returns how many.
pub async fn prune_tasks(pool: &PgPool, age: Duration) -> sqlx::Result<u64> {
    in_batches(|| tasks::delete_finished(pool, age, BATCH)).await
}

/// Forgets every idempotency key past its time; returns how many.
pub async fn prune_idempotency_keys(pool: &PgPool) -> sqlx::Result<u64> {
    in_batches(|| idempotency::delete_expired(pool, BATCH)).await
}

async fn in_batches<F, Fut>(mut batch: F) -> sqlx::Result<u64>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = sqlx::Result<u64>>,
{
    let mut total = 0;
    loop {
        let done = batch().await?;
        total += done;
        if done < BATCH as u64 {
            return Ok(total);
        }
    }
}

/// Prunes at start and hourly until `shutdown`.
pub async fn run(pool: PgPool, retention: Retention, shutdown: CancellationToken) {
    loop {
        match prune_payloads(&pool, retention.delivery_payloads).await {
            Ok(0) => {}
            Ok(dropped) => tracing::info!(dropped, "old delivery payloads deleted"),
            Err(err) => tracing::warn!(error = %err, "delivery retention failed"),
        }
        match prune_requests_and_effects(&pool, retention.delivery_payloads).await {
            Ok(0) => {}
            Ok(deleted) => tracing::info!(deleted, "old requests and delivered effects deleted"),
            Err(err) => tracing::warn!(error = %err, "request and outbox retention failed"),
        }
        match prune_tasks(&pool, retention.finished_tasks).await {
            Ok(0) => {}
            Ok(deleted) => tracing::info!(deleted, "long-finished tasks deleted"),
            Err(err) => tracing::warn!(error = %err, "task retention failed"),
        }
        match prune_idempotency_keys(&pool).await {
            Ok(0) => {}
            Ok(deleted) => tracing::info!(deleted, "expired idempotency keys deleted"),
            Err(err) => tracing::warn!(error = %err, "idempotency key retention failed"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(INTERVAL) => {}
        }
    }
}
