//! Turning what the steps left into commits on the run's branch: the protected-path policy,
//! the commit, and the push that replaces only what the run expects the branch to hold.

use super::TaskRunner;
use super::prepare::Prepared;
use crate::engine::runs::{self, Run};
use crate::engine::tasks::Task;
use crate::pipeline::git::Git;
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

fn infrastructure(err: impl std::fmt::Display) -> Failure {
    Failure::Infrastructure(err.to_string())
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
        .map_err(infrastructure)?;
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
    let message = format!(
        "{}\n\nConveyor task {} for issue #{}.",
        task.title.trim(),
        task.id,
        task.issue_number
    );
    head.commit = checkout
        .commit(git, &head.commit, &message)
        .await
        .map_err(infrastructure)?;
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
    let token = client.token().await.map_err(infrastructure)?;
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
        .map_err(infrastructure)?;
    runs::record_push(&runner.pool, run.id, &prepared.branch, &head.commit)
        .await
        .map_err(infrastructure)?;
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
    Ok(Outcome::Proposed {
        branch: prepared.branch.clone(),
        built_on: prepared.built_on.clone(),
    })
}
