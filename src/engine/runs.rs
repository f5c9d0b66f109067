//! Runs of a task, the results of their steps, and what they published.

use chrono::{DateTime, Utc};
use sha2::Digest;
use sqlx::types::Json;
use sqlx::{PgConnection, PgExecutor};

use super::approvals::Gate;
use super::state::RunState;
use crate::pipeline::StepResult;
use crate::report::Outcome;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Run {
    pub id: i64,
    pub task_id: i64,
    pub attempt: i32,
    pub state: RunState,
    pub pipeline: String,
    pub branch: Option<String>,
    /// The last commit the run pushed.
    pub head_sha: Option<String>,
    pub pull_request_number: Option<i64>,
    pub pull_request_url: Option<String>,
    pub failure: Option<String>,
    pub outcome: Option<Json<Outcome>>,
    /// The pipeline file the run goes by, from its task's first attempt on.
    pub definition: Option<String>,
    /// The default branch's commit the pipeline file was read at.
    pub definition_sha: Option<String>,
    /// SHA-256 of `definition`, in hex: a later run says when the file changed.
    pub definition_hash: Option<String>,
    /// Where a run resumed after an approval goes on: the step after the gate.
    pub resume_at_step: Option<i32>,
    pub previous_run_id: Option<i64>,
    /// The commit the run reports on now.
    pub check_sha: Option<String>,
    /// The commit the run's work started from: what its diff is taken against.
    pub base_sha: Option<String>,
    /// The gate the run waits at, or waited at last.
    pub approval: Option<Json<Gate>>,
    /// The questions a step asked the requester last, while the run waits for the answer
    /// and after.
    pub questions: Option<String>,
    /// The step the run waits at (an approval, or a step that asked questions), by position.
    pub waiting_step: Option<i32>,
    /// Rounds of questions the run asked so far.
    pub clarification_rounds: i32,
    /// The requester's answers, oldest first.
    pub answers: Vec<String>,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Time its steps took so far, over every pass: what its budget is counted against.
    pub time_used_ms: i64,
    /// Why the run did not succeed ([`Outcome::error_type`]), and around what.
    pub error_type: Option<String>,
    pub failed_step: Option<String>,
    pub last_successful_step: Option<String>,
    pub remediation: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct StepRecord {
    pub position: i32,
    pub name: String,
    pub command: String,
    pub exit_code: Option<i32>,
    pub duration_ms: i64,
    pub output: String,
    pub timed_out: bool,
    pub attempts: i32,
}

impl StepRecord {
    pub fn from_result(step: &StepResult) -> Self {
        Self {
            position: step.position as i32,
            name: step.name.clone(),
            command: step.command.clone(),
            exit_code: step.exit_code,
            duration_ms: step.duration.as_millis() as i64,
            output: step.output.clone(),
            timed_out: step.timed_out,
            attempts: step.attempts as i32,
        }
    }

    pub fn to_result(&self) -> StepResult {
        StepResult {
            position: self.position.max(0) as usize,
            name: self.name.clone(),
            command: self.command.clone(),
            exit_code: self.exit_code,
            duration: std::time::Duration::from_millis(self.duration_ms.max(0) as u64),
            output: self.output.clone(),
            timed_out: self.timed_out,
            out_of_budget: false,
            attempts: self.attempts.max(1) as u32,
        }
    }
}

const RUN_COLUMNS: &str = "id, task_id, attempt, state, pipeline, branch, head_sha, \
     pull_request_number, pull_request_url, failure, outcome, definition, resume_at_step, \
     previous_run_id, check_sha, base_sha, approval, definition_sha, definition_hash, \
     started_at, finished_at, time_used_ms, error_type, failed_step, last_successful_step, \
     remediation, questions, waiting_step, clarification_rounds, answers";

/// Starts the next attempt of a task, going by the pipeline definition its first attempt
/// pinned (whatever the default branch holds by now); a retry's first run follows the last run
/// of the task it retries, and reads the pipeline file afresh, unless it retries from a step:
/// then it goes by the definition of the run it takes up, whose step positions it counts on.
pub async fn start(conn: &mut PgConnection, task_id: i64, pipeline: &str) -> sqlx::Result<Run> {
    sqlx::query_as(&format!(
        "WITH pinned AS (
             SELECT definition, definition_sha, definition_hash FROM (
                 SELECT 0 AS rank, id, definition, definition_sha, definition_hash FROM runs
                 WHERE task_id = $1 AND definition IS NOT NULL
                 UNION ALL
                 SELECT 1, r.id, r.definition, r.definition_sha, r.definition_hash
                 FROM runs r JOIN tasks t ON r.id = t.retry_from_run
                 WHERE t.id = $1 AND r.definition IS NOT NULL
             ) found ORDER BY rank, id LIMIT 1
         )
         INSERT INTO runs (task_id, attempt, pipeline, previous_run_id, definition,
                           definition_sha, definition_hash)
         VALUES ($1, (SELECT COALESCE(MAX(attempt), 0) + 1 FROM runs WHERE task_id = $1), $2,
                 COALESCE((SELECT max(id) FROM runs WHERE task_id = $1),
                          (SELECT max(r.id) FROM runs r JOIN tasks t ON r.task_id = t.retry_of
                           WHERE t.id = $1)),
                 (SELECT definition FROM pinned), (SELECT definition_sha FROM pinned),
                 (SELECT definition_hash FROM pinned))
         RETURNING {RUN_COLUMNS}"
    ))
    .bind(task_id)
    .bind(pipeline)
    .fetch_one(conn)
    .await
}

/// The task's run that was approved (or had its questions answered) and waits to go on, if
/// any.
pub async fn approved(db: impl PgExecutor<'_>, task_id: i64) -> sqlx::Result<Option<Run>> {
    sqlx::query_as(&format!(
        "SELECT {RUN_COLUMNS} FROM runs
         WHERE task_id = $1 AND state IN ('awaiting_approval', 'awaiting_input')
           AND resume_at_step IS NOT NULL
         ORDER BY id DESC LIMIT 1"
    ))
    .bind(task_id)
    .fetch_optional(db)
    .await
}

/// Takes an approved (or answered) run up again under its task's new claim.
pub async fn resume(db: impl PgExecutor<'_>, run_id: i64) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "UPDATE runs SET state = 'running'
         WHERE id = $1 AND state IN ('awaiting_approval', 'awaiting_input')
           AND resume_at_step IS NOT NULL",
    )
    .bind(run_id)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn get(db: impl PgExecutor<'_>, run_id: i64) -> sqlx::Result<Option<Run>> {
    sqlx::query_as(&format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = $1"))
        .bind(run_id)
        .fetch_optional(db)
        .await
}

pub async fn latest(db: impl PgExecutor<'_>, task_id: i64) -> sqlx::Result<Option<Run>> {
    sqlx::query_as(&format!(
        "SELECT {RUN_COLUMNS} FROM runs WHERE task_id = $1 ORDER BY id DESC LIMIT 1"
    ))
    .bind(task_id)
    .fetch_optional(db)
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

/// The pipeline file a run goes by, as read from the default branch.
pub struct Definition<'a> {
    pub text: &'a str,
    /// The commit it was read at.
    pub sha: &'a str,
}

impl Definition<'_> {
    pub fn hash(&self) -> String {
        hex::encode(sha2::Sha256::digest(self.text.as_bytes()))
    }
}

/// Moves a pending run to running: its workspace and pipeline are ready and its steps start.
/// A run taken up again after a gate or questions is running already.
pub async fn begin(db: impl PgExecutor<'_>, run_id: i64) -> sqlx::Result<()> {
    sqlx::query("UPDATE runs SET state = 'running' WHERE id = $1 AND state = 'pending'")
        .bind(run_id)
        .execute(db)
        .await?;
    Ok(())
}

/// Pins the commit a run's work starts from, and the pipeline file it goes by unless an
/// earlier attempt of its task pinned one already.
pub async fn pin(
    db: impl PgExecutor<'_>,
    run_id: i64,
    definition: &Definition<'_>,
    base_sha: &str,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE runs SET base_sha = $2, definition = COALESCE(definition, $3),
             definition_sha = COALESCE(definition_sha, $4),
             definition_hash = COALESCE(definition_hash, $5)
         WHERE id = $1",
    )
    .bind(run_id)
    .bind(base_sha)
    .bind(definition.text)
    .bind(definition.sha)
    .bind(definition.hash())
    .execute(db)
    .await?;
    Ok(())
}

/// The last run of the earlier tasks, when it read another pipeline file than `run`
/// did: a new task (a retry, a relabel) reads the file afresh, and its report says so. (A
/// task's own attempts all go by the file its first one read.)
pub async fn definition_changed_since(
    db: impl PgExecutor<'_>,
    run: &Run,
) -> sqlx::Result<Option<i64>> {
    let Some(hash) = &run.definition_hash else {
        return Ok(None);
    };
    sqlx::query_as(
        "SELECT earlier.id, earlier.definition_hash FROM runs earlier
         JOIN tasks earlier_task ON earlier_task.id = earlier.task_id
         JOIN tasks this_task ON this_task.id = $1
         WHERE earlier.id < $2 AND earlier.definition_hash IS NOT NULL
           AND earlier_task.id <> this_task.id
           AND earlier_task.installation_id = this_task.installation_id
           AND earlier_task.repo_owner = this_task.repo_owner
           AND earlier_task.repo_name = this_task.repo_name
           AND earlier_task.issue_number = this_task.issue_number
         ORDER BY earlier.id DESC LIMIT 1",
    )
    .bind(run.task_id)
    .bind(run.id)
    .fetch_optional(db)
    .await
    .map(|earlier: Option<(i64, String)>| {
        earlier.and_then(|(id, earlier_hash)| (&earlier_hash != hash).then_some(id))
    })
}

/// Largest binary patch of a failed run's work that is kept for `/conveyor retry STEP`.
pub const MAX_WORK_BYTES: usize = 16 * 1024 * 1024;

/// Keeps what a failed run's steps left in the work tree, as a binary patch against its base.
pub async fn keep_work(db: impl PgExecutor<'_>, run_id: i64, patch: &[u8]) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO run_work (run_id, patch) VALUES ($1, $2)
         ON CONFLICT (run_id) DO UPDATE SET patch = EXCLUDED.patch",
    )
    .bind(run_id)
    .bind(patch)
    .execute(db)
    .await?;
    Ok(())
}

/// The work a failed run left, when it was kept.
pub async fn work(db: impl PgExecutor<'_>, run_id: i64) -> sqlx::Result<Option<Vec<u8>>> {
    sqlx::query_scalar("SELECT patch FROM run_work WHERE run_id = $1")
        .bind(run_id)
        .fetch_optional(db)
        .await
}

/// Whether a failed run's work was kept, without reading it.
pub async fn has_work(db: impl PgExecutor<'_>, run_id: i64) -> sqlx::Result<bool> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM run_work WHERE run_id = $1)")
        .bind(run_id)
        .fetch_one(db)
        .await
}

/// Records the result of a step's attempt if the run's task is still held under lease
/// `epoch` (a later attempt's replaces it) and counts its time against the run's budget;
/// `false` when the result is stale (the task was rescued) and was dropped.
pub async fn record_step(
    db: impl PgExecutor<'_>,
    run_id: i64,
    epoch: i64,
    step: &StepRecord,
) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "WITH held AS (
             UPDATE runs r SET time_used_ms = r.time_used_ms + $6
             FROM tasks t
             WHERE r.id = $1 AND t.id = r.task_id AND t.lease_epoch = $8 AND t.state = 'running'
             RETURNING r.id, r.task_id
         ), audit AS (
             INSERT INTO task_events (task_id, run_id, kind, detail)
             SELECT task_id, id, 'step_completed',
                    jsonb_build_object('position', $2, 'step', $3, 'exit_code', $5,
                                       'duration_ms', $6, 'timed_out', $9, 'attempts', $10)
             FROM held
         )
         INSERT INTO run_steps (run_id, position, name, command, exit_code, duration_ms, output,
                                timed_out, attempts)
         SELECT id, $2, $3, $4, $5, $6, $7, $9, $10 FROM held
         ON CONFLICT (run_id, position) DO UPDATE SET name = EXCLUDED.name,
             command = EXCLUDED.command, exit_code = EXCLUDED.exit_code,
             duration_ms = EXCLUDED.duration_ms, output = EXCLUDED.output,
             timed_out = EXCLUDED.timed_out, attempts = EXCLUDED.attempts",
    )
    .bind(run_id)
    .bind(step.position)
    .bind(&step.name)
    .bind(&step.command)
    .bind(step.exit_code)
    .bind(step.duration_ms)
    .bind(&step.output)
    .bind(epoch)
    .bind(step.timed_out)
    .bind(step.attempts)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Records that an attempt of the step at `position` started, if the run's task is still
/// held under lease `epoch`.
pub async fn step_started(
    db: impl PgExecutor<'_>,
    run_id: i64,
    epoch: i64,
    position: usize,
    step: &str,
    attempt: u32,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO task_events (task_id, run_id, kind, detail)
         SELECT r.task_id, r.id, 'step_started',
                jsonb_build_object('position', $3::INT, 'step', $4::TEXT, 'attempt', $5::INT)
         FROM runs r JOIN tasks t ON t.id = r.task_id
         WHERE r.id = $1 AND t.lease_epoch = $2 AND t.state = 'running'",
    )
    .bind(run_id)
    .bind(epoch)
    .bind(position as i32)
    .bind(step)
    .bind(attempt as i32)
    .execute(db)
    .await?;
    Ok(())
}

/// Records the decision taken at a gate as the gate step's result, so the run's timeline
/// shows who let it through (or that nobody had to).
pub async fn record_gate_step(
    db: impl PgExecutor<'_>,
    run_id: i64,
    step: &StepRecord,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO run_steps (run_id, position, name, command, exit_code, duration_ms, output)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (run_id, position) DO UPDATE SET output = EXCLUDED.output,
             exit_code = EXCLUDED.exit_code",
    )
    .bind(run_id)
    .bind(step.position)
    .bind(&step.name)
    .bind(&step.command)
    .bind(step.exit_code)
    .bind(step.duration_ms)
    .bind(&step.output)
    .execute(db)
    .await?;
    Ok(())
}

pub async fn steps(db: impl PgExecutor<'_>, run_id: i64) -> sqlx::Result<Vec<StepRecord>> {
    sqlx::query_as(
        "SELECT position, name, command, exit_code, duration_ms, output, timed_out, attempts
         FROM run_steps WHERE run_id = $1 ORDER BY position",
    )
    .bind(run_id)
    .fetch_all(db)
    .await
}

/// Records how the run ended; `false` when it had already ended (its task was taken from its
/// worker, which closed the run as interrupted or cancelled) and the result was dropped.
pub async fn finish(
    db: impl PgExecutor<'_>,
    run_id: i64,
    state: RunState,
    outcome: &Outcome,
) -> sqlx::Result<bool> {
    end_from(
        db,
        run_id,
        &[RunState::Pending, RunState::Running],
        state,
        outcome,
    )
    .await
}

/// Ends the run as `state` with `outcome` if it is in one of the states `from`; `false` when
/// it was not.
pub async fn end_from(
    db: impl PgExecutor<'_>,
    run_id: i64,
    from: &[RunState],
    state: RunState,
    outcome: &Outcome,
) -> sqlx::Result<bool> {
    let ending = Ending::of(outcome);
    let done = sqlx::query(&format!(
        "UPDATE runs SET state = $7, finished_at = now(), outcome = $2, failure = $3,
             {ENDING_COLUMNS}
         WHERE id = $1 AND state = ANY($8)"
    ))
    .bind(run_id)
    .bind(Json(outcome))
    .bind(ending.failure)
    .bind(ending.error_type)
    .bind(ending.failed_step)
    .bind(ending.remediation)
    .bind(state)
    .bind(from)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Records how a run that ended without its worker's result was stopped (or was rejected at
/// its gate), for its reports.
pub async fn record_outcome(
    db: impl PgExecutor<'_>,
    run_id: i64,
    outcome: &Outcome,
) -> sqlx::Result<()> {
    let ending = Ending::of(outcome);
    sqlx::query(&format!(
        "UPDATE runs SET outcome = $2, failure = COALESCE(failure, $3), {ENDING_COLUMNS}
         WHERE id = $1 AND outcome IS NULL"
    ))
    .bind(run_id)
    .bind(Json(outcome))
    .bind(ending.failure)
    .bind(ending.error_type)
    .bind(ending.failed_step)
    .bind(ending.remediation)
    .execute(db)
    .await?;
    Ok(())
}

/// The columns an ending sets beside the outcome (`$2`) and failure (`$3`): binds `$4` to
/// `$6`, and the last step that passed from the steps recorded.
const ENDING_COLUMNS: &str = "error_type = $4, failed_step = $5, remediation = $6,
     last_successful_step = CASE WHEN $4 IS NULL THEN NULL ELSE
         (SELECT name FROM run_steps WHERE run_id = $1 AND exit_code = 0
          ORDER BY position DESC LIMIT 1) END";

/// What an outcome says about the failure, in the columns queries use.
struct Ending {
    failure: Option<String>,
    error_type: Option<&'static str>,
    failed_step: Option<String>,
    remediation: Option<String>,
}

impl Ending {
    fn of(outcome: &Outcome) -> Self {
        Self {
            failure: match outcome {
                Outcome::Failed(failure) => Some(failure.headline()),
                _ => None,
            },
            error_type: outcome.error_type().map(|kind| kind.as_str()),
            failed_step: outcome.failed_step().map(str::to_owned),
            remediation: outcome.remediation(),
        }
    }
}

/// Records a push as soon as it happened, so that a later attempt knows the branch holds
/// Conveyor's own commit even if this one never finishes; the run reports on that commit
/// from now on.
pub async fn record_push(
    db: impl PgExecutor<'_>,
    run_id: i64,
    branch: &str,
    head_sha: &str,
) -> sqlx::Result<()> {
    sqlx::query("UPDATE runs SET branch = $2, head_sha = $3, check_sha = $3 WHERE id = $1")
        .bind(run_id)
        .bind(branch)
        .bind(head_sha)
        .execute(db)
        .await?;
    Ok(())
}

/// Sets the commit the run reports on (a pull request's head, before it pushed anything).
pub async fn report_on(db: impl PgExecutor<'_>, run_id: i64, sha: &str) -> sqlx::Result<()> {
    sqlx::query("UPDATE runs SET check_sha = $2 WHERE id = $1")
        .bind(run_id)
        .bind(sha)
        .execute(db)
        .await?;
    Ok(())
}

pub async fn record_pull_request(
    db: impl PgExecutor<'_>,
    run_id: i64,
    number: i64,
    url: &str,
) -> sqlx::Result<()> {
    sqlx::query("UPDATE runs SET pull_request_number = $2, pull_request_url = $3 WHERE id = $1")
        .bind(run_id)
        .bind(number)
        .bind(url)
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

/// The GitHub id of the task's check run on `head_sha`, once the outbox created it.
pub async fn check_run_id(
    db: impl PgExecutor<'_>,
    task_id: i64,
    head_sha: &str,
) -> sqlx::Result<Option<i64>> {
    let id: Option<Option<i64>> = sqlx::query_scalar(
        "SELECT check_run_id FROM check_runs WHERE task_id = $1 AND head_sha = $2",
    )
    .bind(task_id)
    .bind(head_sha)
    .fetch_optional(db)
    .await?;
    Ok(id.flatten())
}

pub async fn set_check_run_id(
    db: impl PgExecutor<'_>,
    task_id: i64,
    head_sha: &str,
    check_run_id: i64,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO check_runs (task_id, head_sha, check_run_id) VALUES ($1, $2, $3)
         ON CONFLICT (task_id, head_sha) DO UPDATE SET check_run_id = $3",
    )
    .bind(task_id)
    .bind(head_sha)
    .bind(check_run_id)
    .execute(db)
    .await?;
    Ok(())
}

/// The commits the task has check runs on, oldest first.
pub async fn check_shas(db: impl PgExecutor<'_>, task_id: i64) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar(
        "SELECT head_sha FROM check_runs WHERE task_id = $1 ORDER BY created_at, head_sha",
    )
    .bind(task_id)
    .fetch_all(db)
    .await
}
