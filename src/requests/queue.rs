//! The requests' rows: queued by interpretation in the delivery's transaction, taken one at
//! a time under a row lock by a worker, closed with their outcome or put off for a retry.

use std::time::Duration;

use sqlx::types::Json;
use sqlx::{PgConnection, PgExecutor};

use super::{Asked, Request};

/// The `LISTEN`/`NOTIFY` channel that wakes the request workers.
pub const CHANNEL: &str = "conveyor_requests";

/// Queues `asked` for a delivery and wakes the request workers, in one round trip; a
/// redelivery of the same delivery queues nothing and wakes no one.
pub async fn insert(
    db: impl PgExecutor<'_>,
    delivery_id: i64,
    asked: &Asked,
) -> sqlx::Result<bool> {
    let queued: i64 = sqlx::query_scalar(
        "WITH queued AS (
             INSERT INTO requests (delivery_id, installation_id, repo_owner, repo_name,
                                   default_branch, issue_number, actor, actor_is_bot, request)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
             ON CONFLICT (delivery_id, position) DO NOTHING
             RETURNING 1
         )
         SELECT count(pg_notify($10, '')) FROM queued",
    )
    .bind(delivery_id)
    .bind(asked.installation_id)
    .bind(&asked.owner)
    .bind(&asked.name)
    .bind(&asked.default_branch)
    .bind(asked.issue)
    .bind(&asked.actor)
    .bind(asked.actor_is_bot)
    .bind(Json(&asked.request))
    .bind(CHANNEL)
    .fetch_one(db)
    .await?;
    Ok(queued == 1)
}

#[derive(sqlx::FromRow)]
struct Row {
    id: i64,
    delivery_id: Option<i64>,
    installation_id: i64,
    repo_owner: String,
    repo_name: String,
    default_branch: String,
    issue_number: Option<i64>,
    actor: String,
    actor_is_bot: bool,
    request: Json<Request>,
    attempts: i32,
}

/// A request taken by a worker, its row locked by the worker's transaction.
pub struct Taken {
    pub id: i64,
    /// The delivery that carried the request; a task it creates records it.
    pub delivery_id: Option<i64>,
    pub asked: Asked,
    pub attempts: i32,
}

/// Takes the oldest due request nobody else holds, locked until `conn`'s transaction ends.
pub async fn take(conn: &mut PgConnection) -> sqlx::Result<Option<Taken>> {
    let row: Option<Row> = sqlx::query_as(
        "SELECT id, delivery_id, installation_id, repo_owner, repo_name, default_branch, issue_number, actor,
                actor_is_bot, request, attempts
         FROM requests
         WHERE processed_at IS NULL AND next_attempt_at <= now()
         ORDER BY id
         LIMIT 1
         FOR UPDATE SKIP LOCKED",
    )
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|row| Taken {
        id: row.id,
        delivery_id: row.delivery_id,
        attempts: row.attempts,
        asked: Asked {
            installation_id: row.installation_id,
            owner: row.repo_owner,
            name: row.repo_name,
            default_branch: row.default_branch,
            issue: row.issue_number,
            actor: row.actor,
            actor_is_bot: row.actor_is_bot,
            request: row.request.0,
        },
    }))
}

pub async fn processed(db: impl PgExecutor<'_>, id: i64, outcome: &str) -> sqlx::Result<()> {
    sqlx::query("UPDATE requests SET processed_at = now(), outcome = $2 WHERE id = $1")
        .bind(id)
        .bind(outcome)
        .execute(db)
        .await?;
    Ok(())
}

/// Puts a request off until `after` from now, its attempt counted.
pub async fn retry_in(
    db: impl PgExecutor<'_>,
    id: i64,
    after: Duration,
    error: &str,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE requests SET attempts = attempts + 1, outcome = $3,
             next_attempt_at = now() + make_interval(secs => $2)
         WHERE id = $1",
    )
    .bind(id)
    .bind(after.as_secs_f64())
    .bind(error)
    .execute(db)
    .await?;
    Ok(())
}

/// When the next pending request falls due, if one is pending.
pub async fn next_due(db: impl PgExecutor<'_>) -> sqlx::Result<Option<Duration>> {
    // No `GREATEST(0, …)` here: it would turn "nothing pending" (NULL) into "due now".
    let seconds: Option<f64> = sqlx::query_scalar(
        "SELECT EXTRACT(EPOCH FROM min(next_attempt_at) - now())::FLOAT8
         FROM requests WHERE processed_at IS NULL",
    )
    .fetch_one(db)
    .await?;
    Ok(seconds.map(|seconds| Duration::from_secs_f64(seconds.max(0.0))))
}

/// Deletes up to `batch` requests decided more than `age` ago; returns how many.
pub async fn delete_processed(
    db: impl PgExecutor<'_>,
    age: Duration,
    batch: i64,
) -> sqlx::Result<u64> {
    crate::db::delete_older(db, "requests", "processed_at", age, batch).await
}
