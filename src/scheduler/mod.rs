//! Workers claim queued tasks from Postgres and hand them to an executor; processes
//! heartbeat, and the tasks of a process that went silent are rescued.

mod claim;
mod lease;
pub mod leases;
mod sessions;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub use claim::{claim, claim_next};
pub use lease::Lease;
pub use sessions::{SessionFault, SessionPool};

use crate::engine::tasks::{self, EngineError, Rescued, Task};
use crate::housekeeping::vacuum;
use claim::Claims;
use lease::Endings;

/// How often an idle worker looks for work when nothing woke it.
const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// How often a running task's worker checks whether it was cancelled; a cancelled step is
/// stopped well within five seconds.
const CANCEL_CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// Recorded in the audit trail of a task whose executor returned without ending its lease.
const UNENDED: &str = "the executor returned without ending the task's lease";
/// How soon, and at most how far apart, recording a stopped run is tried again while the
/// database fails.
const RECORD_RETRY_FIRST: Duration = Duration::from_millis(500);
const RECORD_RETRY_MAX: Duration = Duration::from_secs(30);

/// Runs a claimed task to its end, which it records through the task's lease.
pub trait Executor: Send + Sync + 'static {
    /// An error says the session itself cannot work: the session takes no more work until
    /// [`Executor::check`] passes. Either way the executor ends the task through its lease;
    /// a task it leaves running is taken back as from a crashed session (requeued with the
    /// attempt counted, or failed when attempts are used up).
    fn execute(
        &self,
        task: Task,
        lease: Lease,
    ) -> impl Future<Output = Result<(), SessionFault>> + Send;

    /// Whether the unhealthy session `session` can work again.
    fn check(&self, _session: &str) -> impl Future<Output = Result<(), SessionFault>> + Send {
        async { Ok(()) }
    }

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
    let health = Arc::new(SessionPool::new(settings.workers.into()));
    let mut background = tokio::task::JoinSet::new();
    background.spawn(leases::run(
        pool.clone(),
        process.clone(),
        health.clone(),
        settings,
        stopped.clone(),
    ));
    background.spawn(crate::wakeup::listen(
        pool.clone(),
        crate::engine::tasks::WAKE_CHANNEL,
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
            index: index.into(),
            health: health.clone(),
            check_interval: settings.heartbeat_interval(),
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
    /// This session's place in `health`.
    index: usize,
    health: Arc<SessionPool>,
    /// How often an unhealthy session checks whether it can work again.
    check_interval: Duration,
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
            if !self.health.is_healthy(self.index) {
                self.recover().await;
                continue;
            }
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

    /// Waits a check interval, then asks the executor whether this session can work again.
    async fn recover(&self) {
        tokio::select! {
            _ = self.shutdown.cancelled() => return,
            _ = tokio::time::sleep(self.check_interval) => {}
        }
        match self.executor.check(&self.id).await {
            Ok(()) => {
                self.health.set_healthy(self.index, true);
                tracing::info!(session = %self.id, "worker session is healthy again");
            }
            Err(fault) => {
                tracing::warn!(session = %self.id, %fault, "worker session still unhealthy")
            }
        }
    }

    fn fault(&self, fault: &SessionFault) {
        self.health.set_healthy(self.index, false);
        tracing::warn!(session = %self.id, %fault, "worker session unhealthy: it takes no work until a check passes");
    }

    /// Runs the task until it ends, is cancelled, or shutdown comes and the grace period
    /// passes. Stopping drops the task's future, which kills its steps' process groups. The
    /// executor runs as a task of its own, so that a panic in it is this session's crash
    /// and not the whole process's.
    async fn execute(&self, task: Task) {
        let (task_id, epoch) = (task.id, task.lease_epoch);
        let lease = self.endings.lease(task_id, epoch);
        let mut run = tokio::spawn({
            let (executor, task, lease) = (self.executor.clone(), task.clone(), lease.clone());
            async move { executor.execute(task, lease).await }
        });
        let grace_over = async {
            self.shutdown.cancelled().await;
            tokio::time::sleep(self.grace).await;
        };
        let interruption = tokio::select! {
            ran = &mut run => {
                let crash = match ran {
                    Ok(Ok(())) => None,
                    Ok(Err(fault)) => {
                        self.fault(&fault);
                        None
                    }
                    Err(err) => {
                        let message = panic_message(err);
                        self.fault(&SessionFault(format!("crashed: {message}")));
                        Some(message)
                    }
                };
                if lease.is_ended() {
                    return;
                }
                // However the executor went, a task it left running would hold its
                // repository's slot until this process exits.
                Interruption::Crash(crash.unwrap_or_else(|| UNENDED.to_owned()))
            }
            _ = grace_over => Interruption::HandBack,
            _ = self.cancelled(task_id) => Interruption::Cancel,
        };
        if !matches!(interruption, Interruption::Crash(_)) {
            run.abort();
            // Only once the run's future is gone are its steps' processes gone too.
            let _ = run.await;
        }
        if let Some(stop) = self.record(&lease, &interruption).await {
            tracing::info!(task_id = task_id, ?stop, "task stopped");
            self.executor.stopped(task, stop).await;
        }
    }

    /// Records how the run under `lease` was interrupted, retrying while the database fails:
    /// a task left running under a live process would never be rescued. `None` when the task
    /// had moved on already, or shutdown came first (the task is then rescued once this
    /// process is gone).
    async fn record(&self, lease: &Lease, interruption: &Interruption) -> Option<Stop> {
        let task_id = lease.task_id();
        let mut wait = RECORD_RETRY_FIRST;
        loop {
            match self.record_once(lease, interruption).await {
                Ok(stop) => return Some(stop),
                Err(EngineError::Transition(err)) => {
                    tracing::info!(task_id = task_id, error = %err, "the task moved on before its stop was recorded");
                    return None;
                }
                Err(EngineError::Db(err)) => {
                    tracing::warn!(task_id = task_id, error = %err, retry_in_ms = wait.as_millis() as u64, "could not record the stop")
                }
            }
            tokio::select! {
                _ = self.shutdown.cancelled() => {
                    tracing::warn!(task_id = task_id, "stop not recorded: the task will be rescued once this process is gone");
                    return None;
                }
                _ = tokio::time::sleep(wait) => {}
            }
            wait = (wait * 2).min(RECORD_RETRY_MAX);
        }
    }

    async fn record_once(
        &self,
        lease: &Lease,
        interruption: &Interruption,
    ) -> Result<Stop, EngineError> {
        let (task_id, epoch) = (lease.task_id(), lease.epoch());
        Ok(match interruption {
            Interruption::HandBack => {
                let mut tx = self.pool.begin().await?;
                tasks::hand_back(&mut tx, task_id, epoch).await?;
                tx.commit().await?;
                Stop::HandBack
            }
            Interruption::Cancel => {
                let mut tx = self.pool.begin().await?;
                tasks::stopped_cancelled(&mut tx, task_id, epoch).await?;
                tx.commit().await?;
                Stop::Cancel
            }
            Interruption::Crash(message) => {
                let mut tx = self.pool.begin().await?;
                let rescued = tasks::crashed(&mut tx, task_id, epoch, message).await?;
                tx.commit().await?;
                Stop::Crash(rescued)
            }
        })
    }

    /// Resolves once someone asks for the task to be cancelled.
    async fn cancelled(&self, task_id: i64) {
        loop {
            tokio::time::sleep(CANCEL_CHECK_INTERVAL).await;
            match tasks::cancel_requested(&self.pool, task_id).await {
                Ok(true) => return,
                Ok(false) => {}
                Err(err) => {
                    tracing::warn!(task_id = task_id, error = %err, "checking for cancellation failed")
                }
            }
        }
    }
}

/// Why the scheduler stopped a running task, as recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The process shut down and gave the task back to the queue.
    HandBack,
    Cancel,
    /// The session crashed running it; the task was requeued or, out of attempts, failed.
    Crash(Rescued),
}

/// What interrupted a run, before it is recorded.
enum Interruption {
    HandBack,
    Cancel,
    /// The executor panicked, with this message, or returned without ending its lease.
    Crash(String),
}

fn panic_message(err: tokio::task::JoinError) -> String {
    match err.try_into_panic() {
        Ok(panic) => panic
            .downcast_ref::<&str>()
            .map(|text| (*text).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".to_owned()),
        Err(err) => err.to_string(),
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .unwrap_or_else(|_| "conveyor".to_owned())
}
