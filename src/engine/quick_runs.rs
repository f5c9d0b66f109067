//! Quick runs: a prompt run once through a repository's pipeline, off the board. Underneath
//! each is a ready task of source `quick_run`, so the scheduler, runner and reports treat it
//! as any other; the board leaves it out until it is promoted, which turns that task into
//! a board task of source `promoted_quick_action`, its runs and results kept.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;
use sqlx::{PgConnection, PgExecutor};

use super::TaskState;
use super::board::BoardState;
use super::events;
use super::tasks::{self, BoardFields, NewTask, Task};

/// The source of a quick run's task before promotion.
pub const SOURCE: &str = "quick_run";
const PROMOTED_SOURCE: &str = "promoted_quick_action";
/// A task's title is the prompt's first line, cut to this many characters.
const TITLE_CHARS: usize = 80;

#[derive(Debug, Clone, Serialize, sqlx::FromRow, schemars::JsonSchema)]
pub struct QuickRun {
    pub id: i64,
    /// Its task's queue state: queued, running, succeeded, failed, …
    pub status: TaskState,
    pub repository: String,
    pub prompt: String,
    pub pipeline: String,
    /// The task underneath; on the board once promoted.
    pub task_id: i64,
    pub runs: Vec<i64>,
    pub promoted_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
}

#[derive(Debug, thiserror::Error)]
pub enum PromoteError {
    #[error("quick run {0} does not exist")]
    NotFound(i64),
    #[error("quick run {0} was already promoted: its task is on the board")]
    AlreadyPromoted(i64),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
}

/// Queues `prompt` as a quick run of `base`'s repository and pipeline: the prompt is its
/// task's body, which prompt steps render as `{{ task.body }}`.
pub async fn create(
    conn: &mut PgConnection,
    base: &NewTask,
    prompt: &str,
    by: &str,
) -> sqlx::Result<i64> {
    let task = NewTask {
        title: title_of(prompt),
        body: prompt.to_owned(),
        board: BoardFields {
            state: BoardState::Ready,
            source: SOURCE,
            ..BoardFields::default()
        },
        ..base.clone()
    };
    let task_id = tasks::create(conn, &task)
        .await?
        .expect("a task without an issue or a delivery has no twin");
    sqlx::query_scalar(
        "INSERT INTO quick_runs (task_id, prompt, created_by) VALUES ($1, $2, $3) RETURNING id",
    )
    .bind(task_id)
    .bind(prompt)
    .bind(by)
    .fetch_one(&mut *conn)
    .await
}

fn title_of(prompt: &str) -> String {
    let first = prompt.trim().lines().next().unwrap_or_default().trim();
    match first.char_indices().nth(TITLE_CHARS) {
        Some((end, _)) => format!("{}…", &first[..end]),
        None => first.to_owned(),
    }
}

pub async fn get(db: impl PgExecutor<'_>, id: i64) -> sqlx::Result<Option<QuickRun>> {
    sqlx::query_as(
        "SELECT q.id, t.state AS status, t.repo_owner || '/' || t.repo_name AS repository,
                q.prompt, t.pipeline, q.task_id,
                ARRAY(SELECT r.id FROM runs r WHERE r.task_id = t.id ORDER BY r.id) AS runs,
                q.promoted_at, q.created_at, q.created_by
         FROM quick_runs q JOIN tasks t ON t.id = q.task_id
         WHERE q.id = $1",
    )
    .bind(id)
    .fetch_optional(db)
    .await
}

/// Puts quick run `id`'s task on the board, in whatever state its run left it; returns the
/// task's id. Call inside a transaction.
pub async fn promote(conn: &mut PgConnection, id: i64, by: &str) -> Result<i64, PromoteError> {
    let found: Option<(i64, bool)> = sqlx::query_as(
        "SELECT task_id, promoted_at IS NOT NULL FROM quick_runs WHERE id = $1 FOR UPDATE",
    )
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    let (task_id, promoted) = found.ok_or(PromoteError::NotFound(id))?;
    if promoted {
        return Err(PromoteError::AlreadyPromoted(id));
    }
    sqlx::query("UPDATE quick_runs SET promoted_at = now() WHERE id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    sqlx::query("UPDATE tasks SET source = $2, updated_at = now() WHERE id = $1")
        .bind(task_id)
        .bind(PROMOTED_SOURCE)
        .execute(&mut *conn)
        .await?;
    events::record(
        &mut *conn,
        task_id,
        None,
        "quick_run.promoted",
        json!({ "quick_run": id, "by": by }),
    )
    .await?;
    Ok(task_id)
}

/// Records in the task's trail that a quick run's run `run_id` started; nothing for any
/// other task.
pub async fn run_started(db: impl PgExecutor<'_>, task: &Task, run_id: i64) -> sqlx::Result<()> {
    if task.source != SOURCE {
        return Ok(());
    }
    events::record(db, task.id, Some(run_id), "quick_run.started", json!({})).await
}

/// Records in the task's trail how a quick run's run `run_id` ended, when it ended the quick
/// run (`to` is where its task goes: a retry to come is no end, a cancel is recorded as
/// such already); nothing for any other task.
pub async fn run_ended(
    db: impl PgExecutor<'_>,
    task: &Task,
    run_id: i64,
    to: TaskState,
) -> sqlx::Result<()> {
    let kind = match to {
        TaskState::Succeeded => "quick_run.completed",
        TaskState::Failed => "quick_run.failed",
        _ => return Ok(()),
    };
    if task.source != SOURCE {
        return Ok(());
    }
    events::record(db, task.id, Some(run_id), kind, json!({})).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_title_is_the_prompts_first_line_cut_short() {
        assert_eq!(title_of("  Fix the typo\nin README.md"), "Fix the typo");
        let long = "é".repeat(100);
        assert_eq!(title_of(&long), format!("{}…", "é".repeat(80)));
        assert_eq!(title_of(&"a".repeat(80)), "a".repeat(80));
    }
}
