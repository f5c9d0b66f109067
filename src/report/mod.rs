//! What Conveyor tells GitHub: the status comment, the check run (and its approval context),
//! replies to commands, the pull request. Rendering is pure, in Conveyor's own types; the
//! outbox turns the texts into GitHub calls.

pub mod approval;
pub mod check_run;
pub mod comment;
pub mod pull_request;
pub mod reply;

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::pipeline::StepResult;
use crate::text_bounds;

/// A step's name as shown in a table row; the row stays readable and the table small.
const STEP_NAME_MAX_CHARS: usize = 100;

/// How a run ended, in the terms its reports need; recorded with the run, so that its
/// reports can be rendered again whenever they are delivered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "detail", rename_all = "snake_case")]
pub enum Outcome {
    /// Steps passed and their changes were pushed: to a branch of the task's own, proposed
    /// in a pull request, or to the pull request the task runs on.
    Proposed {
        branch: String,
        /// The commit the run built on when someone else had pushed to its branch.
        built_on: Option<String>,
    },
    /// Steps passed without changing any file.
    NoChanges,
    Failed(Failure),
    /// A person rejected the run at an approval step.
    Rejected {
        by: String,
        reason: Option<String>,
    },
    /// The task was cancelled while the run went on; `by` the person who asked, if one did.
    Cancelled {
        by: Option<String>,
    },
    /// The run ended without a result from its worker.
    Interrupted(Interruption),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Interruption {
    /// Its worker shut down and gave the task back.
    HandedBack,
    /// Its worker session crashed.
    Crashed,
    /// Its process stopped answering and the task was taken from it.
    Lost,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "detail", rename_all = "snake_case")]
pub enum Failure {
    /// A step exited non-zero, timed out or could not start.
    Step {
        name: String,
        exit_code: Option<i32>,
        timed_out: bool,
        tail: String,
    },
    /// The pipeline file is missing or wrong; the message says how to fix it.
    Definition(String),
    /// The run changed files its pipeline protects; these paths.
    Protected(Vec<String>),
    /// Conveyor itself could not do its part (clone, push, GitHub); not the repository's fault.
    Infrastructure(String),
}

impl Failure {
    pub fn from_step(step: &StepResult) -> Self {
        Failure::Step {
            name: step.name.clone(),
            exit_code: step.exit_code,
            timed_out: step.timed_out,
            tail: step.tail(comment::TAIL_LINES).to_owned(),
        }
    }

    /// One line for logs and the run record.
    pub fn headline(&self) -> String {
        match self {
            Failure::Step {
                name,
                exit_code: Some(code),
                ..
            } => format!("step `{name}` exited with {code}"),
            Failure::Step {
                name,
                timed_out: true,
                ..
            } => format!("step `{name}` timed out"),
            Failure::Step { name, .. } => format!("step `{name}` was killed or could not start"),
            Failure::Definition(message) => message.lines().next().unwrap_or_default().to_owned(),
            Failure::Protected(paths) => format!("changed protected paths: {}", paths.join(", ")),
            Failure::Infrastructure(message) => message.clone(),
        }
    }
}

fn format_duration(duration: Duration) -> String {
    let secs = duration.as_secs_f64();
    if secs < 60.0 {
        format!("{secs:.1}s")
    } else {
        format!(
            "{}m{:02}s",
            duration.as_secs() / 60,
            duration.as_secs() % 60
        )
    }
}

/// The command recorded for an approval step's result, whose output says who decided.
pub const GATE_COMMAND: &str = "approval";
/// How much of a gate's decision a table row shows.
const DECISION_MAX_CHARS: usize = 200;

/// A markdown table of the steps that ran.
fn steps_table(steps: &[StepResult]) -> String {
    let mut table = String::from("| step | result | duration |\n|---|---|---|\n");
    for step in steps {
        let decision = || {
            let line = step.output.lines().next().unwrap_or_default();
            text_bounds::title(line, DECISION_MAX_CHARS).replace('|', "\\|")
        };
        let result = match (step.exit_code, step.timed_out) {
            (Some(0), _) if step.command == GATE_COMMAND => format!("✅ {}", decision()),
            (_, _) if step.command == GATE_COMMAND => format!("❌ {}", decision()),
            (Some(0), _) => "✅ passed".to_owned(),
            (_, true) => "⏱️ timed out".to_owned(),
            (Some(code), _) => format!("❌ exit {code}"),
            (None, _) => "❌ killed".to_owned(),
        };
        table.push_str(&format!(
            "| `{}` | {result} | {} |\n",
            text_bounds::title(&step.name, STEP_NAME_MAX_CHARS),
            format_duration(step.duration)
        ));
    }
    table
}
