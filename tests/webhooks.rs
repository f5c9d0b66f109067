//! Webhook intake through the real router: signatures, storage, deduplication, outcomes.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{Request, StatusCode, header};
use conveyor::github::{AppCredentials, GitHubApp};
use conveyor::webhook::{redelivery, signature};
use serde_json::json;
use support::{Harness, WEBHOOK_SECRET, fixture, labeled_issue, send, wait_until};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedReadHalf;
use tower::ServiceExt;

async fn delivery_count(harness: &Harness) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM deliveries")
        .fetch_one(&harness.pool)
        .await
        .unwrap()
}

async fn request_count(harness: &Harness) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM requests")
        .fetch_one(&harness.pool)
        .await
        .unwrap()
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn bad_or_missing_signatures_are_refused_and_nothing_is_stored(pool: sqlx::PgPool) {
    let harness = Harness::start(pool).await;
    let body = labeled_issue(1, "x", "conveyor");
    let wrong = conveyor::webhook::signature::sign(b"not the secret", &body);
    for signature in [
        wrong.as_str(),
        "sha256=nothex",
        "sha1=0a4d55a8d778e5022fab701977c5d840bbc486d0",
        "",
    ] {
        let (status, body) = harness
            .post("issues", "d-bad", &body, Some(signature))
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{signature}: {body}");
    }
    let request = Request::post("/webhooks/github")
        .header("x-github-event", "issues")
        .header("x-github-delivery", "d-unsigned")
        .body(Body::from(body.clone()))
        .unwrap();
    let (status, reply) = send(&harness.router, request).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        reply,
        json!({ "code": "unauthorized", "message": "missing X-Hub-Signature-256 header" })
    );
    assert_eq!(delivery_count(&harness).await, 0);
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn a_redelivered_webhook_creates_one_task(pool: sqlx::PgPool) {
    let harness = Harness::start(pool).await;
    harness.add_repo_with_pipeline();
    let body = labeled_issue(2, "Once only", "conveyor");
    let (first, _) = harness.post_signed("issues", "d-same", &body).await;
    let (second, reply) = harness.post_signed("issues", "d-same", &body).await;
    assert_eq!(first, StatusCode::ACCEPTED);
    assert_eq!(
        (second, reply),
        (StatusCode::OK, json!({ "duplicate": true }))
    );
    assert_eq!(harness.request_outcome("d-same").await, "task_created");
    assert_eq!(delivery_count(&harness).await, 1);
    assert_eq!(harness.task_ids().await.len(), 1);
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn labelling_again_while_a_task_is_live_does_not_queue_a_twin(pool: sqlx::PgPool) {
    // Without worker sessions the first task is certainly still queued.
    let harness = Harness::start_idle(pool).await;
    harness.add_repo_with_pipeline();
    harness
        .post_signed("issues", "d-a", &labeled_issue(3, "Twice", "conveyor"))
        .await;
    assert_eq!(harness.request_outcome("d-a").await, "task_created");
    // Labelled again: GitHub's second event differs from the first, in its timestamps at
    // least (the same bytes again would be a duplicate).
    let mut again: serde_json::Value =
        serde_json::from_slice(&labeled_issue(3, "Twice", "conveyor")).unwrap();
    again["issue"]["updated_at"] = "2019-05-15T15:21:00Z".into();
    harness
        .post_signed("issues", "d-b", &serde_json::to_vec(&again).unwrap())
        .await;
    assert_eq!(
        harness.request_outcome("d-b").await,
        "ignored: the issue already has a live task"
    );
    assert_eq!(harness.task_ids().await.len(), 1);
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn deliveries_that_are_not_tasks_get_a_recorded_reason(pool: sqlx::PgPool) {
    let harness = Harness::start(pool).await;
    harness.add_repo_with_pipeline();
    let (status, _) = harness
        .post_signed("issues", "d-label", &labeled_issue(4, "x", "bug"))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(
        harness.request_outcome("d-label").await,
        "ignored: label is not the trigger"
    );

    // GitHub's example carries no installation: not for this app.
    let raw = serde_json::to_vec(&fixture("issues/labeled.payload.json")).unwrap();
    harness.post_signed("issues", "d-noinst", &raw).await;
    assert_eq!(
        harness.outcome("d-noinst").await,
        "ignored: no installation"
    );

    let ping = serde_json::to_vec(&fixture("ping/payload.json")).unwrap();
    harness.post_signed("ping", "d-ping", &ping).await;
    assert_eq!(harness.outcome("d-ping").await, "ignored: no installation");

    let mut opened = fixture("issues/opened.payload.json");
    opened["installation"] = json!({ "id": support::INSTALLATION_ID });
    harness
        .post_signed("issues", "d-opened", &serde_json::to_vec(&opened).unwrap())
        .await;
    assert_eq!(
        harness.outcome("d-opened").await,
        "ignored: event not handled"
    );

    let (status, reply) = harness
        .post_signed("issues", "d-garbage", b"{not json")
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        reply["message"]
            .as_str()
            .unwrap()
            .starts_with("body is not valid JSON"),
        "{reply}"
    );
    assert!(
        harness
            .outcome("d-garbage")
            .await
            .starts_with("rejected: body is not valid JSON")
    );

    let stored: (Option<String>, Option<i64>, Option<String>) = sqlx::query_as(
        "SELECT action, installation_id, repository FROM deliveries WHERE delivery_id = 'd-label'",
    )
    .fetch_one(&harness.pool)
    .await
    .unwrap();
    assert_eq!(
        stored,
        (
            Some("labeled".into()),
            Some(support::INSTALLATION_ID),
            Some("acme/widgets".into())
        )
    );
    assert!(harness.task_ids().await.is_empty());
}

/// The stored row of `delivery`: its outcome, what was learnt of it, and whether the
/// statement that stored it also decided it (one statement, one `now()`).
async fn stored_row(
    harness: &Harness,
    delivery: &str,
) -> (Option<String>, Option<String>, Option<String>, bool) {
    sqlx::query_as(
        "SELECT outcome, action, repository, processed_at IS NOT DISTINCT FROM received_at
         FROM deliveries WHERE delivery_id = $1",
    )
    .bind(delivery)
    .fetch_one(&harness.pool)
    .await
    .unwrap()
}

/// What the payload alone decides is stored decided, with what the job would have learnt of
/// it; what needs the database is left to the job, and a replay decides it the same way.
#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn a_delivery_its_payload_decides_is_stored_decided(pool: sqlx::PgPool) {
    let harness = Harness::start(pool).await;
    harness.add_repo_with_pipeline();
    let mut opened = fixture("issues/opened.payload.json");
    opened["installation"] = json!({ "id": support::INSTALLATION_ID });
    let (status, _) = harness
        .post_signed("issues", "d-opened", &serde_json::to_vec(&opened).unwrap())
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(
        stored_row(&harness, "d-opened").await,
        (
            Some("ignored: event not handled".into()),
            Some("opened".into()),
            Some("Codertocat/Hello-World".into()),
            true
        )
    );
    let (status, _) = harness.post_signed("issues", "d-array", b"[1, 2]").await;
    assert_eq!(status, StatusCode::ACCEPTED, "JSON, though not an event");
    let (outcome, _, _, decided_on_receipt) = stored_row(&harness, "d-array").await;
    assert!(
        outcome
            .as_deref()
            .unwrap()
            .starts_with("ignored: malformed payload"),
        "{outcome:?}"
    );
    assert!(decided_on_receipt);

    harness
        .post_signed("issues", "d-label", &labeled_issue(4, "x", "bug"))
        .await;
    assert_eq!(
        harness.outcome("d-label").await,
        "request_queued",
        "the job looked the installation up"
    );
    assert!(!stored_row(&harness, "d-label").await.3);

    let (status, _) = harness
        .api(
            "POST",
            "/api/v2/deliveries/d-opened/replay",
            Some(support::API_TOKEN),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let replayed = wait_until("the replay decided", || async {
        let row = stored_row(&harness, "d-opened").await;
        row.0.is_some().then_some(row)
    })
    .await;
    assert_eq!(
        replayed,
        (
            Some("ignored: event not handled".into()),
            Some("opened".into()),
            Some("Codertocat/Hello-World".into()),
            false
        )
    );
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn missing_event_or_delivery_headers_are_bad_requests(pool: sqlx::PgPool) {
    let harness = Harness::start(pool).await;
    let body = b"{}".to_vec();
    let signature = conveyor::webhook::signature::sign(support::WEBHOOK_SECRET.as_bytes(), &body);
    let request = Request::post("/webhooks/github")
        .header("x-github-event", "issues")
        .header("x-hub-signature-256", &signature)
        .body(Body::from(body.clone()))
        .unwrap();
    let (status, reply) = send(&harness.router, request).await;
    assert_eq!(
        (status, reply),
        (
            StatusCode::BAD_REQUEST,
            json!({ "code": "bad_request", "message": "missing x-github-delivery header" })
        )
    );
    assert_eq!(delivery_count(&harness).await, 0);
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn without_a_webhook_secret_every_webhook_is_refused(pool: sqlx::PgPool) {
    let harness = Harness::start_with_secret(pool, None).await;
    let reply = harness
        .post_signed("issues", "d-x", &labeled_issue(1, "x", "conveyor"))
        .await;
    assert_refused_for_want_of_a_secret(&harness, reply).await;
}

/// Webhooks are off without a secret: 503 naming the setting, and nothing stored.
async fn assert_refused_for_want_of_a_secret(
    harness: &Harness,
    (status, reply): (StatusCode, serde_json::Value),
) {
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{reply}");
    assert!(
        reply["message"]
            .as_str()
            .unwrap()
            .contains("GITHUB_WEBHOOK_SECRET")
    );
    assert_eq!(delivery_count(harness).await, 0);
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn health_and_readiness(pool: sqlx::PgPool) {
    let harness = Harness::start(pool.clone()).await;
    let get = |path: &str| Request::get(path).body(Body::empty()).unwrap();
    assert_eq!(
        send(&harness.router, get("/healthz")).await.0,
        StatusCode::OK
    );
    assert_eq!(
        send(&harness.router, get("/readyz")).await.0,
        StatusCode::OK
    );
    pool.close().await;
    assert_eq!(
        send(&harness.router, get("/readyz")).await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        send(&harness.router, get("/healthz")).await.0,
        StatusCode::OK
    );
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn an_empty_webhook_secret_is_no_secret(pool: sqlx::PgPool) {
    let harness = Harness::start_with_secret(pool, Some("")).await;
    let body = labeled_issue(1, "x", "conveyor");
    let signed_with_nothing = signature::sign(b"", &body);
    let reply = harness
        .post("issues", "d-empty", &body, Some(&signed_with_nothing))
        .await;
    assert_refused_for_want_of_a_secret(&harness, reply).await;
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn the_same_payload_under_another_delivery_id_is_a_duplicate(pool: sqlx::PgPool) {
    let harness = Harness::start_without_app(pool).await;
    let body = labeled_issue(5, "Same bytes", "conveyor");
    let (first, _) = harness.post_signed("issues", "d-original", &body).await;
    assert_eq!(first, StatusCode::ACCEPTED);
    let (second, reply) = harness.post_signed("issues", "d-replayed", &body).await;
    assert_eq!(
        (second, reply),
        (StatusCode::OK, json!({ "duplicate": true }))
    );
    assert_eq!(harness.outcome("d-original").await, "request_queued");
    assert_eq!(delivery_count(&harness).await, 1);
    assert_eq!(request_count(&harness).await, 1);

    // Arriving together, so they meet in one insert: ten ids, each sent twice, same bytes.
    let body = labeled_issue(6, "Same bytes at once", "conveyor");
    let posts = (0..20).map(|n| {
        let (harness, body) = (&harness, &body);
        async move {
            let delivery = format!("d-burst-{}", n % 10);
            harness.post_signed("issues", &delivery, body).await
        }
    });
    let replies = futures_util::future::join_all(posts).await;
    let stored = replies
        .iter()
        .filter(|(status, _)| *status == StatusCode::ACCEPTED)
        .count();
    let duplicates = replies
        .iter()
        .filter(|reply| **reply == (StatusCode::OK, json!({ "duplicate": true })))
        .count();
    assert_eq!((stored, duplicates), (1, 19), "{replies:?}");
    assert_eq!(delivery_count(&harness).await, 2);
    let burst: String =
        sqlx::query_scalar("SELECT delivery_id FROM deliveries WHERE delivery_id LIKE 'd-burst-%'")
            .fetch_one(&harness.pool)
            .await
            .unwrap();
    assert_eq!(harness.outcome(&burst).await, "request_queued");
    assert_eq!(request_count(&harness).await, 2);
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn a_delivery_that_keeps_failing_is_asked_for_three_times_in_all(pool: sqlx::PgPool) {
    // No webhook target: GitHub accepts each request and the delivery keeps failing.
    let harness = Harness::start(pool).await;
    let payload = serde_json::from_slice(&labeled_issue(1, "Lost", "bug")).unwrap();
    let id =
        harness
            .github
            .add_hook_delivery("doomed-guid", "issues", Some("labeled"), 502, payload);
    // Two processes sweeping in turn, each with its own client.
    let processes = [github_app(&harness), github_app(&harness)];
    let mut asked = Vec::new();
    for sweep in 0..5 {
        let report = redelivery::sweep(&harness.pool, &processes[sweep % 2])
            .await
            .unwrap();
        asked.push(report.redelivered);
    }
    assert_eq!(
        asked,
        [
            vec!["doomed-guid"],
            vec!["doomed-guid"],
            vec!["doomed-guid"],
            vec![],
            vec![]
        ]
    );
    assert_eq!(harness.github.redelivery_requests(), [id, id, id]);
}

fn github_app(harness: &Harness) -> GitHubApp {
    let config = support::config(&harness.github, harness.data_dir.path(), None);
    let credentials = AppCredentials::from_config(&config.github)
        .unwrap()
        .unwrap();
    GitHubApp::new(&harness.github.url, credentials).unwrap()
}

/// The head of a webhook post declaring `length` body bytes, with `signature` if given.
fn request_head(delivery: &str, length: usize, signature: Option<&str>) -> String {
    let signature = signature
        .map(|s| format!("X-Hub-Signature-256: {s}\r\n"))
        .unwrap_or_default();
    format!(
        "POST /webhooks/github HTTP/1.1\r\nHost: conveyor\r\nConnection: close\r\n\
         Content-Type: application/json\r\nX-GitHub-Event: issues\r\n\
         X-GitHub-Delivery: {delivery}\r\n{signature}Content-Length: {length}\r\n\r\n"
    )
}

/// The status code of the response on `reader`; 0 if the connection ends without one.
async fn response_status(reader: &mut OwnedReadHalf) -> u16 {
    let mut received = Vec::new();
    let mut chunk = [0; 1024];
    while !received.windows(2).any(|w| w == b"\r\n") {
        match reader.read(&mut chunk).await {
            Ok(0) | Err(_) => return 0,
            Ok(n) => received.extend_from_slice(&chunk[..n]),
        }
    }
    let line = String::from_utf8_lossy(&received);
    line.split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0)
}

/// Posts `body` over a real connection and returns the response's status, read while the
/// body is still being sent: a server that refuses early answers before taking it all.
async fn post_over_socket(address: &str, head: String, body: Bytes) -> u16 {
    let (mut reader, mut writer) = TcpStream::connect(address).await.unwrap().into_split();
    let sending = tokio::spawn(async move {
        // The server may answer and close before the body is through.
        let _ = writer.write_all(head.as_bytes()).await;
        let _ = writer.write_all(&body).await;
        // Kept open until the response is read: closing it could end the exchange early.
        writer
    });
    let status = response_status(&mut reader).await;
    sending.abort();
    status
}

/// This process's resident memory, in kB.
fn resident_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status")
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn a_flood_of_large_unsigned_posts_is_refused_before_the_bodies_are_read(pool: sqlx::PgPool) {
    const POSTS: usize = 40;
    const BODY_BYTES: usize = 25 * 1024 * 1024;
    let harness = Harness::start_without_app(pool).await;
    let url = harness.listen().await;
    let address = url.trim_start_matches("http://").to_owned();
    // One body for every post, written out so its pages are resident before the baseline.
    let body = Bytes::from(vec![b' '; BODY_BYTES]);
    let before = resident_kb();
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = std::thread::spawn({
        let sampling = sampling.clone();
        move || {
            let mut peak = 0;
            while sampling.load(Ordering::Relaxed) {
                peak = peak.max(resident_kb());
                std::thread::sleep(Duration::from_millis(1));
            }
            peak.max(resident_kb())
        }
    });
    let posts = (0..POSTS).map(|n| {
        let head = request_head(&format!("d-flood-{n}"), BODY_BYTES, None);
        post_over_socket(&address, head, body.clone())
    });
    let statuses = futures_util::future::join_all(posts).await;
    sampling.store(false, Ordering::Relaxed);
    let peak = sampler.join().unwrap();
    assert_eq!(statuses, [401; POSTS]);
    let grown_mb = peak.saturating_sub(before) / 1024;
    assert!(
        grown_mb < 48,
        "{POSTS} refused posts of 25 MB grew resident memory by {grown_mb} MB"
    );
    assert_eq!(delivery_count(&harness).await, 0);
}

/// A labelled issue padded with spaces to `length` bytes.
fn padded_issue(number: i64, length: usize) -> Vec<u8> {
    let mut body = labeled_issue(number, "Padded", "conveyor");
    body.resize(length, b' ');
    body
}

fn signed_request(delivery: &str, body: Body, signature: &str) -> Request<Body> {
    Request::post("/webhooks/github")
        .header("content-type", "application/json")
        .header("x-github-event", "issues")
        .header("x-github-delivery", delivery)
        .header("x-hub-signature-256", signature)
        .body(body)
        .unwrap()
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn webhook_bodies_share_a_budget_and_a_deadline(pool: sqlx::PgPool) {
    let harness = Harness::start_configured(pool, |config| {
        config.github.app_id = None;
        config.webhook_buffer_mb = 1;
        config.webhook_body_timeout_secs = 5;
    })
    .await;
    let url = harness.listen().await;
    let address = url.trim_start_matches("http://");
    let well_formed = signature::sign(b"not the secret", b"");

    // A slow sender declares 900 kB, sends a little and stalls, holding most of the budget.
    let (mut slow_reader, mut slow_writer) =
        TcpStream::connect(address).await.unwrap().into_split();
    let head = request_head("d-slow", 900_000, Some(&well_formed));
    slow_writer.write_all(head.as_bytes()).await.unwrap();
    slow_writer.write_all(&[b' '; 1000]).await.unwrap();

    let big = padded_issue(7, 200_000);
    let big_signature = signature::sign(WEBHOOK_SECRET.as_bytes(), &big);
    // Until the server holds the slow body's share, this one fits and is refused for its
    // signature; after, it does not fit.
    let refused = support::wait_until("the slow body holds the budget", || async {
        let request = signed_request("d-probe", Body::from(big.clone()), &well_formed);
        let response = harness.router.clone().oneshot(request).await.unwrap();
        (response.status() == StatusCode::SERVICE_UNAVAILABLE).then_some(response)
    })
    .await;
    assert!(refused.headers().contains_key(header::RETRY_AFTER));
    let over_budget = signed_request("d-big", Body::from(big.clone()), &big_signature);
    assert_eq!(
        send(&harness.router, over_budget).await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    // Without a Content-Length the budget is taken as the body streams in.
    let chunks = (0..3).map(|_| Ok::<_, std::io::Error>(Bytes::from(vec![b' '; 100_000])));
    let streamed = Body::from_stream(futures_util::stream::iter(chunks));
    let (status, reply) = send(
        &harness.router,
        signed_request("d-streamed", streamed, &well_formed),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{reply}");

    // A delivery of the usual size still fits.
    let (status, _) = harness
        .post_signed("issues", "d-normal", &labeled_issue(8, "x", "bug"))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);

    // The slow sender runs out of time, and its share comes back.
    assert_eq!(response_status(&mut slow_reader).await, 408);
    drop(slow_writer);
    let (status, reply) = harness.post_signed("issues", "d-big", &big).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{reply}");
    assert_eq!(delivery_count(&harness).await, 2);
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn a_sweep_holds_no_transaction_while_it_calls_github(pool: sqlx::PgPool) {
    let harness = Harness::start(pool).await;
    let payload = serde_json::from_slice(&labeled_issue(1, "Lost", "bug")).unwrap();
    harness
        .github
        .add_hook_delivery("slow-guid", "issues", Some("labeled"), 502, payload);
    let hold = harness.github.hold("GET", "/app/hook/deliveries");
    let app = github_app(&harness);
    let pool = harness.pool.clone();
    let sweep = tokio::spawn(async move { redelivery::sweep(&pool, &app).await.unwrap() });
    hold.arrived().await;
    // The sweep's election lock (0x636f_6e76_7377_6570, as two 32-bit halves), held by a
    // session sitting in a transaction: the other background jobs' transactions are theirs.
    let open: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
         WHERE l.locktype = 'advisory' AND l.classid = x'636f6e76'::int::oid
           AND l.objid = x'73776570'::int::oid AND a.state LIKE 'idle in transaction%'",
    )
    .fetch_one(&harness.pool)
    .await
    .unwrap();
    assert_eq!(
        open, 0,
        "a transaction stays open across the call to GitHub"
    );
    hold.release();
    assert_eq!(sweep.await.unwrap().redelivered, ["slow-guid"]);
}
