//! `POST /webhooks/github`: verify, store, answer. Nothing else happens in the request, but
//! for a delivery whose payload alone decides it (most of what GitHub sends an App: actions
//! Conveyor does not act on), which is stored decided.

use std::time::Instant;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use secrecy::ExposeSecret;
use serde_json::json;

use super::body_budget::{BodyError, Buffered};
use super::{AppState, Refusal};
use crate::metrics;
use crate::webhook::interpret::Reading;
use crate::webhook::signature::{Signature, SignatureError};
use crate::webhook::writer::Stored;
use crate::webhook::{inbox, interpret};

/// A webhook whose signature matched the raw body it arrived with.
pub struct VerifiedWebhook {
    pub delivery_id: String,
    pub event: String,
    pub content_type: String,
    pub body: Buffered,
    /// The body's HMAC-SHA256, as verified.
    pub body_mac: [u8; 32],
}

/// Why a webhook was not taken: a refusal, or its body could not be received.
pub enum Rejected {
    Refused(Refusal),
    Body(BodyError),
}

impl From<Refusal> for Rejected {
    fn from(refusal: Refusal) -> Self {
        Rejected::Refused(refusal)
    }
}

impl IntoResponse for Rejected {
    fn into_response(self) -> Response {
        match self {
            Rejected::Refused(refusal) => refusal.into_response(),
            Rejected::Body(err) => err.into_response(),
        }
    }
}

impl FromRequest<AppState> for VerifiedWebhook {
    type Rejection = Rejected;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Rejected> {
        let Some(secret) = state.credentials.webhook_secret() else {
            tracing::warn!("webhook refused: no webhook secret is configured");
            return Err(Refusal(
                StatusCode::SERVICE_UNAVAILABLE,
                "webhooks are disabled: GITHUB_WEBHOOK_SECRET is not set and no App was created at /setup".into(),
            )
            .into());
        };
        let (parts, body) = req.into_parts();
        let headers = parts.headers;
        let refused = |err: SignatureError| {
            tracing::warn!(error = %err, "webhook refused");
            Refusal(StatusCode::UNAUTHORIZED, err.to_string())
        };
        // Checked before the body is read: a post that cannot be GitHub's costs no memory.
        let signature =
            Signature::parse(header(&headers, "x-hub-signature-256")).map_err(refused)?;
        let body = state.webhook_bodies.buffer(body).await.map_err(|err| {
            tracing::warn!(error = %err, "webhook body refused");
            Rejected::Body(err)
        })?;
        let body_mac = signature
            .verify(secret.expose_secret().as_bytes(), &body.bytes)
            .map_err(refused)?;
        let required = |name: &str| {
            header(&headers, name)
                .filter(|value| !value.is_empty())
                .map(str::to_owned)
                .ok_or_else(|| Refusal(StatusCode::BAD_REQUEST, format!("missing {name} header")))
        };
        Ok(VerifiedWebhook {
            delivery_id: required("x-github-delivery")?,
            event: required("x-github-event")?,
            content_type: header(&headers, "content-type")
                .unwrap_or("application/json")
                .to_owned(),
            body,
            body_mac,
        })
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|value| value.to_str().ok())
}

pub async fn receive(State(state): State<AppState>, webhook: VerifiedWebhook) -> Response {
    let started = Instant::now();
    let event = metrics::event_label(&webhook.event);
    let (outcome, response) = store(state, webhook).await;
    metrics::delivery(event, outcome, started.elapsed());
    response
}

/// Stores a verified delivery: how it went, for the metrics, and the answer to GitHub.
async fn store(state: AppState, webhook: VerifiedWebhook) -> (&'static str, Response) {
    let parsed = json_payload(&webhook.content_type, &webhook.body.bytes).and_then(|payload| {
        let decided = match interpret::read(&webhook.event, &payload) {
            Ok(Reading::Decided(decided)) => Some(decided),
            Ok(Reading::Event(_)) => None,
            Err(err) => return Err(format!("body is not valid JSON: {err}")),
        };
        Ok((payload, decided))
    });
    let (payload, decided) = match parsed {
        Ok(parsed) => parsed,
        Err(reason) => {
            // Kept so an operator can see what GitHub sent; nothing will interpret it.
            let outcome = format!("rejected: {reason}");
            let kept = inbox::insert_rejected(
                &state.pool,
                &webhook.delivery_id,
                &webhook.event,
                &webhook.body.bytes,
                &outcome,
            )
            .await;
            if let Err(err) = kept {
                tracing::error!(delivery_id = %webhook.delivery_id, error = %err, "storing rejected delivery failed");
            }
            return (
                "rejected",
                Refusal(StatusCode::BAD_REQUEST, reason).into_response(),
            );
        }
    };
    match state
        .inbox
        .store(
            webhook.delivery_id,
            webhook.event,
            payload,
            webhook.body_mac,
            decided,
        )
        .await
    {
        Ok(Stored::New) => (
            "stored",
            (StatusCode::ACCEPTED, Json(json!({ "stored": true }))).into_response(),
        ),
        Ok(Stored::Duplicate) => (
            "duplicate",
            (StatusCode::OK, Json(json!({ "duplicate": true }))).into_response(),
        ),
        Err(err) => (
            "failed",
            Refusal(StatusCode::SERVICE_UNAVAILABLE, err.to_string()).into_response(),
        ),
    }
}

/// The document GitHub sent: the body itself, or the `payload` field of a form. Parsing it
/// as its event tells whether it is JSON.
fn json_payload(content_type: &str, body: &Bytes) -> Result<Bytes, String> {
    if content_type.starts_with("application/x-www-form-urlencoded") {
        let field = url::form_urlencoded::parse(body)
            .find(|(name, _)| name == "payload")
            .ok_or("form body has no `payload` field")?;
        Ok(Bytes::from(field.1.into_owned()))
    } else {
        Ok(body.clone())
    }
}
