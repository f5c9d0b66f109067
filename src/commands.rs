//! Slash commands in issue and pull-request comments: comment text in, commands out.
//!
//! A command is a line of a paragraph or list item that starts with `/conveyor`. The comment
//! is read as markdown, the way GitHub shows it, so that a command someone quotes, shows in
//! code or hides in an HTML comment never runs.

use std::ops::Range;

use pulldown_cmark::{Event, Parser, Tag};

pub const PREFIX: &str = "/conveyor";

/// Pipeline names longer than this are refused: a name is a YAML key, not a paragraph.
const PIPELINE_NAME_MAX_CHARS: usize = 100;

/// The longest budget `timeout=` may ask for, as a pipeline's `timeout_minutes` may: a day.
const TIMEOUT_MAX_MINUTES: u32 = 24 * 60;

/// Text quoted back to the user in an error is cut to this many characters.
const QUOTE_MAX_CHARS: usize = 60;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Run {
        pipeline: Option<String>,
        /// `timeout=30m`: a budget for the run below its pipeline's `timeout_minutes`.
        timeout_minutes: Option<u32>,
    },
    Retry {
        step: Option<String>,
    },
    Cancel,
    Approve,
    Reject {
        reason: Option<String>,
    },
    Status,
    Help,
}

impl Command {
    /// The word that names the command after `/conveyor`.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Run { .. } => "run",
            Command::Retry { .. } => "retry",
            Command::Cancel => "cancel",
            Command::Approve => "approve",
            Command::Reject { .. } => "reject",
            Command::Status => "status",
            Command::Help => "help",
        }
    }
}

/// A line that starts with `/conveyor` but is no valid command. Displays as a sentence for
/// the person who wrote it; whatever it quotes of their text is in a code span, so that a
/// reply never mentions anyone or renders their markup.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The word after `/conveyor`, as written.
    #[error("Unknown command {}.", code(.0))]
    UnknownCommand(String),
    #[error("`/conveyor` needs a command after it, such as `/conveyor help`.")]
    MissingCommand,
    /// `argument` is everything from the first word the command does not take.
    #[error(
        "`/conveyor {command}` takes {}; remove {}.",
        arguments_taken(command),
        code(argument)
    )]
    UnexpectedArgument {
        command: &'static str,
        argument: String,
    },
    #[error(
        "{} is not a pipeline name: a name has at most {PIPELINE_NAME_MAX_CHARS} letters, digits, `-`, `_` and `.`.",
        code(.0)
    )]
    InvalidPipelineName(String),
    #[error(
        "{} is not a time limit: write minutes or hours, such as `timeout=30m`, `timeout=2h` or `timeout=1h30m`, up to `timeout=24h`.",
        code(.0)
    )]
    InvalidTimeout(String),
    #[error(
        "{} is not a step name: put a name with spaces in double quotes, such as `/conveyor retry \"run tests\"`.",
        code(.0)
    )]
    InvalidStepName(String),
}

/// Every command in `comment`, in order, each as the command or why its line is not one.
pub fn parse(comment: &str) -> Vec<Result<Command, ParseError>> {
    command_lines(comment)
        .into_iter()
        .map(parse_command)
        .collect()
}

/// What follows `/conveyor` on each line that is a command, up to the end of that line.
///
/// Lines are found among markdown events rather than in the raw text, so that text inside
/// block quotes, code blocks, HTML, headings, links and images is skipped, and a line counts
/// only when its first inline is plain text (not inline code or emphasis).
fn command_lines(comment: &str) -> Vec<&str> {
    let mut lines: Vec<Range<usize>> = Vec::new();
    // One entry per open tag: whether it hides its content from command parsing.
    let mut open: Vec<bool> = Vec::new();
    let mut hiding = 0usize;
    let mut at_line_start = false;
    for (event, range) in Parser::new(comment).into_offset_iter() {
        match event {
            Event::Start(tag) => {
                let hides = hides_commands(&tag);
                hiding += usize::from(hides);
                open.push(hides);
                at_line_start = matches!(tag, Tag::Paragraph | Tag::Item);
            }
            Event::End(_) => {
                if open.pop() == Some(true) {
                    hiding -= 1;
                }
                at_line_start = false;
            }
            Event::SoftBreak | Event::HardBreak => {
                // A hard break's markup (a trailing backslash or spaces) is no argument.
                if let Some(line) = lines.last_mut()
                    && line.contains(&range.start)
                {
                    line.end = range.start;
                }
                at_line_start = true;
            }
            Event::Text(_) if at_line_start && hiding == 0 => {
                // The source, not the event's text: arguments keep what markdown would
                // change (escapes, emphasis), and an encoded prefix is no command.
                if let Some(rest) = after_prefix(comment, range.start) {
                    lines.push(rest);
                }
                at_line_start = false;
            }
            _ => at_line_start = false,
        }
    }
    lines.into_iter().map(|line| &comment[line]).collect()
}

fn hides_commands(tag: &Tag) -> bool {
    matches!(
        tag,
        Tag::BlockQuote(_)
            | Tag::CodeBlock(_)
            | Tag::HtmlBlock
            | Tag::Heading { .. }
            | Tag::Link { .. }
            | Tag::Image { .. }
    )
}

/// Where the text after the prefix lies, when the source line from `start` begins with the
/// prefix as a word of its own; it ends with the line.
fn after_prefix(comment: &str, start: usize) -> Option<Range<usize>> {
    let line = &comment[start..];
    let line = line.split('\n').next().unwrap_or(line);
    let line = line.strip_suffix('\r').unwrap_or(line);
    let head = line.get(..PREFIX.len())?;
    let rest = &line[PREFIX.len()..];
    let word_ends = rest.chars().next().is_none_or(char::is_whitespace);
    (head.eq_ignore_ascii_case(PREFIX) && word_ends)
        .then_some(start + PREFIX.len()..start + line.len())
}

fn parse_command(line: &str) -> Result<Command, ParseError> {
    let line = line.trim();
    let Some(word) = line.split_whitespace().next() else {
        return Err(ParseError::MissingCommand);
    };
    let arguments = line[word.len()..].trim_start();
    let command = match word.to_ascii_lowercase().as_str() {
        "run" => run_command(arguments)?,
        "retry" => Command::Retry {
            step: step_name(arguments)?,
        },
        "reject" => Command::Reject {
            reason: (!arguments.is_empty()).then(|| arguments.to_owned()),
        },
        "cancel" => no_arguments(Command::Cancel, arguments)?,
        "approve" => no_arguments(Command::Approve, arguments)?,
        "status" => no_arguments(Command::Status, arguments)?,
        "help" => no_arguments(Command::Help, arguments)?,
        _ => return Err(ParseError::UnknownCommand(word.to_owned())),
    };
    Ok(command)
}

/// `run [pipeline] [timeout=…]`, in either order.
fn run_command(arguments: &str) -> Result<Command, ParseError> {
    let (mut pipeline, mut timeout_minutes) = (None, None);
    let mut rest = arguments;
    while let Some(word) = rest.split_whitespace().next() {
        let unexpected = || ParseError::UnexpectedArgument {
            command: "run",
            argument: rest.to_owned(),
        };
        match word.split_once('=') {
            Some((key, value)) if key.eq_ignore_ascii_case("timeout") => {
                if timeout_minutes.is_some() {
                    return Err(unexpected());
                }
                timeout_minutes = Some(
                    minutes(value).ok_or_else(|| ParseError::InvalidTimeout(word.to_owned()))?,
                );
            }
            _ if pipeline.is_some() => return Err(unexpected()),
            _ => pipeline = Some(word),
        }
        rest = rest[word.len()..].trim_start();
    }
    Ok(Command::Run {
        pipeline: pipeline.map(pipeline_name).transpose()?,
        timeout_minutes,
    })
}

/// `30m`, `2h` or `1h30m` in minutes, when it is from a minute to a day.
fn minutes(value: &str) -> Option<u32> {
    let lower = value.to_ascii_lowercase();
    let (hours, rest) = match lower.split_once('h') {
        Some((hours, rest)) => (hours.parse::<u32>().ok()?, rest),
        None => (0, lower.as_str()),
    };
    let minutes = match rest {
        "" if lower.contains('h') => 0,
        rest => rest
            .strip_suffix('m')
            .filter(|digits| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))?
            .parse::<u32>()
            .ok()?,
    };
    let total = hours.checked_mul(60)?.checked_add(minutes)?;
    (1..=TIMEOUT_MAX_MINUTES).contains(&total).then_some(total)
}

/// The step `retry` names: one word, or a name with spaces in double quotes
/// (`"run tests"`); `arguments` is trimmed.
fn step_name(arguments: &str) -> Result<Option<String>, ParseError> {
    let Some(quoted) = arguments.strip_prefix('"') else {
        return Ok(at_most_one("retry", arguments)?.map(str::to_owned));
    };
    let Some((name, rest)) = quoted.split_once('"') else {
        return Err(ParseError::InvalidStepName(arguments.to_owned()));
    };
    let rest = rest.trim_start();
    if !rest.is_empty() {
        return Err(ParseError::UnexpectedArgument {
            command: "retry",
            argument: rest.to_owned(),
        });
    }
    match name.trim() {
        "" => Err(ParseError::InvalidStepName(arguments.to_owned())),
        name => Ok(Some(name.to_owned())),
    }
}

/// The single word in `arguments`, if any; `arguments` is trimmed.
fn at_most_one<'a>(
    command: &'static str,
    arguments: &'a str,
) -> Result<Option<&'a str>, ParseError> {
    let Some(first) = arguments.split_whitespace().next() else {
        return Ok(None);
    };
    let extra = arguments[first.len()..].trim_start();
    if extra.is_empty() {
        Ok(Some(first))
    } else {
        Err(ParseError::UnexpectedArgument {
            command,
            argument: extra.to_owned(),
        })
    }
}

fn no_arguments(command: Command, arguments: &str) -> Result<Command, ParseError> {
    if arguments.is_empty() {
        Ok(command)
    } else {
        Err(ParseError::UnexpectedArgument {
            command: command.name(),
            argument: arguments.to_owned(),
        })
    }
}

/// `name` when it can be a key under `pipelines:`; the set is kept to plain ASCII so that
/// a name quoted back in a report or a log reads as what it is.
fn pipeline_name(name: &str) -> Result<String, ParseError> {
    let valid = name.len() <= PIPELINE_NAME_MAX_CHARS
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if valid {
        Ok(name.to_owned())
    } else {
        Err(ParseError::InvalidPipelineName(name.to_owned()))
    }
}

fn arguments_taken(command: &str) -> &'static str {
    match command {
        "run" => "one pipeline name and one `timeout=…` at most",
        "retry" => "one step name at most (in double quotes if it has spaces)",
        _ => "no arguments",
    }
}

/// `text` as a markdown code span whatever it holds (backticks included), cut to
/// [`QUOTE_MAX_CHARS`].
pub fn code(full: &str) -> String {
    let mut text: String = full.chars().take(QUOTE_MAX_CHARS).collect();
    if text.len() < full.len() {
        text.push('…');
    }
    // A span's fence must be longer than any run of backticks inside it, and a space keeps a
    // backtick at either end from joining the fence.
    let longest_run = text.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    let fence = "`".repeat(longest_run + 1);
    let pad = if text.starts_with('`') || text.ends_with('`') {
        " "
    } else {
        ""
    };
    format!("{fence}{pad}{text}{pad}{fence}")
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use Command::*;
    use ParseError::*;

    fn run(pipeline: &str) -> Result<Command, ParseError> {
        Ok(Run {
            pipeline: Some(pipeline.to_owned()),
            timeout_minutes: None,
        })
    }

    fn run_within(pipeline: Option<&str>, minutes: u32) -> Result<Command, ParseError> {
        Ok(Run {
            pipeline: pipeline.map(str::to_owned),
            timeout_minutes: Some(minutes),
        })
    }

    const RUN: Command = Run {
        pipeline: None,
        timeout_minutes: None,
    };

    fn unexpected(command: &'static str, argument: &str) -> Result<Command, ParseError> {
        Err(UnexpectedArgument {
            command,
            argument: argument.to_owned(),
        })
    }

    #[test]
    fn comments_to_commands() {
        let cases: Vec<(&str, Vec<Result<Command, ParseError>>)> = vec![
            // Each command, bare and with arguments.
            ("/conveyor run", vec![Ok(RUN)]),
            (
                "/conveyor run nightly-build_2.x",
                vec![run("nightly-build_2.x")],
            ),
            ("/conveyor retry", vec![Ok(Retry { step: None })]),
            (
                "/conveyor retry Verify",
                vec![Ok(Retry {
                    step: Some("Verify".into()),
                })],
            ),
            ("/conveyor cancel", vec![Ok(Cancel)]),
            ("/conveyor approve", vec![Ok(Approve)]),
            ("/conveyor reject", vec![Ok(Reject { reason: None })]),
            (
                "/conveyor reject   Too risky: touches  CI.  ",
                vec![Ok(Reject {
                    reason: Some("Too risky: touches  CI.".into()),
                })],
            ),
            ("/conveyor status", vec![Ok(Status)]),
            ("/conveyor help", vec![Ok(Help)]),
            // Case: prefix and command word fold, arguments keep theirs.
            ("/CONVEYOR Run Nightly", vec![run("Nightly")]),
            ("/Conveyor APPROVE", vec![Ok(Approve)]),
            // Spacing: leading spaces, tabs, trailing spaces.
            ("   /conveyor\tstatus  ", vec![Ok(Status)]),
            // Errors.
            ("/conveyor", vec![Err(MissingCommand)]),
            ("/conveyor   ", vec![Err(MissingCommand)]),
            (
                "/conveyor deploy now",
                vec![Err(UnknownCommand("deploy".into()))],
            ),
            (
                "/conveyor Deploy",
                vec![Err(UnknownCommand("Deploy".into()))],
            ),
            (
                "/conveyor cancel it now",
                vec![unexpected("cancel", "it now")],
            ),
            (
                "/conveyor approve please",
                vec![unexpected("approve", "please")],
            ),
            ("/conveyor status x", vec![unexpected("status", "x")]),
            ("/conveyor help me", vec![unexpected("help", "me")]),
            ("/conveyor run a b", vec![unexpected("run", "b")]),
            // A budget for the run, before or after the pipeline's name.
            (
                "/conveyor run docs timeout=30m",
                vec![run_within(Some("docs"), 30)],
            ),
            ("/conveyor run TIMEOUT=2H", vec![run_within(None, 120)]),
            (
                "/conveyor run timeout=1h30m fix",
                vec![run_within(Some("fix"), 90)],
            ),
            ("/conveyor run timeout=24h", vec![run_within(None, 1440)]),
            (
                "/conveyor run timeout=30",
                vec![Err(InvalidTimeout("timeout=30".into()))],
            ),
            (
                "/conveyor run timeout=0m",
                vec![Err(InvalidTimeout("timeout=0m".into()))],
            ),
            (
                "/conveyor run timeout=25h",
                vec![Err(InvalidTimeout("timeout=25h".into()))],
            ),
            (
                "/conveyor run timeout=h",
                vec![Err(InvalidTimeout("timeout=h".into()))],
            ),
            (
                "/conveyor run timeout=1h-5m",
                vec![Err(InvalidTimeout("timeout=1h-5m".into()))],
            ),
            (
                "/conveyor run timeout=99999999999h",
                vec![Err(InvalidTimeout("timeout=99999999999h".into()))],
            ),
            (
                "/conveyor run a timeout=5m timeout=6m",
                vec![unexpected("run", "timeout=6m")],
            ),
            ("/conveyor run a timeout=5m b", vec![unexpected("run", "b")]),
            ("/conveyor retry a b  c", vec![unexpected("retry", "b  c")]),
            (
                "/conveyor run `rm -rf`",
                vec![Err(UnexpectedArgument {
                    command: "run",
                    argument: "-rf`".into(),
                })],
            ),
            (
                "/conveyor run ../etc",
                vec![Err(InvalidPipelineName("../etc".into()))],
            ),
            (
                "/conveyor run déploiement",
                vec![Err(InvalidPipelineName("déploiement".into()))],
            ),
            // Not commands: another word, text before, no prefix at all.
            ("/conveyorx run", vec![]),
            ("/conveyor-run", vec![]),
            ("please /conveyor run", vec![]),
            ("conveyor run", vec![]),
            ("", vec![]),
            ("   \n\n", vec![]),
            // Several commands, in order, with text around them.
            (
                "Looks good.\n/conveyor approve\nthen\n/conveyor run docs\n\n/conveyor status",
                vec![Ok(Approve), run("docs"), Ok(Status)],
            ),
            (
                "/conveyor bogus\n/conveyor help",
                vec![Err(UnknownCommand("bogus".into())), Ok(Help)],
            ),
            // CRLF line endings, as browsers send them.
            (
                "Hi\r\n/conveyor reject not now\r\n/conveyor cancel\r\n",
                vec![
                    Ok(Reject {
                        reason: Some("not now".into()),
                    }),
                    Ok(Cancel),
                ],
            ),
            // Hard line breaks: two trailing spaces and a backslash.
            (
                "first  \n/conveyor status\\\n/conveyor help",
                vec![Ok(Status), Ok(Help)],
            ),
            // Fenced code, with backticks and tildes, closed or not.
            ("```\n/conveyor run\n```", vec![]),
            ("~~~sh\n/conveyor run\n~~~\n/conveyor help", vec![Ok(Help)]),
            ("```\n/conveyor run\n", vec![]),
            // Indented code; but an indented line continuing a paragraph is text.
            ("    /conveyor run", vec![]),
            ("\n\n\t/conveyor run", vec![]),
            ("text\n    /conveyor status", vec![Ok(Status)]),
            // Inline code.
            ("`/conveyor run`", vec![]),
            ("Type `/conveyor approve` to approve.", vec![]),
            ("``\n/conveyor run``", vec![]),
            // Quotes, a lazy continuation of one, and a quote in a list.
            ("> /conveyor run", vec![]),
            (
                "> said:\n> /conveyor approve\n\n/conveyor status",
                vec![Ok(Status)],
            ),
            ("> quoted\n/conveyor run", vec![]),
            ("- > /conveyor run", vec![]),
            // HTML comments, as a block and inline across lines.
            ("<!--\n/conveyor run\n-->", vec![]),
            ("<!-- /conveyor run -->", vec![]),
            ("note <!--\n/conveyor run\n--> done", vec![]),
            // Lists, nested, tight and loose, bullets and numbers.
            ("- /conveyor run", vec![Ok(RUN)]),
            (
                "* first\n  * /conveyor retry build\n    /conveyor status\n1. /conveyor help",
                vec![
                    Ok(Retry {
                        step: Some("build".into()),
                    }),
                    Ok(Status),
                    Ok(Help),
                ],
            ),
            ("1. item\n\n   /conveyor cancel\n", vec![Ok(Cancel)]),
            // Headings, links, emphasis: not a plain line of text.
            ("# /conveyor run", vec![]),
            ("Title\n/conveyor run\n=====", vec![]),
            ("[/conveyor run](https://example.com)", vec![]),
            ("[see\n/conveyor run](https://example.com)", vec![]),
            ("**/conveyor run**", vec![]),
            // An escaped slash shows as the prefix; an encoded one is not the prefix as typed.
            ("\\/conveyor run", vec![Ok(RUN)]),
            ("&#47;conveyor run", vec![]),
            // Markup after the command word belongs to the arguments as written.
            (
                "/conveyor reject it\\_s *not* ready <b>yet</b>",
                vec![Ok(Reject {
                    reason: Some("it\\_s *not* ready <b>yet</b>".into()),
                })],
            ),
            // Unicode in the text, the arguments and as whitespace.
            (
                "Merci 🙏\n/conveyor reject ça casse l’API 💥",
                vec![Ok(Reject {
                    reason: Some("ça casse l’API 💥".into()),
                })],
            ),
            ("/conveyor\u{a0}status", vec![Ok(Status)]),
            (
                "/conveyor retry étape",
                vec![Ok(Retry {
                    step: Some("étape".into()),
                })],
            ),
            (
                "/conveyor retry \"run the tests\"",
                vec![Ok(Retry {
                    step: Some("run the tests".into()),
                })],
            ),
            (
                "/conveyor retry \"run the tests",
                vec![Err(ParseError::InvalidStepName("\"run the tests".into()))],
            ),
            (
                "/conveyor retry \" \"",
                vec![Err(ParseError::InvalidStepName("\" \"".into()))],
            ),
            (
                "/conveyor retry \"lint\" now",
                vec![unexpected("retry", "now")],
            ),
            ("/conveyoré run", vec![]),
            ("/conveyo", vec![]),
        ];
        for (comment, expected) in cases {
            assert_eq!(parse(comment), expected, "comment: {comment:?}");
        }
    }

    #[test]
    fn every_command_parses_back_from_its_name() {
        for command in [
            RUN,
            Retry { step: None },
            Cancel,
            Approve,
            Reject { reason: None },
            Status,
            Help,
        ] {
            assert_eq!(
                parse(&format!("{PREFIX} {}", command.name())),
                [Ok(command)]
            );
        }
    }

    #[test]
    fn a_long_pipeline_name_is_refused() {
        let longest = "p".repeat(PIPELINE_NAME_MAX_CHARS);
        assert_eq!(parse(&format!("/conveyor run {longest}")), [run(&longest)]);
        let over = format!("{longest}p");
        assert_eq!(
            parse(&format!("/conveyor run {over}")),
            [Err(InvalidPipelineName(over))]
        );
    }

    #[test]
    fn errors_read_as_sentences_that_quote_safely() {
        let cases = [
            (UnknownCommand("deploy".into()), "Unknown command `deploy`."),
            (
                MissingCommand,
                "`/conveyor` needs a command after it, such as `/conveyor help`.",
            ),
            (
                UnexpectedArgument {
                    command: "approve",
                    argument: "now please".into(),
                },
                "`/conveyor approve` takes no arguments; remove `now please`.",
            ),
            (
                UnexpectedArgument {
                    command: "run",
                    argument: "b".into(),
                },
                "`/conveyor run` takes one pipeline name and one `timeout=…` at most; remove `b`.",
            ),
            (
                InvalidPipelineName("a/b".into()),
                "`a/b` is not a pipeline name: a name has at most 100 letters, digits, `-`, `_` and `.`.",
            ),
            // Backticks inside get a longer fence, so a mention cannot escape the span.
            (
                UnknownCommand("x`@octocat".into()),
                "Unknown command ``x`@octocat``.",
            ),
            (UnknownCommand("``a".into()), "Unknown command ``` ``a ```."),
            (
                UnknownCommand("ü".repeat(200)),
                &format!("Unknown command `{}…`.", "ü".repeat(QUOTE_MAX_CHARS)),
            ),
        ];
        for (error, text) in cases {
            assert_eq!(error.to_string(), text);
        }
    }

    #[test]
    fn large_comments_parse_quickly() {
        /// `unit` repeated to GitHub's largest comment, 64 KiB.
        fn fill(unit: &str) -> String {
            unit.repeat(65_536 / unit.len())
        }
        // A debug build parses 64 KiB in milliseconds; the bound only catches a blow-up.
        let limit = Duration::from_secs(2);
        let unit = "/conveyor status\nSome text with `code` and *emphasis*.\n\n";
        let commands = fill(unit);
        let hostile = [
            fill("> "),
            fill("- "),
            fill("["),
            fill("`"),
            fill("*a "),
            fill("<!--"),
            fill("/conveyor run\n"),
            format!("/conveyor reject {}", fill("x")),
        ];
        let started = Instant::now();
        let parsed = parse(&commands);
        assert!(started.elapsed() < limit);
        assert_eq!(parsed.len(), 65_536 / unit.len());
        assert!(parsed.iter().all(|c| c == &Ok(Status)));
        for comment in &hostile {
            let started = Instant::now();
            parse(comment);
            assert!(started.elapsed() < limit, "{:?}…", &comment[..20]);
        }
    }
}
