//! Short replies to comment commands: the list of commands, a refusal, a line Conveyor
//! could not read as a command.

use crate::commands::{PREFIX, ParseError, code};
use crate::text_bounds::github_body;

/// Starts every reply, so Conveyor can tell its own replies from people's comments.
pub const MARKER: &str = "<!-- conveyor:reply -->";

/// Each command as typed and what it does, in the order `help` lists them.
const COMMANDS: [(&str, &str); 7] = [
    (
        "run [pipeline] [timeout=30m]",
        "start `pipeline` for this issue, or on this pull request's branch; without a name, the one `task_types` gives this issue's labels, else `default`; `timeout=` lowers the run's time budget",
    ),
    (
        "retry [step]",
        "run the latest task here again as a new run; with a `step` that declares `retryable: true`, a failed run starts again at that step, on the work its steps had left",
    ),
    ("cancel", "cancel the task queued or running here"),
    (
        "approve",
        "approve the run waiting for approval here, as the check run's **Approve** button does",
    ),
    (
        "reject [reason]",
        "reject that run, with an optional reason, as the **Reject** button does",
    ),
    ("status", "refresh the status comment"),
    ("help", "show this list"),
];

/// The commands, one line each; with `unknown`, it first says that word is no command.
pub fn help(unknown: Option<&str>) -> String {
    let mut body = format!("{MARKER}\n");
    if let Some(word) = unknown {
        body.push_str(&ParseError::UnknownCommand(word.to_owned()).to_string());
        body.push(' ');
    }
    body.push_str(
        "**Conveyor** takes these commands at the start of a line in an issue or pull request comment:\n\n",
    );
    for (usage, what) in COMMANDS {
        body.push_str(&format!("- `{PREFIX} {usage}`: {what}\n"));
    }
    body.push_str(
        "\n`run`, `retry`, `cancel`, `approve` and `reject` need the repository's approver permission \
         (`write` unless `.github/conveyor.yml` sets `settings.approver_permission`). \
         While a run waits for approval, its `conveyor` check run also has **Approve** and **Reject** buttons. \
         Commands in code, quotes and HTML comments are ignored.\n",
    );
    github_body(&body)
}

/// Why `command` (a [`crate::commands::Command::name`]) was not carried out, in one reply;
/// `reason` is a sentence of Conveyor's own.
pub fn refused(command: &str, reason: &str) -> String {
    github_body(&format!(
        "{MARKER}\n🚫 `{PREFIX} {command}` was not carried out: {reason}\n"
    ))
}

/// Why a comment meant as the answer to a run's questions was not taken.
pub fn answer_refused(reason: &str) -> String {
    github_body(&format!(
        "{MARKER}\n🚫 This comment was not taken as the answer: {reason}.\n"
    ))
}

/// Why adding the label `label` started nothing; `reason` is a sentence of Conveyor's own.
pub fn label_refused(label: &str, reason: &str) -> String {
    github_body(&format!(
        "{MARKER}\n🚫 The label {} started nothing: {reason}\n",
        code(label)
    ))
}

/// What was wrong with a command line; an unknown command gets the list of commands.
pub fn parse_error(err: &ParseError) -> String {
    match err {
        ParseError::UnknownCommand(word) => help(Some(word)),
        _ => github_body(&format!(
            "{MARKER}\n{err} Comment `{PREFIX} help` for the list of commands.\n"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::Command;
    use crate::text_bounds::GITHUB_BODY_MAX;

    /// The reply without its marker line.
    fn text(reply: &str) -> &str {
        reply
            .strip_prefix(MARKER)
            .and_then(|rest| rest.strip_prefix('\n'))
            .unwrap_or_else(|| panic!("no marker line: {reply}"))
    }

    #[test]
    fn help_lists_every_command_and_the_buttons() {
        let help = help(None);
        let text = text(&help);
        assert!(
            text.starts_with("**Conveyor** takes these commands"),
            "{text}"
        );
        for command in [
            Command::Run {
                pipeline: None,
                timeout_minutes: None,
            },
            Command::Retry { step: None },
            Command::Cancel,
            Command::Approve,
            Command::Reject { reason: None },
            Command::Status,
            Command::Help,
        ] {
            let line = format!("- `/conveyor {}", command.name());
            assert_eq!(text.matches(&line).count(), 1, "{line} in {text}");
        }
        assert!(text.contains("check run also has **Approve** and **Reject** buttons"));
        assert!(text.contains("`settings.approver_permission`"));
    }

    #[test]
    fn help_for_an_unknown_command_names_it_first() {
        let reply = help(Some("deploy"));
        let body = text(&reply);
        assert!(
            body.starts_with("Unknown command `deploy`. **Conveyor** takes"),
            "{body}"
        );
        assert!(body.contains("- `/conveyor status`"));
        // A word that tries to leave its code span stays inside a longer one.
        let reply = help(Some("`@octocat"));
        assert!(text(&reply).starts_with("Unknown command `` `@octocat ``."));
    }

    #[test]
    fn a_refusal_names_the_command_and_the_reason() {
        let reply = refused(
            "approve",
            "approving needs write permission on acme/widgets.",
        );
        assert_eq!(
            text(&reply),
            "🚫 `/conveyor approve` was not carried out: approving needs write permission on acme/widgets.\n"
        );
    }

    #[test]
    fn parse_errors_explain_and_point_at_help() {
        let missing = parse_error(&ParseError::MissingCommand);
        assert_eq!(
            text(&missing),
            "`/conveyor` needs a command after it, such as `/conveyor help`. Comment `/conveyor help` for the list of commands.\n"
        );
        let extra = parse_error(&ParseError::UnexpectedArgument {
            command: "cancel",
            argument: "now".into(),
        });
        assert!(text(&extra).starts_with("`/conveyor cancel` takes no arguments; remove `now`."));
        let pipeline = parse_error(&ParseError::InvalidPipelineName("a/b".into()));
        assert!(text(&pipeline).starts_with("`a/b` is not a pipeline name"));
        assert_eq!(
            parse_error(&ParseError::UnknownCommand("deploy".into())),
            help(Some("deploy"))
        );
    }

    #[test]
    fn replies_fit_a_comment_whatever_they_quote() {
        let huge = "x".repeat(100_000);
        for reply in [
            help(Some(&huge)),
            refused("reject", &huge),
            parse_error(&ParseError::UnexpectedArgument {
                command: "approve",
                argument: huge.clone(),
            }),
        ] {
            assert!(reply.starts_with(MARKER));
            assert!(reply.len() <= GITHUB_BODY_MAX, "{}", reply.len());
        }
    }
}
