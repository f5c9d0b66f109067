//! Prometheus metrics, served at `GET /metrics`: what arrives (deliveries by event and
//! outcome, how long storing them took), what waits (tasks by state, effects not yet
//! delivered to GitHub and worker sessions by health, read from Postgres at each scrape; how
//! long claimed tasks waited), how runs and their steps end (by pipeline, step kind and
//! outcome, with their durations) and how GitHub answers (by route template and status, with
//! the rate limit left). Labels take only bounded values: no task, delivery or repository is
//! ever one, and names repositories choose (pipelines) are capped in number.

use std::collections::HashSet;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use sqlx::PgExecutor;

use crate::engine::TaskState;
use crate::pipeline::StepResult;
use crate::pipeline::definition::{Action, Step};

/// Histogram buckets in seconds: intake takes milliseconds, runs take minutes.
const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    300.0, 900.0, 3600.0,
];

/// Events Conveyor names in `conveyor_deliveries_total`; any other is counted as `other`,
/// so a stream of made-up event names cannot grow the label set.
const EVENTS: &[&str] = &[
    "issues",
    "issue_comment",
    "pull_request",
    "pull_request_review_comment",
    "check_run",
    "check_suite",
    "installation",
    "installation_repositories",
    "ping",
];

/// A pipeline name longer than this is counted under `other`: names come from repositories.
const PIPELINE_LABEL_MAX_CHARS: usize = 40;
/// Pipelines past this many distinct names are counted under `other`, however many
/// repositories name new ones: each name multiplies every series it labels.
pub const PIPELINE_LABELS_MAX: usize = 24;

/// The process's recorder, made on first use.
fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        PrometheusBuilder::new()
            .set_buckets(BUCKETS)
            .expect("the buckets are not empty")
            .install_recorder()
            .expect("no other metrics recorder is installed")
    })
}

/// The label of webhook event `event`.
pub fn event_label(event: &str) -> &'static str {
    EVENTS
        .iter()
        .find(|known| **known == event)
        .copied()
        .unwrap_or("other")
}

/// A webhook delivery of `event` (an [`event_label`]) answered: `outcome` is `stored`,
/// `duplicate`, `rejected` or `failed`.
pub fn delivery(event: &'static str, outcome: &'static str, took: Duration) {
    handle();
    metrics::counter!("conveyor_deliveries_total", "event" => event, "outcome" => outcome)
        .increment(1);
    metrics::histogram!("conveyor_intake_seconds", "outcome" => outcome).record(took.as_secs_f64());
}

/// The label of pipeline `name`: the name itself while it is short and among the first
/// [`PIPELINE_LABELS_MAX`] this process labelled, `other` after.
fn pipeline_label(name: &str) -> String {
    static SEEN: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    if name.chars().count() > PIPELINE_LABEL_MAX_CHARS || name == "other" {
        return "other".to_owned();
    }
    let mut seen = SEEN
        .get_or_init(Mutex::default)
        .lock()
        .expect("label set lock");
    if seen.contains(name) || seen.len() < PIPELINE_LABELS_MAX {
        seen.insert(name.to_owned());
        name.to_owned()
    } else {
        "other".to_owned()
    }
}

/// A run ended, `outcome` being its error type or `succeeded`, after `took`.
pub fn run_ended(pipeline: &str, outcome: &'static str, took: Duration) {
    handle();
    let labels = [
        ("pipeline", pipeline_label(pipeline)),
        ("outcome", outcome.to_owned()),
    ];
    metrics::counter!("conveyor_runs_total", &labels).increment(1);
    metrics::histogram!("conveyor_run_seconds", &labels).record(took.as_secs_f64());
}

/// A worker started a task that had been claimable for `waited` (seed 004 §8.3).
pub fn queue_wait(waited: Duration) {
    handle();
    metrics::histogram!("conveyor_queue_wait_seconds").record(waited.as_secs_f64());
}

/// An attempt at `step` of `pipeline` ended with `result`. Step names are no label: a
/// repository names as many as it likes, and the kind says what the time went on; a verify
/// step's time is also kept apart, as the cost of checking the work.
pub fn step_ended(pipeline: &str, step: &Step, result: &StepResult) {
    handle();
    let kind = match step.action {
        Action::Run(_) => "run",
        Action::Prompt(_) => "prompt",
        Action::Approval(_) => "approval",
    };
    let outcome = if result.succeeded() {
        "succeeded"
    } else if result.asks() {
        "asked"
    } else if result.out_of_budget {
        "out_of_budget"
    } else if result.timed_out {
        "timed_out"
    } else {
        "failed"
    };
    let pipeline = pipeline_label(pipeline);
    let took = result.duration.as_secs_f64();
    metrics::histogram!("conveyor_step_seconds", "pipeline" => pipeline.clone(), "kind" => kind, "outcome" => outcome)
        .record(took);
    if step.verify {
        metrics::histogram!("conveyor_verify_seconds", "pipeline" => pipeline, "outcome" => outcome)
            .record(took);
    }
}

/// A request to GitHub's `endpoint` (a route template) answered `status` (`None`: no answer)
/// after `took`.
pub fn github_request(endpoint: &'static str, status: Option<u16>, took: Duration) {
    handle();
    let status = status.map_or_else(|| "error".to_owned(), |status| status.to_string());
    metrics::counter!("conveyor_github_requests_total", "endpoint" => endpoint, "status" => status)
        .increment(1);
    metrics::histogram!("conveyor_github_request_seconds", "endpoint" => endpoint)
        .record(took.as_secs_f64());
}

/// Rate-limit resources GitHub names in `x-ratelimit-resource`; any other counts as `other`.
const RATE_LIMIT_RESOURCES: &[&str] = &["core", "search", "graphql", "integration_manifest"];

/// GitHub said `remaining` requests are left of `resource`'s rate limit.
pub fn github_rate_limit(resource: &str, remaining: f64) {
    handle();
    let resource = RATE_LIMIT_RESOURCES
        .iter()
        .find(|known| **known == resource)
        .copied()
        .unwrap_or("other");
    metrics::gauge!("conveyor_github_rate_limit_remaining", "resource" => resource).set(remaining);
}

/// The metrics in Prometheus' text format, with the gauges read from `db` now.
pub async fn render(db: impl PgExecutor<'_> + Copy) -> sqlx::Result<String> {
    let handle = handle();
    let by_state: Vec<(TaskState, i64)> =
        sqlx::query_as("SELECT state, count(*) FROM tasks GROUP BY state")
            .fetch_all(db)
            .await?;
    for state in TaskState::ALL {
        let count = by_state
            .iter()
            .find(|(counted, _)| *counted == state)
            .map_or(0, |(_, count)| *count);
        metrics::gauge!("conveyor_tasks", "state" => state.as_str()).set(count as f64);
    }
    let backlog: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox WHERE delivered_at IS NULL")
        .fetch_one(db)
        .await?;
    metrics::gauge!("conveyor_outbox_backlog").set(backlog as f64);
    // Processes that stopped heartbeating are removed by the rescue, so the sum is of live ones.
    let (healthy, unhealthy): (i64, i64) = sqlx::query_as(
        "SELECT COALESCE(sum(healthy_sessions), 0)::BIGINT,
                COALESCE(sum(sessions - healthy_sessions), 0)::BIGINT
         FROM worker_processes",
    )
    .fetch_one(db)
    .await?;
    metrics::gauge!("conveyor_sessions", "health" => "healthy").set(healthy as f64);
    metrics::gauge!("conveyor_sessions", "health" => "unhealthy").set(unhealthy as f64);
    Ok(handle.render())
}
