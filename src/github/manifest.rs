//! `POST /app-manifests/{code}/conversions`: the code GitHub's manifest flow hands back,
//! exchanged for the App it made. No authentication: the single-use code is the proof.

use octocrab::Octocrab;
use secrecy::SecretString;
use serde::Deserialize;

use super::client::call;
use super::error::GitHubError;

const CALL: &str = "create app from manifest";

/// The App GitHub made, with the secrets it shows only this once.
pub struct CreatedApp {
    pub id: i64,
    pub slug: String,
    pub html_url: String,
    pub client_id: String,
    pub client_secret: SecretString,
    pub webhook_secret: SecretString,
    pub pem: SecretString,
}

#[derive(Deserialize)]
struct Conversion {
    id: i64,
    slug: String,
    html_url: String,
    client_id: String,
    client_secret: String,
    webhook_secret: Option<String>,
    pem: String,
}

/// Whether `code` can be what GitHub hands back: it goes into a URL path.
pub fn is_well_formed_code(code: &str) -> bool {
    !code.is_empty()
        && code.len() <= 200
        && code
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Exchanges a well-formed `code` (see [`is_well_formed_code`]) at `api_url`.
pub async fn convert(api_url: &str, code: &str) -> Result<CreatedApp, GitHubError> {
    let transport = |message: String| GitHubError::Transport {
        call: CALL,
        message,
    };
    let octocrab = Octocrab::builder()
        .base_uri(api_url)
        .map_err(|_| transport(format!("GITHUB_API_URL: {api_url:?} is not a URL")))?
        .build()
        .map_err(|err| transport(format!("building the GitHub client: {err}")))?;
    let route = format!("/app-manifests/{code}/conversions");
    let app: Conversion = call(CALL, || octocrab.post(&route, None::<&()>)).await?;
    let webhook_secret = app.webhook_secret.ok_or(GitHubError::Unprocessable {
        call: CALL,
        message: "GitHub made the App without a webhook secret".to_owned(),
    })?;
    Ok(CreatedApp {
        id: app.id,
        slug: app.slug,
        html_url: app.html_url,
        client_id: app.client_id,
        client_secret: app.client_secret.into(),
        webhook_secret: webhook_secret.into(),
        pem: app.pem.into(),
    })
}
