use anyhow::Context;
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use conveyor::bench::{
    self, intake::IntakeBench, loop_latency::LoopBench, sandbox::SandboxBench,
    scheduler::SchedulerBench, workspace::WorkspaceBench,
};
use conveyor::config::Config;
use conveyor::local_run::{self, LocalRun};
use conveyor::pipeline::definition::PIPELINE_FILE;
use conveyor::pipeline::sandbox::SandboxMode;
use conveyor::pipeline::{check, schema};
use conveyor::{db, logging, service};
use secrecy::ExposeSecret;

#[derive(Parser)]
#[command(
    name = "conveyor",
    version,
    about = "Issues and slash commands in, pull requests out"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    config: Config,
}

#[derive(Subcommand)]
enum Command {
    /// HTTP server and workers in one process.
    Serve,
    /// Worker sessions only, beside `serve` on the same database.
    Worker,
    /// Apply database migrations and exit.
    Migrate,
    /// Run one pipeline locally on a repository and print the result; needs no GitHub App.
    Run {
        /// A local repository path or a git URL.
        #[arg(long)]
        repo: String,
        #[arg(long)]
        title: String,
        #[arg(long, default_value = "")]
        body: String,
        #[arg(long, default_value = "default")]
        pipeline: String,
    },
    /// Check a pipeline file as runs read it: print `FILE: ok (pipelines: …)`, or a
    /// `FILE:LINE:COLUMN: problem` line for each problem and exit 1.
    Check {
        #[arg(default_value = PIPELINE_FILE)]
        file: std::path::PathBuf,
    },
    /// Print the JSON Schema of `.github/conveyor.yml` (for editors and CI).
    Schema,
    /// Measure a running Conveyor.
    #[command(subcommand)]
    Bench(Bench),
}

#[derive(Subcommand)]
enum Bench {
    /// Post signed webhook payloads to a running `serve`; print deliveries/s and latency.
    /// Uses GITHUB_WEBHOOK_SECRET (the server's) and checks the rows in DATABASE_URL.
    Intake {
        /// Base URL of the running service.
        #[arg(long, default_value = "http://127.0.0.1:3000")]
        url: String,
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        #[arg(long, default_value_t = 20_000)]
        requests: usize,
        /// Folder of GitHub payloads laid out as `<event>/<name>.json`.
        #[arg(long, default_value = "../shared/fixtures/github-webhooks")]
        payloads: std::path::PathBuf,
        /// How many times to repeat the measurement (the median run is reported last).
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// The path webhooks are posted to.
        #[arg(long, default_value = "/webhooks/github")]
        path: String,
        /// `other` measures another tool for comparison (such as Probot): any 2xx counts as
        /// acknowledged and no database is read.
        #[arg(long, value_enum, default_value_t = bench::intake::Server::Conveyor)]
        server: bench::intake::Server,
    },
    /// Run no-op tasks through the scheduler on a scratch database created on the server of
    /// DATABASE_URL and dropped afterwards: tasks/s with a backlog, then enqueue-to-start
    /// latency at a fixed offered rate.
    Scheduler(SchedulerBench),
    /// Time a no-op step unconfined, sandboxed without network and sandboxed with network
    /// (interleaved), in a workspace under CONVEYOR_DATA_DIR; print what the sandbox adds
    /// per step. Needs no database.
    Sandbox(SandboxBench),
    /// Time the GitHub loop end to end: the real service runs in this process on a scratch
    /// database created on the server of DATABASE_URL (dropped afterwards), against a GitHub
    /// stand-in and local bare repositories it serves itself. Measures a comment command's
    /// webhook → its reaction on GitHub, and an Approve click on the check run → the next
    /// step starting (through the sandbox unless CONVEYOR_SANDBOX=off, with workspaces under
    /// CONVEYOR_DATA_DIR).
    Loop(LoopBench),
    /// Generate a repository (20,000 files, 5,000 commits by default), serve it over smart
    /// HTTP with `git http-backend`, and time a fresh clone (what each run did before)
    /// against a workspace from the warm mirror, in a scratch directory under
    /// CONVEYOR_DATA_DIR. Needs no database.
    Workspace(WorkspaceBench),
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // A missing .env is normal; a malformed one is worth saying.
    if let Err(err) = dotenvy::dotenv()
        && !err.not_found()
    {
        eprintln!("conveyor: .env: {err}");
        return std::process::ExitCode::FAILURE;
    }
    let cli = Cli::parse();
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx::postgres::notice=warn"));
    let subscriber = logging::subscriber(cli.config.log_format, filter, std::io::stderr);
    if let Err(err) = tracing::subscriber::set_global_default(subscriber) {
        eprintln!("conveyor: logging: {err}");
        return std::process::ExitCode::FAILURE;
    }
    match run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("conveyor: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let config = cli.config;
    match cli.command {
        Command::Run {
            repo,
            title,
            body,
            pipeline,
        } => {
            let args = LocalRun {
                repo,
                title,
                body,
                pipeline,
                data_dir: config.data_dir.clone(),
                mirror_budget_bytes: config.mirror_budget_bytes(),
                sandbox: config.sandbox(),
            };
            local_run::run(args, &mut std::io::stdout()).await
        }
        Command::Check { file } => check::run(&file, &mut std::io::stdout()),
        Command::Schema => {
            print!("{}", schema::to_pretty_json());
            Ok(())
        }
        Command::Bench(Bench::Intake {
            url,
            concurrency,
            requests,
            payloads,
            runs,
            path,
            server,
        }) => {
            let secret = config.github.webhook_secret().context(
                "GITHUB_WEBHOOK_SECRET: set it to the secret of the server being measured",
            )?;
            let pool = match server {
                bench::intake::Server::Conveyor => {
                    Some(db::connect(&config.database_url, 2).await?)
                }
                bench::intake::Server::Other => None,
            };
            let mut reports = Vec::new();
            for _ in 0..runs.max(1) {
                let bench = IntakeBench {
                    url: url.clone(),
                    secret: secret.expose_secret().to_owned(),
                    concurrency,
                    requests,
                    payloads: payloads.clone(),
                    path: path.clone(),
                    server,
                };
                let report = bench::intake::run(bench, pool.clone()).await?;
                bench::intake::print(&report, concurrency);
                reports.push(report);
            }
            reports.sort_by(|a, b| a.per_second().total_cmp(&b.per_second()));
            print!("median of {}: ", reports.len());
            bench::intake::print(&reports[reports.len() / 2], concurrency);
            Ok(())
        }
        Command::Bench(Bench::Scheduler(bench)) => {
            let report = bench::scheduler::run(bench, &config.database_url).await?;
            bench::scheduler::print(&report);
            Ok(())
        }
        Command::Bench(Bench::Loop(bench)) => {
            let report = bench::loop_latency::run(&bench, &config).await?;
            bench::loop_latency::print(&report);
            Ok(())
        }
        Command::Bench(Bench::Sandbox(bench)) => {
            // Measured whatever CONVEYOR_SANDBOX says, with the service's hidden files.
            let sandboxed = Config {
                sandbox: SandboxMode::On,
                ..config.clone()
            }
            .sandbox();
            let report = bench::sandbox::run(&bench, &config.data_dir, sandboxed).await?;
            bench::sandbox::print(&report);
            Ok(())
        }
        Command::Bench(Bench::Workspace(bench)) => {
            let report = bench::workspace::run(&bench, &config.data_dir).await?;
            bench::workspace::print(&report);
            Ok(())
        }
        Command::Migrate => {
            let pool = db::connect(&config.database_url, 2).await?;
            db::migrate(&pool).await?;
            tracing::info!("migrations applied");
            Ok(())
        }
        Command::Serve | Command::Worker => {
            // Request workers hold a connection while GitHub answers their lookups.
            let connections =
                u32::from(config.workers) * 2 + 8 + conveyor::requests::WORKERS as u32;
            let pool = db::connect(&config.database_url, connections).await?;
            db::migrate(&pool).await.context("starting")?;
            if matches!(cli.command, Command::Serve) {
                service::serve(&config, pool).await
            } else {
                service::worker(&config, pool).await
            }
        }
    }
}
