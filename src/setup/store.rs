//! The App made at set-up, in Postgres with its secrets sealed, and the `state` values of
//! manifest flows under way.

use secrecy::ExposeSecret;
use sqlx::PgExecutor;

use super::sealing::SealingKey;
use crate::github::AppCredentials;
use crate::github::credentials::{Current, Source, Sourced};
use crate::github::manifest::CreatedApp;
use crate::github::oauth::OAuthClient;

/// How long a person may take on GitHub between `/setup` and the callback.
const FLOW_LIFETIME_SECS: f64 = 3600.0;

/// What the status page shows of the stored App: nothing secret.
pub struct Registered {
    pub app_id: i64,
    pub slug: String,
    pub html_url: String,
}

/// Keeps `app`, replacing an App made at an earlier set-up.
pub async fn save(db: impl PgExecutor<'_>, key: &SealingKey, app: &CreatedApp) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO github_app
             (app_id, slug, html_url, client_id, client_secret, webhook_secret, private_key)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (singleton) DO UPDATE SET
             app_id = $1, slug = $2, html_url = $3, client_id = $4, client_secret = $5,
             webhook_secret = $6, private_key = $7, created_at = now()",
    )
    .bind(app.id)
    .bind(&app.slug)
    .bind(&app.html_url)
    .bind(&app.client_id)
    .bind(key.seal(
        "client_secret",
        app.client_secret.expose_secret().as_bytes(),
    ))
    .bind(key.seal(
        "webhook_secret",
        app.webhook_secret.expose_secret().as_bytes(),
    ))
    .bind(key.seal("private_key", app.pem.expose_secret().as_bytes()))
    .execute(db)
    .await?;
    Ok(())
}

pub async fn registered(db: impl PgExecutor<'_>) -> sqlx::Result<Option<Registered>> {
    let row: Option<(i64, String, String)> =
        sqlx::query_as("SELECT app_id, slug, html_url FROM github_app")
            .fetch_optional(db)
            .await?;
    Ok(row.map(|(app_id, slug, html_url)| Registered {
        app_id,
        slug,
        html_url,
    }))
}

/// Whether an App was made at set-up: only then is the sealing key needed at start.
pub async fn exists(db: impl PgExecutor<'_>) -> sqlx::Result<bool> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM github_app)")
        .fetch_one(db)
        .await
}

/// The stored App as its row holds it, the secrets still sealed.
#[derive(sqlx::FromRow)]
struct SealedApp {
    app_id: i64,
    webhook_secret: Vec<u8>,
    private_key: Vec<u8>,
    client_id: String,
    client_secret: Vec<u8>,
}

/// The stored App's id, key, webhook secret and OAuth client, opened with `key`; nothing
/// when no App was made at set-up.
pub async fn credentials(db: impl PgExecutor<'_>, key: &SealingKey) -> anyhow::Result<Current> {
    let row: Option<SealedApp> = sqlx::query_as(
        "SELECT app_id, webhook_secret, private_key, client_id, client_secret FROM github_app",
    )
    .fetch_optional(db)
    .await?;
    let Some(sealed) = row else {
        return Ok(Current::default());
    };
    let pem = key.open("private_key", &sealed.private_key)?;
    let app = AppCredentials::new(
        sealed.app_id.to_string(),
        pem.expose_secret(),
        "the App's key stored at set-up",
    )?;
    let webhook_secret = key.open("webhook_secret", &sealed.webhook_secret)?;
    Ok(Current {
        app: Some(Sourced::new(app, Source::Setup)),
        webhook_secret: Some(Sourced::new(webhook_secret, Source::Setup)),
        oauth: Some(Sourced::new(
            OAuthClient {
                client_id: sealed.client_id,
                client_secret: key.open("client_secret", &sealed.client_secret)?,
            },
            Source::Setup,
        )),
    })
}

/// A fresh `state` for a manifest flow; flows left unfinished for an hour are forgotten.
pub async fn start_flow(db: impl PgExecutor<'_>, state: &str) -> sqlx::Result<()> {
    sqlx::query(
        "WITH forgotten AS (
             DELETE FROM github_app_setup_states
             WHERE created_at < now() - make_interval(secs => $2)
         )
         INSERT INTO github_app_setup_states (state) VALUES ($1)",
    )
    .bind(state)
    .bind(FLOW_LIFETIME_SECS)
    .execute(db)
    .await?;
    Ok(())
}

/// Consumes `state`: true when a flow started here within the hour is under that `state`.
pub async fn finish_flow(db: impl PgExecutor<'_>, state: &str) -> sqlx::Result<bool> {
    let found: Option<String> = sqlx::query_scalar(
        "DELETE FROM github_app_setup_states
         WHERE state = $1 AND created_at >= now() - make_interval(secs => $2)
         RETURNING state",
    )
    .bind(state)
    .bind(FLOW_LIFETIME_SECS)
    .fetch_optional(db)
    .await?;
    Ok(found.is_some())
}
