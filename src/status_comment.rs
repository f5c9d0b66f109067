//! Publishing a task's one status comment: edited in place, posted anew when the task has
//! none or someone deleted it, and its place recorded so that the next report finds it.
//!
//! No transaction or row lock is held while GitHub is called. Two kinds of writer share the
//! comment: the waiting report, while the task is queued and has never run, and the task's
//! run (or its stop) afterwards. A waiting report first marks the comment as being written,
//! in a statement that holds the task row only for itself and requires the task to be still
//! queued and never claimed; a run waits for a marked report to land before it writes. So
//! the run finds the comment the report posted instead of posting a second one, and its text
//! is never overwritten by a late "waiting".

use std::time::Duration;

use sqlx::PgConnection;
use uuid::Uuid;

use crate::engine::status_comments::{self, StatusComment};
use crate::engine::tasks::Task;
use crate::github::client::Repo;
use crate::github::{GitHubError, InstallationClient};

/// How long a waiting report may take on GitHub, retries included; it gives up after that.
const WAITING_WRITE_LIMIT: Duration = Duration::from_secs(30);
/// A waiting report's mark this old counts as abandoned (its writer died), and a run writes
/// without waiting for it. Twice the limit, so that a request GitHub was still working on
/// when its writer gave up has landed.
const WAITING_WRITE_ABANDONED: Duration = Duration::from_secs(60);
/// How often a run looks whether the waiting report it waits for has landed.
const WAITING_WRITE_POLL: Duration = Duration::from_millis(100);

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error(transparent)]
    GitHub(#[from] GitHubError),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// A waiting report on a task that was claimed since it was read, or that another
    /// process is reporting on: nothing was written.
    #[error("the task no longer waits, or another report on it is being written")]
    NotWaiting,
    /// A waiting report that GitHub did not answer in time. Its mark stays until it counts
    /// as abandoned, in case GitHub still applies it.
    #[error("GitHub did not answer within {0:?}")]
    TimedOut(Duration),
}

/// Shows `body` in the task's status comment. `waiting` is the deferral reason `body` shows
/// while the task waits (the waiting report), or `None` from the task's run.
pub async fn publish(
    conn: &mut PgConnection,
    client: &InstallationClient,
    task: &Task,
    body: &str,
    waiting: Option<String>,
) -> Result<(), PublishError> {
    match waiting {
        Some(reason) => publish_waiting(conn, client, task, body, reason).await,
        None => publish_run(conn, client, task, body).await,
    }
}

async fn publish_run(
    conn: &mut PgConnection,
    client: &InstallationClient,
    task: &Task,
    body: &str,
) -> Result<(), PublishError> {
    while status_comments::waiting_write_in_flight(&mut *conn, task.id, WAITING_WRITE_ABANDONED)
        .await?
    {
        tokio::time::sleep(WAITING_WRITE_POLL).await;
    }
    let existing = status_comments::get(&mut *conn, task.id).await?;
    let posted = upsert(client, task, existing.as_ref(), body).await?;
    let status = StatusComment {
        comment_id: posted,
        waiting: None,
    };
    status_comments::set(&mut *conn, task.id, &status).await?;
    Ok(())
}

async fn publish_waiting(
    conn: &mut PgConnection,
    client: &InstallationClient,
    task: &Task,
    body: &str,
    reason: String,
) -> Result<(), PublishError> {
    let writer = Uuid::new_v4();
    let marked = status_comments::begin_waiting_write(
        &mut *conn,
        task.id,
        task.lease_epoch,
        writer,
        WAITING_WRITE_ABANDONED,
    )
    .await?;
    if !marked {
        return Err(PublishError::NotWaiting);
    }
    // Only this writer changes the record while its mark stands: runs wait for it.
    let existing = status_comments::get(&mut *conn, task.id).await?;
    let written = tokio::time::timeout(
        WAITING_WRITE_LIMIT,
        upsert(client, task, existing.as_ref(), body),
    )
    .await
    .map_err(|_| PublishError::TimedOut(WAITING_WRITE_LIMIT))?;
    let posted = match written {
        Ok(posted) => posted,
        Err(err) => {
            status_comments::abandon_waiting_write(&mut *conn, task.id, writer).await?;
            return Err(err.into());
        }
    };
    // Recorded even if the task was claimed meanwhile: its run, waiting for this mark to
    // clear, then takes the comment over.
    let status = StatusComment {
        comment_id: posted,
        waiting: Some(reason),
    };
    if !status_comments::finish_waiting_write(&mut *conn, task.id, writer, &status).await? {
        tracing::warn!(
            task = task.id,
            comment = posted,
            "a waiting report outlived its mark and was not recorded"
        );
    }
    Ok(())
}

/// Edits the existing comment, or posts one when there is none (or it was deleted); returns
/// the comment's id.
async fn upsert(
    client: &InstallationClient,
    task: &Task,
    existing: Option<&StatusComment>,
    body: &str,
) -> Result<i64, GitHubError> {
    let repo = Repo {
        owner: &task.repo_owner,
        name: &task.repo_name,
    };
    let existing = existing.map(|status| status.comment_id);
    let posted = client
        .upsert_comment(repo, task.issue_number, existing, body)
        .await?;
    Ok(posted.id)
}
