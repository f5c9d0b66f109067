//! Who may see the pages: the operator token, sent as `Authorization: Bearer` by scripts or
//! entered once at `/signin`, or a person signing in with GitHub through the App's OAuth
//! client (`/signin/github`, back at `/auth/callback`). Either way a signed session cookie
//! then records who signed in ([`Principal`]); what a GitHub account may see is decided per
//! repository in `access`. Every form a session posts carries the session's CSRF token; a
//! script sending the bearer header needs none, since a browser never adds that header to a
//! request another site makes it send.

use axum::Form;
use axum::extract::{FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::Utc;
use hmac::{Hmac, Mac};
use maud::html;
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::PageError;
use super::layout;
use crate::github::oauth::{self, OAuthError};
use crate::http::AppState;
use crate::http::api;
use crate::setup::manifest::SIGN_IN_CALLBACK_PATH;

pub const COOKIE: &str = "conveyor_session";
/// How long a sign-in lasts.
const SIGNED_IN_SECS: i64 = 12 * 60 * 60;
/// How long the sign-in form may stay open before it is posted.
const ANONYMOUS_SECS: i64 = 60 * 60;

/// Who signed in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Principal {
    /// Whoever holds `CONVEYOR_API_TOKEN`: may see and do everything.
    Operator,
    /// A person GitHub signed in: may see and do what their permission on each repository
    /// allows.
    GitHub { login: String, id: i64 },
}

/// Who a bearer token acts as.
static OPERATOR: Principal = Principal::Operator;

/// A sign-in with GitHub under way: the `state` GitHub must send back, and where to go then.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SigningIn {
    state: String,
    next: String,
}

/// What the session cookie holds: who signed in (nobody yet, while the sign-in form is
/// open), the CSRF token of its forms, and when it ends (Unix seconds).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Session {
    pub who: Option<Principal>,
    pub csrf: String,
    pub expires: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_in: Option<SigningIn>,
}

impl Session {
    fn new(who: Option<Principal>) -> Self {
        let lasts = if who.is_some() {
            SIGNED_IN_SECS
        } else {
            ANONYMOUS_SECS
        };
        Self {
            who,
            csrf: random_token(),
            expires: Utc::now().timestamp() + lasts,
            signing_in: None,
        }
    }
}

/// 122 random bits, as text for a form or a URL.
fn random_token() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// The key sessions are signed with. Derived from the operator token: sessions work across
/// restarts and processes, and changing the token ends every session it opened.
struct Key {
    secret: Vec<u8>,
    /// Served over HTTPS: the cookie is marked `Secure`, so a browser never sends it in
    /// the clear to a plain-HTTP address of the same host.
    secure: bool,
}

impl Key {
    fn of(state: &AppState) -> Option<Key> {
        let token = state.api_token.as_ref()?;
        let mut mac = Hmac::<Sha256>::new_from_slice(token.expose_secret().as_bytes())
            .expect("HMAC takes a key of any length");
        mac.update(b"conveyor page sessions v1");
        Some(Key {
            secret: mac.finalize().into_bytes().to_vec(),
            secure: state.setup.public_url.starts_with("https://"),
        })
    }

    fn mac(&self) -> Hmac<Sha256> {
        Hmac::new_from_slice(&self.secret).expect("HMAC takes a key of any length")
    }

    /// `payload.signature`, both base64url.
    fn seal(&self, session: &Session) -> String {
        let payload = serde_json::to_vec(session).expect("a session serialises");
        let mut mac = self.mac();
        mac.update(&payload);
        let signature = mac.finalize().into_bytes();
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(&payload),
            URL_SAFE_NO_PAD.encode(signature)
        )
    }

    /// The session a cookie value holds, if this key signed it and it has not expired.
    fn open(&self, sealed: &str) -> Option<Session> {
        let (payload, signature) = sealed.split_once('.')?;
        let payload = URL_SAFE_NO_PAD.decode(payload).ok()?;
        let signature = URL_SAFE_NO_PAD.decode(signature).ok()?;
        let mut mac = self.mac();
        mac.update(&payload);
        mac.verify_slice(&signature).ok()?;
        let session: Session = serde_json::from_slice(&payload).ok()?;
        (session.expires > Utc::now().timestamp()).then_some(session)
    }
}

fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

fn session_of(key: &Key, headers: &HeaderMap) -> Option<Session> {
    cookie_value(headers, COOKIE).and_then(|sealed| key.open(sealed))
}

/// The `Set-Cookie` value that keeps `session` (HttpOnly: no script reads it; SameSite=Lax:
/// another site's forms do not carry it).
fn set_cookie(key: &Key, session: &Session) -> HeaderValue {
    let max_age = (session.expires - Utc::now().timestamp()).max(0);
    let secure = if key.secure { "; Secure" } else { "" };
    let cookie = format!(
        "{COOKIE}={}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}",
        key.seal(session)
    );
    HeaderValue::from_str(&cookie).expect("base64url and ASCII make a valid header")
}

fn clear_cookie() -> HeaderValue {
    HeaderValue::from_str(&format!(
        "{COOKIE}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0"
    ))
    .expect("an ASCII header")
}

/// Someone allowed to see the pages.
#[derive(Debug, Clone)]
pub enum Viewer {
    /// A script that sent the operator token.
    Bearer,
    /// A browser with a signed-in session.
    Session { who: Principal, csrf: String },
}

impl Viewer {
    /// The CSRF token the viewer's forms carry; a script has none to carry.
    pub fn csrf(&self) -> Option<&str> {
        match self {
            Viewer::Bearer => None,
            Viewer::Session { csrf, .. } => Some(csrf),
        }
    }

    /// Refuses a form posted from a session without the session's token.
    pub fn check(&self, presented: Option<&str>) -> Result<(), PageError> {
        match self {
            Viewer::Bearer => Ok(()),
            Viewer::Session { csrf, .. } if matches(csrf, presented) => Ok(()),
            Viewer::Session { .. } => Err(csrf_refused()),
        }
    }

    pub fn principal(&self) -> &Principal {
        match self {
            Viewer::Bearer => &OPERATOR,
            Viewer::Session { who, .. } => who,
        }
    }

    /// The name the pages show and the logs record.
    pub fn who(&self) -> &str {
        match self.principal() {
            Principal::Operator => "operator",
            Principal::GitHub { login, .. } => login,
        }
    }
}

fn matches(expected: &str, presented: Option<&str>) -> bool {
    presented.is_some_and(|presented| bool::from(presented.as_bytes().ct_eq(expected.as_bytes())))
}

fn csrf_refused() -> PageError {
    PageError::new(
        StatusCode::FORBIDDEN,
        "This form is missing its security token, or it belongs to another session. Go back, reload the page and try again.",
    )
}

fn pages_off() -> PageError {
    PageError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "The pages are off: set CONVEYOR_API_TOKEN to enable them, then sign in with it.",
    )
}

/// Where to go back to after signing in: a path on this site only.
fn local(next: Option<&str>) -> &str {
    match next {
        Some(path) if path.starts_with('/') && !path.starts_with("//") && !path.contains('\\') => {
            path
        }
        _ => "/tasks",
    }
}

impl FromRequestParts<AppState> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let key = Key::of(state).ok_or_else(|| pages_off().into_response())?;
        if parts.headers.contains_key(header::AUTHORIZATION) {
            return match api::authorize(state, &parts.headers) {
                Ok(()) => Ok(Viewer::Bearer),
                Err(refusal) => Err(PageError::new(refusal.0, refusal.1).into_response()),
            };
        }
        if let Some(Session {
            who: Some(who),
            csrf,
            ..
        }) = session_of(&key, &parts.headers)
        {
            return Ok(Viewer::Session { who, csrf });
        }
        // Back to the page asked for; a form posted without a session is not posted again.
        let back = match parts.method {
            Method::GET => parts
                .uri
                .path_and_query()
                .map_or("/tasks", |path| path.as_str()),
            _ => "/tasks",
        };
        let next: String = url::form_urlencoded::byte_serialize(back.as_bytes()).collect();
        Err(Redirect::to(&format!("/signin?next={next}")).into_response())
    }
}

#[derive(Debug, Deserialize)]
pub struct Next {
    next: Option<String>,
}

/// `GET /signin`: the form; it opens an anonymous session whose token the form carries.
pub async fn form(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<Next>,
) -> Result<Response, PageError> {
    let key = Key::of(&state).ok_or_else(pages_off)?;
    let next = local(query.next.as_deref()).to_owned();
    let session = match session_of(&key, &headers) {
        Some(Session { who: Some(_), .. }) => return Ok(Redirect::to(&next).into_response()),
        Some(session) => session,
        None => Session::new(None),
    };
    let page = sign_in_page(&state, &session.csrf, &next, None);
    Ok((
        StatusCode::OK,
        [(header::SET_COOKIE, set_cookie(&key, &session))],
        page,
    )
        .into_response())
}

fn sign_in_page(state: &AppState, csrf: &str, next: &str, error: Option<&str>) -> maud::Markup {
    let with_github = state.credentials.oauth().is_some().then(|| {
        let next: String = url::form_urlencoded::byte_serialize(next.as_bytes()).collect();
        format!("/signin/github?next={next}")
    });
    layout::page(
        "Sign in",
        None,
        html! {
            h1 { "Sign in" }
            @if let Some(error) = error {
                p.error role="alert" { (error) }
            }
            @if let Some(href) = &with_github {
                p { a.button #github href=(href) { "Sign in with GitHub" } }
                p.hint { "You will see the repositories you can read on GitHub; pausing or stopping one needs admin on it." }
                h2 { "Operator" }
            }
            form method="post" action="/signin" {
                input type="hidden" name="csrf" value=(csrf);
                input type="hidden" name="next" value=(next);
                p {
                    label for="token" { "Operator token" }
                    input #token type="password" name="token" required
                        autocomplete="current-password" autofocus;
                }
                p.hint { "The value of " code { "CONVEYOR_API_TOKEN" } "." }
                button type="submit" { "Sign in" }
            }
        },
    )
}

#[derive(Debug, Deserialize)]
pub struct SignIn {
    csrf: Option<String>,
    token: Option<String>,
    next: Option<String>,
}

/// `POST /signin`: the operator token opens a signed-in session with a new CSRF token.
pub async fn sign_in(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<SignIn>,
) -> Result<Response, PageError> {
    let key = Key::of(&state).ok_or_else(pages_off)?;
    let session = session_of(&key, &headers).ok_or_else(csrf_refused)?;
    if !matches(&session.csrf, form.csrf.as_deref()) {
        return Err(csrf_refused());
    }
    let next = local(form.next.as_deref()).to_owned();
    if api::operator_token(&state, form.token.as_deref().unwrap_or_default()).is_err() {
        let page = sign_in_page(
            &state,
            &session.csrf,
            &next,
            Some("That is not the operator token."),
        );
        return Ok((StatusCode::UNAUTHORIZED, page).into_response());
    }
    let signed_in = Session::new(Some(Principal::Operator));
    Ok((
        [(header::SET_COOKIE, set_cookie(&key, &signed_in))],
        Redirect::to(&next),
    )
        .into_response())
}

fn github_off() -> PageError {
    PageError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "Signing in with GitHub needs the App's OAuth client: create the App at /setup, or set GITHUB_CLIENT_ID and GITHUB_CLIENT_SECRET.",
    )
}

fn sign_in_not_started() -> PageError {
    PageError::new(
        StatusCode::FORBIDDEN,
        "This sign-in did not start here, or it took too long. Go back to the sign-in page and start again.",
    )
}

/// `GET /signin/github`: sends the browser to GitHub with a fresh `state`, which the session
/// keeps until GitHub sends the browser back.
pub async fn with_github(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<Next>,
) -> Result<Response, PageError> {
    let key = Key::of(&state).ok_or_else(pages_off)?;
    let client = state.credentials.oauth().ok_or_else(github_off)?;
    let mut session = match session_of(&key, &headers) {
        Some(session) if session.who.is_none() => session,
        _ => Session::new(None),
    };
    let signing_in = SigningIn {
        state: random_token(),
        next: local(query.next.as_deref()).to_owned(),
    };
    let to = oauth::authorize_url(
        &state.github_web_url,
        &client,
        &callback_url(&state),
        &signing_in.state,
    );
    session.signing_in = Some(signing_in);
    Ok((
        [(header::SET_COOKIE, set_cookie(&key, &session))],
        Redirect::to(&to),
    )
        .into_response())
}

/// Where GitHub sends the browser back: on the public URL, as the App's manifest registers.
fn callback_url(state: &AppState) -> String {
    format!("{}{SIGN_IN_CALLBACK_PATH}", state.setup.public_url)
}

#[derive(Debug, Deserialize)]
pub struct Callback {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// `GET /auth/callback`: GitHub's answer. The `state` must be the one this browser's session
/// was sent with (else another site started the sign-in); the code is traded for a token, the
/// token tells who signed in, and a signed-in session with a new CSRF token replaces the
/// anonymous one.
pub async fn callback(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(answer): Query<Callback>,
) -> Result<Response, PageError> {
    let key = Key::of(&state).ok_or_else(pages_off)?;
    let client = state.credentials.oauth().ok_or_else(github_off)?;
    let session = session_of(&key, &headers).ok_or_else(sign_in_not_started)?;
    let signing_in = session
        .signing_in
        .as_ref()
        .filter(|pending| matches(&pending.state, answer.state.as_deref()))
        .ok_or_else(sign_in_not_started)?;
    let refused = |message: String| {
        let page = sign_in_page(&state, &session.csrf, &signing_in.next, Some(&message));
        Ok((StatusCode::UNAUTHORIZED, page).into_response())
    };
    if let Some(error) = &answer.error {
        let why = answer.error_description.as_deref().unwrap_or(error);
        return refused(format!("GitHub did not sign you in: {why}."));
    }
    let code = answer
        .code
        .as_deref()
        .filter(|code| oauth_code_is_well_formed(code))
        .ok_or_else(|| PageError::new(StatusCode::BAD_REQUEST, "GitHub sent no code back."))?;
    let account =
        match oauth::exchange(&state.github_web_url, &client, code, &callback_url(&state)).await {
            Ok(token) => state.github.account(token).await.map_err(OAuthError::from),
            Err(err) => Err(err),
        };
    let account = match account {
        Ok(account) => account,
        Err(OAuthError::Refused { code, description }) => {
            tracing::info!(%code, "GitHub refused a sign-in code");
            return refused(format!(
                "GitHub did not sign you in ({code}). {description}"
            ));
        }
        Err(err) => {
            tracing::warn!(error = %err, "signing in with GitHub failed");
            return Err(PageError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "GitHub could not be reached to finish signing in; try again in a moment.",
            ));
        }
    };
    tracing::info!(login = %account.login, "signed in with GitHub");
    let signed_in = Session::new(Some(Principal::GitHub {
        login: account.login,
        id: account.id,
    }));
    Ok((
        [(header::SET_COOKIE, set_cookie(&key, &signed_in))],
        Redirect::to(&signing_in.next),
    )
        .into_response())
}

/// GitHub's codes are short hex; anything else is not worth a request.
fn oauth_code_is_well_formed(code: &str) -> bool {
    !code.is_empty() && code.len() <= 100 && code.bytes().all(|b| b.is_ascii_alphanumeric())
}

#[derive(Debug, Deserialize)]
pub struct CsrfOnly {
    pub csrf: Option<String>,
}

/// `POST /signout`: ends the session.
pub async fn sign_out(viewer: Viewer, Form(form): Form<CsrfOnly>) -> Result<Response, PageError> {
    viewer.check(form.csrf.as_deref())?;
    Ok((
        [(header::SET_COOKIE, clear_cookie())],
        Redirect::to("/signin"),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_of(secret: &[u8], secure: bool) -> Key {
        Key {
            secret: secret.to_vec(),
            secure,
        }
    }

    fn key() -> Key {
        key_of(b"a test key", false)
    }

    #[test]
    fn the_cookie_is_secure_exactly_when_served_over_https() {
        let session = Session::new(Some(Principal::Operator));
        let cookie = |secure| {
            set_cookie(&key_of(b"a test key", secure), &session)
                .to_str()
                .unwrap()
                .to_owned()
        };
        assert!(cookie(true).ends_with("; Secure"), "{}", cookie(true));
        assert!(!cookie(false).contains("Secure"), "{}", cookie(false));
    }

    #[test]
    fn a_session_opens_only_with_its_key_and_unchanged() {
        let session = Session::new(Some(Principal::Operator));
        let sealed = key().seal(&session);
        let opened = key().open(&sealed).expect("its own key opens it");
        assert_eq!(opened.csrf, session.csrf);
        assert_eq!(opened.who, Some(Principal::Operator));
        assert!(key_of(b"another key", false).open(&sealed).is_none());
        let (payload, signature) = sealed.split_once('.').unwrap();
        let anonymous = serde_json::to_vec(&Session {
            who: None,
            ..session.clone()
        })
        .unwrap();
        let forged = format!("{}.{signature}", URL_SAFE_NO_PAD.encode(anonymous));
        assert!(key().open(&forged).is_none());
        assert!(key().open(payload).is_none());
    }

    #[test]
    fn an_expired_session_does_not_open() {
        let mut session = Session::new(Some(Principal::Operator));
        session.expires = Utc::now().timestamp() - 1;
        assert!(key().open(&key().seal(&session)).is_none());
    }

    #[test]
    fn only_local_paths_are_gone_back_to() {
        assert_eq!(local(Some("/runs/3")), "/runs/3");
        assert_eq!(local(Some("//evil.example")), "/tasks");
        assert_eq!(local(Some("https://evil.example")), "/tasks");
        assert_eq!(local(Some("/\\evil.example")), "/tasks");
        assert_eq!(local(None), "/tasks");
    }
}
