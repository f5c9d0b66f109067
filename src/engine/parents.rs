//! Parent tasks (seed 002): a task with children runs no pipeline of its own. It stays out
//! of the queue (queue state `held`) and its board state follows its children: done when
//! every child is done or cancelled, blocked when a failed child stops the rest. Its
//! children run in dependency levels ("waves"), at most `max_parallelism` at once (the
//! claim enforces that), and its `failure_policy` says what a failed child does.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::PgConnection;

use super::board::BoardState;
use super::events;
use super::state::TaskState;
use super::tasks::{self, EngineError};

type Result<T> = sqlx::Result<T>;

/// What a parent does when one of its children fails.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    sqlx::Type,
    schemars::JsonSchema,
)]
#[sqlx(type_name = "TEXT", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum FailurePolicy {
    /// The children that have not started are blocked, and so is the parent.
    #[default]
    Stop,
    /// The children that do not wait for the failed one go on; the parent ends blocked,
    /// listing the failures, once nothing else can run.
    Continue,
    /// The failed child is queued again while it has attempts left; out of attempts, it
    /// stops the rest as `stop` does.
    Retry,
}

/// Takes `parent` out of the queue when it gains a child: from now on its children do its
/// work. A parent that has started or ended is left as it is.
pub(crate) async fn adopt(conn: &mut PgConnection, parent: i64, child: i64) -> Result<()> {
    let held = sqlx::query(
        "UPDATE tasks SET state = 'held', updated_at = now() WHERE id = $1 AND state = 'queued'",
    )
    .bind(parent)
    .execute(&mut *conn)
    .await?;
    if held.rows_affected() > 0 {
        let detail = json!({ "from": TaskState::Queued, "to": TaskState::Held, "child": child });
        events::record(&mut *conn, parent, None, "state", detail).await?;
    }
    Ok(())
}

#[derive(sqlx::FromRow)]
struct Parent {
    state: TaskState,
    board_state: BoardState,
    board_reason: Option<String>,
    failure_policy: FailurePolicy,
}

#[derive(sqlx::FromRow)]
struct Child {
    id: i64,
    state: TaskState,
    board_state: BoardState,
    attempts: i32,
    max_attempts: i32,
}

/// Brings the parents of `tasks` (those that have one) up to date with their children.
pub(crate) async fn settle_parents_of(conn: &mut PgConnection, tasks: &[i64]) -> Result<()> {
    let parents: Vec<i64> = sqlx::query_scalar(
        "SELECT DISTINCT parent_id FROM tasks WHERE id = ANY($1) AND parent_id IS NOT NULL
         ORDER BY parent_id",
    )
    .bind(tasks)
    .fetch_all(&mut *conn)
    .await?;
    settle(conn, &parents).await
}

/// Brings each of `parents` up to date with its children: re-queues a failed child the
/// `retry` policy gives another attempt, blocks the waiting children a failure stops, and
/// moves the parent to done or blocked. Each parent row is locked first; the children it
/// changes are taken with `SKIP LOCKED`, since a child locked elsewhere is being changed and
/// settles its parent again once it is.
pub(crate) async fn settle(conn: &mut PgConnection, parents: &[i64]) -> Result<()> {
    for &parent_id in parents {
        let parent: Option<Parent> = sqlx::query_as(
            "SELECT state, board_state, board_reason, failure_policy FROM tasks
             WHERE id = $1 FOR UPDATE",
        )
        .bind(parent_id)
        .fetch_optional(&mut *conn)
        .await?;
        // A parent cancelled, done, or that ran before it had children is left alone.
        let Some(parent) = parent.filter(|p| p.state == TaskState::Held) else {
            continue;
        };
        if parent.board_state.resolves() {
            continue;
        }
        let children: Vec<Child> = sqlx::query_as(
            "SELECT id, state, board_state, attempts, max_attempts FROM tasks
             WHERE parent_id = $1 ORDER BY id",
        )
        .bind(parent_id)
        .fetch_all(&mut *conn)
        .await?;
        if children.is_empty() {
            continue;
        }
        let mut failed: Vec<i64> = Vec::new();
        for child in children.iter().filter(|c| c.state == TaskState::Failed) {
            let retried = parent.failure_policy == FailurePolicy::Retry
                && child.attempts < child.max_attempts
                && retry(conn, parent_id, child.id).await?;
            if !retried {
                failed.push(child.id);
            }
        }
        if failed.is_empty() {
            if children.iter().all(|c| c.board_state.resolves()) {
                complete(conn, parent_id).await?;
            }
            continue;
        }
        let (stopped, blocked_now) = match parent.failure_policy {
            FailurePolicy::Stop | FailurePolicy::Retry => {
                (stop_waiting(conn, parent_id, &failed, false).await?, true)
            }
            FailurePolicy::Continue => {
                let stopped = stop_waiting(conn, parent_id, &failed, true).await?;
                let active: bool = sqlx::query_scalar(
                    "SELECT EXISTS (
                         SELECT 1 FROM tasks WHERE parent_id = $1
                           AND state IN ('queued', 'running', 'scheduled', 'awaiting_approval',
                                         'awaiting_input'))",
                )
                .bind(parent_id)
                .fetch_one(&mut *conn)
                .await?;
                (stopped, !active)
            }
        };
        if blocked_now {
            block(conn, parent_id, &parent, &failed, &stopped).await?;
        }
    }
    Ok(())
}

/// Queues failed `child` again for the `retry` policy; false when someone else holds it.
async fn retry(conn: &mut PgConnection, parent: i64, child: i64) -> Result<bool> {
    let free: Option<i64> = sqlx::query_scalar(
        "SELECT id FROM tasks WHERE id = $1 AND state = 'failed' FOR UPDATE SKIP LOCKED",
    )
    .bind(child)
    .fetch_optional(&mut *conn)
    .await?;
    if free.is_none() {
        return Ok(false);
    }
    let detail = json!({ "retried_for": parent, "failure_policy": FailurePolicy::Retry });
    if !queue_move(conn, child, TaskState::Queued, BoardState::Ready, detail).await? {
        return Ok(false);
    }
    sqlx::query("UPDATE tasks SET board_reason = NULL WHERE id = $1")
        .bind(child)
        .execute(&mut *conn)
        .await?;
    Ok(true)
}

/// Blocks the children of `parent` that have not started: all of them, or with
/// `downstream_only` those that wait, directly or through others, for a `failed` one.
/// Returns the ones blocked.
async fn stop_waiting(
    conn: &mut PgConnection,
    parent: i64,
    failed: &[i64],
    downstream_only: bool,
) -> Result<Vec<i64>> {
    let waiting: Vec<(i64, TaskState)> = sqlx::query_as(
        "WITH RECURSIVE downstream (id) AS (
             SELECT d.task_id FROM task_blockers d WHERE d.blocker_id = ANY($2)
             UNION
             SELECT d.task_id FROM task_blockers d JOIN downstream u ON d.blocker_id = u.id
         )
         SELECT t.id, t.state FROM tasks t
         WHERE t.parent_id = $1 AND t.state IN ('queued', 'held')
           AND t.board_state NOT IN ('done', 'cancelled', 'blocked')
           AND (NOT $3 OR t.id IN (SELECT id FROM downstream))
         ORDER BY t.id
         FOR UPDATE OF t SKIP LOCKED",
    )
    .bind(parent)
    .bind(failed)
    .bind(downstream_only)
    .fetch_all(&mut *conn)
    .await?;
    let reason = format!("stopped: {} failed", failed_text(failed));
    for &(child, state) in &waiting {
        let detail = json!({
            "board_to": BoardState::Blocked, "stopped_by": failed, "reason": reason,
        });
        if state == TaskState::Queued
            && !queue_move(
                conn,
                child,
                TaskState::Held,
                BoardState::Blocked,
                detail.clone(),
            )
            .await?
        {
            continue;
        }
        set_board(conn, child, BoardState::Blocked, Some(&reason), detail).await?;
    }
    Ok(waiting.into_iter().map(|(id, _)| id).collect())
}

/// Moves `parent` to blocked, its reason naming the failed children; recorded only when
/// the reason changes.
async fn block(
    conn: &mut PgConnection,
    parent_id: i64,
    parent: &Parent,
    failed: &[i64],
    stopped: &[i64],
) -> Result<()> {
    let mut reason = format!("{} failed", failed_text(failed));
    if !stopped.is_empty() {
        let _ = write!(reason, "; stopped {}", failed_text(stopped));
    }
    if parent.board_state == BoardState::Blocked
        && parent.board_reason.as_deref() == Some(reason.as_str())
    {
        return Ok(());
    }
    let detail = json!({
        "board_from": parent.board_state, "board_to": BoardState::Blocked,
        "failed": failed, "stopped": stopped, "failure_policy": parent.failure_policy,
        "reason": reason,
    });
    set_board(conn, parent_id, BoardState::Blocked, Some(&reason), detail).await
}

/// Moves `parent` to done (queue state succeeded): every child is done or cancelled. What
/// waits for it may be claimed now, and its own parent settles in turn.
async fn complete(conn: &mut PgConnection, parent: i64) -> Result<()> {
    let detail = json!({ "children_resolved": true });
    if !queue_move(conn, parent, TaskState::Succeeded, BoardState::Done, detail).await? {
        return Ok(());
    }
    sqlx::query("UPDATE tasks SET board_reason = NULL WHERE id = $1")
        .bind(parent)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Moves a task this settling holds to queue state `to` and board state `board`; false when
/// the state machine refuses (the task moved on before it was locked).
async fn queue_move(
    conn: &mut PgConnection,
    task: i64,
    to: TaskState,
    board: BoardState,
    detail: serde_json::Value,
) -> Result<bool> {
    match tasks::set_state_and_board(conn, task, to, board, detail).await {
        Ok(()) => Ok(true),
        Err(EngineError::Transition(_)) => Ok(false),
        Err(EngineError::Db(err)) => Err(err),
    }
}

async fn set_board(
    conn: &mut PgConnection,
    task: i64,
    to: BoardState,
    reason: Option<&str>,
    detail: serde_json::Value,
) -> Result<()> {
    sqlx::query(
        "UPDATE tasks SET board_state = $2, board_reason = $3, updated_at = now() WHERE id = $1",
    )
    .bind(task)
    .bind(to)
    .bind(reason)
    .execute(&mut *conn)
    .await?;
    events::record(&mut *conn, task, None, "board", detail).await?;
    Ok(())
}

fn failed_text(ids: &[i64]) -> String {
    let names: Vec<String> = ids.iter().map(|id| format!("task #{id}")).collect();
    names.join(", ")
}
