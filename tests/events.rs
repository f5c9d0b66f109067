//! The event feed: a labelled issue's events named by the seed's types with their workflow
//! and correlation, paged, streamed as Server-Sent Events resumed by `Last-Event-ID`, and
//! carried over a WebSocket. The order across transactions is tested in `event_order.rs`.

mod support;

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use conveyor::engine::events;
use futures_util::{SinkExt, StreamExt};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use sqlx::PgPool;
use support::feed::{a_task, kinds_after, last_id};
use support::{API_TOKEN, Harness, OWNER, REPO};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tower::ServiceExt;

async fn feed(harness: &Harness, query: &str) -> Value {
    let (status, page) = harness
        .api("GET", &format!("/api/v2/events{query}"), Some(API_TOKEN))
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    page
}

fn of_task(page: &Value, task_id: i64) -> Vec<Value> {
    page["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|event| event["task_id"] == task_id)
        .cloned()
        .collect()
}

fn types(events: &[Value]) -> Vec<&str> {
    events
        .iter()
        .map(|event| event["type"].as_str().unwrap())
        .collect()
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn a_labelled_issue_leaves_the_seed_events_with_its_workflow_and_delivery(pool: PgPool) {
    let harness = Harness::start(pool.clone()).await;
    harness.add_repo_with_pipeline();
    let (task_id, _) = harness.label_and_finish("d-feed", 7, "Feed").await;
    let events = of_task(&feed(&harness, "?limit=500").await, task_id);
    assert_eq!(
        types(&events),
        [
            "task.created",
            "task.claimed",
            "run.created",
            "run.started",
            "task.step_started",
            "task.step_completed",
            "task.step_started",
            "task.step_completed",
            "run.completed",
            "task.completed",
        ],
        "{events:#?}"
    );
    let hash: String = sqlx::query_scalar("SELECT definition_hash FROM runs WHERE task_id = $1")
        .bind(task_id)
        .fetch_one(&pool)
        .await
        .unwrap();
    for event in &events {
        assert_eq!(event["correlation_id"], "d-feed", "{event}");
        assert_eq!(event["workflow_name"], "default", "{event}");
        assert_eq!(event["project"], format!("{OWNER}/{REPO}"), "{event}");
        if event["run_id"].is_i64() {
            assert_eq!(event["workflow_version"], hash, "{event}");
        }
    }
    assert_eq!(events[4]["payload"]["step"], "implement");
    assert_eq!(events[5]["payload"]["exit_code"], 0);

    let first = events[0]["id"].as_i64().unwrap();
    let page = feed(&harness, &format!("?after={first}&limit=2")).await;
    let ids: Vec<&Value> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["id"])
        .collect();
    assert_eq!(ids, [&events[1]["id"], &events[2]["id"]]);
    assert_eq!(page["next"], events[2]["id"]);
    let other = feed(&harness, "?project=someone/else").await;
    assert_eq!(other["events"], json!([]));
    let (status, _) = harness.api("GET", "/api/v2/events", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

/// Reads Server-Sent Events from `body` until `count` have come.
async fn read_sse(body: Body, count: usize) -> Vec<(i64, String, Value)> {
    let mut body = body;
    let mut text = String::new();
    let mut events = Vec::new();
    while events.len() < count {
        let frame = tokio::time::timeout(Duration::from_secs(10), body.frame())
            .await
            .expect("an event within 10 s")
            .expect("the stream goes on")
            .unwrap();
        let Ok(data) = frame.into_data() else {
            continue;
        };
        text.push_str(std::str::from_utf8(&data).unwrap());
        while let Some(end) = text.find("\n\n") {
            let block: String = text.drain(..end + 2).collect();
            let (mut id, mut kind, mut data) = (None, String::new(), Value::Null);
            for line in block.lines() {
                if let Some(value) = line.strip_prefix("id: ") {
                    id = value.parse().ok();
                } else if let Some(value) = line.strip_prefix("event: ") {
                    kind = value.to_owned();
                } else if let Some(value) = line.strip_prefix("data: ") {
                    data = serde_json::from_str(value).unwrap();
                }
            }
            if let Some(id) = id {
                events.push((id, kind, data));
            }
        }
    }
    events
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn the_stream_resumes_after_the_last_event_id_and_goes_on_live(pool: PgPool) {
    let harness = Harness::start(pool.clone()).await;
    let task = a_task(&pool).await;
    for mark in ["one", "two", "three"] {
        events::record(&pool, task, None, "note", json!({ "mark": mark }))
            .await
            .unwrap();
    }
    let all = support::wait_until("the three are readable", || async {
        Some(kinds_after(&pool, None).await).filter(|read| read.len() >= 4)
    })
    .await;
    let two = all.iter().find(|(_, mark)| mark == "two").unwrap().0;

    let request = Request::get("/api/v2/events/stream")
        .header("authorization", format!("Bearer {API_TOKEN}"))
        .header("last-event-id", two.to_string())
        .body(Body::empty())
        .unwrap();
    let response = harness.router.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-type"],
        "text/event-stream",
        "{:?}",
        response.headers()
    );
    let pool_for_later = pool.clone();
    let later = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        events::record(
            &pool_for_later,
            task,
            None,
            "note",
            json!({ "mark": "four" }),
        )
        .await
        .unwrap();
    });
    let read = read_sse(response.into_body(), 2).await;
    later.await.unwrap();
    let marks: Vec<&str> = read
        .iter()
        .map(|(_, _, data)| data["payload"]["mark"].as_str().unwrap())
        .collect();
    assert_eq!(marks, ["three", "four"]);
    assert!(read[0].0 > two);
    assert_eq!(read[0].1, "task.updated");
    assert_eq!(read[0].2["id"], read[0].0);

    let request = Request::get("/api/v2/events/stream")
        .header("authorization", format!("Bearer {API_TOKEN}"))
        .header("last-event-id", "not a number")
        .body(Body::empty())
        .unwrap();
    let (status, refusal) = support::send(&harness.router, request).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(refusal["code"], "invalid_request");
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(
    url: &str,
    token: Option<&str>,
) -> Result<Socket, tokio_tungstenite::tungstenite::Error> {
    let mut request = url.into_client_request().unwrap();
    if let Some(token) = token {
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    tokio_tungstenite::connect_async(request)
        .await
        .map(|(socket, _)| socket)
}

async fn next_envelope(socket: &mut Socket, within: Duration) -> Option<Value> {
    loop {
        let message = tokio::time::timeout(within, socket.next()).await.ok()??;
        if let Message::Text(text) = message.unwrap() {
            return Some(serde_json::from_str(&text).unwrap());
        }
    }
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn a_websocket_client_gets_the_envelope_of_its_projects_within_half_a_second(pool: PgPool) {
    let harness = Harness::start(pool.clone()).await;
    let task = a_task(&pool).await;
    let seen = last_id(&pool).await;
    let base = harness.listen().await.replace("http://", "ws://");

    let refused = connect(&format!("{base}/ws"), Some("wrong")).await;
    assert!(refused.is_err(), "a wrong token is refused");

    let url = format!("{base}/ws?project=acme/widgets&after={seen}");
    let mut socket = connect(&url, Some(API_TOKEN)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    events::record(&pool, task, None, "note", json!({ "mark": "live" }))
        .await
        .unwrap();
    let committed = Instant::now();
    let envelope = next_envelope(&mut socket, Duration::from_secs(5))
        .await
        .expect("the envelope");
    let latency = committed.elapsed();
    assert!(
        latency < Duration::from_millis(500),
        "came after {latency:?}"
    );
    assert_eq!(envelope["type"], "task.updated");
    assert_eq!(envelope["projectId"], "acme/widgets");
    assert_eq!(envelope["payload"]["task_id"], task);
    assert_eq!(envelope["payload"]["data"]["mark"], "live");
    assert!(envelope["ts"].is_string());
    let live = envelope["id"].as_i64().unwrap();

    // Following another project, nothing of this one comes; following it again, what was
    // missed meanwhile comes first.
    let subscribe = json!({ "type": "subscribe", "projects": ["someone/else"] });
    socket
        .send(Message::Text(subscribe.to_string().into()))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let big = "x".repeat(100_000);
    events::record(
        &pool,
        task,
        None,
        "note",
        json!({ "mark": "big", "text": big }),
    )
    .await
    .unwrap();
    assert_eq!(
        next_envelope(&mut socket, Duration::from_millis(700)).await,
        None
    );
    let subscribe = json!({ "type": "subscribe", "projects": ["ACME/widgets"] });
    socket
        .send(Message::Text(subscribe.to_string().into()))
        .await
        .unwrap();
    let envelope = next_envelope(&mut socket, Duration::from_secs(5))
        .await
        .expect("the missed event");
    assert!(envelope["id"].as_i64().unwrap() > live);
    assert_eq!(envelope["payload"]["data"]["truncated"], true, "{envelope}");
    assert!(envelope["payload"]["data"]["bytes"].as_u64().unwrap() > 100_000);

    socket
        .send(Message::Text("{\"type\": \"dance\"}".into()))
        .await
        .unwrap();
    let refusal = next_envelope(&mut socket, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(refusal["type"], "error");
    assert_eq!(refusal["payload"]["code"], "invalid_message");
}
