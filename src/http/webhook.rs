//! `POST /webhooks/github`: verify, store, answer. Nothing else happens in the request.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use secrecy::ExposeSecret;
use serde_json::json;

use super::{AppState, Refusal};
use crate::webhook::writer::Stored;
use crate::webhook::{inbox, signature};

/// A webhook whose signature matched the raw body it arrived with.
pub struct VerifiedWebhook {
    pub delivery_id: String,
    pub event: String,
    pub content_type: String,
    pub body: Bytes,
}

impl FromRequest<AppState> for VerifiedWebhook {
    type Rejection = Refusal;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Refusal> {
        let Some(secret) = state.webhook_secret.clone() else {
            tracing::warn!("webhook refused: GITHUB_WEBHOOK_SECRET is not set");
            return Err(Refusal(
                StatusCode::SERVICE_UNAVAILABLE,
                "webhooks are disabled: GITHUB_WEBHOOK_SECRET is not set".into(),
            ));
        };
        let headers = req.headers().clone();
        let body = Bytes::from_request(req, state)
            .await
            .map_err(|rejection| Refusal(rejection.status(), rejection.body_text()))?;
        signature::verify(
            secret.expose_secret().as_bytes(),
            &body,
            header(&headers, "x-hub-signature-256"),
        )
        .map_err(|err| {
            tracing::warn!(error = %err, "webhook refused");
            Refusal(StatusCode::UNAUTHORIZED, err.to_string())
        })?;
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
        })
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|value| value.to_str().ok())
}

pub async fn receive(State(state): State<AppState>, webhook: VerifiedWebhook) -> Response {
    let payload = match json_payload(&webhook.content_type, &webhook.body) {
        Ok(payload) => payload,
        Err(reason) => {
            // Kept so an operator can see what GitHub sent; nothing will interpret it.
            let outcome = format!("rejected: {reason}");
            let kept = inbox::insert_rejected(
                &state.pool,
                &webhook.delivery_id,
                &webhook.event,
                &webhook.body,
                &outcome,
            )
            .await;
            if let Err(err) = kept {
                tracing::error!(delivery = %webhook.delivery_id, error = %err, "storing rejected delivery failed");
            }
            return Refusal(StatusCode::BAD_REQUEST, reason).into_response();
        }
    };
    match state
        .inbox
        .store(webhook.delivery_id, webhook.event, payload)
        .await
    {
        Ok(Stored::New) => (StatusCode::ACCEPTED, Json(json!({ "stored": true }))).into_response(),
        Ok(Stored::Duplicate) => {
            (StatusCode::OK, Json(json!({ "duplicate": true }))).into_response()
        }
        Err(err) => Refusal(StatusCode::SERVICE_UNAVAILABLE, err.to_string()).into_response(),
    }
}

/// The JSON document GitHub sent: the body itself, or the `payload` field of a form.
fn json_payload(content_type: &str, body: &Bytes) -> Result<Bytes, String> {
    let payload = if content_type.starts_with("application/x-www-form-urlencoded") {
        let field = url::form_urlencoded::parse(body)
            .find(|(name, _)| name == "payload")
            .ok_or("form body has no `payload` field")?;
        Bytes::from(field.1.into_owned())
    } else {
        body.clone()
    };
    serde_json::from_slice::<serde::de::IgnoredAny>(&payload)
        .map_err(|err| format!("body is not valid JSON: {err}"))?;
    Ok(payload)
}
