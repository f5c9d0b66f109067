//! Every setting in one typed struct, read from `--flags` or environment variables.
//!
//! clap reports a malformed value once, naming the flag and its variable; settings that
//! only some subcommands need are checked by the subcommand (`GitHubAppConfig::load`).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;
use secrecy::{ExposeSecret, SecretString};

use crate::engine::board::Rules;
use crate::github::oauth::OAuthClient;
use crate::logging::LogFormat;
use crate::pipeline::sandbox::{Sandbox, SandboxMode};

#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Postgres connection string; the database is created if missing.
    #[arg(
        long,
        env = "DATABASE_URL",
        value_name = "DATABASE_URL",
        default_value = "postgres://postgres@localhost:5432/conveyor",
        global = true
    )]
    pub database_url: String,

    /// Address the HTTP server binds.
    #[arg(
        long,
        env = "CONVEYOR_LISTEN",
        value_name = "CONVEYOR_LISTEN",
        default_value = "127.0.0.1:3000",
        global = true
    )]
    pub listen: SocketAddr,

    /// Base URL for links back to Conveyor (check run details); defaults to `http://<listen>`.
    #[arg(
        long,
        env = "CONVEYOR_PUBLIC_URL",
        value_name = "CONVEYOR_PUBLIC_URL",
        global = true
    )]
    pub public_url: Option<String>,

    /// Directory for the mirror cache and ephemeral workspaces.
    #[arg(
        long,
        env = "CONVEYOR_DATA_DIR",
        value_name = "CONVEYOR_DATA_DIR",
        default_value = "./.conveyor",
        global = true
    )]
    pub data_dir: PathBuf,

    /// Megabytes the repository mirrors under CONVEYOR_DATA_DIR may take together; past it,
    /// the least recently used are deleted (and cloned again when next needed).
    #[arg(
        long,
        env = "CONVEYOR_MIRROR_BUDGET_MB",
        value_name = "CONVEYOR_MIRROR_BUDGET_MB",
        default_value_t = 10_240,
        global = true
    )]
    pub mirror_budget_mb: u64,

    /// `on`: every pipeline step runs in a bubblewrap sandbox. `off`: steps run unconfined,
    /// as Conveyor's own user (a loud warning says so at start).
    #[arg(
        long,
        env = "CONVEYOR_SANDBOX",
        value_name = "CONVEYOR_SANDBOX",
        value_enum,
        default_value = "on",
        global = true
    )]
    pub sandbox: SandboxMode,

    /// Worker sessions in this process.
    #[arg(long, env = "CONVEYOR_WORKERS", value_name = "CONVEYOR_WORKERS", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..), global = true)]
    pub workers: u16,

    /// Bearer token for `/api/v2`, reads and writes; unset or empty, the API is off.
    /// Read it through [`Config::api_token`].
    #[arg(
        long,
        env = "CONVEYOR_API_TOKEN",
        value_name = "CONVEYOR_API_TOKEN",
        hide_env_values = true,
        global = true
    )]
    pub api_token: Option<SecretString>,

    /// Key sealing the App's secrets stored at set-up (64 hex digits); unset, a key file is
    /// made under CONVEYOR_DATA_DIR. Read it through [`Config::secret_key`].
    #[arg(
        long,
        env = "CONVEYOR_SECRET_KEY",
        value_name = "CONVEYOR_SECRET_KEY",
        hide_env_values = true,
        global = true
    )]
    pub secret_key: Option<SecretString>,

    /// Megabytes of webhook bodies buffered at once, across all requests; a request that
    /// does not fit is refused with 503 and Retry-After.
    #[arg(long, env = "CONVEYOR_WEBHOOK_BUFFER_MB", value_name = "CONVEYOR_WEBHOOK_BUFFER_MB", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=65_536), global = true)]
    pub webhook_buffer_mb: u32,

    /// Seconds a webhook body may take to arrive before the request is refused with 408.
    #[arg(long, env = "CONVEYOR_WEBHOOK_BODY_TIMEOUT_SECS", value_name = "CONVEYOR_WEBHOOK_BODY_TIMEOUT_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..), global = true)]
    pub webhook_body_timeout_secs: u64,

    /// Seconds between sweeps that ask GitHub to redeliver webhooks that never arrived (0: off).
    #[arg(
        long,
        env = "CONVEYOR_REDELIVERY_INTERVAL_SECS",
        value_name = "CONVEYOR_REDELIVERY_INTERVAL_SECS",
        default_value_t = 300,
        global = true
    )]
    pub redelivery_interval_secs: u64,

    /// Days a delivery's payload is kept; its outcome is kept for good.
    #[arg(long, env = "CONVEYOR_DELIVERY_RETENTION_DAYS", value_name = "CONVEYOR_DELIVERY_RETENTION_DAYS", default_value_t = 14, value_parser = clap::value_parser!(u32).range(1..), global = true)]
    pub delivery_retention_days: u32,

    /// Seconds a worker process may go without a heartbeat before its tasks are rescued.
    #[arg(long, env = "CONVEYOR_LEASE_TIMEOUT_SECS", value_name = "CONVEYOR_LEASE_TIMEOUT_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..), global = true)]
    pub lease_timeout_secs: u64,

    /// How logs are written to stderr: `text`, or `json` (one object per line, with the ids
    /// of the delivery, task and run it is about as top-level fields).
    #[arg(
        long,
        env = "CONVEYOR_LOG_FORMAT",
        value_name = "CONVEYOR_LOG_FORMAT",
        value_enum,
        default_value_t = LogFormat::Text,
        global = true
    )]
    pub log_format: LogFormat,

    /// Seconds running tasks get to finish on SIGTERM before they are handed back to the queue.
    #[arg(
        long,
        env = "CONVEYOR_SHUTDOWN_GRACE_SECS",
        value_name = "CONVEYOR_SHUTDOWN_GRACE_SECS",
        default_value_t = 30,
        global = true
    )]
    pub shutdown_grace_secs: u64,

    /// Seconds a queued task waits before its issue's status comment says why (0: at once).
    #[arg(
        long,
        env = "CONVEYOR_REPORT_WAITING_AFTER_SECS",
        value_name = "CONVEYOR_REPORT_WAITING_AFTER_SECS",
        default_value_t = 10,
        global = true
    )]
    pub report_waiting_after_secs: u64,

    /// Days a finished task (with its runs, steps and audit trail) is kept.
    #[arg(long, env = "CONVEYOR_TASK_RETENTION_DAYS", value_name = "CONVEYOR_TASK_RETENTION_DAYS", default_value_t = 90, value_parser = clap::value_parser!(u32).range(1..), global = true)]
    pub task_retention_days: u32,

    /// `true`: a successful run moves its task straight to done instead of in review, and
    /// the board's table allows `in_progress → done`.
    #[arg(
        long,
        env = "FEATURE_PRD_AUTO_APPROVE_REVIEW",
        value_name = "FEATURE_PRD_AUTO_APPROVE_REVIEW",
        default_value_t = false,
        action = clap::ArgAction::Set,
        global = true
    )]
    pub feature_prd_auto_approve_review: bool,

    #[command(flatten)]
    pub github: GitHubConfig,
}

#[derive(Debug, Clone, Args)]
pub struct GitHubConfig {
    /// GitHub App id (or client id), the `iss` of the App JWT.
    #[arg(
        long = "github-app-id",
        env = "GITHUB_APP_ID",
        value_name = "GITHUB_APP_ID",
        global = true
    )]
    pub app_id: Option<String>,

    /// The App's PEM private key, inline.
    #[arg(
        long = "github-private-key",
        env = "GITHUB_PRIVATE_KEY",
        value_name = "GITHUB_PRIVATE_KEY",
        hide_env_values = true,
        global = true
    )]
    pub private_key: Option<SecretString>,

    /// Path to the App's PEM private key.
    #[arg(
        long = "github-private-key-path",
        env = "GITHUB_PRIVATE_KEY_PATH",
        value_name = "GITHUB_PRIVATE_KEY_PATH",
        global = true
    )]
    pub private_key_path: Option<PathBuf>,

    /// Secret GitHub signs webhooks with; unset or empty, every webhook is refused.
    /// Read it through [`GitHubConfig::webhook_secret`].
    #[arg(
        long = "github-webhook-secret",
        env = "GITHUB_WEBHOOK_SECRET",
        value_name = "GITHUB_WEBHOOK_SECRET",
        hide_env_values = true,
        global = true
    )]
    pub webhook_secret: Option<SecretString>,

    /// The App's OAuth client id, for signing in to the pages with GitHub (set-up stores it
    /// otherwise).
    #[arg(
        long = "github-client-id",
        env = "GITHUB_CLIENT_ID",
        value_name = "GITHUB_CLIENT_ID",
        global = true
    )]
    pub client_id: Option<String>,

    /// The App's OAuth client secret, with `GITHUB_CLIENT_ID`.
    #[arg(
        long = "github-client-secret",
        env = "GITHUB_CLIENT_SECRET",
        value_name = "GITHUB_CLIENT_SECRET",
        hide_env_values = true,
        global = true
    )]
    pub client_secret: Option<SecretString>,

    /// REST API base URL (GitHub Enterprise, tests).
    #[arg(
        long = "github-api-url",
        env = "GITHUB_API_URL",
        value_name = "GITHUB_API_URL",
        default_value = "https://api.github.com",
        global = true
    )]
    pub api_url: String,

    /// Git base URL for clone and push (`{base}/{owner}/{repo}.git`).
    #[arg(
        long = "github-git-url",
        env = "GITHUB_GIT_URL",
        value_name = "GITHUB_GIT_URL",
        default_value = "https://github.com",
        global = true
    )]
    pub git_url: String,
}

impl Config {
    /// The steps' sandbox. Conveyor's own secret files are covered in it, should they lie in
    /// a directory it mounts (`/etc`, `/usr`).
    pub fn sandbox(&self) -> Sandbox {
        if self.sandbox == SandboxMode::Off {
            tracing::warn!(
                "CONVEYOR_SANDBOX=off: pipeline steps run UNCONFINED as Conveyor's own user and can read its files, its key and every workspace, and reach its database. Use this only for repositories you trust completely."
            );
        }
        let secret_files = [self.github.private_key_path.clone(), Some(".env".into())];
        let hidden = secret_files
            .into_iter()
            .flatten()
            .filter_map(|path| std::fs::canonicalize(path).ok())
            .collect();
        Sandbox::new(self.sandbox, hidden)
    }

    pub fn mirror_budget_bytes(&self) -> u64 {
        self.mirror_budget_mb.saturating_mul(1 << 20)
    }

    /// `CONVEYOR_API_TOKEN`, unless unset or empty.
    pub fn api_token(&self) -> Option<&SecretString> {
        non_empty(self.api_token.as_ref())
    }

    /// What the settings change in the board's transition table.
    pub fn board_rules(&self) -> Rules {
        Rules {
            auto_approve_review: self.feature_prd_auto_approve_review,
        }
    }

    /// `CONVEYOR_SECRET_KEY`, unless unset or empty.
    pub fn secret_key(&self) -> Option<&SecretString> {
        non_empty(self.secret_key.as_ref())
    }

    pub fn public_url(&self) -> String {
        match &self.public_url {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => format!("http://{}", self.listen),
        }
    }
}

impl GitHubConfig {
    /// `GITHUB_WEBHOOK_SECRET`, unless unset or empty.
    pub fn webhook_secret(&self) -> Option<&SecretString> {
        non_empty(self.webhook_secret.as_ref())
    }

    /// The OAuth client `GITHUB_CLIENT_ID` and `GITHUB_CLIENT_SECRET` name, when both are set.
    pub fn oauth_client(&self) -> Option<OAuthClient> {
        let id = self
            .client_id
            .as_deref()
            .map(str::trim)
            .filter(|id| !id.is_empty())?;
        let secret = non_empty(self.client_secret.as_ref())?;
        Some(OAuthClient {
            client_id: id.to_owned(),
            client_secret: secret.clone(),
        })
    }
}

/// An empty secret is an unset one: `VAR=` in a `.env` file or a deployment template must
/// not turn into a secret that anyone matches by sending nothing.
fn non_empty(secret: Option<&SecretString>) -> Option<&SecretString> {
    secret.filter(|secret| !secret.expose_secret().is_empty())
}

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;

    use clap::{CommandFactory, Parser};

    use super::Config;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        config: Config,
    }

    #[test]
    fn auto_approve_is_the_feature_variable_and_changes_the_board_rules() {
        let command = Cli::command();
        let arg = command
            .get_arguments()
            .find(|arg| arg.get_id() == "feature_prd_auto_approve_review")
            .expect("the setting");
        assert_eq!(
            arg.get_env(),
            Some(OsStr::new("FEATURE_PRD_AUTO_APPROVE_REVIEW"))
        );
        for (value, on) in [("true", true), ("false", false)] {
            let cli = Cli::try_parse_from(["conveyor", "--feature-prd-auto-approve-review", value])
                .unwrap();
            assert_eq!(cli.config.board_rules().auto_approve_review, on, "{value}");
        }
        assert!(
            Cli::try_parse_from(["conveyor", "--feature-prd-auto-approve-review", "maybe"])
                .is_err()
        );
    }
}
