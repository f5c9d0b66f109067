//! The delivery inbox: stored webhooks and their outcomes.

use sqlx::PgExecutor;

/// A stored delivery waiting to be interpreted.
#[derive(Debug, sqlx::FromRow)]
pub struct PendingDelivery {
    pub id: i64,
    pub delivery_id: String,
    pub event: String,
    pub payload: Vec<u8>,
}

/// Stores a delivery; `None` when its delivery id is already stored.
pub async fn insert(
    db: impl PgExecutor<'_>,
    delivery_id: &str,
    event: &str,
    payload: &[u8],
) -> sqlx::Result<Option<i64>> {
    sqlx::query_scalar(
        "INSERT INTO deliveries (delivery_id, event, payload) VALUES ($1, $2, $3)
         ON CONFLICT (delivery_id) DO NOTHING
         RETURNING id",
    )
    .bind(delivery_id)
    .bind(event)
    .bind(payload)
    .fetch_optional(db)
    .await
}

/// Locks the oldest unprocessed delivery for the caller's transaction.
pub async fn claim_pending(db: impl PgExecutor<'_>) -> sqlx::Result<Option<PendingDelivery>> {
    sqlx::query_as(
        "SELECT id, delivery_id, event, payload FROM deliveries
         WHERE processed_at IS NULL
         ORDER BY id
         LIMIT 1
         FOR UPDATE SKIP LOCKED",
    )
    .fetch_optional(db)
    .await
}

/// What interpretation learned about a delivery, recorded with its outcome.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    pub action: Option<String>,
    pub installation_id: Option<i64>,
    pub repository: Option<String>,
}

pub async fn record_outcome(
    db: impl PgExecutor<'_>,
    id: i64,
    summary: &Summary,
    outcome: &str,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE deliveries
         SET action = $2, installation_id = $3, repository = $4, outcome = $5, processed_at = now()
         WHERE id = $1",
    )
    .bind(id)
    .bind(&summary.action)
    .bind(summary.installation_id)
    .bind(&summary.repository)
    .bind(outcome)
    .execute(db)
    .await?;
    Ok(())
}
