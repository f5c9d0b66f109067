//! The pull request that proposes a run's changes.

use crate::text_bounds::{self, GITHUB_TITLE_MAX_CHARS, github_body};

/// The issue's title, as GitHub accepts it for a pull request: one line, 256 characters at most
/// (a task's title may come from the API or the command line, not only from an issue).
pub fn title(issue_title: &str) -> String {
    text_bounds::title(issue_title, GITHUB_TITLE_MAX_CHARS)
}

/// The body, closing the task's issue when it has one.
pub fn body(issue_number: Option<i64>, pipeline: &str, task_id: i64) -> String {
    let closes = issue_number
        .map(|issue| format!("Closes #{issue}\n\n"))
        .unwrap_or_default();
    github_body(&format!(
        "{closes}Proposed by Conveyor from pipeline `{pipeline}` (task {task_id}). Review the changes before merging."
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles_fit_github_and_bodies_close_the_issue() {
        assert_eq!(title("  Add release notes \n"), "Add release notes");
        let long = title(&format!("Ärger\0{}", "ö".repeat(400)));
        assert_eq!(long.chars().count(), 256);
        assert!(long.starts_with("Ärger ö") && long.ends_with('…'));
        assert!(body(Some(7), "default", 1).starts_with("Closes #7\n"));
        assert!(body(None, "default", 1).starts_with("Proposed by Conveyor"));
        assert!(body(Some(7), &"p".repeat(100_000), 1).chars().count() <= 65_535);
    }
}
