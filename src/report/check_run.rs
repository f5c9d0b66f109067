//! The `conveyor` check run through a run: queued, in progress, waiting for approval with
//! its buttons, and how it ended. Pure texts in Conveyor's own types; the GitHub layer turns
//! a [`CheckRunReport`] into a request.

use super::approval::{ApprovalContext, code, summary as approval_summary};
use super::{Failure, Questions, steps_table};
use crate::pipeline::StepResult;
use crate::text_bounds::{CHECK_RUN_TITLE_MAX_CHARS, github_body, quote_output, title};

pub const NAME: &str = "conveyor";
/// The action identifiers of the approval buttons (external contract: `check_run`
/// `requested_action` webhooks carry them back).
pub const APPROVE: &str = "approve";
pub const REJECT: &str = "reject";

// GitHub's limits for the text of a check run's actions (buttons).
const BUTTON_LABEL_MAX_CHARS: usize = 20;
const BUTTON_IDENTIFIER_MAX_CHARS: usize = 20;
const BUTTON_DESCRIPTION_MAX_CHARS: usize = 40;
/// Bytes of a failed step's output quoted in the check run's text, which has a limit of its
/// own; room is left for the heading and the fence.
const TAIL_MAX_BYTES: usize = 60_000;
/// Bytes of a message quoted (a definition error, a tool's output in an infrastructure one).
const MESSAGE_MAX_BYTES: usize = 8_000;
/// Bytes of the steps table in a summary: a long pipeline keeps its first and last steps.
const STEPS_MAX_BYTES: usize = 40_000;
/// Protected paths listed one by one; the rest are counted.
const PATHS_LISTED: usize = 50;
/// Bytes of a rejection's reason quoted.
const REASON_MAX_BYTES: usize = 4_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Queued,
    InProgress,
    Completed,
}

impl Status {
    /// GitHub's name for the status.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Queued => "queued",
            Status::InProgress => "in_progress",
            Status::Completed => "completed",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conclusion {
    Success,
    Failure,
    Cancelled,
    ActionRequired,
    Neutral,
}

impl Conclusion {
    /// GitHub's name for the conclusion.
    pub fn as_str(self) -> &'static str {
        match self {
            Conclusion::Success => "success",
            Conclusion::Failure => "failure",
            Conclusion::Cancelled => "cancelled",
            Conclusion::ActionRequired => "action_required",
            Conclusion::Neutral => "neutral",
        }
    }
}

/// A button on the check run; a click comes back as a `requested_action` with `identifier`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Button {
    pub identifier: String,
    pub label: String,
    pub description: String,
}

impl Button {
    /// A button within GitHub's limits.
    fn new(identifier: &str, label: &str, description: &str) -> Self {
        Self {
            identifier: title(identifier, BUTTON_IDENTIFIER_MAX_CHARS),
            label: title(label, BUTTON_LABEL_MAX_CHARS),
            description: title(description, BUTTON_DESCRIPTION_MAX_CHARS),
        }
    }
}

/// What the check run shows, within GitHub's limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckRunReport {
    pub status: Status,
    /// Set exactly when `status` is `Completed`.
    pub conclusion: Option<Conclusion>,
    pub title: String,
    pub summary: String,
    pub text: Option<String>,
    /// At most three.
    pub buttons: Vec<Button>,
}

/// Where a run stands, for its check run.
#[derive(Debug, Clone, Copy)]
pub enum CheckState<'a> {
    Queued,
    InProgress {
        step: Option<&'a str>,
    },
    AwaitingApproval(&'a ApprovalContext<'a>),
    /// A step asked the requester questions; the run waits for the answer.
    AwaitingInput(&'a Questions<'a>),
    Succeeded {
        pull_request_url: Option<&'a str>,
    },
    NoChanges,
    Failed(&'a Failure),
    Rejected {
        by: &'a str,
        reason: Option<&'a str>,
    },
    Cancelled {
        by: Option<&'a str>,
    },
    /// The run ended without a result (its worker died); the task may run again.
    Interrupted,
    /// The approval this check run asked for was given; the run went on, and reports on
    /// `continued_at` when it pushed more.
    Approved {
        by: &'a str,
        continued_at: Option<&'a str>,
    },
    /// The run reports on a later commit now (a pull request's head it built on).
    Superseded {
        by_commit: Option<&'a str>,
    },
}

/// The check run of pipeline `pipeline` in `state`; `steps` are the steps run so far (an
/// approval's context carries its own).
pub fn render(pipeline: &str, state: CheckState, steps: &[StepResult]) -> CheckRunReport {
    let name = code(pipeline);
    let ended = |conclusion, heading: String, summary: String| CheckRunReport {
        status: Status::Completed,
        conclusion: Some(conclusion),
        title: title(&heading, CHECK_RUN_TITLE_MAX_CHARS),
        summary: github_body(&with_steps(summary, steps)),
        text: None,
        buttons: Vec::new(),
    };
    match state {
        CheckState::Queued => CheckRunReport {
            status: Status::Queued,
            conclusion: None,
            title: title(
                &format!("Pipeline `{pipeline}` is queued"),
                CHECK_RUN_TITLE_MAX_CHARS,
            ),
            summary: github_body(&format!(
                "Conveyor has queued pipeline {name}; it runs when a worker is free."
            )),
            text: None,
            buttons: Vec::new(),
        },
        CheckState::InProgress { step } => {
            let (heading, now) = match step {
                Some(step) => (
                    format!("Pipeline `{pipeline}`: running step `{step}`"),
                    format!(
                        "Conveyor is running step {} of pipeline {name}.",
                        code(step)
                    ),
                ),
                None => (
                    format!("Pipeline `{pipeline}` is running"),
                    format!("Conveyor is running pipeline {name}."),
                ),
            };
            CheckRunReport {
                status: Status::InProgress,
                conclusion: None,
                title: title(&heading, CHECK_RUN_TITLE_MAX_CHARS),
                summary: github_body(&with_steps(now, steps)),
                text: None,
                buttons: Vec::new(),
            }
        }
        CheckState::AwaitingApproval(context) => CheckRunReport {
            status: Status::Completed,
            conclusion: Some(Conclusion::ActionRequired),
            title: title(
                &format!("Step `{}` waits for approval", context.step),
                CHECK_RUN_TITLE_MAX_CHARS,
            ),
            summary: approval_summary(context),
            text: None,
            buttons: vec![
                Button::new(APPROVE, "Approve", "Let the run go on from this commit"),
                Button::new(REJECT, "Reject", "End the run here, as failed"),
            ],
        },
        // In progress, not `action_required`: only an answer on the issue moves it on, and
        // nothing on the check run could give one.
        CheckState::AwaitingInput(questions) => CheckRunReport {
            status: Status::InProgress,
            conclusion: None,
            title: title(
                &format!("Step `{}` is waiting for an answer", questions.step),
                CHECK_RUN_TITLE_MAX_CHARS,
            ),
            summary: github_body(&with_steps(
                format!(
                    "Pipeline {name} is waiting for an answer to the questions of step {}:\n\n{}",
                    code(questions.step),
                    questions.markdown()
                ),
                steps,
            )),
            text: None,
            buttons: Vec::new(),
        },
        CheckState::Succeeded { pull_request_url } => {
            let summary = match pull_request_url {
                Some(url) => format!("Pipeline {name} passed; the changes are in {url}."),
                None => format!("Pipeline {name} passed."),
            };
            ended(
                Conclusion::Success,
                format!("Pipeline `{pipeline}` passed ({} steps)", steps.len()),
                summary,
            )
        }
        CheckState::NoChanges => ended(
            Conclusion::Success,
            format!("Pipeline `{pipeline}` passed and changed no files"),
            format!(
                "Pipeline {name} passed; its steps changed no files, so there is nothing to propose."
            ),
        ),
        CheckState::Failed(failure) => {
            let mut report = ended(
                Conclusion::Failure,
                format!("Pipeline `{pipeline}` failed: {}", failure.headline()),
                failure_summary(failure),
            );
            if let Failure::Step { name, tail, .. } = failure {
                report.text = Some(github_body(&format!(
                    "#### Last lines of {}\n\n{}",
                    code(name),
                    fenced(&quote_output(tail, TAIL_MAX_BYTES))
                )));
            }
            report
        }
        CheckState::Rejected { by, reason } => {
            let mut summary = format!("@{by} rejected the run at its approval, so it ended here.");
            if let Some(reason) = reason.filter(|reason| !reason.trim().is_empty()) {
                summary.push_str("\n\n");
                for line in quote_output(reason.trim_end(), REASON_MAX_BYTES).lines() {
                    summary.push_str(&format!("> {line}\n"));
                }
            }
            ended(
                Conclusion::Failure,
                format!("Pipeline `{pipeline}` was rejected by @{by}"),
                summary,
            )
        }
        CheckState::Cancelled { by } => {
            let (heading, summary) = match by {
                Some(by) => (
                    format!("Pipeline `{pipeline}` was cancelled by @{by}"),
                    format!("@{by} cancelled pipeline {name}; it ran no further."),
                ),
                None => (
                    format!("Pipeline `{pipeline}` was cancelled"),
                    format!("Pipeline {name} was cancelled; it ran no further."),
                ),
            };
            ended(Conclusion::Cancelled, heading, summary)
        }
        CheckState::Approved { by, continued_at } => {
            let next = match continued_at {
                Some(commit) => format!(" It reports on {} from here.", code(commit)),
                None => String::new(),
            };
            ended(
                Conclusion::Success,
                format!("Approved by @{by}"),
                format!("@{by} approved this commit, and pipeline {name} went on.{next}"),
            )
        }
        // Neutral: this commit is not what the run ended on, so it neither passed nor failed.
        CheckState::Superseded { by_commit } => {
            let next = match by_commit {
                Some(commit) => format!(" Its result is on {}.", code(commit)),
                None => String::new(),
            };
            ended(
                Conclusion::Neutral,
                format!("Pipeline `{pipeline}` went on to a later commit"),
                format!("Pipeline {name} pushed a later commit.{next}"),
            )
        }
        // Not neutral: branch protection counts neutral as passing, and an interrupted run
        // verified nothing.
        CheckState::Interrupted => ended(
            Conclusion::Cancelled,
            format!("Pipeline `{pipeline}` was interrupted"),
            format!(
                "Pipeline {name} stopped without a result: the worker running it went away. The task may run again; this check run does not follow that run."
            ),
        ),
    }
}

/// Why the run failed, for the summary; a failed step's output goes in the text.
fn failure_summary(failure: &Failure) -> String {
    match failure {
        Failure::Step {
            name,
            exit_code,
            timed_out,
            ..
        } => {
            let how = match (exit_code, timed_out) {
                (_, true) => "timed out".to_owned(),
                (Some(code), _) => format!("exited with code {code}"),
                (None, _) => "was killed or could not start".to_owned(),
            };
            format!(
                "Step {} {how}; nothing was pushed. Its last lines of output are below.",
                code(name)
            )
        }
        Failure::Definition(message) => format!(
            "The pipeline definition needs fixing:\n\n{}",
            quote_output(message, MESSAGE_MAX_BYTES)
        ),
        Failure::Protected(paths) => {
            let mut list: String = paths
                .iter()
                .take(PATHS_LISTED)
                .map(|path| format!("- {}\n", code(path)))
                .collect();
            if paths.len() > PATHS_LISTED {
                list.push_str(&format!("- … and {} more\n", paths.len() - PATHS_LISTED));
            }
            format!(
                "The run changed protected paths, so nothing was pushed:\n\n{list}\nA run may not change these unless the pipeline lists what it may touch in `protected_paths:`."
            )
        }
        Failure::Budget { step, minutes } => format!(
            "The run used up its budget of {minutes} minutes in step {}, which was stopped there; nothing was pushed.",
            code(step)
        ),
        Failure::NoAnswer { step, reason } => format!(
            "Step {} asked questions that got no answer, so the run stopped; nothing was pushed.\n\n{}",
            code(step),
            quote_output(reason, MESSAGE_MAX_BYTES)
        ),
        Failure::Clone(message)
        | Failure::Push(message)
        | Failure::GitHub(message)
        | Failure::Sandbox(message)
        | Failure::Lost(message) => format!(
            "Conveyor could not finish the run; this is not the repository's doing:\n\n{}",
            fenced(&quote_output(message, MESSAGE_MAX_BYTES))
        ),
    }
}

/// `summary`, then the table of `steps` when there are any.
fn with_steps(mut summary: String, steps: &[StepResult]) -> String {
    if !steps.is_empty() {
        summary.push_str("\n\n");
        summary.push_str(&quote_output(&steps_table(steps), STEPS_MAX_BYTES));
    }
    summary
}

/// `text` in a code block whose fence no line of it can close.
fn fenced(text: &str) -> String {
    let longest_run = text
        .split(|c| c != '`')
        .map(str::len)
        .max()
        .unwrap_or_default();
    let fence = "`".repeat(longest_run.max(2) + 1);
    format!("{fence}\n{}\n{fence}\n", text.trim_end_matches('\n'))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::authz::Permission;
    use crate::pipeline::changes::{ChangedFile, FileStatus};
    use crate::report::approval::Approvers;
    use crate::text_bounds::GITHUB_BODY_MAX;

    /// GitHub takes at most three actions on a check run.
    const MAX_BUTTONS: usize = 3;

    fn step(name: &str, exit_code: Option<i32>) -> StepResult {
        StepResult {
            position: 0,
            name: name.into(),
            command: "x".into(),
            exit_code,
            duration: Duration::from_secs(1),
            output: String::new(),
            timed_out: false,
            out_of_budget: false,
            attempts: 1,
        }
    }

    fn context<'a>(files: &'a [ChangedFile], steps: &'a [StepResult]) -> ApprovalContext<'a> {
        ApprovalContext {
            step: "review",
            message: Some("Look at the API."),
            head_sha: "abc123",
            files,
            steps,
            approvers: Approvers {
                permission: Permission::Write,
                allow_self_approval: false,
                requester: Some("alice"),
            },
        }
    }

    /// Every rule GitHub sets on a check run's output and actions.
    fn assert_fits_github(report: &CheckRunReport) {
        assert!(report.title.chars().count() <= CHECK_RUN_TITLE_MAX_CHARS);
        assert!(!report.title.contains('\n'), "{}", report.title);
        assert!(report.summary.chars().count() <= GITHUB_BODY_MAX);
        if let Some(text) = &report.text {
            assert!(text.chars().count() <= GITHUB_BODY_MAX);
        }
        assert!(report.buttons.len() <= MAX_BUTTONS);
        for button in &report.buttons {
            assert!(button.label.chars().count() <= BUTTON_LABEL_MAX_CHARS);
            assert!(button.identifier.chars().count() <= BUTTON_IDENTIFIER_MAX_CHARS);
            assert!(
                button.description.chars().count() <= BUTTON_DESCRIPTION_MAX_CHARS,
                "{}",
                button.description
            );
        }
        assert_eq!(
            report.conclusion.is_some(),
            report.status == Status::Completed,
            "{report:?}"
        );
    }

    #[test]
    fn the_check_run_fits_github_whatever_the_pipeline_and_steps() {
        // One text past every limit, and names long enough to be cut, many times over.
        let long = "ü`\n".repeat(50_000);
        let name = "ü`\n".repeat(500);
        let steps: Vec<StepResult> = (0..2_000).map(|_| step(&name, Some(0))).collect();
        let files: Vec<ChangedFile> = (0..2_000)
            .map(|i| ChangedFile {
                path: format!("{i}{name}"),
                status: FileStatus::Added,
                lines_added: Some(1),
                lines_deleted: Some(0),
            })
            .collect();
        let approval = ApprovalContext {
            step: &long,
            message: Some(&long),
            ..context(&files, &steps)
        };
        let questions = Questions {
            step: &long,
            text: &long,
            requester: Some(&name),
        };
        let failures = [
            Failure::Step {
                name: long.clone(),
                exit_code: Some(1),
                timed_out: false,
                tail: long.clone(),
            },
            Failure::Definition(long.clone()),
            Failure::Protected(vec![name.clone(); 5_000]),
            Failure::GitHub(long.clone()),
        ];
        let mut states = vec![
            CheckState::Queued,
            CheckState::InProgress { step: Some(&long) },
            CheckState::AwaitingApproval(&approval),
            CheckState::Succeeded {
                pull_request_url: Some(&long),
            },
            CheckState::NoChanges,
            CheckState::Rejected {
                by: &long,
                reason: Some(&long),
            },
            CheckState::Cancelled { by: Some(&long) },
            CheckState::Interrupted,
            CheckState::AwaitingInput(&questions),
        ];
        states.extend(failures.iter().map(CheckState::Failed));
        for state in states {
            let report = render(&long, state, &steps);
            assert_fits_github(&report);
        }

        let report = render(
            "default",
            CheckState::Succeeded {
                pull_request_url: None,
            },
            &steps,
        );
        assert!(
            report.summary.contains("| step | result | duration |\n"),
            "the steps table survives the cut"
        );
    }

    #[test]
    fn questions_are_in_progress_quoted_with_how_to_answer_and_no_buttons() {
        let questions = Questions {
            step: "plan",
            text: "Which colour?\n\n- red\n- blue",
            requester: Some("alice"),
        };
        let report = render(
            "default",
            CheckState::AwaitingInput(&questions),
            &[step("plan", Some(75))],
        );
        assert_eq!(
            (report.status, report.conclusion),
            (Status::InProgress, None)
        );
        assert_eq!(report.title, "Step `plan` is waiting for an answer");
        assert!(report.buttons.is_empty(), "{report:?}");
        assert!(
            report
                .summary
                .contains("> Which colour?\n> \n> - red\n> - blue\n"),
            "{}",
            report.summary
        );
        assert!(
            report
                .summary
                .contains("@alice, reply to this issue with a plain comment"),
            "{}",
            report.summary
        );
    }

    #[test]
    fn each_state_has_its_status_conclusion_and_title() {
        let steps = [step("build", Some(0)), step("test", Some(2))];
        let files = [];
        let approval = context(&files, &steps[..1]);
        let failure = Failure::from_step(&steps[1]);
        let cases = [
            (
                CheckState::Queued,
                Status::Queued,
                None,
                "Pipeline `default` is queued",
            ),
            (
                CheckState::InProgress { step: Some("test") },
                Status::InProgress,
                None,
                "Pipeline `default`: running step `test`",
            ),
            (
                CheckState::InProgress { step: None },
                Status::InProgress,
                None,
                "Pipeline `default` is running",
            ),
            (
                CheckState::AwaitingApproval(&approval),
                Status::Completed,
                Some(Conclusion::ActionRequired),
                "Step `review` waits for approval",
            ),
            (
                CheckState::Succeeded {
                    pull_request_url: Some("https://github.com/o/r/pull/3"),
                },
                Status::Completed,
                Some(Conclusion::Success),
                "Pipeline `default` passed (2 steps)",
            ),
            (
                CheckState::NoChanges,
                Status::Completed,
                Some(Conclusion::Success),
                "Pipeline `default` passed and changed no files",
            ),
            (
                CheckState::Failed(&failure),
                Status::Completed,
                Some(Conclusion::Failure),
                "Pipeline `default` failed: step `test` exited with 2",
            ),
            (
                CheckState::Rejected {
                    by: "bob",
                    reason: Some("not like this"),
                },
                Status::Completed,
                Some(Conclusion::Failure),
                "Pipeline `default` was rejected by @bob",
            ),
            (
                CheckState::Cancelled { by: Some("carol") },
                Status::Completed,
                Some(Conclusion::Cancelled),
                "Pipeline `default` was cancelled by @carol",
            ),
            (
                CheckState::Cancelled { by: None },
                Status::Completed,
                Some(Conclusion::Cancelled),
                "Pipeline `default` was cancelled",
            ),
            (
                CheckState::Interrupted,
                Status::Completed,
                Some(Conclusion::Cancelled),
                "Pipeline `default` was interrupted",
            ),
        ];
        for (state, status, conclusion, heading) in cases {
            let report = render("default", state, &steps);
            assert_eq!(
                (report.status, report.conclusion, report.title.as_str()),
                (status, conclusion, heading),
                "{state:?}"
            );
            assert_fits_github(&report);
            let has_buttons = matches!(state, CheckState::AwaitingApproval(_));
            assert_eq!(!report.buttons.is_empty(), has_buttons, "{state:?}");
        }
    }

    #[test]
    fn an_approval_shows_its_context_and_the_two_buttons() {
        let steps = [step("implement", Some(0))];
        let files = [ChangedFile {
            path: ".github/workflows/ci.yml".into(),
            status: FileStatus::Modified,
            lines_added: Some(1),
            lines_deleted: Some(1),
        }];
        let approval = context(&files, &steps);
        let report = render("default", CheckState::AwaitingApproval(&approval), &[]);
        assert_eq!(
            report.buttons,
            [
                Button {
                    identifier: "approve".into(),
                    label: "Approve".into(),
                    description: "Let the run go on from this commit".into(),
                },
                Button {
                    identifier: "reject".into(),
                    label: "Reject".into(),
                    description: "End the run here, as failed".into(),
                },
            ]
        );
        assert_eq!(report.buttons[0].identifier, APPROVE);
        assert_eq!(report.buttons[1].identifier, REJECT);
        for part in [
            "> Look at the API.",
            "Changes GitHub Actions workflows",
            "| `implement` | ✅ passed |",
            "except @alice who started the run",
            "commit `abc123`",
        ] {
            assert!(report.summary.contains(part), "{part}: {}", report.summary);
        }
    }

    #[test]
    fn endings_say_what_happened_and_show_the_steps() {
        let steps = [step("build", Some(0)), step("test", Some(1))];
        let tail = "error: ```fence``` broke\nlast line".to_owned();
        let failed_step = Failure::Step {
            name: "test".into(),
            exit_code: Some(1),
            timed_out: false,
            tail,
        };
        let report = render("default", CheckState::Failed(&failed_step), &steps);
        assert!(
            report
                .summary
                .starts_with("Step `test` exited with code 1; nothing was pushed."),
            "{}",
            report.summary
        );
        assert!(report.summary.contains("| `test` | ❌ exit 1 |"));
        assert_eq!(
            report.text.as_deref(),
            Some("#### Last lines of `test`\n\n````\nerror: ```fence``` broke\nlast line\n````\n")
        );

        let cases: [(CheckState, &str); 7] = [
            (
                CheckState::Succeeded {
                    pull_request_url: Some("https://github.com/o/r/pull/3"),
                },
                "Pipeline `default` passed; the changes are in https://github.com/o/r/pull/3.",
            ),
            (
                CheckState::Failed(&Failure::Definition("`x` is wrong".into())),
                "The pipeline definition needs fixing:\n\n`x` is wrong",
            ),
            (
                CheckState::Failed(&Failure::Protected(vec!["CODEOWNERS".into()])),
                "The run changed protected paths, so nothing was pushed:\n\n- `CODEOWNERS`\n",
            ),
            (
                CheckState::Failed(&Failure::Push("push refused".into())),
                "Conveyor could not finish the run; this is not the repository's doing:\n\n```\npush refused\n```",
            ),
            (
                CheckState::Rejected {
                    by: "bob",
                    reason: Some("wrong approach\nuse the builder"),
                },
                "@bob rejected the run at its approval, so it ended here.\n\n> wrong approach\n> use the builder\n",
            ),
            (
                CheckState::Cancelled { by: Some("carol") },
                "@carol cancelled pipeline `default`; it ran no further.",
            ),
            (CheckState::Interrupted, "The task may run again"),
        ];
        for (state, expected) in cases {
            let report = render("default", state, &steps);
            assert!(
                report.summary.contains(expected),
                "{expected:?}: {}",
                report.summary
            );
            assert!(
                report.summary.contains("| `build` | ✅ passed |"),
                "{state:?}"
            );
            assert_eq!(report.text, None, "{state:?}");
        }
    }

    #[test]
    fn wire_names_are_githubs() {
        let statuses = [
            (Status::Queued, "queued"),
            (Status::InProgress, "in_progress"),
            (Status::Completed, "completed"),
        ];
        for (status, name) in statuses {
            assert_eq!(status.as_str(), name);
        }
        let conclusions = [
            (Conclusion::Success, "success"),
            (Conclusion::Failure, "failure"),
            (Conclusion::Cancelled, "cancelled"),
            (Conclusion::ActionRequired, "action_required"),
            (Conclusion::Neutral, "neutral"),
        ];
        for (conclusion, name) in conclusions {
            assert_eq!(conclusion.as_str(), name);
        }
        assert_eq!((NAME, APPROVE, REJECT), ("conveyor", "approve", "reject"));
    }
}
