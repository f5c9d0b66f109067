//! Group commit for the inbox: concurrent webhook requests are stored by one multi-row
//! INSERT in one transaction, and each request is answered once that transaction commits.
//! One WAL flush then covers a whole batch instead of one delivery.

use std::collections::HashSet;
use std::sync::Arc;

use bytes::Bytes;
use sqlx::PgPool;
use tokio::sync::{Mutex, Notify, mpsc, oneshot};

use super::inbox::Decided;

/// Largest batch one INSERT stores.
const MAX_BATCH: usize = 256;
/// Batches being written at once: while one commits, the next one gathers.
const WRITERS: usize = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    New,
    Duplicate,
}

#[derive(Debug, thiserror::Error)]
#[error("delivery could not be stored: {0}")]
pub struct StoreError(String);

struct Pending {
    delivery_id: String,
    event: String,
    payload: Bytes,
    replay_key: [u8; 32],
    decided: Option<Decided>,
    reply: oneshot::Sender<Result<Stored, StoreError>>,
}

#[derive(Clone)]
pub struct InboxWriter {
    queue: mpsc::Sender<Pending>,
}

impl InboxWriter {
    /// Starts the writers; they stop when every `InboxWriter` clone is dropped.
    pub fn spawn(pool: PgPool, deliveries_added: Arc<Notify>) -> Self {
        let (queue, receiver) = mpsc::channel(MAX_BATCH * WRITERS * 4);
        let receiver = Arc::new(Mutex::new(receiver));
        for _ in 0..WRITERS {
            tokio::spawn(write_batches(
                pool.clone(),
                receiver.clone(),
                deliveries_added.clone(),
            ));
        }
        Self { queue }
    }

    /// Stores a delivery durably; returns once it is committed. A delivery is a duplicate
    /// when its id is stored, or the same event with the same signed body under another id:
    /// the signature does not cover `X-GitHub-Delivery`, so a captured request replayed
    /// under a fresh id is otherwise a new delivery. `body_mac` is the body's verified
    /// HMAC-SHA256: equal bodies have equal ones, and it is already computed, where a
    /// digest of its own would cost a second pass over every payload. A delivery its
    /// payload already `decided` is stored processed, and the interpretation job never
    /// reads it back.
    pub async fn store(
        &self,
        delivery_id: String,
        event: String,
        payload: Bytes,
        body_mac: [u8; 32],
        decided: Option<Decided>,
    ) -> Result<Stored, StoreError> {
        let (reply, answer) = oneshot::channel();
        let pending = Pending {
            delivery_id,
            event,
            payload,
            replay_key: body_mac,
            decided,
            reply,
        };
        self.queue
            .send(pending)
            .await
            .map_err(|_| StoreError("the inbox writer stopped".into()))?;
        answer
            .await
            .map_err(|_| StoreError("the inbox writer stopped".into()))?
    }
}

async fn write_batches(
    pool: PgPool,
    receiver: Arc<Mutex<mpsc::Receiver<Pending>>>,
    deliveries_added: Arc<Notify>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        {
            let mut receiver = receiver.lock().await;
            if receiver.recv_many(&mut batch, MAX_BATCH).await == 0 {
                return;
            }
        }
        let inserted = insert_batch(&pool, &batch).await;
        match &inserted {
            Ok(rows) if rows.iter().any(|row| row.pending) => deliveries_added.notify_one(),
            Ok(_) => {}
            Err(err) => {
                tracing::error!(error = %err, deliveries = batch.len(), "storing deliveries failed")
            }
        }
        reply_all(&mut batch, inserted);
    }
}

/// Answers every request of the batch: those whose row was not inserted are duplicates. A
/// delivery id sent twice in one batch is new for its first request only.
fn reply_all(batch: &mut Vec<Pending>, inserted: sqlx::Result<Vec<Inserted>>) {
    let (mut fresh, failure): (HashSet<String>, _) = match inserted {
        Ok(rows) => (rows.into_iter().map(|row| row.delivery_id).collect(), None),
        Err(err) => (HashSet::new(), Some(err.to_string())),
    };
    for pending in batch.drain(..) {
        let outcome = match &failure {
            Some(err) => Err(StoreError(err.clone())),
            None if fresh.remove(&pending.delivery_id) => Ok(Stored::New),
            None => Ok(Stored::Duplicate),
        };
        // The client may have hung up; the delivery is stored regardless.
        let _ = pending.reply.send(outcome);
    }
}

/// A row the batch stored.
#[derive(sqlx::FromRow)]
struct Inserted {
    delivery_id: String,
    /// Left for the interpretation job.
    pending: bool,
}

async fn insert_batch(pool: &PgPool, batch: &[Pending]) -> sqlx::Result<Vec<Inserted>> {
    let ids: Vec<&str> = batch.iter().map(|p| p.delivery_id.as_str()).collect();
    let events: Vec<&str> = batch.iter().map(|p| p.event.as_str()).collect();
    let payloads: Vec<&[u8]> = batch.iter().map(|p| p.payload.as_ref()).collect();
    let keys: Vec<&[u8]> = batch.iter().map(|p| p.replay_key.as_slice()).collect();
    let actions: Vec<Option<&str>> = batch
        .iter()
        .map(|p| p.decided.as_ref().and_then(|d| d.summary.action.as_deref()))
        .collect();
    let installations: Vec<Option<i64>> = batch
        .iter()
        .map(|p| p.decided.as_ref().and_then(|d| d.summary.installation_id))
        .collect();
    let repositories: Vec<Option<&str>> = batch
        .iter()
        .map(|p| {
            p.decided
                .as_ref()
                .and_then(|d| d.summary.repository.as_deref())
        })
        .collect();
    let outcomes: Vec<Option<&str>> = batch
        .iter()
        .map(|p| p.decided.as_ref().map(|d| d.outcome.as_str()))
        .collect();
    // No conflict target: a row conflicting on the delivery id or on (event, replay key)
    // is skipped alike, in this one statement, so no interleaving can store both.
    sqlx::query_as(
        "INSERT INTO deliveries (delivery_id, event, payload, replay_key, action,
                                 installation_id, repository, outcome, processed_at)
         SELECT id, event, payload, replay_key, action, installation_id, repository, outcome,
                CASE WHEN outcome IS NOT NULL THEN now() END
         FROM UNNEST($1::TEXT[], $2::TEXT[], $3::BYTEA[], $4::BYTEA[], $5::TEXT[],
                     $6::BIGINT[], $7::TEXT[], $8::TEXT[])
              AS u (id, event, payload, replay_key, action, installation_id, repository,
                    outcome)
         ON CONFLICT DO NOTHING
         RETURNING delivery_id, processed_at IS NULL AS pending",
    )
    .bind(&ids)
    .bind(&events)
    .bind(&payloads)
    .bind(&keys)
    .bind(&actions)
    .bind(&installations)
    .bind(&repositories)
    .bind(&outcomes)
    .fetch_all(pool)
    .await
}
