//! The `conveyor` check run on the commit a run pushed.

use super::steps_table;
use crate::github::client::{CheckRunOutput, NewCheckRun};
use crate::pipeline::StepResult;
use crate::text_bounds::{CHECK_RUN_TITLE_MAX_CHARS, github_body, title};

pub const NAME: &str = "conveyor";

/// A completed, successful check run summarising the steps that produced `head_sha`.
pub fn succeeded(
    head_sha: &str,
    pipeline: &str,
    steps: &[StepResult],
    details_url: Option<String>,
    task_id: i64,
) -> NewCheckRun {
    NewCheckRun {
        name: NAME.to_owned(),
        head_sha: head_sha.to_owned(),
        status: "completed",
        conclusion: Some("success"),
        details_url,
        external_id: Some(task_id.to_string()),
        output: CheckRunOutput {
            title: title(
                &format!("Pipeline `{pipeline}` passed ({} steps)", steps.len()),
                CHECK_RUN_TITLE_MAX_CHARS,
            ),
            summary: github_body(&steps_table(steps)),
            text: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_check_run_fits_github_whatever_the_pipeline_and_steps() {
        let long = "ü".repeat(50_000);
        let steps: Vec<StepResult> = (0..2_000)
            .map(|position| StepResult {
                position,
                name: "ü".repeat(1_000),
                command: "x".into(),
                exit_code: Some(0),
                duration: Duration::from_secs(1),
                output: String::new(),
                timed_out: false,
            })
            .collect();
        let check = succeeded("abc", &long, &steps, None, 1);
        assert!(check.output.title.chars().count() <= 256);
        assert!(!check.output.title.contains('\n'));
        assert!(check.output.summary.chars().count() <= 65_535);
        assert!(
            check
                .output
                .summary
                .starts_with("| step | result | duration |\n")
        );

        let check = succeeded("abc", "default", &steps[..2], None, 1);
        assert_eq!(check.output.title, "Pipeline `default` passed (2 steps)");
    }
}
