//! Telling an issue why its task waits. A task queued for a while that has never run gets
//! its status comment early, naming what holds it (`waiting: repository limit 1/1`); the
//! comment is edited when the reason changes, and the run takes it over once it starts
//! (see [`crate::status_comment`] for how the two share it).

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::engine::deferral::{self, Waiting};
use crate::github::GitHubApp;
use crate::report::comment;
use crate::status_comment::{self, PublishError};

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

/// `false` when the task was claimed since it was read, or another process reports on it:
/// its run, or that process, reports from here on.
async fn report_one(
    pool: &PgPool,
    github: &Arc<GitHubApp>,
    waiting: Waiting,
) -> anyhow::Result<bool> {
    let Waiting { task, reason } = waiting;
    let client = github.installation(task.installation_id, &task.repo_name);
    let body = comment::waiting(task.id, &task.pipeline, &reason);
    let mut conn = pool.acquire().await?;
    match status_comment::publish(&mut conn, &client, &task, &body, Some(reason.clone())).await {
        Ok(()) => {}
        Err(PublishError::NotWaiting) => return Ok(false),
        Err(err) => return Err(err.into()),
    }
    tracing::info!(task = task.id, waiting = %reason, "status comment says why the task waits");
    Ok(true)
}
