//! `Idempotency-Key` on the API's POSTs (seed 004 §5.7): the first request with a key goes
//! ahead and what it made is remembered; a repeat of it is answered 409 with the `Location`
//! of what the first one made, and the key with another request is refused 422. A request
//! that failed leaves nothing, so the client may try again with the same key. The rule is
//! `engine::idempotency`'s; this is where requests meet it.

use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::AppState;
use super::api::authorize;
use super::board::ApiError;
use crate::engine::idempotency::{self, Claim};

pub const HEADER: &str = "idempotency-key";
const MAX_KEY_CHARS: usize = 255;
/// The bodies the API takes; axum's `Json` refuses larger ones by default too.
const MAX_BODY_BYTES: usize = 2 * 1024 * 1024;

/// The middleware: only POSTs to `/api/v2` that carry the header and the operator token
/// (anything else goes on to be refused, or served, as it would be without it).
pub async fn guard(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let applies = request.method() == Method::POST
        && request.uri().path().starts_with("/api/v2/")
        && request.headers().contains_key(HEADER)
        && authorize(&state, request.headers()).is_ok();
    if !applies {
        return next.run(request).await;
    }
    match keyed(&state, request, next).await {
        Ok(response) => response,
        Err(refusal) => refusal.into_response(),
    }
}

async fn keyed(state: &AppState, request: Request, next: Next) -> Result<Response, ApiError> {
    let key = request
        .headers()
        .get(HEADER)
        .and_then(|value| value.to_str().ok())
        .map(str::trim)
        .filter(|key| {
            !key.is_empty()
                && key.len() <= MAX_KEY_CHARS
                && key.bytes().all(|b| b.is_ascii_graphic())
        })
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_idempotency_key",
                format!("Idempotency-Key must be 1 to {MAX_KEY_CHARS} visible ASCII characters"),
            )
        })?
        .to_owned();
    let (parts, body) = request.into_parts();
    let body = to_bytes(body, MAX_BODY_BYTES).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("request bodies are limited to {MAX_BODY_BYTES} bytes"),
        )
    })?;
    let key_hash = idempotency::hash(&[key.as_bytes()]);
    let request_hash = idempotency::hash(&[
        parts.method.as_str().as_bytes(),
        parts.uri.path().as_bytes(),
        &body,
    ]);
    match idempotency::claim(&state.pool, &key_hash, &request_hash).await? {
        Claim::First => {}
        Claim::Reused => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                "this Idempotency-Key came with another request: use a new key for a new request",
            ));
        }
        Claim::InFlight => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "request_in_progress",
                "the first request with this Idempotency-Key has not finished yet",
            ));
        }
        Claim::Repeat { location } => return Ok(repeat(location)),
    }
    let response = next.run(Request::from_parts(parts, Body::from(body))).await;
    let location = response
        .headers()
        .get(header::LOCATION)
        .and_then(|value| value.to_str().ok());
    let succeeded = response
        .status()
        .is_success()
        .then_some((response.status().as_u16(), location));
    if let Err(err) = idempotency::settle(&state.pool, &key_hash, succeeded).await {
        // The request itself is done; only its key is not remembered, so a repeat would run.
        tracing::warn!(error = %err, "could not record the outcome of an idempotent request");
    }
    Ok(response)
}

/// The answer to a repeat of a request that succeeded.
fn repeat(location: Option<String>) -> Response {
    let body = json!({
        "code": "duplicate_request",
        "message": "a request with this Idempotency-Key was already made: see `location`",
        "location": location,
    });
    let mut response = (StatusCode::CONFLICT, axum::Json(body)).into_response();
    if let Some(value) = location.and_then(|location| HeaderValue::from_str(&location).ok()) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}
