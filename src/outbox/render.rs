//! What a sync shows, read from the records when it is delivered: the status comment of a
//! task and its check run on one commit, in the report's pure texts.

use std::time::Duration;

use sqlx::PgPool;

use crate::engine::approvals::Gate;
use crate::engine::runs::{self, Run};
use crate::engine::tasks::{self, Task};
use crate::engine::{RunState, TaskState, deferral, status_comments};
use crate::pipeline::StepResult;
use crate::report::approval::{ApprovalContext, Approvers};
use crate::report::check_run::{self, CheckRunReport, CheckState};
use crate::report::{self, Interruption, Outcome, Questions, RunLinks, comment};

pub(super) struct ShownComment {
    pub issue: i64,
    pub body: String,
}

pub(super) struct ShownCheck {
    pub report: CheckRunReport,
    pub check_run_id: Option<i64>,
    /// Where the check run links: the run's page, or the task before a run started.
    pub details_url: String,
}

pub(super) struct WantedPull {
    pub branch: String,
    pub base: String,
    pub title: String,
    /// The issue the pull request closes, when the task has one.
    pub issue: Option<i64>,
    pub pipeline: String,
}

/// The task's status comment as its records say now, linking to its run under `public_url`;
/// `None` when the task is gone.
pub(super) async fn status_comment(
    pool: &PgPool,
    task_id: i64,
    public_url: &str,
) -> sqlx::Result<Option<ShownComment>> {
    let Some(task) = tasks::get(pool, task_id).await? else {
        return Ok(None);
    };
    // A task made through the API has no issue to comment on.
    let Some(issue) = task.issue_number else {
        return Ok(None);
    };
    let run = runs::latest(pool, task_id).await?;
    let steps = match &run {
        Some(run) => step_results(pool, run.id).await?,
        None => Vec::new(),
    };
    let body = match (&run, task.state) {
        (None, TaskState::Queued) => {
            let shown = status_comments::get(pool, task_id).await?;
            let reason = match shown.and_then(|shown| shown.waiting) {
                Some(reason) => reason,
                None => deferral::reason(pool, task_id)
                    .await?
                    .unwrap_or_else(|| "waiting for a worker".to_owned()),
            };
            comment::waiting(task.id, &task.pipeline, &reason)
        }
        (None, _) => comment::ended(
            task.id,
            &task.pipeline,
            0,
            &Outcome::Cancelled {
                by: task.cancelled_by.clone(),
            },
            None,
            &[],
            None,
            false,
        ),
        (Some(run), _) => {
            let mut body = run_comment(pool, &task, run, &steps).await?;
            if let Some(earlier) = runs::definition_changed_since(pool, run).await? {
                body.push_str(&comment::definition_changed(
                    earlier,
                    run.definition_sha.as_deref(),
                ));
            }
            report::with_footer(&body, &footer(&task, run, public_url))
        }
    };
    Ok(Some(ShownComment { issue, body }))
}

async fn run_comment(
    pool: &PgPool,
    task: &Task,
    run: &Run,
    steps: &[StepResult],
) -> sqlx::Result<String> {
    let gate = run.approval.as_ref().map(|gate| &gate.0);
    Ok(match (run.state, task.state) {
        (RunState::Pending | RunState::Running, _) => {
            comment::started(task.id, &task.pipeline, run.attempt, steps)
        }
        (RunState::AwaitingApproval, TaskState::AwaitingApproval) => match gate {
            Some(gate) => comment::awaiting_approval(
                task.id,
                &task.pipeline,
                &comment::Gate {
                    step: &gate.step,
                    message: gate.message.as_deref(),
                    head_sha: &gate.head_sha,
                    approvers: &who_may_approve(gate),
                },
                steps,
            ),
            None => comment::started(task.id, &task.pipeline, run.attempt, steps),
        },
        (RunState::AwaitingInput, TaskState::AwaitingInput) => {
            comment::awaiting_input(task.id, &task.pipeline, &questions(task, run, steps), steps)
        }
        // Answered, waiting for a worker to take the run up again.
        (RunState::AwaitingInput, _) => comment::answered(task.id, &task.pipeline, steps),
        // Approved, waiting for a worker to take the run up again.
        (RunState::AwaitingApproval, _) => {
            let by = gate
                .and_then(|gate| gate.decision.as_ref())
                .map(|decision| decision.by.as_str());
            comment::approved(task.id, &task.pipeline, by, steps)
        }
        _ => {
            let outcome = ended(task, run);
            let retry_in = match task.state {
                TaskState::Scheduled => retry_in(pool, task.id).await?,
                _ => None,
            };
            let requeued = matches!(task.state, TaskState::Queued);
            comment::ended(
                task.id,
                &task.pipeline,
                run.attempt,
                &outcome,
                proposed_in(task, run).as_deref(),
                steps,
                retry_in,
                requeued,
            )
        }
    })
}

/// Where the run's changes are proposed: its own pull request once the outbox opened it, or
/// the pull request it ran on (which GitHub links from `#number`).
fn proposed_in(task: &Task, run: &Run) -> Option<String> {
    run.pull_request_url
        .clone()
        .or_else(|| task.pull_request.map(|number| format!("#{number}")))
}

/// How a run that is over ended: its recorded outcome, or, for a run its worker never
/// closed (the process died), what its state says.
fn ended(task: &Task, run: &Run) -> Outcome {
    if let Some(outcome) = &run.outcome {
        return outcome.0.clone();
    }
    match run.state {
        RunState::Cancelled => Outcome::Cancelled {
            by: task.cancelled_by.clone(),
        },
        _ => Outcome::Interrupted(Interruption::Lost),
    }
}

async fn retry_in(pool: &PgPool, task_id: i64) -> sqlx::Result<Option<Duration>> {
    let seconds: Option<f64> = sqlx::query_scalar(
        "SELECT GREATEST(0, EXTRACT(EPOCH FROM run_after - now()))::FLOAT8 FROM tasks
         WHERE id = $1 AND run_after IS NOT NULL",
    )
    .bind(task_id)
    .fetch_optional(pool)
    .await?;
    Ok(seconds.map(Duration::from_secs_f64))
}

/// The task's check run on `head_sha` as its records say now, linking to its run under
/// `public_url`; `None` when the task is gone.
pub(super) async fn check_run(
    pool: &PgPool,
    task_id: i64,
    head_sha: &str,
    public_url: &str,
) -> sqlx::Result<Option<ShownCheck>> {
    let Some(task) = tasks::get(pool, task_id).await? else {
        return Ok(None);
    };
    let run = runs::latest(pool, task_id).await?;
    let check_run_id = runs::check_run_id(pool, task_id, head_sha).await?;
    let mut report = match &run {
        None => check_run::render(&task.pipeline, queued_or_cancelled(&task), &[]),
        Some(run) => {
            let steps = step_results(pool, run.id).await?;
            if run.check_sha.as_deref() == Some(head_sha) {
                current_check(&task, run, &steps)
            } else {
                // A commit the run reported on earlier: a gate since approved, or the head
                // a pull-request run started from before it pushed.
                let approved_by = run
                    .approval
                    .as_ref()
                    .filter(|gate| gate.0.head_sha == head_sha)
                    .and_then(|gate| gate.0.decision.as_ref())
                    .filter(|decision| decision.approved)
                    .map(|decision| decision.by.as_str());
                let state = match (approved_by, &run.check_sha) {
                    (Some(by), next) => CheckState::Approved {
                        by,
                        continued_at: next.as_deref(),
                    },
                    (None, next) => CheckState::Superseded {
                        by_commit: next.as_deref(),
                    },
                };
                check_run::render(&task.pipeline, state, &steps)
            }
        }
    };
    let details_url = match &run {
        Some(run) => {
            report.summary = report::with_footer(&report.summary, &footer(&task, run, public_url));
            RunLinks::new(public_url, run.id).page
        }
        None => format!(
            "{}/api/v2/tasks/{task_id}",
            public_url.trim_end_matches('/')
        ),
    };
    Ok(Some(ShownCheck {
        report,
        check_run_id,
        details_url,
    }))
}

/// The failure context (once the run is over) and the links a run's reports end with.
fn footer(task: &Task, run: &Run, public_url: &str) -> String {
    let over = !matches!(
        run.state,
        RunState::Pending
            | RunState::Running
            | RunState::AwaitingApproval
            | RunState::AwaitingInput
    );
    let outcome = over.then(|| ended(task, run));
    report::footer(
        outcome.as_ref(),
        run.last_successful_step.as_deref(),
        &RunLinks::new(public_url, run.id),
    )
}

fn queued_or_cancelled(task: &Task) -> CheckState<'_> {
    match task.state {
        TaskState::Cancelled => CheckState::Cancelled {
            by: task.cancelled_by.as_deref(),
        },
        _ => CheckState::Queued,
    }
}

fn current_check(task: &Task, run: &Run, steps: &[StepResult]) -> CheckRunReport {
    let gate = run.approval.as_ref().map(|gate| &gate.0);
    match (run.state, gate) {
        (RunState::Pending | RunState::Running, _) => {
            let step = steps.last().map(|step| step.name.as_str());
            check_run::render(&task.pipeline, CheckState::InProgress { step }, steps)
        }
        (RunState::AwaitingApproval, Some(gate)) if gate.decision.is_none() => {
            let context = ApprovalContext {
                step: &gate.step,
                message: gate.message.as_deref(),
                head_sha: &gate.head_sha,
                files: &gate.files,
                steps,
                approvers: approvers(gate),
            };
            check_run::render(
                &task.pipeline,
                CheckState::AwaitingApproval(&context),
                steps,
            )
        }
        (RunState::AwaitingApproval, _) => {
            check_run::render(&task.pipeline, CheckState::Queued, steps)
        }
        (RunState::AwaitingInput, _) if task.state == TaskState::AwaitingInput => {
            let questions = questions(task, run, steps);
            check_run::render(&task.pipeline, CheckState::AwaitingInput(&questions), steps)
        }
        (RunState::AwaitingInput, _) => {
            check_run::render(&task.pipeline, CheckState::Queued, steps)
        }
        _ => {
            let outcome = ended(task, run);
            let state = match &outcome {
                Outcome::Proposed { .. } => {
                    return check_run::render(
                        &task.pipeline,
                        CheckState::Succeeded {
                            pull_request_url: proposed_in(task, run).as_deref(),
                        },
                        steps,
                    );
                }
                Outcome::NoChanges => CheckState::NoChanges,
                Outcome::Failed(failure) => CheckState::Failed(failure),
                Outcome::Rejected { by, reason } => CheckState::Rejected {
                    by,
                    reason: reason.as_deref(),
                },
                Outcome::Cancelled { by } => CheckState::Cancelled { by: by.as_deref() },
                Outcome::Interrupted(_) => CheckState::Interrupted,
            };
            check_run::render(&task.pipeline, state, steps)
        }
    }
}

/// The questions the run waits to have answered, and who is to answer them.
fn questions<'a>(task: &'a Task, run: &'a Run, steps: &'a [StepResult]) -> Questions<'a> {
    let step = steps
        .iter()
        .find(|step| Some(step.position as i32) == run.waiting_step)
        .map_or("", |step| step.name.as_str());
    Questions {
        step,
        text: run.questions.as_deref().unwrap_or_default(),
        requester: task.requested_by.as_deref(),
    }
}

fn approvers(gate: &Gate) -> Approvers<'_> {
    Approvers {
        permission: gate.approver_permission(),
        allow_self_approval: gate.allow_self_approval,
        requester: gate.requester.as_deref(),
    }
}

fn who_may_approve(gate: &Gate) -> String {
    crate::report::approval::who_may_approve(&approvers(gate))
}

/// The pull request the run's branch is to be proposed in; `None` when the run proposes
/// nothing (or runs on a pull request already).
pub(super) async fn pull_request(
    pool: &PgPool,
    task_id: i64,
    run_id: i64,
) -> sqlx::Result<Option<WantedPull>> {
    let (Some(task), Some(run)) = (
        tasks::get(pool, task_id).await?,
        runs::get(pool, run_id).await?,
    ) else {
        return Ok(None);
    };
    if task.pull_request.is_some() {
        return Ok(None);
    }
    Ok(run.branch.map(|branch| WantedPull {
        branch,
        base: task.default_branch.clone(),
        title: task.title.clone(),
        issue: task.issue_number,
        pipeline: task.pipeline.clone(),
    }))
}

async fn step_results(pool: &PgPool, run_id: i64) -> sqlx::Result<Vec<StepResult>> {
    Ok(runs::steps(pool, run_id)
        .await?
        .into_iter()
        .map(|step| step.to_result())
        .collect())
}
