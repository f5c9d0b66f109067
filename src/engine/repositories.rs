//! Per-repository scheduling controls: pausing and resuming.

use sqlx::PgExecutor;

use super::tasks::wake_workers;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RepositoryError {
    #[error("repository {0} has no tasks and no settings")]
    NotFound(String),
    #[error("repository {0} is already paused")]
    AlreadyPaused(String),
    #[error("repository {0} is not paused")]
    NotPaused(String),
    #[error("database: {0}")]
    Db(String),
}

impl From<sqlx::Error> for RepositoryError {
    fn from(err: sqlx::Error) -> Self {
        Self::Db(err.to_string())
    }
}

/// Pauses (`true`) or resumes (`false`) claiming for a repository; changing it to the state
/// it is already in is refused.
pub async fn set_paused(
    db: impl PgExecutor<'_> + Copy,
    owner: &str,
    name: &str,
    paused: bool,
) -> Result<(), RepositoryError> {
    let full_name = format!("{owner}/{name}");
    let previous: Option<bool> = sqlx::query_scalar(
        "UPDATE repositories r SET paused = $3
         FROM (SELECT paused FROM repositories WHERE owner = $1 AND name = $2 FOR UPDATE) AS before
         WHERE r.owner = $1 AND r.name = $2
         RETURNING before.paused",
    )
    .bind(owner)
    .bind(name)
    .bind(paused)
    .fetch_optional(db)
    .await?;
    match (previous, paused) {
        (None, _) => Err(RepositoryError::NotFound(full_name)),
        (Some(true), true) => Err(RepositoryError::AlreadyPaused(full_name)),
        (Some(false), false) => Err(RepositoryError::NotPaused(full_name)),
        (Some(_), false) => Ok(wake_workers(db).await?),
        (Some(_), true) => Ok(()),
    }
}
