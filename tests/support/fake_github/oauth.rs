//! GitHub's web application flow for an App's OAuth client: `GET /login/oauth/authorize`
//! (as if the person signed in to GitHub in the browser had authorized the App before, so
//! GitHub sends them straight back with a code), `POST /login/oauth/access_token` (a code is
//! good once, for ten minutes, with the client's secret and the same `redirect_uri`; errors
//! come back as 200 with an `error` field, as GitHub does), and `GET /user` for the user
//! access token it hands out.

use std::collections::HashMap;
use std::time::Duration;

use axum::body::Bytes;
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use chrono::{DateTime, Utc};
use serde_json::json;

use super::wire::{
    account_json, bad_credentials, gh_error, json_response, random_alnum, split_auth,
};
use super::{FakeGitHub, Inner, Shared, lock};

/// The OAuth client of the fake's own App ([`super::APP_ID`]).
pub const CLIENT_ID: &str = "Iv23liFakeConveyor01";
pub const CLIENT_SECRET: &str = "fake-oauth-client-secret-0123456789abcdef";

/// GitHub's codes last ten minutes.
const CODE_LIFETIME: Duration = Duration::from_secs(600);
const DOCS: &str = "https://docs.github.com/apps/managing-oauth-apps/troubleshooting-oauth-app-access-token-request-errors";

#[derive(Default)]
pub(super) struct OAuth {
    /// Who is signed in to GitHub in "the browser" that follows the authorize redirect.
    browser_user: Option<String>,
    /// Whether that person clicks Cancel instead of Authorize.
    denies: bool,
    /// The callback URL registered for the fake's own App's client.
    own_callback: Option<String>,
    codes: Vec<Code>,
    /// User access token → login.
    user_tokens: HashMap<String, String>,
}

struct Code {
    code: String,
    client_id: String,
    redirect_uri: String,
    login: String,
    issued_at: DateTime<Utc>,
}

impl FakeGitHub {
    /// Signs `login` in to GitHub in the browser, as an account GitHub knows.
    pub fn sign_in_browser_as(&self, login: &str) {
        let mut inner = lock(&self.shared);
        inner.know_user(login);
        inner.oauth.browser_user = Some(login.to_owned());
        inner.oauth.denies = false;
    }

    /// The person in the browser cancels on GitHub's authorize page.
    pub fn deny_authorization(&self) {
        lock(&self.shared).oauth.denies = true;
    }

    /// Registers the callback URL of the fake's own App's OAuth client ([`CLIENT_ID`]).
    pub fn register_oauth_callback(&self, url: &str) {
        lock(&self.shared).oauth.own_callback = Some(url.to_owned());
    }

    /// Ages every unused code past GitHub's ten minutes.
    pub fn expire_oauth_codes(&self) {
        let aged = Utc::now() - chrono::Duration::from_std(CODE_LIFETIME).unwrap() * 2;
        for code in &mut lock(&self.shared).oauth.codes {
            code.issued_at = aged;
        }
    }
}

impl Inner {
    /// The client's secret and registered callback URLs, if `client_id` is a client here.
    fn oauth_client(&self, client_id: &str) -> Option<(String, Vec<String>)> {
        if client_id == CLIENT_ID {
            let callbacks = self.oauth.own_callback.iter().cloned().collect();
            return Some((CLIENT_SECRET.to_owned(), callbacks));
        }
        self.manifests.client(client_id)
    }
}

/// GitHub's rule: same scheme, host and port as a registered callback URL, and a path at or
/// below its path.
fn redirect_allowed(redirect_uri: &str, callbacks: &[String]) -> bool {
    let Ok(asked) = url::Url::parse(redirect_uri) else {
        return false;
    };
    callbacks.iter().any(|callback| {
        url::Url::parse(callback).is_ok_and(|registered| {
            registered.scheme() == asked.scheme()
                && registered.host_str() == asked.host_str()
                && registered.port_or_known_default() == asked.port_or_known_default()
                && asked.path().starts_with(registered.path())
        })
    })
}

fn query_pairs(raw: Option<&str>) -> HashMap<String, String> {
    url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
        .into_owned()
        .collect()
}

fn redirect(to: url::Url) -> Response {
    let mut response = Response::new(axum::body::Body::empty());
    *response.status_mut() = StatusCode::FOUND;
    response.headers_mut().insert(
        header::LOCATION,
        HeaderValue::from_str(to.as_str()).expect("a URL is a header value"),
    );
    response
}

fn html(status: StatusCode, text: &str) -> Response {
    let mut response = Response::new(axum::body::Body::from(format!(
        "<!DOCTYPE html><html><head><title>{text}</title></head><body><h1>{text}</h1></body></html>"
    )));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    response
}

/// `GET /login/oauth/authorize?client_id=&redirect_uri=&state=`.
pub(super) fn authorize(shared: &Shared, parts: &Parts) -> Response {
    let query = query_pairs(parts.uri.query());
    let mut inner = lock(shared);
    let Some(client_id) = query.get("client_id") else {
        return html(
            StatusCode::NOT_FOUND,
            "404 — This is not the web page you are looking for",
        );
    };
    let Some((_, callbacks)) = inner.oauth_client(client_id) else {
        return html(
            StatusCode::NOT_FOUND,
            "404 — This is not the web page you are looking for",
        );
    };
    let Some(first) = callbacks.first().cloned() else {
        return html(
            StatusCode::BAD_REQUEST,
            "This application has no callback URL",
        );
    };
    let redirect_uri = query.get("redirect_uri").cloned().unwrap_or(first.clone());
    let back = |to: &str, pairs: &[(&str, &str)]| {
        let mut url = url::Url::parse(to).expect("a registered callback is a URL");
        for (name, value) in pairs {
            url.query_pairs_mut().append_pair(name, value);
        }
        if let Some(state) = query.get("state") {
            url.query_pairs_mut().append_pair("state", state);
        }
        redirect(url)
    };
    if !redirect_allowed(&redirect_uri, &callbacks) {
        return back(
            &first,
            &[
                ("error", "redirect_uri_mismatch"),
                (
                    "error_description",
                    "The redirect_uri MUST match the registered callback URL for this application.",
                ),
                ("error_uri", DOCS),
            ],
        );
    }
    let Some(login) = inner.oauth.browser_user.clone() else {
        return html(StatusCode::OK, "Sign in to GitHub");
    };
    if inner.oauth.denies {
        return back(
            &redirect_uri,
            &[
                ("error", "access_denied"),
                (
                    "error_description",
                    "The user has denied your application access.",
                ),
                ("error_uri", DOCS),
            ],
        );
    }
    let code = random_alnum(20).to_ascii_lowercase();
    inner.oauth.codes.push(Code {
        code: code.clone(),
        client_id: client_id.clone(),
        redirect_uri: redirect_uri.clone(),
        login,
        issued_at: Utc::now(),
    });
    back(&redirect_uri, &[("code", &code)])
}

fn oauth_error(error: &str, description: &str) -> Response {
    json_response(
        StatusCode::OK,
        &json!({ "error": error, "error_description": description, "error_uri": DOCS }),
    )
}

/// `POST /login/oauth/access_token` with `client_id`, `client_secret`, `code` and
/// `redirect_uri`, form-encoded or in the query; JSON answers for `Accept: application/json`,
/// form-encoded ones otherwise.
pub(super) fn access_token(shared: &Shared, parts: &Parts, body: &Bytes) -> Response {
    let mut params = query_pairs(parts.uri.query());
    params.extend(url::form_urlencoded::parse(body).into_owned());
    let wants_json = parts
        .headers
        .get(header::ACCEPT)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.contains("application/json"));
    let field = |name: &str| params.get(name).map(String::as_str).unwrap_or_default();
    let mut inner = lock(shared);
    let credentials_ok = inner
        .oauth_client(field("client_id"))
        .is_some_and(|(secret, _)| secret == field("client_secret"));
    if !credentials_ok {
        return oauth_error(
            "incorrect_client_credentials",
            "The client_id and/or client_secret passed are incorrect.",
        );
    }
    let Some(position) = inner
        .oauth
        .codes
        .iter()
        .position(|code| code.code == field("code") && code.client_id == field("client_id"))
    else {
        return oauth_error(
            "bad_verification_code",
            "The code passed is incorrect or expired.",
        );
    };
    let code = inner.oauth.codes.remove(position);
    let age = (Utc::now() - code.issued_at).to_std().unwrap_or_default();
    if age > CODE_LIFETIME {
        return oauth_error(
            "bad_verification_code",
            "The code passed is incorrect or expired.",
        );
    }
    if params.contains_key("redirect_uri") && field("redirect_uri") != code.redirect_uri {
        return oauth_error(
            "redirect_uri_mismatch",
            "The redirect_uri MUST match the registered callback URL for this application.",
        );
    }
    let token = format!("ghu_{}", random_alnum(36));
    inner.oauth.user_tokens.insert(token.clone(), code.login);
    if wants_json {
        return json_response(
            StatusCode::OK,
            &json!({
                "access_token": token,
                "expires_in": 28_800,
                "refresh_token": format!("ghr_{}", random_alnum(76)),
                "refresh_token_expires_in": 15_897_600,
                "scope": "",
                "token_type": "bearer",
            }),
        );
    }
    let mut response = Response::new(axum::body::Body::from(format!(
        "access_token={token}&scope=&token_type=bearer"
    )));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-www-form-urlencoded; charset=utf-8"),
    );
    response
}

/// `GET /user`: the account of a user access token. An installation token is not a user.
pub(super) fn user(shared: &Shared, auth: Option<&str>) -> Response {
    let Some(auth) = auth else {
        return gh_error(StatusCode::UNAUTHORIZED, "Requires authentication");
    };
    let token = match split_auth(auth) {
        Some((scheme, token)) if scheme == "bearer" || scheme == "token" => token,
        _ => return bad_credentials(),
    };
    let inner = lock(shared);
    if let Some(login) = inner.oauth.user_tokens.get(token) {
        return json_response(StatusCode::OK, &account_json(&inner.base_url, login));
    }
    if inner.token_scope(token).is_some() {
        return gh_error(StatusCode::FORBIDDEN, super::apps::FORBIDDEN_TO_INTEGRATION);
    }
    bad_credentials()
}
