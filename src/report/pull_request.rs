//! The pull request that proposes a run's changes.

pub fn title(issue_title: &str) -> String {
    issue_title.trim().to_owned()
}

pub fn body(issue_number: i64, pipeline: &str, task_id: i64) -> String {
    format!(
        "Closes #{issue_number}\n\nProposed by Conveyor from pipeline `{pipeline}` (task {task_id}). Review the changes before merging."
    )
}
