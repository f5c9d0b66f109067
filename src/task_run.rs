//! Executing one claimed task end to end: token, workspace, pipeline, branch, pull request,
//! check run, status comment.

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tracing::Instrument;

use crate::engine::runs::{self, Published, StepRecord};
use crate::engine::status_comments;
use crate::engine::tasks::{EngineError, Task};
use crate::engine::{RunState, TaskState};
use crate::github::client::Repo;
use crate::github::{GitHubApp, GitHubError, InstallationClient};
use crate::pipeline::definition::RetryPolicy;
use crate::pipeline::git::{self, Git};
use crate::pipeline::protected::Protected;
use crate::pipeline::sandbox::Sandbox;
use crate::pipeline::workspace::Workspaces;
use crate::pipeline::{self, Checkout, PrepareError, StepResult, TaskContext};
use crate::report::{Failure, Outcome, check_run, comment, pull_request};
use crate::scheduler::{Executor, Lease, SessionFault, Stop};
use crate::status_comment::{self, PublishError};

/// Failures of Conveyor's own (clone, push, GitHub) are retried whatever the pipeline says.
const INFRASTRUCTURE_RETRY: RetryPolicy = RetryPolicy {
    attempts: 3,
    backoff_seconds: 30,
    max_backoff_seconds: 600,
};

pub struct TaskRunner {
    pub pool: PgPool,
    pub github: Arc<GitHubApp>,
    pub workspaces: Workspaces,
    pub sandbox: Sandbox,
    /// `GITHUB_GIT_URL`: repositories are at `{git_url}/{owner}/{repo}.git`.
    pub git_url: String,
}

impl Executor for TaskRunner {
    async fn execute(&self, task: Task, lease: Lease) -> Result<(), SessionFault> {
        let span = tracing::info_span!("task", task = task.id, run = tracing::field::Empty);
        async {
            match self.run_task(&task, &lease).await {
                Ok(None) => Ok(()),
                Ok(Some(fault)) => Err(fault),
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

    async fn stopped(&self, task: Task, stop: Stop) {
        let span = tracing::info_span!("task", task = task.id);
        async {
            // A stop brings an existing status comment up to date; it never starts one.
            if !matches!(status_comments::get(&self.pool, task.id).await, Ok(Some(_))) {
                return;
            }
            let body = comment::stopped(task.id, &task.pipeline, task.attempts, stop);
            if let Err(err) = self.show_status(&task, &body).await {
                tracing::warn!(error = %err, "could not update the status comment");
            }
        }
        .instrument(span)
        .await
    }
}

/// How one attempt went.
struct Attempt {
    outcome: Outcome,
    steps: Vec<StepResult>,
    published: Published,
    /// The pipeline's retry policy, when a step failed.
    step_retry: Option<RetryPolicy>,
    /// Set when the attempt failed because the session cannot work.
    fault: Option<SessionFault>,
}

impl Attempt {
    fn failed(failure: Failure) -> Self {
        Self {
            outcome: Outcome::Failed(failure),
            steps: Vec::new(),
            published: Published::default(),
            step_retry: None,
            fault: None,
        }
    }
}

impl TaskRunner {
    /// Runs the attempt and reports it; a fault found in the session is passed on.
    async fn run_task(&self, task: &Task, lease: &Lease) -> anyhow::Result<Option<SessionFault>> {
        let run = runs::start(&mut *self.pool.acquire().await?, task.id, &task.pipeline).await?;
        tracing::Span::current().record("run", run.id);
        tracing::info!(attempt = run.attempt, pipeline = %task.pipeline, "run started");

        let client = self
            .github
            .installation(task.installation_id, &task.repo_name);
        let started = comment::started(task.id, &task.pipeline, run.attempt);
        // One status comment per task: a run takes over the one posted while the task
        // waited, or by an earlier attempt. A task cancelled since its claim says nothing.
        let shown = if lease.is_held().await? {
            self.show_status(task, &started).await
        } else {
            Ok(())
        };
        match shown {
            Ok(()) => {}
            Err(PublishError::GitHub(err)) => {
                tracing::warn!(error = %err, "could not post the status comment; will post at the end")
            }
            Err(err) => return Err(err.into()),
        }

        let Attempt {
            outcome,
            steps,
            published,
            step_retry,
            fault,
        } = self.execute(task, lease, run.id, &client).await;
        let attempt = task.attempts.max(1) as u32;
        let retry_in = match &outcome {
            Outcome::Failed(Failure::Step { .. }) => {
                step_retry.unwrap_or_default().delay_after(attempt)
            }
            Outcome::Failed(Failure::Infrastructure(_)) => {
                INFRASTRUCTURE_RETRY.delay_after(attempt)
            }
            // Success, or a broken pipeline file or a protected path touched, which need a
            // commit rather than another attempt.
            _ => None,
        };
        if !self
            .record_end(lease, run.id, &outcome, &published, retry_in)
            .await?
        {
            // The task moved on without us (rescued or cancelled): its report is not ours.
            return Ok(fault);
        }

        let body = comment::finished(task.id, &task.pipeline, &outcome, &steps, retry_in);
        if let Err(err) = self.show_status(task, &body).await {
            tracing::warn!(error = %err, "could not update the status comment");
        }
        Ok(fault)
    }

    /// Shows `body` in the task's status comment, which no longer says the task waits.
    async fn show_status(&self, task: &Task, body: &str) -> Result<(), PublishError> {
        let client = self
            .github
            .installation(task.installation_id, &task.repo_name);
        let mut conn = self.pool.acquire().await?;
        status_comment::publish(&mut conn, &client, task, body, None).await
    }

    /// Writes the run's end, then the task's end under its lease; `false` when the lease
    /// moved on and the result was dropped (the run still records how this attempt ended).
    async fn record_end(
        &self,
        lease: &Lease,
        run_id: i64,
        outcome: &Outcome,
        published: &Published,
        retry_in: Option<Duration>,
    ) -> anyhow::Result<bool> {
        let (run_state, task_state, failure) = match outcome {
            Outcome::Failed(failure) => (
                RunState::Failed,
                TaskState::Failed,
                Some(failure.headline()),
            ),
            _ => (RunState::Succeeded, TaskState::Succeeded, None),
        };
        if !runs::finish(&self.pool, run_id, run_state, published, failure.as_deref()).await? {
            tracing::warn!("result dropped: the run was already ended");
            return Ok(false);
        }
        let ended = match retry_in {
            Some(delay) => lease.retry_in(delay).await,
            None => lease.end(task_state).await,
        };
        match ended {
            Ok(()) => {}
            Err(EngineError::Transition(err)) => {
                tracing::warn!(error = %err, "result dropped");
                return Ok(false);
            }
            Err(err) => return Err(err.into()),
        }
        match &failure {
            Some(headline) => tracing::info!(failure = %headline, "run failed"),
            None => tracing::info!("run succeeded"),
        }
        Ok(true)
    }

    async fn execute(
        &self,
        task: &Task,
        lease: &Lease,
        run_id: i64,
        client: &InstallationClient,
    ) -> Attempt {
        let git = match client.token().await {
            Ok(token) => Git::with_token(&token),
            Err(err) => {
                let failure = Failure::Infrastructure(format!("no installation token: {err}"));
                return Attempt::failed(failure);
            }
        };
        let url = self.repo_url(task);
        let context = TaskContext {
            task_id: Some(task.id),
            issue_number: Some(task.issue_number),
            repository: format!("{}/{}", task.repo_owner, task.repo_name),
            title: task.title.clone(),
            body: task.body.clone(),
            pipeline: task.pipeline.clone(),
        };
        let epoch = task.lease_epoch;
        let record_step = |step: StepResult| {
            let pool = self.pool.clone();
            async move {
                match runs::record_step(&pool, run_id, epoch, &step_record(&step)).await {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::warn!(step = %step.name, "step result dropped: the task's lease moved on")
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, step = %step.name, "could not record step result")
                    }
                }
                tracing::info!(step = %step.name, exit_code = ?step.exit_code, elapsed_ms = step.duration.as_millis() as u64, "step finished");
            }
        };
        let branch = git::branch_name(&task.issue_number.to_string(), &task.title);
        let prepared = async {
            let checkout = Checkout::clone(&git, &url, &self.workspaces).await?;
            let pipeline = checkout.pipeline(&git, &task.pipeline).await?;
            let start = self.start_point(task, &git, &checkout, &branch).await?;
            checkout
                .check_out(&git, &start.base, &url, &self.sandbox)
                .await?;
            let steps = checkout
                .run_steps(&pipeline, &context.env(), &self.sandbox, record_step)
                .await?;
            Ok::<_, PrepareError>((checkout, pipeline, start, steps))
        };
        let (checkout, pipeline, start, steps) = match prepared.await {
            Ok(prepared) => prepared,
            Err(PrepareError::Definition(err)) => {
                return Attempt::failed(Failure::Definition(err.to_string()));
            }
            Err(err @ (PrepareError::Workspace(_) | PrepareError::Sandbox(_))) => {
                let message = err.to_string();
                return Attempt {
                    fault: Some(SessionFault(message.clone())),
                    ..Attempt::failed(Failure::Infrastructure(message))
                };
            }
            Err(err) => return Attempt::failed(Failure::Infrastructure(err.to_string())),
        };
        if let Some(step) = pipeline::failed_step(&steps) {
            return Attempt {
                outcome: Outcome::Failed(Failure::from_step(step)),
                step_retry: Some(pipeline.retry),
                steps,
                published: Published::default(),
                fault: None,
            };
        }
        let work = Work {
            checkout: &checkout,
            branch,
            start,
            protected: &pipeline.protected_paths,
            steps: &steps,
        };
        let (outcome, published) = match self.publish(task, lease, run_id, client, &git, work).await
        {
            Ok(Some((published, built_on))) => (
                Outcome::Proposed {
                    pull_request_url: published.pull_request_url.clone().unwrap_or_default(),
                    branch: published.branch.clone().unwrap_or_default(),
                    built_on,
                },
                published,
            ),
            Ok(None) => (Outcome::NoChanges, Published::default()),
            Err(failure) => (Outcome::Failed(failure), Published::default()),
        };
        Attempt {
            outcome,
            steps,
            published,
            step_retry: None,
            fault: None,
        }
    }

    /// Where the run starts from. A branch that holds what Conveyor last pushed to it (or
    /// does not exist) is rebuilt from the default branch; one that someone else moved is
    /// built on, so their commits are kept.
    async fn start_point(
        &self,
        task: &Task,
        git: &Git,
        checkout: &Checkout,
        branch: &str,
    ) -> Result<StartPoint, PrepareError> {
        let ours = runs::last_pushed(&self.pool, task.id, branch).await?;
        let remote = checkout.branch_head(git, branch).await?;
        Ok(match remote {
            None => StartPoint {
                base: checkout.default_head.clone(),
                remote: None,
                moved: false,
            },
            Some(head) if ours.as_deref() == Some(head.as_str()) => StartPoint {
                base: checkout.default_head.clone(),
                remote: Some(head),
                moved: false,
            },
            Some(head) => {
                tracing::info!(%branch, %head, "the branch has commits Conveyor did not push: building on them");
                StartPoint {
                    base: head.clone(),
                    remote: Some(head),
                    moved: true,
                }
            }
        })
    }

    /// Commits and pushes the steps' changes, opens (or reuses) the pull request and marks the
    /// commit with a check run. `None` when the steps changed nothing; with what was
    /// published, the commit the run built on when someone else had moved the branch.
    async fn publish(
        &self,
        task: &Task,
        lease: &Lease,
        run_id: i64,
        client: &InstallationClient,
        git: &Git,
        work: Work<'_>,
    ) -> Result<Option<(Published, Option<String>)>, Failure> {
        let infrastructure = |err: &dyn std::fmt::Display| Failure::Infrastructure(err.to_string());
        let Work {
            checkout,
            branch,
            start,
            protected,
            steps,
        } = work;
        let changed = checkout
            .changes(git, &start.base)
            .await
            .map_err(|e| infrastructure(&e))?;
        if changed.is_empty() {
            return Ok(None);
        }
        let protected =
            Protected::new(protected).map_err(|e| Failure::Definition(e.to_string()))?;
        let touched = protected.touched(&changed);
        if !touched.is_empty() {
            return Err(Failure::Protected(
                touched.into_iter().map(str::to_owned).collect(),
            ));
        }
        let repo = Repo {
            owner: &task.repo_owner,
            name: &task.repo_name,
        };
        let message = format!(
            "{}\n\nConveyor task {} for issue #{}.",
            task.title.trim(),
            task.id,
            task.issue_number
        );
        let head_sha = checkout
            .commit(git, &start.base, &message)
            .await
            .map_err(|e| infrastructure(&e))?;
        let github = |err: GitHubError| Failure::Infrastructure(err.to_string());
        // Steps may have run for most of the clone token's life: push with a current one.
        let push_token = client.token().await.map_err(github)?;
        let url = self.repo_url(task);
        self.still_held(lease).await?;
        Git::with_token(&push_token)
            .push(
                &checkout.workspace.git_dir(),
                &url,
                &head_sha,
                &branch,
                start.remote.as_deref(),
            )
            .await
            .map_err(|e| infrastructure(&e))?;
        runs::record_push(&self.pool, run_id, &branch, &head_sha)
            .await
            .map_err(|e| infrastructure(&e))?;
        tracing::info!(%branch, %head_sha, "branch pushed");

        self.still_held(lease).await?;
        let pull = match client
            .open_pull_request(repo, &branch)
            .await
            .map_err(github)?
        {
            Some(existing) => existing,
            None => client
                .create_pull_request(
                    repo,
                    &pull_request::title(&task.title),
                    &branch,
                    &task.default_branch,
                    &pull_request::body(task.issue_number, &task.pipeline, task.id),
                )
                .await
                .map_err(github)?,
        };
        let check = check_run::succeeded(&head_sha, &task.pipeline, steps, None, task.id);
        self.still_held(lease).await?;
        let check = client
            .create_check_run(repo, &check)
            .await
            .map_err(github)?;
        let built_on = start.moved.then_some(start.base);
        Ok(Some((
            Published {
                branch: Some(branch),
                head_sha: Some(head_sha),
                pull_request_number: Some(pull.number),
                pull_request_url: Some(pull.html_url),
                check_run_id: Some(check.id),
            },
            built_on,
        )))
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
            Ok(false) => Err(Failure::Infrastructure(
                "the task's lease moved on; nothing more was published".to_owned(),
            )),
            Err(err) => Err(Failure::Infrastructure(format!(
                "could not check the task's lease: {err}"
            ))),
        }
    }
}

/// Where a run starts: `base` is the commit its work tree holds and its commit's parent;
/// `remote` is where the branch stood, which the push expects to replace.
struct StartPoint {
    base: String,
    remote: Option<String>,
    /// Someone else pushed to the branch: the run builds on their commits.
    moved: bool,
}

/// What the steps left, to be published.
struct Work<'a> {
    checkout: &'a Checkout,
    branch: String,
    start: StartPoint,
    protected: &'a [String],
    steps: &'a [StepResult],
}

fn step_record(step: &StepResult) -> StepRecord {
    StepRecord {
        position: step.position as i32,
        name: step.name.clone(),
        command: step.command.clone(),
        exit_code: step.exit_code,
        duration_ms: step.duration.as_millis() as i64,
        output: step.output.clone(),
    }
}
