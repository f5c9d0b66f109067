//! Set-up from GitHub's App manifest: the manifest filled in for this installation of
//! Conveyor, and the App GitHub made from it kept in Postgres with its secrets sealed.

pub mod manifest;
pub mod sealing;
pub mod store;

use std::path::PathBuf;

use secrecy::SecretString;
use sqlx::PgPool;

use crate::config::Config;
use crate::github::credentials::{Current, Source, Sourced};
use crate::github::{AppCredentials, Credentials};
use sealing::SealingKey;

/// What the set-up pages need of the configuration.
pub struct SetupSettings {
    /// `CONVEYOR_PUBLIC_URL`, without a trailing slash.
    pub public_url: String,
    /// `GITHUB_API_URL`, where the code is exchanged.
    pub api_url: String,
    secret_key: Option<SecretString>,
    data_dir: PathBuf,
}

impl SetupSettings {
    pub fn from_config(config: &Config) -> Self {
        Self {
            public_url: config.public_url(),
            api_url: config.github.api_url.clone(),
            secret_key: config.secret_key().cloned(),
            data_dir: config.data_dir.clone(),
        }
    }

    /// The key sealing what set-up stores; made on first use when not configured.
    pub fn sealing_key(&self) -> anyhow::Result<SealingKey> {
        SealingKey::load(self.secret_key.as_ref(), &self.data_dir)
    }
}

/// The App's credentials at start: the environment's, and for each part it does not set,
/// the one stored at set-up.
pub async fn credentials(config: &Config, pool: &PgPool) -> anyhow::Result<Credentials> {
    let environment = Current {
        app: AppCredentials::from_config(&config.github)?
            .map(|app| Sourced::new(app, Source::Environment)),
        webhook_secret: config
            .github
            .webhook_secret()
            .cloned()
            .map(|secret| Sourced::new(secret, Source::Environment)),
        oauth: config
            .github
            .oauth_client()
            .map(|client| Sourced::new(client, Source::Environment)),
    };
    let complete = environment.app.is_some() && environment.webhook_secret.is_some();
    let credentials = Credentials::new(environment);
    if !complete && store::exists(pool).await? {
        let key = SetupSettings::from_config(config).sealing_key()?;
        credentials.adopt_setup(store::credentials(pool, &key).await?);
    }
    Ok(credentials)
}
