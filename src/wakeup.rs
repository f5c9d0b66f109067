//! Wake-ups across processes: work that appears anywhere (a task enqueued or requeued, a
//! request from GitHub, an effect for GitHub) is announced with `NOTIFY` on its channel when
//! its transaction commits, and a listener wakes this process's job for it.

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

const RECONNECT_DELAY: Duration = Duration::from_secs(1);

/// Wakes one waiter of `added` per notification on `channel`: the job that takes the work.
pub async fn listen(
    pool: PgPool,
    channel: &'static str,
    added: Arc<Notify>,
    shutdown: CancellationToken,
) {
    listen_with(pool, channel, move || added.notify_one(), shutdown).await
}

/// Calls `wake` for each notification on `channel`, until `shutdown`.
pub async fn listen_with(
    pool: PgPool,
    channel: &'static str,
    wake: impl Fn(),
    shutdown: CancellationToken,
) {
    loop {
        match subscribe(&pool, channel).await {
            Ok(mut listener) => loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    received = listener.recv() => match received {
                        Ok(_) => wake(),
                        Err(err) => {
                            tracing::warn!(error = %err, channel, "notifications lost; reconnecting");
                            break;
                        }
                    },
                }
            },
            Err(err) => {
                tracing::warn!(error = %err, channel, "cannot listen for notifications; polling")
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(RECONNECT_DELAY) => {}
        }
    }
}

async fn subscribe(pool: &PgPool, channel: &str) -> sqlx::Result<PgListener> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(channel).await?;
    Ok(listener)
}
