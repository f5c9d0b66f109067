//! Real `conveyor worker` processes: a worker killed with SIGKILL mid-step has its task
//! running again elsewhere within 40 s; one sent SIGTERM hands its task back; reports queued
//! while GitHub is down outlive a worker killed before it could deliver them.

mod support;

use std::process::Stdio;
use std::time::{Duration, Instant};

use conveyor::engine::TaskState;
use conveyor::engine::tasks::{self, NewTask};
use sqlx::PgPool;
use support::{FakeGitHub, INSTALLATION_ID, OWNER, REPO, fake_github};

fn worker(
    github: &FakeGitHub,
    database_url: &str,
    data_dir: &std::path::Path,
) -> tokio::process::Child {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_conveyor"))
        .arg("worker")
        .env("DATABASE_URL", database_url)
        .env("GITHUB_APP_ID", fake_github::APP_ID.to_string())
        .env("GITHUB_PRIVATE_KEY", fake_github::private_key_pem())
        .env("GITHUB_API_URL", &github.url)
        .env("GITHUB_GIT_URL", &github.url)
        .env("CONVEYOR_DATA_DIR", data_dir)
        .env("CONVEYOR_WORKERS", "1")
        .env("CONVEYOR_LEASE_TIMEOUT_SECS", "3")
        .env("CONVEYOR_SHUTDOWN_GRACE_SECS", "1")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

/// A database URL for the test's database, a fake GitHub with a repository whose step is
/// slow until the test mends it, one task for it, and the argument by which the slow step's
/// processes are found on the host.
struct Scenario {
    database_url: String,
    github: FakeGitHub,
    task_id: i64,
    marker: String,
    data: tempfile::TempDir,
}

/// The step sleeps `seconds` and a fraction that makes its processes findable.
async fn scenario(pool: &PgPool, seconds: u32) -> Scenario {
    let options = pool.connect_options();
    let database_url = format!(
        "postgres://postgres@127.0.0.1:5432/{}",
        options.get_database().unwrap()
    );
    let github = FakeGitHub::start().await;
    github.add_installation(INSTALLATION_ID, OWNER);
    let marker = format!("{seconds}.{}", 100_000 + fastrand::u32(..900_000));
    let pipeline =
        "pipelines:\n  default:\n    steps:\n      - name: slow-once\n        run: sh step.sh\n";
    github.add_repo(
        INSTALLATION_ID,
        OWNER,
        REPO,
        &[
            (".github/conveyor.yml", pipeline),
            (
                "step.sh",
                &format!("sleep {marker}\necho done > done.txt\n"),
            ),
        ],
    );
    let task = NewTask {
        installation_id: INSTALLATION_ID,
        repo_owner: OWNER.into(),
        repo_name: REPO.into(),
        default_branch: "main".into(),
        issue_number: Some(1),
        title: "Survive a crash".into(),
        body: String::new(),
        pipeline: "default".into(),
        delivery_id: None,
        ..Default::default()
    };
    let task_id = tasks::create(&mut pool.acquire().await.unwrap(), &task)
        .await
        .unwrap()
        .unwrap();
    Scenario {
        database_url,
        github,
        task_id,
        marker,
        data: tempfile::tempdir().unwrap(),
    }
}

impl Scenario {
    fn worker(&self) -> tokio::process::Child {
        worker(&self.github, &self.database_url, self.data.path())
    }

    /// Waits for the first attempt's step to run, then mends the repository so that the
    /// next attempt passes: the steps themselves can keep nothing between attempts.
    async fn first_step(&self) {
        support::wait_until("the first attempt's step to start", || async {
            (!support::processes_with(&self.marker).is_empty()).then_some(())
        })
        .await;
        self.github
            .push_files(OWNER, REPO, "main", &[("step.sh", "echo again\n")], &[]);
    }

    /// Waits for every process of the slow step to be gone.
    async fn step_gone(&self) {
        support::wait_until("the slow step's processes to end", || async {
            support::processes_with(&self.marker)
                .is_empty()
                .then_some(())
        })
        .await;
    }

    async fn succeeded(&self, pool: &PgPool) {
        support::wait_until("the task to succeed", || async {
            let state = tasks::get(pool, self.task_id).await.unwrap().unwrap().state;
            (state == TaskState::Succeeded).then_some(())
        })
        .await
    }
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn a_killed_workers_task_runs_again_elsewhere_within_40_seconds(pool: PgPool) {
    let scenario = scenario(&pool, 60).await;
    let task_id = scenario.task_id;
    let mut first = scenario.worker();
    scenario.first_step().await;
    first.start_kill().unwrap();
    first.wait().await.unwrap();
    let killed_at = Instant::now();
    // The sandbox dies with the worker that started it: no orphaned step.
    scenario.step_gone().await;

    let mut second = scenario.worker();
    scenario.succeeded(&pool).await;
    let elapsed = killed_at.elapsed();
    assert!(
        elapsed < Duration::from_secs(40),
        "running again after {elapsed:?}"
    );

    let attempts: i64 = sqlx::query_scalar("SELECT count(*) FROM runs WHERE task_id = $1")
        .bind(task_id)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(attempts, 2);
    let comment = support::wait_until("the final status comment", || async {
        scenario
            .github
            .comments(OWNER, REPO, 1)
            .into_iter()
            .find(|c| c.body.contains("finished pipeline"))
    })
    .await;
    // Only now: the task's end is written before its comment is edited.
    second.start_kill().unwrap();
    assert_eq!(
        scenario.github.comments(OWNER, REPO, 1).len(),
        1,
        "one status comment across attempts"
    );
    assert!(
        comment.edits.iter().any(|e| e.contains("attempt 2")),
        "{:?}",
        comment.edits
    );
    let rescued: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM task_events WHERE task_id = $1 AND detail ? 'rescued_from'",
    )
    .bind(task_id)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(rescued, 1);
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn sigterm_hands_a_running_task_to_another_worker(pool: PgPool) {
    let scenario = scenario(&pool, 60).await;
    let mut first = scenario.worker();
    scenario.first_step().await;
    // SAFETY: kill only sends SIGTERM to the worker we spawned.
    unsafe { libc::kill(first.id().unwrap() as i32, libc::SIGTERM) };
    let status = tokio::time::timeout(Duration::from_secs(10), first.wait())
        .await
        .expect("the worker exits after its grace period")
        .unwrap();
    assert!(status.success(), "{status:?}");
    assert_eq!(
        support::processes_with(&scenario.marker),
        Vec::<i32>::new(),
        "the step was stopped with its worker"
    );
    let task = tasks::get(&pool, scenario.task_id).await.unwrap().unwrap();
    assert_eq!(task.state, TaskState::Queued, "handed back");

    let mut second = scenario.worker();
    scenario.succeeded(&pool).await;
    second.start_kill().unwrap();
    let attempts: i32 = sqlx::query_scalar("SELECT attempts FROM tasks WHERE id = $1")
        .bind(scenario.task_id)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(attempts, 1, "the handed-back attempt does not count");
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn reports_queued_during_an_outage_survive_a_killed_worker_and_land_once(pool: PgPool) {
    let scenario = scenario(&pool, 2).await;
    let mut first = scenario.worker();
    support::wait_until("the step to start", || async {
        (!support::processes_with(&scenario.marker).is_empty()).then_some(())
    })
    .await;
    // GitHub's API fails from now on for 30 s; git keeps working, so the run ends and its
    // branch is pushed while its pull request, check run and comment wait in the outbox.
    scenario.github.outage(502, Duration::from_secs(30));
    scenario.succeeded(&pool).await;
    support::wait_until("a delivery to have been tried and refused", || async {
        let tried: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM outbox WHERE delivered_at IS NULL AND last_error IS NOT NULL",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        (tried > 0).then_some(())
    })
    .await;
    first.start_kill().unwrap();
    first.wait().await.unwrap();

    let mut second = scenario.worker();
    // Past the outage, and past the claims the killed worker held.
    support::wait_until_within(
        "the outbox to be delivered",
        Duration::from_secs(120),
        || async {
            let pending: i64 =
                sqlx::query_scalar("SELECT count(*) FROM outbox WHERE delivered_at IS NULL")
                    .fetch_one(&pool)
                    .await
                    .unwrap();
            (pending == 0).then_some(())
        },
    )
    .await;
    second.start_kill().unwrap();

    let comments = scenario.github.comments(OWNER, REPO, 1);
    assert_eq!(comments.len(), 1, "one status comment: {comments:#?}");
    assert!(
        comments[0].body.contains("finished pipeline"),
        "{}",
        comments[0].body
    );
    assert_eq!(scenario.github.pull_requests(OWNER, REPO).len(), 1);
    let head = scenario
        .github
        .branch_sha(OWNER, REPO, "conveyor/1-survive-a-crash")
        .unwrap();
    let checks: Vec<_> = scenario
        .github
        .check_runs(OWNER, REPO)
        .into_iter()
        .filter(|check| check.head_sha == head)
        .collect();
    assert_eq!(checks.len(), 1, "one check run on the head: {checks:#?}");
    assert_eq!(checks[0].conclusion.as_deref(), Some("success"));
}
