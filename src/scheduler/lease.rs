//! A claimed task's lease, the only way its executor ends it. Endings are group-committed:
//! those that arrive while one batch is being written go together in the next, one
//! statement and one commit for all of them.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};

use crate::engine::board::BoardState;
use crate::engine::tasks::{self, Ending, EngineError};
use crate::engine::{TaskState, TransitionError};

/// Endings written in one statement at most.
const BATCH: usize = 256;

type Request = (Ending, oneshot::Sender<Result<(), EngineError>>);

/// Ends leases for the sessions of one process.
#[derive(Clone)]
pub struct Endings {
    requests: mpsc::UnboundedSender<Request>,
    /// For the leases' checks, which are single reads and not batched.
    pool: PgPool,
}

impl Endings {
    /// Starts the writer; it stops when every handle (and every lease) is dropped.
    pub fn spawn(pool: PgPool) -> (Self, tokio::task::JoinHandle<()>) {
        let (requests, receiver) = mpsc::unbounded_channel();
        let writer = tokio::spawn(write(pool.clone(), receiver));
        (Self { requests, pool }, writer)
    }

    pub fn lease(&self, task_id: i64, epoch: i64) -> Lease {
        Lease {
            task_id,
            epoch,
            endings: self.clone(),
            ended: Arc::default(),
        }
    }
}

/// The right to end task `task_id` while its lease epoch is still `epoch`.
#[derive(Clone)]
pub struct Lease {
    task_id: i64,
    epoch: i64,
    endings: Endings,
    /// Shared by the clones: set once the task is no longer held under this lease because an
    /// ending was written or refused as stale, so that the scheduler knows, without asking the
    /// database, whether an executor that returned left its task running.
    ended: Arc<AtomicBool>,
}

impl Lease {
    /// Whether the task is still running under this lease and nobody asked it to stop: what
    /// an executor checks right before each effect on GitHub (push, pull request, check run,
    /// status comment), so that a rescued, handed-back or cancelled run stops having them.
    pub async fn is_held(&self) -> Result<bool, EngineError> {
        Ok(tasks::lease_held(&self.endings.pool, self.task_id, self.epoch).await?)
    }

    /// Whether an ending of this lease was written, or refused because the task had already
    /// moved on.
    pub(super) fn is_ended(&self) -> bool {
        self.ended.load(Ordering::SeqCst)
    }

    pub fn task_id(&self) -> i64 {
        self.task_id
    }

    pub fn epoch(&self) -> i64 {
        self.epoch
    }

    /// Moves the task to `to`; refused when the lease moved on (the task was rescued,
    /// handed back or cancelled meanwhile) or the state machine does not allow it.
    pub async fn end(&self, to: TaskState) -> Result<(), EngineError> {
        self.submit(Ending::new(self.task_id, self.epoch, to)).await
    }

    /// Ends a failed attempt by scheduling the next one after `delay`.
    pub async fn retry_in(&self, delay: Duration) -> Result<(), EngineError> {
        let ending = Ending {
            retry_in: Some(delay),
            ..Ending::new(self.task_id, self.epoch, TaskState::Scheduled)
        };
        self.submit(ending).await
    }

    /// Moves the task to `to` (after `retry_in`, when scheduled; the board to `board` when
    /// given) in the caller's transaction `tx`, which holds what the change must be written
    /// with (the run's end, the effects on GitHub it causes), and commits it; nothing of `tx`
    /// is written when the ending is refused.
    pub async fn end_in(
        &self,
        mut tx: sqlx::Transaction<'_, sqlx::Postgres>,
        to: TaskState,
        retry_in: Option<Duration>,
        board: Option<BoardState>,
    ) -> Result<(), EngineError> {
        let ending = Ending {
            retry_in,
            board,
            ..Ending::new(self.task_id, self.epoch, to)
        };
        let result = match tasks::end_lease(&mut tx, &ending).await {
            Ok(()) => tx.commit().await.map_err(EngineError::from),
            Err(err) => Err(err),
        };
        if ends_lease(&result) {
            self.ended.store(true, Ordering::SeqCst);
        }
        result
    }

    async fn submit(&self, ending: Ending) -> Result<(), EngineError> {
        let (reply, answer) = oneshot::channel();
        // The writer lives as long as any lease, so it is gone only if it panicked.
        let gone = || EngineError::Db(sqlx::Error::WorkerCrashed);
        self.endings
            .requests
            .send((ending, reply))
            .map_err(|_| gone())?;
        let result = answer.await.map_err(|_| gone())?;
        if ends_lease(&result) {
            self.ended.store(true, Ordering::SeqCst);
        }
        result
    }
}

/// Whether an ending's result leaves the task out of this lease's hands: written, or refused
/// because the lease moved on or the task is no longer running. A refused transition out of
/// `running` under a current lease (one the state machine does not allow) leaves the task
/// held, and so does a database error.
fn ends_lease(result: &Result<(), EngineError>) -> bool {
    match result {
        Ok(()) => true,
        Err(EngineError::Transition(TransitionError::NotAllowed { from, .. })) => {
            *from != TaskState::Running
        }
        Err(EngineError::Transition(
            TransitionError::StaleLease { .. } | TransitionError::NotFound { .. },
        )) => true,
        Err(EngineError::Db(_)) => false,
    }
}

async fn write(pool: PgPool, mut requests: mpsc::UnboundedReceiver<Request>) {
    let mut batch = Vec::with_capacity(BATCH);
    while requests.recv_many(&mut batch, BATCH).await > 0 {
        let endings: Vec<Ending> = batch.iter().map(|(ending, _)| *ending).collect();
        match end_leases(&pool, &endings).await {
            Ok(results) => {
                for ((_, reply), result) in batch.drain(..).zip(results) {
                    let _ = reply.send(result.map_err(EngineError::from));
                }
            }
            // One at a time, so each caller gets its own error.
            Err(_) => {
                for (ending, reply) in batch.drain(..) {
                    let _ = reply.send(end_lease(&pool, &ending).await);
                }
            }
        }
    }
}

async fn end_leases(
    pool: &PgPool,
    endings: &[Ending],
) -> sqlx::Result<Vec<Result<(), crate::engine::state::TransitionError>>> {
    tasks::end_leases(&mut *pool.acquire().await?, endings).await
}

async fn end_lease(pool: &PgPool, ending: &Ending) -> Result<(), EngineError> {
    tasks::end_lease(&mut *pool.acquire().await?, ending).await
}
