//! The `conveyor` check run on the commit a run pushed.

use super::steps_table;
use crate::github::client::{CheckRunOutput, NewCheckRun};
use crate::pipeline::StepResult;

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
            title: format!("Pipeline `{pipeline}` passed ({} steps)", steps.len()),
            summary: steps_table(steps),
            text: None,
        },
    }
}
