//! Idempotency keys: a client's `Idempotency-Key` on a request that creates or starts
//! something is kept (as a hash) for [`KEPT`] with the hash of that request and what it made,
//! so that a repeat is answered with what the first one made instead of making it twice.

use std::time::Duration;

use sha2::{Digest, Sha256};
use sqlx::{PgExecutor, PgPool};

/// How long a key is remembered.
pub const KEPT: Duration = Duration::from_secs(6 * 3600);
/// A first request that has not finished after this long is taken as lost (its process
/// stopped), and the key may be used again.
const ABANDONED_AFTER: Duration = Duration::from_secs(300);

/// What a key says about a request that comes with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The key is new (or forgotten): this request goes ahead, and [`settle`] records it.
    First,
    /// The same request came before and succeeded; `location` is what it made.
    Repeat { location: Option<String> },
    /// The same request came before and has not finished yet.
    InFlight,
    /// The key came before with another request.
    Reused,
}

pub fn hash(parts: &[&[u8]]) -> Vec<u8> {
    let mut digest = Sha256::new();
    for part in parts {
        // Lengths first, so that no two lists of parts hash alike.
        digest.update((part.len() as u64).to_be_bytes());
        digest.update(part);
    }
    digest.finalize().to_vec()
}

/// Claims `key_hash` for the request hashed `request_hash`, or says how it was used.
pub async fn claim(db: &PgPool, key_hash: &[u8], request_hash: &[u8]) -> sqlx::Result<Claim> {
    let inserted = sqlx::query(
        "INSERT INTO idempotency_keys (key_hash, request_hash) VALUES ($1, $2)
         ON CONFLICT (key_hash) DO UPDATE
             SET request_hash = EXCLUDED.request_hash, status = NULL, location = NULL,
                 created_at = now()
             WHERE idempotency_keys.created_at < now() - make_interval(secs => $3)
                OR (idempotency_keys.status IS NULL
                    AND idempotency_keys.created_at < now() - make_interval(secs => $4))",
    )
    .bind(key_hash)
    .bind(request_hash)
    .bind(KEPT.as_secs_f64())
    .bind(ABANDONED_AFTER.as_secs_f64())
    .execute(db)
    .await?;
    if inserted.rows_affected() == 1 {
        return Ok(Claim::First);
    }
    let (stored, status, location): (Vec<u8>, Option<i16>, Option<String>) = sqlx::query_as(
        "SELECT request_hash, status, location FROM idempotency_keys WHERE key_hash = $1",
    )
    .bind(key_hash)
    .fetch_one(db)
    .await?;
    Ok(if stored != request_hash {
        Claim::Reused
    } else if status.is_some() {
        Claim::Repeat { location }
    } else {
        Claim::InFlight
    })
}

/// Records how the first request with `key_hash` ended: kept when it succeeded, with what it
/// made; forgotten when it failed, so that the client may try again with the same key.
pub async fn settle(
    db: impl PgExecutor<'_>,
    key_hash: &[u8],
    succeeded: Option<(u16, Option<&str>)>,
) -> sqlx::Result<()> {
    match succeeded {
        Some((status, location)) => {
            sqlx::query(
                "UPDATE idempotency_keys SET status = $2, location = $3 WHERE key_hash = $1",
            )
            .bind(key_hash)
            .bind(status as i16)
            .bind(location)
            .execute(db)
            .await?
        }
        None => {
            sqlx::query("DELETE FROM idempotency_keys WHERE key_hash = $1 AND status IS NULL")
                .bind(key_hash)
                .execute(db)
                .await?
        }
    };
    Ok(())
}

/// Forgets up to `limit` keys older than [`KEPT`]; returns how many.
pub async fn delete_expired(db: impl PgExecutor<'_>, limit: i64) -> sqlx::Result<u64> {
    let done = sqlx::query(
        "DELETE FROM idempotency_keys WHERE key_hash IN (
             SELECT key_hash FROM idempotency_keys
             WHERE created_at < now() - make_interval(secs => $1) LIMIT $2)",
    )
    .bind(KEPT.as_secs_f64())
    .bind(limit)
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}
