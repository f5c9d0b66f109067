//! However many pipelines, steps, events and GitHub routes repositories and senders bring,
//! every label of `/metrics` keeps a bounded set of values. (Alone in its binary: the
//! recorder is the process's, and the names this test makes up would crowd out others'.)

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use conveyor::github::transport::endpoint;
use conveyor::metrics;
use conveyor::pipeline::StepResult;
use conveyor::pipeline::definition::Step;
use prometheus_parse::Scrape;

const NAMES: usize = 200;

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn label_values_stay_bounded_whatever_names_come_in(pool: sqlx::PgPool) {
    for i in 0..NAMES {
        let pipeline = format!("pipeline-{i}");
        metrics::run_ended(&pipeline, "succeeded", Duration::from_millis(5));
        let step = Step::new(&format!("step-{i}"), "true");
        let result = StepResult {
            position: i,
            name: step.name.clone(),
            command: "true".to_owned(),
            exit_code: Some(i as i32 % 3),
            duration: Duration::from_millis(3),
            output: String::new(),
            timed_out: false,
            out_of_budget: false,
            attempts: 1,
        };
        metrics::step_ended(&pipeline, &step, &result);
        metrics::delivery(
            metrics::event_label(&format!("event-{i}")),
            "stored",
            Duration::from_millis(1),
        );
        metrics::queue_wait(Duration::from_millis(i as u64));
        let route = format!("/repos/owner-{i}/repo-{i}/pulls/{i}");
        metrics::github_request(
            endpoint("GET", &route),
            Some(200 + i as u16 % 7),
            Duration::from_millis(2),
        );
        metrics::github_rate_limit(&format!("resource-{i}"), i as f64);
    }
    let text = metrics::render(&pool).await.unwrap();
    let scrape = Scrape::parse(text.lines().map(|line| Ok(line.to_owned()))).unwrap();
    let mut values: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for sample in &scrape.samples {
        for (label, value) in sample.labels.iter() {
            values
                .entry((sample.metric.clone(), label.clone()))
                .or_default()
                .insert(value.clone());
        }
    }
    let pipelines = &values[&("conveyor_runs_total".to_owned(), "pipeline".to_owned())];
    assert!(pipelines.contains("other"), "{pipelines:?}");
    for ((metric, label), seen) in &values {
        assert!(
            seen.len() <= metrics::PIPELINE_LABELS_MAX + 1,
            "{metric}{{{label}}} took {} values: {seen:?}",
            seen.len()
        );
        assert!(
            !seen
                .iter()
                .any(|value| value.starts_with("step-") || value.contains("owner-")),
            "{metric}{{{label}}} names steps or repositories: {seen:?}"
        );
    }
}
