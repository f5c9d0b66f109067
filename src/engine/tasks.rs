//! Tasks: creation, lookup and guarded state changes.

use serde_json::json;
use sqlx::{PgConnection, PgExecutor};

use super::board::{self, BoardState};
use super::events;
use super::parents::{self, FailurePolicy};
use super::state::{TaskState, TransitionError};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewTask {
    pub installation_id: i64,
    pub repo_owner: String,
    pub repo_name: String,
    pub default_branch: String,
    /// None for a task made through the API: it has no issue to report on.
    pub issue_number: Option<i64>,
    pub title: String,
    pub body: String,
    pub pipeline: String,
    pub delivery_id: Option<i64>,
    /// Who asked for the task (labelled the issue, typed the command).
    pub requested_by: Option<String>,
    /// Set for a run on a pull request's own branch.
    pub pull_request: Option<PullRequestTarget>,
    /// The task this one runs again.
    pub retry_of: Option<i64>,
    /// A budget for the run below its pipeline's `timeout_minutes`.
    pub timeout_minutes: Option<i32>,
    /// Set for `/conveyor retry STEP`: where the task's runs start.
    pub retry_from: Option<RetryFrom>,
    /// Where it starts on the board, and what the board shows of it.
    pub board: BoardFields,
    /// The API request that asked for it; a task from a delivery is correlated with the
    /// delivery's `X-GitHub-Delivery`.
    pub correlation_id: Option<String>,
}

/// What a task carries for the board beyond its work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoardFields {
    /// `ready` (in the queue) or `backlog` (held out of it).
    pub state: BoardState,
    pub source: &'static str,
    pub task_type: String,
    pub priority: i32,
    pub labels: Vec<String>,
    pub assignee: Option<String>,
    pub acceptance_criteria: Vec<String>,
    pub context_files: Vec<String>,
    pub parent_id: Option<i64>,
    /// For a parent: how many of its children may run at once (no limit when `None`).
    pub max_parallelism: Option<i32>,
    /// For a parent: what a failed child does to the rest.
    pub failure_policy: FailurePolicy,
}

impl Default for BoardFields {
    fn default() -> Self {
        Self {
            state: BoardState::Ready,
            source: "github",
            task_type: "task".to_owned(),
            priority: 0,
            labels: Vec::new(),
            assignee: None,
            acceptance_criteria: Vec::new(),
            context_files: Vec::new(),
            parent_id: None,
            max_parallelism: None,
            failure_policy: FailurePolicy::default(),
        }
    }
}

/// A failed run taken up again at one of its steps: its pipeline definition, and the work
/// its steps had left, start the new run at step `position`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryFrom {
    pub run_id: i64,
    pub position: i32,
}

/// A pull request a task runs on: its new commits go to `head_branch`.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct PullRequestTarget {
    #[sqlx(rename = "pull_request")]
    pub number: i64,
    pub head_branch: String,
    /// The head when the run was asked for.
    pub head_sha: String,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Task {
    pub id: i64,
    pub installation_id: i64,
    pub repo_owner: String,
    pub repo_name: String,
    pub default_branch: String,
    pub issue_number: Option<i64>,
    pub title: String,
    pub body: String,
    pub pipeline: String,
    pub state: TaskState,
    pub board_state: BoardState,
    pub lease_epoch: i64,
    /// Attempts started so far, the running one included.
    pub attempts: i32,
    pub requested_by: Option<String>,
    pub pull_request: Option<i64>,
    pub head_branch: Option<String>,
    pub head_sha: Option<String>,
    pub retry_of: Option<i64>,
    pub cancelled_by: Option<String>,
    /// A budget for the run below its pipeline's `timeout_minutes`.
    pub timeout_minutes: Option<i32>,
    /// The run a `/conveyor retry STEP` task takes up (gone when that run was deleted).
    pub retry_from_run: Option<i64>,
    pub retry_from_step: Option<i32>,
    /// The delivery or API request that started the task's chain of events.
    pub correlation_id: Option<String>,
    /// Where it came from: `github`, `manual`, `prd_import`, `quick_run`, …
    pub source: String,
}

impl Task {
    /// What names its branch: the issue number, or the task's own for a task without one.
    pub fn branch_key(&self) -> String {
        match self.issue_number {
            Some(issue) => issue.to_string(),
            None => format!("task-{}", self.id),
        }
    }

    /// The pull request the task runs on, when it runs on one.
    pub fn pull_request_target(&self) -> Option<PullRequestTarget> {
        Some(PullRequestTarget {
            number: self.pull_request?,
            head_branch: self.head_branch.clone()?,
            head_sha: self.head_sha.clone()?,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Transition(#[from] TransitionError),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
}

pub(crate) const TASK_COLUMNS: &str = "id, installation_id, repo_owner, repo_name, default_branch, issue_number, \
     title, body, pipeline, state, board_state, lease_epoch, attempts, requested_by, pull_request, head_branch, \
     head_sha, retry_of, cancelled_by, timeout_minutes, retry_from_run, retry_from_step, correlation_id, \
     source";

/// Creates a task, queued when it starts ready and held when it starts in the backlog;
/// `None` when the issue already has a live task or the delivery already created one.
pub async fn create(conn: &mut PgConnection, task: &NewTask) -> sqlx::Result<Option<i64>> {
    let id: Option<i64> = sqlx::query_scalar(
        "INSERT INTO tasks (installation_id, repo_owner, repo_name, default_branch, issue_number,
                            title, body, pipeline, delivery_id, requested_by, pull_request,
                            head_branch, head_sha, retry_of, timeout_minutes, retry_from_run,
                            retry_from_step, state, board_state, source, task_type, priority,
                            labels, assignee, acceptance_criteria, context_files, parent_id,
                            correlation_id, max_parallelism, failure_policy)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17,
                 $18, $19, $20, $21, $22, $23, $24, $25, $26, $27,
                 COALESCE($28, (SELECT delivery_id FROM deliveries WHERE id = $9)), $29, $30)
         ON CONFLICT DO NOTHING
         RETURNING id",
    )
    .bind(task.installation_id)
    .bind(&task.repo_owner)
    .bind(&task.repo_name)
    .bind(&task.default_branch)
    .bind(task.issue_number)
    .bind(&task.title)
    .bind(&task.body)
    .bind(&task.pipeline)
    .bind(task.delivery_id)
    .bind(&task.requested_by)
    .bind(task.pull_request.as_ref().map(|pull| pull.number))
    .bind(task.pull_request.as_ref().map(|pull| &pull.head_branch))
    .bind(task.pull_request.as_ref().map(|pull| &pull.head_sha))
    .bind(task.retry_of)
    .bind(task.timeout_minutes)
    .bind(task.retry_from.map(|from| from.run_id))
    .bind(task.retry_from.map(|from| from.position))
    .bind(if task.board.state == BoardState::Backlog {
        TaskState::Held
    } else {
        TaskState::Queued
    })
    .bind(task.board.state)
    .bind(task.board.source)
    .bind(&task.board.task_type)
    .bind(task.board.priority)
    .bind(&task.board.labels)
    .bind(&task.board.assignee)
    .bind(&task.board.acceptance_criteria)
    .bind(&task.board.context_files)
    .bind(task.board.parent_id)
    .bind(&task.correlation_id)
    .bind(task.board.max_parallelism)
    .bind(task.board.failure_policy)
    .fetch_optional(&mut *conn)
    .await?;
    if let (Some(id), Some(parent)) = (id, task.board.parent_id) {
        parents::adopt(conn, parent, id).await?;
    }
    if let Some(id) = id {
        sqlx::query(
            "INSERT INTO repositories (owner, name) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(&task.repo_owner)
        .bind(&task.repo_name)
        .execute(&mut *conn)
        .await?;
        events::record(
            &mut *conn,
            id,
            None,
            "created",
            json!({
                "delivery": task.delivery_id,
                "requested_by": task.requested_by,
                "retry_of": task.retry_of,
                "retry_from_run": task.retry_from.map(|from| from.run_id),
            }),
        )
        .await?;
        wake_workers(&mut *conn).await?;
    }
    Ok(id)
}

pub async fn get(db: impl PgExecutor<'_>, id: i64) -> sqlx::Result<Option<Task>> {
    sqlx::query_as(&format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = $1"))
        .bind(id)
        .fetch_optional(db)
        .await
}

/// Moves a task held under lease `epoch` to `to`, refusing stale leases and transitions the
/// state machine does not allow. One statement: it needs no transaction of its own.
pub async fn transition(
    conn: &mut PgConnection,
    task_id: i64,
    epoch: i64,
    to: TaskState,
) -> Result<(), EngineError> {
    end_lease(conn, &Ending::new(task_id, epoch, to)).await
}

/// How the holder of a task's lease ends it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ending {
    pub task_id: i64,
    pub epoch: i64,
    pub to: TaskState,
    /// With `to` scheduled: how long until the retry is due.
    pub retry_in: Option<std::time::Duration>,
    /// Where the board goes instead of where the queue state leads it (a success whose
    /// review is approved automatically goes to done).
    pub board: Option<BoardState>,
}

impl Ending {
    pub fn new(task_id: i64, epoch: i64, to: TaskState) -> Self {
        Self {
            task_id,
            epoch,
            to,
            retry_in: None,
            board: None,
        }
    }
}

/// Ends one lease; see [`end_leases`].
pub async fn end_lease(conn: &mut PgConnection, ending: &Ending) -> Result<(), EngineError> {
    set_state(conn, Change::from(ending)).await
}

/// Ends many leases in one statement (each one checked on its own); a result per ending, in
/// order.
pub async fn end_leases(
    conn: &mut PgConnection,
    endings: &[Ending],
) -> sqlx::Result<Vec<Result<(), TransitionError>>> {
    let changes: Vec<Change> = endings.iter().map(Change::from).collect();
    set_states(conn, &changes).await
}

/// One guarded state change: applied if the state machine allows it from the task's
/// current state and, when `epoch` is given, the lease is still that epoch.
struct Change {
    task_id: i64,
    epoch: Option<i64>,
    to: TaskState,
    retry_in: Option<std::time::Duration>,
    /// Set by a move on the board; otherwise the board follows the queue.
    board: Option<BoardState>,
    /// Added to the from/to recorded in the audit trail.
    detail: serde_json::Value,
}

impl From<&Ending> for Change {
    fn from(ending: &Ending) -> Self {
        Self {
            task_id: ending.task_id,
            epoch: Some(ending.epoch),
            to: ending.to,
            retry_in: ending.retry_in,
            board: ending.board,
            detail: json!({}),
        }
    }
}

impl Change {
    fn unguarded(task_id: i64, to: TaskState, detail: serde_json::Value) -> Self {
        Self {
            task_id,
            epoch: None,
            to,
            retry_in: None,
            board: None,
            detail,
        }
    }
}

/// What a task was when a state change looked at it.
#[derive(sqlx::FromRow)]
struct Found {
    id: i64,
    state: TaskState,
    lease_epoch: i64,
    moved: bool,
    /// The parent of a moved child, which settles after it.
    parent_id: Option<i64>,
}

/// Applies guarded state changes in one statement, keeping the repositories' running counts
/// and the audit trail in step, and closing the open run of a task taken from its worker
/// (a worker closes its own run with its result); a result per change, in order. The
/// allowed transitions are passed in from [`TaskState::can_become`], the one place that
/// rule lives.
///
/// Other processes' idle workers are woken (`NOTIFY`) only when queued work appears or a
/// finished task had dependents. A slot freed by a finished task is not announced: the
/// worker that freed it claims next, and wakes its own process's idle sessions if there is
/// more. Announcing every completion would cost more than the claim itself: a notifying
/// commit holds a cluster-wide lock through its WAL flush, so those commits cannot be
/// grouped.
async fn set_states(
    conn: &mut PgConnection,
    changes: &[Change],
) -> sqlx::Result<Vec<Result<(), TransitionError>>> {
    let (allowed_from, allowed_to): (Vec<TaskState>, Vec<TaskState>) = TaskState::ALL
        .into_iter()
        .flat_map(|to| to.sources().into_iter().map(move |from| (from, to)))
        .unzip();
    let follows = board::follows_queue_rows();
    let found: Vec<Found> = sqlx::query_as(
        "WITH change AS (
             SELECT * FROM unnest($1::BIGINT[], $2::BIGINT[], $3::task_state[],
                                  $4::FLOAT8[], $5::JSONB[], $9::board_state[])
                 AS c(task_id, epoch, to_state, retry_in, detail, board)
         ), allowed AS (
             SELECT * FROM unnest($6::task_state[], $7::task_state[]) AS a(from_state, to_state)
         ), follows AS (
             SELECT * FROM unnest($10::task_state[], $11::board_state[], $12::BOOL[],
                                  $13::board_state[])
                 AS f(queue, board, reviewable, board_to)
         ), old AS (
             SELECT t.id, t.state, t.lease_epoch, t.board_state,
                    -- A run that pushed a branch has a pull request to review: the
                    -- outbox opens it after the run ends.
                    (t.pull_request IS NOT NULL OR EXISTS (
                        SELECT 1 FROM runs r
                        WHERE r.task_id = t.id
                          AND (r.pull_request_number IS NOT NULL OR r.branch IS NOT NULL)
                    )) AS reviewable
             FROM tasks t
             WHERE t.id IN (SELECT task_id FROM change)
             ORDER BY t.id
             FOR UPDATE
         ), moved AS (
             UPDATE tasks t
             SET state = c.to_state, updated_at = now(),
                 board_state = COALESCE(c.board, (
                     SELECT f.board_to FROM follows f
                     WHERE f.queue = c.to_state AND f.board = old.board_state
                       AND f.reviewable = old.reviewable
                 )),
                 process_id = CASE WHEN c.to_state = 'running' THEN t.process_id END,
                 run_after = CASE WHEN c.retry_in IS NOT NULL
                                  THEN now() + make_interval(secs => c.retry_in)
                                  ELSE t.run_after END
             FROM old JOIN change c ON c.task_id = old.id
             WHERE t.id = old.id
               AND (old.state, c.to_state) IN (SELECT from_state, to_state FROM allowed)
               AND (c.epoch IS NULL OR old.lease_epoch = c.epoch)
             RETURNING t.id, old.state AS from_state, t.state AS to_state, c.detail,
                       t.repo_owner, t.repo_name, old.board_state AS board_from,
                       t.board_state AS board_to, t.parent_id
         ), slots AS (
             UPDATE repositories r SET running = r.running - freed.n
             FROM (SELECT repo_owner, repo_name, count(*) AS n FROM moved
                   WHERE from_state = 'running' GROUP BY repo_owner, repo_name) freed
             WHERE r.owner = freed.repo_owner AND r.name = freed.repo_name
         ), interrupted AS (
             UPDATE runs SET finished_at = now(),
                 state = CASE WHEN moved.to_state = 'cancelled' THEN 'cancelled'::run_state
                              WHEN runs.state IN ('awaiting_approval', 'awaiting_input')
                                  THEN 'failed'
                              ELSE 'interrupted' END
             FROM moved
             WHERE runs.task_id = moved.id
               AND ((moved.from_state = 'running' AND runs.state IN ('pending', 'running'))
                    -- A parked run, or an approved (answered) one waiting to resume, ends
                    -- with its task.
                    OR (moved.to_state IN ('failed', 'cancelled')
                        AND runs.state IN ('awaiting_approval', 'awaiting_input')))
         ), audit AS (
             INSERT INTO task_events (task_id, kind, detail)
             SELECT id, 'state',
                    jsonb_build_object('from', from_state, 'to', to_state)
                    || CASE WHEN board_from <> board_to
                            THEN jsonb_build_object('board_from', board_from, 'board_to', board_to)
                            ELSE '{}' END
                    || detail
             FROM moved
         ), wake AS (
             SELECT count(pg_notify($8, '')) FROM moved
             WHERE to_state = 'queued'
                OR (board_to IN ('done', 'cancelled') AND board_from <> board_to
                    AND EXISTS (SELECT 1 FROM task_blockers WHERE blocker_id = moved.id))
         )
         SELECT old.id, old.state, old.lease_epoch, moved.id IS NOT NULL AS moved,
                moved.parent_id
         FROM old LEFT JOIN moved ON moved.id = old.id, wake",
    )
    .bind(changes.iter().map(|c| c.task_id).collect::<Vec<_>>())
    .bind(changes.iter().map(|c| c.epoch).collect::<Vec<_>>())
    .bind(changes.iter().map(|c| c.to).collect::<Vec<_>>())
    .bind(
        changes
            .iter()
            .map(|c| c.retry_in.map(|delay| delay.as_secs_f64()))
            .collect::<Vec<_>>(),
    )
    .bind(changes.iter().map(|c| c.detail.clone()).collect::<Vec<_>>())
    .bind(allowed_from)
    .bind(allowed_to)
    .bind(WAKE_CHANNEL)
    .bind(changes.iter().map(|c| c.board).collect::<Vec<_>>())
    .bind(follows.iter().map(|f| f.0).collect::<Vec<_>>())
    .bind(follows.iter().map(|f| f.1).collect::<Vec<_>>())
    .bind(follows.iter().map(|f| f.2).collect::<Vec<_>>())
    .bind(follows.iter().map(|f| f.3).collect::<Vec<_>>())
    .fetch_all(&mut *conn)
    .await?;
    let mut settling: Vec<i64> = found.iter().filter_map(|f| f.parent_id).collect();
    if !settling.is_empty() {
        settling.sort_unstable();
        settling.dedup();
        // Boxed: settling a parent changes it, and so settles its own parent in turn.
        Box::pin(parents::settle(conn, &settling)).await?;
    }
    Ok(changes
        .iter()
        .map(
            |change| match found.iter().find(|f| f.id == change.task_id) {
                Some(found) if found.moved => Ok(()),
                found => Err(refusal(
                    change.task_id,
                    found.map(|f| (f.state, f.lease_epoch)),
                    change.epoch,
                    change.to,
                )),
            },
        )
        .collect())
}

/// Applies one unguarded-by-lease change (the caller holds the task row).
async fn set_state(conn: &mut PgConnection, change: Change) -> Result<(), EngineError> {
    let mut results = set_states(conn, std::slice::from_ref(&change)).await?;
    Ok(results.pop().expect("one result per change")?)
}

/// Moves a task whose row the caller holds to queue state `to` and board state `board`: a
/// move on the board that puts the task into the queue or takes it out.
pub(super) async fn set_state_and_board(
    conn: &mut PgConnection,
    task_id: i64,
    to: TaskState,
    board: BoardState,
    detail: serde_json::Value,
) -> Result<(), EngineError> {
    let mut change = Change::unguarded(task_id, to, detail);
    change.board = Some(board);
    set_state(conn, change).await
}

/// Why a change of task `task_id` to `to` under lease `epoch` was refused, given what the
/// task was (`None`: no such task).
fn refusal(
    task_id: i64,
    found: Option<(TaskState, i64)>,
    epoch: Option<i64>,
    to: TaskState,
) -> TransitionError {
    match (found, epoch) {
        (None, _) => TransitionError::NotFound { task_id },
        (Some((_, current)), Some(epoch)) if current != epoch => {
            TransitionError::StaleLease { task_id, epoch }
        }
        (Some((from, _)), _) => TransitionError::NotAllowed { task_id, from, to },
    }
}

/// Why a change of a task that had to be running was refused.
async fn refused_unless_running(
    conn: &mut PgConnection,
    task_id: i64,
    epoch: Option<i64>,
    to: TaskState,
) -> EngineError {
    match get(&mut *conn, task_id).await {
        Ok(task) => refusal(task_id, task.map(|t| (t.state, t.lease_epoch)), epoch, to).into(),
        Err(err) => err.into(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rescued {
    /// Back in the queue for another attempt.
    Requeued,
    /// Its attempts were used up.
    Failed,
}

/// Takes a running task away from a process that stopped heartbeating: back to the queue,
/// or failed when its attempts are used up. The lease epoch moves on, so a result the lost
/// process still sends is refused.
pub async fn rescue(conn: &mut PgConnection, task_id: i64) -> Result<Rescued, EngineError> {
    take_back(conn, task_id, None, None).await
}

/// Takes a running task back from a worker session that crashed while holding lease
/// `epoch`: like a rescue, but refused if the lease already moved on.
pub async fn crashed(
    conn: &mut PgConnection,
    task_id: i64,
    epoch: i64,
    message: &str,
) -> Result<Rescued, EngineError> {
    take_back(conn, task_id, Some(epoch), Some(message)).await
}

/// Requeues a running task with its attempt counted, or fails it when attempts are used up;
/// call it in a transaction.
async fn take_back(
    conn: &mut PgConnection,
    task_id: i64,
    epoch: Option<i64>,
    crash: Option<&str>,
) -> Result<Rescued, EngineError> {
    let row: Option<(i32, i32, Option<String>)> = sqlx::query_as(
        "UPDATE tasks SET lease_epoch = lease_epoch + 1
         WHERE id = $1 AND state = 'running' AND ($2::BIGINT IS NULL OR lease_epoch = $2)
         RETURNING attempts, max_attempts, process_id",
    )
    .bind(task_id)
    .bind(epoch)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((attempts, max_attempts, process)) = row else {
        return Err(refused_unless_running(conn, task_id, epoch, TaskState::Queued).await);
    };
    let (to, rescued) = if attempts < max_attempts {
        (TaskState::Queued, Rescued::Requeued)
    } else {
        (TaskState::Failed, Rescued::Failed)
    };
    let mut detail = json!({ "rescued_from": process, "attempts": attempts });
    if let Some(message) = crash {
        detail["crashed"] = json!(message);
    }
    set_state(conn, Change::unguarded(task_id, to, detail)).await?;
    // Its worker will report nothing more: its comment and check runs learn it here.
    crate::outbox::sync_tasks(conn, &[task_id]).await?;
    Ok(rescued)
}

/// Gives a running task back to the queue from a process shutting down, without counting the
/// attempt: the task did not fail, its process left. Refused if the lease moved on.
pub async fn hand_back(
    conn: &mut PgConnection,
    task_id: i64,
    epoch: i64,
) -> Result<(), EngineError> {
    let moved_on = sqlx::query(
        "UPDATE tasks SET lease_epoch = lease_epoch + 1, attempts = GREATEST(attempts - 1, 0)
         WHERE id = $1 AND lease_epoch = $2 AND state = 'running'",
    )
    .bind(task_id)
    .bind(epoch)
    .execute(&mut *conn)
    .await?;
    if moved_on.rows_affected() == 0 {
        return Err(refused_unless_running(conn, task_id, Some(epoch), TaskState::Queued).await);
    }
    let detail = json!({ "handed_back": true });
    set_state(conn, Change::unguarded(task_id, TaskState::Queued, detail)).await?;
    crate::outbox::sync_tasks(conn, &[task_id]).await?;
    Ok(())
}

/// Ends a running task cancelled at someone's request, from its worker under lease `epoch`,
/// with its reports.
pub async fn stopped_cancelled(
    conn: &mut PgConnection,
    task_id: i64,
    epoch: i64,
) -> Result<(), EngineError> {
    end_lease(conn, &Ending::new(task_id, epoch, TaskState::Cancelled)).await?;
    crate::outbox::sync_tasks(conn, &[task_id]).await?;
    Ok(())
}

/// Moves a task out of its approval gate or its questions: back to the queue when approved
/// or answered (the resumed run is not a new attempt, so the claim's count is given back
/// beforehand), or failed when rejected or unanswered. The caller holds the task row.
pub(super) async fn leave_gate(
    conn: &mut PgConnection,
    task_id: i64,
    to: TaskState,
    detail: serde_json::Value,
) -> Result<(), EngineError> {
    if to == TaskState::Queued {
        sqlx::query("UPDATE tasks SET attempts = GREATEST(attempts - 1, 0) WHERE id = $1")
            .bind(task_id)
            .execute(&mut *conn)
            .await?;
    }
    set_state(conn, Change::unguarded(task_id, to, detail)).await
}

/// The live task (queued, running, scheduled, awaiting approval or input) of an issue or pull
/// request, if there is one: its newest task, since no task starts while one is live.
pub async fn live_for_issue(
    db: impl PgExecutor<'_>,
    owner: &str,
    name: &str,
    issue: i64,
) -> sqlx::Result<Option<Task>> {
    let latest = latest_for_issue(db, owner, name, issue).await?;
    Ok(latest.filter(|task| !task.state.is_final()))
}

/// The newest task of an issue or pull request, live or not.
pub async fn latest_for_issue(
    db: impl PgExecutor<'_>,
    owner: &str,
    name: &str,
    issue: i64,
) -> sqlx::Result<Option<Task>> {
    sqlx::query_as(&format!(
        "SELECT {TASK_COLUMNS} FROM tasks
         WHERE repo_owner = $1 AND repo_name = $2 AND issue_number = $3
         ORDER BY id DESC LIMIT 1"
    ))
    .bind(owner)
    .bind(name)
    .bind(issue)
    .fetch_optional(db)
    .await
}

/// Queues every scheduled task whose retry is due; returns how many.
pub async fn queue_due_retries(conn: &mut PgConnection) -> Result<usize, EngineError> {
    let due: Vec<i64> = sqlx::query_scalar(
        "SELECT id FROM tasks WHERE state = 'scheduled' AND run_after <= now()
         ORDER BY run_after
         FOR UPDATE SKIP LOCKED",
    )
    .fetch_all(&mut *conn)
    .await?;
    for &task_id in &due {
        set_state(
            conn,
            Change::unguarded(task_id, TaskState::Queued, json!({})),
        )
        .await?;
    }
    Ok(due.len())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cancel {
    /// The task was queued and is now cancelled.
    Cancelled,
    /// The task is running; its worker will stop it and end it cancelled.
    Requested,
}

/// Cancels a waiting task at once, or asks the worker of a running one to stop it; a
/// parent's children, and theirs, that have not ended go with it, since they do its work.
/// `by` is the person who asked, when one did.
pub async fn cancel(
    conn: &mut PgConnection,
    task_id: i64,
    by: Option<&str>,
) -> Result<Cancel, EngineError> {
    let cancelled = cancel_one(conn, task_id, by).await?;
    let descendants: Vec<(i64, TaskState)> = sqlx::query_as(
        "WITH RECURSIVE below (id) AS (
             SELECT id FROM tasks WHERE parent_id = $1
             UNION
             SELECT t.id FROM tasks t JOIN below b ON t.parent_id = b.id
         )
         SELECT t.id, t.state FROM tasks t JOIN below USING (id) ORDER BY t.id",
    )
    .bind(task_id)
    .fetch_all(&mut *conn)
    .await?;
    for (child, state) in descendants {
        if !state.is_final() {
            cancel_one(conn, child, by).await?;
        }
    }
    Ok(cancelled)
}

async fn cancel_one(
    conn: &mut PgConnection,
    task_id: i64,
    by: Option<&str>,
) -> Result<Cancel, EngineError> {
    let state: Option<TaskState> =
        sqlx::query_scalar("SELECT state FROM tasks WHERE id = $1 FOR UPDATE")
            .bind(task_id)
            .fetch_optional(&mut *conn)
            .await?;
    let state = state.ok_or(TransitionError::NotFound { task_id })?;
    if !state.is_final() {
        sqlx::query("UPDATE tasks SET cancelled_by = $2 WHERE id = $1")
            .bind(task_id)
            .bind(by)
            .execute(&mut *conn)
            .await?;
    }
    match state {
        TaskState::Queued
        | TaskState::Held
        | TaskState::Scheduled
        | TaskState::AwaitingApproval
        | TaskState::AwaitingInput => {
            set_state(
                conn,
                Change::unguarded(task_id, TaskState::Cancelled, json!({ "by": by })),
            )
            .await?;
            // No worker holds it to report its end: its comment and check run learn it here.
            crate::outbox::sync_tasks(conn, &[task_id]).await?;
            Ok(Cancel::Cancelled)
        }
        TaskState::Running => {
            sqlx::query("UPDATE tasks SET cancel_requested = true WHERE id = $1")
                .bind(task_id)
                .execute(&mut *conn)
                .await?;
            events::record(
                &mut *conn,
                task_id,
                None,
                "cancel_requested",
                json!({ "by": by }),
            )
            .await?;
            Ok(Cancel::Requested)
        }
        from => Err(TransitionError::NotAllowed {
            task_id,
            from,
            to: TaskState::Cancelled,
        }
        .into()),
    }
}

/// Whether someone asked for the running task to stop.
pub async fn cancel_requested(db: impl PgExecutor<'_>, task_id: i64) -> sqlx::Result<bool> {
    sqlx::query_scalar("SELECT cancel_requested FROM tasks WHERE id = $1")
        .bind(task_id)
        .fetch_optional(db)
        .await
        .map(|flag| flag.unwrap_or(false))
}

/// Whether the task is running under lease `epoch` and nobody asked it to stop.
pub async fn lease_held(db: impl PgExecutor<'_>, task_id: i64, epoch: i64) -> sqlx::Result<bool> {
    sqlx::query_scalar(
        "SELECT EXISTS (
             SELECT 1 FROM tasks
             WHERE id = $1 AND lease_epoch = $2 AND state = 'running' AND NOT cancel_requested
         )",
    )
    .bind(task_id)
    .bind(epoch)
    .fetch_one(db)
    .await
}

/// The `LISTEN`/`NOTIFY` channel on which idle workers are told to look for work.
pub const WAKE_CHANNEL: &str = "conveyor_tasks";

/// Tells every process's idle workers to look for work; delivered when the caller's
/// transaction commits.
pub async fn wake_workers(db: impl PgExecutor<'_>) -> sqlx::Result<()> {
    sqlx::query("SELECT pg_notify($1, '')")
        .bind(WAKE_CHANNEL)
        .execute(db)
        .await?;
    Ok(())
}

/// The task a delivery created, if any.
pub async fn created_by_delivery(
    db: impl PgExecutor<'_>,
    delivery_id: i64,
) -> sqlx::Result<Option<i64>> {
    sqlx::query_scalar("SELECT id FROM tasks WHERE delivery_id = $1")
        .bind(delivery_id)
        .fetch_optional(db)
        .await
}

/// Deletes up to `batch` tasks finished more than `age` ago, with their runs, step results
/// and audit trail; returns how many.
pub async fn delete_finished(
    db: impl PgExecutor<'_>,
    age: std::time::Duration,
    batch: i64,
) -> sqlx::Result<u64> {
    let done = sqlx::query(
        "DELETE FROM tasks WHERE id IN (
             SELECT id FROM tasks
             WHERE state IN ('succeeded', 'failed', 'cancelled')
               AND updated_at < now() - make_interval(secs => $1)
             LIMIT $2
             FOR UPDATE SKIP LOCKED
         )",
    )
    .bind(age.as_secs_f64())
    .bind(batch)
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}
