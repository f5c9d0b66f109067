//! Executing one claimed task: a run (new, or an approved one going on) through its stages,
//! [`prepare`] the workspace, run the steps up to the end or an approval step, [`publish`]
//! the work, and record how the run ended or where it waits, with its reports queued in the
//! outbox in the same transaction. The runner never calls GitHub's REST API itself.

mod clarify;
mod gate;
mod prepare;
mod publish;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sqlx::PgPool;
use tracing::Instrument;

use crate::engine::board::{BoardState, Rules};
use crate::engine::runs::{self, Run, StepRecord};
use crate::engine::tasks::{self, EngineError, Task};
use crate::engine::{RunState, TaskState};
use crate::engine::{logs, quick_runs};
use crate::github::GitHubApp;
use crate::metrics;
use crate::outbox::{self, Effect, Place};
use crate::pipeline::clarification;
use crate::pipeline::definition::RetryPolicy;
use crate::pipeline::git::Git;
use crate::pipeline::mirror::Mirrors;
use crate::pipeline::prompt::Prompts;
use crate::pipeline::sandbox::Sandbox;
use crate::pipeline::workspace::Workspaces;
use crate::pipeline::{self, PrepareError, StepResult, TaskContext};
use crate::report::{Failure, Interruption, Outcome};
use crate::scheduler::{Executor, Lease, SessionFault, Stop};

use publish::Head;

/// Failures of Conveyor's own (clone, push, GitHub, sandbox) are retried whatever the
/// pipeline says.
const INFRASTRUCTURE_RETRY: RetryPolicy = RetryPolicy {
    attempts: 3,
    backoff_seconds: 30,
    max_backoff_seconds: 600,
};

pub struct TaskRunner {
    pub pool: PgPool,
    pub github: Arc<GitHubApp>,
    pub workspaces: Workspaces,
    pub mirrors: Mirrors,
    pub sandbox: Sandbox,
    /// `GITHUB_GIT_URL`: repositories are at `{git_url}/{owner}/{repo}.git`.
    pub git_url: String,
    /// Where a successful run leaves its task on the board.
    pub board_rules: Rules,
}

impl Executor for TaskRunner {
    async fn execute(&self, task: Task, lease: Lease) -> Result<(), SessionFault> {
        let span = tracing::info_span!(
            "task",
            task_id = task.id,
            correlation_id = task.correlation_id.as_deref(),
            repository = %format_args!("{}/{}", task.repo_owner, task.repo_name),
            run_id = tracing::field::Empty
        );
        async {
            match self.run_task(&task, &lease).await {
                Ok(fault) => fault.map_or(Ok(()), Err),
                Err(err) => {
                    tracing::error!(error = %format!("{err:#}"), "task run could not be recorded");
                    Ok(())
                }
            }
        }
        .instrument(span)
        .await
    }

    /// A session is healthy when it can create a workspace and start a step's sandbox in it.
    async fn check(&self, _session: &str) -> Result<(), SessionFault> {
        let fault = |err: PrepareError| SessionFault(err.to_string());
        let workspace = self.workspaces.create().map_err(|e| fault(e.into()))?;
        self.sandbox
            .hand_over(&workspace)
            .map_err(|e| fault(e.into()))?;
        self.sandbox
            .check(&workspace.repo_dir())
            .await
            .map_err(|e| fault(e.into()))
    }

    /// Records how a run its worker did not finish was stopped, and queues its reports.
    async fn stopped(&self, task: Task, stop: Stop) {
        let span = tracing::info_span!(
            "task",
            task_id = task.id,
            correlation_id = task.correlation_id.as_deref()
        );
        async {
            let outcome = match stop {
                Stop::Cancel => Outcome::Cancelled {
                    by: tasks::get(&self.pool, task.id)
                        .await
                        .ok()
                        .flatten()
                        .and_then(|task| task.cancelled_by),
                },
                Stop::HandBack => Outcome::Interrupted(Interruption::HandedBack),
                Stop::Crash(_) => Outcome::Interrupted(Interruption::Crashed),
            };
            if let Err(err) = self.record_stop(task.id, &outcome).await {
                tracing::warn!(error = %err, "could not record how the run stopped");
            }
        }
        .instrument(span)
        .await
    }
}

/// The run's budget in minutes: the pipeline's, or the lower one its task asked for.
fn budget_minutes(pipeline: &pipeline::Pipeline, task: &Task) -> u64 {
    let asked = task
        .timeout_minutes
        .and_then(|minutes| u64::try_from(minutes).ok())
        .filter(|&minutes| minutes > 0);
    asked.map_or(pipeline.timeout_minutes, |asked| {
        asked.min(pipeline.timeout_minutes)
    })
}

/// How one pass of a run went.
enum Ended {
    /// The run reached its end: succeeded or failed.
    Over {
        outcome: Outcome,
        /// The pipeline's retry policy, when a step failed.
        step_retry: Option<RetryPolicy>,
        /// Set when the run failed because the session cannot work.
        fault: Option<SessionFault>,
    },
    /// The run is parked at a gate or at questions (or the lease moved on while parking it).
    Parked,
}

impl Ended {
    fn failed(failure: Failure) -> Self {
        Ended::Over {
            outcome: Outcome::Failed(failure),
            step_retry: None,
            fault: None,
        }
    }

    /// Failed because this session cannot work (no workspace, no sandbox): the run is
    /// retried as Conveyor's failure and the session goes unhealthy.
    fn session_fault(err: impl std::fmt::Display) -> Self {
        let message = err.to_string();
        Ended::Over {
            outcome: Outcome::Failed(Failure::Sandbox(message.clone())),
            step_retry: None,
            fault: Some(SessionFault(message)),
        }
    }
}

/// Ends a parked run's lease to `to` (a waiting state) with the reports of its commit
/// `head_sha` queued, in `tx` (which parked the run); `false` when the task had moved on and
/// nothing was written.
async fn park(
    mut tx: sqlx::Transaction<'_, sqlx::Postgres>,
    task: &Task,
    lease: &Lease,
    head_sha: &str,
    to: TaskState,
) -> Result<bool, EngineError> {
    let mut effects = outbox::check_runs(&mut tx, task.id, Some(head_sha)).await?;
    effects.push(Effect::StatusComment { task_id: task.id });
    outbox::enqueue(&mut tx, &Place::from(task), &effects).await?;
    match lease.end_in(tx, to, None, None).await {
        Ok(()) => Ok(true),
        Err(EngineError::Transition(err)) => {
            tracing::warn!(error = %err, "the run could not park: the task moved on");
            Ok(false)
        }
        Err(err) => Err(err),
    }
}

impl TaskRunner {
    /// Runs the attempt and records it; a fault found in the session is passed on.
    async fn run_task(&self, task: &Task, lease: &Lease) -> anyhow::Result<Option<SessionFault>> {
        let run = self.start_run(task).await?;
        tracing::Span::current().record("run_id", run.id);
        tracing::info!(attempt = run.attempt, pipeline = %task.pipeline, resumed = run.resume_at_step.is_some(), "run started");

        let Ended::Over {
            mut outcome,
            step_retry,
            fault,
        } = self.execute(task, lease, &run).await
        else {
            return Ok(None);
        };
        // Asked to stop while it ended (a step had finished, or it stopped publishing when
        // the lease gave way): it ends cancelled, whatever else went wrong.
        if tasks::cancel_requested(&self.pool, task.id).await? {
            let by = tasks::get(&self.pool, task.id)
                .await?
                .and_then(|task| task.cancelled_by);
            outcome = Outcome::Cancelled { by };
        }
        let attempt = task.attempts.max(1) as u32;
        let retry_in = match &outcome {
            Outcome::Failed(Failure::Step { .. }) => {
                step_retry.unwrap_or_default().delay_after(attempt)
            }
            Outcome::Failed(failure) if failure.is_conveyors() => {
                INFRASTRUCTURE_RETRY.delay_after(attempt)
            }
            // Success, or a broken pipeline file, a protected path touched or the budget
            // spent, which need a change rather than another attempt.
            _ => None,
        };
        self.record_end(task, lease, run.id, &outcome, retry_in)
            .await?;
        Ok(fault)
    }

    /// Takes up the task's approved run, or starts a new one; either way its reports say it
    /// runs.
    async fn start_run(&self, task: &Task) -> anyhow::Result<Run> {
        let mut tx = self.pool.begin().await?;
        let run = match runs::approved(&mut *tx, task.id).await? {
            Some(run) if runs::resume(&mut *tx, run.id).await? => run,
            _ => {
                let run = runs::start(&mut tx, task.id, &task.pipeline).await?;
                quick_runs::run_started(&mut *tx, task, run.id).await?;
                run
            }
        };
        let mut effects = vec![Effect::StatusComment { task_id: task.id }];
        // A pull-request run reports on the PR's head from the start; a run taken up after
        // an approval on the commit that was approved.
        let reported_on = run
            .check_sha
            .clone()
            .or_else(|| task.pull_request_target().map(|pull| pull.head_sha));
        if let Some(head_sha) = reported_on {
            runs::report_on(&mut *tx, run.id, &head_sha).await?;
            effects.push(Effect::CheckRun {
                task_id: task.id,
                head_sha,
            });
        }
        outbox::enqueue(&mut tx, &Place::from(task), &effects).await?;
        tx.commit().await?;
        Ok(run)
    }

    async fn execute(&self, task: &Task, lease: &Lease, run: &Run) -> Ended {
        let client = self
            .github
            .installation(task.installation_id, &task.repo_name);
        let git = match client.token().await {
            Ok(token) => Git::with_token(&token),
            Err(err) => {
                return Ended::failed(Failure::GitHub(format!("no installation token: {err}")));
            }
        };
        let prepared = match prepare::prepare(self, task, run, &git).await {
            Ok(prepared) => prepared,
            Err(PrepareError::Definition(err)) => {
                return Ended::failed(Failure::Definition(err.to_string()));
            }
            Err(err @ (PrepareError::Workspace(_) | PrepareError::Sandbox(_))) => {
                return Ended::session_fault(err);
            }
            Err(err @ PrepareError::Git(_)) => {
                return Ended::failed(Failure::Clone(err.to_string()));
            }
            Err(err @ PrepareError::Db(_)) => return Ended::failed(Failure::Lost(err.to_string())),
        };
        if let Err(err) = runs::begin(&self.pool, run.id).await {
            return Ended::failed(Failure::Lost(err.to_string()));
        }
        let context = TaskContext {
            task_id: Some(task.id),
            issue_number: task.issue_number,
            repository: format!("{}/{}", task.repo_owner, task.repo_name),
            title: task.title.clone(),
            body: task.body.clone(),
            pipeline: task.pipeline.clone(),
            branch: prepared.branch.clone(),
            base_sha: prepared.diff_base.clone(),
        };
        let workspace = &prepared.checkout.workspace;
        let mut env = context.env();
        env.extend(clarification::env(&self.sandbox, workspace));
        // A run resumed after its questions were answered runs the step that asked again,
        // with the answers beside its work.
        if let Err(err) = clarification::write_answers(workspace, &run.answers) {
            return Ended::session_fault(err);
        }
        let mut prompts = Prompts::new(&prepared.prompts, &context);
        let mut head = Head::new(&prepared);
        // An approved or answered run goes on at its step; a retry from a step starts there.
        let mut from = run
            .resume_at_step
            .or(task.retry_from_step)
            .map_or(0, |step| step.max(0) as usize);
        if from > 0 {
            let earlier = match self.earlier_steps(task, run, from).await {
                Ok(earlier) => earlier,
                Err(err) => return Ended::failed(Failure::Lost(err.to_string())),
            };
            if let Err(err) = prompts.resume(&earlier, workspace, &self.sandbox) {
                return Ended::failed(Failure::Definition(format!(
                    "the prompt of an earlier step could not be rendered again for the run to go on: {err}"
                )));
            }
        }
        let budget_minutes = budget_minutes(&prepared.pipeline, task);
        // Time the run's steps took, earlier passes (before an approval) included.
        let used_ms = AtomicU64::new(run.time_used_ms.max(0) as u64);
        loop {
            let used = Duration::from_millis(used_ms.load(Ordering::Relaxed));
            let budget = Duration::from_secs(budget_minutes * 60).saturating_sub(used);
            let lines = |position: usize, step: &str, attempt: u32| {
                let target = logs::Target {
                    run_id: run.id,
                    epoch: task.lease_epoch,
                    position,
                    step: step.to_owned(),
                    attempt,
                };
                Some(logs::open(self.pool.clone(), target))
            };
            let steps = match prepared
                .checkout
                .run_steps(
                    &prepared.pipeline,
                    from,
                    &env,
                    &mut prompts,
                    &self.sandbox,
                    budget,
                    lines,
                    |step| {
                        used_ms.fetch_add(step.duration.as_millis() as u64, Ordering::Relaxed);
                        if let Some(defined) = prepared.pipeline.steps.get(step.position) {
                            metrics::step_ended(&task.pipeline, defined, &step);
                        }
                        self.record_step(run.id, task.lease_epoch, step)
                    },
                )
                .await
            {
                Ok(steps) => steps,
                Err(err) => return Ended::session_fault(err),
            };
            if let Some(step) = steps.results.last().filter(|step| step.asks()) {
                return match clarify::ask(self, task, lease, run, &prepared, &git, &mut head, step)
                    .await
                {
                    Ok(()) => Ended::Parked,
                    Err(failure) => Ended::failed(failure),
                };
            }
            if let Some(step) = pipeline::failed_step(&steps.results) {
                let failure = if steps.out_of_budget() {
                    Failure::Budget {
                        step: step.name.clone(),
                        minutes: budget_minutes,
                    }
                } else {
                    Failure::from_step(step)
                };
                publish::keep_work_in_progress(self, run, &prepared, &git, &head).await;
                return Ended::Over {
                    outcome: Outcome::Failed(failure),
                    step_retry: Some(prepared.pipeline.retry),
                    fault: None,
                };
            }
            let Some(at) = steps.gate else {
                break;
            };
            match gate::reach(self, task, lease, run, &prepared, &git, &mut head, at).await {
                Ok(gate::Reached::Passed) => from = at + 1,
                Ok(gate::Reached::Parked) => return Ended::Parked,
                Err(failure) => return Ended::failed(failure),
            }
        }
        match publish::finish(self, task, lease, run, &prepared, &git, &mut head).await {
            Ok(outcome) => Ended::Over {
                outcome,
                step_retry: None,
                fault: None,
            },
            Err(failure) => Ended::failed(failure),
        }
    }

    /// The results of the steps before position `from` of a run that starts there: those of
    /// the failed run a retry from a step takes up, then the run's own before it parked.
    async fn earlier_steps(
        &self,
        task: &Task,
        run: &Run,
        from: usize,
    ) -> sqlx::Result<Vec<StepResult>> {
        let mut earlier = Vec::new();
        let taken_up = task.retry_from_run.zip(task.retry_from_step);
        let mut sources = Vec::new();
        if let Some((source, start)) = taken_up {
            sources.push((source, start.max(0) as usize));
        }
        if run.resume_at_step.is_some() {
            sources.push((run.id, from));
        }
        for (run_id, before) in sources {
            let records = runs::steps(&self.pool, run_id).await?;
            earlier.extend(
                records
                    .iter()
                    .filter(|record| (record.position.max(0) as usize) < before)
                    .map(StepRecord::to_result),
            );
        }
        Ok(earlier)
    }

    async fn record_step(&self, run_id: i64, epoch: i64, step: StepResult) {
        match runs::record_step(&self.pool, run_id, epoch, &StepRecord::from_result(&step)).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(step = %step.name, "step result dropped: the task's lease moved on")
            }
            Err(err) => {
                tracing::warn!(error = %err, step = %step.name, "could not record step result")
            }
        }
        tracing::info!(step = %step.name, attempt = step.attempts, exit_code = ?step.exit_code, elapsed_ms = step.duration.as_millis() as u64, "step finished");
    }

    /// Writes the run's end, the task's end under its lease and the reports it causes, in one
    /// transaction; nothing is written when the lease moved on (the task was rescued or
    /// cancelled: its report is not this run's to give).
    async fn record_end(
        &self,
        task: &Task,
        lease: &Lease,
        run_id: i64,
        outcome: &Outcome,
        retry_in: Option<Duration>,
    ) -> anyhow::Result<()> {
        let (run_state, task_state) = match outcome {
            Outcome::Failed(_) => (RunState::Failed, TaskState::Failed),
            Outcome::Cancelled { .. } => (RunState::Cancelled, TaskState::Cancelled),
            _ => (RunState::Completed, TaskState::Succeeded),
        };
        let mut tx = self.pool.begin().await?;
        if !runs::finish(&mut *tx, run_id, run_state, outcome).await? {
            tracing::warn!("result dropped: the run was already ended");
            return Ok(());
        }
        let run = runs::get(&mut *tx, run_id)
            .await?
            .ok_or_else(|| anyhow::anyhow!("run {run_id} vanished"))?;
        let mut effects = Vec::new();
        if matches!(outcome, Outcome::Proposed { .. }) && task.pull_request.is_none() {
            effects.push(Effect::PullRequest {
                task_id: task.id,
                run_id,
            });
        }
        effects.extend(outbox::check_runs(&mut tx, task.id, run.check_sha.as_deref()).await?);
        effects.push(Effect::StatusComment { task_id: task.id });
        outbox::enqueue(&mut tx, &Place::from(task), &effects).await?;
        let to = if retry_in.is_some() {
            TaskState::Scheduled
        } else {
            task_state
        };
        quick_runs::run_ended(&mut *tx, task, run_id, to).await?;
        let board = (to == TaskState::Succeeded && self.board_rules.auto_approve_review)
            .then_some(BoardState::Done);
        match lease.end_in(tx, to, retry_in, board).await {
            Ok(()) => {}
            Err(EngineError::Transition(err)) => {
                tracing::warn!(error = %err, "result dropped");
                return Ok(());
            }
            Err(err) => return Err(err.into()),
        }
        match outcome {
            Outcome::Failed(failure) => tracing::info!(failure = %failure.headline(), "run failed"),
            _ => tracing::info!("run succeeded"),
        }
        let how = outcome
            .error_type()
            .map_or("succeeded", |error_type| error_type.as_str());
        let took = (chrono::Utc::now() - run.started_at)
            .to_std()
            .unwrap_or_default();
        metrics::run_ended(&task.pipeline, how, took);
        Ok(())
    }

    async fn record_stop(&self, task_id: i64, outcome: &Outcome) -> sqlx::Result<()> {
        let mut tx = self.pool.begin().await?;
        if let Some(run) = runs::latest(&mut *tx, task_id).await? {
            runs::record_outcome(&mut *tx, run.id, outcome).await?;
        }
        outbox::sync_tasks(&mut tx, &[task_id]).await?;
        tx.commit().await
    }

    /// Where the task's repository is cloned from and pushed to; the URL carries no token.
    fn repo_url(&self, task: &Task) -> String {
        format!(
            "{}/{}/{}.git",
            self.git_url.trim_end_matches('/'),
            task.repo_owner,
            task.repo_name
        )
    }

    /// Refuses to go on once the lease moved on (rescued, cancelled, handed back): whatever
    /// the run would publish now is no longer its to publish.
    async fn still_held(&self, lease: &Lease) -> Result<(), Failure> {
        match lease.is_held().await {
            Ok(true) => Ok(()),
            Ok(false) => Err(Failure::Lost(
                "the task's lease moved on; nothing more was published".to_owned(),
            )),
            Err(err) => Err(Failure::Lost(format!(
                "could not check the task's lease: {err}"
            ))),
        }
    }
}
