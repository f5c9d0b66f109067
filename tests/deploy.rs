//! The deploy files say what the service does: `app-manifest.json` subscribes to exactly the
//! events Conveyor acts on, and `fly.toml` runs the subcommands that exist, on the port the
//! service listens on, with a health check on a route that answers.

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use conveyor::webhook::event::{Event, EventKind};
use support::{Harness, send};

fn repo_file(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap()
}

/// Events GitHub delivers to every App whatever it subscribes to; a manifest cannot list them.
const ALWAYS_DELIVERED: [&str; 2] = ["installation", "installation_repositories"];

#[test]
fn the_manifest_subscribes_to_exactly_the_events_conveyor_acts_on() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/github-webhooks");
    let mut acted_on = BTreeSet::new();
    let mut seen = BTreeSet::new();
    for dir in std::fs::read_dir(&fixtures).unwrap() {
        let dir = dir.unwrap().path();
        if !dir.is_dir() {
            continue;
        }
        let event = dir.file_name().unwrap().to_str().unwrap().to_owned();
        for file in std::fs::read_dir(&dir).unwrap() {
            let payload = std::fs::read(file.unwrap().path()).unwrap();
            let Ok(parsed) = Event::parse(&event, &payload) else {
                continue;
            };
            seen.insert(event.clone());
            if parsed.kind != EventKind::Unhandled {
                acted_on.insert(event.clone());
            }
        }
    }
    assert!(seen.len() >= 10, "the fixture corpus is there: {seen:?}");
    for event in ALWAYS_DELIVERED {
        assert!(acted_on.remove(event), "{event} is acted on: {acted_on:?}");
    }
    let manifest: serde_json::Value =
        serde_json::from_str(&repo_file("app-manifest.json")).unwrap();
    let subscribed: BTreeSet<String> = manifest["default_events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|event| event.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        subscribed, acted_on,
        "app-manifest.json's default_events must be the events Conveyor acts on"
    );
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn fly_toml_runs_the_service_as_it_is_built(pool: sqlx::PgPool) {
    let fly: toml::Table = toml::from_str(&repo_file("fly.toml")).unwrap();
    let env = fly["env"].as_table().unwrap();
    let listen = env["CONVEYOR_LISTEN"].as_str().unwrap();
    let port: i64 = listen.rsplit_once(':').unwrap().1.parse().unwrap();
    let service = fly["http_service"].as_table().unwrap();
    assert_eq!(service["internal_port"].as_integer(), Some(port));

    // The commands it runs are subcommands of this binary.
    let release = fly["deploy"]["release_command"].as_str().unwrap();
    assert_eq!(release, "conveyor migrate");
    let app = fly["processes"]["app"].as_str().unwrap();
    assert_eq!(app, "conveyor serve");
    for command in [release, app] {
        let subcommand = command.strip_prefix("conveyor ").unwrap();
        let help = Command::new(env!("CARGO_BIN_EXE_conveyor"))
            .args([subcommand, "--help"])
            .output()
            .unwrap();
        assert!(help.status.success(), "`{command}` is no subcommand");
    }

    // The machine is killed only after the service's grace period is over.
    let grace: u64 = env["CONVEYOR_SHUTDOWN_GRACE_SECS"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let kill: u64 = fly["kill_timeout"]
        .as_str()
        .unwrap()
        .strip_suffix('s')
        .unwrap()
        .parse()
        .unwrap();
    assert!(kill > grace, "kill_timeout {kill}s, grace {grace}s");

    // Its health check asks a route that answers once Postgres does.
    let harness = Harness::start(pool).await;
    let checks = service["checks"].as_array().unwrap();
    assert!(!checks.is_empty());
    for check in checks {
        assert_eq!(check["method"].as_str(), Some("GET"));
        let path = check["path"].as_str().unwrap();
        let request = Request::get(path).body(Body::empty()).unwrap();
        assert_eq!(
            send(&harness.router, request).await.0,
            StatusCode::OK,
            "{path}"
        );
    }
}
