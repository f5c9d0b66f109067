//! Vacuuming the tables the scheduler churns, from Conveyor itself.
//!
//! Every claim and completion leaves dead row versions in `tasks`, `repositories` and
//! `task_events`, and dead entries in the ready-queue index that every claim steps over.
//! Their autovacuum settings (migration 0006) keep up when autovacuum runs, but a server
//! may have it off, and even when on it looks only once a minute per database by default:
//! at thousands of tasks a second that is hundreds of thousands of dead rows. So each
//! worker process also checks the statistics every few seconds and vacuums what needs it;
//! with autovacuum keeping up, that check finds nothing to do.

use std::time::{Duration, Instant};

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

const CHURN_TABLES: [&str; 4] = ["tasks", "repositories", "worker_processes", "task_events"];
const CHECK_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Upkeep {
    pub vacuumed: Vec<String>,
    pub analyzed: Vec<String>,
}

/// Only one process vacuums at a time; the others skip that round.
const VACUUM_LOCK: i64 = 0x636f_6e76_7661_6375;

/// Dead rows a churn table may hold before it is vacuumed, however large it is: finished
/// tasks stay for the retention period, and a threshold relative to them would let dead
/// rows grow with the history.
const MAX_DEAD_ROWS: i64 = 20_000;

/// Vacuums every churn table with more dead rows than 1,000 plus a tenth of its live ones
/// (at most [`MAX_DEAD_ROWS`]), and analyses every one changed by 1,000 plus a tenth since
/// its last analysis (a queue filled in one statement is otherwise planned as if empty). A
/// table another vacuum (autovacuum) holds is skipped.
pub async fn vacuum_churn_tables(pool: &PgPool) -> sqlx::Result<Upkeep> {
    // VACUUM cannot run in a transaction, so the election is a session lock.
    let Some(mut elected) = crate::db::elect(pool, VACUUM_LOCK).await? else {
        return Ok(Upkeep::default());
    };
    let upkeep = vacuum_due(elected.conn()).await?;
    elected.release().await?;
    Ok(upkeep)
}

async fn vacuum_due(conn: &mut sqlx::PgConnection) -> sqlx::Result<Upkeep> {
    let due: Vec<(String, bool, bool)> = sqlx::query_as(
        "SELECT relname::TEXT,
                n_dead_tup > LEAST(1000 + n_live_tup / 10, $2),
                n_mod_since_analyze > 1000 + n_live_tup / 10
         FROM pg_stat_user_tables
         WHERE schemaname = current_schema() AND relname = ANY($1)",
    )
    .bind(CHURN_TABLES)
    .bind(MAX_DEAD_ROWS)
    .fetch_all(&mut *conn)
    .await?;
    let mut upkeep = Upkeep::default();
    for (table, vacuum, analyze) in due {
        let options = match (vacuum, analyze) {
            (true, true) => "VACUUM (SKIP_LOCKED, ANALYZE)",
            (true, false) => "VACUUM (SKIP_LOCKED)",
            (false, true) => "ANALYZE (SKIP_LOCKED)",
            (false, false) => continue,
        };
        // The name is one of CHURN_TABLES, never input.
        sqlx::query(&format!("{options} {table}"))
            .execute(&mut *conn)
            .await?;
        if vacuum {
            upkeep.vacuumed.push(table.clone());
        }
        if analyze {
            upkeep.analyzed.push(table);
        }
    }
    Ok(upkeep)
}

/// Checks every few seconds until `shutdown`.
pub async fn run(pool: PgPool, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(CHECK_INTERVAL) => {}
        }
        let started = Instant::now();
        match vacuum_churn_tables(&pool).await {
            Ok(upkeep) if upkeep == Upkeep::default() => {}
            Ok(upkeep) => tracing::debug!(
                vacuumed = ?upkeep.vacuumed,
                analyzed = ?upkeep.analyzed,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "churn tables vacuumed"
            ),
            Err(err) => tracing::warn!(error = %err, "vacuuming the churn tables failed"),
        }
    }
}
