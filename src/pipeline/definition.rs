//! `.github/conveyor.yml`: parsing and validation, with errors that say how to fix them.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use serde::Deserialize;

pub const PIPELINE_FILE: &str = ".github/conveyor.yml";
/// The pipeline file is read whole before anything checks it; larger files are refused.
pub const MAX_PIPELINE_FILE_BYTES: u64 = 256 * 1024;
const DEFAULT_STEP_TIMEOUT_MINUTES: u64 = 60;
/// Caps on what a pipeline may ask for: past these a value is a mistake, and arithmetic on
/// it (backoff doubling, durations) could overflow.
const MAX_ATTEMPTS: u32 = 10;
const MAX_SECONDS: u64 = 24 * 60 * 60;
const MAX_TIMEOUT_MINUTES: u64 = 24 * 60;

/// Paths a run may not change unless its pipeline says otherwise (`protected_paths:`): CI
/// definitions, Conveyor's own file and code ownership are how a repository governs itself,
/// and an agent told to by issue text must not rewrite them.
pub const DEFAULT_PROTECTED_PATHS: &[&str] = &[
    ".github/workflows/**",
    ".github/conveyor.yml",
    "CODEOWNERS",
    ".github/CODEOWNERS",
    "docs/CODEOWNERS",
];

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
    /// Whether steps reach the internet (never the host's own services); a step may override it.
    #[serde(default = "network_default")]
    pub network: bool,
    /// Resource limits for every step; a step may override each one.
    #[serde(default)]
    pub limits: LimitSettings,
    /// Globs of paths a run may not change; replaces [`DEFAULT_PROTECTED_PATHS`].
    #[serde(default = "protected_paths_default")]
    pub protected_paths: Vec<String>,
}

fn network_default() -> bool {
    true
}

fn protected_paths_default() -> Vec<String> {
    DEFAULT_PROTECTED_PATHS
        .iter()
        .map(|path| (*path).to_owned())
        .collect()
}

/// Limits as written in the file: each one unset means "inherit".
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LimitSettings {
    /// Address space of each process, in MiB.
    pub memory_mb: Option<u64>,
    /// Processes (and threads) running at once.
    pub processes: Option<u64>,
    /// Largest file a step may write, in MiB.
    pub file_size_mb: Option<u64>,
}

/// The limits a step runs under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub memory_mb: u64,
    pub processes: u64,
    pub file_size_mb: u64,
}

impl Default for Limits {
    /// Generous enough for compilers and language runtimes, which reserve far more address
    /// space than they touch; tight enough to stop a runaway step before it takes the host.
    fn default() -> Self {
        Self {
            memory_mb: 8192,
            processes: 512,
            file_size_mb: 1024,
        }
    }
}

impl Limits {
    /// Each limit as `settings` says, or as `self` where it says nothing.
    fn overridden_by(self, settings: LimitSettings) -> Self {
        Self {
            memory_mb: settings.memory_mb.unwrap_or(self.memory_mb),
            processes: settings.processes.unwrap_or(self.processes),
            file_size_mb: settings.file_size_mb.unwrap_or(self.file_size_mb),
        }
    }
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
    /// `None` in the file means the pipeline's setting; [`parse`] fills it in.
    #[serde(default)]
    pub network: Option<bool>,
    #[serde(default, rename = "limits")]
    pub(crate) limit_settings: LimitSettings,
    /// The limits in force, the pipeline's and the step's own settings applied; [`parse`]
    /// fills them in.
    #[serde(skip)]
    pub limits: Limits,
}

fn default_timeout_minutes() -> u64 {
    DEFAULT_STEP_TIMEOUT_MINUTES
}

impl Step {
    /// A step with the default settings, as `parse` would make it.
    pub fn new(name: &str, run: &str) -> Self {
        Self {
            name: name.to_owned(),
            run: run.to_owned(),
            timeout_minutes: DEFAULT_STEP_TIMEOUT_MINUTES,
            network: Some(true),
            limit_settings: LimitSettings::default(),
            limits: Limits::default(),
        }
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_minutes * 60)
    }

    pub fn has_network(&self) -> bool {
        self.network.unwrap_or(true)
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
        "`{PIPELINE_FILE}` must be a regular file in the repository, but {0}. Commit the pipeline file itself there."
    )]
    NotAFile(String),
    #[error(
        "`{PIPELINE_FILE}` is {0} bytes; the limit is {MAX_PIPELINE_FILE_BYTES} bytes. Move long scripts into files the steps run."
    )]
    TooLarge(u64),
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

pub fn parse(text: &str, name: &str) -> Result<Pipeline, DefinitionError> {
    let file: PipelineFile =
        serde_norway::from_str(text).map_err(|err| DefinitionError::Invalid(err.to_string()))?;
    let available = file
        .pipelines
        .keys()
        .map(|k| format!("`{k}`"))
        .collect::<Vec<_>>()
        .join(", ");
    let mut pipeline =
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
    let limits = Limits::default().overridden_by(pipeline.limits);
    for step in &mut pipeline.steps {
        step.network = Some(step.network.unwrap_or(pipeline.network));
        step.limits = limits.overridden_by(step.limit_settings);
    }
    Ok(pipeline)
}

/// Why `settings` are out of bounds, if they are.
fn check_limits(settings: &LimitSettings) -> Option<String> {
    let checks = [
        ("memory_mb", settings.memory_mb, 64, 1 << 20),
        ("processes", settings.processes, 8, 1 << 16),
        ("file_size_mb", settings.file_size_mb, 1, 1 << 20),
    ];
    checks.into_iter().find_map(|(key, value, min, max)| {
        value
            .filter(|value| !(min..=max).contains(value))
            .map(|value| format!("`limits: {key}: {value}`; use {min} to {max}"))
    })
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
    let retry = &pipeline.retry;
    if retry.attempts == 0 || retry.attempts > MAX_ATTEMPTS {
        return Err(bad(format!(
            "has `retry: attempts: {}`; use 1 (no retry) to {MAX_ATTEMPTS}",
            retry.attempts
        )));
    }
    for (key, seconds) in [
        ("backoff_seconds", retry.backoff_seconds),
        ("max_backoff_seconds", retry.max_backoff_seconds),
    ] {
        if seconds > MAX_SECONDS {
            return Err(bad(format!(
                "has `retry: {key}: {seconds}`; the most is {MAX_SECONDS} (a day)"
            )));
        }
    }
    if let Some(problem) = check_limits(&pipeline.limits) {
        return Err(bad(format!("has {problem}")));
    }
    if let Err(err) = super::protected::Protected::new(&pipeline.protected_paths) {
        return Err(bad(err.to_string()));
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
        if step.timeout_minutes == 0 || step.timeout_minutes > MAX_TIMEOUT_MINUTES {
            return Err(bad(format!(
                "step `{}` has `timeout_minutes: {}`; use 1 to {MAX_TIMEOUT_MINUTES} (a day)",
                step.name, step.timeout_minutes
            )));
        }
        if let Some(problem) = check_limits(&step.limit_settings) {
            return Err(bad(format!("step `{}` has {problem}", step.name)));
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
            (
                "pipelines:\n  default:\n    steps: [{name: a, run: x, timeout_minutes: 18446744073709551615}]",
                "default",
                "use 1 to 1440",
            ),
            (
                "pipelines:\n  default:\n    retry: {attempts: 4294967295}\n    steps: [{name: a, run: x}]",
                "default",
                "use 1 (no retry) to 10",
            ),
            (
                "pipelines:\n  default:\n    retry: {attempts: 2, backoff_seconds: 18446744073709551615}\n    steps: [{name: a, run: x}]",
                "default",
                "backoff_seconds: 18446744073709551615`; the most is 86400",
            ),
            (
                "pipelines:\n  default:\n    retry: {max_backoff_seconds: 86401}\n    steps: [{name: a, run: x}]",
                "default",
                "max_backoff_seconds: 86401",
            ),
            (
                "pipelines:\n  default:\n    limits: {memory_mb: 1}\n    steps: [{name: a, run: x}]",
                "default",
                "`limits: memory_mb: 1`; use 64 to",
            ),
            (
                "pipelines:\n  default:\n    steps: [{name: a, run: x, limits: {processes: 0}}]",
                "default",
                "step `a` has `limits: processes: 0`",
            ),
            (
                "pipelines:\n  default:\n    steps: [{name: a, run: x, limits: {cpu: 1}}]",
                "default",
                "unknown field `cpu`",
            ),
            (
                "pipelines:\n  default:\n    protected_paths: ['src/[']\n    steps: [{name: a, run: x}]",
                "default",
                "`protected_paths`",
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
    fn steps_inherit_network_and_limits_from_the_pipeline_and_may_override_them() {
        let text = "pipelines:
  default:
    network: false
    limits: {memory_mb: 2048, processes: 64}
    steps:
      - {name: a, run: x}
      - {name: b, run: y, network: true, limits: {processes: 32, file_size_mb: 10}}
";
        let pipeline = parse(text, "default").unwrap();
        let [a, b] = &pipeline.steps[..] else {
            panic!("two steps")
        };
        assert!(!a.has_network());
        assert_eq!(
            a.limits,
            Limits {
                memory_mb: 2048,
                processes: 64,
                file_size_mb: Limits::default().file_size_mb
            }
        );
        assert!(b.has_network());
        assert_eq!(
            b.limits,
            Limits {
                memory_mb: 2048,
                processes: 32,
                file_size_mb: 10
            }
        );
        let defaults = parse(EXAMPLE, "default").unwrap();
        assert!(defaults.steps[0].has_network());
        assert_eq!(defaults.steps[0].limits, Limits::default());
        assert_eq!(defaults.protected_paths, protected_paths_default());
    }
}
