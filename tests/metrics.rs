//! `GET /metrics` is Prometheus' text format, and it moves when deliveries arrive and runs
//! end. (Alone in its binary: the recorder is the process's.)

mod support;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use conveyor::engine::TaskState;
use prometheus_parse::{Sample, Scrape, Value};
use support::{Harness, wait_until};
use tower::ServiceExt;

async fn scrape(harness: &Harness) -> Scrape {
    let request = Request::get("/metrics").body(Body::empty()).unwrap();
    let response = harness.router.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let text = String::from_utf8(body.to_vec()).unwrap();
    let lines = text.lines().map(|line| Ok(line.to_owned()));
    Scrape::parse(lines).unwrap()
}

/// The value of `metric` with exactly `labels`, if it is there.
fn value(scrape: &Scrape, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let matches = |sample: &&Sample| {
        sample.metric == metric
            && sample.labels.len() == labels.len()
            && labels
                .iter()
                .all(|(name, value)| sample.labels.get(name) == Some(*value))
    };
    scrape
        .samples
        .iter()
        .find(matches)
        .map(|sample| match &sample.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            Value::Histogram(buckets) => buckets.last().map_or(0.0, |bucket| bucket.count),
            Value::Summary(_) => f64::NAN,
        })
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn metrics_count_deliveries_tasks_and_runs(pool: sqlx::PgPool) {
    let harness = Harness::start(pool).await;
    let before = scrape(&harness).await;
    assert_eq!(
        value(&before, "conveyor_tasks", &[("state", "succeeded")]),
        Some(0.0)
    );
    assert_eq!(
        value(
            &before,
            "conveyor_deliveries_total",
            &[("event", "issues"), ("outcome", "stored")]
        ),
        None
    );

    assert_eq!(value(&before, "conveyor_queue_wait_seconds", &[]), None);
    let healthy = [("health", "healthy")];
    wait_until("the workers' first heartbeat", || async {
        (value(&scrape(&harness).await, "conveyor_sessions", &healthy) == Some(2.0)).then_some(())
    })
    .await;

    harness.add_repo(&[(
        ".github/conveyor.yml",
        "pipelines:\n  default:\n    steps:\n      - {name: work, run: 'echo done > NOTES.md'}\n      - {name: check, verify: true, run: 'test -s NOTES.md'}\n",
    )]);
    let (_, state) = harness.label_and_finish("d-1", 5, "Do the work").await;
    assert_eq!(state, TaskState::Succeeded);
    let after = scrape(&harness).await;
    let stored = [("event", "issues"), ("outcome", "stored")];
    assert_eq!(
        value(&after, "conveyor_deliveries_total", &stored),
        Some(1.0)
    );
    assert_eq!(
        value(&after, "conveyor_intake_seconds", &[("outcome", "stored")]),
        Some(1.0)
    );
    let run = [("pipeline", "default"), ("outcome", "succeeded")];
    assert_eq!(value(&after, "conveyor_runs_total", &run), Some(1.0));
    assert_eq!(value(&after, "conveyor_run_seconds", &run), Some(1.0));
    assert_eq!(
        value(&after, "conveyor_tasks", &[("state", "succeeded")]),
        Some(1.0)
    );
    assert_eq!(
        value(&after, "conveyor_tasks", &[("state", "queued")]),
        Some(0.0)
    );
    assert_eq!(value(&after, "conveyor_outbox_backlog", &[]), Some(0.0));
    assert_eq!(value(&after, "conveyor_queue_wait_seconds", &[]), Some(1.0));
    let steps = [
        ("pipeline", "default"),
        ("kind", "run"),
        ("outcome", "succeeded"),
    ];
    assert_eq!(value(&after, "conveyor_step_seconds", &steps), Some(2.0));
    let verified = [("pipeline", "default"), ("outcome", "succeeded")];
    assert_eq!(
        value(&after, "conveyor_verify_seconds", &verified),
        Some(1.0)
    );
    assert_eq!(value(&after, "conveyor_sessions", &healthy), Some(2.0));

    // GitHub calls are named by route template, never by the repository or ids they name.
    let github: Vec<&Sample> = after
        .samples
        .iter()
        .filter(|sample| sample.metric == "conveyor_github_requests_total")
        .collect();
    let answered = |endpoint: &str| {
        github
            .iter()
            .filter(|sample| {
                sample.labels.get("endpoint") == Some(endpoint)
                    && sample
                        .labels
                        .get("status")
                        .is_some_and(|s| s.starts_with('2'))
            })
            .count()
    };
    assert_eq!(
        answered("POST /app/installations/:installation_id/access_tokens"),
        1
    );
    assert_eq!(answered("POST /repos/:owner/:repo/check-runs"), 1);
    for sample in &github {
        let endpoint = sample.labels.get("endpoint").unwrap();
        assert!(!endpoint.contains(support::OWNER), "{endpoint}");
    }
    assert!(
        value(
            &after,
            "conveyor_github_request_seconds",
            &[("endpoint", "POST /repos/:owner/:repo/check-runs")]
        )
        .is_some_and(|count| count >= 1.0)
    );
    assert!(
        value(
            &after,
            "conveyor_github_rate_limit_remaining",
            &[("resource", "core")]
        )
        .is_some_and(|remaining| remaining > 0.0)
    );
    assert_eq!(
        value(&after, "conveyor_sessions", &[("health", "unhealthy")]),
        Some(0.0)
    );
}
