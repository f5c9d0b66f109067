//! Prometheus metrics, served at `GET /metrics`: what arrives (deliveries by event and
//! outcome, how long storing them took), what waits (tasks by state, effects not yet
//! delivered to GitHub, read from Postgres at each scrape) and how runs end (by pipeline and
//! outcome, with their durations). Labels take only bounded values: no task or delivery id
//! is ever one.

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use sqlx::PgExecutor;

use crate::engine::TaskState;

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

/// A run ended, `outcome` being its error type or `succeeded`, after `took`.
pub fn run_ended(pipeline: &str, outcome: &'static str, took: Duration) {
    handle();
    let pipeline = if pipeline.chars().count() <= PIPELINE_LABEL_MAX_CHARS {
        pipeline.to_owned()
    } else {
        "other".to_owned()
    };
    let labels = [("pipeline", pipeline), ("outcome", outcome.to_owned())];
    metrics::counter!("conveyor_runs_total", &labels).increment(1);
    metrics::histogram!("conveyor_run_seconds", &labels).record(took.as_secs_f64());
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
    Ok(handle.render())
}
