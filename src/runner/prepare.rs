//! A run's workspace: the clone, the pipeline it goes by (read from the default branch and
//! pinned to the run, or the pinned one when an approved run goes on), the branch it works
//! on and the commit it starts from.

use super::TaskRunner;
use crate::engine::runs::{self, Run};
use crate::engine::tasks::Task;
use crate::pipeline::definition::{self, Settings};
use crate::pipeline::git::{self, Git, GitError};
use crate::pipeline::mirror::Origin;
use crate::pipeline::prompt;
use crate::pipeline::{Checkout, Pipeline, PrepareError};

pub(super) struct Prepared {
    pub checkout: Checkout,
    pub pipeline: Pipeline,
    /// The settings of the pipeline file the run goes by: who may approve its gates.
    pub settings: Settings,
    pub url: String,
    pub branch: String,
    /// The commit the work tree starts from.
    pub base: String,
    /// Where the branch stands on GitHub: what the first push expects to replace.
    pub remote: Option<String>,
    /// The commit of someone else's the run builds on, when they had pushed to its branch.
    pub built_on: Option<String>,
    /// The commit the run's whole diff is taken against.
    pub diff_base: String,
    /// What the pipeline's prompt steps read, from `diff_base`, checked.
    pub prompts: prompt::Sources,
}

pub(super) async fn prepare(
    runner: &TaskRunner,
    task: &Task,
    run: &Run,
    git: &Git,
) -> Result<Prepared, PrepareError> {
    let url = runner.repo_url(task);
    let origin = Origin::installation(
        task.installation_id,
        &task.repo_owner,
        &task.repo_name,
        &url,
    );
    let checkout = Checkout::clone(git, &origin, &runner.mirrors, &runner.workspaces).await?;
    let text = match &run.definition {
        Some(pinned) => pinned.clone(),
        None => checkout.pipeline_text(git).await?,
    };
    let pipeline = definition::parse(&text, &task.pipeline)?;
    let settings = definition::parse_settings(&text)?;
    let mut work = None;
    let start = if run.resume_at_step.is_some() {
        resumed(&checkout, git, run).await?
    } else if let Some(source) = task.retry_from_run {
        let (start, patch) = taken_up(runner, task, git, &checkout, source).await?;
        work = Some(patch);
        start
    } else if let Some(pull) = task.pull_request_target() {
        let head = checkout
            .branch_head(git, &pull.head_branch)
            .await?
            .ok_or_else(|| {
                gone(format!(
                    "the pull request's branch `{}` is gone",
                    pull.head_branch
                ))
            })?;
        Start {
            branch: pull.head_branch,
            base: head.clone(),
            remote: Some(head),
            built_on: None,
        }
    } else {
        let branch = git::branch_name(&task.branch_key(), &task.title);
        issue_start(runner, task, git, &checkout, branch).await?
    };
    let diff_base = match &run.base_sha {
        Some(base) => base.clone(),
        None => {
            let definition = runs::Definition {
                text: &text,
                sha: &checkout.default_head,
            };
            runs::pin(&runner.pool, run.id, &definition, &start.base).await?;
            start.base.clone()
        }
    };
    let prompts =
        prompt::Sources::load(&pipeline, git, &checkout.workspace.git_dir(), &diff_base).await?;
    checkout
        .check_out(git, &start.base, work.as_deref(), &url, &runner.sandbox)
        .await?;
    Ok(Prepared {
        checkout,
        pipeline,
        settings,
        url,
        branch: start.branch,
        base: start.base,
        remote: start.remote,
        built_on: start.built_on,
        diff_base,
        prompts,
    })
}

struct Start {
    branch: String,
    base: String,
    remote: Option<String>,
    built_on: Option<String>,
}

/// An approved (or answered) run goes on from the commit it parked at, which must still be
/// its branch's head.
async fn resumed(checkout: &Checkout, git: &Git, run: &Run) -> Result<Start, PrepareError> {
    let (Some(branch), Some(approved)) = (&run.branch, &run.head_sha) else {
        return Err(gone("the resumed run has no pushed commit".to_owned()));
    };
    let head = checkout.branch_head(git, branch).await?;
    if head.as_deref() != Some(approved.as_str()) {
        return Err(gone(format!(
            "the branch `{branch}` moved since the run parked at {approved}"
        )));
    }
    Ok(Start {
        branch: branch.clone(),
        base: approved.clone(),
        remote: Some(approved.clone()),
        built_on: None,
    })
}

/// A `/conveyor retry STEP` run starts where the failed run `source` stopped: from its base
/// commit with its work on top, on its branch, unless someone else moved that branch since.
async fn taken_up(
    runner: &TaskRunner,
    task: &Task,
    git: &Git,
    checkout: &Checkout,
    source: i64,
) -> Result<(Start, Vec<u8>), PrepareError> {
    let not_kept = || {
        gone(format!(
            "run {source}, which this task retries, kept no work to start from"
        ))
    };
    let run = runs::get(&runner.pool, source)
        .await?
        .ok_or_else(not_kept)?;
    let base = run.base_sha.clone().ok_or_else(not_kept)?;
    let work = runs::work(&runner.pool, source)
        .await?
        .ok_or_else(not_kept)?;
    let branch = match task.pull_request_target() {
        Some(pull) => pull.head_branch,
        None => git::branch_name(&task.branch_key(), &task.title),
    };
    let remote = checkout.branch_head(git, &branch).await?;
    let ours = runs::last_pushed(&runner.pool, run.task_id, &branch).await?;
    if let Some(head) = &remote
        && *head != base
        && Some(head) != ours.as_ref()
    {
        return Err(gone(format!(
            "the branch `{branch}` moved since run {source}; `/conveyor retry` without a step runs the whole pipeline again"
        )));
    }
    let start = Start {
        branch,
        base,
        remote,
        built_on: None,
    };
    Ok((start, work))
}

/// A branch that holds what Conveyor last pushed to it (or does not exist) is rebuilt from
/// the default branch; one that someone else moved is built on, so their commits are kept.
async fn issue_start(
    runner: &TaskRunner,
    task: &Task,
    git: &Git,
    checkout: &Checkout,
    branch: String,
) -> Result<Start, PrepareError> {
    let ours = runs::last_pushed(&runner.pool, task.id, &branch).await?;
    let remote = checkout.branch_head(git, &branch).await?;
    Ok(match remote {
        None => Start {
            branch,
            base: checkout.default_head.clone(),
            remote: None,
            built_on: None,
        },
        Some(head) if ours.as_deref() == Some(head.as_str()) => Start {
            branch,
            base: checkout.default_head.clone(),
            remote: Some(head),
            built_on: None,
        },
        Some(head) => {
            tracing::info!(%branch, %head, "the branch has commits Conveyor did not push: building on them");
            Start {
                branch,
                base: head.clone(),
                remote: Some(head.clone()),
                built_on: Some(head),
            }
        }
    })
}

fn gone(message: String) -> PrepareError {
    PrepareError::Git(GitError {
        action: "start",
        message,
    })
}
