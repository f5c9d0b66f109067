use anyhow::Context;
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use conveyor::config::Config;
use conveyor::local_run::{self, LocalRun};
use conveyor::{db, service};

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
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| EnvFilter::new("info,sqlx::postgres::notice=warn")),
        )
        .with_writer(std::io::stderr)
        .init();
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
            };
            local_run::run(args, &mut std::io::stdout()).await
        }
        Command::Migrate => {
            let pool = db::connect(&config.database_url, 2).await?;
            db::migrate(&pool).await?;
            tracing::info!("migrations applied");
            Ok(())
        }
        Command::Serve | Command::Worker => {
            let connections = u32::from(config.workers) * 2 + 8;
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
