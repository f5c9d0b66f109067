//! Publishing a task's one status comment: edited in place, posted anew when the task has
//! none or someone deleted it, and its place recorded so that the next report finds it.

use sqlx::PgConnection;

use crate::engine::status_comments::{self, StatusComment};
use crate::engine::tasks::Task;
use crate::github::client::Repo;
use crate::github::{GitHubError, InstallationClient};

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error(transparent)]
    GitHub(#[from] GitHubError),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
}

/// Shows `body` in the task's status comment; `waiting` is the deferral reason it shows,
/// if any.
pub async fn publish(
    conn: &mut PgConnection,
    client: &InstallationClient,
    task: &Task,
    body: &str,
    waiting: Option<String>,
) -> Result<(), PublishError> {
    let repo = Repo {
        owner: &task.repo_owner,
        name: &task.repo_name,
    };
    let existing = status_comments::get(&mut *conn, task.id).await?;
    let posted = client
        .upsert_comment(
            repo,
            task.issue_number,
            existing.map(|status| status.comment_id),
            body,
        )
        .await?;
    let status = StatusComment {
        comment_id: posted.id,
        waiting,
    };
    status_comments::set(&mut *conn, task.id, &status).await?;
    Ok(())
}
