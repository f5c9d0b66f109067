//! What the board shows of tasks: one read model for the task list, the board's columns
//! and a single task, so that they cannot disagree on a task's state or its links. A quick
//! run's task is on the board only once promoted; looked up by id, it is shown regardless.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgExecutor;

use super::TaskState;
use super::blockers::{UNFINISHED_BLOCKERS, UNRESOLVED};
use super::board::{self, BoardState};
use super::parents::FailurePolicy;
use super::quick_runs;

/// A task as the board and the API show it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, schemars::JsonSchema)]
pub struct BoardTask {
    pub id: i64,
    #[sqlx(skip)]
    pub repository: String,
    #[serde(skip)]
    pub repo_owner: String,
    #[serde(skip)]
    pub repo_name: String,
    pub title: String,
    #[sqlx(rename = "body")]
    pub description: String,
    /// What the board shows: `blocked` for a ready task whose blockers are unresolved.
    #[sqlx(skip)]
    pub state: Option<BoardState>,
    #[serde(skip)]
    pub board_state: BoardState,
    /// Where the scheduler has it.
    pub queue_state: TaskState,
    pub task_type: String,
    pub priority: i32,
    pub source: String,
    pub labels: Vec<String>,
    pub assignee: Option<String>,
    pub acceptance_criteria: Vec<String>,
    pub context_files: Vec<String>,
    pub pipeline: String,
    pub parent_id: Option<i64>,
    pub children: Vec<i64>,
    /// For a parent: how many of its children run at once (no limit when null).
    pub max_parallelism: Option<i32>,
    /// For a parent: what a failed child does to the rest.
    pub failure_policy: FailurePolicy,
    pub blocked_by: Vec<i64>,
    pub blocks: Vec<i64>,
    pub runs: Vec<i64>,
    /// The quick run it was promoted from.
    pub quick_run: Option<i64>,
    pub issue_number: Option<i64>,
    pub requested_by: Option<String>,
    /// Why it is blocked: the reason given when it was moved there, its run's failure, or
    /// the blockers it waits for.
    #[sqlx(skip)]
    pub blocked_reason: Option<String>,
    #[serde(skip)]
    pub board_reason: Option<String>,
    #[serde(skip)]
    pub unresolved_blockers: Vec<i64>,
    #[serde(skip)]
    pub failure: Option<String>,
    /// The step its latest run is at or stopped at.
    pub current_step: Option<String>,
    /// Attempts started in its current round.
    #[sqlx(rename = "attempts")]
    pub retry_count: i32,
    pub pull_request_url: Option<String>,
    /// The issue or pull request on GitHub, when the task has one.
    #[sqlx(skip)]
    pub github: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl BoardTask {
    /// Fills in what is derived from the row: the shown state, the reason, the links.
    fn finish(mut self, github_web: &str) -> Self {
        self.repository = format!("{}/{}", self.repo_owner, self.repo_name);
        let shown = board::shown(self.board_state, !self.unresolved_blockers.is_empty());
        self.state = Some(shown);
        self.blocked_reason = (shown == BoardState::Blocked).then(|| {
            if let Some(reason) = &self.board_reason {
                reason.clone()
            } else if !self.unresolved_blockers.is_empty() {
                let ids: Vec<String> = self
                    .unresolved_blockers
                    .iter()
                    .map(|id| format!("#{id}"))
                    .collect();
                format!("waiting for {}", ids.join(", "))
            } else {
                match &self.failure {
                    Some(failure) => format!("its run failed: {failure}"),
                    None => "its run failed".to_owned(),
                }
            }
        });
        self.github = self.issue_number.map(|number| {
            format!(
                "{}/{}/{}/issues/{number}",
                github_web.trim_end_matches('/'),
                self.repo_owner,
                self.repo_name
            )
        });
        self
    }
}

fn select() -> String {
    format!(
        "SELECT t.id, t.repo_owner, t.repo_name, t.title, t.body, t.board_state,
                t.state AS queue_state, t.task_type, t.priority, t.source, t.labels, t.assignee,
                t.acceptance_criteria, t.context_files, t.pipeline, t.parent_id,
                t.max_parallelism, t.failure_policy, t.issue_number, t.requested_by, t.board_reason, t.attempts, t.created_at,
                t.updated_at,
                ARRAY(SELECT c.id FROM tasks c WHERE c.parent_id = t.id ORDER BY c.id)
                    AS children,
                ARRAY(SELECT d.blocker_id FROM task_blockers d WHERE d.task_id = t.id
                      ORDER BY d.blocker_id) AS blocked_by,
                ARRAY(SELECT d.task_id FROM task_blockers d WHERE d.blocker_id = t.id
                      ORDER BY d.task_id) AS blocks,
                ARRAY(SELECT r.id FROM runs r WHERE r.task_id = t.id ORDER BY r.id) AS runs,
                (SELECT q.id FROM quick_runs q WHERE q.task_id = t.id) AS quick_run,
                ARRAY(SELECT d.blocker_id FROM task_blockers d JOIN tasks b ON b.id = d.blocker_id
                      WHERE d.task_id = t.id AND {UNRESOLVED}
                      ORDER BY d.blocker_id) AS unresolved_blockers,
                latest.failure, latest.pull_request_url,
                COALESCE(latest.failed_step, latest.current_step) AS current_step
         FROM tasks t
         LEFT JOIN LATERAL (
             SELECT r.failure, r.failed_step,
                    (SELECT s.name FROM run_steps s WHERE s.run_id = r.id
                     ORDER BY s.position DESC LIMIT 1) AS current_step,
                    (SELECT p.pull_request_url FROM runs p
                     WHERE p.task_id = t.id AND p.pull_request_url IS NOT NULL
                     ORDER BY p.id DESC LIMIT 1) AS pull_request_url
             FROM runs r WHERE r.task_id = t.id ORDER BY r.id DESC LIMIT 1
         ) latest ON true"
    )
}

/// Which tasks a listing shows.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// The state the board shows (a ready task waiting for blockers is `blocked`).
    pub state: Option<BoardState>,
    /// `owner/name`.
    pub repository: Option<String>,
    pub label: Option<String>,
    pub task_type: Option<String>,
    /// `owner/name` of the only repositories shown, when not all are.
    pub only_repositories: Option<Vec<String>>,
}

/// SQL for the state a task shows, for the task aliased `t`.
fn shown_state_sql() -> String {
    format!(
        "CASE WHEN t.board_state = 'ready' AND {UNFINISHED_BLOCKERS} THEN 'blocked'::board_state
              ELSE t.board_state END"
    )
}

/// SQL condition, true for a task the board shows: every task but an unpromoted quick
/// run's.
fn on_board_sql() -> String {
    format!("t.source <> '{}'", quick_runs::SOURCE)
}

/// Tasks matching `filter`, newest first, after cursor `before` (an id), at most `limit`.
pub async fn list(
    db: impl PgExecutor<'_>,
    filter: &Filter,
    before: Option<i64>,
    limit: i64,
    github_web: &str,
) -> sqlx::Result<Vec<BoardTask>> {
    let rows: Vec<BoardTask> = sqlx::query_as(&format!(
        "{select}
         WHERE {on_board}
           AND ($1::board_state IS NULL OR {shown} = $1)
           AND ($2::TEXT IS NULL OR t.repo_owner || '/' || t.repo_name = $2)
           AND ($3::TEXT IS NULL OR $3 = ANY(t.labels))
           AND ($4::TEXT IS NULL OR t.task_type = $4)
           AND ($5::BIGINT IS NULL OR t.id < $5)
           AND ($7::TEXT[] IS NULL OR t.repo_owner || '/' || t.repo_name = ANY($7))
         ORDER BY t.id DESC
         LIMIT $6",
        select = select(),
        on_board = on_board_sql(),
        shown = shown_state_sql(),
    ))
    .bind(filter.state)
    .bind(&filter.repository)
    .bind(&filter.label)
    .bind(&filter.task_type)
    .bind(before)
    .bind(limit)
    .bind(&filter.only_repositories)
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|t| t.finish(github_web)).collect())
}

pub async fn get(
    db: impl PgExecutor<'_>,
    id: i64,
    github_web: &str,
) -> sqlx::Result<Option<BoardTask>> {
    let row: Option<BoardTask> = sqlx::query_as(&format!("{} WHERE t.id = $1", select()))
        .bind(id)
        .fetch_optional(db)
        .await?;
    Ok(row.map(|t| t.finish(github_web)))
}

/// How many tasks each state shows under `filter`, in the board's order.
pub async fn counts(
    db: impl PgExecutor<'_>,
    filter: &Filter,
) -> sqlx::Result<Vec<(BoardState, i64)>> {
    let rows: Vec<(BoardState, i64)> = sqlx::query_as(&format!(
        "SELECT {shown} AS shown, count(*) FROM tasks t
         WHERE {on_board}
           AND ($1::TEXT IS NULL OR t.repo_owner || '/' || t.repo_name = $1)
           AND ($2::TEXT IS NULL OR $2 = ANY(t.labels))
           AND ($3::TEXT IS NULL OR t.task_type = $3)
           AND ($4::TEXT[] IS NULL OR t.repo_owner || '/' || t.repo_name = ANY($4))
         GROUP BY shown",
        on_board = on_board_sql(),
        shown = shown_state_sql(),
    ))
    .bind(&filter.repository)
    .bind(&filter.label)
    .bind(&filter.task_type)
    .bind(&filter.only_repositories)
    .fetch_all(db)
    .await?;
    Ok(BoardState::ALL
        .into_iter()
        .map(|state| {
            let count = rows
                .iter()
                .find(|(shown, _)| *shown == state)
                .map_or(0, |(_, n)| *n);
            (state, count)
        })
        .collect())
}
