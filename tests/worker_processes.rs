//! Several real worker processes × thousands of no-op tasks: every task runs exactly once,
//! and no repository ever runs more tasks at once than its limit.
//!
//! The test binary is its own worker: the test starts copies of itself that run only the
//! ignored `worker_process` test, which serves the test's database until SIGTERM.

use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use conveyor::engine::TaskState;
use conveyor::engine::tasks::{self, Task};
use conveyor::scheduler::{self, Executor, Lease, SchedulerSettings, SessionFault};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tokio::io::AsyncReadExt;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Set only in the copies started as workers; it names the database they serve.
const WORKER_DATABASE_URL: &str = "CONVEYOR_TEST_WORKER_DATABASE_URL";
const PROCESSES: usize = 4;
const WORKERS_PER_PROCESS: u16 = 4;
const TASKS: i64 = 3_000;
const REPOSITORIES: i64 = 30;
/// Consecutive tasks share a repository, so the head of the queue is crowded into a few
/// repositories and claimers keep running into their limits.
const RUN_LENGTH: i64 = 25;
const OWNER: &str = "acme";
/// Long enough for executions in one repository to overlap whenever its limit allows.
const HOLD: Duration = Duration::from_millis(3);
const RUN_TIMEOUT: Duration = Duration::from_secs(120);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

#[test]
#[ignore = "a worker process for worker_processes_run_each_task_once_within_repository_limits"]
fn worker_process() {
    let Ok(database_url) = std::env::var(WORKER_DATABASE_URL) else {
        return;
    };
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(serve(database_url));
}

async fn serve(database_url: String) {
    let shutdown = CancellationToken::new();
    let mut terminate =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).unwrap();
    tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            terminate.recv().await;
            shutdown.cancel();
        }
    });
    // The parent holds our stdin open; if it dies without signalling us, stop anyway rather
    // than keep its test database in use.
    std::thread::spawn({
        let shutdown = shutdown.clone();
        move || {
            let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
            shutdown.cancel();
        }
    });
    let pool = PgPoolOptions::new()
        .max_connections(u32::from(WORKERS_PER_PROCESS) + 2)
        .connect(&database_url)
        .await
        .unwrap();
    run_scheduler(pool, shutdown).await;
}

/// The one call into the scheduler, so a change to its interface is a change here only.
async fn run_scheduler(pool: PgPool, shutdown: CancellationToken) {
    let settings = SchedulerSettings {
        workers: WORKERS_PER_PROCESS,
        // No process goes silent here; a rescue would only mean the machine stalled.
        lease_timeout: Duration::from_secs(30),
        shutdown_grace: Duration::from_secs(5),
    };
    let executor = Arc::new(LoggedNoOp { pool: pool.clone() });
    scheduler::run_workers(settings, pool, executor, Arc::new(Notify::new()), shutdown).await;
}

/// Logs every execution in `executions`, with how many of its repository's executions were
/// under way as it started (itself included), holds the task briefly, and completes it
/// under its lease.
struct LoggedNoOp {
    pool: PgPool,
}

impl Executor for LoggedNoOp {
    async fn execute(&self, task: Task, lease: Lease) -> Result<(), SessionFault> {
        let execution: i64 = sqlx::query_scalar(
            "INSERT INTO executions (task_id, repo, pid, started)
             VALUES ($1, $2, $3, clock_timestamp())
             RETURNING id",
        )
        .bind(task.id)
        .bind(&task.repo_name)
        .bind(std::process::id() as i32)
        .fetch_one(&self.pool)
        .await
        .unwrap();
        // Counted only once our own row is committed: of two overlapping executions, the
        // one counting last sees both.
        let under_way: i64 =
            sqlx::query_scalar("SELECT count(*) FROM executions WHERE repo = $1 AND ended IS NULL")
                .bind(&task.repo_name)
                .fetch_one(&self.pool)
                .await
                .unwrap();
        tokio::time::sleep(HOLD).await;
        // `ended` commits before the completion frees the slot, so an execution claimed
        // into that slot never finds this one still under way.
        sqlx::query(
            "UPDATE executions SET ended = clock_timestamp(), under_way = $2 WHERE id = $1",
        )
        .bind(execution)
        .bind(under_way)
        .execute(&self.pool)
        .await
        .unwrap();
        if let Err(refused) = lease.end(TaskState::Succeeded).await {
            sqlx::query("UPDATE executions SET error = $2 WHERE id = $1")
                .bind(execution)
                .bind(refused.to_string())
                .execute(&self.pool)
                .await
                .unwrap();
        }
        Ok(())
    }
}

/// A copy of this test binary running `worker_process`, with its stderr collected.
struct WorkerProcess {
    child: tokio::process::Child,
    stderr: tokio::task::JoinHandle<String>,
}

impl WorkerProcess {
    fn spawn(database_url: &str) -> WorkerProcess {
        let mut child = tokio::process::Command::new(std::env::current_exe().unwrap())
            .args(["worker_process", "--exact", "--ignored", "--nocapture"])
            .env(WORKER_DATABASE_URL, database_url)
            .stdin(Stdio::piped())
            // Only libtest's own chatter goes to stdout; panics go to stderr.
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        // Drained as it comes, so a worker that keeps panicking never blocks on a full pipe.
        let mut pipe = child.stderr.take().unwrap();
        let stderr = tokio::spawn(async move {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text).await;
            text
        });
        WorkerProcess { child, stderr }
    }

    fn exited(&mut self) -> bool {
        self.child.try_wait().unwrap().is_some()
    }

    /// Sends SIGTERM and waits for the exit; `None` if it had to be killed.
    async fn stop(mut self) -> (Option<ExitStatus>, String) {
        if let Some(pid) = self.child.id() {
            // SAFETY: kill only sends SIGTERM, to a child we spawned and have not reaped.
            unsafe { libc::kill(pid as i32, libc::SIGTERM) };
        }
        let status = match tokio::time::timeout(STOP_TIMEOUT, self.child.wait()).await {
            Ok(status) => Some(status.unwrap()),
            Err(_) => {
                self.child.kill().await.unwrap();
                None
            }
        };
        (status, self.stderr.await.unwrap())
    }
}

/// The test's own database, on the server `DATABASE_URL` points at.
fn database_url(pool: &PgPool) -> String {
    let mut url = url::Url::parse(&std::env::var("DATABASE_URL").unwrap()).unwrap();
    url.set_path(pool.connect_options().get_database().unwrap());
    url.into()
}

async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

/// Repositories whose running tasks, right now, exceed their limit or disagree with the
/// counter the claim relies on.
async fn limit_violations(pool: &PgPool) -> Vec<String> {
    let rows: Vec<(String, i32, i32, i64)> = sqlx::query_as(
        "SELECT r.name, r.max_running, r.running, count(t.id)
         FROM repositories r
         LEFT JOIN tasks t
             ON t.repo_owner = r.owner AND t.repo_name = r.name AND t.state = 'running'
         GROUP BY r.owner, r.name
         HAVING count(t.id) > r.max_running OR count(t.id) <> r.running",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    rows.into_iter()
        .map(|(repo, limit, counter, running)| {
            format!("{repo}: {running} running, limit {limit}, counter {counter}")
        })
        .collect()
}

/// Each repository's limit and the most of its executions ever under way at once, from the
/// log: the most intervals covering any execution's start.
async fn peak_overlaps(pool: &PgPool) -> Vec<(String, i32, i64)> {
    sqlx::query_as(
        "SELECT r.name, r.max_running, max(o.overlap)
         FROM repositories r
         JOIN (SELECT e.repo,
                      (SELECT count(*) FROM executions f
                       WHERE f.repo = e.repo AND f.started <= e.started
                         AND COALESCE(f.ended, 'infinity') > e.started) AS overlap
               FROM executions e) o ON o.repo = r.name
         GROUP BY r.name, r.max_running
         ORDER BY r.name",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn worker_processes_run_each_task_once_within_repository_limits(pool: PgPool) {
    // No unique constraint: a task run twice shows as two rows.
    sqlx::query(
        "CREATE TABLE executions (
             id        BIGSERIAL PRIMARY KEY,
             task_id   BIGINT NOT NULL,
             repo      TEXT NOT NULL,
             pid       INTEGER NOT NULL,
             started   TIMESTAMPTZ NOT NULL,
             ended     TIMESTAMPTZ,
             under_way BIGINT,
             error     TEXT
         )",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO repositories (owner, name, max_running)
         SELECT $1, 'repo-' || n, 1 + n % 3 FROM generate_series(0, $2 - 1) AS n",
    )
    .bind(OWNER)
    .bind(REPOSITORIES)
    .execute(&pool)
    .await
    .unwrap();

    let database_url = database_url(&pool);
    let mut workers: Vec<_> = (0..PROCESSES)
        .map(|_| WorkerProcess::spawn(&database_url))
        .collect();
    // Every process idle and listening before the backlog lands, so all of them take part
    // from the start, woken across processes.
    let deadline = Instant::now() + RUN_TIMEOUT;
    while count(&pool, "SELECT count(*) FROM worker_processes").await < PROCESSES as i64
        && !workers.iter_mut().any(WorkerProcess::exited)
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let started = Instant::now();
    sqlx::query(
        "INSERT INTO tasks (installation_id, repo_owner, repo_name, default_branch, issue_number, title)
         SELECT 1, $1, 'repo-' || (n / $2) % $3, 'main', n, 'no-op'
         FROM generate_series(1, $4) AS n",
    )
    .bind(OWNER)
    .bind(RUN_LENGTH)
    .bind(REPOSITORIES)
    .bind(TASKS)
    .execute(&pool)
    .await
    .unwrap();
    // A backlog inserted in one statement has no planner statistics until autovacuum comes
    // by, and without them the claim can be planned as a sort of the whole queue (as the
    // scheduler bench found); the run time should not depend on autovacuum's timing.
    sqlx::query("ANALYZE tasks, repositories")
        .execute(&pool)
        .await
        .unwrap();
    tasks::wake_workers(&pool).await.unwrap();

    let mut live_violations = Vec::new();
    let mut polls = 0;
    let finished = loop {
        live_violations.extend(limit_violations(&pool).await);
        polls += 1;
        let unfinished = count(
            &pool,
            "SELECT count(*) FROM tasks WHERE state IN ('queued', 'running', 'scheduled')",
        )
        .await;
        if unfinished == 0 {
            break true;
        }
        if Instant::now() > deadline || workers.iter_mut().any(WorkerProcess::exited) {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let elapsed = started.elapsed();
    let states: Vec<(String, i64)> =
        sqlx::query_as("SELECT state::TEXT, count(*) FROM tasks GROUP BY 1 ORDER BY 1")
            .fetch_all(&pool)
            .await
            .unwrap();

    let mut outcomes = Vec::new();
    for worker in workers {
        outcomes.push(worker.stop().await);
    }
    let report = outcomes
        .iter()
        .enumerate()
        .map(|(i, (status, stderr))| format!("worker {i}: {status:?}\n{stderr}"))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        finished,
        "unfinished after {elapsed:?} (timed out, or a worker exited): \
         tasks by state {states:?} out of {TASKS}\n{report}"
    );
    eprintln!("{TASKS} tasks in {elapsed:?} across {PROCESSES} processes; {polls} live checks");
    assert!(
        outcomes
            .iter()
            .all(|(status, _)| status.is_some_and(|s| s.success())),
        "every worker exits cleanly on SIGTERM\n{report}"
    );
    assert_eq!(states, [("succeeded".to_owned(), TASKS)]);

    let repeated: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT task_id, count(*) FROM executions GROUP BY task_id HAVING count(*) > 1 ORDER BY 1",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(
        repeated.is_empty(),
        "tasks run more than once: {repeated:?}"
    );
    let never_run = count(
        &pool,
        "SELECT count(*) FROM tasks t WHERE NOT EXISTS (SELECT FROM executions e WHERE e.task_id = t.id)",
    )
    .await;
    assert_eq!(never_run, 0, "tasks succeeded without being run");
    let refused: Vec<(i64, String)> = sqlx::query_as(
        "SELECT task_id, error FROM executions WHERE error IS NOT NULL ORDER BY task_id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(refused.is_empty(), "completions refused: {refused:?}");

    assert!(
        live_violations.is_empty(),
        "{} of {polls} live checks saw a repository over its limit, first: {:?}",
        live_violations.len(),
        &live_violations[..live_violations.len().min(10)]
    );
    let crowded: Vec<(i64, String, i64, i32)> = sqlx::query_as(
        "SELECT e.task_id, e.repo, e.under_way, r.max_running
         FROM executions e JOIN repositories r ON r.owner = $1 AND r.name = e.repo
         WHERE e.under_way > r.max_running
         ORDER BY e.task_id",
    )
    .bind(OWNER)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(
        crowded.is_empty(),
        "executions that started over their repository's limit: {crowded:?}"
    );
    let peaks = peak_overlaps(&pool).await;
    assert!(
        peaks
            .iter()
            .all(|(_, limit, peak)| *peak <= i64::from(*limit)),
        "most executions at once per repository (name, limit, peak): {peaks:?}"
    );
    // Without runs of tasks reaching their limits, the checks above prove nothing.
    assert!(
        peaks
            .iter()
            .any(|(_, limit, peak)| *limit > 1 && *peak == i64::from(*limit)),
        "no repository ever reached a limit above 1: {peaks:?}"
    );

    assert_eq!(
        count(&pool, "SELECT COALESCE(SUM(running), 0) FROM repositories").await,
        0,
        "every slot given back"
    );
    assert_eq!(
        count(&pool, "SELECT count(DISTINCT pid) FROM executions").await,
        PROCESSES as i64,
        "every process took part"
    );
    assert_eq!(
        count(&pool, "SELECT count(*) FROM worker_processes").await,
        0,
        "stopped processes deregister"
    );
}
