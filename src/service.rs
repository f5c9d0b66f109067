//! Assembling the long-running service: HTTP server, delivery interpretation, the request
//! workers, the outbox and the task workers.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::engine::event_feed;
use crate::github::GitHubApp;
use crate::housekeeping::retention::{self, Retention};
use crate::http::{self, AppState, BodyBudget};
use crate::outbox::deliver::Deliverer;
use crate::pipeline::mirror::Mirrors;
use crate::pipeline::workspace::Workspaces;
use crate::requests::Requests;
use crate::runner::TaskRunner;
use crate::scheduler::{Executor, SchedulerSettings};
use crate::setup::{self, SetupSettings};
use crate::webhook::writer::InboxWriter;
use crate::{outbox, requests, scheduler, waiting_report, wakeup, webhook};

#[derive(Clone)]
pub struct Service {
    state: AppState,
    tasks_added: Arc<Notify>,
    scheduler: SchedulerSettings,
    redelivery_interval: Duration,
    report_waiting_after: Duration,
    retention: Retention,
    github: Arc<GitHubApp>,
    runner: Arc<TaskRunner>,
    /// `CONVEYOR_PUBLIC_URL`, for links from GitHub back to Conveyor.
    public_url: String,
}

impl Service {
    pub async fn new(config: &Config, pool: PgPool) -> anyhow::Result<Self> {
        let credentials = setup::credentials(config, &pool).await?;
        let public_url = config.public_url();
        if credentials.app().is_none() {
            tracing::warn!(
                "no GitHub App is configured (GITHUB_APP_ID, or create one at {public_url}/setup): tasks are queued but not run until there is one"
            );
        }
        if credentials.webhook_secret().is_none() {
            tracing::warn!(
                "no webhook secret (GITHUB_WEBHOOK_SECRET, or create the App at {public_url}/setup): every webhook is refused until there is one"
            );
        }
        let github = Arc::new(GitHubApp::new(&config.github.api_url, credentials.clone())?);
        let runner = Arc::new(TaskRunner {
            pool: pool.clone(),
            github: github.clone(),
            workspaces: Workspaces::open(&config.data_dir),
            mirrors: Mirrors::open(&config.data_dir, config.mirror_budget_bytes()),
            sandbox: config.sandbox(),
            git_url: config.github.git_url.clone(),
            board_rules: config.board_rules(),
        });
        if config.api_token().is_none() {
            tracing::warn!("CONVEYOR_API_TOKEN is not set: the operator API /api/v2 is off");
        }
        let deliveries_added = Arc::new(Notify::new());
        let inbox = InboxWriter::spawn(pool.clone(), deliveries_added.clone());
        let state = AppState {
            pool,
            credentials,
            setup: Arc::new(SetupSettings::from_config(config)),
            api_token: config.api_token().cloned().map(Arc::new),
            webhook_bodies: BodyBudget::new(
                config.webhook_buffer_mb,
                Duration::from_secs(config.webhook_body_timeout_secs),
            ),
            inbox,
            deliveries_added,
            github_web_url: config.github.git_url.as_str().into(),
            event_wakeups: event_feed::Wakeups::default(),
            board_rules: config.board_rules(),
            github: github.clone(),
            lookups: Arc::default(),
        };
        Ok(Self {
            state,
            tasks_added: Arc::new(Notify::new()),
            scheduler: SchedulerSettings {
                workers: config.workers,
                lease_timeout: Duration::from_secs(config.lease_timeout_secs),
                shutdown_grace: Duration::from_secs(config.shutdown_grace_secs),
            },
            redelivery_interval: Duration::from_secs(config.redelivery_interval_secs),
            report_waiting_after: Duration::from_secs(config.report_waiting_after_secs),
            retention: Retention {
                delivery_payloads: days(config.delivery_retention_days),
                finished_tasks: days(config.task_retention_days),
            },
            github,
            runner,
            public_url,
        })
    }

    pub fn router(&self) -> Router {
        http::router(self.state.clone())
    }

    /// Starts interpretation and, once a GitHub App is configured (at start, or later by
    /// set-up), everything that acts on GitHub; they stop when `shutdown` fires.
    pub fn spawn_background(&self, shutdown: CancellationToken) -> tokio::task::JoinSet<()> {
        let mut jobs = tokio::task::JoinSet::new();
        jobs.spawn(webhook::interpret::run(
            self.state.pool.clone(),
            self.state.deliveries_added.clone(),
            shutdown.clone(),
        ));
        jobs.spawn(retention::run(
            self.state.pool.clone(),
            self.retention,
            shutdown.clone(),
        ));
        let service = self.clone();
        jobs.spawn(async move {
            tokio::select! {
                () = service.state.credentials.app_configured() => {}
                () = shutdown.cancelled() => return,
            }
            let mut app_jobs = tokio::task::JoinSet::new();
            service.spawn_app_jobs(&mut app_jobs, shutdown);
            app_jobs.join_all().await;
        });
        jobs
    }

    /// The request workers, redelivery and the worker sessions: all need the App.
    fn spawn_app_jobs(&self, jobs: &mut tokio::task::JoinSet<()>, shutdown: CancellationToken) {
        let requests_added = Arc::new(Notify::new());
        jobs.spawn(wakeup::listen(
            self.state.pool.clone(),
            requests::queue::CHANNEL,
            requests_added.clone(),
            shutdown.clone(),
        ));
        let requests = Arc::new(Requests {
            pool: self.state.pool.clone(),
            github: self.github.clone(),
            lookups: self.state.lookups.clone(),
        });
        jobs.spawn(requests::run(requests, requests_added, shutdown.clone()));
        if !self.redelivery_interval.is_zero() {
            jobs.spawn(webhook::redelivery::run(
                self.state.pool.clone(),
                self.github.clone(),
                self.redelivery_interval,
                shutdown.clone(),
            ));
        }
        self.spawn_workers(jobs, shutdown);
    }

    /// Starts only the worker sessions (`conveyor worker`), and the reports on tasks that
    /// wait for them.
    pub fn spawn_workers(&self, jobs: &mut tokio::task::JoinSet<()>, shutdown: CancellationToken) {
        let runner = &self.runner;
        // Said once at start, so an operator need not wait for the first task to learn
        // that steps cannot run on this host.
        let trial = runner.clone();
        jobs.spawn(async move {
            if let Err(fault) = trial.check("start").await {
                tracing::error!(error = %fault, "pipeline steps cannot run on this host");
            }
        });
        jobs.spawn(waiting_report::run(
            self.state.pool.clone(),
            self.report_waiting_after,
            shutdown.clone(),
        ));
        // Every process that changes tasks delivers the outbox too: reports go out even
        // when only `conveyor worker` processes are left running.
        let effects_added = Arc::new(Notify::new());
        jobs.spawn(wakeup::listen(
            self.state.pool.clone(),
            outbox::CHANNEL,
            effects_added.clone(),
            shutdown.clone(),
        ));
        let deliverer = Arc::new(Deliverer {
            pool: self.state.pool.clone(),
            github: runner.github.clone(),
            public_url: self.public_url.clone(),
        });
        let pool = self.state.pool.clone();
        let stop = shutdown.clone();
        jobs.spawn(async move {
            match outbox::restore_parked(&pool).await {
                Ok(0) => {}
                Ok(restored) => tracing::info!(restored, "check runs of parked runs queued again"),
                Err(err) => tracing::warn!(error = %err, "could not look for parked runs without a check run"),
            }
            outbox::deliver::run(deliverer, effects_added, stop).await;
        });
        jobs.spawn(scheduler::run_workers(
            self.scheduler,
            self.state.pool.clone(),
            runner.clone(),
            self.tasks_added.clone(),
            shutdown,
        ));
    }
}

/// `conveyor serve`: migrations, then the HTTP server and workers until SIGTERM or Ctrl-C.
pub async fn serve(config: &Config, pool: PgPool) -> anyhow::Result<()> {
    let service = Service::new(config, pool).await?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("CONVEYOR_LISTEN: cannot bind {}", config.listen))?;
    tracing::info!(listen = %config.listen, "serving");
    let shutdown = CancellationToken::new();
    let background = service.spawn_background(shutdown.clone());
    let stop = shutdown.clone();
    axum::serve(listener, service.router())
        .with_graceful_shutdown(async move {
            shutdown_signal().await;
            stop.cancel();
        })
        .await
        .context("HTTP server")?;
    background.join_all().await;
    Ok(())
}

/// `conveyor worker`: worker sessions only, beside a `serve` on the same database.
pub async fn worker(config: &Config, pool: PgPool) -> anyhow::Result<()> {
    let service = Service::new(config, pool).await?;
    anyhow::ensure!(
        service.state.credentials.app().is_some(),
        "conveyor worker needs a GitHub App: set GITHUB_APP_ID and GITHUB_PRIVATE_KEY or GITHUB_PRIVATE_KEY_PATH, or create one at /setup"
    );
    let shutdown = CancellationToken::new();
    let mut jobs = tokio::task::JoinSet::new();
    service.spawn_workers(&mut jobs, shutdown.clone());
    tracing::info!(workers = config.workers, "worker sessions started");
    shutdown_signal().await;
    shutdown.cancel();
    jobs.join_all().await;
    Ok(())
}

async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
    tracing::info!("shutting down: finishing running tasks");
}

fn days(days: u32) -> Duration {
    Duration::from_secs(u64::from(days) * 86_400)
}
