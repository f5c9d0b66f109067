//! `.github/conveyor.yml`: parsing and validation, with errors that say how to fix them.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

pub const PIPELINE_FILE: &str = ".github/conveyor.yml";
const DEFAULT_STEP_TIMEOUT_MINUTES: u64 = 60;

pub const EXAMPLE: &str = "pipelines:
  default:
    steps:
      - name: implement
        run: ./scripts/do-the-work.sh
      - name: verify
        run: cargo test";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PipelineFile {
    pipelines: BTreeMap<String, Pipeline>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Pipeline {
    pub steps: Vec<Step>,
    /// What happens when a step fails; by default the task fails at once.
    #[serde(default)]
    pub retry: RetryPolicy,
}

/// How often a failed task is tried again, and how long it waits in between.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct RetryPolicy {
    /// Attempts in all, the first one included.
    pub attempts: u32,
    /// Wait before the second attempt; it doubles for each attempt after that.
    pub backoff_seconds: u64,
    pub max_backoff_seconds: u64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 1,
            backoff_seconds: 30,
            max_backoff_seconds: 600,
        }
    }
}

impl RetryPolicy {
    /// The wait before attempt `attempt + 1`, or `None` when `attempt` was the last. Jitter
    /// (up to a quarter) keeps retries of many tasks from arriving together.
    pub fn delay_after(&self, attempt: u32) -> Option<Duration> {
        if attempt >= self.attempts {
            return None;
        }
        let doubled = self
            .backoff_seconds
            .saturating_mul(1 << (attempt.saturating_sub(1)).min(20));
        let base = Duration::from_secs(doubled.min(self.max_backoff_seconds));
        Some(base + base.mul_f64(fastrand::f64() / 4.0))
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Step {
    pub name: String,
    pub run: String,
    /// A step still running after this long is stopped and fails.
    #[serde(default = "default_timeout_minutes")]
    pub timeout_minutes: u64,
}

fn default_timeout_minutes() -> u64 {
    DEFAULT_STEP_TIMEOUT_MINUTES
}

impl Step {
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_minutes * 60)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DefinitionError {
    #[error(
        "`{PIPELINE_FILE}` was not found in the repository. Add it to the default branch, for example:\n\n```yaml\n{EXAMPLE}\n```"
    )]
    Missing,
    #[error("`{PIPELINE_FILE}` could not be read: {0}")]
    Unreadable(String),
    #[error(
        "`{PIPELINE_FILE}` is not valid: {0}. The file must look like:\n\n```yaml\n{EXAMPLE}\n```"
    )]
    Invalid(String),
    #[error(
        "`{PIPELINE_FILE}` has no pipeline named `{name}` (it defines: {available}). Add `{name}:` under `pipelines:`."
    )]
    NoSuchPipeline { name: String, available: String },
    #[error("`{PIPELINE_FILE}`: pipeline `{pipeline}` {problem}.")]
    BadPipeline { pipeline: String, problem: String },
}

/// Reads the pipeline called `name` from the repository checked out at `repo_dir`.
pub fn load(repo_dir: &Path, name: &str) -> Result<Pipeline, DefinitionError> {
    let path = repo_dir.join(PIPELINE_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            return Err(DefinitionError::Missing);
        }
        Err(err) => return Err(DefinitionError::Unreadable(err.to_string())),
    };
    parse(&text, name)
}

pub fn parse(text: &str, name: &str) -> Result<Pipeline, DefinitionError> {
    let file: PipelineFile =
        serde_norway::from_str(text).map_err(|err| DefinitionError::Invalid(err.to_string()))?;
    let available = file
        .pipelines
        .keys()
        .map(|k| format!("`{k}`"))
        .collect::<Vec<_>>()
        .join(", ");
    let pipeline =
        file.pipelines
            .get(name)
            .cloned()
            .ok_or_else(|| DefinitionError::NoSuchPipeline {
                name: name.to_owned(),
                available: if available.is_empty() {
                    "none".to_owned()
                } else {
                    available
                },
            })?;
    validate(name, &pipeline)?;
    Ok(pipeline)
}

fn validate(name: &str, pipeline: &Pipeline) -> Result<(), DefinitionError> {
    let bad = |problem: String| DefinitionError::BadPipeline {
        pipeline: name.to_owned(),
        problem,
    };
    if pipeline.steps.is_empty() {
        return Err(bad(
            "has no steps: give it at least one `- name: … run: …`".to_owned()
        ));
    }
    if pipeline.retry.attempts == 0 {
        return Err(bad(
            "has `retry: attempts: 0`; use at least 1 (1 means no retry)".to_owned(),
        ));
    }
    let mut seen = HashSet::new();
    for (index, step) in pipeline.steps.iter().enumerate() {
        let number = index + 1;
        if step.name.trim().is_empty() {
            return Err(bad(format!("step {number} has an empty `name`")));
        }
        if step.run.trim().is_empty() {
            return Err(bad(format!(
                "step `{}` has an empty `run` command",
                step.name
            )));
        }
        if step.timeout_minutes == 0 {
            return Err(bad(format!(
                "step `{}` has `timeout_minutes: 0`; use at least 1",
                step.name
            )));
        }
        if !seen.insert(step.name.as_str()) {
            return Err(bad(format!(
                "has two steps named `{}`; step names must be unique",
                step.name
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_documented_example() {
        let pipeline = parse(EXAMPLE, "default").unwrap();
        let names: Vec<_> = pipeline.steps.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["implement", "verify"]);
        assert_eq!(pipeline.steps[1].run, "cargo test");
        assert_eq!(pipeline.steps[0].timeout(), Duration::from_secs(3600));
    }

    #[test]
    fn explains_what_is_wrong() {
        let cases: &[(&str, &str, &str)] = &[
            ("pipelines: [", "default", "is not valid"),
            (
                "pipeline:\n  default: {steps: []}",
                "default",
                "unknown field `pipeline`",
            ),
            (
                "pipelines:\n  default:\n    steps:\n      - name: a\n        script: x",
                "default",
                "unknown field `script`",
            ),
            (
                "pipelines:\n  other:\n    steps: [{name: a, run: x}]",
                "default",
                "no pipeline named `default` (it defines: `other`)",
            ),
            (
                "pipelines:\n  default:\n    steps: []",
                "default",
                "has no steps",
            ),
            (
                "pipelines:\n  default:\n    steps: [{name: a, run: ' '}]",
                "default",
                "empty `run`",
            ),
            (
                "pipelines:\n  default:\n    steps: [{name: a, run: x}, {name: a, run: y}]",
                "default",
                "two steps named `a`",
            ),
            (
                "pipelines:\n  default:\n    steps: [{name: a, run: x, timeout_minutes: 0}]",
                "default",
                "timeout_minutes: 0",
            ),
        ];
        for (text, name, expected) in cases {
            let err = parse(text, name).unwrap_err().to_string();
            assert!(err.contains(expected), "{text:?}: {err}");
        }
    }

    #[test]
    fn retries_are_off_by_default_and_back_off_exponentially_with_a_cap() {
        assert_eq!(
            parse(EXAMPLE, "default").unwrap().retry.delay_after(1),
            None
        );
        let text = "pipelines:\n  default:\n    retry: {attempts: 4, backoff_seconds: 10, max_backoff_seconds: 25}\n    steps: [{name: a, run: x}]";
        let retry = parse(text, "default").unwrap().retry;
        let within = |attempt, base: u64| {
            let delay = retry.delay_after(attempt).unwrap();
            assert!(
                delay >= Duration::from_secs(base) && delay <= Duration::from_secs(base) * 5 / 4,
                "{attempt}: {delay:?}"
            );
        };
        within(1, 10);
        within(2, 20);
        within(3, 25);
        assert_eq!(retry.delay_after(4), None);
        let zero =
            "pipelines:\n  default:\n    retry: {attempts: 0}\n    steps: [{name: a, run: x}]";
        assert!(
            parse(zero, "default")
                .unwrap_err()
                .to_string()
                .contains("attempts: 0")
        );
    }

    #[test]
    fn a_missing_file_names_the_remedy() {
        let dir = tempfile::tempdir().unwrap();
        let err = load(dir.path(), "default").unwrap_err();
        assert_eq!(err, DefinitionError::Missing);
        assert!(err.to_string().contains("Add it to the default branch"));
    }
}
