//! The scheduler on a real database: every task runs exactly once, repository limits hold
//! across processes, and a silent process's tasks are rescued with stale results refused.

mod support;

use conveyor::pipeline::sandbox::{Sandbox, SandboxMode};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use conveyor::engine::deferral;
use conveyor::engine::runs::{self, StepRecord};
use conveyor::engine::state::TransitionError;
use conveyor::engine::tasks::{self, Ending, EngineError, NewTask, Rescued, Task};
use conveyor::engine::{RunState, TaskState};
use conveyor::housekeeping::vacuum;
use conveyor::report::Outcome;
use conveyor::scheduler::{
    self, Executor, Lease, SchedulerSettings, SessionFault, SessionPool, claim_next, leases,
};
use serde_json::json;
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

fn new_task(repo: &str, issue: i64) -> NewTask {
    NewTask {
        installation_id: 1,
        repo_owner: "acme".into(),
        repo_name: repo.into(),
        default_branch: "main".into(),
        issue_number: Some(issue),
        title: format!("task {issue}"),
        body: String::new(),
        pipeline: "default".into(),
        delivery_id: None,
        ..Default::default()
    }
}

async fn enqueue(pool: &PgPool, repo: &str, issue: i64) -> i64 {
    let mut conn = pool.acquire().await.unwrap();
    tasks::create(&mut conn, &new_task(repo, issue))
        .await
        .unwrap()
        .unwrap()
}

async fn state(pool: &PgPool, task_id: i64) -> TaskState {
    tasks::get(pool, task_id).await.unwrap().unwrap().state
}

/// Runs no pipeline: holds the task briefly, checks the repository limit while it runs, and
/// completes it under its lease.
struct NoOp {
    running: Mutex<HashMap<String, usize>>,
    limit_exceeded: Mutex<Vec<String>>,
    executed: Mutex<Vec<i64>>,
}

impl Executor for NoOp {
    async fn execute(&self, task: Task, lease: Lease) -> Result<(), SessionFault> {
        let repo = task.repo_name.clone();
        {
            let mut running = self.running.lock().unwrap();
            let count = running.entry(repo.clone()).or_default();
            *count += 1;
            if *count > 1 {
                self.limit_exceeded.lock().unwrap().push(repo.clone());
            }
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
        *self.running.lock().unwrap().get_mut(&repo).unwrap() -= 1;
        lease.end(TaskState::Succeeded).await.unwrap();
        self.executed.lock().unwrap().push(task.id);
        Ok(())
    }
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn every_task_runs_exactly_once_within_repository_limits(pool: PgPool) {
    let repos = ["a", "b", "c", "d", "e"];
    let mut ids = Vec::new();
    for issue in 0..200 {
        ids.push(enqueue(&pool, repos[issue as usize % repos.len()], issue).await);
    }
    let executor = Arc::new(NoOp {
        running: Mutex::default(),
        limit_exceeded: Mutex::default(),
        executed: Mutex::default(),
    });
    let shutdown = CancellationToken::new();
    let settings = SchedulerSettings {
        workers: 4,
        lease_timeout: Duration::from_secs(30),
        shutdown_grace: Duration::from_secs(30),
    };
    // Three "processes" with their own sessions, heartbeats and listeners on one database.
    let processes: Vec<_> = (0..3)
        .map(|_| {
            tokio::spawn(scheduler::run_workers(
                settings,
                pool.clone(),
                executor.clone(),
                Arc::new(Notify::new()),
                shutdown.clone(),
            ))
        })
        .collect();
    for _ in 0..3000 {
        if executor.executed.lock().unwrap().len() == ids.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    shutdown.cancel();
    for process in processes {
        process.await.unwrap();
    }
    let mut executed = executor.executed.lock().unwrap().clone();
    executed.sort();
    assert_eq!(executed, ids, "every task exactly once");
    assert!(
        executor.limit_exceeded.lock().unwrap().is_empty(),
        "a repository ran two tasks at once"
    );
    let running: i64 = sqlx::query_scalar("SELECT COALESCE(SUM(running), 0) FROM repositories")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(running, 0, "every slot given back");
    let processes: i64 = sqlx::query_scalar("SELECT count(*) FROM worker_processes")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(processes, 0, "stopped processes deregister");
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn claims_respect_priority_order_and_the_repository_limit(pool: PgPool) {
    let first = enqueue(&pool, "a", 1).await;
    let second = enqueue(&pool, "a", 2).await;
    let other = enqueue(&pool, "b", 3).await;
    sqlx::query("UPDATE tasks SET priority = 5 WHERE id = $1")
        .bind(other)
        .execute(&pool)
        .await
        .unwrap();

    let claimed = claim_next(&pool, "p", "p/0").await.unwrap().unwrap();
    assert_eq!(claimed.id, other, "priority first");
    let claimed = claim_next(&pool, "p", "p/1").await.unwrap().unwrap();
    assert_eq!(claimed.id, first, "then creation order");
    assert!(
        claim_next(&pool, "p", "p/2").await.unwrap().is_none(),
        "repository a is at its limit of 1"
    );

    sqlx::query("UPDATE repositories SET max_running = 2 WHERE name = 'a'")
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(
        claim_next(&pool, "p", "p/2").await.unwrap().unwrap().id,
        second
    );
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn one_claim_serves_several_sessions_in_order_within_every_limit(pool: PgPool) {
    let mut ids = Vec::new();
    for (issue, repo) in ["a", "a", "a", "b", "c", "c"].into_iter().enumerate() {
        ids.push(enqueue(&pool, repo, issue as i64).await);
    }
    sqlx::query("UPDATE repositories SET max_running = 2 WHERE name = 'a'")
        .execute(&pool)
        .await
        .unwrap();
    let workers: Vec<String> = (0..5).map(|n| format!("p/{n}")).collect();

    let claimed = scheduler::claim(&pool, "p", &workers).await.unwrap();
    let got: Vec<(String, i64)> = claimed
        .iter()
        .map(|(worker, task)| (worker.clone(), task.id))
        .collect();
    // a is limited to 2, c to 1: the third a and the second c wait, and the sessions are
    // seated in queue order.
    let expected = [(0, ids[0]), (1, ids[1]), (2, ids[3]), (3, ids[4])]
        .map(|(seat, id)| (workers[seat].clone(), id));
    let mut got_sorted = got.clone();
    got_sorted.sort_by_key(|(worker, _)| worker.clone());
    assert_eq!(got_sorted, expected);
    let owners: Vec<(i64, Option<String>)> =
        sqlx::query_as("SELECT id, claimed_by FROM tasks WHERE state = 'running' ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(
        owners,
        expected
            .iter()
            .map(|(worker, id)| (*id, Some(worker.clone())))
            .collect::<Vec<_>>()
    );
    let running: Vec<(String, i32)> =
        sqlx::query_as("SELECT name, running FROM repositories ORDER BY name")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(
        running,
        [("a", 2), ("b", 1), ("c", 1)].map(|(name, n)| (name.to_owned(), n))
    );
    assert!(
        scheduler::claim(&pool, "p", &workers[4..])
            .await
            .unwrap()
            .is_empty(),
        "every repository with waiting work is at its limit"
    );
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn endings_written_together_are_each_checked_against_their_own_lease(pool: PgPool) {
    let current = enqueue(&pool, "a", 1).await;
    let rescued = enqueue(&pool, "b", 2).await;
    let held = claim_next(&pool, "p", "p/0").await.unwrap().unwrap();
    let stale = claim_next(&pool, "p", "p/1").await.unwrap().unwrap();
    assert_eq!((held.id, stale.id), (current, rescued));
    let mut tx = pool.begin().await.unwrap();
    tasks::rescue(&mut tx, rescued).await.unwrap();
    tx.commit().await.unwrap();

    let mut conn = pool.acquire().await.unwrap();
    let results = tasks::end_leases(
        &mut conn,
        &[
            Ending::new(held.id, held.lease_epoch, TaskState::Succeeded),
            Ending::new(stale.id, stale.lease_epoch, TaskState::Succeeded),
        ],
    )
    .await
    .unwrap();
    assert_eq!(
        results,
        [
            Ok(()),
            Err(TransitionError::StaleLease {
                task_id: rescued,
                epoch: stale.lease_epoch
            })
        ]
    );
    assert_eq!(state(&pool, current).await, TaskState::Succeeded);
    assert_eq!(state(&pool, rescued).await, TaskState::Queued);
    let running: i64 = sqlx::query_scalar("SELECT SUM(running) FROM repositories")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        running, 0,
        "the accepted ending and the rescue each freed their slot"
    );
}

/// Flushes the connection's table statistics at once rather than within the second.
async fn flush_stats(conn: &mut sqlx::PgConnection) {
    sqlx::query("SELECT pg_stat_force_next_flush()")
        .execute(&mut *conn)
        .await
        .unwrap();
    sqlx::query("SELECT 1").execute(&mut *conn).await.unwrap();
}

/// Live and dead rows of `table`, as the statistics count them.
async fn row_stats(pool: &PgPool, table: &str) -> (i64, i64) {
    sqlx::query_as("SELECT n_live_tup, n_dead_tup FROM pg_stat_user_tables WHERE relname = $1")
        .bind(table)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn churned_queue_tables_are_vacuumed_without_autovacuum(pool: PgPool) {
    for issue in 0..1500 {
        enqueue(&pool, "a", issue).await;
    }
    let mut conn = pool.acquire().await.unwrap();
    // Two updates of every task leave 3,000 dead rows.
    for to in ["cancelled", "cancelled"] {
        sqlx::query("UPDATE tasks SET state = $1::task_state, updated_at = now()")
            .bind(to)
            .execute(&mut *conn)
            .await
            .unwrap();
    }
    flush_stats(&mut conn).await;
    drop(conn);
    let dead = || async { row_stats(&pool, "tasks").await.1 };
    assert!(dead().await >= 3000, "dead rows: {}", dead().await);

    let upkeep = vacuum::vacuum_churn_tables(&pool).await.unwrap();
    assert!(upkeep.vacuumed.contains(&"tasks".to_owned()), "{upkeep:?}");
    assert_eq!(dead().await, 0);
    let again = vacuum::vacuum_churn_tables(&pool).await.unwrap();
    assert!(!again.vacuumed.contains(&"tasks".to_owned()), "{again:?}");
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn a_large_churn_table_is_vacuumed_at_the_dead_row_cap(pool: PgPool) {
    let mut conn = pool.acquire().await.unwrap();
    sqlx::query(
        "INSERT INTO worker_processes (id) SELECT 'p' || n FROM generate_series(1, 300000) n",
    )
    .execute(&mut *conn)
    .await
    .unwrap();
    // 25,000 dead of 275,000 live rows: under a tenth of the table, over the cap.
    sqlx::query("DELETE FROM worker_processes WHERE substr(id, 2)::INTEGER <= 25000")
        .execute(&mut *conn)
        .await
        .unwrap();
    flush_stats(&mut conn).await;
    drop(conn);
    let (live, dead) = row_stats(&pool, "worker_processes").await;
    assert!(
        dead > 20_000 && dead < 1_000 + live / 10,
        "live {live}, dead {dead}"
    );

    let upkeep = vacuum::vacuum_churn_tables(&pool).await.unwrap();
    assert!(
        upkeep.vacuumed.contains(&"worker_processes".to_owned()),
        "{upkeep:?}"
    );
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn a_silent_processes_task_is_rescued_and_its_late_results_refused(pool: PgPool) {
    let task_id = enqueue(&pool, "a", 1).await;
    leases::heartbeat(&pool, "ghost", &SessionPool::new(1))
        .await
        .unwrap();
    let held = claim_next(&pool, "ghost", "ghost/0")
        .await
        .unwrap()
        .unwrap();
    let mut conn = pool.acquire().await.unwrap();
    let run = runs::start(&mut conn, task_id, "default").await.unwrap();

    assert!(
        leases::rescue(&pool, Duration::from_secs(30))
            .await
            .unwrap()
            .is_empty(),
        "still heartbeating"
    );
    sqlx::query("UPDATE worker_processes SET heartbeat_at = now() - interval '31 seconds'")
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(
        leases::rescue(&pool, Duration::from_secs(30))
            .await
            .unwrap(),
        [(task_id, Rescued::Requeued)]
    );
    assert_eq!(state(&pool, task_id).await, TaskState::Queued);
    let runs = runs::for_task(&pool, task_id).await.unwrap();
    assert_eq!(
        runs.iter().map(|run| run.state).collect::<Vec<_>>(),
        [RunState::Interrupted],
        "the lost attempt's run is closed"
    );

    // The lost process wakes up and reports: its step result and completion are refused.
    let step = StepRecord {
        position: 0,
        name: "late".into(),
        command: "true".into(),
        exit_code: Some(0),
        duration_ms: 1,
        output: String::new(),
        timed_out: false,
        attempts: 1,
    };
    assert!(
        !runs::record_step(&pool, run.id, held.lease_epoch, &step)
            .await
            .unwrap()
    );
    let again = claim_next(&pool, "alive", "alive/0")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.id, task_id);
    let mut tx = pool.begin().await.unwrap();
    let stale = tasks::transition(&mut tx, task_id, held.lease_epoch, TaskState::Succeeded).await;
    assert!(
        matches!(
            stale,
            Err(EngineError::Transition(TransitionError::StaleLease { .. }))
        ),
        "{stale:?}"
    );
    drop(tx);
    assert!(
        runs::record_step(&pool, run.id, again.lease_epoch, &step)
            .await
            .unwrap(),
        "the current holder's result counts"
    );
    let mut tx = pool.begin().await.unwrap();
    tasks::transition(&mut tx, task_id, again.lease_epoch, TaskState::Succeeded)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(state(&pool, task_id).await, TaskState::Succeeded);
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn a_task_out_of_attempts_is_failed_not_requeued(pool: PgPool) {
    let task_id = enqueue(&pool, "a", 1).await;
    sqlx::query("UPDATE tasks SET max_attempts = 1 WHERE id = $1")
        .bind(task_id)
        .execute(&pool)
        .await
        .unwrap();
    claim_next(&pool, "ghost", "ghost/0")
        .await
        .unwrap()
        .unwrap();
    // Never registered: an orphan from the start.
    assert_eq!(
        leases::rescue(&pool, Duration::from_secs(30))
            .await
            .unwrap(),
        [(task_id, Rescued::Failed)]
    );
    assert_eq!(state(&pool, task_id).await, TaskState::Failed);
    let running: i32 = sqlx::query_scalar("SELECT running FROM repositories WHERE name = 'a'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(running, 0);
}

/// Runs one long shell step per task, as a pipeline would, and completes the task after it.
struct LongStep {
    marker: std::path::PathBuf,
}

impl Executor for LongStep {
    async fn execute(&self, _task: Task, lease: Lease) -> Result<(), SessionFault> {
        let script = format!("echo $$ > {}; sleep 30", self.marker.display());
        let step = conveyor::pipeline::definition::Step::new("long", &script);
        let dir = tempfile::tempdir().unwrap();
        let workspaces = conveyor::pipeline::workspace::Workspaces::open(dir.path());
        let workspace = workspaces.create().unwrap();
        // Unconfined, so that the test sees the step's process group from the host.
        let sandbox = Sandbox::new(SandboxMode::Off, Vec::new());
        let _ =
            conveyor::pipeline::step::run(0, &step, &workspace, &[], &sandbox, Duration::MAX, None)
                .await;
        lease.end(TaskState::Succeeded).await.unwrap();
        Ok(())
    }
}

/// A scheduler instance with one session, running a `LongStep` task.
struct LongRunning {
    process: tokio::task::JoinHandle<()>,
    shutdown: CancellationToken,
    /// The step's process group.
    group: i32,
    _dir: tempfile::TempDir,
}

/// Starts a scheduler instance with the given shutdown grace; returns once a step runs.
async fn run_long_step(pool: &PgPool, shutdown_grace: Duration) -> LongRunning {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("pid");
    let executor = Arc::new(LongStep {
        marker: marker.clone(),
    });
    let settings = SchedulerSettings {
        workers: 1,
        lease_timeout: Duration::from_secs(30),
        shutdown_grace,
    };
    let (process, shutdown) = start_process(settings, pool, executor);
    let group = support::wait_until("the step to start", || async {
        std::fs::read_to_string(&marker)
            .ok()
            .and_then(|pid| pid.trim().parse().ok())
    })
    .await;
    LongRunning {
        process,
        shutdown,
        group,
        _dir: dir,
    }
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn shutdown_stops_a_long_step_after_the_grace_period_and_hands_the_task_back(pool: PgPool) {
    let task_id = enqueue(&pool, "a", 1).await;
    let LongRunning {
        process,
        shutdown,
        group: pid,
        _dir,
    } = run_long_step(&pool, Duration::from_millis(200)).await;
    let epoch_running = tasks::get(&pool, task_id)
        .await
        .unwrap()
        .unwrap()
        .lease_epoch;

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), process)
        .await
        .expect("shutdown within the grace period")
        .unwrap();

    let task = tasks::get(&pool, task_id).await.unwrap().unwrap();
    assert_eq!(task.state, TaskState::Queued, "handed back");
    assert!(task.lease_epoch > epoch_running, "the old lease is void");
    let attempts: i32 = sqlx::query_scalar("SELECT attempts FROM tasks WHERE id = $1")
        .bind(task_id)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(attempts, 0, "a hand-back is not a failed attempt");
    let running = support::process_running(pid);
    assert!(!running, "the step's shell survived shutdown");
    let trail: Vec<String> = conveyor::engine::events::for_task(&pool, task_id)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(trail, ["created", "claimed", "state"]);
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn a_paused_repository_is_not_claimed_until_resumed(pool: PgPool) {
    let harness = support::Harness::start_without_app(pool.clone()).await;
    let paused = enqueue(&pool, "a", 1).await;
    let other = enqueue(&pool, "b", 2).await;
    let api = |action: &str, repo: &str| format!("/api/v2/repositories/acme/{repo}/{action}");
    let token = Some(support::API_TOKEN);

    assert_eq!(harness.api("POST", &api("pause", "a"), None).await.0, 401);
    assert_eq!(harness.api("POST", &api("pause", "a"), token).await.0, 200);
    let (status, reply) = harness.api("POST", &api("pause", "a"), token).await;
    assert_eq!(
        (status.as_u16(), reply["message"].as_str()),
        (
            409,
            Some(
                "repository acme/a is paused: it cannot be made paused (it can become: running, stopping)"
            )
        )
    );
    let (status, reply) = harness.api("POST", &api("resume", "b"), token).await;
    assert_eq!(
        (status.as_u16(), reply["message"].as_str()),
        (
            409,
            Some(
                "repository acme/b is running: it cannot be made running (it can become: paused, stopping)"
            )
        )
    );
    assert_eq!(
        harness.api("POST", &api("pause", "nope"), token).await.0,
        404
    );

    assert_eq!(
        claim_next(&pool, "p", "p/0").await.unwrap().unwrap().id,
        other
    );
    assert!(
        claim_next(&pool, "p", "p/1").await.unwrap().is_none(),
        "acme/a is paused"
    );
    assert_eq!(harness.api("POST", &api("resume", "a"), token).await.0, 200);
    assert_eq!(
        claim_next(&pool, "p", "p/1").await.unwrap().unwrap().id,
        paused
    );
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn cancelling_stops_a_queued_task_at_once_and_a_running_step_within_seconds(pool: PgPool) {
    let harness = support::Harness::start_without_app(pool.clone()).await;
    let token = Some(support::API_TOKEN);
    let queued = enqueue(&pool, "a", 1).await;
    let running = enqueue(&pool, "b", 2).await;
    let (status, reply) = harness
        .api("POST", &format!("/api/v2/tasks/{queued}/cancel"), token)
        .await;
    assert_eq!(
        (status.as_u16(), reply["state"].as_str()),
        (200, Some("cancelled"))
    );
    assert_eq!(state(&pool, queued).await, TaskState::Cancelled);
    let (status, _) = harness
        .api("POST", &format!("/api/v2/tasks/{queued}/cancel"), token)
        .await;
    assert_eq!(status, 409, "a cancelled task cannot be cancelled again");
    assert_eq!(
        harness
            .api("POST", "/api/v2/tasks/999999/cancel", token)
            .await
            .0,
        404
    );

    let LongRunning {
        process,
        shutdown,
        group: pid,
        _dir,
    } = run_long_step(&pool, Duration::from_secs(30)).await;

    let asked = std::time::Instant::now();
    let (status, reply) = harness
        .api("POST", &format!("/api/v2/tasks/{running}/cancel"), token)
        .await;
    assert_eq!(
        (status.as_u16(), reply["state"].as_str()),
        (202, Some("in_progress")),
        "its worker stops it: {reply}"
    );
    support::wait_until("the running task to end cancelled", || async {
        (state(&pool, running).await == TaskState::Cancelled).then_some(())
    })
    .await;
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "took {:?}",
        asked.elapsed()
    );
    let alive = support::process_running(pid);
    assert!(!alive, "the cancelled step's shell survived");
    shutdown.cancel();
    process.await.unwrap();
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn housekeeping_deletes_long_finished_tasks_with_their_history_only(pool: PgPool) {
    let finished = enqueue(&pool, "a", 1).await;
    let recent = enqueue(&pool, "b", 2).await;
    let waiting = enqueue(&pool, "c", 3).await;
    for _ in 0..2 {
        let task = claim_next(&pool, "p", "p/0").await.unwrap().unwrap();
        let mut tx = pool.begin().await.unwrap();
        runs::start(&mut tx, task.id, "default").await.unwrap();
        tasks::transition(&mut tx, task.id, task.lease_epoch, TaskState::Succeeded)
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }
    sqlx::query("UPDATE tasks SET updated_at = now() - interval '91 days' WHERE id IN ($1, $2)")
        .bind(finished)
        .bind(waiting)
        .execute(&pool)
        .await
        .unwrap();
    let deleted =
        conveyor::housekeeping::retention::prune_tasks(&pool, Duration::from_secs(90 * 86_400))
            .await
            .unwrap();
    assert_eq!(deleted, 1);
    assert!(tasks::get(&pool, finished).await.unwrap().is_none());
    assert_eq!(
        state(&pool, recent).await,
        TaskState::Succeeded,
        "finished recently: kept"
    );
    assert_eq!(
        state(&pool, waiting).await,
        TaskState::Queued,
        "old but not finished: kept"
    );
    let orphans: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM runs WHERE task_id = $1) + (SELECT count(*) FROM task_events WHERE task_id = $1)",
    )
    .bind(finished)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(orphans, 0, "its runs and audit trail went with it");
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn the_api_says_why_a_task_waits_and_stop_cancels_a_repositorys_work(pool: PgPool) {
    let harness = support::Harness::start_without_app(pool.clone()).await;
    let token = Some(support::API_TOKEN);
    let running = enqueue(&pool, "a", 1).await;
    let waiting = enqueue(&pool, "a", 2).await;
    assert_eq!(
        claim_next(&pool, "p", "p/0").await.unwrap().unwrap().id,
        running
    );

    let (status, task) = harness
        .api("GET", &format!("/api/v2/tasks/{waiting}"), token)
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        (
            task["state"].as_str(),
            task["queue_state"].as_str(),
            task["waiting"].as_str()
        ),
        (
            Some("ready"),
            Some("queued"),
            Some("waiting: repository limit 1/1")
        )
    );
    assert_eq!(task["repository"], "acme/a");
    let (_, task) = harness
        .api("GET", &format!("/api/v2/tasks/{running}"), token)
        .await;
    assert_eq!(
        (task["state"].as_str(), task["waiting"].as_str()),
        (Some("in_progress"), None)
    );
    assert_eq!(
        harness.api("GET", "/api/v2/tasks/424242", token).await.0,
        404
    );

    let (status, reply) = harness
        .api("POST", "/api/v2/repositories/acme/a/stop", token)
        .await;
    assert_eq!(
        (status.as_u16(), reply["cancelled"].as_u64()),
        (200, Some(2))
    );
    assert_eq!(state(&pool, waiting).await, TaskState::Cancelled);
    assert!(
        tasks::cancel_requested(&pool, running).await.unwrap(),
        "the running task is asked to stop"
    );
    let later = enqueue(&pool, "a", 3).await;
    let (_, task) = harness
        .api("GET", &format!("/api/v2/tasks/{later}"), token)
        .await;
    assert_eq!(task["waiting"], "waiting: repository paused");
    assert_eq!(
        harness
            .api("POST", "/api/v2/repositories/acme/nope/stop", token)
            .await
            .0,
        404
    );
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn a_blocked_task_becomes_ready_exactly_once_when_its_blockers_finish_together(pool: PgPool) {
    let harness = support::Harness::start_without_app(pool.clone()).await;
    let token = Some(support::API_TOKEN);
    let first = enqueue(&pool, "a", 1).await;
    let second = enqueue(&pool, "b", 2).await;
    let blocked = enqueue(&pool, "c", 3).await;
    let add_blocker = |task: i64, blocker: i64| {
        let request = axum::http::Request::post(format!("/api/v2/tasks/{task}/dependencies"))
            .header("authorization", format!("Bearer {}", support::API_TOKEN))
            .header("content-type", "application/json")
            .body(axum::body::Body::from(format!(
                "{{\"blocker\": {blocker}}}"
            )))
            .unwrap();
        support::send(&harness.router, request)
    };
    for blocker in [first, second] {
        assert_eq!(add_blocker(blocked, blocker).await.0, 201);
    }
    let (status, reply) = add_blocker(first, blocked).await;
    assert_eq!(status, 422, "{reply}");
    assert_eq!(reply["code"], "dependency_cycle");
    let (_, task) = harness
        .api("GET", &format!("/api/v2/tasks/{blocked}"), token)
        .await;
    assert_eq!(task["waiting"], "waiting: blocked by unfinished tasks");

    let a = claim_next(&pool, "p", "p/0").await.unwrap().unwrap();
    let b = claim_next(&pool, "p", "p/1").await.unwrap().unwrap();
    assert_eq!((a.id, b.id), (first, second));
    assert!(
        claim_next(&pool, "p", "p/2").await.unwrap().is_none(),
        "blocked while its blockers run"
    );

    // Both blockers finish at the same moment, then two sessions race for the blocked task.
    let finish = |task: Task| {
        let pool = pool.clone();
        async move {
            let mut tx = pool.begin().await.unwrap();
            tasks::transition(&mut tx, task.id, task.lease_epoch, TaskState::Succeeded)
                .await
                .unwrap();
            tx.commit().await.unwrap();
        }
    };
    tokio::join!(finish(a), finish(b));
    let (x, y) = tokio::join!(claim_next(&pool, "p", "p/3"), claim_next(&pool, "q", "q/0"));
    let claimed: Vec<i64> = [x.unwrap(), y.unwrap()]
        .into_iter()
        .flatten()
        .map(|t| t.id)
        .collect();
    assert_eq!(claimed, [blocked], "ready exactly once");
}

/// Crashes (panics) on the tasks it is told to, and says the session is broken while
/// `broken` is set; otherwise completes tasks. Records what it was told about stops.
struct Crashing {
    crash_on: Mutex<Vec<i64>>,
    broken: std::sync::atomic::AtomicBool,
    checks: std::sync::atomic::AtomicUsize,
    executed: Mutex<Vec<i64>>,
    stops: Mutex<Vec<(i64, scheduler::Stop)>>,
}

impl Executor for Crashing {
    async fn execute(&self, task: Task, lease: Lease) -> Result<(), SessionFault> {
        let crash = {
            let mut crash_on = self.crash_on.lock().unwrap();
            let at = crash_on.iter().position(|&id| id == task.id);
            at.map(|at| crash_on.remove(at)).is_some()
        };
        if crash {
            panic!("executor bug on task {}", task.id);
        }
        lease.end(TaskState::Succeeded).await.unwrap();
        self.executed.lock().unwrap().push(task.id);
        Ok(())
    }

    async fn check(&self, _session: &str) -> Result<(), SessionFault> {
        self.checks
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if self.broken.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(SessionFault("disk on fire".into()));
        }
        Ok(())
    }

    async fn stopped(&self, task: Task, stop: scheduler::Stop) {
        self.stops.lock().unwrap().push((task.id, stop));
    }
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn a_crashed_session_takes_no_work_until_its_check_passes_and_the_process_lives_on(
    pool: PgPool,
) {
    let crashing = enqueue(&pool, "a", 1).await;
    let executor = Arc::new(Crashing {
        crash_on: Mutex::new(vec![crashing]),
        broken: true.into(),
        checks: 0.into(),
        executed: Mutex::default(),
        stops: Mutex::default(),
    });
    let settings = SchedulerSettings {
        workers: 1,
        // Heartbeats, and checks of an unhealthy session, every 200 ms.
        lease_timeout: Duration::from_millis(1200),
        shutdown_grace: Duration::from_secs(30),
    };
    let (process, shutdown) = start_process(settings, &pool, executor.clone());

    support::wait_until("the crash to be recorded", || async {
        (!executor.stops.lock().unwrap().is_empty()).then_some(())
    })
    .await;
    assert_eq!(
        *executor.stops.lock().unwrap(),
        [(crashing, scheduler::Stop::Crash(Rescued::Requeued))]
    );
    let task = tasks::get(&pool, crashing).await.unwrap().unwrap();
    assert_eq!((task.state, task.attempts), (TaskState::Queued, 1));
    let crashed: String = sqlx::query_scalar(
        "SELECT detail->>'crashed' FROM task_events WHERE task_id = $1 AND detail ? 'crashed'",
    )
    .bind(crashing)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(crashed.contains("executor bug on task"), "{crashed}");

    // The only session is unhealthy: the requeued task and a new one wait, and say why.
    let waiting = enqueue(&pool, "b", 2).await;
    for task_id in [crashing, waiting] {
        support::wait_until(
            "the deferral reason to name the unhealthy session",
            || async {
                let reason = deferral::reason(&pool, task_id).await.unwrap();
                (reason.as_deref() == Some("waiting: no healthy worker session")).then_some(())
            },
        )
        .await;
    }
    support::wait_until("a few failed checks", || async {
        (executor.checks.load(std::sync::atomic::Ordering::SeqCst) >= 3).then_some(())
    })
    .await;
    assert!(executor.executed.lock().unwrap().is_empty());
    assert_eq!(state(&pool, waiting).await, TaskState::Queued);

    executor
        .broken
        .store(false, std::sync::atomic::Ordering::SeqCst);
    for task_id in [crashing, waiting] {
        support::wait_until("the healthy session to run the task", || async {
            (state(&pool, task_id).await == TaskState::Succeeded).then_some(())
        })
        .await;
    }
    assert_eq!(
        tasks::get(&pool, crashing).await.unwrap().unwrap().attempts,
        2,
        "the crashed attempt counts"
    );
    support::wait_until("the heartbeat to count the session healthy", || async {
        let healthy: i32 = sqlx::query_scalar("SELECT healthy_sessions FROM worker_processes")
            .fetch_one(&pool)
            .await
            .unwrap();
        (healthy == 1).then_some(())
    })
    .await;
    assert!(
        !process.is_finished(),
        "the crash did not take the process down"
    );
    shutdown.cancel();
    process.await.unwrap();
}

/// Hands each lease it gets to the test (while the test listens) and keeps its task until
/// the scheduler stops it.
struct Holding {
    leases: tokio::sync::mpsc::UnboundedSender<(Task, Lease)>,
}

impl Executor for Holding {
    async fn execute(&self, task: Task, lease: Lease) -> Result<(), SessionFault> {
        let _ = self.leases.send((task, lease));
        std::future::pending().await
    }
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn a_lease_is_held_only_while_its_task_runs_under_it_and_nobody_asked_it_to_stop(
    pool: PgPool,
) {
    for (repo, issue) in [("a", 1), ("b", 2), ("c", 3)] {
        enqueue(&pool, repo, issue).await;
    }
    let (leases, mut handed) = tokio::sync::mpsc::unbounded_channel();
    let settings = SchedulerSettings {
        workers: 3,
        lease_timeout: Duration::from_secs(30),
        shutdown_grace: Duration::from_millis(100),
    };
    let (process, shutdown) = start_process(settings, &pool, Arc::new(Holding { leases }));
    let mut held = Vec::new();
    while held.len() < 3 {
        held.push(handed.recv().await.unwrap());
    }
    held.sort_by_key(|(task, _)| task.id);
    for (_, lease) in &held {
        assert!(lease.is_held().await.unwrap());
    }
    let [
        (rescued, rescued_lease),
        (cancelled, cancelled_lease),
        (handed_back, handed_back_lease),
    ] = &held[..]
    else {
        unreachable!()
    };

    let mut tx = pool.begin().await.unwrap();
    tasks::rescue(&mut tx, rescued.id).await.unwrap();
    tx.commit().await.unwrap();
    assert!(!rescued_lease.is_held().await.unwrap(), "rescued");

    let mut tx = pool.begin().await.unwrap();
    tasks::cancel(&mut tx, cancelled.id, None).await.unwrap();
    tx.commit().await.unwrap();
    assert!(
        !cancelled_lease.is_held().await.unwrap(),
        "asked to stop, before its worker has stopped it"
    );

    let mut tx = pool.begin().await.unwrap();
    tasks::hand_back(&mut tx, handed_back.id, handed_back.lease_epoch)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert!(!handed_back_lease.is_held().await.unwrap(), "handed back");

    // The process ends once no lease of it is left.
    drop((held, handed));
    shutdown.cancel();
    process.await.unwrap();
}

/// Returns without ending its lease: first with a session fault, then without one.
#[derive(Default)]
struct Forgetful {
    calls: std::sync::atomic::AtomicUsize,
    stops: Mutex<Vec<scheduler::Stop>>,
}

impl Executor for Forgetful {
    async fn execute(&self, _task: Task, _lease: Lease) -> Result<(), SessionFault> {
        match self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) {
            0 => Err(SessionFault("out of disk".into())),
            _ => Ok(()),
        }
    }

    async fn stopped(&self, _task: Task, stop: scheduler::Stop) {
        self.stops.lock().unwrap().push(stop);
    }
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn an_executor_that_returns_without_ending_its_lease_has_its_task_taken_back(pool: PgPool) {
    let task_id = enqueue(&pool, "a", 1).await;
    sqlx::query("UPDATE tasks SET max_attempts = 2 WHERE id = $1")
        .bind(task_id)
        .execute(&pool)
        .await
        .unwrap();
    let executor = Arc::new(Forgetful::default());
    let settings = SchedulerSettings {
        workers: 1,
        // The unhealthy session's check comes every 200 ms.
        lease_timeout: Duration::from_millis(1200),
        shutdown_grace: Duration::from_secs(30),
    };
    let (process, shutdown) = start_process(settings, &pool, executor.clone());

    // The executor hears of a stop after it is recorded.
    support::wait_until("both attempts to be stopped", || async {
        (executor.stops.lock().unwrap().len() == 2).then_some(())
    })
    .await;
    let task = tasks::get(&pool, task_id).await.unwrap().unwrap();
    assert_eq!(
        (task.state, task.attempts),
        (TaskState::Failed, 2),
        "each attempt counts"
    );
    assert_eq!(
        *executor.stops.lock().unwrap(),
        [
            scheduler::Stop::Crash(Rescued::Requeued),
            scheduler::Stop::Crash(Rescued::Failed)
        ]
    );
    let reasons: Vec<String> = sqlx::query_scalar(
        "SELECT detail->>'crashed' FROM task_events
         WHERE task_id = $1 AND detail ? 'crashed' ORDER BY id",
    )
    .bind(task_id)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        reasons,
        ["the executor returned without ending the task's lease"; 2]
    );
    let running: i32 = sqlx::query_scalar("SELECT running FROM repositories WHERE name = 'a'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(running, 0, "the repository's slot is free");
    shutdown.cancel();
    process.await.unwrap();
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn a_run_taken_from_its_worker_cannot_be_finished_afterwards(pool: PgPool) {
    let task_id = enqueue(&pool, "a", 1).await;
    claim_next(&pool, "ghost", "ghost/0")
        .await
        .unwrap()
        .unwrap();
    let mut conn = pool.acquire().await.unwrap();
    let lost = runs::start(&mut conn, task_id, "default").await.unwrap();
    leases::rescue(&pool, Duration::from_secs(30))
        .await
        .unwrap();

    let outcome = Outcome::NoChanges;
    assert!(
        !runs::finish(&pool, lost.id, RunState::Completed, &outcome)
            .await
            .unwrap(),
        "the late result is refused"
    );
    claim_next(&pool, "alive", "alive/0")
        .await
        .unwrap()
        .unwrap();
    let current = runs::start(&mut conn, task_id, "default").await.unwrap();
    runs::begin(&pool, current.id).await.unwrap();
    assert!(
        runs::finish(&pool, current.id, RunState::Completed, &outcome)
            .await
            .unwrap()
    );
    let states: Vec<RunState> = runs::for_task(&pool, task_id)
        .await
        .unwrap()
        .into_iter()
        .map(|run| run.state)
        .collect();
    assert_eq!(states, [RunState::Interrupted, RunState::Completed]);
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn the_audit_trail_is_found_by_run_without_a_scan(pool: PgPool) {
    // How deleting a run finds its events through the foreign key.
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("SET LOCAL enable_seqscan = off")
        .execute(&mut *tx)
        .await
        .unwrap();
    let plan: Vec<String> =
        sqlx::query_scalar("EXPLAIN SELECT 1 FROM ONLY task_events WHERE run_id = 1")
            .fetch_all(&mut *tx)
            .await
            .unwrap();
    assert!(
        plan.iter().any(|line| line.contains("task_events_by_run")),
        "{plan:#?}"
    );
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn the_scheduler_bench_runs_on_a_scratch_database_it_drops(pool: PgPool) {
    let real = enqueue(&pool, "a", 1).await;
    sqlx::query("UPDATE tasks SET repo_owner = 'bench' WHERE id = $1")
        .bind(real)
        .execute(&pool)
        .await
        .unwrap();
    let database: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(&pool)
        .await
        .unwrap();
    let mut url = url::Url::parse(&std::env::var("DATABASE_URL").unwrap()).unwrap();
    url.set_path(&database);

    let bench = conveyor::bench::scheduler::SchedulerBench {
        tasks: 200,
        repositories: 10,
        limit: 2,
        processes: 1,
        workers: 4,
        sustain_secs: 0,
        offered_rate: Some(200.0),
        latency_tasks: 10,
    };
    let report = conveyor::bench::scheduler::run(bench, url.as_str())
        .await
        .unwrap();

    assert_eq!(report.throughput_tasks, 200);
    assert!(report.database.starts_with("conveyor_bench_"));
    let left: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&report.database)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(!left, "the scratch database is dropped");
    let (owner, task_state): (String, TaskState) =
        sqlx::query_as("SELECT repo_owner, state FROM tasks WHERE id = $1")
            .bind(real)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(
        (owner.as_str(), task_state),
        ("bench", TaskState::Queued),
        "the real database's tasks are untouched"
    );
}

/// One scheduler "process" running `executor`'s sessions until its token is cancelled.
fn start_process<E: Executor>(
    settings: SchedulerSettings,
    pool: &PgPool,
    executor: Arc<E>,
) -> (tokio::task::JoinHandle<()>, CancellationToken) {
    let shutdown = CancellationToken::new();
    let process = tokio::spawn(scheduler::run_workers(
        settings,
        pool.clone(),
        executor,
        Arc::new(Notify::new()),
        shutdown.clone(),
    ));
    (process, shutdown)
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn a_project_goes_running_paused_stopping_stopped_and_refuses_other_changes(pool: PgPool) {
    let harness = support::Harness::start_without_app(pool.clone()).await;
    let token = Some(support::API_TOKEN);
    let project = |action: &str| format!("/api/v2/projects/acme/a/{action}");
    let running = enqueue(&pool, "a", 1).await;
    let queued = enqueue(&pool, "a", 2).await;
    let held = claim_next(&pool, "p", "p/0").await.unwrap().unwrap();
    assert_eq!(held.id, running);

    let (status, shown) = harness.api("GET", &project("status"), token).await;
    assert_eq!(status, 200, "{shown}");
    assert_eq!(
        (
            &shown["state"],
            &shown["queue_depth"],
            &shown["running"],
            &shown["waiting"]
        ),
        (&json!("running"), &json!(1), &json!(1), &json!(0))
    );
    assert_eq!(
        harness
            .api("GET", "/api/v2/projects/acme/nope/status", token)
            .await
            .0,
        404
    );

    let (status, shown) = harness.api("POST", &project("pause"), token).await;
    assert_eq!((status.as_u16(), &shown["state"]), (200, &json!("paused")));
    let (status, refusal) = harness.api("POST", &project("pause"), token).await;
    assert_eq!(status, 409);
    assert_eq!(
        (
            &refusal["code"],
            &refusal["from"],
            &refusal["to"],
            &refusal["allowed"]
        ),
        (
            &json!("invalid_transition"),
            &json!("paused"),
            &json!("paused"),
            &json!(["running", "stopping"])
        )
    );

    let (status, shown) = harness.api("POST", &project("stop"), token).await;
    assert_eq!(status, 200, "{shown}");
    assert_eq!(
        (&shown["state"], &shown["cancelled"]),
        (&json!("stopping"), &json!(2))
    );
    assert_eq!(state(&pool, queued).await, TaskState::Cancelled);
    for refused in ["stop", "resume", "pause"] {
        let (status, refusal) = harness.api("POST", &project(refused), token).await;
        assert_eq!(
            (status.as_u16(), &refusal["from"]),
            (409, &json!("stopping")),
            "{refused}"
        );
    }

    // The worker stops the running task: nothing is left, and the project is stopped.
    let mut conn = pool.acquire().await.unwrap();
    tasks::end_lease(
        &mut conn,
        &Ending::new(held.id, held.lease_epoch, TaskState::Cancelled),
    )
    .await
    .unwrap();
    let (_, shown) = harness.api("GET", &project("status"), token).await;
    assert_eq!(
        (&shown["state"], &shown["running"]),
        (&json!("stopped"), &json!(0))
    );
    let (status, refusal) = harness.api("POST", &project("stop"), token).await;
    assert_eq!(
        (status.as_u16(), &refusal["from"]),
        (409, &json!("stopped"))
    );
    let (status, shown) = harness.api("POST", &project("resume"), token).await;
    assert_eq!((status.as_u16(), &shown["state"]), (200, &json!("running")));

    let (_, tables) = harness.api("GET", "/api/v2/state-machine", token).await;
    assert_eq!(tables["project"]["stopping"], json!(["stopped"]));
}
