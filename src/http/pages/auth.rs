//! Who may see the pages: the operator token, sent as `Authorization: Bearer` by scripts or
//! entered once at `/signin`, which then keeps a signed session cookie. A session records who
//! signed in ([`Principal`]), so that another way of signing in (GitHub) adds a kind of
//! principal, not another kind of session. Every form a session posts carries the session's
//! CSRF token; a script sending the bearer header needs none, since a browser never adds that
//! header to a request another site makes it send.

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
use crate::http::AppState;
use crate::http::api;

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
}

/// What the session cookie holds: who signed in (nobody yet, while the sign-in form is
/// open), the CSRF token of its forms, and when it ends (Unix seconds).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Session {
    pub who: Option<Principal>,
    pub csrf: String,
    pub expires: i64,
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
            csrf: uuid::Uuid::new_v4().simple().to_string(),
            expires: Utc::now().timestamp() + lasts,
        }
    }
}

/// The key sessions are signed with. Derived from the operator token: sessions work across
/// restarts and processes, and changing the token ends every session it opened.
struct Key(Vec<u8>);

impl Key {
    fn of(state: &AppState) -> Option<Key> {
        let token = state.api_token.as_ref()?;
        let mut mac = Hmac::<Sha256>::new_from_slice(token.expose_secret().as_bytes())
            .expect("HMAC takes a key of any length");
        mac.update(b"conveyor page sessions v1");
        Some(Key(mac.finalize().into_bytes().to_vec()))
    }

    fn mac(&self) -> Hmac<Sha256> {
        Hmac::new_from_slice(&self.0).expect("HMAC takes a key of any length")
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
    let cookie = format!(
        "{COOKIE}={}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}",
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

    pub fn who(&self) -> &'static str {
        match self {
            Viewer::Bearer
            | Viewer::Session {
                who: Principal::Operator,
                ..
            } => "operator",
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
    let page = sign_in_page(&session.csrf, &next, None);
    Ok((
        StatusCode::OK,
        [(header::SET_COOKIE, set_cookie(&key, &session))],
        page,
    )
        .into_response())
}

fn sign_in_page(csrf: &str, next: &str, error: Option<&str>) -> maud::Markup {
    layout::page(
        "Sign in",
        None,
        html! {
            h1 { "Sign in" }
            @if let Some(error) = error {
                p.error role="alert" { (error) }
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

    fn key() -> Key {
        Key(b"a test key".to_vec())
    }

    #[test]
    fn a_session_opens_only_with_its_key_and_unchanged() {
        let session = Session::new(Some(Principal::Operator));
        let sealed = key().seal(&session);
        let opened = key().open(&sealed).expect("its own key opens it");
        assert_eq!(opened.csrf, session.csrf);
        assert_eq!(opened.who, Some(Principal::Operator));
        assert!(Key(b"another key".to_vec()).open(&sealed).is_none());
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
