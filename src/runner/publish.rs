//! Turning what the steps left into commits on the run's branch: the protected-path policy,
//! the commit, and the push that replaces only what the run expects the branch to hold.

use super::TaskRunner;
use super::prepare::Prepared;
use crate::engine::artifacts;
use crate::engine::runs::{self, Run};
use crate::engine::tasks::Task;
use crate::pipeline::changes::ChangedFile;
use crate::pipeline::git::{Git, GitError};
use crate::pipeline::protected::Protected;
use crate::report::{Failure, Outcome};
use crate::scheduler::Lease;

/// Where the run's work stands: its newest commit, and where the branch is on GitHub.
pub(super) struct Head {
    pub commit: String,
    pub remote: Option<String>,
}

impl Head {
    pub fn new(prepared: &Prepared) -> Self {
        Self {
            commit: prepared.base.clone(),
            remote: prepared.remote.clone(),
        }
    }
}

/// Conveyor's git could not read back the work tree the steps left.
fn unreadable(err: GitError) -> Failure {
    Failure::Sandbox(err.to_string())
}

/// Commits what the steps changed since `head` (if anything) on top of it, refusing paths
/// the pipeline protects.
pub(super) async fn commit(
    task: &Task,
    prepared: &Prepared,
    git: &Git,
    head: &mut Head,
) -> Result<(), Failure> {
    let checkout = &prepared.checkout;
    let changed = checkout
        .changes(git, &head.commit)
        .await
        .map_err(unreadable)?;
    if changed.is_empty() {
        return Ok(());
    }
    let protected = Protected::new(&prepared.pipeline.protected_paths)
        .map_err(|e| Failure::Definition(e.to_string()))?;
    let touched = protected.touched(&changed);
    if !touched.is_empty() {
        return Err(Failure::Protected(
            touched.into_iter().map(str::to_owned).collect(),
        ));
    }
    let message = match task.issue_number {
        Some(issue) => format!(
            "{}\n\nConveyor task {} for issue #{issue}.",
            task.title.trim(),
            task.id
        ),
        None => format!("{}\n\nConveyor task {}.", task.title.trim(), task.id),
    };
    head.commit = checkout
        .commit(git, &head.commit, &message)
        .await
        .map_err(unreadable)?;
    Ok(())
}

/// Pushes `head` to the run's branch unless the branch holds it already, with a current
/// token (steps may have run for most of the clone token's life), while the lease holds.
pub(super) async fn push(
    runner: &TaskRunner,
    task: &Task,
    lease: &Lease,
    run: &Run,
    prepared: &Prepared,
    head: &mut Head,
) -> Result<(), Failure> {
    if head.remote.as_deref() == Some(head.commit.as_str()) {
        return Ok(());
    }
    let client = runner
        .github
        .installation(task.installation_id, &task.repo_name);
    let token = client
        .token()
        .await
        .map_err(|err| Failure::GitHub(format!("no installation token: {err}")))?;
    runner.still_held(lease).await?;
    Git::with_token(&token)
        .push(
            &prepared.checkout.workspace.git_dir(),
            &prepared.url,
            &head.commit,
            &prepared.branch,
            head.remote.as_deref(),
        )
        .await
        .map_err(|err| Failure::Push(err.to_string()))?;
    runs::record_push(&runner.pool, run.id, &prepared.branch, &head.commit)
        .await
        .map_err(|err| Failure::Lost(err.to_string()))?;
    tracing::info!(branch = %prepared.branch, head_sha = %head.commit, "branch pushed");
    head.remote = Some(head.commit.clone());
    Ok(())
}

/// The run's last stage: commits and pushes what is left, and says how the run ended.
pub(super) async fn finish(
    runner: &TaskRunner,
    task: &Task,
    lease: &Lease,
    run: &Run,
    prepared: &Prepared,
    git: &Git,
    head: &mut Head,
) -> Result<Outcome, Failure> {
    commit(task, prepared, git, head).await?;
    if head.commit == prepared.diff_base {
        return Ok(Outcome::NoChanges);
    }
    push(runner, task, lease, run, prepared, head).await?;
    keep_artifacts(runner, run.id, prepared, git, &head.commit, None).await;
    Ok(Outcome::Proposed {
        branch: prepared.branch.clone(),
        built_on: prepared.built_on.clone(),
    })
}

/// Stores what the run changed from its base up to `commit` (`files` when they are known
/// already). Artifacts are a report: when they cannot be made the run goes on without them.
pub(super) async fn keep_artifacts(
    runner: &TaskRunner,
    run_id: i64,
    prepared: &Prepared,
    git: &Git,
    commit: &str,
    files: Option<Vec<ChangedFile>>,
) {
    let checkout = &prepared.checkout;
    let base = &prepared.diff_base;
    let made = async {
        let files = match files {
            Some(files) => files,
            None => checkout.changed_files(git, base, commit).await?,
        };
        let (bytes, size) = git
            .patch(
                &checkout.workspace.git_dir(),
                base,
                commit,
                artifacts::MAX_DIFF_BYTES,
            )
            .await?;
        Ok::<_, GitError>((files, bytes, size))
    };
    let (files, bytes, size) = match made.await {
        Ok(made) => made,
        Err(err) => {
            tracing::warn!(error = %err, "the run's diff could not be made");
            return;
        }
    };
    let truncated = size > bytes.len() as u64;
    let diff = artifacts::stored_diff(&bytes, truncated);
    if let Err(err) = artifacts::store(
        &runner.pool,
        run_id,
        base,
        commit,
        &diff,
        size,
        truncated,
        &files,
    )
    .await
    {
        tracing::warn!(error = %err, "the run's diff could not be stored");
    }
}

/// For a failed run, what its work tree held when it stopped, as a commit no branch points
/// to: the person fixing the failure sees how far the steps got.
pub(super) async fn keep_work_in_progress(
    runner: &TaskRunner,
    run: &Run,
    prepared: &Prepared,
    git: &Git,
    head: &Head,
) {
    let checkout = &prepared.checkout;
    let staged = async {
        checkout.changes(git, &head.commit).await?;
        checkout
            .commit(git, &head.commit, "Work in progress of a failed run")
            .await
    };
    match staged.await {
        Ok(commit) => {
            keep_work(runner, run.id, prepared, git, &commit).await;
            keep_artifacts(runner, run.id, prepared, git, &commit, None).await
        }
        Err(err) => tracing::warn!(error = %err, "the failed run's work could not be read"),
    }
}

/// Keeps the failed run's work, up to `commit`, for `/conveyor retry STEP` to start from.
async fn keep_work(runner: &TaskRunner, run_id: i64, prepared: &Prepared, git: &Git, commit: &str) {
    let patch = prepared
        .checkout
        .work_patch(git, &prepared.diff_base, commit, runs::MAX_WORK_BYTES)
        .await;
    match patch {
        Ok(Some(patch)) => {
            if let Err(err) = runs::keep_work(&runner.pool, run_id, &patch).await {
                tracing::warn!(error = %err, "the failed run's work could not be kept");
            }
        }
        Ok(None) => tracing::info!(
            max_bytes = runs::MAX_WORK_BYTES,
            "the failed run's work is too large to keep: it cannot be retried from a step"
        ),
        Err(err) => tracing::warn!(error = %err, "the failed run's work could not be read"),
    }
}
