//! A step that asked its requester questions (exit code 75): the work so far is committed and
//! pushed, so the run can go on from it in a new workspace, and the run is parked (holding no
//! worker and no repository slot) until the answer comes; the step then runs again with it.
//! A step that asks once the pipeline's rounds are used up fails the run.

use super::TaskRunner;
use super::prepare::Prepared;
use super::publish::{self, Head};
use crate::engine::TaskState;
use crate::engine::clarification::{self, Asked, MAX_QUESTIONS_BYTES};
use crate::engine::runs::{self, Run};
use crate::engine::tasks::{EngineError, Task};
use crate::pipeline::StepResult;
use crate::pipeline::clarification::read_questions;
use crate::pipeline::git::Git;
use crate::report::Failure;
use crate::scheduler::Lease;

#[allow(clippy::too_many_arguments)]
pub(super) async fn ask(
    runner: &TaskRunner,
    task: &Task,
    lease: &Lease,
    run: &Run,
    prepared: &Prepared,
    git: &Git,
    head: &mut Head,
    step: &StepResult,
) -> Result<(), Failure> {
    let lost = |err: &dyn std::fmt::Display| Failure::Lost(err.to_string());
    let questions = match read_questions(&prepared.checkout.workspace, MAX_QUESTIONS_BYTES) {
        Ok(Some(questions)) => questions,
        Ok(None) => {
            return Err(without_questions(
                step,
                "left CONVEYOR_QUESTIONS_FILE empty",
            ));
        }
        Err(err) => return Err(without_questions(step, &err.to_string())),
    };
    let rules = prepared.pipeline.clarification;
    let asked_before = run.clarification_rounds.max(0) as u32;
    if asked_before >= rules.max_rounds {
        return Err(Failure::NoAnswer {
            step: step.name.clone(),
            reason: format!(
                "it asked again after {asked_before} round(s) of questions, the most the pipeline allows (`clarification: max_rounds`)"
            ),
        });
    }
    publish::commit(task, prepared, git, head).await?;
    if head.remote.as_deref() == Some(head.commit.as_str()) {
        let ours = runs::last_pushed(&runner.pool, task.id, &prepared.branch)
            .await
            .map_err(|e| lost(&e))?;
        // Nothing new, and the branch holds someone else's commit (a pull request's head,
        // commits the run built on): a commit of Conveyor's own marks where the run goes on,
        // so theirs is never recorded as Conveyor's, which a later run would replace.
        if ours.as_deref() != Some(head.commit.as_str()) {
            let message = format!("Conveyor: step `{}` asked questions", step.name);
            head.commit = prepared
                .checkout
                .commit(git, &head.commit, &message)
                .await
                .map_err(|e| Failure::Sandbox(e.to_string()))?;
        }
    }
    publish::push(runner, task, lease, run, prepared, head).await?;
    // The run goes on from this commit, which the branch may have held already (Conveyor's
    // own, pushed by an earlier pass): the resumed run finds it recorded either way.
    runs::record_push(&runner.pool, run.id, &prepared.branch, &head.commit)
        .await
        .map_err(|e| lost(&e))?;
    publish::keep_artifacts(runner, run.id, prepared, git, &head.commit, None).await;
    // A task asked to stop must not park: it would wait for an answer nobody needs.
    runner.still_held(lease).await?;
    let asked = Asked {
        step: &step.name,
        position: step.position as i32,
        questions: &questions,
        timeout_hours: rules.timeout_hours,
    };
    park(runner, task, lease, run, &asked, &head.commit)
        .await
        .map_err(|e| lost(&e))
}

/// A step that exited with 75 without questions to ask fails as itself, saying why.
fn without_questions(step: &StepResult, why: &str) -> Failure {
    let mut failure = Failure::from_step(step);
    if let Failure::Step { tail, .. } = &mut failure {
        tail.push_str(&format!(
            "\nconveyor: the step exited with 75 to ask questions, but {why}\n"
        ));
    }
    failure
}

/// Parks the run, ends the lease to `awaiting_input` and queues the reports, in one
/// transaction.
async fn park(
    runner: &TaskRunner,
    task: &Task,
    lease: &Lease,
    run: &Run,
    asked: &Asked<'_>,
    head_sha: &str,
) -> Result<(), EngineError> {
    let mut tx = runner.pool.begin().await?;
    if !clarification::park(&mut *tx, run.id, asked).await? {
        tracing::warn!("the run ended before it could park; nothing recorded");
        return Ok(());
    }
    if super::park(tx, task, lease, head_sha, TaskState::AwaitingInput).await? {
        tracing::info!(
            step = %asked.step,
            round = run.clarification_rounds + 1,
            questions_bytes = asked.questions.len(),
            "run waits for an answer"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_that_asks_nothing_fails_saying_so() {
        let step = StepResult {
            position: 0,
            name: "plan".to_owned(),
            command: "exit 75".to_owned(),
            exit_code: Some(75),
            duration: std::time::Duration::ZERO,
            output: "thinking\n".to_owned(),
            timed_out: false,
            out_of_budget: false,
            attempts: 1,
        };
        let Failure::Step {
            tail, exit_code, ..
        } = without_questions(&step, "left it empty")
        else {
            panic!("a step failure");
        };
        assert_eq!(exit_code, Some(75));
        assert!(tail.starts_with("thinking"), "{tail}");
        assert!(tail.contains("exited with 75 to ask questions, but left it empty"));
    }
}
