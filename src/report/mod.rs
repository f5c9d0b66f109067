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
    Failed(#[serde(deserialize_with = "stored_failure")] Failure),
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

impl Outcome {
    /// Why a run that did not succeed ended; `None` for a run that did.
    pub fn error_type(&self) -> Option<ErrorType> {
        Some(match self {
            Outcome::Proposed { .. } | Outcome::NoChanges => return None,
            Outcome::Failed(failure) => failure.error_type(),
            Outcome::Rejected { .. } => ErrorType::Rejected,
            Outcome::Cancelled { .. } => ErrorType::Cancelled,
            Outcome::Interrupted(_) => ErrorType::Interrupted,
        })
    }

    /// The step the run failed at, when one step is to blame.
    pub fn failed_step(&self) -> Option<&str> {
        match self {
            Outcome::Failed(failure) => failure.step(),
            _ => None,
        }
    }

    /// What the person who asked for the run can do about how it ended.
    pub fn remediation(&self) -> Option<String> {
        let error_type = self.error_type()?;
        let step = self.failed_step().map(|step| format!("`{step}`"));
        let step = step.as_deref().unwrap_or("the step");
        Some(match error_type {
            ErrorType::StepFailed => format!(
                "Read the log of {step}, fix the cause in the repository or the issue, then comment `/conveyor retry`."
            ),
            ErrorType::StepTimeout => format!(
                "{step} ran out of time: make it faster or raise its `timeout_minutes`, then comment `/conveyor retry`."
            ),
            ErrorType::DefinitionInvalid => {
                "Fix `.github/conveyor.yml` on the default branch (`conveyor check` shows the errors), then comment `/conveyor retry`.".to_owned()
            }
            ErrorType::CloneFailed => {
                "Conveyor could not fetch the repository or its branch: check the App can read it and the branch exists; Conveyor retries by itself.".to_owned()
            }
            ErrorType::PushRejected => {
                "GitHub refused the push: check branch protection rules and the App's `contents: write` permission, then comment `/conveyor retry`.".to_owned()
            }
            ErrorType::ProtectedPath => {
                "Keep the change out of the protected paths, or list what the pipeline may touch in `protected_paths:`, then comment `/conveyor retry`.".to_owned()
            }
            ErrorType::GithubError => {
                "GitHub refused or failed a request: check the App's installation and permissions, or GitHub's status; Conveyor retries by itself.".to_owned()
            }
            ErrorType::SandboxError => {
                "The worker could not start a sandbox for the steps: check bubblewrap on the Conveyor host (or `CONVEYOR_SANDBOX`); Conveyor retries by itself.".to_owned()
            }
            ErrorType::BudgetExceeded => format!(
                "The run used up its time budget in {step}: raise the pipeline's `timeout_minutes` (or the `timeout=` of `/conveyor run`), or make the steps faster."
            ),
            ErrorType::Cancelled => {
                "The run was cancelled; comment `/conveyor retry` to run it again.".to_owned()
            }
            ErrorType::Rejected => {
                "The run was rejected at its approval: address the reason given, then comment `/conveyor retry`.".to_owned()
            }
            ErrorType::NoAnswer => format!(
                "{step} asked questions nobody answered: answer them in a comment on the issue after `/conveyor retry`."
            ),
            ErrorType::Interrupted => {
                "Conveyor lost the run (a worker stopped or crashed); it is tried again while attempts are left, else comment `/conveyor retry`.".to_owned()
            }
        })
    }
}

/// Why a run did not succeed: the closed set stored with the run and shown by its reports and
/// the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorType {
    StepFailed,
    StepTimeout,
    DefinitionInvalid,
    CloneFailed,
    PushRejected,
    ProtectedPath,
    GithubError,
    SandboxError,
    BudgetExceeded,
    Cancelled,
    Rejected,
    NoAnswer,
    Interrupted,
}

impl ErrorType {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorType::StepFailed => "step_failed",
            ErrorType::StepTimeout => "step_timeout",
            ErrorType::DefinitionInvalid => "definition_invalid",
            ErrorType::CloneFailed => "clone_failed",
            ErrorType::PushRejected => "push_rejected",
            ErrorType::ProtectedPath => "protected_path",
            ErrorType::GithubError => "github_error",
            ErrorType::SandboxError => "sandbox_error",
            ErrorType::BudgetExceeded => "budget_exceeded",
            ErrorType::Cancelled => "cancelled",
            ErrorType::Rejected => "rejected",
            ErrorType::NoAnswer => "no_answer",
            ErrorType::Interrupted => "interrupted",
        }
    }
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
    /// The repository, or the branch the run starts from, could not be fetched.
    Clone(String),
    /// The remote refused the run's push.
    Push(String),
    /// GitHub's API refused or failed Conveyor's request (a token, a pull request).
    #[serde(rename = "github")]
    GitHub(String),
    /// The session could not give the steps a place to run: no workspace, no sandbox, or a
    /// work tree Conveyor's git could not read back.
    Sandbox(String),
    /// The run's time budget ran out while `step` ran; it was stopped there.
    Budget { step: String, minutes: u64 },
    /// A step asked the requester questions, and nobody answered in time or the rounds ran
    /// out.
    NoAnswer { step: String, reason: String },
    /// Conveyor lost hold of the run while it went on (its lease moved on, its database
    /// failed); nothing more was published.
    Lost(String),
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

    pub fn error_type(&self) -> ErrorType {
        match self {
            Failure::Step {
                timed_out: true, ..
            } => ErrorType::StepTimeout,
            Failure::Step { .. } => ErrorType::StepFailed,
            Failure::Definition(_) => ErrorType::DefinitionInvalid,
            Failure::Protected(_) => ErrorType::ProtectedPath,
            Failure::Clone(_) => ErrorType::CloneFailed,
            Failure::Push(_) => ErrorType::PushRejected,
            Failure::GitHub(_) => ErrorType::GithubError,
            Failure::Sandbox(_) => ErrorType::SandboxError,
            Failure::Budget { .. } => ErrorType::BudgetExceeded,
            Failure::NoAnswer { .. } => ErrorType::NoAnswer,
            Failure::Lost(_) => ErrorType::Interrupted,
        }
    }

    /// The step to blame, if one is.
    pub fn step(&self) -> Option<&str> {
        match self {
            Failure::Step { name, .. } => Some(name),
            Failure::Budget { step, .. } | Failure::NoAnswer { step, .. } => Some(step),
            _ => None,
        }
    }

    /// Conveyor's own trouble (not the repository's): worth another attempt whatever the
    /// pipeline's retry policy says.
    pub fn is_conveyors(&self) -> bool {
        matches!(
            self,
            Failure::Clone(_)
                | Failure::Push(_)
                | Failure::GitHub(_)
                | Failure::Sandbox(_)
                | Failure::Lost(_)
        )
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
            Failure::Budget { step, minutes } => {
                format!("the run's budget of {minutes} minutes ran out in step `{step}`")
            }
            Failure::NoAnswer { step, reason } => {
                format!("step `{step}` asked questions and got no answer: {reason}")
            }
            Failure::Clone(message)
            | Failure::Push(message)
            | Failure::GitHub(message)
            | Failure::Sandbox(message)
            | Failure::Lost(message) => message.lines().next().unwrap_or_default().to_owned(),
        }
    }
}

/// Reads a stored failure, including those the previous release wrote, which lumped clone,
/// push, GitHub and sandbox trouble together as `infrastructure`: their message says which.
fn stored_failure<'de, D: serde::Deserializer<'de>>(stored: D) -> Result<Failure, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Stored {
        Current(Failure),
        Previous(Previous),
    }
    #[derive(Deserialize)]
    #[serde(tag = "kind", content = "detail", rename_all = "snake_case")]
    enum Previous {
        Infrastructure(String),
    }
    Ok(match Stored::deserialize(stored)? {
        Stored::Current(failure) => failure,
        Stored::Previous(Previous::Infrastructure(message)) => {
            let is = |prefix: &str| message.starts_with(prefix);
            if is("git push failed") {
                Failure::Push(message)
            } else if is("git ") {
                Failure::Clone(message)
            } else if is("could not create a workspace") || message.contains("sandbox") {
                Failure::Sandbox(message)
            } else if message.contains("lease") || is("database") {
                Failure::Lost(message)
            } else {
                Failure::GitHub(message)
            }
        }
    })
}

/// Questions a step asked its requester, as the run's reports show them while it waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Questions<'a> {
    pub step: &'a str,
    /// Markdown written by the step: untrusted, shown as a quote.
    pub text: &'a str,
    /// Who is to answer: the task's requester.
    pub requester: Option<&'a str>,
}

/// Bytes of a step's questions quoted in a report.
const QUESTIONS_MAX_BYTES: usize = 16_000;

impl Questions<'_> {
    /// The questions as a quote, then how to answer them.
    fn markdown(&self) -> String {
        let quoted = text_bounds::quote_output(self.text.trim_end(), QUESTIONS_MAX_BYTES);
        let who = match self.requester {
            Some(login) => format!("@{login}, reply"),
            None => "Reply".to_owned(),
        };
        format!(
            "> {}\n\n{who} to this issue with a plain comment (no `/conveyor` command): it is taken as the answer, and step `{}` runs again with it. `/conveyor cancel` ends the run instead.\n",
            quoted.replace('\n', "\n> "),
            text_bounds::title(self.step, STEP_NAME_MAX_CHARS)
        )
    }
}

/// Where a run can be looked at: its page and the API's diff and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunLinks {
    pub page: String,
    pub diff: String,
    pub logs: String,
}

impl RunLinks {
    /// The links of run `run_id` under `public_url` (`CONVEYOR_PUBLIC_URL`).
    pub fn new(public_url: &str, run_id: i64) -> Self {
        let base = public_url.trim_end_matches('/');
        Self {
            page: format!("{base}/runs/{run_id}"),
            diff: format!("{base}/api/v2/runs/{run_id}/diff"),
            logs: format!("{base}/api/v2/runs/{run_id}/logs"),
        }
    }

    fn markdown(&self) -> String {
        format!(
            "🔎 [Run details]({}) · [diff]({}) · [logs]({})",
            self.page, self.diff, self.logs
        )
    }
}

/// What the reports of a run say below their own text: for a run that did not succeed, its
/// error type, the steps around the failure and what to do; then the links to the run.
pub fn footer(
    outcome: Option<&Outcome>,
    last_successful_step: Option<&str>,
    links: &RunLinks,
) -> String {
    let mut footer = String::new();
    if let Some((outcome, error_type)) =
        outcome.and_then(|outcome| Some((outcome, outcome.error_type()?)))
    {
        let name = |step: &str| format!("`{}`", text_bounds::title(step, STEP_NAME_MAX_CHARS));
        footer.push_str(&format!("**Error type:** `{}`", error_type.as_str()));
        if let Some(step) = outcome.failed_step() {
            footer.push_str(&format!(" · **failed step:** {}", name(step)));
        }
        if let Some(step) = last_successful_step {
            footer.push_str(&format!(" · **last successful step:** {}", name(step)));
        }
        footer.push('\n');
        if let Some(remediation) = outcome.remediation() {
            footer.push_str(&format!("\n💡 {remediation}\n"));
        }
        footer.push('\n');
    }
    footer.push_str(&links.markdown());
    footer.push('\n');
    footer
}

/// `body` (a comment or summary already within GitHub's limits) with `footer` below it; when
/// the two are too long the body's middle goes, never the footer.
pub fn with_footer(body: &str, footer: &str) -> String {
    text_bounds::github_body(&format!("{}\n\n{footer}", body.trim_end()))
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
        let result = match step.attempts {
            0 | 1 => result,
            attempts => format!("{result} (attempt {attempts})"),
        };
        table.push_str(&format!(
            "| `{}` | {result} | {} |\n",
            text_bounds::title(&step.name, STEP_NAME_MAX_CHARS),
            format_duration(step.duration)
        ));
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(json: &str) -> Outcome {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn outcomes_the_previous_release_stored_still_read_with_a_type() {
        let previous = |message: &str| {
            read(
                &serde_json::json!({
                    "kind": "failed",
                    "detail": { "kind": "infrastructure", "detail": message },
                })
                .to_string(),
            )
        };
        let typed = |message: &str| previous(message).error_type().unwrap();
        assert_eq!(
            previous("git push failed: rejected"),
            Outcome::Failed(Failure::Push("git push failed: rejected".into()))
        );
        assert_eq!(typed("git clone failed: not found"), ErrorType::CloneFailed);
        assert_eq!(
            typed("git start failed: the branch moved"),
            ErrorType::CloneFailed
        );
        assert_eq!(
            typed("no installation token: GitHub returned 401"),
            ErrorType::GithubError
        );
        assert_eq!(
            typed("the step's sandbox did not start"),
            ErrorType::SandboxError
        );
        assert_eq!(
            typed("could not create a workspace: disk full"),
            ErrorType::SandboxError
        );
        assert_eq!(
            typed("the task's lease moved on; nothing more was published"),
            ErrorType::Interrupted
        );
        let step = r#"{"kind":"failed","detail":{"kind":"step","detail":{"name":"verify","exit_code":1,"timed_out":false,"tail":"boom"}}}"#;
        assert_eq!(read(step).error_type(), Some(ErrorType::StepFailed));
        assert_eq!(read(step).failed_step(), Some("verify"));
        let definition = r#"{"kind":"failed","detail":{"kind":"definition","detail":"bad"}}"#;
        assert_eq!(
            read(definition).error_type(),
            Some(ErrorType::DefinitionInvalid)
        );
        assert_eq!(read(r#"{"kind":"no_changes"}"#).error_type(), None);
    }

    #[test]
    fn every_outcome_written_now_reads_back_as_it_was() {
        let failures = [
            Failure::Step {
                name: "s".into(),
                exit_code: Some(1),
                timed_out: false,
                tail: "boom".into(),
            },
            Failure::Step {
                name: "s".into(),
                exit_code: None,
                timed_out: true,
                tail: String::new(),
            },
            Failure::Definition("d".into()),
            Failure::Protected(vec!["CODEOWNERS".into()]),
            Failure::Clone("c".into()),
            Failure::Push("p".into()),
            Failure::GitHub("g".into()),
            Failure::Sandbox("b".into()),
            Failure::Budget {
                step: "s".into(),
                minutes: 30,
            },
            Failure::NoAnswer {
                step: "ask".into(),
                reason: "no answer within 24 hours".into(),
            },
            Failure::Lost("l".into()),
        ];
        let mut types = Vec::new();
        for failure in failures {
            let outcome = Outcome::Failed(failure);
            let json = serde_json::to_string(&outcome).unwrap();
            assert_eq!(read(&json), outcome, "{json}");
            types.push(outcome.error_type().unwrap().as_str());
            assert!(outcome.remediation().is_some());
        }
        for outcome in [
            Outcome::Rejected {
                by: "carol".into(),
                reason: None,
            },
            Outcome::Cancelled { by: None },
            Outcome::Interrupted(Interruption::Crashed),
        ] {
            types.push(outcome.error_type().unwrap().as_str());
        }
        types.sort_unstable();
        types.dedup();
        let mut closed_set = vec![
            "step_failed",
            "step_timeout",
            "definition_invalid",
            "clone_failed",
            "push_rejected",
            "protected_path",
            "github_error",
            "sandbox_error",
            "budget_exceeded",
            "cancelled",
            "rejected",
            "no_answer",
            "interrupted",
        ];
        closed_set.sort_unstable();
        assert_eq!(types, closed_set);
        for outcome in [
            Outcome::NoChanges,
            Outcome::Proposed {
                branch: "b".into(),
                built_on: None,
            },
        ] {
            assert_eq!((outcome.error_type(), outcome.remediation()), (None, None));
        }
    }

    #[test]
    fn the_footer_names_the_failure_and_survives_a_full_body() {
        let links = RunLinks::new("https://conveyor.example/", 42);
        assert_eq!(links.page, "https://conveyor.example/runs/42");
        let outcome = Outcome::Failed(Failure::Budget {
            step: "slow".into(),
            minutes: 30,
        });
        let footer = footer(Some(&outcome), Some("implement"), &links);
        assert!(
            footer.contains("**Error type:** `budget_exceeded` · **failed step:** `slow` · **last successful step:** `implement`"),
            "{footer}"
        );
        assert!(footer.contains("timeout_minutes"), "{footer}");
        assert!(footer.contains("(https://conveyor.example/api/v2/runs/42/logs)"));
        let full = "x".repeat(70_000);
        let body = with_footer(&full, &footer);
        assert!(body.chars().count() <= text_bounds::GITHUB_BODY_MAX);
        assert!(body.ends_with(&footer), "the footer is kept");
        let running = super::footer(None, None, &links);
        assert!(!running.contains("Error type"), "{running}");
    }
}
