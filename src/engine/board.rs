//! The board: a task's lifecycle as people see it (seed 001 §4), in one table, with the
//! guards every entry point (API, GitHub, scheduler) goes through.
//!
//! A task has two states. The queue state ([`TaskState`]) is the scheduler's: whether a
//! worker may claim the task, holds it, or is done with it. The board state is the person's:
//! backlog, ready, in progress, in review, blocked, done, cancelled. The scheduler's changes
//! move the board along ([`follows_queue`]); a person's moves ([`move_task`]) change the
//! queue state where the move puts the task into the queue or takes it out.
//!
//! `blocked` is also derived: a `ready` task with a blocker that is neither done nor
//! cancelled is shown, and moved, as `blocked` (its reason names the blockers), and becomes
//! `ready` by itself the moment they resolve. Readiness is never stored, so blockers that
//! resolve together cannot make a task ready twice.

use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::PgConnection;

use super::state::TaskState;
use super::tasks::{self, Cancel, EngineError};
use super::{blockers, events, parents};

#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    sqlx::Type,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
#[sqlx(type_name = "board_state", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum BoardState {
    Backlog,
    Ready,
    InProgress,
    InReview,
    Blocked,
    Done,
    Cancelled,
}

use BoardState::*;

impl BoardState {
    /// In seed 001's order: the board's columns.
    pub const ALL: [BoardState; 7] = [
        Backlog, Ready, InProgress, InReview, Blocked, Done, Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Backlog => "backlog",
            Ready => "ready",
            InProgress => "in_progress",
            InReview => "in_review",
            Blocked => "blocked",
            Done => "done",
            Cancelled => "cancelled",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|state| state.as_str() == name)
    }

    /// The transition table in force under `rules`. `in_progress → done` is in it only when
    /// reviews are approved automatically; even then a person's move there is refused while
    /// a run holds the task.
    pub fn next(self, rules: Rules) -> &'static [BoardState] {
        match self {
            Backlog => &[Ready, Cancelled],
            Ready => &[InProgress, Blocked, Backlog, Cancelled],
            InProgress if rules.auto_approve_review => &[InReview, Blocked, Ready, Cancelled, Done],
            InProgress => &[InReview, Blocked, Ready, Cancelled],
            InReview => &[Done, InProgress, Blocked],
            Blocked => &[Ready, Backlog, Cancelled],
            Done => &[Ready],
            Cancelled => &[Backlog],
        }
    }

    pub fn allows(self, to: BoardState, rules: Rules) -> bool {
        self.next(rules).contains(&to)
    }

    /// A blocker in this state no longer holds its dependents back.
    pub fn resolves(self) -> bool {
        matches!(self, Done | Cancelled)
    }
}

/// What the deployment's settings change in the table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rules {
    /// `FEATURE_PRD_AUTO_APPROVE_REVIEW`: a successful run's task goes straight to done, its
    /// pull request (if any) needing no review on the board.
    pub auto_approve_review: bool,
}

/// Where the scheduler's change of a task's queue state to `queue` leaves a task that was at
/// `board`; `reviewable` says whether the task has a pull request open for review. A
/// successful run that leaves nothing to review completes its task whatever the rules: the
/// one move the scheduler makes that a person's table may lack (`in_progress → done`).
pub fn follows_queue(queue: TaskState, board: BoardState, reviewable: bool) -> BoardState {
    match queue {
        TaskState::Running
        | TaskState::Scheduled
        | TaskState::AwaitingApproval
        | TaskState::AwaitingInput => InProgress,
        // Taken back from its worker: it waits for the next claim.
        TaskState::Queued if board == InProgress => Ready,
        TaskState::Queued | TaskState::Held => board,
        TaskState::Succeeded if reviewable => InReview,
        TaskState::Succeeded => Done,
        TaskState::Failed => Blocked,
        TaskState::Cancelled => Cancelled,
    }
}

/// Every row of [`follows_queue`], for the statement that changes queue states in bulk.
pub(crate) fn follows_queue_rows() -> Vec<(TaskState, BoardState, bool, BoardState)> {
    let mut rows = Vec::new();
    for queue in TaskState::ALL {
        for board in BoardState::ALL {
            for reviewable in [false, true] {
                rows.push((
                    queue,
                    board,
                    reviewable,
                    follows_queue(queue, board, reviewable),
                ));
            }
        }
    }
    rows
}

/// What a task shows on the board: its stored state, or `blocked` while it is ready but
/// waits for blockers.
pub fn shown(stored: BoardState, waiting_for_blockers: bool) -> BoardState {
    if stored == Ready && waiting_for_blockers {
        Blocked
    } else {
        stored
    }
}

/// Why a person's move was refused; the task is unchanged.
#[derive(Debug, thiserror::Error)]
pub enum MoveError {
    #[error("task {0} does not exist")]
    NotFound(i64),
    #[error("a task cannot go from {} to {}; from {} it may go to {}",
            from.as_str(), to.as_str(), from.as_str(), names(allowed))]
    InvalidTransition {
        from: BoardState,
        to: BoardState,
        allowed: Vec<BoardState>,
    },
    #[error("only the scheduler's claim starts a task: move it to ready, or ask for a run")]
    ClaimOnly,
    #[error("its run decides where an in-progress task goes: cancel it, or wait for it to end")]
    RunInProgress,
    #[error("task {task} waits for unresolved blockers: {}", ids(blockers))]
    BlockedBy { task: i64, blockers: Vec<i64> },
    #[error("the issue already has a live task ({0}): cancel it first")]
    LiveTwin(i64),
    #[error("task {0} is a parent: its children run, it does not")]
    Parent(i64),
    #[error("a {} task is not run again by force: reopen or restore it first", .0.as_str())]
    NotForceable(BoardState),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

impl From<sqlx::Error> for MoveError {
    fn from(err: sqlx::Error) -> Self {
        Self::Engine(err.into())
    }
}

fn names(states: &[BoardState]) -> String {
    let names: Vec<&str> = states.iter().map(|state| state.as_str()).collect();
    if names.is_empty() {
        "nothing".to_owned()
    } else {
        names.join(", ")
    }
}

fn ids(ids: &[i64]) -> String {
    let ids: Vec<String> = ids.iter().map(|id| format!("#{id}")).collect();
    ids.join(", ")
}

#[derive(sqlx::FromRow)]
struct Current {
    state: TaskState,
    board_state: BoardState,
    issue_number: Option<i64>,
    repo_owner: String,
    repo_name: String,
    is_parent: bool,
}

/// Locks task `task_id` and reads what a move needs.
async fn current(conn: &mut PgConnection, task_id: i64) -> Result<Current, MoveError> {
    let current: Option<Current> = sqlx::query_as(
        "SELECT state, board_state, issue_number, repo_owner, repo_name,
                EXISTS (SELECT 1 FROM tasks c WHERE c.parent_id = tasks.id) AS is_parent
         FROM tasks WHERE id = $1 FOR UPDATE",
    )
    .bind(task_id)
    .fetch_optional(&mut *conn)
    .await?;
    current.ok_or(MoveError::NotFound(task_id))
}

/// Moves task `task_id` to `to` at a person's request (`by`), with `reason` kept for a move
/// to `blocked` or out of it, under the table `rules` put in force. Call inside a
/// transaction: the task row is locked first. Returns the state the task now shows.
pub async fn move_task(
    conn: &mut PgConnection,
    task_id: i64,
    to: BoardState,
    reason: Option<&str>,
    by: &str,
    rules: Rules,
) -> Result<BoardState, MoveError> {
    let current = current(conn, task_id).await?;
    let blockers = blockers::unresolved(conn, task_id).await?;
    let from = shown(current.board_state, !blockers.is_empty());
    if !from.allows(to, rules) {
        return Err(MoveError::InvalidTransition {
            from,
            to,
            allowed: from.next(rules).to_vec(),
        });
    }
    if to == InProgress {
        return Err(MoveError::ClaimOnly);
    }
    if from == InProgress && to != Cancelled {
        return Err(MoveError::RunInProgress);
    }
    if to == Ready && !blockers.is_empty() {
        return Err(MoveError::BlockedBy {
            task: task_id,
            blockers,
        });
    }
    let detail = json!({
        "board_from": from, "board_to": to, "by": by, "reason": reason,
    });
    // The queue state the move needs: into the queue for ready, out of it for the backlog
    // or blocked (a task in review keeps its finished run). A parent is never in the queue:
    // its children are.
    let queue = current.state;
    let queue_to = match to {
        Ready if current.is_parent => (queue != TaskState::Held).then_some(TaskState::Held),
        Ready if queue != TaskState::Queued => Some(TaskState::Queued),
        Backlog if queue != TaskState::Held => Some(TaskState::Held),
        Blocked if queue != TaskState::Held && !queue.is_final() => Some(TaskState::Held),
        _ => None,
    };
    if to == Cancelled && !queue.is_final() {
        if tasks::cancel(conn, task_id, Some(by)).await? == Cancel::Requested {
            // Its worker stops it and ends it cancelled: the board follows then.
            return Ok(InProgress);
        }
    } else if let Some(queue_to) = queue_to {
        if queue_to == TaskState::Queued {
            enter_queue(conn, task_id, &current).await?;
        }
        tasks::set_state_and_board(conn, task_id, queue_to, to, detail.clone()).await?;
    }
    sqlx::query(
        "UPDATE tasks SET board_state = $2, board_reason = $3, updated_at = now() WHERE id = $1",
    )
    .bind(task_id)
    .bind(to)
    .bind(reason)
    .execute(&mut *conn)
    .await?;
    events::record(&mut *conn, task_id, None, "board", detail).await?;
    parents::settle_parents_of(conn, &[task_id]).await?;
    Ok(to)
}

/// Puts task `task_id` into the queue at `by`'s explicit request although it is blocked
/// (by hand, by a failure, or by unresolved blockers, which the claim then passes over),
/// with `reason` in the audit trail. Refused for a done or cancelled task, one in progress
/// or in review, and a parent. Call inside a transaction.
pub async fn force_run(
    conn: &mut PgConnection,
    task_id: i64,
    reason: &str,
    by: &str,
) -> Result<(), MoveError> {
    let current = current(conn, task_id).await?;
    let blockers = blockers::unresolved(conn, task_id).await?;
    let from = shown(current.board_state, !blockers.is_empty());
    match from {
        Done | Cancelled | InReview => return Err(MoveError::NotForceable(from)),
        InProgress => return Err(MoveError::RunInProgress),
        Backlog | Ready | Blocked => {}
    }
    if current.is_parent {
        return Err(MoveError::Parent(task_id));
    }
    let detail = json!({
        "board_from": from, "board_to": Ready, "by": by, "reason": reason, "forced": true,
        "unresolved_blockers": blockers,
    });
    if current.state != TaskState::Queued {
        enter_queue(conn, task_id, &current).await?;
        tasks::set_state_and_board(conn, task_id, TaskState::Queued, Ready, detail.clone()).await?;
    }
    sqlx::query(
        "UPDATE tasks SET board_state = 'ready', board_reason = $2, forced = true,
                          updated_at = now()
         WHERE id = $1",
    )
    .bind(task_id)
    .bind(reason)
    .execute(&mut *conn)
    .await?;
    events::record(&mut *conn, task_id, None, "force_run", detail).await?;
    tasks::wake_workers(&mut *conn).await?;
    Ok(())
}

/// Readies a task that left the queue (finished, held or cancelled) for a new round of
/// attempts; refused while its issue has another live task.
async fn enter_queue(
    conn: &mut PgConnection,
    task_id: i64,
    current: &Current,
) -> Result<(), MoveError> {
    if let Some(issue) = current.issue_number {
        let twin: Option<i64> = sqlx::query_scalar(
            "SELECT id FROM tasks
             WHERE repo_owner = $1 AND repo_name = $2 AND issue_number = $3 AND id <> $4
               AND state NOT IN ('succeeded', 'failed', 'cancelled')",
        )
        .bind(&current.repo_owner)
        .bind(&current.repo_name)
        .bind(issue)
        .bind(task_id)
        .fetch_optional(&mut *conn)
        .await?;
        if let Some(twin) = twin {
            return Err(MoveError::LiveTwin(twin));
        }
    }
    // A new round waits for its blockers again unless it is forced anew.
    sqlx::query(
        "UPDATE tasks SET attempts = 0, cancel_requested = false, cancelled_by = NULL,
                          forced = false
         WHERE id = $1",
    )
    .bind(task_id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Moves those of `tasks` that wait in review to done: their pull request `number` was
/// merged. Returns the tasks moved.
pub async fn pull_request_merged(
    conn: &mut PgConnection,
    tasks: &[i64],
    number: i64,
    by: &str,
) -> sqlx::Result<Vec<i64>> {
    let moved: Vec<i64> = sqlx::query_scalar(
        "UPDATE tasks SET board_state = 'done', updated_at = now()
         WHERE id = ANY($1) AND board_state = 'in_review'
         RETURNING id",
    )
    .bind(tasks)
    .fetch_all(&mut *conn)
    .await?;
    for &task in &moved {
        let detail = json!({
            "board_from": InReview, "board_to": Done, "by": by, "merged": number,
        });
        events::record(&mut *conn, task, None, "board", detail).await?;
    }
    if !moved.is_empty() {
        // Their dependents may be claimed now.
        tasks::wake_workers(&mut *conn).await?;
        parents::settle_parents_of(conn, &moved).await?;
    }
    Ok(moved)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Seed 001 §4, written out as pairs; `in_progress → done` only with auto-approve.
    const SEED: &[(BoardState, BoardState)] = &[
        (Backlog, Ready),
        (Backlog, Cancelled),
        (Ready, InProgress),
        (Ready, Blocked),
        (Ready, Backlog),
        (Ready, Cancelled),
        (InProgress, InReview),
        (InProgress, Blocked),
        (InProgress, Ready),
        (InProgress, Cancelled),
        (InProgress, Done),
        (InReview, Done),
        (InReview, InProgress),
        (InReview, Blocked),
        (Blocked, Ready),
        (Blocked, Backlog),
        (Blocked, Cancelled),
        (Done, Ready),
        (Cancelled, Backlog),
    ];

    const AUTO_APPROVE: Rules = Rules {
        auto_approve_review: true,
    };

    #[test]
    fn the_table_is_seed_001s_and_nothing_more() {
        for from in BoardState::ALL {
            for to in BoardState::ALL {
                assert_eq!(
                    from.allows(to, AUTO_APPROVE),
                    SEED.contains(&(from, to)),
                    "{from:?} -> {to:?}"
                );
                assert_eq!(
                    from.allows(to, Rules::default()),
                    SEED.contains(&(from, to)) && (from, to) != (InProgress, Done),
                    "{from:?} -> {to:?} without auto-approve"
                );
            }
        }
    }

    #[test]
    fn a_states_name_is_the_one_postgres_and_the_api_use() {
        for state in BoardState::ALL {
            assert_eq!(serde_json::to_value(state).unwrap(), state.as_str());
            assert_eq!(BoardState::parse(state.as_str()), Some(state));
        }
        assert_eq!(BoardState::parse("queued"), None);
    }

    /// The board states a task can be at while its queue state is `queue`.
    fn beside(queue: TaskState) -> &'static [BoardState] {
        match queue {
            TaskState::Queued => &[Ready],
            TaskState::Held => &[Backlog, Blocked],
            TaskState::Running
            | TaskState::Scheduled
            | TaskState::AwaitingApproval
            | TaskState::AwaitingInput => &[InProgress],
            TaskState::Succeeded => &[InReview, Done, Blocked, Cancelled],
            TaskState::Failed => &[Blocked, Cancelled],
            TaskState::Cancelled => &[Cancelled],
        }
    }

    #[test]
    fn the_scheduler_only_makes_moves_the_table_allows() {
        for from in TaskState::ALL {
            // A parent's completion follows its children (`engine::parents`), not a run.
            let parent_done = |to: TaskState| from == TaskState::Held && to == TaskState::Succeeded;
            for to in TaskState::ALL
                .into_iter()
                .filter(|to| from.can_become(*to) && !parent_done(*to))
            {
                for &board in beside(from) {
                    for reviewable in [false, true] {
                        let after = follows_queue(to, board, reviewable);
                        assert!(
                            after == board || board.allows(after, AUTO_APPROVE),
                            "{from:?} -> {to:?} moves {board:?} to {after:?}"
                        );
                        let nothing_to_review =
                            to == TaskState::Succeeded && !reviewable && after == Done;
                        assert!(
                            after == board
                                || board.allows(after, Rules::default())
                                || nothing_to_review,
                            "{from:?} -> {to:?} moves {board:?} to {after:?} without auto-approve"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn a_run_ends_in_review_with_a_pull_request_and_done_without() {
        assert_eq!(
            follows_queue(TaskState::Succeeded, InProgress, true),
            InReview
        );
        assert_eq!(follows_queue(TaskState::Succeeded, InProgress, false), Done);
        assert_eq!(follows_queue(TaskState::Failed, InProgress, false), Blocked);
        assert_eq!(follows_queue(TaskState::Queued, InProgress, false), Ready);
        assert_eq!(follows_queue(TaskState::Running, Ready, false), InProgress);
    }

    #[test]
    fn a_ready_task_waiting_for_blockers_shows_blocked() {
        assert_eq!(shown(Ready, true), Blocked);
        assert_eq!(shown(Ready, false), Ready);
        assert_eq!(shown(Backlog, true), Backlog);
        assert!(Done.resolves() && Cancelled.resolves());
        assert!(!InReview.resolves() && !Blocked.resolves());
    }
}
