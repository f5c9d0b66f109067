//! The task engine: tasks, their state machine, runs, steps and the audit trail.
//! Every entry point (webhook, API, CLI, workers) changes tasks through these functions.

pub mod approvals;
pub mod artifacts;
pub mod blockers;
pub mod board;
pub mod board_view;
pub mod clarification;
pub mod deferral;
pub mod event_feed;
pub mod events;
pub mod forge;
pub mod idempotency;
pub mod imports;
pub mod logs;
pub mod parents;
pub mod prd;
pub mod quick_runs;
pub mod repositories;
pub mod retries;
pub mod runs;
pub mod state;
pub mod status_comments;
pub mod tasks;

pub use state::{RunState, TaskState, TransitionError};
