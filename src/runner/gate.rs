//! A run reaching an approval step: the work so far is committed and pushed, and the run is
//! parked (holding no worker and no repository slot) with its check run asking for an
//! approval of that commit, unless the step's paths were not touched and it passes by itself.

use super::TaskRunner;
use super::prepare::Prepared;
use super::publish::{self, Head};
use crate::engine::TaskState;
use crate::engine::approvals::{self, Gate};
use crate::engine::runs::Run;
use crate::engine::tasks::{EngineError, Task};
use crate::pipeline::definition::{self, Action};
use crate::pipeline::git::Git;
use crate::report::Failure;
use crate::scheduler::Lease;

pub(super) enum Reached {
    /// The step passed by itself: the run goes on with the next step.
    Passed,
    /// The run waits for a person; its worker is free.
    Parked,
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn reach(
    runner: &TaskRunner,
    task: &Task,
    lease: &Lease,
    run: &Run,
    prepared: &Prepared,
    git: &Git,
    head: &mut Head,
    at: usize,
) -> Result<Reached, Failure> {
    let lost = |err: &dyn std::fmt::Display| Failure::Lost(err.to_string());
    let step = &prepared.pipeline.steps[at];
    let Action::Approval(approval) = &step.action else {
        return Err(Failure::Definition(format!(
            "step `{}` is not an approval step",
            step.name
        )));
    };
    publish::commit(task, prepared, git, head).await?;
    let files = prepared
        .checkout
        .changed_files(git, &prepared.diff_base, &head.commit)
        .await
        .map_err(|e| Failure::Sandbox(e.to_string()))?;
    let paths: Vec<&str> = files.iter().map(|file| file.path.as_str()).collect();
    let needed = definition::approval_needed(approval, &paths)
        .map_err(|e| Failure::Definition(e.to_string()))?;
    let position = at as i32;
    if !needed {
        let changed: Vec<String> = paths.iter().map(|path| (*path).to_owned()).collect();
        let mut conn = runner.pool.acquire().await.map_err(|e| lost(&e))?;
        approvals::passed_by_itself(&mut conn, task.id, run.id, &step.name, position, &changed)
            .await
            .map_err(|e| lost(&e))?;
        tracing::info!(step = %step.name, "approval step passed by itself: no listed path changed");
        return Ok(Reached::Passed);
    }
    publish::push(runner, task, lease, run, prepared, head).await?;
    publish::keep_artifacts(
        runner,
        run.id,
        prepared,
        git,
        &head.commit,
        Some(files.clone()),
    )
    .await;
    // A task asked to stop must not park: it would wait for a decision nobody needs.
    runner.still_held(lease).await?;
    let gate = Gate {
        step: step.name.clone(),
        position,
        message: approval.message.clone(),
        head_sha: head.commit.clone(),
        approver_permission: prepared.settings.approver_permission.as_str().to_owned(),
        allow_self_approval: prepared.settings.allow_self_approval,
        requester: task.requested_by.clone(),
        files,
        decision: None,
    };
    park(runner, task, lease, run, &gate)
        .await
        .map_err(|e| lost(&e))?;
    Ok(Reached::Parked)
}

/// Parks the run, ends the lease to `awaiting_approval` and queues the reports, in one
/// transaction.
async fn park(
    runner: &TaskRunner,
    task: &Task,
    lease: &Lease,
    run: &Run,
    gate: &Gate,
) -> Result<(), EngineError> {
    let mut tx = runner.pool.begin().await?;
    if !approvals::park(&mut *tx, run.id, gate).await? {
        tracing::warn!("the run ended before it could park; nothing recorded");
        return Ok(());
    }
    if super::park(tx, task, lease, &gate.head_sha, TaskState::AwaitingApproval).await? {
        tracing::info!(step = %gate.step, head_sha = %gate.head_sha, "run waits for approval");
    }
    Ok(())
}
