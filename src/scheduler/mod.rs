//! Workers claim queued tasks from Postgres and hand them to the task runner.

mod claim;

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub use claim::claim_next;

use crate::task_run::TaskRunner;

/// How often an idle worker looks for work when nothing woke it.
const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Runs `count` worker sessions until `shutdown`; a session finishes its current task first.
pub async fn run_workers(
    count: u16,
    pool: PgPool,
    runner: Arc<TaskRunner>,
    tasks_added: Arc<Notify>,
    shutdown: CancellationToken,
) {
    let process = format!("{}-{}", hostname(), std::process::id());
    let mut sessions = tokio::task::JoinSet::new();
    for index in 0..count {
        let worker = Worker {
            id: format!("{process}/{index}"),
            pool: pool.clone(),
            runner: runner.clone(),
            tasks_added: tasks_added.clone(),
            shutdown: shutdown.clone(),
        };
        sessions.spawn(worker.run());
    }
    sessions.join_all().await;
}

struct Worker {
    id: String,
    pool: PgPool,
    runner: Arc<TaskRunner>,
    tasks_added: Arc<Notify>,
    shutdown: CancellationToken,
}

impl Worker {
    async fn run(self) {
        while !self.shutdown.is_cancelled() {
            // Registered before looking, so an enqueue between the look and the wait still wakes us.
            let woken = self.tasks_added.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            match claim_next(&self.pool, &self.id).await {
                Ok(Some(task)) => {
                    self.runner.run(task).await;
                    continue;
                }
                Ok(None) => {}
                Err(err) => {
                    tracing::error!(worker = %self.id, error = %err, "claiming a task failed")
                }
            }
            tokio::select! {
                _ = self.shutdown.cancelled() => {}
                _ = woken => {}
                _ = tokio::time::sleep(POLL_INTERVAL) => {}
            }
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .unwrap_or_else(|_| "conveyor".to_owned())
}
