//! Webhook intake through the real router: signatures, storage, deduplication, outcomes.

mod support;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::json;
use support::{Harness, fixture, labeled_issue, send};

async fn delivery_count(harness: &Harness) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM deliveries")
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
        json!({ "error": "missing X-Hub-Signature-256 header" })
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
    assert_eq!(harness.outcome("d-same").await, "task_created");
    assert_eq!(delivery_count(&harness).await, 1);
    assert_eq!(harness.task_ids().await.len(), 1);
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn labelling_again_while_a_task_is_live_does_not_queue_a_twin(pool: sqlx::PgPool) {
    // Without an App no worker runs, so the first task is certainly still queued.
    let harness = Harness::start_without_app(pool).await;
    harness
        .post_signed("issues", "d-a", &labeled_issue(3, "Twice", "conveyor"))
        .await;
    assert_eq!(harness.outcome("d-a").await, "task_created");
    harness
        .post_signed("issues", "d-b", &labeled_issue(3, "Twice", "conveyor"))
        .await;
    assert_eq!(
        harness.outcome("d-b").await,
        "ignored: the issue already has a live task"
    );
    assert_eq!(harness.task_ids().await.len(), 1);
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn deliveries_that_are_not_tasks_get_a_recorded_reason(pool: sqlx::PgPool) {
    let harness = Harness::start(pool).await;
    let (status, _) = harness
        .post_signed("issues", "d-label", &labeled_issue(4, "x", "bug"))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(
        harness.outcome("d-label").await,
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
        reply["error"]
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
            json!({ "error": "missing x-github-delivery header" })
        )
    );
    assert_eq!(delivery_count(&harness).await, 0);
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn without_a_webhook_secret_every_webhook_is_refused(pool: sqlx::PgPool) {
    let harness = Harness::start_with_secret(pool, None).await;
    let (status, reply) = harness
        .post_signed("issues", "d-x", &labeled_issue(1, "x", "conveyor"))
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        reply["error"]
            .as_str()
            .unwrap()
            .contains("GITHUB_WEBHOOK_SECRET")
    );
    assert_eq!(delivery_count(&harness).await, 0);
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
