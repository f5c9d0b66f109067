//! What tests make go wrong: canned answers, requests kept waiting, outages.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};

use super::wire::json_response;
use super::{DOCS_URL, FakeGitHub, Inner, Shared, lock};

/// A canned response for [`FakeGitHub::inject`].
///
/// The body is sent as JSON with `content-type: application/json;
/// charset=utf-8`, except for `body: Value::Null` and statuses that cannot
/// carry a body (1xx, 204, 205, 304), which are sent with an empty body.
#[derive(Clone, Debug)]
pub struct Injected {
    pub status: u16,
    /// Extra response headers; they replace the fake's usual headers of the
    /// same name (e.g. `x-ratelimit-remaining`).
    pub headers: Vec<(String, String)>,
    pub body: Value,
}

impl Injected {
    /// A GitHub-style error response: `{"message": <reason phrase>,
    /// "documentation_url": "https://docs.github.com/rest"}`.
    ///
    /// Panics if `status` is not a valid HTTP status code.
    pub fn status(status: u16) -> Self {
        let code = StatusCode::from_u16(status)
            .unwrap_or_else(|_| panic!("Injected::status: invalid HTTP status {status}"));
        Injected {
            status,
            headers: Vec::new(),
            body: json!({
                "message": code.canonical_reason().unwrap_or("Error"),
                "documentation_url": DOCS_URL,
            }),
        }
    }

    /// Adds a response header (e.g. `retry-after`).
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// Replaces `message` in the body.
    pub fn with_message(mut self, message: &str) -> Self {
        match &mut self.body {
            Value::Object(map) => {
                map.insert("message".to_string(), Value::String(message.to_string()));
            }
            other => *other = json!({ "message": message }),
        }
        self
    }

    /// Checks everything that could make building the response fail, so that
    /// mistakes panic in the test rather than inside the server.
    pub(super) fn validate(&self) {
        assert!(
            StatusCode::from_u16(self.status).is_ok(),
            "Injected: invalid HTTP status {}",
            self.status
        );
        for (name, value) in &self.headers {
            assert!(
                HeaderName::from_bytes(name.as_bytes()).is_ok(),
                "Injected: invalid header name {name:?}"
            );
            assert!(
                HeaderValue::from_str(value).is_ok(),
                "Injected: invalid value for header {name}: {value:?}"
            );
        }
    }

    pub(super) fn response(&self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let bodyless = status.is_informational()
            || matches!(status.as_u16(), 204 | 205 | 304)
            || self.body.is_null();
        if bodyless {
            let mut resp = Response::new(Body::empty());
            *resp.status_mut() = status;
            resp
        } else {
            json_response(status, &self.body)
        }
    }

    /// Puts the injected headers on `resp`, replacing same-named ones.
    pub(super) fn apply_headers(&self, resp: &mut Response) {
        let h = resp.headers_mut();
        let parsed: Vec<(HeaderName, HeaderValue)> = self
            .headers
            .iter()
            .filter_map(|(n, v)| {
                Some((
                    HeaderName::from_bytes(n.as_bytes()).ok()?,
                    HeaderValue::from_str(v).ok()?,
                ))
            })
            .collect();
        for (name, _) in &parsed {
            h.remove(name);
        }
        for (name, value) in parsed {
            h.append(name, value);
        }
    }
}

pub(super) struct InjectionRule {
    method: String,
    /// Path segments; `*` matches any one non-empty segment.
    pattern: Vec<String>,
    responses: VecDeque<Injected>,
}

impl InjectionRule {
    fn matches(&self, method: &str, path: &str) -> bool {
        route_matches(&self.method, &self.pattern, method, path)
    }
}

/// Whether `method path` matches a rule's method and path segments (`*`: any one
/// non-empty segment).
pub(super) fn route_matches(
    rule_method: &str,
    pattern: &[String],
    method: &str,
    path: &str,
) -> bool {
    if !rule_method.eq_ignore_ascii_case(method) {
        return false;
    }
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    segs.len() == pattern.len()
        && pattern
            .iter()
            .zip(&segs)
            .all(|(p, s)| if p == "*" { !s.is_empty() } else { p == s })
}

/// Parses a rule's path (query ignored) into segments.
pub(super) fn route_pattern(path: &str) -> Vec<String> {
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    path.trim_start_matches('/')
        .split('/')
        .map(str::to_string)
        .collect()
}

/// One request to keep waiting, see [`FakeGitHub::hold`].
pub(super) struct HoldRule {
    method: String,
    pattern: Vec<String>,
    arrived: Arc<tokio::sync::Notify>,
    release: tokio::sync::oneshot::Receiver<()>,
}

/// A request the fake keeps waiting before handling it, so that a test can make things
/// happen while a call to GitHub is in flight.
pub struct Hold {
    arrived: Arc<tokio::sync::Notify>,
    release: tokio::sync::oneshot::Sender<()>,
}

impl Hold {
    /// Waits until the request has arrived and is being held.
    pub async fn arrived(&self) {
        self.arrived.notified().await;
    }

    /// Lets the request through: it is handled now (dropping the hold does the same).
    pub fn release(self) {
        let _ = self.release.send(());
    }
}

impl Inner {
    /// Takes the hold on `method path`, if any: how to say it arrived, and when to go on.
    pub(super) fn take_hold(
        &mut self,
        method: &str,
        path: &str,
    ) -> Option<(Arc<tokio::sync::Notify>, tokio::sync::oneshot::Receiver<()>)> {
        let pos = self
            .holds
            .iter()
            .position(|h| route_matches(&h.method, &h.pattern, method, path))?;
        let hold = self.holds.remove(pos);
        Some((hold.arrived, hold.release))
    }

    /// Pops the next injected response for `method path`, if any.
    pub(super) fn take_injection(&mut self, method: &str, path: &str) -> Option<Injected> {
        let pos = self
            .injections
            .iter()
            .position(|r| r.matches(method, path))?;
        let injected = self.injections[pos].responses.pop_front();
        if self.injections[pos].responses.is_empty() {
            self.injections.remove(pos);
        }
        injected
    }
}

impl FakeGitHub {
    /// The next `responses.len()` requests whose method equals `method`
    /// (case-insensitively) and whose path (without query) matches `path` are
    /// answered with these responses, in order, instead of being handled
    /// (state is not changed). `path` may contain `*` segments matching one
    /// path segment, e.g. `"/repos/acme/widgets/issues/*/comments"`.
    ///
    /// Applies to REST routes (including `/app/...`), before authentication;
    /// git smart-HTTP requests are never intercepted. Injected responses get
    /// the usual headers (content type, request id, rate limit), overridden
    /// by the injected headers of the same name, and are recorded in
    /// [`FakeGitHub::requests`]. When several injections match a request, the
    /// one registered first is used until it is exhausted.
    ///
    /// Panics if a response has an invalid status or header.
    pub fn inject(&self, method: &str, path: &str, responses: Vec<Injected>) {
        for r in &responses {
            r.validate();
        }
        if responses.is_empty() {
            return;
        }
        lock(&self.shared).injections.push(InjectionRule {
            method: method.to_string(),
            pattern: route_pattern(path),
            responses: responses.into(),
        });
    }

    /// The next REST request matching `method path` (as for [`FakeGitHub::inject`]) waits,
    /// before anything is done with it, until the returned [`Hold`] is released or dropped:
    /// a call to GitHub in flight for as long as the test wants.
    pub fn hold(&self, method: &str, path: &str) -> Hold {
        let arrived = Arc::new(tokio::sync::Notify::new());
        let (release, released) = tokio::sync::oneshot::channel();
        lock(&self.shared).holds.push(HoldRule {
            method: method.to_string(),
            pattern: route_pattern(path),
            arrived: arrived.clone(),
            release: released,
        });
        Hold { arrived, release }
    }
}

/// One outage: every REST call answers `status` until `until` (or until lifted).
pub(super) struct OutageRule {
    id: u64,
    status: u16,
    until: Option<Instant>,
}

/// An outage that lasts until [`Outage::lift`] is called or the value is dropped.
#[must_use = "dropping an Outage ends it"]
pub struct Outage {
    shared: Shared,
    id: u64,
}

impl Outage {
    /// Ends the outage: calls are handled again.
    pub fn lift(self) {}
}

impl Drop for Outage {
    fn drop(&mut self) {
        lock(&self.shared).outages.retain(|o| o.id != self.id);
    }
}

impl Inner {
    /// The answer GitHub gives every REST call right now, while an outage lasts.
    pub(super) fn outage_answer(&mut self) -> Option<Injected> {
        let now = Instant::now();
        self.outages
            .retain(|o| o.until.is_none_or(|until| now < until));
        self.outages.last().map(|o| Injected::status(o.status))
    }
}

impl FakeGitHub {
    /// For `duration` from now, every REST call (`/app/...` included, git over HTTP not)
    /// answers `status` with GitHub's JSON error body and changes nothing; the calls are
    /// still recorded in [`FakeGitHub::requests`]. Takes precedence over injections.
    ///
    /// Panics if `status` is not a valid HTTP status code.
    pub fn outage(&self, status: u16, duration: Duration) {
        self.start_outage(status, Some(Instant::now() + duration));
    }

    /// As [`FakeGitHub::outage`], until the returned [`Outage`] is lifted or dropped.
    pub fn outage_until_lifted(&self, status: u16) -> Outage {
        let id = self.start_outage(status, None);
        Outage {
            shared: self.shared.clone(),
            id,
        }
    }

    fn start_outage(&self, status: u16, until: Option<Instant>) -> u64 {
        Injected::status(status).validate();
        let mut inner = lock(&self.shared);
        let id = inner.alloc_id();
        inner.outages.push(OutageRule { id, status, until });
        id
    }
}
