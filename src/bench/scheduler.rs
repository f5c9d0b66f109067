//! `conveyor bench scheduler`: no-op tasks through the real scheduler on a scratch database
//! of their own, measuring claimed-and-completed tasks per second, the dead rows in `tasks`
//! while a backlog is kept up, and enqueue-to-start latency at a fraction of that load.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use sqlx::migrate::MigrateDatabase;
use sqlx::{PgPool, Postgres};
use tokio::sync::{Mutex, Notify};
use tokio_util::sync::CancellationToken;

use super::{millis, percentile};
use crate::db;
use crate::engine::TaskState;
use crate::engine::tasks::{self, Task};
use crate::scheduler::{self, Executor, Lease, SchedulerSettings, SessionFault};

#[derive(Debug, clap::Args)]
pub struct SchedulerBench {
    /// Tasks queued for the throughput phase.
    #[arg(long, default_value_t = 20_000)]
    pub tasks: usize,
    #[arg(long, default_value_t = 1_000)]
    pub repositories: usize,
    /// Running tasks allowed per repository.
    #[arg(long, default_value_t = 2)]
    pub limit: i32,
    /// Scheduler instances (each with its own sessions, heartbeat and listener).
    #[arg(long, default_value_t = 2)]
    pub processes: usize,
    /// Worker sessions per scheduler instance.
    #[arg(long, default_value_t = 32)]
    pub workers: u16,
    /// After the backlog: keep at least half of `--tasks` queued for this long, sampling
    /// throughput and dead rows in `tasks` every 5 s (0: skip).
    #[arg(long, default_value_t = 0)]
    pub sustain_secs: u64,
    /// Tasks per second offered in the latency phase [default: 20 % of the measured
    /// throughput].
    #[arg(long)]
    pub offered_rate: Option<f64>,
    #[arg(long, default_value_t = 2_000)]
    pub latency_tasks: usize,
}

/// How often the sustained phase samples.
const SAMPLE_EVERY: Duration = Duration::from_secs(5);

/// Completes each task as soon as it is claimed, noting how long after enqueue it started.
struct NoOp {
    pool: PgPool,
    done: AtomicUsize,
    all_done: Notify,
    expected: AtomicUsize,
    /// Off while measuring throughput, so that phase pays for no extra query per task.
    measure_latency: AtomicBool,
    start_latencies: Mutex<Vec<Duration>>,
}

impl NoOp {
    /// How long ago the task was enqueued, by the database's clock (which stamped it).
    async fn note_start_latency(&self, task_id: i64) {
        let waited: Option<f64> = sqlx::query_scalar(
            "SELECT EXTRACT(EPOCH FROM clock_timestamp() - created_at)::FLOAT8 FROM tasks WHERE id = $1",
        )
        .bind(task_id)
        .fetch_one(&self.pool)
        .await
        .ok();
        if let Some(secs) = waited {
            self.start_latencies
                .lock()
                .await
                .push(Duration::from_secs_f64(secs.max(0.0)));
        }
    }
}

impl Executor for NoOp {
    async fn execute(&self, task: Task, lease: Lease) -> Result<(), SessionFault> {
        if self.measure_latency.load(Ordering::SeqCst) {
            self.note_start_latency(task.id).await;
        }
        if let Err(err) = lease.end(TaskState::Succeeded).await {
            tracing::error!(task_id = task.id, error = %format!("{err:#}"), "bench task could not complete");
        }
        if self.done.fetch_add(1, Ordering::SeqCst) + 1 >= self.expected.load(Ordering::SeqCst) {
            self.all_done.notify_one();
        }
        Ok(())
    }
}

pub struct SchedulerReport {
    /// The scratch database the bench ran on (dropped since).
    pub database: String,
    pub throughput_tasks: usize,
    pub throughput_elapsed: Duration,
    pub sustained: Vec<Sample>,
    pub offered_rate: f64,
    pub latency_p50: Duration,
    pub latency_p99: Duration,
    pub latency_tasks: usize,
    pub dead_tuples: i64,
}

/// One interval of the sustained phase.
pub struct Sample {
    pub at: Duration,
    pub tasks_per_sec: f64,
    pub dead_tuples: i64,
    pub live_tuples: i64,
}

async fn table_tuples(pool: &PgPool) -> sqlx::Result<(i64, i64)> {
    sqlx::query_as("SELECT n_dead_tup, n_live_tup FROM pg_stat_user_tables WHERE relname = 'tasks'")
        .fetch_one(pool)
        .await
}

/// Keeps at least `backlog / 2` bench tasks queued for `length`, sampling as it goes;
/// returns the samples and the next unused issue number.
async fn sustain(
    pool: &PgPool,
    executor: &NoOp,
    backlog: usize,
    repositories: usize,
    mut next_issue: i64,
    length: Duration,
) -> anyhow::Result<(Vec<Sample>, i64)> {
    let started = Instant::now();
    let mut samples = Vec::new();
    let mut last = (Instant::now(), executor.done.load(Ordering::SeqCst));
    let mut refill = tokio::time::interval(Duration::from_millis(50));
    while started.elapsed() < length {
        refill.tick().await;
        let queued: i64 = sqlx::query_scalar("SELECT count(*) FROM tasks WHERE state = 'queued'")
            .fetch_one(pool)
            .await?;
        if (queued as usize) < backlog / 2 {
            enqueue_batch(pool, next_issue, backlog / 2, repositories).await?;
            next_issue += (backlog / 2) as i64;
        }
        if last.0.elapsed() >= SAMPLE_EVERY {
            let done = executor.done.load(Ordering::SeqCst);
            let (dead_tuples, live_tuples) = table_tuples(pool).await?;
            samples.push(Sample {
                at: started.elapsed(),
                tasks_per_sec: (done - last.1) as f64 / last.0.elapsed().as_secs_f64(),
                dead_tuples,
                live_tuples,
            });
            last = (Instant::now(), done);
        }
    }
    // What is still queued is finished before the latency phase starts from an idle system.
    let target = executor.done.load(Ordering::SeqCst)
        + sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM tasks WHERE state IN ('queued', 'running')",
        )
        .fetch_one(pool)
        .await? as usize;
    executor.expected.store(target, Ordering::SeqCst);
    while executor.done.load(Ordering::SeqCst) < target {
        tokio::time::timeout(Duration::from_millis(100), executor.all_done.notified())
            .await
            .ok();
    }
    Ok((samples, next_issue))
}

/// Queues `count` no-op tasks spread over the repositories and wakes the workers, in one
/// statement, as intake does in one transaction.
async fn enqueue_batch(
    pool: &PgPool,
    first_issue: i64,
    count: usize,
    repositories: usize,
) -> sqlx::Result<()> {
    sqlx::query(
        "WITH queued AS (
             INSERT INTO tasks (installation_id, repo_owner, repo_name, default_branch,
                                issue_number, title)
             SELECT 1, 'bench', 'repo-' || (n % $3), 'main', n, 'no-op'
             FROM generate_series($1::BIGINT, $1 + $2 - 1) AS n
             RETURNING 1
         )
         SELECT pg_notify($4, '') WHERE EXISTS (SELECT 1 FROM queued)",
    )
    .bind(first_issue)
    .bind(count as i64)
    .bind(repositories as i64)
    .bind(tasks::WAKE_CHANNEL)
    .execute(pool)
    .await?;
    Ok(())
}

/// A database of the bench's own on the server of `DATABASE_URL`, created for one run and
/// dropped after it: the bench deletes and vacuums freely, and must never do that to the
/// tasks of a real database.
pub(super) struct ScratchDatabase {
    pub(super) name: String,
    pub(super) url: String,
}

impl ScratchDatabase {
    pub(super) async fn create(server_url: &str) -> anyhow::Result<Self> {
        let mut url = url::Url::parse(server_url).context("DATABASE_URL is not a URL")?;
        let name = format!("conveyor_bench_{:016x}", fastrand::u64(..));
        url.set_path(&name);
        let url = String::from(url);
        Postgres::create_database(&url)
            .await
            .with_context(|| format!("creating the scratch database {name}"))?;
        Ok(Self { name, url })
    }

    /// Drops the database, ending any connection still open to it.
    pub(super) async fn drop(self) -> anyhow::Result<()> {
        Postgres::force_drop_database(&self.url)
            .await
            .with_context(|| format!("dropping the scratch database {}", self.name))
    }
}

/// Runs the bench on a scratch database on the server of `database_url`, which is dropped
/// at the end, also when the bench fails or is interrupted with Ctrl-C.
pub async fn run(bench: SchedulerBench, database_url: &str) -> anyhow::Result<SchedulerReport> {
    let scratch = ScratchDatabase::create(database_url).await?;
    tracing::info!(database = %scratch.name, "benchmarking on a scratch database");
    let measured = tokio::select! {
        measured = measure(bench, &scratch) => measured,
        interrupted = tokio::signal::ctrl_c() => match interrupted {
            Ok(()) => Err(anyhow::anyhow!("interrupted")),
            Err(err) => Err(anyhow::Error::new(err).context("listening for Ctrl-C")),
        },
    };
    let dropped = scratch.drop().await;
    let report = measured?;
    dropped?;
    Ok(report)
}

/// Dropping this future stops the scheduler instances it started.
async fn measure(
    bench: SchedulerBench,
    scratch: &ScratchDatabase,
) -> anyhow::Result<SchedulerReport> {
    let connections = (bench.processes * usize::from(bench.workers) + 4) as u32;
    let pool = db::connect(&scratch.url, connections).await?;
    db::migrate(&pool).await?;
    sqlx::query(
        "INSERT INTO repositories (owner, name, max_running)
         SELECT 'bench', 'repo-' || n, $2 FROM generate_series(0, $1 - 1) AS n",
    )
    .bind(bench.repositories as i64)
    .bind(bench.limit)
    .execute(&pool)
    .await?;

    let executor = Arc::new(NoOp {
        pool: pool.clone(),
        done: AtomicUsize::new(0),
        all_done: Notify::new(),
        expected: AtomicUsize::new(bench.tasks),
        measure_latency: AtomicBool::new(false),
        start_latencies: Mutex::new(Vec::new()),
    });
    // Throughput: the whole backlog is queued before the workers start.
    enqueue_batch(&pool, 0, bench.tasks, bench.repositories).await?;
    // A backlog inserted in one statement is invisible to the planner's statistics until
    // autovacuum analyses the table; without them the claim is planned as a sort of the
    // whole queue.
    sqlx::query("ANALYZE tasks, repositories")
        .execute(&pool)
        .await?;
    let shutdown = CancellationToken::new();
    let settings = SchedulerSettings {
        workers: bench.workers,
        lease_timeout: Duration::from_secs(30),
        shutdown_grace: Duration::from_secs(30),
    };
    let started = Instant::now();
    let mut processes = tokio::task::JoinSet::new();
    for _ in 0..bench.processes {
        processes.spawn(scheduler::run_workers(
            settings,
            pool.clone(),
            executor.clone(),
            Arc::new(Notify::new()),
            shutdown.clone(),
        ));
    }
    while executor.done.load(Ordering::SeqCst) < bench.tasks {
        executor.all_done.notified().await;
    }
    let throughput_elapsed = started.elapsed();
    let throughput = bench.tasks as f64 / throughput_elapsed.as_secs_f64();

    executor.expected.store(usize::MAX, Ordering::SeqCst);
    let (sustained, next_issue) = sustain(
        &pool,
        &executor,
        bench.tasks,
        bench.repositories,
        bench.tasks as i64,
        Duration::from_secs(bench.sustain_secs),
    )
    .await?;

    // Latency: tasks offered one by one at a fixed rate well below saturation.
    let offered_rate = bench.offered_rate.unwrap_or(throughput / 5.0);
    executor.measure_latency.store(true, Ordering::SeqCst);
    executor.done.store(0, Ordering::SeqCst);
    executor
        .expected
        .store(bench.latency_tasks, Ordering::SeqCst);
    let interval = Duration::from_secs_f64(1.0 / offered_rate);
    let mut ticker = tokio::time::interval(interval);
    for n in 0..bench.latency_tasks {
        ticker.tick().await;
        enqueue_batch(&pool, next_issue + n as i64, 1, bench.repositories).await?;
    }
    while executor.done.load(Ordering::SeqCst) < bench.latency_tasks {
        executor.all_done.notified().await;
    }
    let (dead_tuples, _) = table_tuples(&pool).await?;
    shutdown.cancel();
    while let Some(process) = processes.join_next().await {
        process?;
    }
    pool.close().await;
    let mut latencies = executor.start_latencies.lock().await.clone();
    latencies.sort();
    Ok(SchedulerReport {
        database: scratch.name.clone(),
        throughput_tasks: bench.tasks,
        throughput_elapsed,
        sustained,
        offered_rate,
        latency_p50: percentile(&latencies, 50.0),
        latency_p99: percentile(&latencies, 99.0),
        latency_tasks: latencies.len(),
        dead_tuples,
    })
}

pub fn print(report: &SchedulerReport) {
    println!(
        "scheduler (on scratch database {}, dropped): {} tasks in {:.2}s: {:.0} tasks/s",
        report.database,
        report.throughput_tasks,
        report.throughput_elapsed.as_secs_f64(),
        report.throughput_tasks as f64 / report.throughput_elapsed.as_secs_f64(),
    );
    for sample in &report.sustained {
        println!(
            "  sustained at {:>4.0}s: {:>5.0} tasks/s, dead tuples in tasks {:>7} (live {})",
            sample.at.as_secs_f64(),
            sample.tasks_per_sec,
            sample.dead_tuples,
            sample.live_tuples,
        );
    }
    println!(
        "enqueue-to-start over {} tasks offered at {:.0}/s: p50 {:.2} ms, p99 {:.2} ms; dead tuples in tasks at the end: {}",
        report.latency_tasks,
        report.offered_rate,
        millis(report.latency_p50),
        millis(report.latency_p99),
        report.dead_tuples,
    );
}
