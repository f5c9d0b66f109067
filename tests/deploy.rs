//! The deploy files say what the service does: `app-manifest.json` subscribes to exactly the
//! events Conveyor acts on, `fly.toml` runs the subcommands that exist, on the port the
//! service listens on, with a health check on a route that answers, and `docker-compose.yml`
//! starts the image with settings Conveyor reads, its volume where the image keeps its data.

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
    let fixtures = support::fixtures_dir();
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

/// The environment variables Conveyor reads, as `src/config.rs` declares them.
fn config_env_names() -> BTreeSet<String> {
    let config = repo_file("src/config.rs");
    config
        .split("env = \"")
        .skip(1)
        .map(|rest| rest.split('"').next().unwrap().to_owned())
        .collect()
}

fn yaml_str<'a>(value: &'a serde_norway::Value, key: &str) -> &'a str {
    value[key]
        .as_str()
        .unwrap_or_else(|| panic!("`{key}` is a string: {value:?}"))
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn docker_compose_runs_the_image_as_it_is_built(pool: sqlx::PgPool) {
    let compose: serde_norway::Value =
        serde_norway::from_str(&repo_file("docker-compose.yml")).unwrap();
    let dockerfile = repo_file("Dockerfile");
    let services = &compose["services"];
    let postgres = &services["postgres"];
    assert!(
        yaml_str(postgres, "image").starts_with("postgres:15"),
        "{postgres:?}"
    );
    let conveyor = &services["conveyor"];
    assert_eq!(
        conveyor["build"].as_str(),
        Some("."),
        "built from the Dockerfile"
    );
    assert_eq!(
        conveyor["depends_on"]["postgres"]["condition"].as_str(),
        Some("service_healthy")
    );

    // Every setting it passes is one Conveyor reads.
    let known = config_env_names();
    let env = conveyor["environment"].as_mapping().unwrap();
    for name in env.keys().map(|key| key.as_str().unwrap()) {
        assert!(
            known.contains(name) || name == "RUST_LOG",
            "{name} is no setting of src/config.rs"
        );
    }
    let env_str = |name: &str| {
        env.get(name)
            .and_then(|value| value.as_str())
            .unwrap_or_else(|| panic!("{name} is set"))
            .to_owned()
    };

    // It reaches the Postgres service with the credentials that service is made with.
    let pg_env = &postgres["environment"];
    let database_url = url::Url::parse(&env_str("DATABASE_URL")).unwrap();
    assert_eq!(database_url.host_str(), Some("postgres"));
    assert_eq!(database_url.username(), yaml_str(pg_env, "POSTGRES_USER"));
    assert_eq!(
        database_url.password(),
        Some(yaml_str(pg_env, "POSTGRES_PASSWORD"))
    );
    assert_eq!(
        database_url.path(),
        format!("/{}", yaml_str(pg_env, "POSTGRES_DB"))
    );

    // The port it listens on is the one published and the one its health check asks.
    let listen = env_str("CONVEYOR_LISTEN");
    let (host, port) = listen.rsplit_once(':').unwrap();
    assert_eq!(host, "0.0.0.0", "reachable from outside the container");
    let published: Vec<&str> = conveyor["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|mapping| mapping.as_str().unwrap().rsplit(':').next().unwrap())
        .collect();
    assert_eq!(published, [port]);
    let check: Vec<&str> = conveyor["healthcheck"]["test"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|part| part.as_str().unwrap())
        .collect();
    assert_eq!(check[0], "CMD");
    let health_url = url::Url::parse(check.last().unwrap()).unwrap();
    assert_eq!(
        health_url.port().map(|p| p.to_string()).as_deref(),
        Some(port)
    );
    let tool = check[1];
    assert!(
        dockerfile.contains(&format!(" {tool} ")),
        "the image installs `{tool}` for the health check"
    );
    let harness = Harness::start(pool).await;
    let request = Request::get(health_url.path()).body(Body::empty()).unwrap();
    assert_eq!(send(&harness.router, request).await.0, StatusCode::OK);

    // The volume is mounted where the image keeps its data, and the data dir is inside it.
    assert!(
        dockerfile.contains("mkdir -p /data"),
        "the image makes /data"
    );
    assert!(dockerfile.contains("WORKDIR /data"));
    let mounts: Vec<&str> = conveyor["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|mount| mount.as_str().unwrap())
        .collect();
    let (volume, target) = mounts[0].split_once(':').unwrap();
    assert_eq!(target, "/data");
    assert!(
        compose["volumes"]
            .as_mapping()
            .unwrap()
            .contains_key(volume)
    );
    assert!(env_str("CONVEYOR_DATA_DIR").starts_with("/data/"));
}

/// Builds the image only where docker works: CI does not depend on it.
#[test]
fn the_image_builds_where_docker_exists() {
    let docker = Command::new("docker").arg("info").output();
    match docker {
        Ok(info) if info.status.success() => {}
        Ok(info) => {
            println!(
                "skipped: `docker info` failed: {}",
                String::from_utf8_lossy(&info.stderr).trim()
            );
            return;
        }
        Err(err) => {
            println!("skipped: no docker: {err}");
            return;
        }
    }
    let built = Command::new("docker")
        .args(["compose", "build", "conveyor"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .unwrap();
    assert!(built.success(), "`docker compose build` failed");
}
