//! Telling an issue why its task waits. A task queued for a while that has never run gets
//! its status comment early, naming what holds it (`waiting: repository limit 1/1`); the
//! comment is edited when the reason changes, and the run takes it over once it starts.

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::engine::deferral::{self, Waiting};
use crate::engine::tasks;
use crate::github::GitHubApp;
use crate::report::comment;
use crate::status_comment;

/// Comments written per pass at most: GitHub limits how fast content may be created.
const PER_PASS: i64 = 10;

/// Reports on tasks queued for `after` or longer, until `shutdown`.
pub async fn run(
    pool: PgPool,
    github: Arc<GitHubApp>,
    after: Duration,
    shutdown: CancellationToken,
) {
    let interval = (after / 2).clamp(Duration::from_millis(250), Duration::from_secs(5));
    loop {
        if let Err(err) = report(&pool, &github, after).await {
            tracing::warn!(error = %format!("{err:#}"), "reporting waiting tasks failed");
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

/// One pass: posts or edits the status comment of each task queued for `after` or longer
/// whose comment does not show its current deferral reason. Returns how many it wrote.
pub async fn report(
    pool: &PgPool,
    github: &Arc<GitHubApp>,
    after: Duration,
) -> anyhow::Result<usize> {
    let mut written = 0;
    for waiting in deferral::unreported(pool, after, PER_PASS).await? {
        let task_id = waiting.task.id;
        match report_one(pool, github, waiting).await {
            Ok(true) => written += 1,
            Ok(false) => {}
            Err(err) => {
                tracing::warn!(task = task_id, error = %format!("{err:#}"), "could not report why the task waits")
            }
        }
    }
    Ok(written)
}

/// `false` when the task was claimed meanwhile: its run reports from here on.
async fn report_one(
    pool: &PgPool,
    github: &Arc<GitHubApp>,
    waiting: Waiting,
) -> anyhow::Result<bool> {
    let Waiting { task, reason } = waiting;
    let mut tx = pool.begin().await?;
    // Holding the task keeps it from being claimed until the comment is written, so a run
    // that starts afterwards finds the comment and takes it over, never the other way round.
    if !tasks::hold_if_queued(&mut tx, task.id).await? {
        return Ok(false);
    }
    let client = github.installation(task.installation_id);
    let body = comment::waiting(task.id, &task.pipeline, &reason);
    status_comment::publish(&mut tx, &client, &task, &body, Some(reason.clone())).await?;
    tx.commit().await?;
    tracing::info!(task = task.id, waiting = %reason, "status comment says why the task waits");
    Ok(true)
}
