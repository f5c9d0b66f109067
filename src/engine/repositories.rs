//! Per-repository scheduling controls (pausing, resuming and stopping, with their table) and
//! where a repository stands.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgExecutor};

use super::RunState;

use super::tasks::{self, wake_workers};

/// Where a repository (a project, in seed 004's words) stands for the scheduler. Paused: its
/// queued tasks wait and running ones finish. Stopping: its tasks were cancelled and some are
/// still being stopped by their workers; stopped once none is left running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProjectState {
    Running,
    Paused,
    Stopping,
    Stopped,
}

impl ProjectState {
    pub const ALL: [ProjectState; 4] = [
        ProjectState::Running,
        ProjectState::Paused,
        ProjectState::Stopping,
        ProjectState::Stopped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ProjectState::Running => "running",
            ProjectState::Paused => "paused",
            ProjectState::Stopping => "stopping",
            ProjectState::Stopped => "stopped",
        }
    }

    /// The changes an operator may make from here (`stopping → stopped` happens by itself,
    /// when the last stopped task ends). A stop from `running` or `paused` with nothing
    /// running lands on `stopped` at once.
    pub fn next(self) -> &'static [ProjectState] {
        match self {
            ProjectState::Running => &[ProjectState::Paused, ProjectState::Stopping],
            ProjectState::Paused => &[ProjectState::Running, ProjectState::Stopping],
            ProjectState::Stopping => &[ProjectState::Stopped],
            ProjectState::Stopped => &[ProjectState::Running],
        }
    }

    fn of(paused: bool, stopped: bool, running: i64) -> Self {
        match (paused, stopped) {
            (false, _) => ProjectState::Running,
            (true, false) => ProjectState::Paused,
            (true, true) if running > 0 => ProjectState::Stopping,
            (true, true) => ProjectState::Stopped,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RepositoryError {
    #[error("repository {0} has no tasks and no settings")]
    NotFound(String),
    #[error("repository {repository} is {}: it cannot be made {} (it can become: {})",
        from.as_str(), to.as_str(),
        from.next().iter().map(|state| state.as_str()).collect::<Vec<_>>().join(", "))]
    InvalidChange {
        repository: String,
        from: ProjectState,
        to: ProjectState,
    },
    #[error("database: {0}")]
    Db(String),
}

impl From<sqlx::Error> for RepositoryError {
    fn from(err: sqlx::Error) -> Self {
        Self::Db(err.to_string())
    }
}

/// Locks the repository's row and says where it stands.
async fn lock(
    conn: &mut PgConnection,
    owner: &str,
    name: &str,
) -> Result<ProjectState, RepositoryError> {
    let found: Option<(bool, bool, i64)> = sqlx::query_as(
        "SELECT paused, stopped, running::BIGINT FROM repositories
         WHERE owner = $1 AND name = $2 FOR UPDATE",
    )
    .bind(owner)
    .bind(name)
    .fetch_optional(&mut *conn)
    .await?;
    let (paused, stopped, running) =
        found.ok_or_else(|| RepositoryError::NotFound(format!("{owner}/{name}")))?;
    Ok(ProjectState::of(paused, stopped, running))
}

fn allowed(
    owner: &str,
    name: &str,
    from: ProjectState,
    to: ProjectState,
) -> Result<(), RepositoryError> {
    if from.next().contains(&to) {
        Ok(())
    } else {
        Err(RepositoryError::InvalidChange {
            repository: format!("{owner}/{name}"),
            from,
            to,
        })
    }
}

/// Pauses claiming for a repository (`running → paused`), or resumes it (`paused` or
/// `stopped → running`); any other change is refused and changes nothing.
pub async fn set_paused(
    conn: &mut PgConnection,
    owner: &str,
    name: &str,
    paused: bool,
) -> Result<(), RepositoryError> {
    let from = lock(conn, owner, name).await?;
    let to = if paused {
        ProjectState::Paused
    } else {
        ProjectState::Running
    };
    allowed(owner, name, from, to)?;
    sqlx::query(
        "UPDATE repositories SET paused = $3, stopped = false WHERE owner = $1 AND name = $2",
    )
    .bind(owner)
    .bind(name)
    .bind(paused)
    .execute(&mut *conn)
    .await?;
    if !paused {
        wake_workers(&mut *conn).await?;
    }
    Ok(())
}

/// Stops a repository: pauses it and cancels its queued and running tasks (running ones end
/// once their workers stop them: until then it is `stopping`). Returns how many tasks were
/// cancelled or asked to stop.
pub async fn stop(
    conn: &mut PgConnection,
    owner: &str,
    name: &str,
) -> Result<usize, RepositoryError> {
    let from = lock(conn, owner, name).await?;
    allowed(owner, name, from, ProjectState::Stopping)?;
    sqlx::query(
        "UPDATE repositories SET paused = true, stopped = true WHERE owner = $1 AND name = $2",
    )
    .bind(owner)
    .bind(name)
    .execute(&mut *conn)
    .await?;
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

/// A run as a project's status lists it.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow, schemars::JsonSchema)]
pub struct RecentRun {
    pub id: i64,
    pub task_id: i64,
    pub state: RunState,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub error_type: Option<String>,
}

/// `GET /api/v2/projects/{owner}/{repo}/status`: where the repository stands and its work.
#[derive(Debug, Clone, serde::Serialize, schemars::JsonSchema)]
pub struct ProjectStatus {
    pub repository: String,
    pub state: ProjectState,
    pub paused: bool,
    /// Tasks waiting for a worker (queued or scheduled for later).
    pub queue_depth: i64,
    pub running: i64,
    /// Runs parked for an approval or an answer: they hold no worker.
    pub waiting: i64,
    pub latest_runs: Vec<RecentRun>,
}

const LATEST_RUNS: i64 = 10;

pub async fn status(
    conn: &mut PgConnection,
    owner: &str,
    name: &str,
) -> Result<ProjectStatus, RepositoryError> {
    let found: Option<(bool, bool, i64, i64, i64)> = sqlx::query_as(
        "SELECT r.paused, r.stopped, r.running::BIGINT,
                (SELECT count(*) FROM tasks t WHERE t.repo_owner = r.owner AND t.repo_name = r.name
                    AND t.state IN ('queued', 'scheduled')),
                (SELECT count(*) FROM tasks t WHERE t.repo_owner = r.owner AND t.repo_name = r.name
                    AND t.state IN ('awaiting_approval', 'awaiting_input'))
         FROM repositories r WHERE r.owner = $1 AND r.name = $2",
    )
    .bind(owner)
    .bind(name)
    .fetch_optional(&mut *conn)
    .await?;
    let (paused, stopped, running, queue_depth, waiting) =
        found.ok_or_else(|| RepositoryError::NotFound(format!("{owner}/{name}")))?;
    let latest_runs = sqlx::query_as(
        "SELECT r.id, r.task_id, r.state, r.started_at, r.finished_at, r.error_type
         FROM runs r JOIN tasks t ON t.id = r.task_id
         WHERE t.repo_owner = $1 AND t.repo_name = $2
         ORDER BY r.id DESC LIMIT $3",
    )
    .bind(owner)
    .bind(name)
    .bind(LATEST_RUNS)
    .fetch_all(&mut *conn)
    .await?;
    Ok(ProjectStatus {
        repository: format!("{owner}/{name}"),
        state: ProjectState::of(paused, stopped, running),
        paused,
        queue_depth,
        running,
        waiting,
        latest_runs,
    })
}

/// Every repository the scheduler knows (it has had a task or settings), as `(owner, name)`
/// in name order.
pub async fn names(db: impl PgExecutor<'_>) -> sqlx::Result<Vec<(String, String)>> {
    sqlx::query_as("SELECT owner, name FROM repositories ORDER BY lower(owner), lower(name)")
        .fetch_all(db)
        .await
}

/// The installation `owner/name`'s latest task came through: the one to ask GitHub as about
/// the repository. Spelled as the tasks spell it (as [`names`] gives it).
pub async fn installation_of(
    db: impl PgExecutor<'_>,
    owner: &str,
    name: &str,
) -> sqlx::Result<Option<i64>> {
    sqlx::query_scalar(
        "SELECT installation_id FROM tasks
         WHERE repo_owner = $1 AND repo_name = $2
         ORDER BY id DESC LIMIT 1",
    )
    .bind(owner)
    .bind(name)
    .fetch_optional(db)
    .await
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
