//! Workers claim queued tasks from Postgres and hand them to an executor; processes
//! heartbeat, and the tasks of a process that went silent are rescued.

mod claim;
mod lease;
pub mod leases;
mod wakeup;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub use claim::{claim, claim_next};
pub use lease::Lease;

use crate::engine::TaskState;
use crate::engine::tasks::{self, Task};
use crate::housekeeping::vacuum;
use claim::Claims;
use lease::Endings;

/// How often an idle worker looks for work when nothing woke it.
const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// How often a running task's worker checks whether it was cancelled; a cancelled step is
/// stopped well within five seconds.
const CANCEL_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Runs a claimed task to its end, which it records through the task's lease.
pub trait Executor: Send + Sync + 'static {
    fn execute(&self, task: Task, lease: Lease) -> impl Future<Output = ()> + Send;

    /// Told after the scheduler stopped a run (and recorded the stop), so that what the
    /// run reported while going can be brought up to date.
    fn stopped(&self, _task: Task, _stop: Stop) -> impl Future<Output = ()> + Send {
        async {}
    }
}

#[derive(Debug, Clone, Copy)]
pub struct SchedulerSettings {
    /// Worker sessions in this process.
    pub workers: u16,
    /// A process silent this long is declared dead and its tasks are rescued.
    pub lease_timeout: Duration,
    /// On shutdown, how long running tasks may take to finish before they are stopped and
    /// handed back to the queue for another process.
    pub shutdown_grace: Duration,
}

impl SchedulerSettings {
    /// Heartbeats come often enough that a few may be late before the lease runs out.
    pub fn heartbeat_interval(&self) -> Duration {
        (self.lease_timeout / 6).max(Duration::from_millis(100))
    }
}

/// Runs the worker sessions of this process until `shutdown`; running tasks get the
/// shutdown grace period to finish.
pub async fn run_workers<E: Executor>(
    settings: SchedulerSettings,
    pool: PgPool,
    executor: Arc<E>,
    tasks_added: Arc<Notify>,
    shutdown: CancellationToken,
) {
    let process = format!(
        "{}-{}-{:04x}",
        hostname(),
        std::process::id(),
        fastrand::u16(..)
    );
    // Heartbeats go on until the last session has stopped: a process still finishing tasks
    // in its grace period must not look dead to the others.
    let stopped = CancellationToken::new();
    let mut background = tokio::task::JoinSet::new();
    background.spawn(leases::run(
        pool.clone(),
        process.clone(),
        settings,
        stopped.clone(),
    ));
    background.spawn(wakeup::listen(
        pool.clone(),
        tasks_added.clone(),
        stopped.clone(),
    ));
    background.spawn(vacuum::run(pool.clone(), stopped.clone()));
    let (claims, claimer) = Claims::spawn(pool.clone(), process.clone());
    let (endings, writer) = Endings::spawn(pool.clone());
    let mut sessions = tokio::task::JoinSet::new();
    for index in 0..settings.workers {
        let worker = Worker {
            id: format!("{process}/{index}"),
            claims: claims.clone(),
            endings: endings.clone(),
            pool: pool.clone(),
            executor: executor.clone(),
            tasks_added: tasks_added.clone(),
            shutdown: shutdown.clone(),
            grace: settings.shutdown_grace,
        };
        sessions.spawn(worker.run());
    }
    drop((claims, endings));
    sessions.join_all().await;
    for helper in [claimer, writer] {
        if let Err(err) = helper.await {
            tracing::error!(error = %err, "the claimer or the lease writer failed");
        }
    }
    stopped.cancel();
    background.join_all().await;
    if let Err(err) = leases::deregister(&pool, &process).await {
        tracing::warn!(error = %err, "could not deregister the worker process");
    }
}

struct Worker<E> {
    id: String,
    claims: Claims,
    endings: Endings,
    pool: PgPool,
    executor: Arc<E>,
    tasks_added: Arc<Notify>,
    shutdown: CancellationToken,
    grace: Duration,
}

impl<E: Executor> Worker<E> {
    async fn run(self) {
        while !self.shutdown.is_cancelled() {
            // Registered before looking, so an enqueue between the look and the wait still wakes us.
            let woken = self.tasks_added.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            if let Some(task) = self.claims.next(&self.id).await {
                // There may be more: hand the wake-up on to one more idle session, so a
                // burst fans out one session at a time instead of all at once.
                self.tasks_added.notify_one();
                self.execute(task).await;
                continue;
            }
            tokio::select! {
                _ = self.shutdown.cancelled() => {}
                _ = woken => {}
                _ = tokio::time::sleep(POLL_INTERVAL) => {}
            }
        }
    }

    /// Runs the task until it ends, is cancelled, or shutdown comes and the grace period
    /// passes. Stopping drops the task's future, which kills its steps' process groups.
    async fn execute(&self, task: Task) {
        let (task_id, epoch) = (task.id, task.lease_epoch);
        let lease = self.endings.lease(task_id, epoch);
        let grace_over = async {
            self.shutdown.cancelled().await;
            tokio::time::sleep(self.grace).await;
        };
        let stop = tokio::select! {
            _ = self.executor.execute(task.clone(), lease.clone()) => return,
            _ = grace_over => Stop::HandBack,
            _ = self.cancelled(task_id) => Stop::Cancel,
        };
        let ended = async {
            match stop {
                Stop::HandBack => {
                    let mut tx = self.pool.begin().await?;
                    tasks::hand_back(&mut tx, task_id, epoch).await?;
                    tx.commit().await?;
                }
                Stop::Cancel => lease.end(TaskState::Cancelled).await?,
            }
            anyhow::Ok(())
        };
        match ended.await {
            Ok(()) => {
                tracing::info!(task = task_id, ?stop, "task stopped");
                self.executor.stopped(task, stop).await;
            }
            Err(err) => {
                tracing::warn!(task = task_id, ?stop, error = %format!("{err:#}"), "could not record the stop; the task will be rescued")
            }
        }
    }

    /// Resolves once someone asks for the task to be cancelled.
    async fn cancelled(&self, task_id: i64) {
        loop {
            tokio::time::sleep(CANCEL_CHECK_INTERVAL).await;
            match tasks::cancel_requested(&self.pool, task_id).await {
                Ok(true) => return,
                Ok(false) => {}
                Err(err) => {
                    tracing::warn!(task = task_id, error = %err, "checking for cancellation failed")
                }
            }
        }
    }
}

/// Why the scheduler stopped a running task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The process shut down and gave the task back to the queue.
    HandBack,
    Cancel,
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .unwrap_or_else(|_| "conveyor".to_owned())
}
