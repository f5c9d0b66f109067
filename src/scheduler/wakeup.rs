//! Wake-ups across processes: work that becomes claimable anywhere (a task enqueued or
//! requeued, a repository resumed, a blocker finished) sends `NOTIFY conveyor_tasks`, and
//! this listener wakes the idle workers of this process.

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::engine::tasks;

const RECONNECT_DELAY: Duration = Duration::from_secs(1);

pub async fn listen(pool: PgPool, tasks_added: Arc<Notify>, shutdown: CancellationToken) {
    loop {
        match subscribe(&pool).await {
            Ok(mut listener) => loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    received = listener.recv() => match received {
                        Ok(_) => tasks_added.notify_one(),
                        Err(err) => {
                            tracing::warn!(error = %err, "task notifications lost; reconnecting");
                            break;
                        }
                    },
                }
            },
            Err(err) => {
                tracing::warn!(error = %err, "cannot listen for task notifications; polling")
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(RECONNECT_DELAY) => {}
        }
    }
}

async fn subscribe(pool: &PgPool) -> sqlx::Result<PgListener> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(tasks::WAKE_CHANNEL).await?;
    Ok(listener)
}
