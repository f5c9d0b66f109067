//! Connecting to Postgres, creating the database when it is missing, applying migrations.

use anyhow::Context;
use sqlx::Postgres;
use sqlx::migrate::{MigrateDatabase, Migrator};
use sqlx::postgres::{PgPool, PgPoolOptions};

/// Every migration under `migrations/`, embedded at build time so the binary carries them.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Connects to `url`, creating the database first if it does not exist.
pub async fn connect(url: &str, max_connections: u32) -> anyhow::Result<PgPool> {
    let exists = Postgres::database_exists(url)
        .await
        .with_context(|| format!("DATABASE_URL: cannot reach Postgres at {}", redact(url)))?;
    if !exists {
        Postgres::create_database(url)
            .await
            .with_context(|| format!("DATABASE_URL: cannot create database {}", redact(url)))?;
        tracing::info!(database = %redact(url), "created database");
    }
    PgPoolOptions::new()
        .max_connections(max_connections)
        .connect(url)
        .await
        .with_context(|| format!("DATABASE_URL: cannot connect to {}", redact(url)))
}

pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    MIGRATOR.run(pool).await.context("applying migrations")
}

/// Takes a transaction-scoped advisory lock if it is free: how one process is elected for a
/// job every process runs (rescue, redelivery sweeps). The lock goes with the transaction.
pub async fn try_lock(conn: &mut sqlx::PgConnection, key: i64) -> sqlx::Result<bool> {
    sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
        .bind(key)
        .fetch_one(conn)
        .await
}

/// The URL without its password, for messages and logs.
fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn redact_hides_the_password_only() {
        assert_eq!(
            redact("postgres://app:s3cret@db:5432/conveyor"),
            "postgres://app:***@db:5432/conveyor"
        );
        assert_eq!(
            redact("postgres://postgres@localhost/c"),
            "postgres://postgres@localhost/c"
        );
    }
}
