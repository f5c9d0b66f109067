//! Clarification round-trips: a run parked at a step that asked its requester questions, the
//! answer that sends it back to the queue (to run that step again), and the end of a run
//! nobody answered in time. The one place an answer is accepted or refused.

use serde_json::json;
use sqlx::{PgConnection, PgExecutor};

use super::events;
use super::runs;
use super::state::{RunState, TaskState};
use super::tasks::{self, EngineError};
use crate::report::{Failure, Outcome};

/// The most of an answer kept, in bytes: GitHub's comments hold 65,536 characters, and the
/// step reads the answer from a file.
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// The most of a step's questions kept, in bytes: they are quoted in the status comment and
/// the check run, beside the rest of the report.
pub const MAX_QUESTIONS_BYTES: usize = 16 * 1024;

/// Questions a run waits to have answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Asked<'a> {
    pub step: &'a str,
    pub position: i32,
    pub questions: &'a str,
    pub timeout_hours: u32,
}

/// A run waiting for an answer, and the round of questions it waits on.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Waiting {
    pub run_id: i64,
    pub round: i32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answered {
    /// The answer is stored and the task is back in the queue.
    Taken { run_id: i64 },
    /// Nothing changed; the reason is for the request's record, or for the person.
    Refused(Refusal),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The comment is no answer: nobody waits for one here, or someone else wrote it.
    #[error("no run here waits for an answer from this person")]
    NotAsked,
    #[error(
        "the answer is {0} bytes long; at most {MAX_ANSWER_BYTES} are taken, so shorten it and comment again"
    )]
    TooLong(usize),
}

/// Parks run `run_id` at `asked`, counting the round; `false` when the run is no longer
/// running. The caller ends the task's lease to `awaiting_input` in the same transaction.
pub async fn park(db: impl PgExecutor<'_>, run_id: i64, asked: &Asked<'_>) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "UPDATE runs SET state = 'awaiting_input', questions = $2, questions_asked_at = now(),
             answer_timeout_hours = $3, waiting_step = $4, resume_at_step = NULL,
             clarification_rounds = clarification_rounds + 1
         WHERE id = $1 AND state = 'running'",
    )
    .bind(run_id)
    .bind(asked.questions)
    .bind(asked.timeout_hours as i32)
    .bind(asked.position)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// The run of task `task_id` that waits for an answer now, if one does.
pub async fn waiting(db: impl PgExecutor<'_>, task_id: i64) -> sqlx::Result<Option<Waiting>> {
    sqlx::query_as(
        "SELECT id AS run_id, clarification_rounds AS round FROM runs
         WHERE task_id = $1 AND state = 'awaiting_input' AND resume_at_step IS NULL
         ORDER BY id DESC LIMIT 1",
    )
    .bind(task_id)
    .fetch_optional(db)
    .await
}

/// Takes `text` by `by` as the answer to the questions task `task_id`'s run waits on, in the
/// caller's transaction: only its requester answers (GitHub logins compared without case).
pub async fn answer(
    conn: &mut PgConnection,
    task_id: i64,
    by: &str,
    text: &str,
) -> Result<Answered, EngineError> {
    let task: Option<(TaskState, Option<String>)> =
        sqlx::query_as("SELECT state, requested_by FROM tasks WHERE id = $1 FOR UPDATE")
            .bind(task_id)
            .fetch_optional(&mut *conn)
            .await?;
    let requester = match task {
        Some((TaskState::AwaitingInput, Some(requester))) => requester,
        _ => return Ok(Answered::Refused(Refusal::NotAsked)),
    };
    if !requester.eq_ignore_ascii_case(by) {
        return Ok(Answered::Refused(Refusal::NotAsked));
    }
    let Some(waiting) = waiting(&mut *conn, task_id).await? else {
        return Ok(Answered::Refused(Refusal::NotAsked));
    };
    let text = crate::text_bounds::remove_nul(text);
    if text.len() > MAX_ANSWER_BYTES {
        return Ok(Answered::Refused(Refusal::TooLong(text.len())));
    }
    sqlx::query(
        "UPDATE runs SET answers = array_append(answers, $2), resume_at_step = waiting_step
         WHERE id = $1",
    )
    .bind(waiting.run_id)
    .bind(text.as_ref())
    .execute(&mut *conn)
    .await?;
    events::record(
        &mut *conn,
        task_id,
        Some(waiting.run_id),
        "answer",
        json!({ "by": by, "round": waiting.round, "bytes": text.len() }),
    )
    .await?;
    tasks::leave_gate(
        conn,
        task_id,
        TaskState::Queued,
        json!({ "answered_by": by }),
    )
    .await?;
    Ok(Answered::Taken {
        run_id: waiting.run_id,
    })
}

/// A run whose questions waited too long.
#[derive(sqlx::FromRow)]
struct Unanswered {
    run_id: i64,
    task_id: i64,
    step: Option<String>,
    hours: i32,
    check_sha: Option<String>,
}

/// Fails every run whose questions went unanswered for longer than its pipeline allows,
/// with its task, and queues their reports; returns the tasks failed.
pub async fn expire(conn: &mut PgConnection) -> Result<Vec<i64>, EngineError> {
    let due: Vec<Unanswered> = sqlx::query_as(
        "SELECT r.id AS run_id, r.task_id, s.name AS step, r.answer_timeout_hours AS hours,
                r.check_sha
         FROM runs r
         JOIN tasks t ON t.id = r.task_id AND t.state = 'awaiting_input'
         LEFT JOIN run_steps s ON s.run_id = r.id AND s.position = r.waiting_step
         WHERE r.questions_asked_at IS NOT NULL AND r.finished_at IS NULL
           AND r.state = 'awaiting_input' AND r.resume_at_step IS NULL
           AND r.questions_asked_at + make_interval(hours => r.answer_timeout_hours) < now()
         ORDER BY r.id
         FOR UPDATE OF r, t SKIP LOCKED",
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut failed = Vec::with_capacity(due.len());
    for Unanswered {
        run_id,
        task_id,
        step,
        hours,
        check_sha,
    } in due
    {
        let failure = Failure::NoAnswer {
            step: step.unwrap_or_default(),
            reason: format!("nobody answered within {hours} hours"),
        };
        let outcome = Outcome::Failed(failure);
        runs::end_from(
            &mut *conn,
            run_id,
            &[RunState::AwaitingInput],
            RunState::Failed,
            &outcome,
        )
        .await?;
        tasks::leave_gate(
            conn,
            task_id,
            TaskState::Failed,
            json!({ "unanswered_for_hours": hours }),
        )
        .await?;
        let mut effects =
            crate::outbox::check_runs(&mut *conn, task_id, check_sha.as_deref()).await?;
        effects.push(crate::outbox::Effect::StatusComment { task_id });
        crate::outbox::sync_task(conn, task_id, &effects).await?;
        failed.push(task_id);
    }
    Ok(failed)
}

/// Whether a task of issue `issue` waits for an answer.
pub async fn awaited_on(
    db: impl PgExecutor<'_>,
    owner: &str,
    name: &str,
    issue: i64,
) -> sqlx::Result<bool> {
    sqlx::query_scalar(
        "SELECT EXISTS (
             SELECT 1 FROM tasks
             WHERE repo_owner = $1 AND repo_name = $2 AND issue_number = $3
               AND state = 'awaiting_input'
         )",
    )
    .bind(owner)
    .bind(name)
    .bind(issue)
    .fetch_one(db)
    .await
}
