//! Process heartbeats and the rescue of tasks whose process went silent.

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::SchedulerSettings;
use super::sessions::SessionPool;
use crate::engine::runs;
use crate::engine::tasks::{self, Rescued};
use crate::housekeeping::unanswered;
use crate::report::{Interruption, Outcome};

/// Only one process rescues at a time; the others skip that round.
const RESCUE_LOCK: i64 = 0x636f_6e76_7265_7363;

/// Says `process` is alive, and how many of its sessions are healthy.
pub async fn heartbeat(pool: &PgPool, process: &str, sessions: &SessionPool) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO worker_processes (id, sessions, healthy_sessions) VALUES ($1, $2, $3)
         ON CONFLICT (id) DO UPDATE
         SET heartbeat_at = now(), sessions = $2, healthy_sessions = $3",
    )
    .bind(process)
    .bind(sessions.size() as i32)
    .bind(sessions.healthy() as i32)
    .execute(pool)
    .await?;
    Ok(())
}

/// A process running worker sessions, as its last heartbeat left it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ProcessHealth {
    pub id: String,
    pub started_at: chrono::DateTime<chrono::Utc>,
    pub heartbeat_age_secs: f64,
    pub sessions: i32,
    pub healthy_sessions: i32,
}

/// Every process with worker sessions, oldest first.
pub async fn processes(db: impl sqlx::PgExecutor<'_>) -> sqlx::Result<Vec<ProcessHealth>> {
    sqlx::query_as(
        "SELECT id, started_at,
                EXTRACT(EPOCH FROM now() - heartbeat_at)::float8 AS heartbeat_age_secs,
                sessions, healthy_sessions
         FROM worker_processes
         ORDER BY started_at, id",
    )
    .fetch_all(db)
    .await
}

pub async fn deregister(pool: &PgPool, process: &str) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM worker_processes WHERE id = $1")
        .bind(process)
        .execute(pool)
        .await?;
    Ok(())
}

/// Declares processes silent for `timeout` dead and rescues every running task that no live
/// process holds. Returns the tasks rescued.
pub async fn rescue(pool: &PgPool, timeout: Duration) -> anyhow::Result<Vec<(i64, Rescued)>> {
    let mut tx = pool.begin().await?;
    let elected = crate::db::try_lock(&mut tx, RESCUE_LOCK).await?;
    if !elected {
        return Ok(Vec::new());
    }
    let dead: Vec<String> = sqlx::query_scalar(
        "DELETE FROM worker_processes
         WHERE heartbeat_at < now() - make_interval(secs => $1)
         RETURNING id",
    )
    .bind(timeout.as_secs_f64())
    .fetch_all(&mut *tx)
    .await?;
    for process in &dead {
        tracing::warn!(process = %process, "worker process stopped heartbeating; rescuing its tasks");
    }
    let orphans: Vec<i64> = sqlx::query_scalar(
        "SELECT id FROM tasks
         WHERE state = 'running'
           AND (process_id IS NULL OR process_id NOT IN (SELECT id FROM worker_processes))
         ORDER BY id
         FOR UPDATE SKIP LOCKED",
    )
    .fetch_all(&mut *tx)
    .await?;
    let mut rescued = Vec::with_capacity(orphans.len());
    for task_id in orphans {
        let outcome = tasks::rescue(&mut tx, task_id).await?;
        // Its worker's process is gone: nobody else says how its run ended.
        if let Some(run) = runs::latest(&mut *tx, task_id).await? {
            let lost = Outcome::Interrupted(Interruption::Lost);
            runs::record_outcome(&mut *tx, run.id, &lost).await?;
        }
        tracing::info!(task_id = task_id, ?outcome, "task rescued");
        rescued.push((task_id, outcome));
    }
    tx.commit().await?;
    Ok(rescued)
}

/// Queues the tasks whose retry is due.
pub async fn queue_due_retries(pool: &PgPool) -> Result<usize, tasks::EngineError> {
    let mut tx = pool.begin().await?;
    let queued = tasks::queue_due_retries(&mut tx).await?;
    tx.commit().await?;
    Ok(queued)
}

/// Heartbeats for `process`, rescues, queues due retries and ends runs whose questions went
/// unanswered until `shutdown`.
pub async fn run(
    pool: PgPool,
    process: String,
    sessions: Arc<SessionPool>,
    settings: SchedulerSettings,
    shutdown: CancellationToken,
) {
    loop {
        if let Err(err) = heartbeat(&pool, &process, &sessions).await {
            tracing::warn!(error = %err, "heartbeat failed");
        }
        if let Err(err) = rescue(&pool, settings.lease_timeout).await {
            tracing::warn!(error = %format!("{err:#}"), "rescuing tasks failed");
        }
        if let Err(err) = queue_due_retries(&pool).await {
            tracing::warn!(error = %err, "queueing due retries failed");
        }
        if let Err(err) = unanswered::expire(&pool).await {
            tracing::warn!(error = %err, "ending unanswered runs failed");
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(settings.heartbeat_interval()) => {}
        }
    }
}
