//! The one status comment on the issue: posted when the task has waited a while or when
//! its run starts, and edited as the task goes on.

use std::time::Duration;

use super::{Failure, Interruption, Outcome, Questions, STEP_NAME_MAX_CHARS, steps_table};
use crate::pipeline::StepResult;
use crate::pipeline::definition::PIPELINE_FILE;
use crate::text_bounds::{self, github_body, quote_output};

/// Lines of a failed step's output quoted in the comment.
pub const TAIL_LINES: usize = 30;
/// Bytes of a failed step's output quoted: 30 lines of up to 1,000 characters, leaving room in
/// GitHub's 65,535 for the rest of the comment.
const TAIL_MAX_BYTES: usize = 32_000;
/// Bytes of an error message quoted (it may carry a tool's output, a git error say).
const MESSAGE_MAX_BYTES: usize = 8_000;

/// Marks the comment as Conveyor's, so it can be found again and never mistaken for a person's.
pub fn marker(task_id: i64) -> String {
    format!("<!-- conveyor:task:{task_id} -->")
}

pub fn started(task_id: i64, pipeline: &str, attempt: i32, steps: &[StepResult]) -> String {
    let mut body = format!(
        "{}\n🚧 **Conveyor** is running pipeline `{pipeline}` for this issue (task {task_id}, attempt {attempt}).\n\nThis comment will be updated when the run ends.\n",
        marker(task_id)
    );
    if !steps.is_empty() {
        body.push('\n');
        body.push_str(&steps_table(steps));
    }
    github_body(&body)
}

/// The task is queued and has not run yet; `reason` says why it waits.
pub fn waiting(task_id: i64, pipeline: &str, reason: &str) -> String {
    github_body(&format!(
        "{}\n⏳ **Conveyor** has queued pipeline `{pipeline}` for this issue (task {task_id}), {reason}.\n\nThis comment will be updated when the run starts.\n",
        marker(task_id)
    ))
}

/// The run waits at approval step `step` for the work on commit `head_sha`.
pub struct Gate<'a> {
    pub step: &'a str,
    pub message: Option<&'a str>,
    pub head_sha: &'a str,
    /// Who may approve, in words.
    pub approvers: &'a str,
}

pub fn awaiting_approval(
    task_id: i64,
    pipeline: &str,
    gate: &Gate,
    steps: &[StepResult],
) -> String {
    let mut body = format!(
        "{}\n✋ **Conveyor** pipeline `{pipeline}` waits for approval at step `{}` (task {task_id}), for commit {}.\n",
        marker(task_id),
        text_bounds::title(gate.step, STEP_NAME_MAX_CHARS),
        gate.head_sha,
    );
    if let Some(message) = gate.message {
        body.push_str(&format!(
            "\n> {}\n",
            quote_output(message, MESSAGE_MAX_BYTES).replace('\n', "\n> ")
        ));
    }
    body.push_str(&format!(
        "\nIt may be approved by {}: with the **Approve** button on the `conveyor` check run, or by commenting `/conveyor approve`. `/conveyor reject <reason>` or the **Reject** button ends the run.\n",
        gate.approvers
    ));
    if !steps.is_empty() {
        body.push('\n');
        body.push_str(&steps_table(steps));
    }
    github_body(&body)
}

/// The run waits for its requester to answer the questions a step asked.
pub fn awaiting_input(
    task_id: i64,
    pipeline: &str,
    questions: &Questions,
    steps: &[StepResult],
) -> String {
    let mut body = format!(
        "{}\n💬 **Conveyor** pipeline `{pipeline}` is waiting for your answer: step `{}` asked (task {task_id}).\n\n{}",
        marker(task_id),
        text_bounds::title(questions.step, STEP_NAME_MAX_CHARS),
        questions.markdown(),
    );
    if !steps.is_empty() {
        body.push('\n');
        body.push_str(&steps_table(steps));
    }
    github_body(&body)
}

/// The run's questions were answered; it goes on as soon as a worker is free.
pub fn answered(task_id: i64, pipeline: &str, steps: &[StepResult]) -> String {
    let mut body = format!(
        "{}\n▶️ **Conveyor** pipeline `{pipeline}` got its answer and goes on as soon as a worker is free (task {task_id}).\n",
        marker(task_id)
    );
    if !steps.is_empty() {
        body.push('\n');
        body.push_str(&steps_table(steps));
    }
    github_body(&body)
}

/// The run was approved and goes on as soon as a worker is free.
pub fn approved(task_id: i64, pipeline: &str, by: Option<&str>, steps: &[StepResult]) -> String {
    let by = by.map(|by| format!(" by @{by}")).unwrap_or_default();
    let mut body = format!(
        "{}\n▶️ **Conveyor** pipeline `{pipeline}` was approved{by} and goes on as soon as a worker is free (task {task_id}).\n",
        marker(task_id)
    );
    if !steps.is_empty() {
        body.push('\n');
        body.push_str(&steps_table(steps));
    }
    github_body(&body)
}

/// Says that the run goes by another version of the pipeline file than run `earlier` on the
/// same issue did, so that a changed result is not put down to chance.
pub fn definition_changed(earlier: i64, sha: Option<&str>) -> String {
    let version = sha
        .map(|sha| format!(" as of commit {sha}"))
        .unwrap_or_default();
    format!(
        "\n📝 `{PIPELINE_FILE}` changed since run {earlier} on this issue: this run goes by the file{version}.\n"
    )
}

/// How the task's run ended; `retry_in` when it runs again after a wait, `requeued` when it
/// is back in the queue already.
#[allow(clippy::too_many_arguments)]
pub fn ended(
    task_id: i64,
    pipeline: &str,
    attempt: i32,
    outcome: &Outcome,
    pull_request_url: Option<&str>,
    steps: &[StepResult],
    retry_in: Option<Duration>,
    requeued: bool,
) -> String {
    let mut body = marker(task_id);
    body.push('\n');
    match outcome {
        Outcome::Proposed { branch, built_on } => {
            let place = match pull_request_url {
                Some(url) => format!("the changes are in {url} (branch `{branch}`)"),
                None => format!("the changes are on branch `{branch}`; the pull request is being opened"),
            };
            body.push_str(&format!(
                "✅ **Conveyor** finished pipeline `{pipeline}`: {place}.\n"
            ));
            if let Some(commit) = built_on {
                body.push_str(&format!(
                    "\n↪️ Someone else had pushed to `{branch}`: this run built on their commit {commit} and kept it.\n"
                ));
            }
        }
        Outcome::NoChanges => body.push_str(&format!(
            "✅ **Conveyor** finished pipeline `{pipeline}`; the steps changed no files, so there is nothing to propose.\n"
        )),
        Outcome::Failed(Failure::Step { name, exit_code, timed_out, tail }) => {
            let how = match (exit_code, timed_out) {
                (_, true) => "timed out".to_owned(),
                (Some(code), _) => format!("exited with code {code}"),
                (None, _) => "was killed or could not start".to_owned(),
            };
            body.push_str(&format!(
                "❌ **Conveyor** pipeline `{pipeline}` failed: step `{name}` {how}. Nothing was pushed.\n\n<details open><summary>Last lines of `{name}`</summary>\n\n```\n{}\n```\n</details>\n",
                fence_safe(&quote_output(tail, TAIL_MAX_BYTES))
            ));
        }
        Outcome::Failed(Failure::Definition(message)) => body.push_str(&format!(
            "❌ **Conveyor** could not run this task: the pipeline definition needs fixing.\n\n{}\n",
            quote_output(message, MESSAGE_MAX_BYTES)
        )),
        Outcome::Failed(Failure::Protected(paths)) => {
            let list: String = paths
                .iter()
                .map(|path| format!("- `{path}`\n"))
                .collect();
            body.push_str(&format!(
                "❌ **Conveyor** pipeline `{pipeline}` changed protected files, so nothing was pushed:\n\n{}\nA run may not change these unless the pipeline lists what it may touch in `protected_paths:`.\n",
                quote_output(&list, MESSAGE_MAX_BYTES)
            ));
        }
        Outcome::Failed(Failure::Budget { step, minutes }) => body.push_str(&format!(
            "❌ **Conveyor** pipeline `{pipeline}` ran out of its {minutes}-minute budget in step `{step}`, which was stopped there. Nothing was pushed.\n"
        )),
        Outcome::Failed(Failure::NoAnswer { step, reason }) => body.push_str(&format!(
            "❌ **Conveyor** pipeline `{pipeline}` stopped at step `{step}`: its questions got no answer ({}). Nothing was pushed.\n",
            quote_output(reason, MESSAGE_MAX_BYTES)
        )),
        Outcome::Failed(
            Failure::Clone(message)
            | Failure::Push(message)
            | Failure::GitHub(message)
            | Failure::Sandbox(message)
            | Failure::Lost(message),
        ) => body.push_str(&format!(
            "❌ **Conveyor** could not finish this task: {}\n",
            quote_output(message, MESSAGE_MAX_BYTES)
        )),
        Outcome::Rejected { by, reason } => {
            body.push_str(&format!(
                "🛑 **Conveyor** pipeline `{pipeline}` was rejected by @{by}; the run ended without going further.\n"
            ));
            if let Some(reason) = reason {
                body.push_str(&format!("\n> {}\n", quote_output(reason, MESSAGE_MAX_BYTES).replace('\n', "\n> ")));
            }
        }
        Outcome::Cancelled { by } => {
            let by = by.as_ref().map(|by| format!(" by @{by}")).unwrap_or_default();
            body.push_str(&format!(
                "⏹️ **Conveyor** stopped pipeline `{pipeline}`: the task was cancelled{by}.\n"
            ));
        }
        Outcome::Interrupted(why) => {
            let what = match why {
                Interruption::HandedBack => "its worker shut down",
                Interruption::Crashed => "its worker crashed",
                Interruption::Lost => "its worker stopped answering",
            };
            let next = if requeued {
                "the task is back in the queue for another attempt"
            } else if retry_in.is_some() {
                "the task will be tried again"
            } else {
                "the task has no attempts left"
            };
            body.push_str(&format!(
                "⚠️ **Conveyor** pipeline `{pipeline}` was interrupted (attempt {attempt}): {what}, and {next}.\n"
            ));
        }
    }
    if let Some(delay) = retry_in {
        body.push_str(&format!(
            "\n🔁 Conveyor will try again in about {}s.\n",
            delay.as_secs().max(1)
        ));
    }
    if !steps.is_empty() {
        body.push('\n');
        body.push_str(&steps_table(steps));
    }
    github_body(&body)
}

/// Output quoted inside a code fence must not close it.
fn fence_safe(text: &str) -> String {
    text.replace("```", "`\u{200b}``")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const PULL: &str = "https://github.com/o/r/pull/9";

    fn finished(
        task_id: i64,
        pipeline: &str,
        outcome: &Outcome,
        steps: &[StepResult],
        retry_in: Option<Duration>,
    ) -> String {
        ended(
            task_id,
            pipeline,
            1,
            outcome,
            Some(PULL),
            steps,
            retry_in,
            false,
        )
    }

    fn step(name: &str, exit_code: Option<i32>, output: &str) -> StepResult {
        StepResult {
            position: 0,
            name: name.into(),
            command: "x".into(),
            exit_code,
            duration: Duration::from_millis(1500),
            output: output.into(),
            timed_out: false,
            out_of_budget: false,
            attempts: 1,
        }
    }

    #[test]
    fn a_failed_step_is_named_with_its_output_tail() {
        let failed = step("verify", Some(2), "ok\n```\nboom\n");
        let outcome = Outcome::Failed(Failure::from_step(&failed));
        let body = finished(
            5,
            "default",
            &outcome,
            &[step("implement", Some(0), ""), failed],
            Some(Duration::from_secs(30)),
        );
        assert!(body.starts_with("<!-- conveyor:task:5 -->"));
        assert!(body.contains("step `verify` exited with code 2"), "{body}");
        assert!(body.contains("boom"));
        assert_eq!(
            body.matches("```").count(),
            2,
            "output must not break the fence: {body}"
        );
        assert!(
            body.contains("| `implement` | ✅ passed | 1.5s |"),
            "{body}"
        );
    }

    #[test]
    fn a_waiting_task_says_why_and_a_crash_says_whether_it_runs_again() {
        let body = waiting(4, "default", "waiting: repository limit 1/1");
        assert!(body.starts_with("<!-- conveyor:task:4 -->"));
        assert!(body.contains("waiting: repository limit 1/1"), "{body}");
        let crashed = Outcome::Interrupted(Interruption::Crashed);
        let requeued = ended(4, "default", 1, &crashed, None, &[], None, true);
        assert!(requeued.contains("back in the queue"), "{requeued}");
        let failed = ended(4, "default", 3, &crashed, None, &[], None, false);
        assert!(failed.contains("no attempts left"), "{failed}");
        assert!(failed.contains("attempt 3"), "{failed}");
    }

    fn within_githubs_limit(body: &str) {
        assert!(
            body.chars().count() <= 65_535,
            "{} characters",
            body.chars().count()
        );
        assert!(!body.contains('\0'));
    }

    #[test]
    fn every_body_fits_github_whatever_the_output_and_names() {
        let huge_line = format!("start {} end\0", "é😀x".repeat(30_000));
        let many_lines: String = (0..200_000).map(|i| format!("line {i}\n")).collect();
        // Lines short enough to stay whole, so the quote is cut among 4-byte characters.
        let at_the_cut = format!("a{}", format!("{}\n", "😀".repeat(999)).repeat(40));
        for output in [huge_line.as_str(), &many_lines, &at_the_cut, "\0\0\0"] {
            let failed = step("verify", Some(1), output);
            let outcome = Outcome::Failed(Failure::from_step(&failed));
            let body = finished(2, "default", &outcome, std::slice::from_ref(&failed), None);
            within_githubs_limit(&body);
            assert!(body.starts_with("<!-- conveyor:task:2 -->"), "{body}");
            assert!(body.contains("step `verify` exited with code 1"));
            assert_eq!(body.matches("```").count(), 2, "one fence, closed");
            assert!(
                body.contains("| `verify` | ❌ exit 1 |"),
                "the table is kept"
            );
        }
        let quoted = finished(
            2,
            "default",
            &Outcome::Failed(Failure::from_step(&step("verify", Some(1), &huge_line))),
            &[],
            None,
        );
        assert!(quoted.contains("start é😀x"), "{quoted}");
        assert!(quoted.contains("characters cut]"), "a long line is cut");

        let long = "n".repeat(100_000);
        let many_steps: Vec<StepResult> = (0..2_000)
            .map(|_| step(&long[..1_000], Some(0), ""))
            .collect();
        for outcome in [
            Outcome::Failed(Failure::Definition(long.clone())),
            Outcome::Failed(Failure::Clone(format!("git: {long}\0"))),
            Outcome::NoChanges,
        ] {
            let body = finished(
                3,
                &long,
                &outcome,
                &many_steps,
                Some(Duration::from_secs(5)),
            );
            within_githubs_limit(&body);
            assert!(body.starts_with("<!-- conveyor:task:3 -->"));
        }
        for body in [
            waiting(4, &long, &long),
            started(4, &long, 1, &many_steps),
            finished(
                4,
                &long,
                &Outcome::Cancelled {
                    by: Some(long.clone()),
                },
                &[],
                None,
            ),
            awaiting_approval(
                4,
                &long,
                &Gate {
                    step: &long,
                    message: Some(&long),
                    head_sha: "abc",
                    approvers: &long,
                },
                &many_steps,
            ),
            approved(4, &long, Some(&long), &many_steps),
            awaiting_input(
                4,
                &long,
                &Questions {
                    step: &long,
                    text: &long,
                    requester: Some(&long),
                },
                &many_steps,
            ),
            answered(4, &long, &many_steps),
        ] {
            within_githubs_limit(&body);
            assert!(body.starts_with("<!-- conveyor:task:4 -->"));
        }
    }

    #[test]
    fn questions_are_quoted_bounded_with_how_to_answer() {
        let questions = Questions {
            step: "plan",
            text: &format!("Which colour?\n{}", "more\n".repeat(10_000)),
            requester: Some("alice"),
        };
        let body = awaiting_input(5, "default", &questions, &[]);
        assert!(
            body.contains("waiting for your answer: step `plan` asked"),
            "{body}"
        );
        assert!(body.contains("> Which colour?\n> more\n"), "{body}");
        assert!(
            body.len() < 25_000,
            "the questions are bounded: {}",
            body.len()
        );
        assert!(
            body.contains("@alice, reply to this issue with a plain comment"),
            "{body}"
        );
        assert!(body.contains("`/conveyor cancel`"), "{body}");
    }

    #[test]
    fn success_links_the_pull_request() {
        let outcome = Outcome::Proposed {
            branch: "conveyor/1-x".into(),
            built_on: None,
        };
        let body = finished(1, "default", &outcome, &[], None);
        assert!(body.contains("https://github.com/o/r/pull/9"));
        assert!(body.contains("`conveyor/1-x`"));
        assert!(!body.contains("Someone else"), "{body}");
        let moved = Outcome::Proposed {
            branch: "conveyor/1-x".into(),
            built_on: Some("abc123".into()),
        };
        let body = finished(1, "default", &moved, &[], None);
        assert!(body.contains("built on their commit abc123"), "{body}");
        let opening = ended(1, "default", 1, &outcome, None, &[], None, false);
        assert!(
            opening.contains("pull request is being opened"),
            "{opening}"
        );
    }

    #[test]
    fn a_gate_says_who_may_approve_and_how_and_a_decision_names_its_person() {
        let gate = Gate {
            step: "review",
            message: Some("Check the change"),
            head_sha: "abc123",
            approvers: "anyone with write permission or more",
        };
        let body = awaiting_approval(7, "default", &gate, &[step("implement", Some(0), "")]);
        assert!(body.starts_with("<!-- conveyor:task:7 -->"), "{body}");
        for expected in [
            "step `review`",
            "commit abc123",
            "> Check the change",
            "anyone with write permission or more",
            "`/conveyor approve`",
            "**Approve** button",
            "| `implement` | ✅ passed |",
        ] {
            assert!(body.contains(expected), "{expected}: {body}");
        }
        let rejected = Outcome::Rejected {
            by: "carol".into(),
            reason: Some("too risky".into()),
        };
        let body = finished(7, "default", &rejected, &[], None);
        assert!(body.contains("rejected by @carol"), "{body}");
        assert!(body.contains("> too risky"), "{body}");
        let cancelled = Outcome::Cancelled {
            by: Some("dave".into()),
        };
        assert!(finished(7, "default", &cancelled, &[], None).contains("cancelled by @dave"));
        assert!(approved(7, "default", Some("erin"), &[]).contains("approved by @erin"));
    }

    #[test]
    fn a_protected_path_is_named_with_the_way_out() {
        let outcome = Outcome::Failed(Failure::Protected(vec![
            ".github/workflows/ci.yml".into(),
            "CODEOWNERS".into(),
        ]));
        let body = finished(1, "default", &outcome, &[], None);
        assert!(
            body.contains("- `.github/workflows/ci.yml`\n- `CODEOWNERS`"),
            "{body}"
        );
        assert!(
            body.contains("nothing was pushed") && body.contains("protected_paths:"),
            "{body}"
        );
    }
}
