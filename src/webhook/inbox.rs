//! The delivery inbox: stored webhooks, their outcomes, replays and retention.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgExecutor;

/// A stored delivery waiting to be interpreted.
#[derive(Debug, sqlx::FromRow)]
pub struct PendingDelivery {
    pub id: i64,
    pub delivery_id: String,
    pub event: String,
    pub payload: Option<Vec<u8>>,
    pub attempts: i32,
}

/// Keeps a delivery that cannot be interpreted (its body is not JSON), already decided.
pub async fn insert_rejected(
    db: impl PgExecutor<'_>,
    delivery_id: &str,
    event: &str,
    payload: &[u8],
    outcome: &str,
) -> sqlx::Result<Option<i64>> {
    sqlx::query_scalar(
        "INSERT INTO deliveries (delivery_id, event, payload, outcome, processed_at)
         VALUES ($1, $2, $3, $4, now())
         ON CONFLICT (delivery_id) DO NOTHING
         RETURNING id",
    )
    .bind(delivery_id)
    .bind(event)
    .bind(payload)
    .bind(outcome)
    .fetch_optional(db)
    .await
}

/// Locks up to `limit` due, unprocessed deliveries, oldest first, for the caller's transaction.
pub async fn claim_pending(
    db: impl PgExecutor<'_>,
    limit: i64,
) -> sqlx::Result<Vec<PendingDelivery>> {
    sqlx::query_as(
        "SELECT id, delivery_id, event, payload, attempts FROM deliveries
         WHERE processed_at IS NULL AND next_attempt_at <= now()
         ORDER BY next_attempt_at, id
         LIMIT $1
         FOR UPDATE SKIP LOCKED",
    )
    .bind(limit)
    .fetch_all(db)
    .await
}

/// What interpretation learned about a delivery, recorded with its outcome.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    pub action: Option<String>,
    pub installation_id: Option<i64>,
    pub repository: Option<String>,
}

/// A delivery's outcome and what was learnt of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decided {
    pub summary: Summary,
    pub outcome: String,
}

/// Records the outcomes of a batch of deliveries in one statement.
pub async fn record_outcomes(
    db: impl PgExecutor<'_>,
    outcomes: &[(i64, Decided)],
) -> sqlx::Result<()> {
    if outcomes.is_empty() {
        return Ok(());
    }
    let ids: Vec<i64> = outcomes.iter().map(|o| o.0).collect();
    let actions: Vec<Option<&str>> = outcomes
        .iter()
        .map(|o| o.1.summary.action.as_deref())
        .collect();
    let installations: Vec<Option<i64>> = outcomes
        .iter()
        .map(|o| o.1.summary.installation_id)
        .collect();
    let repositories: Vec<Option<&str>> = outcomes
        .iter()
        .map(|o| o.1.summary.repository.as_deref())
        .collect();
    let texts: Vec<&str> = outcomes.iter().map(|o| o.1.outcome.as_str()).collect();
    sqlx::query(
        "UPDATE deliveries AS d
         SET action = u.action, installation_id = u.installation_id, repository = u.repository,
             outcome = u.outcome, processed_at = now()
         FROM UNNEST($1::BIGINT[], $2::TEXT[], $3::BIGINT[], $4::TEXT[], $5::TEXT[])
              AS u (id, action, installation_id, repository, outcome)
         WHERE d.id = u.id",
    )
    .bind(&ids)
    .bind(&actions)
    .bind(&installations)
    .bind(&repositories)
    .bind(&texts)
    .execute(db)
    .await?;
    Ok(())
}

/// Schedules another attempt after `retry_in`, or, with `None`, leaves the delivery failed.
pub async fn record_failure(
    db: impl PgExecutor<'_>,
    id: i64,
    error: &str,
    retry_in: Option<Duration>,
) -> sqlx::Result<()> {
    match retry_in {
        Some(wait) => sqlx::query(
            "UPDATE deliveries
             SET attempts = attempts + 1, outcome = $2,
                 next_attempt_at = now() + make_interval(secs => $3)
             WHERE id = $1",
        )
        .bind(id)
        .bind(format!("retrying: {error}"))
        .bind(wait.as_secs_f64()),
        None => sqlx::query(
            "UPDATE deliveries
             SET attempts = attempts + 1, outcome = $2, processed_at = now()
             WHERE id = $1",
        )
        .bind(id)
        .bind(format!("failed: {error}"))
        .bind(0.0),
    }
    .execute(db)
    .await?;
    Ok(())
}

#[derive(Debug, Serialize, sqlx::FromRow, schemars::JsonSchema)]
pub struct DeliveryRow {
    /// GitHub's `X-GitHub-Delivery` id.
    pub id: String,
    pub event: String,
    pub action: Option<String>,
    pub installation_id: Option<i64>,
    pub repository: Option<String>,
    /// `None` while interpretation has not finished.
    pub outcome: Option<String>,
    pub attempts: i32,
    pub received_at: DateTime<Utc>,
    pub processed_at: Option<DateTime<Utc>>,
    /// From receipt to recorded outcome.
    pub processing_ms: Option<f64>,
    pub payload_bytes: Option<i32>,
    #[serde(skip)]
    pub seq: i64,
}

/// Deliveries, newest first. `outcome` matches an exact outcome or its kind (`ignored`
/// matches every `ignored: …`); `pending` lists those not yet processed.
pub async fn list(
    db: impl PgExecutor<'_>,
    outcome: Option<&str>,
    before_seq: Option<i64>,
    limit: i64,
) -> sqlx::Result<Vec<DeliveryRow>> {
    sqlx::query_as(
        "SELECT delivery_id AS id, event, action, installation_id, repository, outcome, attempts,
                received_at, processed_at,
                (EXTRACT(EPOCH FROM processed_at - received_at) * 1000)::FLOAT8 AS processing_ms,
                octet_length(payload) AS payload_bytes, id AS seq
         FROM deliveries
         WHERE ($1::TEXT IS NULL
                OR ($1 = 'pending' AND processed_at IS NULL)
                OR outcome = $1
                OR outcome LIKE $1 || ':%')
           AND ($2::BIGINT IS NULL OR id < $2)
         ORDER BY seq DESC
         LIMIT $3",
    )
    .bind(outcome)
    .bind(before_seq)
    .bind(limit)
    .fetch_all(db)
    .await
}

#[derive(Debug, PartialEq, Eq)]
pub enum Replay {
    Queued,
    NotFound,
    /// Retention already deleted the payload; there is nothing to interpret.
    PayloadGone,
}

/// Marks a stored delivery to be interpreted again.
pub async fn replay(db: impl PgExecutor<'_>, delivery_id: &str) -> sqlx::Result<Replay> {
    let has_payload: Option<bool> = sqlx::query_scalar(
        "UPDATE deliveries
         SET processed_at = CASE WHEN payload IS NULL THEN processed_at END,
             outcome = CASE WHEN payload IS NULL THEN outcome END,
             attempts = CASE WHEN payload IS NULL THEN attempts ELSE 0 END,
             next_attempt_at = now()
         WHERE delivery_id = $1
         RETURNING payload IS NOT NULL",
    )
    .bind(delivery_id)
    .fetch_optional(db)
    .await?;
    Ok(match has_payload {
        None => Replay::NotFound,
        Some(false) => Replay::PayloadGone,
        Some(true) => Replay::Queued,
    })
}

/// Which of `delivery_ids` are stored.
pub async fn stored(db: impl PgExecutor<'_>, delivery_ids: &[String]) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar("SELECT delivery_id FROM deliveries WHERE delivery_id = ANY($1)")
        .bind(delivery_ids)
        .fetch_all(db)
        .await
}

/// Deletes the payloads of up to `batch` processed deliveries older than `age`; returns how many.
pub async fn drop_old_payloads(
    db: impl PgExecutor<'_>,
    age: Duration,
    batch: i64,
) -> sqlx::Result<u64> {
    let done = sqlx::query(
        "UPDATE deliveries SET payload = NULL
         WHERE id IN (
             SELECT id FROM deliveries
             WHERE payload IS NOT NULL AND processed_at IS NOT NULL
               AND received_at < now() - make_interval(secs => $1)
             LIMIT $2
             FOR UPDATE SKIP LOCKED
         )",
    )
    .bind(age.as_secs_f64())
    .bind(batch)
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}
