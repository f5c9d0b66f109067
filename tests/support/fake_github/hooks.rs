//! The App's webhook: its past deliveries and redelivery to the webhook target.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use axum::extract::Query;
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac as _};
use serde_json::{Value, json};
use sha2::Sha256;

use super::apps::{APP_ID, require_app_jwt};
use super::routes::parse_num;
use super::wire::{gh_error, invalid_request, json_response, not_found, ts};
use super::{FakeGitHub, Inner, Shared, lock};

/// Id of the App's webhook (`X-GitHub-Hook-ID`).
const APP_HOOK_ID: u64 = 471_203_958;
/// Delivery ids are allocated from here; real ones no longer fit in an `i32`.
pub(super) const FIRST_DELIVERY_ID: i64 = 12_000_000_000;
const DELIVERIES_PER_PAGE_DEFAULT: usize = 30;
const DELIVERIES_PER_PAGE_MAX: usize = 100;
/// GitHub gives up on a webhook delivery after 10 seconds.
const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);

/// `GET /app/hook/deliveries`.
#[derive(Clone, Debug)]
pub struct HookDelivery {
    pub id: i64,
    pub guid: String,
    pub redelivery: bool,
    pub status: String,
    pub status_code: u16,
    pub event: String,
    pub action: Option<String>,
}

#[derive(Clone)]
pub(super) struct WebhookTarget {
    url: String,
    secret: String,
}

#[derive(Clone)]
pub(super) struct DeliveryRec {
    id: i64,
    guid: String,
    delivered_at: DateTime<Utc>,
    redelivery: bool,
    duration: f64,
    status: String,
    status_code: u16,
    event: String,
    action: Option<String>,
    installation_id: Option<i64>,
    repository_id: Option<i64>,
    payload: Value,
}

impl Inner {
    pub(super) fn alloc_delivery_id(&mut self) -> i64 {
        let id = self.next_delivery_id;
        self.next_delivery_id += 1;
        id
    }
}

impl FakeGitHub {
    /// Where `POST /app/hook/deliveries/{id}/attempts` redelivers to, and the
    /// webhook secret used for `X-Hub-Signature-256`.
    pub fn set_webhook_target(&self, url: &str, secret: &str) {
        lock(&self.shared).webhook_target = Some(WebhookTarget {
            url: url.to_string(),
            secret: secret.to_string(),
        });
    }

    /// Records a past delivery attempt of the App's webhook (delivered now,
    /// not a redelivery); returns its numeric id. `installation_id` and
    /// `repository_id` are taken from `payload.installation.id` and
    /// `payload.repository.id`. `status` is `"OK"` for a 2xx `status_code`,
    /// `"Invalid HTTP Response: <code>"` otherwise, and
    /// `"failed to connect to host"` for `0`.
    pub fn add_hook_delivery(
        &self,
        guid: &str,
        event: &str,
        action: Option<&str>,
        status_code: u16,
        payload: Value,
    ) -> i64 {
        let mut inner = lock(&self.shared);
        let id = inner.alloc_delivery_id();
        inner.deliveries.push(DeliveryRec {
            id,
            guid: guid.to_string(),
            delivered_at: Utc::now(),
            redelivery: false,
            duration: 0.27,
            status: delivery_status(status_code),
            status_code,
            event: event.to_string(),
            action: action.map(str::to_string),
            installation_id: payload.pointer("/installation/id").and_then(Value::as_i64),
            repository_id: payload.pointer("/repository/id").and_then(Value::as_i64),
            payload,
        });
        id
    }

    /// Delivery ids passed to `POST /app/hook/deliveries/{id}/attempts` by
    /// authenticated requests (known or not), in order.
    pub fn redelivery_requests(&self) -> Vec<i64> {
        lock(&self.shared).redelivery_requests.clone()
    }

    /// Every delivery attempt, oldest first, including the fake's own
    /// redeliveries once they have completed.
    pub fn hook_deliveries(&self) -> Vec<HookDelivery> {
        lock(&self.shared)
            .deliveries
            .iter()
            .map(|d| HookDelivery {
                id: d.id,
                guid: d.guid.clone(),
                redelivery: d.redelivery,
                status: d.status.clone(),
                status_code: d.status_code,
                event: d.event.clone(),
                action: d.action.clone(),
            })
            .collect()
    }
}

// ---------------------------------------------------------------------------
// /app/hook/deliveries
// ---------------------------------------------------------------------------

/// `status` of a delivery attempt that got `status_code` (0: no response).
fn delivery_status(status_code: u16) -> String {
    match status_code {
        0 => "failed to connect to host".to_string(),
        200..=299 => "OK".to_string(),
        code => format!("Invalid HTTP Response: {code}"),
    }
}

fn delivery_json(d: &DeliveryRec) -> Value {
    json!({
        "id": d.id,
        "guid": d.guid,
        "delivered_at": ts(&d.delivered_at),
        "redelivery": d.redelivery,
        "duration": d.duration,
        "status": d.status,
        "status_code": d.status_code,
        "event": d.event,
        "action": d.action,
        "installation_id": d.installation_id,
        "repository_id": d.repository_id,
        "throttled_at": null,
    })
}

/// `GET /app/hook/deliveries?per_page=&cursor=&redelivery=`, newest first.
///
/// The cursor is `v1_<id>` of the last delivery of the previous page, so
/// deliveries made while paging do not shift later pages.
pub(super) fn list_deliveries(shared: &Shared, parts: &Parts, auth: Option<&str>) -> Response {
    if let Err(resp) = require_app_jwt(shared, auth) {
        return resp;
    }
    let query: HashMap<String, String> = Query::try_from_uri(&parts.uri)
        .map(|Query(q)| q)
        .unwrap_or_default();
    let per_page = query
        .get("per_page")
        .and_then(|p| p.parse::<usize>().ok())
        .filter(|&p| p > 0)
        .unwrap_or(DELIVERIES_PER_PAGE_DEFAULT)
        .min(DELIVERIES_PER_PAGE_MAX);
    let before = match query.get("cursor").filter(|c| !c.is_empty()) {
        None => None,
        Some(c) => match c.strip_prefix("v1_").and_then(|id| id.parse::<i64>().ok()) {
            Some(id) => Some(id),
            None => return gh_error(StatusCode::BAD_REQUEST, "Invalid cursor"),
        },
    };
    let redelivery = match query.get("redelivery").map(String::as_str) {
        None => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(other) => {
            return invalid_request(&format!(
                "For 'properties/redelivery', \"{other}\" is not a boolean."
            ));
        }
    };

    let inner = lock(shared);
    let mut matching: Vec<&DeliveryRec> = inner
        .deliveries
        .iter()
        .filter(|d| before.is_none_or(|b| d.id < b))
        .filter(|d| redelivery.is_none_or(|r| d.redelivery == r))
        .collect();
    matching.sort_by_key(|d| std::cmp::Reverse(d.id));
    let more = matching.len() > per_page;
    matching.truncate(per_page);
    let items: Vec<Value> = matching.iter().map(|d| delivery_json(d)).collect();
    let mut resp = json_response(StatusCode::OK, &Value::Array(items));
    if more && let Some(last) = matching.last() {
        let mut next = format!(
            "{}/app/hook/deliveries?per_page={per_page}&cursor=v1_{}",
            inner.base_url, last.id
        );
        if let Some(r) = redelivery {
            next.push_str(&format!("&redelivery={r}"));
        }
        if let Ok(v) = HeaderValue::from_str(&format!("<{next}>; rel=\"next\"")) {
            resp.headers_mut().insert(header::LINK, v);
        }
    }
    resp
}

/// `POST /app/hook/deliveries/{delivery_id}/attempts`.
pub(super) fn redeliver(shared: &Shared, auth: Option<&str>, id: &str) -> Response {
    if let Err(resp) = require_app_jwt(shared, auth) {
        return resp;
    }
    let Some(id) = parse_num(id).and_then(|n| i64::try_from(n).ok()) else {
        return not_found();
    };
    let (original, target) = {
        let mut inner = lock(shared);
        inner.redelivery_requests.push(id);
        let Some(original) = inner.deliveries.iter().find(|d| d.id == id).cloned() else {
            return not_found();
        };
        (original, inner.webhook_target.clone())
    };
    if let Some(target) = target {
        // GitHub accepts the request first and redelivers asynchronously.
        tokio::spawn(deliver(shared.clone(), target, original));
    }
    json_response(StatusCode::ACCEPTED, &json!({}))
}

fn sign_webhook(secret: &str, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC accepts keys of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// POSTs `original`'s payload to `target` like GitHub's Hookshot and records
/// the attempt as a redelivery.
async fn deliver(shared: Shared, target: WebhookTarget, original: DeliveryRec) {
    let body = serde_json::to_vec(&original.payload).expect("serialize webhook payload");
    let signature = sign_webhook(&target.secret, &body);
    let client = reqwest::Client::builder()
        .timeout(WEBHOOK_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("build webhook client");
    let delivered_at = Utc::now();
    let started = Instant::now();
    let result = client
        .post(&target.url)
        .header("X-GitHub-Event", &original.event)
        .header("X-GitHub-Delivery", &original.guid)
        .header("X-GitHub-Hook-ID", APP_HOOK_ID.to_string())
        .header("X-GitHub-Hook-Installation-Target-Type", "integration")
        .header("X-GitHub-Hook-Installation-Target-ID", APP_ID.to_string())
        .header("X-Hub-Signature-256", signature)
        .header("Content-Type", "application/json")
        .header("User-Agent", "GitHub-Hookshot/fake")
        .body(body)
        .send()
        .await;
    let (status_code, status) = match result {
        Ok(resp) => {
            let code = resp.status().as_u16();
            let _ = resp.bytes().await;
            (code, delivery_status(code))
        }
        Err(e) if e.is_timeout() => (0, "timed out".to_string()),
        Err(_) => (0, delivery_status(0)),
    };
    let duration = (started.elapsed().as_secs_f64() * 100.0).round() / 100.0;
    let mut inner = lock(&shared);
    let id = inner.alloc_delivery_id();
    inner.deliveries.push(DeliveryRec {
        id,
        delivered_at,
        redelivery: true,
        duration,
        status,
        status_code,
        ..original
    });
}
