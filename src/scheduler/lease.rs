//! A claimed task's lease, the only way its executor ends it. Endings are group-committed:
//! those that arrive while one batch is being written go together in the next, one
//! statement and one commit for all of them.

use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};

use crate::engine::TaskState;
use crate::engine::tasks::{self, Ending, EngineError};

/// Endings written in one statement at most.
const BATCH: usize = 256;

type Request = (Ending, oneshot::Sender<Result<(), EngineError>>);

/// Ends leases for the sessions of one process.
#[derive(Clone)]
pub struct Endings {
    requests: mpsc::UnboundedSender<Request>,
}

impl Endings {
    /// Starts the writer; it stops when every handle (and every lease) is dropped.
    pub fn spawn(pool: PgPool) -> (Self, tokio::task::JoinHandle<()>) {
        let (requests, receiver) = mpsc::unbounded_channel();
        let writer = tokio::spawn(write(pool, receiver));
        (Self { requests }, writer)
    }

    pub fn lease(&self, task_id: i64, epoch: i64) -> Lease {
        Lease {
            task_id,
            epoch,
            endings: self.clone(),
        }
    }
}

/// The right to end task `task_id` while its lease epoch is still `epoch`.
#[derive(Clone)]
pub struct Lease {
    task_id: i64,
    epoch: i64,
    endings: Endings,
}

impl Lease {
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

    async fn submit(&self, ending: Ending) -> Result<(), EngineError> {
        let (reply, answer) = oneshot::channel();
        // The writer lives as long as any lease, so it is gone only if it panicked.
        let gone = || EngineError::Db(sqlx::Error::WorkerCrashed);
        self.endings
            .requests
            .send((ending, reply))
            .map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
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
