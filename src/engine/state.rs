//! Which task state may follow which: the one place that rule lives.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type, Serialize, schemars::JsonSchema)]
#[sqlx(type_name = "task_state", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    Queued,
    Running,
    /// Failed with attempts left: waits for its retry to fall due.
    Scheduled,
    Succeeded,
    Failed,
    Cancelled,
    /// Its run is parked at an approval step: it holds no worker and no repository slot
    /// until someone approves (back to the queue) or rejects (failed).
    AwaitingApproval,
    /// Its run asked the requester questions: like a parked approval it holds no worker and
    /// no repository slot, until the answer comes (back to the queue), nobody answers in
    /// time (failed), or it is cancelled.
    AwaitingInput,
    /// On the board but out of the queue: in the backlog, or blocked by hand. Only a move on
    /// the board puts it in the queue.
    Held,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type, Serialize, schemars::JsonSchema)]
#[sqlx(type_name = "run_state", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Claimed: its workspace and pipeline file are being made ready; no step has run.
    Pending,
    Running,
    Completed,
    Failed,
    /// Stopped because its task was cancelled.
    Cancelled,
    /// Ended without a result from its worker: the process died or shut down, or the
    /// session crashed.
    Interrupted,
    /// Parked at an approval step; resumed by the task's next claim once approved.
    AwaitingApproval,
    /// Parked at a step that asked questions; resumed at that step by the task's next claim
    /// once answered.
    AwaitingInput,
}

impl RunState {
    pub const ALL: [RunState; 8] = [
        Self::Pending,
        Self::Running,
        Self::AwaitingApproval,
        Self::AwaitingInput,
        Self::Completed,
        Self::Failed,
        Self::Cancelled,
        Self::Interrupted,
    ];

    /// The name Postgres and the API give the state.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::Interrupted => "interrupted",
            Self::AwaitingApproval => "awaiting_approval",
            Self::AwaitingInput => "awaiting_input",
        }
    }

    /// Whether the run's worker holds it (its steps run, or are about to): its log may
    /// still grow.
    pub fn is_live(self) -> bool {
        matches!(self, Self::Pending | Self::Running)
    }

    /// The states a run may go to: a parked run resumes, or ends with its task; an ended
    /// run never changes (a retry is a new run). Postgres holds the same table
    /// (`run_transitions`) and refuses any other change to a run, whichever statement makes it.
    pub fn next(self) -> &'static [RunState] {
        use RunState::*;
        match self {
            // Its workspace could not be made, its pipeline file is broken, or its task was
            // taken from it before a step ran.
            Pending => &[Running, Failed, Cancelled, Interrupted],
            Running => &[
                Completed,
                Failed,
                Cancelled,
                Interrupted,
                AwaitingApproval,
                AwaitingInput,
            ],
            AwaitingApproval | AwaitingInput => &[Running, Failed, Cancelled],
            Completed | Failed | Cancelled | Interrupted => &[],
        }
    }
}

impl TaskState {
    pub const ALL: [TaskState; 9] = [
        Self::Queued,
        Self::Running,
        Self::Scheduled,
        Self::Succeeded,
        Self::Failed,
        Self::Cancelled,
        Self::AwaitingApproval,
        Self::AwaitingInput,
        Self::Held,
    ];

    /// Whether the scheduler is done with the task. Only a move on the board takes a
    /// finished task up again ([`TaskState::can_become`] lists those re-entries).
    pub fn is_final(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }

    /// The state in words, for a sentence about the task (`task 4 is still …`).
    pub fn words(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Scheduled => "waiting to be retried",
            Self::AwaitingApproval => "waiting for an approval",
            Self::AwaitingInput => "waiting for an answer to its questions",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::Held => "held back on the board",
        }
    }

    /// The name Postgres and the API give the state.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Scheduled => "scheduled",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::AwaitingApproval => "awaiting_approval",
            Self::AwaitingInput => "awaiting_input",
            Self::Held => "held",
        }
    }

    pub fn can_become(self, next: TaskState) -> bool {
        use TaskState::*;
        matches!(
            (self, next),
            (Queued, Running)
                | (Queued, Cancelled)
                | (Running, Succeeded)
                | (Running, Failed)
                | (Running, Cancelled)
                | (Running, Queued)
                | (Running, Scheduled)
                | (Scheduled, Queued)
                | (Scheduled, Cancelled)
                | (Running, AwaitingApproval)
                | (AwaitingApproval, Queued)
                | (AwaitingApproval, Failed)
                | (AwaitingApproval, Cancelled)
                | (Running, AwaitingInput)
                | (AwaitingInput, Queued)
                | (AwaitingInput, Failed)
                | (AwaitingInput, Cancelled)
                | (Held, Queued)
                | (Held, Cancelled)
                | (Queued, Held)
                // A parent completes when its children are done: it never runs itself.
                | (Held, Succeeded)
                // The board's re-entries: reopened, unblocked, restored to the backlog.
                | (Succeeded, Queued)
                | (Succeeded, Held)
                | (Failed, Queued)
                | (Failed, Held)
                | (Cancelled, Held)
        )
    }

    /// The states that may become `self`.
    pub fn sources(self) -> Vec<TaskState> {
        Self::ALL
            .into_iter()
            .filter(|from| from.can_become(self))
            .collect()
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TransitionError {
    #[error("task {task_id} cannot go from {from:?} to {to:?}")]
    NotAllowed {
        task_id: i64,
        from: TaskState,
        to: TaskState,
    },
    #[error("task {task_id} is no longer held by lease epoch {epoch}")]
    StaleLease { task_id: i64, epoch: i64 },
    #[error("task {task_id} does not exist")]
    NotFound { task_id: i64 },
}

#[cfg(test)]
mod tests {
    use super::RunState;
    use super::TaskState::{self, *};

    #[test]
    fn a_states_name_is_the_one_postgres_and_the_api_use() {
        for state in TaskState::ALL {
            assert_eq!(serde_json::to_value(state).unwrap(), state.as_str());
        }
    }

    const ALL: [TaskState; 9] = TaskState::ALL;

    #[test]
    fn a_finished_task_only_goes_back_to_the_queue_or_the_board() {
        for from in ALL.into_iter().filter(|s| s.is_final()) {
            for to in ALL {
                assert_eq!(
                    from.can_become(to),
                    matches!((from, to), (Succeeded | Failed, Queued) | (_, Held)),
                    "{from:?} -> {to:?}"
                );
            }
        }
    }

    #[test]
    fn a_runs_name_is_the_one_postgres_and_the_api_use() {
        for state in RunState::ALL {
            assert_eq!(serde_json::to_value(state).unwrap(), state.as_str());
        }
    }

    #[test]
    fn a_held_task_waits_outside_the_queue() {
        let after_held: Vec<TaskState> =
            ALL.into_iter().filter(|to| Held.can_become(*to)).collect();
        assert_eq!(after_held, vec![Queued, Succeeded, Cancelled]);
        let into_held: Vec<TaskState> = Held.sources();
        assert_eq!(into_held, vec![Queued, Succeeded, Failed, Cancelled]);
        assert!(!Held.is_final());
    }

    #[test]
    fn only_a_claim_starts_a_task_and_only_a_running_task_finishes() {
        for from in ALL {
            assert_eq!(from.can_become(Running), from == Queued, "{from:?}");
            assert_eq!(
                from.can_become(Succeeded),
                matches!(from, Running | Held),
                "{from:?}: a run's worker finishes a task, its children a parent"
            );
            assert_eq!(
                from.can_become(Cancelled),
                !from.is_final(),
                "{from:?}: anything live can be cancelled"
            );
            assert_eq!(
                from.can_become(Failed),
                matches!(from, Running | AwaitingApproval | AwaitingInput),
                "{from:?}: only a run's worker, a rejection or an unanswered question fails a task"
            );
        }
        assert!(
            Running.can_become(Queued),
            "a rescued task goes back to the queue"
        );
    }

    #[test]
    fn only_a_running_task_parks_and_a_parked_one_waits_for_a_decision() {
        for parked in [AwaitingApproval, AwaitingInput] {
            for from in ALL {
                assert_eq!(from.can_become(parked), from == Running, "{from:?}");
            }
            let after_parking: Vec<TaskState> = ALL
                .into_iter()
                .filter(|to| parked.can_become(*to))
                .collect();
            assert_eq!(after_parking, vec![Queued, Failed, Cancelled], "{parked:?}");
            assert!(!parked.is_final());
        }
        assert!(!AwaitingApproval.can_become(AwaitingInput));
        assert!(!AwaitingInput.can_become(AwaitingApproval));
    }
}
