//! Per-repository scheduling controls: pausing, resuming and stopping.

use sqlx::{PgConnection, PgExecutor};

use super::tasks::{self, wake_workers};

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

/// Stops a repository: pauses it and cancels its queued and running tasks (running ones end
/// once their workers stop them). Returns how many tasks were cancelled or asked to stop.
pub async fn stop(
    conn: &mut PgConnection,
    owner: &str,
    name: &str,
) -> Result<usize, RepositoryError> {
    let full_name = format!("{owner}/{name}");
    let found = sqlx::query("UPDATE repositories SET paused = true WHERE owner = $1 AND name = $2")
        .bind(owner)
        .bind(name)
        .execute(&mut *conn)
        .await?;
    if found.rows_affected() == 0 {
        return Err(RepositoryError::NotFound(full_name));
    }
    let live: Vec<i64> = sqlx::query_scalar(
        "SELECT id FROM tasks
         WHERE repo_owner = $1 AND repo_name = $2
           AND state NOT IN ('succeeded', 'failed', 'cancelled')
         ORDER BY id",
    )
    .bind(owner)
    .bind(name)
    .fetch_all(&mut *conn)
    .await?;
    for &task_id in &live {
        tasks::cancel(conn, task_id, None)
            .await
            .map_err(|err| RepositoryError::Db(err.to_string()))?;
    }
    Ok(live.len())
}

/// A repository the App is installed on, as Conveyor knows it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Installed {
    pub installation_id: i64,
    pub owner: String,
    pub name: String,
    /// The default branch its latest webhook named, if one came.
    pub default_branch: Option<String>,
}

/// The installation that reaches `owner/name` (spelled as GitHub does, in any case), unless
/// it was suspended or removed.
pub async fn installed(
    db: impl PgExecutor<'_>,
    owner: &str,
    name: &str,
) -> sqlx::Result<Option<Installed>> {
    sqlx::query_as(
        "SELECT ir.installation_id, split_part(ir.full_name, '/', 1) AS owner,
                split_part(ir.full_name, '/', 2) AS name,
                COALESCE(
                    (SELECT q.default_branch FROM requests q
                     WHERE lower(q.repo_owner || '/' || q.repo_name) = lower(ir.full_name)
                     ORDER BY q.id DESC LIMIT 1),
                    (SELECT t.default_branch FROM tasks t
                     WHERE lower(t.repo_owner || '/' || t.repo_name) = lower(ir.full_name)
                     ORDER BY t.id DESC LIMIT 1)
                ) AS default_branch
         FROM installation_repositories ir
         JOIN installations i ON i.id = ir.installation_id
         WHERE lower(ir.full_name) = lower($1 || '/' || $2)
           AND i.deleted_at IS NULL AND i.suspended_at IS NULL
         ORDER BY ir.installation_id
         LIMIT 1",
    )
    .bind(owner)
    .bind(name)
    .fetch_optional(db)
    .await
}
