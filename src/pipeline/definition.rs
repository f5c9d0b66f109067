//! `.github/conveyor.yml`: parsing and validation, with errors that say how to fix them.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::Deserialize;
use serde_norway::Value;

use super::protected::Protected;
use crate::authz::Permission;
use crate::commands::code;
use crate::text_bounds::title;

pub const PIPELINE_FILE: &str = ".github/conveyor.yml";
/// The pipeline file is read whole before anything checks it; larger files are refused.
pub const MAX_PIPELINE_FILE_BYTES: u64 = 256 * 1024;
const DEFAULT_STEP_TIMEOUT_MINUTES: u64 = 60;
/// The whole run's budget, across all its steps and their retries, unless the pipeline sets one.
const DEFAULT_RUN_TIMEOUT_MINUTES: u64 = 120;
/// A verify step checks the work; re-running it more than this hides a flaky check rather than
/// confirming the work (seed 004, 7.5).
pub const VERIFY_MAX_RETRIES: u32 = 2;
/// The name that marks a step as the pipeline's verification, as `verify: true` does.
pub const VERIFY_STEP: &str = "verify";
/// Caps on what a pipeline may ask for: past these a value is a mistake, and arithmetic on
/// it (backoff doubling, durations) could overflow.
const MAX_ATTEMPTS: u32 = 10;
const MAX_SECONDS: u64 = 24 * 60 * 60;
const MAX_TIMEOUT_MINUTES: u64 = 24 * 60;
/// Rounds of questions a run may ask its requester unless its pipeline says otherwise.
const DEFAULT_CLARIFICATION_ROUNDS: u32 = 3;
const MAX_CLARIFICATION_ROUNDS: u32 = 10;
/// How long a run waits for an answer to its questions before it fails, unless its pipeline
/// says otherwise.
const DEFAULT_ANSWER_TIMEOUT_HOURS: u32 = 72;
const MAX_ANSWER_TIMEOUT_HOURS: u32 = 30 * 24;
/// The range each limit may take, as (key, least, most).
const MEMORY_MB: (&str, u64, u64) = ("memory_mb", 64, 1 << 20);
const PROCESSES: (&str, u64, u64) = ("processes", 8, 1 << 16);
const FILE_SIZE_MB: (&str, u64, u64) = ("file_size_mb", 1, 1 << 20);
const DEFAULT_TRIGGER_LABEL: &str = "conveyor";
/// The pipeline a label, or `/conveyor run` without a name, runs.
pub const DEFAULT_PIPELINE: &str = "default";
/// GitHub refuses longer label names, so a longer trigger label could never be applied.
const LABEL_MAX_CHARS: usize = 50;
/// A value quoted back in an error: enough to recognise it.
const SHOWN_VALUE_MAX_CHARS: usize = 60;
/// Text that is not only whitespace, for the schema: the parser trims before it checks.
const NOT_BLANK: &str = r"\S";

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

// These entry types are what the parser reads the file into, and the JSON Schema
// (`conveyor schema`) is generated from them: their doc comments are what pipeline authors
// read in their editors, so they speak to authors. Rules the parser checks after reading
// (one step kind, ranges, non-blank text) are mirrored in `schemars` attributes, and
// `tests/authoring.rs` holds the two together.

/// `.github/conveyor.yml`, read from the repository's default branch: the pipelines a task
/// may run, the labels that choose one, and who may steer runs.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "Conveyor pipeline file")]
struct PipelineFile {
    /// Named pipelines. A task runs the one it names (`/conveyor run NAME`, a
    /// `conveyor:NAME` label), else the one `task_types` gives its labels, else `default`.
    pipelines: BTreeMap<String, PipelineEntry>,
    // Read by hand (`settings_from`), so that its errors can say the fix and so that labels
    // and commands keep working while a pipeline is broken.
    /// Who may steer runs, and how tasks start. Every key is optional.
    #[serde(default)]
    #[schemars(with = "Option<Settings>", skip_serializing_if = "Value::is_null")]
    settings: Value,
    /// Issue labels and the pipeline each one runs, for a task that names none, such as
    /// `{bug: fix, documentation: docs}`. The first of an issue's labels listed here wins;
    /// every pipeline named must exist.
    #[serde(default)]
    task_types: BTreeMap<String, String>,
}

/// The file's JSON Schema, generated from the types [`parse`] reads it into.
pub(super) fn file_schema(generator: SchemaGenerator) -> Schema {
    generator.into_root_schema_for::<PipelineFile>()
}

/// The file read for its settings alone: whatever else it holds, valid or not, is skipped.
#[derive(Debug, Deserialize)]
struct SettingsOnly {
    #[serde(default)]
    settings: Value,
}

/// A pipeline: steps run in order in a fresh clone of the repository; the first that fails
/// ends the run and nothing is pushed. If the steps changed files, they are committed to a
/// branch and a pull request opens.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Pipeline")]
struct PipelineEntry {
    /// The steps, run in order. Each has a `name` and one of `run`, `prompt` or `approval`.
    #[schemars(length(min = 1))]
    steps: Vec<StepEntry>,
    /// Whether a failed run is tried again as a whole, and how long it waits in between. By
    /// default a failed step fails the task.
    #[serde(default)]
    retry: RetryPolicy,
    /// Whether steps reach the internet (never the host's own services, such as Postgres on
    /// localhost); a step may say otherwise. `false` gives them loopback only.
    #[serde(default = "network_default")]
    network: bool,
    /// Resource limits for every step of the pipeline; a step may override each one.
    #[serde(default)]
    limits: LimitSettings,
    /// Globs of paths a run may not change (`*` stays within a path segment, `**` crosses
    /// them); a run that changes one fails and pushes nothing. Replaces the default list.
    #[serde(default = "protected_paths_default")]
    protected_paths: Vec<String>,
    /// The whole run's budget in minutes, across all its steps and their retries (default
    /// 120). `/conveyor run NAME timeout=30m` may lower it for one run.
    #[schemars(range(min = 1, max = MAX_TIMEOUT_MINUTES))]
    timeout_minutes: Option<u64>,
    /// How a step may ask the requester questions: it writes them to the file named by
    /// `CONVEYOR_QUESTIONS_FILE` and exits with code 75; the run waits for the requester's
    /// next plain comment on the issue and runs the step again with the answer in the file
    /// named by `CONVEYOR_ANSWERS_FILE`.
    #[serde(default)]
    clarification: ClarificationEntry,
}

/// `clarification:`, checked by [`pipeline_from`].
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Clarification")]
struct ClarificationEntry {
    /// How many rounds of questions a run may ask (default 3); asking once more fails the
    /// run with `no_answer`. 0: steps may not ask.
    #[schemars(range(max = MAX_CLARIFICATION_ROUNDS))]
    max_rounds: Option<u32>,
    /// Hours the run waits for an answer before it fails with `no_answer` (default 72, at
    /// most 720).
    #[schemars(range(min = 1, max = MAX_ANSWER_TIMEOUT_HOURS))]
    timeout_hours: Option<u32>,
}

// Which of its keys a step has is what decides its kind, so each one is kept as given and
// `step_from` judges the combination.
/// A step: a command (`run`), a prompt rendered for the steps after it (`prompt`), or a gate
/// that waits for a person's approval (`approval`). Exactly one of the three.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Step", transform = one_step_kind)]
struct StepEntry {
    /// The step's name, unique in its pipeline: shown in the timeline and the status comment,
    /// and what `/conveyor retry NAME` names. A step named `verify` checks the work (see
    /// `verify`).
    #[schemars(regex(pattern = NOT_BLANK))]
    name: String,
    // `Some(None)` is a `run:` left empty, told apart from no `run` at all.
    /// A shell script, run with `sh -c` in the work tree inside the sandbox. It fails the
    /// step when it exits non-zero.
    #[serde(default, deserialize_with = "present")]
    #[schemars(
        with = "String",
        regex(pattern = NOT_BLANK),
        skip_serializing_if = "Option::is_none"
    )]
    run: Option<Option<String>>,
    // `Some(None)` is a bare `approval:`, an approval with nothing more to say.
    /// Stop here until someone with `approver_permission` approves the work so far (the run
    /// commits and pushes it first). `approval: {}` or a bare `approval:` is enough.
    #[serde(default, deserialize_with = "present")]
    #[schemars(with = "Option<ApprovalEntry>")]
    approval: Option<Option<ApprovalEntry>>,
    // `Some(None)` is a `prompt:` left empty.
    /// Render a template to a file whose path the steps after this one get as
    /// `CONVEYOR_PROMPT_FILE`: the text itself, or `{template: path/in/repo}`.
    #[serde(default, deserialize_with = "present")]
    #[schemars(with = "PromptEntry")]
    prompt: Option<Option<PromptEntry>>,
    /// For an approval: globs of paths (as in `protected_paths`); the gate passes by itself
    /// when the run changed none of them. May also sit under `approval:`, not both.
    required_for_paths: Option<Vec<String>>,
    /// For a command: minutes it may run before it is stopped and fails (default 60).
    #[schemars(range(min = 1, max = MAX_TIMEOUT_MINUTES))]
    timeout_minutes: Option<u64>,
    /// For a command: whether it reaches the internet, overriding the pipeline's `network`.
    network: Option<bool>,
    /// For a command: resource limits, each overriding the pipeline's.
    limits: Option<LimitSettings>,
    /// For a command: how many times the step alone runs again after it failed, before the
    /// run fails (default 0; for a verify step 2, and at most 2). Each attempt is kept in the
    /// log.
    #[schemars(range(max = MAX_ATTEMPTS))]
    retries: Option<u32>,
    /// Whether `/conveyor retry NAME` may start a failed run again from this step (default
    /// false). Not for an approval.
    retryable: Option<bool>,
    /// For a command: whether it verifies the work (default: true for a step named
    /// `verify`). A verify step runs again up to 2 times after a failure by default, and
    /// never more.
    verify: Option<bool>,
}

/// `prompt: "text"`, or `prompt: {template: path}` / `prompt: {text: …}` with the files whose
/// contents the template may show.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(untagged)]
#[schemars(rename = "Prompt")]
enum PromptEntry {
    /// The template's text, such as `"Fix {{ task.title }}"`.
    Inline(#[schemars(regex(pattern = NOT_BLANK))] String),
    Detailed(PromptDetails),
}

/// A prompt's template, from the repository (`template`) or written here (`text`): one of
/// the two.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "PromptTemplate", transform = one_prompt_source)]
struct PromptDetails {
    /// A file of the repository, read at the run's base commit, such as `prompts/fix.md`.
    #[schemars(regex(pattern = NOT_BLANK))]
    template: Option<String>,
    /// The template's text.
    #[schemars(regex(pattern = NOT_BLANK))]
    text: Option<String>,
    /// Files of the repository whose contents the template may show.
    #[serde(default)]
    context_files: Vec<String>,
}

/// What approvers are told, and when the gate is needed at all.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Approval")]
struct ApprovalEntry {
    /// Shown to the approvers: what to look at before approving.
    #[schemars(regex(pattern = NOT_BLANK))]
    message: Option<String>,
    /// Globs of paths (as in `protected_paths`); the gate passes by itself when the run
    /// changed none of them. Without it the gate is always needed.
    required_for_paths: Option<Vec<String>>,
}

/// The keys of each step kind, and the keys of other kinds a step of it may not have, as
/// `step_from` judges them.
const STEP_KINDS: &[(&str, &[&str])] = &[
    ("run", &["prompt", "approval", "required_for_paths"]),
    (
        "prompt",
        &[
            "run",
            "approval",
            "required_for_paths",
            "timeout_minutes",
            "network",
            "limits",
            "retries",
            "verify",
        ],
    ),
    (
        "approval",
        &[
            "run",
            "prompt",
            "timeout_minutes",
            "network",
            "limits",
            "retries",
            "verify",
            "retryable",
        ],
    ),
];

/// A step has exactly one kind, and only the keys that kind has.
fn one_step_kind(schema: &mut Schema) {
    let kinds: Vec<serde_json::Value> = STEP_KINDS
        .iter()
        .map(|(kind, others)| {
            let forbidden: serde_json::Map<String, serde_json::Value> = others
                .iter()
                .map(|key| ((*key).to_owned(), false.into()))
                .collect();
            serde_json::json!({"required": [kind], "properties": forbidden})
        })
        .collect();
    schema.insert("oneOf".to_owned(), kinds.into());
}

/// A prompt's template comes from a file or from the text given, never both or neither.
fn one_prompt_source(schema: &mut Schema) {
    schema.insert(
        "oneOf".to_owned(),
        serde_json::json!([{"required": ["template"]}, {"required": ["text"]}]),
    );
}

/// A key that is present, even with an empty value: `Some` of what serde makes of the value.
fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pipeline {
    pub steps: Vec<Step>,
    /// What happens when a step fails; by default the task fails at once.
    pub retry: RetryPolicy,
    /// Whether steps reach the internet (never the host's own services); a step may override it.
    pub network: bool,
    /// Resource limits for every step; a step may override each one.
    pub limits: LimitSettings,
    /// Globs of paths a run may not change; replaces [`DEFAULT_PROTECTED_PATHS`].
    pub protected_paths: Vec<String>,
    /// The run's budget: all its steps and their retries stop once they took this long.
    pub timeout_minutes: u64,
    /// How a step may ask the requester questions (exit code 75).
    pub clarification: Clarification,
}

/// How many times a run may stop to ask its requester questions, and how long it waits for
/// each answer before it fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Clarification {
    pub max_rounds: u32,
    pub timeout_hours: u32,
}

impl Default for Clarification {
    fn default() -> Self {
        Self {
            max_rounds: DEFAULT_CLARIFICATION_ROUNDS,
            timeout_hours: DEFAULT_ANSWER_TIMEOUT_HOURS,
        }
    }
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

// `settings_from` reads the block by hand; the schema is this type's, with its defaults.
/// How a repository wants Conveyor to treat the people and bots who use it (`settings:`).
#[derive(Debug, Clone, PartialEq, Eq, JsonSchema)]
#[schemars(deny_unknown_fields, default)]
pub struct Settings {
    /// The issue label that starts a task; `LABEL:NAME` (such as `conveyor:docs`) starts one
    /// that runs pipeline NAME.
    #[schemars(regex(pattern = NOT_BLANK), length(max = LABEL_MAX_CHARS))]
    pub trigger_label: String,
    /// The least permission that may run, retry, cancel, approve and reject (default
    /// `write`).
    #[schemars(schema_with = "approver_permission_schema")]
    pub approver_permission: Permission,
    /// Whether the person who started a run may approve it.
    pub allow_self_approval: bool,
    /// Bot logins whose labels and commands are honoured (never their approvals); other
    /// bots are ignored.
    #[schemars(inner(regex(pattern = NOT_BLANK)))]
    pub allowed_bots: Vec<String>,
}

/// The permissions `settings: approver_permission` may name, weakest first.
const APPROVER_PERMISSIONS: [Permission; 3] =
    [Permission::Write, Permission::Maintain, Permission::Admin];

fn approver_permission_schema(_: &mut SchemaGenerator) -> Schema {
    let names: Vec<&str> = APPROVER_PERMISSIONS.iter().map(|p| p.as_str()).collect();
    json_schema!({"type": "string", "enum": names})
}

/// Separates the trigger label from a pipeline's name in a label that names one
/// (`conveyor:docs`).
const PIPELINE_LABEL_SEPARATOR: char = ':';

impl Settings {
    /// Whether adding `label` starts a task: `Some(None)` for the trigger label,
    /// `Some(Some(name))` for a label that names a pipeline (`conveyor:docs`).
    pub fn started_by<'a>(&self, label: &'a str) -> Option<Option<&'a str>> {
        if label == self.trigger_label {
            return Some(None);
        }
        self.pipeline_named_by(label).map(Some)
    }

    /// The pipeline `label` names (`conveyor:docs` names `docs`), if it names one.
    pub fn pipeline_named_by<'a>(&self, label: &'a str) -> Option<&'a str> {
        label
            .strip_prefix(self.trigger_label.as_str())?
            .strip_prefix(PIPELINE_LABEL_SEPARATOR)
            .map(str::trim)
            .filter(|name| !name.is_empty())
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            trigger_label: DEFAULT_TRIGGER_LABEL.to_owned(),
            approver_permission: Permission::Write,
            allow_self_approval: false,
            allowed_bots: Vec::new(),
        }
    }
}

/// Resource limits for a step; each one left out is inherited (from the pipeline, else the
/// default).
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Limits")]
pub struct LimitSettings {
    /// Address space of each process, in MiB (default 8192).
    #[schemars(range(min = MEMORY_MB.1, max = MEMORY_MB.2))]
    pub memory_mb: Option<u64>,
    /// Processes (and threads) running at once (default 512).
    #[schemars(range(min = PROCESSES.1, max = PROCESSES.2))]
    pub processes: Option<u64>,
    /// Largest file a step may write, in MiB (default 1024).
    #[schemars(range(min = FILE_SIZE_MB.1, max = FILE_SIZE_MB.2))]
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

/// How often a failed task is tried again as a whole, and how long it waits in between.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, JsonSchema)]
#[serde(deny_unknown_fields, default)]
#[schemars(rename = "Retry")]
pub struct RetryPolicy {
    /// Attempts in all, the first one included (1: no retry).
    #[schemars(range(min = 1, max = MAX_ATTEMPTS))]
    pub attempts: u32,
    /// Seconds to wait before the second attempt; it doubles for each attempt after that.
    #[schemars(range(max = MAX_SECONDS))]
    pub backoff_seconds: u64,
    /// The longest wait between two attempts, in seconds.
    #[schemars(range(max = MAX_SECONDS))]
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

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub name: String,
    pub action: Action,
    /// A command still running after this long is stopped and fails.
    pub timeout_minutes: u64,
    /// Whether the command reaches the internet; [`parse`] fills in the pipeline's setting
    /// where the step has none.
    pub network: Option<bool>,
    /// The limits in force, the pipeline's and the step's own settings applied.
    pub limits: Limits,
    /// How many times the step alone runs again after it failed, before the run fails.
    pub retries: u32,
    /// Whether `/conveyor retry <step>` may start a failed run again from this step.
    pub retryable: bool,
    /// Whether the step checks the work (named [`VERIFY_STEP`] or marked `verify: true`).
    pub verify: bool,
}

/// What a step does: run a command in the sandbox, render a prompt for the steps after it,
/// or wait for a person's approval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// The shell script to run.
    Run(String),
    Prompt(Prompt),
    Approval(Approval),
}

/// A prompt step: a template rendered, the same inputs giving the same bytes, to a file the
/// steps after it find as `CONVEYOR_PROMPT_FILE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prompt {
    pub template: PromptTemplate,
    /// Repository files whose contents the template may show (`context.files`).
    pub context_files: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PromptTemplate {
    /// The template's text, written in the pipeline file.
    Inline(String),
    /// A file of the repository, at the run's base commit.
    File(String),
}

/// A gate: the run stops here until someone allowed to approves the work so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Approval {
    /// Shown to the approvers: what to look at before approving.
    pub message: Option<String>,
    /// Globs (as in `protected_paths`); the gate passes by itself when the run's changes
    /// touch none of them. Empty: always required.
    pub required_for_paths: Vec<String>,
}

/// Why `/conveyor retry STEP` cannot start a failed run again at that step.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum RetryFromError {
    #[error("pipeline {} has no step {} (its steps: {})", code(.pipeline), code(.step), .steps)]
    NoSuchStep {
        pipeline: String,
        step: String,
        steps: String,
    },
    #[error(
        "step {} does not declare `retryable: true`, so no run starts again from it; `/conveyor retry` runs the whole pipeline again",
        code(.0)
    )]
    NotRetryable(String),
    #[error(
        "step {} comes after {}, where the run failed; retry from {} or a step before it",
        code(.step),
        code(.failed),
        code(.failed)
    )]
    AfterFailure { step: String, failed: String },
}

impl Pipeline {
    /// The position `/conveyor retry STEP` starts a run of pipeline `name` again at, after it
    /// failed at step `failed`: the step must declare `retryable: true`, and the run must have
    /// got that far (what came after the failure never ran, so there is nothing to retry).
    pub fn retry_point(
        &self,
        name: &str,
        step: &str,
        failed: &str,
    ) -> Result<usize, RetryFromError> {
        let position = |wanted: &str| self.steps.iter().position(|step| step.name == wanted);
        let Some(at) = position(step) else {
            let steps: Vec<String> = self.steps.iter().map(|step| code(&step.name)).collect();
            return Err(RetryFromError::NoSuchStep {
                pipeline: name.to_owned(),
                step: step.to_owned(),
                steps: steps.join(", "),
            });
        };
        if !self.steps[at].retryable {
            return Err(RetryFromError::NotRetryable(step.to_owned()));
        }
        match position(failed) {
            Some(failed_at) if at > failed_at => Err(RetryFromError::AfterFailure {
                step: step.to_owned(),
                failed: failed.to_owned(),
            }),
            _ => Ok(at),
        }
    }
}

impl Step {
    /// A command step with the default settings, as `parse` would make it.
    pub fn new(name: &str, run: &str) -> Self {
        Self::with_action(name, Action::Run(run.to_owned()))
    }

    /// An approval step, as `parse` would make it.
    pub fn approval(name: &str, approval: Approval) -> Self {
        Self::with_action(name, Action::Approval(approval))
    }

    fn with_action(name: &str, action: Action) -> Self {
        Self {
            name: name.to_owned(),
            action,
            timeout_minutes: DEFAULT_STEP_TIMEOUT_MINUTES,
            network: Some(true),
            limits: Limits::default(),
            retries: 0,
            retryable: false,
            verify: name == VERIFY_STEP,
        }
    }

    /// The command a command step runs; `None` for a prompt or an approval.
    pub fn script(&self) -> Option<&str> {
        match &self.action {
            Action::Run(script) => Some(script),
            Action::Prompt(_) | Action::Approval(_) => None,
        }
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_minutes * 60)
    }

    pub fn has_network(&self) -> bool {
        self.network.unwrap_or(true)
    }
}

/// Whether `approval` must wait for a person, given the paths the run changed (a renamed
/// file's old path among them): always when it lists no paths, else when one of them changed.
pub fn approval_needed(approval: &Approval, changed: &[&str]) -> Result<bool, DefinitionError> {
    if approval.required_for_paths.is_empty() {
        return Ok(true);
    }
    let globs =
        Protected::new(&approval.required_for_paths).map_err(|err| DefinitionError::BadGlob {
            glob: err.glob,
            reason: err.reason,
        })?;
    let changed: Vec<String> = changed.iter().map(|path| (*path).to_owned()).collect();
    Ok(!globs.touched(&changed).is_empty())
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
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
    /// Not YAML, or not the file's shape; `at` is where the reader stopped, when it knows.
    #[error(
        "`{PIPELINE_FILE}` is not valid: {message}. The file must look like:\n\n```yaml\n{EXAMPLE}\n```"
    )]
    Invalid {
        message: String,
        at: Option<Position>,
    },
    #[error(
        "`{PIPELINE_FILE}` has no pipeline named `{name}` (it defines: {available}). Add `{name}:` under `pipelines:`."
    )]
    NoSuchPipeline { name: String, available: String },
    /// `step` is the index of the step the problem is about, when it is one step's.
    #[error("`{PIPELINE_FILE}`: pipeline `{pipeline}` {problem}.")]
    BadPipeline {
        pipeline: String,
        step: Option<usize>,
        problem: String,
    },
    /// The `settings:` block; the text says what is wrong and how to write it.
    #[error("`{PIPELINE_FILE}` has {0}.")]
    BadSettings(String),
    #[error(
        "`{PIPELINE_FILE}`: `required_for_paths` entry `{glob}` is not a valid glob: {reason}."
    )]
    BadGlob { glob: String, reason: String },
    #[error("`{PIPELINE_FILE}` has, under `task_types:`, {0}.")]
    BadTaskTypes(String),
    /// A prompt step's template or the files it reads; the text says which and why.
    #[error("`{PIPELINE_FILE}`: the prompt of step `{step}` {problem}.")]
    BadPrompt { step: String, problem: String },
}

/// A place in the file: line and column, both counted from 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

impl From<serde_norway::Error> for DefinitionError {
    fn from(err: serde_norway::Error) -> Self {
        DefinitionError::Invalid {
            at: err.location().map(|at| Position {
                line: at.line(),
                column: at.column(),
            }),
            message: err.to_string(),
        }
    }
}

pub fn parse(text: &str, name: &str) -> Result<Pipeline, DefinitionError> {
    let file = parse_file(text)?;
    let entry = file
        .pipelines
        .get(name)
        .ok_or_else(|| no_such_pipeline(&file, name))?;
    pipeline_from(entry).map_err(|problem| problem.of(name))
}

/// The whole file checked as runs would read it: its settings, `task_types` and every
/// pipeline. The pipelines' names, or every problem found: the file's own, else one for each
/// broken pipeline.
pub fn check(text: &str) -> Result<Vec<String>, Vec<DefinitionError>> {
    let file = parse_file(text).map_err(|err| vec![err])?;
    let problems: Vec<DefinitionError> = file
        .pipelines
        .iter()
        .filter_map(|(name, entry)| pipeline_from(entry).err().map(|problem| problem.of(name)))
        .collect();
    if problems.is_empty() {
        Ok(file.pipelines.into_keys().collect())
    } else {
        Err(problems)
    }
}

/// The pipeline a task runs: the one it names (`/conveyor run NAME`, a `conveyor:NAME`
/// label), else the one `task_types:` gives the first of its labels that has one, else
/// [`DEFAULT_PIPELINE`]. A name the file does not define is an error listing those it does.
pub fn choose(
    text: &str,
    named: Option<&str>,
    labels: &[String],
) -> Result<String, DefinitionError> {
    let file = parse_file(text)?;
    let chosen = named
        .or_else(|| {
            labels
                .iter()
                .find_map(|label| file.task_types.get(label).map(String::as_str))
        })
        .unwrap_or(DEFAULT_PIPELINE);
    if file.pipelines.contains_key(chosen) {
        Ok(chosen.to_owned())
    } else {
        Err(no_such_pipeline(&file, chosen))
    }
}

/// The file, with what holds across its pipelines checked: settings and `task_types`.
fn parse_file(text: &str) -> Result<PipelineFile, DefinitionError> {
    let file: PipelineFile = serde_norway::from_str(text)?;
    settings_from(&file.settings)?;
    for (label, pipeline) in &file.task_types {
        if label.trim().is_empty() {
            return Err(DefinitionError::BadTaskTypes(
                "an empty label; each key is an issue label, such as `bug: fix`".to_owned(),
            ));
        }
        if !file.pipelines.contains_key(pipeline) {
            return Err(DefinitionError::BadTaskTypes(format!(
                "`{}: {}`, but no pipeline is named `{}` (it defines: {})",
                title(label, SHOWN_VALUE_MAX_CHARS),
                title(pipeline, SHOWN_VALUE_MAX_CHARS),
                title(pipeline, SHOWN_VALUE_MAX_CHARS),
                pipeline_names(&file)
            )));
        }
    }
    Ok(file)
}

fn pipeline_names(file: &PipelineFile) -> String {
    if file.pipelines.is_empty() {
        return "none".to_owned();
    }
    file.pipelines
        .keys()
        .map(|k| format!("`{k}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn no_such_pipeline(file: &PipelineFile, name: &str) -> DefinitionError {
    DefinitionError::NoSuchPipeline {
        name: title(name, SHOWN_VALUE_MAX_CHARS),
        available: pipeline_names(file),
    }
}

/// The repository's settings. Only the `settings:` block is checked, so that labels and
/// commands keep working while a pipeline in the file is broken; a file without the block
/// gives the defaults.
pub fn parse_settings(text: &str) -> Result<Settings, DefinitionError> {
    let file: SettingsOnly = serde_norway::from_str(text)?;
    settings_from(&file.settings)
}

/// Why `settings` are out of bounds, if they are.
fn check_limits(settings: &LimitSettings) -> Option<String> {
    let checks = [
        (MEMORY_MB, settings.memory_mb),
        (PROCESSES, settings.processes),
        (FILE_SIZE_MB, settings.file_size_mb),
    ];
    checks.into_iter().find_map(|((key, min, max), value)| {
        value
            .filter(|value| !(min..=max).contains(value))
            .map(|value| format!("`limits: {key}: {value}`; use {min} to {max}"))
    })
}

/// What is wrong with a pipeline: the text, to follow "pipeline `name`", and the index of the
/// step it is about when it is one step's.
struct PipelineProblem {
    step: Option<usize>,
    problem: String,
}

impl From<String> for PipelineProblem {
    fn from(problem: String) -> Self {
        Self {
            step: None,
            problem,
        }
    }
}

impl PipelineProblem {
    fn of(self, pipeline: &str) -> DefinitionError {
        DefinitionError::BadPipeline {
            pipeline: pipeline.to_owned(),
            step: self.step,
            problem: self.problem,
        }
    }
}

/// The pipeline `entry` describes, or what is wrong with it.
fn pipeline_from(entry: &PipelineEntry) -> Result<Pipeline, PipelineProblem> {
    if entry.steps.is_empty() {
        return Err(PipelineProblem::from(
            "has no steps: give it at least one `- name: … run: …`".to_owned(),
        ));
    }
    let retry = &entry.retry;
    if retry.attempts == 0 || retry.attempts > MAX_ATTEMPTS {
        return Err(PipelineProblem::from(format!(
            "has `retry: attempts: {}`; use 1 (no retry) to {MAX_ATTEMPTS}",
            retry.attempts
        )));
    }
    for (key, seconds) in [
        ("backoff_seconds", retry.backoff_seconds),
        ("max_backoff_seconds", retry.max_backoff_seconds),
    ] {
        if seconds > MAX_SECONDS {
            return Err(PipelineProblem::from(format!(
                "has `retry: {key}: {seconds}`; the most is {MAX_SECONDS} (a day)"
            )));
        }
    }
    if let Some(problem) = check_limits(&entry.limits) {
        return Err(PipelineProblem::from(format!("has {problem}")));
    }
    if let Err(err) = Protected::new(&entry.protected_paths) {
        return Err(PipelineProblem::from(err.to_string()));
    }
    let timeout_minutes = entry.timeout_minutes.unwrap_or(DEFAULT_RUN_TIMEOUT_MINUTES);
    if timeout_minutes == 0 || timeout_minutes > MAX_TIMEOUT_MINUTES {
        return Err(PipelineProblem::from(format!(
            "has `timeout_minutes: {timeout_minutes}`; use 1 to {MAX_TIMEOUT_MINUTES} (a day)"
        )));
    }
    let clarification = clarification_from(&entry.clarification)?;
    let limits = Limits::default().overridden_by(entry.limits);
    let mut seen = HashSet::new();
    let mut steps = Vec::with_capacity(entry.steps.len());
    for (index, step) in entry.steps.iter().enumerate() {
        let at_step = |problem| PipelineProblem {
            step: Some(index),
            problem,
        };
        let step = step_from(index + 1, step, entry.network, limits).map_err(at_step)?;
        if !seen.insert(step.name.clone()) {
            return Err(at_step(format!(
                "has two steps named `{}`; step names must be unique",
                step.name
            )));
        }
        steps.push(step);
    }
    Ok(Pipeline {
        steps,
        retry: entry.retry,
        network: entry.network,
        limits: entry.limits,
        protected_paths: entry.protected_paths.clone(),
        timeout_minutes,
        clarification,
    })
}

fn clarification_from(entry: &ClarificationEntry) -> Result<Clarification, String> {
    let defaults = Clarification::default();
    let max_rounds = entry.max_rounds.unwrap_or(defaults.max_rounds);
    if max_rounds > MAX_CLARIFICATION_ROUNDS {
        return Err(format!(
            "has `clarification: max_rounds: {max_rounds}`; use 0 (steps may not ask) to {MAX_CLARIFICATION_ROUNDS}"
        ));
    }
    let timeout_hours = entry.timeout_hours.unwrap_or(defaults.timeout_hours);
    if timeout_hours == 0 || timeout_hours > MAX_ANSWER_TIMEOUT_HOURS {
        return Err(format!(
            "has `clarification: timeout_hours: {timeout_hours}`; use 1 to {MAX_ANSWER_TIMEOUT_HOURS} (30 days)"
        ));
    }
    Ok(Clarification {
        max_rounds,
        timeout_hours,
    })
}

/// Step `number` as `entry` describes it, inheriting the pipeline's network and limits.
fn step_from(
    number: usize,
    entry: &StepEntry,
    network: bool,
    limits: Limits,
) -> Result<Step, String> {
    let name = &entry.name;
    if name.trim().is_empty() {
        return Err(format!("step {number} has an empty `name`"));
    }
    let kinds: Vec<&str> = [
        ("run", entry.run.is_some()),
        ("prompt", entry.prompt.is_some()),
        ("approval", entry.approval.is_some()),
    ]
    .into_iter()
    .filter_map(|(kind, given)| given.then_some(kind))
    .collect();
    let action = match (kinds.as_slice(), &entry.run, &entry.prompt, &entry.approval) {
        ([], ..) => {
            return Err(format!(
                "step `{name}` has none of `run`, `prompt` or `approval`; give it `run: <command>`, `prompt: <template>` or `approval: {{}}`"
            ));
        }
        ([first, second, ..], ..) => {
            return Err(format!(
                "step `{name}` has both `{first}` and `{second}`; a step does one thing (runs a command, renders a prompt or waits for an approval), so make them separate steps"
            ));
        }
        (_, Some(run), ..) => {
            let run = run.as_deref().unwrap_or_default();
            if run.trim().is_empty() {
                return Err(format!("step `{name}` has an empty `run` command"));
            }
            only_for_approvals(name, entry)?;
            Action::Run(run.to_owned())
        }
        (_, _, Some(prompt), _) => {
            only_for_approvals(name, entry)?;
            only_for_commands(name, "a prompt", entry)?;
            Action::Prompt(prompt_from(name, prompt.as_ref())?)
        }
        (_, _, _, Some(approval)) => {
            Action::Approval(approval_from(name, approval.as_ref(), entry)?)
        }
        _ => unreachable!("one kind was given"),
    };
    let verify = entry.verify.unwrap_or(name == VERIFY_STEP);
    let retries = match (&action, entry.retries) {
        (Action::Run(_), Some(retries)) if verify && retries > VERIFY_MAX_RETRIES => {
            return Err(format!(
                "step `{name}` verifies the work and has `retries: {retries}`; a verify step runs again at most {VERIFY_MAX_RETRIES} times, since a check that only passes after more hides a flaky check"
            ));
        }
        (Action::Run(_), Some(retries)) if retries > MAX_ATTEMPTS => {
            return Err(format!(
                "step `{name}` has `retries: {retries}`; use 0 to {MAX_ATTEMPTS}"
            ));
        }
        (Action::Run(_), Some(retries)) => retries,
        (Action::Run(_), None) if verify => VERIFY_MAX_RETRIES,
        (Action::Run(_), None) => 0,
        (_, Some(_)) => {
            return Err(format!(
                "step `{name}` has `retries`, which only a step that runs a command (`run:`) has"
            ));
        }
        (_, None) => 0,
    };
    if entry.verify.is_some() && !matches!(action, Action::Run(_)) {
        return Err(format!(
            "step `{name}` has `verify`, which only a step that runs a command (`run:`) has"
        ));
    }
    if entry.retryable.is_some() && matches!(action, Action::Approval(_)) {
        return Err(format!(
            "step `{name}` is an approval and cannot have `retryable`; `/conveyor retry` starts from a step that runs a command or renders a prompt"
        ));
    }
    let timeout_minutes = entry
        .timeout_minutes
        .unwrap_or(DEFAULT_STEP_TIMEOUT_MINUTES);
    if timeout_minutes == 0 || timeout_minutes > MAX_TIMEOUT_MINUTES {
        return Err(format!(
            "step `{name}` has `timeout_minutes: {timeout_minutes}`; use 1 to {MAX_TIMEOUT_MINUTES} (a day)"
        ));
    }
    let limit_settings = entry.limits.unwrap_or_default();
    if let Some(problem) = check_limits(&limit_settings) {
        return Err(format!("step `{name}` has {problem}"));
    }
    Ok(Step {
        name: name.clone(),
        action,
        timeout_minutes,
        network: Some(entry.network.unwrap_or(network)),
        limits: limits.overridden_by(limit_settings),
        retries,
        retryable: entry.retryable.unwrap_or(false),
        verify,
    })
}

/// These only mean something for a command in the sandbox: a gate runs nothing and waits for
/// as long as people take, and Conveyor renders a prompt itself.
fn only_for_commands(name: &str, kind: &str, step: &StepEntry) -> Result<(), String> {
    for (key, given) in [
        ("timeout_minutes", step.timeout_minutes.is_some()),
        ("network", step.network.is_some()),
        ("limits", step.limits.is_some()),
    ] {
        if given {
            return Err(format!(
                "step `{name}` is {kind} and cannot have `{key}`; only a step that runs a command (`run:`) has it"
            ));
        }
    }
    Ok(())
}

/// `required_for_paths` belongs to gates alone.
fn only_for_approvals(name: &str, entry: &StepEntry) -> Result<(), String> {
    match entry.required_for_paths {
        Some(_) => Err(format!(
            "step `{name}` has `required_for_paths`, which only an approval step may have"
        )),
        None => Ok(()),
    }
}

/// The prompt of step `name`: inline text or a template file, never both or neither.
fn prompt_from(name: &str, entry: Option<&PromptEntry>) -> Result<Prompt, String> {
    let empty = || {
        format!(
            "step `{name}` has an empty `prompt`; write the template, or `prompt: {{template: path/in/repo}}`"
        )
    };
    let (template, context_files) = match entry {
        None => return Err(empty()),
        Some(PromptEntry::Inline(text)) => (PromptTemplate::Inline(text.clone()), Vec::new()),
        Some(PromptEntry::Detailed(details)) => {
            let template = match (&details.template, &details.text) {
                (Some(_), Some(_)) => {
                    return Err(format!(
                        "step `{name}` has both `prompt: template` and `prompt: text`; keep one"
                    ));
                }
                (Some(path), None) => {
                    PromptTemplate::File(repository_path(name, "prompt: template", path)?)
                }
                (None, Some(text)) => PromptTemplate::Inline(text.clone()),
                (None, None) => return Err(empty()),
            };
            let files = details
                .context_files
                .iter()
                .map(|path| repository_path(name, "prompt: context_files", path))
                .collect::<Result<_, _>>()?;
            (template, files)
        }
    };
    if let PromptTemplate::Inline(text) = &template
        && text.trim().is_empty()
    {
        return Err(empty());
    }
    Ok(Prompt {
        template,
        context_files,
    })
}

/// A path of the repository as a pipeline names it: relative, inside the repository.
fn repository_path(name: &str, key: &str, path: &str) -> Result<String, String> {
    let trimmed = path.trim();
    let inside = !trimmed.is_empty()
        && !trimmed.starts_with('/')
        && std::path::Path::new(trimmed)
            .components()
            .all(|part| matches!(part, std::path::Component::Normal(_)));
    if inside {
        Ok(trimmed.to_owned())
    } else {
        Err(format!(
            "step `{name}` has `{key}: {}`; give a path inside the repository, such as `prompts/fix.md`",
            title(path, SHOWN_VALUE_MAX_CHARS)
        ))
    }
}

/// The approval of step `name`; `required_for_paths` may sit under `approval:` or beside it.
fn approval_from(
    name: &str,
    approval: Option<&ApprovalEntry>,
    step: &StepEntry,
) -> Result<Approval, String> {
    only_for_commands(name, "an approval", step)?;
    let none = ApprovalEntry::default();
    let approval = approval.unwrap_or(&none);
    let message = match approval.message.as_deref() {
        Some(message) if message.trim().is_empty() => {
            return Err(format!(
                "step `{name}` has an empty `approval: message`; write what approvers should check, or leave `message` out"
            ));
        }
        message => message.map(str::to_owned),
    };
    let required_for_paths = match (&step.required_for_paths, &approval.required_for_paths) {
        (Some(_), Some(_)) => {
            return Err(format!(
                "step `{name}` has `required_for_paths` twice, beside `approval` and under it; keep one"
            ));
        }
        (paths, inner) => paths
            .as_ref()
            .or(inner.as_ref())
            .cloned()
            .unwrap_or_default(),
    };
    if let Err(err) = Protected::new(&required_for_paths) {
        return Err(format!(
            "step `{name}` has `required_for_paths` entry `{}` that is not a valid glob: {}",
            err.glob, err.reason
        ));
    }
    Ok(Approval {
        message,
        required_for_paths,
    })
}

/// The settings a `settings:` block gives; `Null` (no block, or an empty one) gives the
/// defaults.
fn settings_from(block: &Value) -> Result<Settings, DefinitionError> {
    let bad = |problem: String| Err(DefinitionError::BadSettings(problem));
    let mut settings = Settings::default();
    let keys = match block {
        Value::Null => return Ok(settings),
        Value::Mapping(keys) => keys,
        other => {
            return bad(format!(
                "`settings: {}`; `settings` takes keys, one a line below it, such as `trigger_label: {DEFAULT_TRIGGER_LABEL}`",
                shown(other)
            ));
        }
    };
    for (key, value) in keys {
        match key.as_str().unwrap_or_default() {
            "trigger_label" => {
                let label = match value {
                    Value::Null => "",
                    Value::String(label) => label.as_str(),
                    other => {
                        return bad(format!(
                            "`settings: trigger_label: {}`; write the label's name as text, such as `trigger_label: \"{}\"`",
                            shown(other),
                            shown(other)
                        ));
                    }
                };
                if label.trim().is_empty() {
                    return bad(format!(
                        "an empty `settings: trigger_label`; give the name of the label that starts a task, such as `{DEFAULT_TRIGGER_LABEL}`"
                    ));
                }
                if label.chars().count() > LABEL_MAX_CHARS {
                    return bad(format!(
                        "a `settings: trigger_label` of {} characters; GitHub's labels have at most {LABEL_MAX_CHARS}",
                        label.chars().count()
                    ));
                }
                settings.trigger_label = label.to_owned();
            }
            "approver_permission" => {
                settings.approver_permission = match value.as_str().and_then(Permission::from_name)
                {
                    Some(permission) if APPROVER_PERMISSIONS.contains(&permission) => permission,
                    _ => {
                        return bad(format!(
                            "`settings: approver_permission: {}`; use write, maintain or admin",
                            shown(value)
                        ));
                    }
                };
            }
            "allow_self_approval" => {
                let Some(allow) = value.as_bool() else {
                    return bad(format!(
                        "`settings: allow_self_approval: {}`; use true or false",
                        shown(value)
                    ));
                };
                settings.allow_self_approval = allow;
            }
            "allowed_bots" => {
                let example = "such as `allowed_bots: [\"renovate[bot]\"]`";
                let Some(entries) = value.as_sequence() else {
                    return bad(format!(
                        "`settings: allowed_bots: {}`; give a list of bot logins, {example}",
                        shown(value)
                    ));
                };
                let mut bots = Vec::with_capacity(entries.len());
                for entry in entries {
                    match entry.as_str().map(str::trim) {
                        Some(login) if !login.is_empty() => bots.push(login.to_owned()),
                        _ => {
                            return bad(format!(
                                "`settings: allowed_bots` entry `{}` that is not a bot login; list logins, {example}",
                                shown(entry)
                            ));
                        }
                    }
                }
                settings.allowed_bots = bots;
            }
            _ => {
                return bad(format!(
                    "an unknown key `{}` under `settings:`; the keys are trigger_label, approver_permission, allow_self_approval and allowed_bots",
                    shown(key)
                ));
            }
        }
    }
    Ok(settings)
}

/// A YAML value as it would read in the file, on one line and short.
fn shown(value: &Value) -> String {
    let text = match value {
        Value::Null => String::new(),
        Value::Bool(flag) => flag.to_string(),
        Value::Number(number) => number.to_string(),
        Value::String(text) if text.is_empty() => "''".to_owned(),
        Value::String(text) => text.clone(),
        Value::Sequence(_) => "[…]".to_owned(),
        Value::Mapping(_) => "{…}".to_owned(),
        Value::Tagged(tagged) => format!("{} …", tagged.tag),
    };
    title(&text, SHOWN_VALUE_MAX_CHARS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_documented_example() {
        let pipeline = parse(EXAMPLE, "default").unwrap();
        let names: Vec<_> = pipeline.steps.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["implement", "verify"]);
        assert_eq!(pipeline.steps[1].script(), Some("cargo test"));
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
            (
                "pipelines:\n  default:\n    steps: [{name: a, run: x, approval: {}}]",
                "default",
                "step `a` has both `run` and `approval`; a step does one thing (runs a command, renders a prompt or waits for an approval), so make them separate steps",
            ),
            (
                "pipelines:\n  default:\n    steps: [{name: a}]",
                "default",
                "step `a` has none of `run`, `prompt` or `approval`; give it `run: <command>`, `prompt: <template>` or `approval: {}`",
            ),
            (
                "pipelines:\n  default:\n    steps: [{name: a, run: }]",
                "default",
                "step `a` has an empty `run` command",
            ),
            (
                "pipelines:\n  default:\n    steps: [{name: a, run: x, required_for_paths: [src]}]",
                "default",
                "step `a` has `required_for_paths`, which only an approval step may have",
            ),
            (
                "pipelines:\n  default:\n    steps: [{name: a, approval: {}, timeout_minutes: 5}]",
                "default",
                "step `a` is an approval and cannot have `timeout_minutes`; only a step that runs a command (`run:`) has it",
            ),
            (
                "pipelines:\n  default:\n    steps: [{name: a, approval: {}, network: false}]",
                "default",
                "step `a` is an approval and cannot have `network`",
            ),
            (
                "pipelines:\n  default:\n    steps: [{name: a, approval: {}, limits: {processes: 10}}]",
                "default",
                "step `a` is an approval and cannot have `limits`",
            ),
            (
                "pipelines:\n  default:\n    steps: [{name: a, approval: {message: '  '}}]",
                "default",
                "step `a` has an empty `approval: message`",
            ),
            (
                "pipelines:\n  default:\n    steps: [{name: a, approval: {required_for_paths: ['src/[']}}]",
                "default",
                "step `a` has `required_for_paths` entry `src/[` that is not a valid glob",
            ),
            (
                "pipelines:\n  default:\n    steps: [{name: a, required_for_paths: [x], approval: {required_for_paths: [y]}}]",
                "default",
                "step `a` has `required_for_paths` twice, beside `approval` and under it; keep one",
            ),
            (
                "pipelines:\n  default:\n    steps: [{name: a, approval: {reviewers: [x]}}]",
                "default",
                "unknown field `reviewers`",
            ),
            (
                "pipelines:\n  default:\n    steps: [{name: a, approval: yes}]",
                "default",
                "is not valid",
            ),
            (
                "pipelines:\n  default:\n    steps: [{name: a, run: x}, {name: a, approval: {}}]",
                "default",
                "two steps named `a`",
            ),
            (
                "settings: {trigger_label: x}\npipelines:\n  default:\n    steps: [{name: a, run: x}]\nextra: 1",
                "default",
                "unknown field `extra`",
            ),
            (
                "settings: {approver_permission: read}\npipelines:\n  default:\n    steps: [{name: a, run: x}]",
                "default",
                "`settings: approver_permission: read`; use write, maintain or admin",
            ),
            (
                "pipelines:\n  default:\n    steps: [{name: a, run: x, prompt: y}]",
                "default",
                "step `a` has both `run` and `prompt`",
            ),
            (
                "pipelines:\n  default:\n    steps: [{name: a, prompt: }]",
                "default",
                "step `a` has an empty `prompt`",
            ),
            (
                "pipelines:\n  default:\n    steps: [{name: a, prompt: {context_files: [a.md]}}]",
                "default",
                "step `a` has an empty `prompt`",
            ),
            (
                "pipelines:\n  default:\n    steps: [{name: a, prompt: {template: x.md, text: y}}]",
                "default",
                "both `prompt: template` and `prompt: text`",
            ),
            (
                "pipelines:\n  default:\n    steps: [{name: a, prompt: {template: ../secrets}}]",
                "default",
                "step `a` has `prompt: template: ../secrets`; give a path inside the repository",
            ),
            (
                "pipelines:\n  default:\n    steps: [{name: a, prompt: {text: x, context_files: [/etc/passwd]}}]",
                "default",
                "`prompt: context_files: /etc/passwd`; give a path inside the repository",
            ),
            (
                "pipelines:\n  default:\n    steps: [{name: a, prompt: {text: x, files: []}}]",
                "default",
                "is not valid",
            ),
            (
                "pipelines:\n  default:\n    steps: [{name: a, prompt: x, timeout_minutes: 3}]",
                "default",
                "step `a` is a prompt and cannot have `timeout_minutes`",
            ),
            (
                "pipelines:\n  default:\n    steps: [{name: a, prompt: x, retries: 1}]",
                "default",
                "step `a` has `retries`, which only a step that runs a command (`run:`) has",
            ),
            (
                "pipelines:\n  default:\n    steps: [{name: a, approval: {}, retryable: true}]",
                "default",
                "step `a` is an approval and cannot have `retryable`",
            ),
            (
                "pipelines:\n  default:\n    steps: [{name: a, approval: {}, verify: true}]",
                "default",
                "step `a` has `verify`, which only a step that runs a command",
            ),
            (
                "pipelines:\n  default:\n    steps: [{name: a, run: x, retries: 11}]",
                "default",
                "step `a` has `retries: 11`; use 0 to 10",
            ),
            (
                "pipelines:\n  default:\n    steps: [{name: verify, run: x, retries: 3}]",
                "default",
                "step `verify` verifies the work and has `retries: 3`; a verify step runs again at most 2 times",
            ),
            (
                "pipelines:\n  default:\n    steps: [{name: check, verify: true, run: x, retries: 5}]",
                "default",
                "a verify step runs again at most 2 times",
            ),
            (
                "pipelines:\n  default:\n    steps: [{name: a, run: x, retries: -1}]",
                "default",
                "is not valid",
            ),
            (
                "pipelines:\n  default:\n    timeout_minutes: 0\n    steps: [{name: a, run: x}]",
                "default",
                "pipeline `default` has `timeout_minutes: 0`; use 1 to 1440",
            ),
            (
                "task_types: {bug: fix}\npipelines:\n  default:\n    steps: [{name: a, run: x}]",
                "default",
                "has, under `task_types:`, `bug: fix`, but no pipeline is named `fix` (it defines: `default`)",
            ),
            (
                "task_types: {'': default}\npipelines:\n  default:\n    steps: [{name: a, run: x}]",
                "default",
                "under `task_types:`, an empty label",
            ),
            (
                "task_types: [bug]\npipelines:\n  default:\n    steps: [{name: a, run: x}]",
                "default",
                "is not valid",
            ),
        ];
        for (text, name, expected) in cases {
            let err = parse(text, name).unwrap_err().to_string();
            assert!(err.contains(expected), "{text:?}: {err}");
        }
    }

    #[test]
    fn steps_retry_alone_when_they_say_so_and_verify_steps_twice_by_default() {
        let text = "pipelines:
  default:
    steps:
      - {name: build, run: make}
      - {name: flaky, run: ./flaky.sh, retries: 3, retryable: true}
      - {name: verify, run: make test}
      - {name: lint, run: make lint, verify: true}
      - {name: smoke, run: ./smoke.sh, verify: true, retries: 1}
      - {name: check, run: make check, verify: false}
      - {name: gate, approval: {}}
";
        let pipeline = parse(text, "default").unwrap();
        let retries: Vec<(&str, u32, bool)> = pipeline
            .steps
            .iter()
            .map(|step| (step.name.as_str(), step.retries, step.retryable))
            .collect();
        assert_eq!(
            retries,
            [
                ("build", 0, false),
                ("flaky", 3, true),
                ("verify", VERIFY_MAX_RETRIES, false),
                ("lint", VERIFY_MAX_RETRIES, false),
                ("smoke", 1, false),
                ("check", 0, false),
                ("gate", 0, false),
            ]
        );
        assert_eq!(pipeline.timeout_minutes, 120);
        let budget =
            "pipelines:\n  default:\n    timeout_minutes: 30\n    steps: [{name: a, run: x}]";
        assert_eq!(parse(budget, "default").unwrap().timeout_minutes, 30);
    }

    #[test]
    fn clarification_has_defaults_and_bounds() {
        let plain = "pipelines:\n  default:\n    steps: [{name: a, run: x}]";
        assert_eq!(
            parse(plain, "default").unwrap().clarification,
            Clarification {
                max_rounds: 3,
                timeout_hours: 72
            }
        );
        let set = "pipelines:\n  default:\n    clarification: {max_rounds: 1, timeout_hours: 4}\n    steps: [{name: a, run: x}]";
        assert_eq!(
            parse(set, "default").unwrap().clarification,
            Clarification {
                max_rounds: 1,
                timeout_hours: 4
            }
        );
        let partly = "pipelines:\n  default:\n    clarification: {max_rounds: 0}\n    steps: [{name: a, run: x}]";
        assert_eq!(
            parse(partly, "default").unwrap().clarification,
            Clarification {
                max_rounds: 0,
                timeout_hours: 72
            }
        );
        let cases = [
            (
                "clarification: {max_rounds: 11}",
                "pipeline `default` has `clarification: max_rounds: 11`; use 0 (steps may not ask) to 10",
            ),
            (
                "clarification: {timeout_hours: 0}",
                "pipeline `default` has `clarification: timeout_hours: 0`; use 1 to 720 (30 days)",
            ),
            (
                "clarification: {timeout_hours: 721}",
                "`clarification: timeout_hours: 721`",
            ),
            ("clarification: {rounds: 2}", "unknown field `rounds`"),
            ("clarification: {max_rounds: -1}", "is not valid"),
            ("clarification: 3", "is not valid"),
        ];
        for (key, expected) in cases {
            let text =
                format!("pipelines:\n  default:\n    {key}\n    steps: [{{name: a, run: x}}]");
            let err = parse(&text, "default").unwrap_err().to_string();
            assert!(err.contains(expected), "{key}: {err}");
        }
    }

    #[test]
    fn a_prompt_is_inline_text_or_a_template_file_with_context_files() {
        let text = "pipelines:
  default:
    steps:
      - name: plain
        prompt: 'Fix {{ task.title }}'
      - name: written
        prompt: {text: 'Fix it', context_files: [README.md, docs/a.md]}
      - name: from-file
        prompt: {template: .github/prompts/fix.md}
        retryable: true
";
        let pipeline = parse(text, "default").unwrap();
        let prompts: Vec<&Action> = pipeline.steps.iter().map(|step| &step.action).collect();
        assert_eq!(
            prompts,
            [
                &Action::Prompt(Prompt {
                    template: PromptTemplate::Inline("Fix {{ task.title }}".into()),
                    context_files: vec![],
                }),
                &Action::Prompt(Prompt {
                    template: PromptTemplate::Inline("Fix it".into()),
                    context_files: vec!["README.md".into(), "docs/a.md".into()],
                }),
                &Action::Prompt(Prompt {
                    template: PromptTemplate::File(".github/prompts/fix.md".into()),
                    context_files: vec![],
                }),
            ]
        );
        assert!(pipeline.steps[2].retryable);
        assert_eq!(pipeline.steps[0].script(), None);
    }

    #[test]
    fn a_task_runs_the_pipeline_it_names_else_its_labels_type_else_the_default() {
        let text = "task_types: {bug: fix, documentation: docs}
pipelines:
  default: {steps: [{name: a, run: x}]}
  fix: {steps: [{name: a, run: x}]}
  docs: {steps: [{name: a, run: x}]}
";
        let labels = |names: &[&str]| names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>();
        let cases: &[(Option<&str>, &[&str], &str)] = &[
            (None, &[], "default"),
            (None, &["conveyor", "question"], "default"),
            (None, &["conveyor", "bug"], "fix"),
            (None, &["documentation", "bug"], "docs"),
            (Some("fix"), &["documentation"], "fix"),
            (Some("default"), &["bug"], "default"),
        ];
        for (named, given, expected) in cases {
            assert_eq!(
                choose(text, *named, &labels(given)).unwrap(),
                *expected,
                "{named:?} {given:?}"
            );
        }
        let unknown = choose(text, Some("deploy"), &[]).unwrap_err().to_string();
        assert!(
            unknown.contains("no pipeline named `deploy` (it defines: `default`, `docs`, `fix`)"),
            "{unknown}"
        );
        let no_default = "pipelines:\n  fix: {steps: [{name: a, run: x}]}";
        assert!(
            choose(no_default, None, &[])
                .unwrap_err()
                .to_string()
                .contains("no pipeline named `default` (it defines: `fix`)")
        );
    }

    #[test]
    fn the_trigger_label_starts_a_task_and_a_label_after_it_names_the_pipeline() {
        let settings = Settings {
            trigger_label: "ship".into(),
            ..Settings::default()
        };
        let cases: &[(&str, Option<Option<&str>>)] = &[
            ("ship", Some(None)),
            ("ship:docs", Some(Some("docs"))),
            ("ship: fix ", Some(Some("fix"))),
            ("ship:", None),
            ("ship-docs", None),
            ("shipping:docs", None),
            ("Ship", None),
            ("bug", None),
        ];
        for (label, expected) in cases {
            assert_eq!(settings.started_by(label), *expected, "{label:?}");
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

    #[test]
    fn settings_have_defaults_and_take_each_key() {
        let cases: &[(&str, Settings)] = &[
            ("pipelines: {}", Settings::default()),
            ("settings:\npipelines: {}", Settings::default()),
            ("settings: {}", Settings::default()),
            (
                "settings:\n  trigger_label: ship-it\n  approver_permission: maintain\n  allow_self_approval: true\n  allowed_bots: [renovate, ' dependabot[bot] ']\n",
                Settings {
                    trigger_label: "ship-it".into(),
                    approver_permission: Permission::Maintain,
                    allow_self_approval: true,
                    allowed_bots: vec!["renovate".into(), "dependabot[bot]".into()],
                },
            ),
            (
                "settings: {approver_permission: admin}",
                Settings {
                    approver_permission: Permission::Admin,
                    ..Settings::default()
                },
            ),
            (
                "settings: {approver_permission: write, allowed_bots: []}",
                Settings::default(),
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(&parse_settings(text).unwrap(), expected, "{text:?}");
        }
        let defaults = Settings::default();
        assert_eq!(defaults.trigger_label, "conveyor");
        assert_eq!(defaults.approver_permission, Permission::Write);
        assert!(!defaults.allow_self_approval && defaults.allowed_bots.is_empty());
    }

    #[test]
    fn bad_settings_say_how_to_fix_them() {
        let cases = [
            (
                "settings: {approver_permission: read}",
                "`.github/conveyor.yml` has `settings: approver_permission: read`; use write, maintain or admin.",
            ),
            (
                "settings: {approver_permission: triage}",
                "`settings: approver_permission: triage`; use write, maintain or admin",
            ),
            (
                "settings: {approver_permission: Write}",
                "`settings: approver_permission: Write`; use write, maintain or admin",
            ),
            (
                "settings: {approver_permission: 3}",
                "`settings: approver_permission: 3`; use write",
            ),
            (
                "settings: {trigger_label: ''}",
                "an empty `settings: trigger_label`; give the name of the label that starts a task, such as `conveyor`",
            ),
            (
                "settings: {trigger_label: }",
                "an empty `settings: trigger_label`",
            ),
            (
                "settings: {trigger_label: 42}",
                "`settings: trigger_label: 42`; write the label's name as text, such as `trigger_label: \"42\"`",
            ),
            (
                "settings: {trigger_label: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa}",
                "a `settings: trigger_label` of 51 characters; GitHub's labels have at most 50",
            ),
            (
                "settings: {allow_self_approval: 'yes'}",
                "`settings: allow_self_approval: yes`; use true or false",
            ),
            (
                "settings: {allowed_bots: renovate}",
                "`settings: allowed_bots: renovate`; give a list of bot logins, such as `allowed_bots: [\"renovate[bot]\"]`",
            ),
            (
                "settings: {allowed_bots: [renovate, '']}",
                "`settings: allowed_bots` entry `''` that is not a bot login",
            ),
            (
                "settings: {allowed_bots: [[x]]}",
                "`settings: allowed_bots` entry `[…]` that is not a bot login",
            ),
            (
                "settings: {approvers: [alice]}",
                "an unknown key `approvers` under `settings:`; the keys are trigger_label, approver_permission, allow_self_approval and allowed_bots",
            ),
            (
                "settings: [trigger_label]",
                "`settings: […]`; `settings` takes keys, one a line below it, such as `trigger_label: conveyor`",
            ),
            ("settings: {a: 1", "is not valid"),
        ];
        for (text, expected) in cases {
            let err = parse_settings(text).unwrap_err().to_string();
            assert!(err.contains(expected), "{text:?}: {err}");
        }
    }

    #[test]
    fn settings_survive_a_broken_pipeline_but_not_the_other_way_round() {
        let broken_pipeline = "settings: {trigger_label: go}\npipelines:\n  default:\n    steps: []\n    colour: red\n";
        assert_eq!(parse_settings(broken_pipeline).unwrap().trigger_label, "go");
        assert!(parse(broken_pipeline, "default").is_err());
        let broken_settings = format!("settings: {{allow_self_approval: maybe}}\n{EXAMPLE}");
        let err = parse(&broken_settings, "default").unwrap_err();
        assert!(matches!(err, DefinitionError::BadSettings(_)), "{err}");
        let with_settings = format!("settings: {{trigger_label: go}}\n{EXAMPLE}");
        assert_eq!(parse(&with_settings, "default").unwrap().steps.len(), 2);
    }

    #[test]
    fn a_step_is_a_command_or_an_approval() {
        let text = "pipelines:
  default:
    network: false
    steps:
      - name: implement
        run: ./do-it.sh
      - name: bare
        approval:
      - name: empty
        approval: {}
      - name: review
        approval:
          message: Check the change before the pull request opens
          required_for_paths: ['src/**', Cargo.toml]
      - name: beside
        required_for_paths: ['migrations/*.sql']
        approval: {message: Look at the schema}
";
        let pipeline = parse(text, "default").unwrap();
        let actions: Vec<(&str, &Action)> = pipeline
            .steps
            .iter()
            .map(|step| (step.name.as_str(), &step.action))
            .collect();
        let approval = |message: Option<&str>, paths: &[&str]| {
            Action::Approval(Approval {
                message: message.map(str::to_owned),
                required_for_paths: paths.iter().map(|path| (*path).to_owned()).collect(),
            })
        };
        assert_eq!(
            actions,
            [
                ("implement", &Action::Run("./do-it.sh".into())),
                ("bare", &approval(None, &[])),
                ("empty", &approval(None, &[])),
                (
                    "review",
                    &approval(
                        Some("Check the change before the pull request opens"),
                        &["src/**", "Cargo.toml"]
                    )
                ),
                (
                    "beside",
                    &approval(Some("Look at the schema"), &["migrations/*.sql"])
                ),
            ]
        );
        assert_eq!(pipeline.steps[0].script(), Some("./do-it.sh"));
        assert_eq!(pipeline.steps[1].script(), None);
        assert!(!pipeline.steps[0].has_network());
        assert_eq!(
            Step::approval("bare", Approval::default()),
            Step {
                network: Some(true),
                ..pipeline.steps[1].clone()
            }
        );
    }

    #[test]
    fn an_approval_is_needed_when_no_paths_are_listed_or_a_listed_one_changed() {
        let approval = |paths: &[&str]| Approval {
            message: None,
            required_for_paths: paths.iter().map(|path| (*path).to_owned()).collect(),
        };
        let cases: &[(&[&str], &[&str], bool)] = &[
            (&[], &[], true),
            (&[], &["README.md"], true),
            (&["src/**"], &["README.md", "docs/a.md"], false),
            (&["src/**"], &["README.md", "src/deep/lib.rs"], true),
            (&["src/**"], &[], false),
            (&["*.toml"], &["crates/a/Cargo.toml"], false),
            (&["*.toml", "**/*.toml"], &["crates/a/Cargo.toml"], true),
            (&["migrations/*.sql"], &["migrations/1.sql"], true),
        ];
        for (paths, changed, expected) in cases {
            assert_eq!(
                approval_needed(&approval(paths), changed),
                Ok(*expected),
                "{paths:?} {changed:?}"
            );
        }
        assert_eq!(
            approval_needed(&approval(&["a/["]), &["a"]),
            Err(DefinitionError::BadGlob {
                glob: "a/[".into(),
                reason: "unclosed character class; missing ']'".into()
            })
        );
    }
}
