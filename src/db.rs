//! Connecting to Postgres, creating the database when it is missing, applying migrations.

use anyhow::Context;
use sqlx::Postgres;
use sqlx::migrate::{MigrateDatabase, Migrator};
use sqlx::pool::PoolConnection;
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
/// job every process runs inside one transaction (rescue). The lock goes with the transaction.
pub async fn try_lock(conn: &mut sqlx::PgConnection, key: i64) -> sqlx::Result<bool> {
    sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
        .bind(key)
        .fetch_one(conn)
        .await
}

/// A process elected for a job that must not hold a transaction open (VACUUM, calls to
/// GitHub): a session advisory lock on a connection of its own, which dies with the process.
pub struct Elected {
    conn: PoolConnection<Postgres>,
    key: i64,
    released: bool,
}

/// Takes the session advisory lock `key` if it is free.
pub async fn elect(pool: &PgPool, key: i64) -> sqlx::Result<Option<Elected>> {
    let mut conn = pool.acquire().await?;
    let elected: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
        .bind(key)
        .fetch_one(&mut *conn)
        .await?;
    Ok(elected.then_some(Elected {
        conn,
        key,
        released: false,
    }))
}

impl Elected {
    pub fn conn(&mut self) -> &mut sqlx::PgConnection {
        &mut self.conn
    }

    pub async fn release(mut self) -> sqlx::Result<()> {
        sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(self.key)
            .execute(&mut *self.conn)
            .await?;
        self.released = true;
        Ok(())
    }
}

impl Drop for Elected {
    /// A lock not released (an error on the way) must not go back to the pool with its
    /// connection, where it would keep every process from being elected: the connection closes.
    fn drop(&mut self) {
        if !self.released {
            self.conn.close_on_drop();
        }
    }
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

/// Deletes up to `batch` rows of `table` whose `column` is older than `age`; returns how
/// many. For retention, a batch at a time so that no statement holds locks for long.
pub async fn delete_older(
    db: impl sqlx::PgExecutor<'_>,
    table: &'static str,
    column: &'static str,
    age: std::time::Duration,
    batch: i64,
) -> sqlx::Result<u64> {
    let done = sqlx::query(&format!(
        "DELETE FROM {table} WHERE id IN (
             SELECT id FROM {table} WHERE {column} < now() - make_interval(secs => $1) LIMIT $2
         )"
    ))
    .bind(age.as_secs_f64())
    .bind(batch)
    .execute(db)
    .await?;
    Ok(done.rows_affected())
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
