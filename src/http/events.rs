//! The event feed over HTTP: `GET /api/v2/events` (pages), `GET /api/v2/events/stream`
//! (Server-Sent Events, resumed with `Last-Event-ID`) and `GET /ws` (a WebSocket carrying
//! `{id, type, ts, projectId, payload}`). All three read `engine::event_feed`, so a client
//! that comes back with the last id it saw misses nothing the retention window still holds.

use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::{Stream, StreamExt};
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::board::{ApiError, check};
use crate::engine::event_feed::{self, Cursor, FeedEvent};

const MAX_PAGE: i64 = 500;
/// A WebSocket client's own messages (subscriptions) are small.
const MAX_CLIENT_MESSAGE: usize = 4 * 1024;
/// An event's payload larger than this is sent as its size and where to read it whole.
pub const MAX_PAYLOAD_BYTES: usize = 64 * 1024;
const KEEP_ALIVE: Duration = Duration::from_secs(15);

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct FeedQuery {
    after: Option<i64>,
    /// `owner/repo`; several separated by commas.
    project: Option<String>,
    limit: Option<i64>,
}

impl FeedQuery {
    fn projects(&self) -> Option<Vec<String>> {
        self.project.as_deref().map(|list| {
            list.split(',')
                .map(str::trim)
                .filter(|name| !name.is_empty())
                .map(str::to_owned)
                .collect()
        })
    }

    /// Where to resume: `Last-Event-ID` (what an EventSource sends on reconnecting), else
    /// `after`.
    fn cursor(&self, headers: &HeaderMap) -> Result<Cursor, ApiError> {
        let last_seen = headers
            .get("last-event-id")
            .map(|value| {
                value
                    .to_str()
                    .ok()
                    .and_then(|text| text.trim().parse().ok())
                    .ok_or_else(|| ApiError::invalid("Last-Event-ID must be an event id"))
            })
            .transpose()?;
        Ok(Cursor {
            after: last_seen.or(self.after),
        })
    }
}

/// A page of the feed: the events, oldest first, and the cursor to go on from.
#[derive(Debug, serde::Serialize, schemars::JsonSchema)]
pub struct FeedPage {
    events: Vec<FeedEvent>,
    next: Option<i64>,
}

/// `GET /api/v2/events?after=ID`: the next events, and the cursor to go on.
pub async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<FeedQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<FeedPage>, ApiError> {
    check(&state, &headers)?;
    let Query(query) = query?;
    let limit = query.limit.unwrap_or(100).clamp(1, MAX_PAGE);
    let cursor = query.cursor(&headers)?;
    let projects = query.projects();
    let events = event_feed::page(&state.pool, cursor, projects.as_deref(), limit).await?;
    let next = events.last().map(|event| event.id).or(cursor.after);
    Ok(Json(FeedPage { events, next }))
}

fn follow(
    state: &AppState,
    cursor: Cursor,
    projects: Option<Vec<String>>,
) -> impl Stream<Item = FeedEvent> + use<> {
    event_feed::follow(
        state.pool.clone(),
        state.event_wakeups.clone(),
        cursor,
        projects,
    )
}

/// `GET /api/v2/events/stream`: every event as it becomes readable, as Server-Sent Events
/// named by type with the event id as the SSE id.
pub async fn stream(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<FeedQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    check(&state, &headers)?;
    let Query(query) = query?;
    let cursor = query.cursor(&headers)?;
    let events = follow(&state, cursor, query.projects()).map(|event| {
        let data = serde_json::to_string(&bounded(&event)).unwrap_or_default();
        Ok::<_, Infallible>(
            Event::default()
                .id(event.id.to_string())
                .event(&event.kind)
                .data(data),
        )
    });
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response())
}

/// The event as sent to a follower: its payload replaced by its size and the task to read
/// when it is larger than [`MAX_PAYLOAD_BYTES`].
fn bounded(event: &FeedEvent) -> FeedEvent {
    let size = serde_json::to_vec(&event.payload).map_or(0, |bytes| bytes.len());
    if size <= MAX_PAYLOAD_BYTES {
        return event.clone();
    }
    FeedEvent {
        payload: json!({
            "truncated": true,
            "bytes": size,
            "task": format!("/api/v2/tasks/{}", event.task_id),
        }),
        ..event.clone()
    }
}

/// The WebSocket envelope of seed 004: `projectId` is `owner/repo`; the id is the one to
/// resume after.
fn envelope(event: &FeedEvent) -> Value {
    let event = bounded(event);
    json!({
        "id": event.id,
        "type": event.kind,
        "ts": event.ts,
        "projectId": event.project,
        "payload": {
            "task_id": event.task_id,
            "run_id": event.run_id,
            "workflow_name": event.workflow_name,
            "workflow_version": event.workflow_version,
            "correlation_id": event.correlation_id,
            "data": event.payload,
        },
    })
}

/// A message a WebSocket client may send: which projects it follows from now on (none
/// given: all).
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ClientMessage {
    Subscribe { projects: Option<Vec<String>> },
}

/// `GET /ws?project=owner/repo&after=ID`: the feed over a WebSocket, behind the API token.
pub async fn websocket(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<FeedQuery>, axum::extract::rejection::QueryRejection>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    check(&state, &headers)?;
    let upgrade = upgrade.map_err(|err| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "websocket_required",
            format!("{}: connect with a WebSocket client", err.body_text()),
        )
    })?;
    let Query(query) = query?;
    let cursor = query.cursor(&headers)?;
    let projects = query.projects();
    Ok(upgrade
        .max_message_size(MAX_CLIENT_MESSAGE)
        .on_upgrade(move |socket| serve_socket(state, socket, cursor, projects))
        .into_response())
}

async fn serve_socket(
    state: AppState,
    mut socket: WebSocket,
    mut cursor: Cursor,
    projects: Option<Vec<String>>,
) {
    let mut events = Box::pin(follow(&state, cursor, projects));
    loop {
        tokio::select! {
            event = events.next() => {
                let Some(event) = event else { return };
                cursor.after = Some(event.id);
                let text = envelope(&event).to_string();
                if socket.send(Message::Text(text.into())).await.is_err() {
                    return;
                }
            }
            received = socket.recv() => match received {
                Some(Ok(Message::Text(text))) => match serde_json::from_str(&text) {
                    Ok(ClientMessage::Subscribe { projects }) => {
                        events = Box::pin(follow(&state, cursor, projects));
                    }
                    Err(err) => {
                        let refusal = json!({
                            "type": "error",
                            "payload": { "code": "invalid_message", "message": err.to_string() },
                        });
                        if socket.send(Message::Text(refusal.to_string().into())).await.is_err() {
                            return;
                        }
                    }
                },
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
        }
    }
}
