//! Runs of a task and the results of their steps.

use sqlx::{PgConnection, PgExecutor};

use super::state::RunState;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Run {
    pub id: i64,
    pub task_id: i64,
    pub attempt: i32,
    pub state: RunState,
    pub pipeline: String,
    pub branch: Option<String>,
    pub head_sha: Option<String>,
    pub pull_request_number: Option<i64>,
    pub pull_request_url: Option<String>,
    pub check_run_id: Option<i64>,
    pub failure: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct StepRecord {
    pub position: i32,
    pub name: String,
    pub command: String,
    pub exit_code: Option<i32>,
    pub duration_ms: i64,
    pub output: String,
}

const RUN_COLUMNS: &str = "id, task_id, attempt, state, pipeline, branch, head_sha, \
     pull_request_number, pull_request_url, check_run_id, failure";

/// Starts the next attempt of a task.
pub async fn start(conn: &mut PgConnection, task_id: i64, pipeline: &str) -> sqlx::Result<Run> {
    sqlx::query_as(&format!(
        "INSERT INTO runs (task_id, attempt, pipeline)
         VALUES ($1, (SELECT COALESCE(MAX(attempt), 0) + 1 FROM runs WHERE task_id = $1), $2)
         RETURNING {RUN_COLUMNS}"
    ))
    .bind(task_id)
    .bind(pipeline)
    .fetch_one(conn)
    .await
}

pub async fn for_task(db: impl PgExecutor<'_>, task_id: i64) -> sqlx::Result<Vec<Run>> {
    sqlx::query_as(&format!(
        "SELECT {RUN_COLUMNS} FROM runs WHERE task_id = $1 ORDER BY attempt"
    ))
    .bind(task_id)
    .fetch_all(db)
    .await
}

/// Records a step's result if the run's task is still held under lease `epoch`; `false` when
/// the result is stale (the task was rescued) and was dropped.
pub async fn record_step(
    db: impl PgExecutor<'_>,
    run_id: i64,
    epoch: i64,
    step: &StepRecord,
) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "INSERT INTO run_steps (run_id, position, name, command, exit_code, duration_ms, output)
         SELECT $1, $2, $3, $4, $5, $6, $7
         FROM runs r JOIN tasks t ON t.id = r.task_id
         WHERE r.id = $1 AND t.lease_epoch = $8 AND t.state = 'running'",
    )
    .bind(run_id)
    .bind(step.position)
    .bind(&step.name)
    .bind(&step.command)
    .bind(step.exit_code)
    .bind(step.duration_ms)
    .bind(&step.output)
    .bind(epoch)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn steps(db: impl PgExecutor<'_>, run_id: i64) -> sqlx::Result<Vec<StepRecord>> {
    sqlx::query_as(
        "SELECT position, name, command, exit_code, duration_ms, output
         FROM run_steps WHERE run_id = $1 ORDER BY position",
    )
    .bind(run_id)
    .fetch_all(db)
    .await
}

/// What a finished run produced on GitHub.
#[derive(Debug, Default, Clone)]
pub struct Published {
    pub branch: Option<String>,
    pub head_sha: Option<String>,
    pub pull_request_number: Option<i64>,
    pub pull_request_url: Option<String>,
    pub check_run_id: Option<i64>,
}

/// Records how the run ended; `false` when it had already ended (its task was taken from its
/// worker, which closed the run as interrupted or cancelled) and the result was dropped. A
/// push already recorded stays recorded when the run failed after it.
pub async fn finish(
    db: impl PgExecutor<'_>,
    run_id: i64,
    state: RunState,
    published: &Published,
    failure: Option<&str>,
) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "UPDATE runs SET state = $2, finished_at = now(),
                branch = COALESCE($3, branch), head_sha = COALESCE($4, head_sha),
                pull_request_number = $5, pull_request_url = $6, check_run_id = $7, failure = $8
         WHERE id = $1 AND state = 'running'",
    )
    .bind(run_id)
    .bind(state)
    .bind(&published.branch)
    .bind(&published.head_sha)
    .bind(published.pull_request_number)
    .bind(&published.pull_request_url)
    .bind(published.check_run_id)
    .bind(failure)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Records a push as soon as it happened, so that a later attempt knows the branch holds
/// Conveyor's own commit even if this one never finishes.
pub async fn record_push(
    db: impl PgExecutor<'_>,
    run_id: i64,
    branch: &str,
    head_sha: &str,
) -> sqlx::Result<()> {
    sqlx::query("UPDATE runs SET branch = $2, head_sha = $3 WHERE id = $1")
        .bind(run_id)
        .bind(branch)
        .bind(head_sha)
        .execute(db)
        .await?;
    Ok(())
}

/// The commit Conveyor last pushed to `branch` of the task's repository, by any of its tasks.
pub async fn last_pushed(
    db: impl PgExecutor<'_>,
    task_id: i64,
    branch: &str,
) -> sqlx::Result<Option<String>> {
    sqlx::query_scalar(
        "SELECT r.head_sha FROM runs r
         JOIN tasks t ON t.id = r.task_id
         JOIN tasks this ON this.id = $1
         WHERE r.branch = $2 AND r.head_sha IS NOT NULL
           AND t.installation_id = this.installation_id
           AND t.repo_owner = this.repo_owner AND t.repo_name = this.repo_name
         ORDER BY r.id DESC LIMIT 1",
    )
    .bind(task_id)
    .bind(branch)
    .fetch_optional(db)
    .await
}
