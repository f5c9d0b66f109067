//! GitHub App authentication: the App JWT and cached installation tokens.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use anyhow::{Context, bail};
use chrono::{DateTime, Duration, Utc};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use octocrab::{Octocrab, Page};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use super::client::{InstallationClient, call};
use super::credentials::Credentials;
use super::error::GitHubError;
use crate::config::GitHubConfig;

/// GitHub refuses a JWT whose `exp` is more than 10 minutes ahead; stay under it.
const JWT_LIFETIME: Duration = Duration::minutes(9);
/// Clocks drift: date `iat` back so GitHub never sees it in the future.
const JWT_BACKDATE: Duration = Duration::seconds(60);
/// A cached token is replaced this long before it expires.
const TOKEN_REFRESH_MARGIN: Duration = Duration::minutes(5);

/// What a run's token may do: push its branch, open the pull request, keep the status comment
/// and mark the commit. Never `workflows` (a step could then rewrite CI) or `administration`.
/// The App asks for these in `app-manifest.json` (and `metadata: read`, which every App has).
pub const TOKEN_PERMISSIONS: TokenPermissions = TokenPermissions {
    contents: "write",
    pull_requests: "write",
    issues: "write",
    checks: "write",
};

/// The App id and private key, checked at start so a bad key is reported once, by name.
pub struct AppCredentials {
    app_id: String,
    key: EncodingKey,
}

impl AppCredentials {
    /// `None` when no App is configured (`GITHUB_APP_ID` unset).
    pub fn from_config(config: &GitHubConfig) -> anyhow::Result<Option<Self>> {
        let Some(app_id) = config.app_id.clone().filter(|id| !id.is_empty()) else {
            return Ok(None);
        };
        let (pem, source) = match (&config.private_key, &config.private_key_path) {
            (Some(pem), _) => (
                pem.expose_secret().replace("\\n", "\n"),
                "GITHUB_PRIVATE_KEY",
            ),
            (None, Some(path)) => (
                std::fs::read_to_string(path).with_context(|| {
                    format!("GITHUB_PRIVATE_KEY_PATH: cannot read {}", path.display())
                })?,
                "GITHUB_PRIVATE_KEY_PATH",
            ),
            (None, None) => bail!(
                "GITHUB_APP_ID is set but the App's private key is not: set GITHUB_PRIVATE_KEY \
                 (the PEM text) or GITHUB_PRIVATE_KEY_PATH (a .pem file)"
            ),
        };
        Self::new(app_id, &pem, source).map(Some)
    }

    /// The App `app_id` signing with `pem`; `source` names where the key came from.
    pub fn new(app_id: String, pem: &str, source: &str) -> anyhow::Result<Self> {
        let key = EncodingKey::from_rsa_pem(pem.as_bytes()).map_err(|_| {
            anyhow::anyhow!("{source}: expected the App's RSA private key in PEM form")
        })?;
        Ok(Self { app_id, key })
    }

    pub fn app_id(&self) -> &str {
        &self.app_id
    }

    /// A JWT that authenticates as the App itself.
    pub fn jwt(&self, now: DateTime<Utc>) -> anyhow::Result<SecretString> {
        #[derive(Serialize)]
        struct Claims<'a> {
            iat: i64,
            exp: i64,
            iss: &'a str,
        }
        let claims = Claims {
            iat: (now - JWT_BACKDATE).timestamp(),
            exp: (now + JWT_LIFETIME).timestamp(),
            iss: &self.app_id,
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &self.key)
            .context("signing the App JWT")?;
        Ok(token.into())
    }
}

#[derive(Clone)]
struct CachedToken {
    token: SecretString,
    expires_at: DateTime<Utc>,
}

type TokenSlot = Arc<tokio::sync::Mutex<Option<CachedToken>>>;

/// Tokens are cached per installation and repository: a token only ever reaches one repository.
#[derive(Clone, PartialEq, Eq, Hash)]
struct TokenKey {
    installation_id: i64,
    /// Lower-cased: GitHub repository names are ASCII and case-insensitive, and one repository
    /// should not get two tokens because two webhooks spelled it differently.
    repository: String,
}

impl TokenKey {
    fn new(installation_id: i64, repository: &str) -> Self {
        Self {
            installation_id,
            repository: repository.to_ascii_lowercase(),
        }
    }
}

/// The App as a whole: mints installation clients, caching one token per installation and
/// repository.
pub struct GitHubApp {
    octocrab: Octocrab,
    /// Read at every JWT: set-up may replace them while the service runs.
    credentials: Credentials,
    tokens: Mutex<HashMap<TokenKey, TokenSlot>>,
}

/// One attempt GitHub made at delivering a webhook to the App.
#[derive(Debug, Clone, Deserialize)]
pub struct HookDelivery {
    pub id: i64,
    pub guid: String,
    pub delivered_at: DateTime<Utc>,
    pub status_code: u16,
    pub event: String,
}

#[derive(Serialize)]
pub struct TokenPermissions {
    contents: &'static str,
    pull_requests: &'static str,
    issues: &'static str,
    checks: &'static str,
}

/// The body of `POST /app/installations/{id}/access_tokens`: narrows the token to one
/// repository (by name, without the owner) and to [`TOKEN_PERMISSIONS`].
#[derive(Serialize)]
struct AccessTokenRequest<'a> {
    repositories: [&'a str; 1],
    permissions: &'a TokenPermissions,
}

#[derive(Deserialize)]
struct AccessToken {
    token: String,
    expires_at: DateTime<Utc>,
}

impl GitHubApp {
    pub fn new(api_url: &str, credentials: impl Into<Credentials>) -> anyhow::Result<Self> {
        let octocrab = Octocrab::builder()
            .base_uri(api_url)
            .with_context(|| format!("GITHUB_API_URL: {api_url:?} is not a URL"))?
            .build()
            .context("building the GitHub client")?;
        Ok(Self {
            octocrab,
            credentials: credentials.into(),
            tokens: Mutex::default(),
        })
    }

    /// A client acting as `installation_id` on repository `repo_name` (without the owner) and
    /// no other; its first call mints the token.
    pub fn installation(
        self: &Arc<Self>,
        installation_id: i64,
        repo_name: &str,
    ) -> InstallationClient {
        InstallationClient::new(self.clone(), installation_id, repo_name)
    }

    pub(crate) fn octocrab_with(
        &self,
        token: SecretString,
        call: &'static str,
    ) -> Result<Octocrab, GitHubError> {
        self.octocrab
            .user_access_token(token)
            .map_err(|err| GitHubError::classify(call, err))
    }

    /// A token for `installation_id` limited to `repository`, valid for at least a few more
    /// minutes.
    pub(crate) async fn token(
        &self,
        installation_id: i64,
        repository: &str,
    ) -> Result<SecretString, GitHubError> {
        let slot = self.slot(TokenKey::new(installation_id, repository));
        // Holding the slot while minting makes concurrent callers share one request.
        let mut cached = slot.lock().await;
        if let Some(token) = cached
            .as_ref()
            .filter(|t| t.expires_at - TOKEN_REFRESH_MARGIN > Utc::now())
        {
            return Ok(token.token.clone());
        }
        let fresh = self.mint(installation_id, repository).await?;
        *cached = Some(fresh.clone());
        Ok(fresh.token)
    }

    /// Drops `token` from the cache after GitHub refused it, unless another caller already
    /// replaced it.
    pub(crate) async fn forget_token(
        &self,
        installation_id: i64,
        repository: &str,
        token: &SecretString,
    ) {
        let slot = self.slot(TokenKey::new(installation_id, repository));
        let mut cached = slot.lock().await;
        if cached
            .as_ref()
            .is_some_and(|c| c.token.expose_secret() == token.expose_secret())
        {
            *cached = None;
        }
    }

    fn slot(&self, key: TokenKey) -> TokenSlot {
        self.tokens
            .lock()
            .expect("token cache lock")
            .entry(key)
            .or_default()
            .clone()
    }

    /// A client authenticated as the App itself (JWT), for `/app/...` endpoints.
    fn as_app(&self, call: &'static str) -> Result<Octocrab, GitHubError> {
        let app = self.credentials.app().ok_or(GitHubError::Transport {
            call,
            message: "no GitHub App is configured yet (see /setup)".to_owned(),
        })?;
        let jwt = app.jwt(Utc::now()).map_err(|err| GitHubError::Transport {
            call,
            message: format!("{err:#}"),
        })?;
        self.octocrab_with(jwt, call)
    }

    /// The App's recent webhook deliveries, newest first, at most `max_pages` pages of 100.
    pub async fn hook_deliveries(
        &self,
        max_pages: usize,
    ) -> Result<Vec<HookDelivery>, GitHubError> {
        const CALL: &str = "list hook deliveries";
        let app = self.as_app(CALL)?;
        let mut page: Page<HookDelivery> = call(CALL, || {
            app.get("/app/hook/deliveries", Some(&[("per_page", 100)]))
        })
        .await?;
        let mut deliveries = std::mem::take(&mut page.items);
        for _ in 1..max_pages {
            let next = page.next.clone();
            let Some(next_page) = call(CALL, || app.get_page::<HookDelivery>(&next)).await? else {
                break;
            };
            page = next_page;
            deliveries.append(&mut page.items);
        }
        Ok(deliveries)
    }

    /// Asks GitHub to send delivery attempt `id` again.
    pub async fn redeliver(&self, id: i64) -> Result<(), GitHubError> {
        const CALL: &str = "redeliver hook delivery";
        let app = self.as_app(CALL)?;
        let route = format!("/app/hook/deliveries/{id}/attempts");
        let _: serde_json::Value = call(CALL, || app.post(&route, None::<&()>)).await?;
        Ok(())
    }

    async fn mint(
        &self,
        installation_id: i64,
        repository: &str,
    ) -> Result<CachedToken, GitHubError> {
        const CALL: &str = "create installation token";
        let app = self.as_app(CALL)?;
        let route = format!("/app/installations/{installation_id}/access_tokens");
        let body = AccessTokenRequest {
            repositories: [repository],
            permissions: &TOKEN_PERMISSIONS,
        };
        let token: AccessToken = call(CALL, || app.post(&route, Some(&body))).await?;
        tracing::debug!(installation = installation_id, repository, expires_at = %token.expires_at, "installation token minted");
        Ok(CachedToken {
            token: token.token.into(),
            expires_at: token.expires_at,
        })
    }
}
