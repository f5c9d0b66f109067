//! A sandbox that cannot start is Conveyor's failure, typed `sandbox_error`. On its own in
//! this binary: it lowers a process limit of the whole test process.

mod support;

use std::time::Duration;

use support::{API_TOKEN, Harness, wait_until_within};

/// Caps the processes a non-root user may have at one, for this process and what it starts:
/// bubblewrap, which runs as the sandbox's host user, cannot create the sandbox, as on a host
/// whose process limits are too tight. Conveyor's own git runs as root and is not held back.
fn starve_the_sandbox_user() {
    let one = libc::rlimit {
        rlim_cur: 1,
        rlim_max: 1,
    };
    // SAFETY: setrlimit with a valid, initialised struct.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NPROC, &one) }, 0);
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn a_sandbox_that_cannot_start_is_sandbox_error(pool: sqlx::PgPool) {
    starve_the_sandbox_user();
    let harness = Harness::start(pool).await;
    harness.add_repo_with_pipeline();
    let task_id = harness.label("label-7", 7, "Add release notes").await;
    let run = wait_until_within("the run failed", Duration::from_secs(60), || async {
        let run_id: Option<i64> = sqlx::query_scalar("SELECT max(id) FROM runs WHERE task_id = $1")
            .bind(task_id)
            .fetch_one(&harness.pool)
            .await
            .unwrap();
        let (_, run) = harness
            .api("GET", &format!("/api/v2/runs/{}", run_id?), Some(API_TOKEN))
            .await;
        (run["state"] == "failed").then_some(run)
    })
    .await;
    assert_eq!(run["error_type"], "sandbox_error", "{run}");
    assert_eq!(run["failed_step"], serde_json::Value::Null);
    assert!(
        run["failure"].as_str().unwrap().contains("bwrap exited"),
        "{run}"
    );
    assert!(run["remediation"].as_str().unwrap().contains("sandbox"));
}
