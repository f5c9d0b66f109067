//! Signing a person in with the App's OAuth client (GitHub's web application flow): the
//! authorize URL on GitHub's web side, the code traded for a user access token, and the
//! account the token belongs to. The token is used for that one question and then dropped:
//! what a person may see is asked of GitHub as the App, not as them.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::app::GitHubApp;
use super::client::call;
use super::error::GitHubError;

/// Trading a code is one request to GitHub's web side; a person waits for it.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(15);

/// The App's OAuth client, from set-up or `GITHUB_CLIENT_ID` and `GITHUB_CLIENT_SECRET`.
#[derive(Clone)]
pub struct OAuthClient {
    pub client_id: String,
    pub client_secret: SecretString,
}

/// Why no one was signed in.
#[derive(Debug, thiserror::Error)]
pub enum OAuthError {
    /// GitHub answered the exchange with an OAuth error (`bad_verification_code`,
    /// `incorrect_client_credentials`, `redirect_uri_mismatch`, …).
    #[error("GitHub refused the sign-in: {code}: {description}")]
    Refused { code: String, description: String },
    #[error("GitHub could not be asked: {0}")]
    Unreachable(String),
    #[error(transparent)]
    GitHub(#[from] GitHubError),
}

/// Who signed in, as GitHub names them.
#[derive(Debug, Clone, Deserialize)]
pub struct Account {
    pub login: String,
    pub id: i64,
}

/// Where to send a person to sign in: `{web_url}/login/oauth/authorize`, coming back to
/// `redirect_uri` with a code and `state`.
pub fn authorize_url(
    web_url: &str,
    client: &OAuthClient,
    redirect_uri: &str,
    state: &str,
) -> String {
    let query: String = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("client_id", &client.client_id)
        .append_pair("redirect_uri", redirect_uri)
        .append_pair("state", state)
        .append_pair("allow_signup", "false")
        .finish();
    format!(
        "{}/login/oauth/authorize?{query}",
        web_url.trim_end_matches('/')
    )
}

#[derive(Deserialize)]
struct Exchanged {
    access_token: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// Trades the code GitHub sent back for a user access token, at
/// `{web_url}/login/oauth/access_token`. GitHub answers a bad code with 200 and an `error`
/// field, so the body decides, not the status.
pub async fn exchange(
    web_url: &str,
    client: &OAuthClient,
    code: &str,
    redirect_uri: &str,
) -> Result<SecretString, OAuthError> {
    let unreachable = |err: reqwest::Error| OAuthError::Unreachable(err.without_url().to_string());
    let http = reqwest::Client::builder()
        .timeout(EXCHANGE_TIMEOUT)
        .user_agent("conveyor")
        .build()
        .map_err(unreachable)?;
    let response = http
        .post(format!(
            "{}/login/oauth/access_token",
            web_url.trim_end_matches('/')
        ))
        .header(reqwest::header::ACCEPT, "application/json")
        .form(&[
            ("client_id", client.client_id.as_str()),
            ("client_secret", client.client_secret.expose_secret()),
            ("code", code),
            ("redirect_uri", redirect_uri),
        ])
        .send()
        .await
        .map_err(unreachable)?;
    let status = response.status();
    let answer: Exchanged = response.json().await.map_err(|_| {
        OAuthError::Unreachable(format!(
            "GitHub answered the code exchange with {status} and no JSON"
        ))
    })?;
    match (answer.access_token, answer.error) {
        (Some(token), None) if !token.is_empty() => Ok(token.into()),
        (_, code) => Err(OAuthError::Refused {
            code: code.unwrap_or_else(|| format!("http_{}", status.as_u16())),
            description: answer.error_description.unwrap_or_default(),
        }),
    }
}

impl GitHubApp {
    /// The account a user access token belongs to (`GET /user`).
    pub async fn account(&self, token: SecretString) -> Result<Account, GitHubError> {
        const CALL: &str = "get the authenticated user";
        let octocrab = self.octocrab_with(token, CALL)?;
        call(CALL, || octocrab.get("/user", None::<&()>)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_authorize_url_carries_the_client_the_way_back_and_the_state() {
        let client = OAuthClient {
            client_id: "Iv23abc".to_owned(),
            client_secret: "s3cret".to_owned().into(),
        };
        let url = authorize_url(
            "https://github.com/",
            &client,
            "https://ci.example.org/auth/callback",
            "st&ate",
        );
        let parsed = url::Url::parse(&url).unwrap();
        assert_eq!(parsed.path(), "/login/oauth/authorize");
        let pairs: Vec<(String, String)> = parsed.query_pairs().into_owned().collect();
        assert!(pairs.contains(&("client_id".into(), "Iv23abc".into())));
        assert!(pairs.contains(&(
            "redirect_uri".into(),
            "https://ci.example.org/auth/callback".into()
        )));
        assert!(pairs.contains(&("state".into(), "st&ate".into())));
        assert!(
            !url.contains("s3cret"),
            "the secret never goes to a browser"
        );
    }
}
