//! `conveyor bench loop`: how fast the GitHub loop answers. The real service runs in this
//! process on a scratch database, against a GitHub stand-in it serves itself and local bare
//! repositories, and two latencies are timed end to end:
//! - a comment command, from its webhook being sent to its reaction arriving at "GitHub";
//! - an approval click on the check run, from its webhook being sent to the step after the
//!   approval starting.

pub(super) mod github;
mod scenarios;

use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use super::scheduler::ScratchDatabase;
use super::{millis, percentile};
use crate::config::{Config, GitHubConfig};
use crate::db;
use crate::pipeline::definition::PIPELINE_FILE;
use crate::service::Service;
use github::StandIn;
use scenarios::{Hooks, NEXT_STEP, OWNER, PIPELINE, POLL_EVERY, REPO};

/// The App id Conveyor puts in its JWTs; the stand-in does not look.
const APP_ID: &str = "1";
const TARGET_COMMENT: Duration = Duration::from_secs(1);
const TARGET_APPROVAL: Duration = Duration::from_secs(2);
/// How long the service's jobs get to stop once every task has ended.
const STOP_WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, clap::Args)]
pub struct LoopBench {
    /// Comments with `/conveyor help` sent in the comment scenario (0: skip it). Measured:
    /// webhook sent → the comment's reaction arriving at GitHub.
    #[arg(long, default_value_t = 200)]
    pub comments: usize,
    /// Milliseconds between two comments: paced, so the service is not saturated.
    #[arg(long, default_value_t = 20)]
    pub comment_every_ms: u64,
    /// Issues labelled, parked at an approval step and approved in the approval scenario (0:
    /// skip it). Measured: Approve click sent → the step after the approval starting.
    #[arg(long, default_value_t = 30)]
    pub approvals: usize,
    /// Milliseconds between two labels, and between two approval clicks.
    #[arg(long, default_value_t = 500)]
    pub approval_every_ms: u64,
    /// Seconds any one awaited effect may take before the bench gives up.
    #[arg(long, default_value_t = 60)]
    pub timeout_secs: u64,
    /// How many times to repeat the measurement, each on a fresh database and service (the
    /// median run is reported last).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
}

/// One scenario's latencies in one run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    pub count: usize,
    pub median: Duration,
    pub p90: Duration,
    pub p99: Duration,
    pub max: Duration,
}

impl Spread {
    pub fn of(latencies: &[Duration]) -> Self {
        let mut sorted = latencies.to_vec();
        sorted.sort();
        Self {
            count: sorted.len(),
            median: percentile(&sorted, 50.0),
            p90: percentile(&sorted, 90.0),
            p99: percentile(&sorted, 99.0),
            max: sorted.last().copied().unwrap_or_default(),
        }
    }
}

/// What one run measured; a scenario that was skipped is `None`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RunReport {
    pub comments: Option<Spread>,
    /// Issue labelled → the run's Approve button on GitHub.
    pub buttons: Option<Spread>,
    /// Approve click → the next step starting.
    pub clicks: Option<Spread>,
}

#[derive(Debug)]
pub struct LoopReport {
    pub runs: Vec<RunReport>,
}

/// Of the runs that have a figure for it, the one whose p99 is the median.
pub fn median_run(
    runs: &[RunReport],
    figure: impl Fn(&RunReport) -> Option<Spread>,
) -> Option<Spread> {
    let mut spreads: Vec<Spread> = runs.iter().filter_map(figure).collect();
    spreads.sort_by_key(|spread| spread.p99);
    spreads.get(spreads.len() / 2).copied()
}

/// Runs the bench `bench.runs` times, each on a scratch database made on the server of
/// `config.database_url` and dropped after it; each run is printed as it ends. The service
/// takes every other setting (workers, sandbox, data dir) from `config`.
pub async fn run(bench: &LoopBench, config: &Config) -> anyhow::Result<LoopReport> {
    let key = github::app_key().await?;
    let mut runs = Vec::new();
    for n in 1..=bench.runs.max(1) {
        let scratch = ScratchDatabase::create(&config.database_url).await?;
        tracing::info!(database = %scratch.name, run = n, "benchmarking the loop on a scratch database");
        let measured = tokio::select! {
            measured = measure(bench, config, &key, &scratch.url) => measured,
            interrupted = tokio::signal::ctrl_c() => match interrupted {
                Ok(()) => Err(anyhow::anyhow!("interrupted")),
                Err(err) => Err(anyhow::Error::new(err).context("listening for Ctrl-C")),
            },
        };
        let dropped = scratch.drop().await;
        let report = measured?;
        dropped?;
        print_run(n, bench, &report);
        runs.push(report);
    }
    Ok(LoopReport { runs })
}

/// One run: the service and the stand-in up, the scenarios, then both stopped. Returning
/// early (an error, Ctrl-C) stops them too.
async fn measure(
    bench: &LoopBench,
    base: &Config,
    key: &str,
    database_url: &str,
) -> anyhow::Result<RunReport> {
    let git_root =
        tempfile::tempdir().context("making a directory for the bench's repositories")?;
    let full_name = format!("{OWNER}/{REPO}");
    github::bare_repo(
        git_root.path(),
        &full_name,
        &[(PIPELINE_FILE, PIPELINE), ("README.md", "# bench\n")],
    )
    .await?;
    let stand_in = StandIn::start(git_root.path(), &[&full_name], PIPELINE).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding the service")?;
    let address = listener.local_addr()?;
    let secret = uuid::Uuid::new_v4().simple().to_string();
    let git_url = git_root
        .path()
        .to_str()
        .context("the temporary directory's path is not UTF-8")?
        .to_owned();
    let config = Config {
        database_url: database_url.to_owned(),
        listen: address,
        public_url: None,
        redelivery_interval_secs: 0,
        github: GitHubConfig {
            app_id: Some(APP_ID.to_owned()),
            private_key: Some(key.to_owned().into()),
            private_key_path: None,
            client_id: None,
            client_secret: None,
            webhook_secret: Some(secret.clone().into()),
            api_url: stand_in.url.clone(),
            git_url,
        },
        ..base.clone()
    };
    // As `conveyor serve` sizes it, and a few for the bench's own queries.
    let pool = db::connect(&config.database_url, u32::from(config.workers) * 2 + 12).await?;
    db::migrate(&pool).await?;
    let service = Service::new(&config, pool.clone()).await?;
    let shutdown = CancellationToken::new();
    let _stop_on_return = shutdown.clone().drop_guard();
    let mut background = service.spawn_background(shutdown.clone());
    let server = tokio::spawn(
        axum::serve(listener, service.router())
            .with_graceful_shutdown(shutdown.clone().cancelled_owned())
            .into_future(),
    );
    let hooks = Hooks {
        client: reqwest::Client::new(),
        url: format!("http://{address}/webhooks/github"),
        secret,
    };
    let timeout = Duration::from_secs(bench.timeout_secs);
    let comments = match bench.comments {
        0 => None,
        count => {
            let every = Duration::from_millis(bench.comment_every_ms);
            let latencies = scenarios::comments(&hooks, &stand_in, count, every, timeout).await?;
            Some(Spread::of(&latencies))
        }
    };
    let (buttons, clicks) = match bench.approvals {
        0 => (None, None),
        count => {
            let every = Duration::from_millis(bench.approval_every_ms);
            let measured =
                scenarios::approvals(&hooks, &stand_in, &pool, count, every, timeout).await?;
            (
                Some(Spread::of(&measured.buttons)),
                Some(Spread::of(&measured.clicks)),
            )
        }
    };
    let unfinished = settle(&pool, timeout).await?;
    if unfinished > 0 {
        tracing::warn!(
            unfinished,
            "tasks of the bench did not succeed; the latencies stand, but look at the runs"
        );
    }
    shutdown.cancel();
    server.await?.context("serving the service")?;
    // Nothing runs any more; a job that does not stop soon is not waited for, since the
    // run is over and its database goes.
    let stopped = tokio::time::timeout(STOP_WAIT, async {
        while background.join_next().await.is_some() {}
    })
    .await;
    if stopped.is_err() {
        tracing::warn!(
            still_running = background.len(),
            "jobs of the service did not stop within {STOP_WAIT:?} of shutdown; aborting them"
        );
    }
    drop(background);
    pool.close().await;
    Ok(RunReport {
        comments,
        buttons,
        clicks,
    })
}

/// Waits for every task to end (the approved runs go on to publish after the timed step), so
/// the service stops with nothing running; returns how many did not succeed.
async fn settle(pool: &sqlx::PgPool, timeout: Duration) -> anyhow::Result<i64> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let (live, unsuccessful): (i64, i64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE state::TEXT NOT IN ('succeeded', 'failed', 'cancelled')),
                    count(*) FILTER (WHERE state::TEXT <> 'succeeded')
             FROM tasks",
        )
        .fetch_one(pool)
        .await?;
        if live == 0 {
            return Ok(unsuccessful);
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!("{live} tasks were still going {timeout:?} after the last measurement");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn spread_line(spread: &Spread) -> String {
    format!(
        "median {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        millis(spread.median),
        millis(spread.p90),
        millis(spread.p99),
        millis(spread.max),
    )
}

fn print_run(n: usize, bench: &LoopBench, report: &RunReport) {
    if let Some(spread) = &report.comments {
        println!(
            "run {n}: comment → first reaction: {} comments, one every {} ms: {}",
            spread.count,
            bench.comment_every_ms,
            spread_line(spread)
        );
    }
    if let (Some(buttons), Some(clicks)) = (&report.buttons, &report.clicks) {
        println!(
            "run {n}: label → Approve button shown: {} issues, one every {} ms: {}",
            buttons.count,
            bench.approval_every_ms,
            spread_line(buttons)
        );
        println!(
            "run {n}: Approve click → `{NEXT_STEP}` starts: {} clicks, one every {} ms: {}",
            clicks.count,
            bench.approval_every_ms,
            spread_line(clicks)
        );
    }
}

pub fn print(report: &LoopReport) {
    println!("median run of {} (by p99):", report.runs.len());
    let verdict = |spread: &Spread, target: Duration| {
        if spread.p99 <= target {
            "within"
        } else {
            "OVER"
        }
    };
    if let Some(spread) = median_run(&report.runs, |run| run.comments) {
        println!(
            "  comment → first reaction:        {} ({} the target p99 ≤ {} ms)",
            spread_line(&spread),
            verdict(&spread, TARGET_COMMENT),
            TARGET_COMMENT.as_millis()
        );
    }
    if let Some(spread) = median_run(&report.runs, |run| run.buttons) {
        println!(
            "  label → Approve button shown:    {}",
            spread_line(&spread)
        );
    }
    if let Some(spread) = median_run(&report.runs, |run| run.clicks) {
        println!(
            "  Approve click → `{NEXT_STEP}` starts:  {} ({} the target p99 ≤ {} ms)",
            spread_line(&spread),
            verdict(&spread, TARGET_APPROVAL),
            TARGET_APPROVAL.as_millis()
        );
        println!(
            "  (`{NEXT_STEP}` starts = when its row appeared in run_steps, polled every {} ms, minus its duration_ms)",
            POLL_EVERY.as_millis()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(values: &[u64]) -> Vec<Duration> {
        values.iter().copied().map(Duration::from_millis).collect()
    }

    fn run_with_p99(comments_p99: u64, clicks_p99: Option<u64>) -> RunReport {
        let spread = |p99| Spread {
            count: 1,
            median: Duration::ZERO,
            p90: Duration::ZERO,
            p99: Duration::from_millis(p99),
            max: Duration::from_millis(p99),
        };
        RunReport {
            comments: Some(spread(comments_p99)),
            buttons: None,
            clicks: clicks_p99.map(spread),
        }
    }

    #[test]
    fn a_spread_summarises_latencies_in_any_order() {
        let spread = Spread::of(&ms(&[40, 10, 30, 20, 50, 60, 70, 80, 90, 100]));
        assert_eq!(spread.count, 10);
        assert_eq!(spread.median, Duration::from_millis(60));
        assert_eq!(spread.p90, Duration::from_millis(90));
        assert_eq!(spread.p99, Duration::from_millis(100));
        assert_eq!(spread.max, Duration::from_millis(100));
        assert_eq!(Spread::of(&[]).count, 0);
    }

    #[test]
    fn the_median_run_is_picked_by_p99_among_the_runs_that_measured_the_figure() {
        let runs = [
            run_with_p99(900, Some(1500)),
            run_with_p99(300, None),
            run_with_p99(500, Some(700)),
        ];
        let comments = median_run(&runs, |run| run.comments).unwrap();
        assert_eq!(comments.p99, Duration::from_millis(500));
        let clicks = median_run(&runs, |run| run.clicks).unwrap();
        assert_eq!(clicks.p99, Duration::from_millis(1500));
        assert_eq!(median_run(&runs, |run| run.buttons), None);
    }
}
