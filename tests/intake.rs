//! Intake that never loses or doubles a delivery: body formats and limits, concurrency,
//! every real payload, installations, the operator API, retention and retries.

mod support;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use conveyor::housekeeping;
use conveyor::webhook::signature;
use serde_json::{Value, json};
use support::{API_TOKEN, Harness, INSTALLATION_ID, all_fixtures, labeled_issue, send};

async fn count(harness: &Harness, sql: &str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(&harness.pool)
        .await
        .unwrap()
}

fn signed_request(delivery: &str, content_type: &str, body: Vec<u8>) -> Request<Body> {
    Request::post("/webhooks/github")
        .header("content-type", content_type)
        .header("x-github-event", "issues")
        .header("x-github-delivery", delivery)
        .header(
            "x-hub-signature-256",
            signature::sign(support::WEBHOOK_SECRET.as_bytes(), &body),
        )
        .body(Body::from(body))
        .unwrap()
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn a_queued_request_wakes_the_request_workers(pool: sqlx::PgPool) {
    let harness = Harness::start_without_app(pool).await;
    let mut listener = sqlx::postgres::PgListener::connect_with(&harness.pool)
        .await
        .unwrap();
    listener
        .listen(conveyor::requests::queue::CHANNEL)
        .await
        .unwrap();
    let body = labeled_issue(6, "Wake the workers", "conveyor");
    let request = signed_request("d-wake", "application/json", body);
    assert_eq!(send(&harness.router, request).await.0, StatusCode::ACCEPTED);
    assert_eq!(harness.outcome("d-wake").await, "request_queued");
    let woken = tokio::time::timeout(std::time::Duration::from_secs(10), listener.recv()).await;
    assert!(
        matches!(woken, Ok(Ok(_))),
        "no notification on the requests' channel: {woken:?}"
    );
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn form_encoded_bodies_are_accepted(pool: sqlx::PgPool) {
    let harness = Harness::start_without_app(pool).await;
    let json = labeled_issue(5, "From a form", "conveyor");
    let form: String = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("payload", std::str::from_utf8(&json).unwrap())
        .finish();
    let request = signed_request(
        "d-form",
        "application/x-www-form-urlencoded",
        form.into_bytes(),
    );
    assert_eq!(send(&harness.router, request).await.0, StatusCode::ACCEPTED);
    assert_eq!(harness.outcome("d-form").await, "request_queued");
    let stored: Vec<u8> =
        sqlx::query_scalar("SELECT payload FROM deliveries WHERE delivery_id = 'd-form'")
            .fetch_one(&harness.pool)
            .await
            .unwrap();
    assert_eq!(stored, json, "the JSON inside the form is what is kept");

    let no_payload = signed_request(
        "d-form-2",
        "application/x-www-form-urlencoded",
        b"other=1".to_vec(),
    );
    let (status, reply) = send(&harness.router, no_payload).await;
    assert_eq!(
        (status, reply),
        (
            StatusCode::BAD_REQUEST,
            json!({ "code": "bad_request", "message": "form body has no `payload` field" })
        )
    );
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn bodies_up_to_githubs_cap_are_accepted_and_larger_ones_refused(pool: sqlx::PgPool) {
    let harness = Harness::start_without_app(pool).await;
    let cap = 25 * 1024 * 1024;
    let mut big = labeled_issue(6, "Big", "bug");
    let pad = cap - big.len() - r#","pad":"""#.len();
    big.pop();
    big.extend_from_slice(format!(r#","pad":"{}"}}"#, "x".repeat(pad)).as_bytes());
    assert_eq!(big.len(), cap);
    let (status, _) = harness.post_signed("issues", "d-big", &big).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    // Whether the label is the trigger is the repository's settings' to say, later.
    assert_eq!(harness.outcome("d-big").await, "request_queued");

    big.push(b' ');
    let (status, _) = harness.post_signed("issues", "d-too-big", &big).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        count(
            &harness,
            "SELECT count(*) FROM deliveries WHERE delivery_id = 'd-too-big'"
        )
        .await,
        0
    );
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn only_the_sha256_signature_counts(pool: sqlx::PgPool) {
    let harness = Harness::start_without_app(pool).await;
    let body = labeled_issue(1, "x", "conveyor");
    let request = Request::post("/webhooks/github")
        .header("x-github-event", "issues")
        .header("x-github-delivery", "d-sha1")
        .header(
            "x-hub-signature",
            "sha1=0a4d55a8d778e5022fab701977c5d840bbc486d0",
        )
        .body(Body::from(body))
        .unwrap();
    assert_eq!(
        send(&harness.router, request).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(count(&harness, "SELECT count(*) FROM deliveries").await, 0);
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn a_hundred_concurrent_copies_store_one_row_and_one_request(pool: sqlx::PgPool) {
    let harness = Harness::start_without_app(pool).await;
    let body = labeled_issue(7, "Concurrent", "conveyor");
    let posts = (0..100).map(|_| harness.post_signed("issues", "d-storm", &body));
    let statuses: Vec<StatusCode> = futures_util::future::join_all(posts)
        .await
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == StatusCode::ACCEPTED)
            .count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == StatusCode::OK).count(),
        99,
        "{statuses:?}"
    );
    assert_eq!(harness.outcome("d-storm").await, "request_queued");
    assert_eq!(count(&harness, "SELECT count(*) FROM deliveries").await, 1);
    assert_eq!(count(&harness, "SELECT count(*) FROM requests").await, 1);
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn every_real_payload_gets_a_2xx_and_an_outcome(pool: sqlx::PgPool) {
    let harness = Harness::start_without_app(pool).await;
    let fixtures = all_fixtures();
    assert!(fixtures.len() > 50, "fixtures found: {}", fixtures.len());
    let mut deliveries = Vec::new();
    let mut posted = std::collections::HashSet::new();
    for (event, file, payload) in &fixtures {
        let mut with_installation = payload.clone();
        with_installation["installation"] = json!({ "id": INSTALLATION_ID + 1 });
        for (variant, body) in [("as-is", payload), ("installed", &with_installation)] {
            let delivery = format!("{event}/{file}/{variant}");
            let body = serde_json::to_vec(body).unwrap();
            let (status, reply) = harness.post_signed(event, &delivery, &body).await;
            assert!(status.is_success(), "{delivery}: {status} {reply}");
            // Some examples differ only in their installation: with ours, the same bytes.
            let first = posted.insert((event.clone(), body));
            if reply == json!({ "duplicate": true }) {
                assert!(!first, "{delivery} is no duplicate");
            } else {
                deliveries.push(delivery);
            }
        }
    }
    // Odd shapes GitHub could send: nulls, wrong types, missing everything.
    let odd = [
        json!({}),
        json!([]),
        json!(null),
        json!({"action": 5}),
        json!({"installation": "x"}),
        json!({"action": "labeled", "installation": {"id": 1}, "issue": {"number": "seven"}, "label": {"name": "conveyor"}}),
        json!({"action": "labeled", "installation": {"id": 1}, "issue": null, "label": null, "repository": null}),
    ];
    for (index, body) in odd.iter().enumerate() {
        let delivery = format!("odd-{index}");
        let (status, reply) = harness
            .post_signed("issues", &delivery, &serde_json::to_vec(body).unwrap())
            .await;
        assert!(status.is_success(), "{delivery}: {status} {reply}");
        deliveries.push(delivery);
    }
    for delivery in &deliveries {
        let outcome = harness.outcome(delivery).await;
        assert!(
            ["request_queued", "installation", "ignored: "]
                .iter()
                .any(|ok| outcome.starts_with(ok)),
            "{delivery}: {outcome}"
        );
    }
    let installed = harness
        .outcome("installation/created.payload.json/installed")
        .await;
    assert_eq!(installed, "installation");
    assert_eq!(
        harness.outcome("ping/payload.json/as-is").await,
        "ignored: no installation"
    );
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn installation_events_maintain_installations_and_gate_deliveries(pool: sqlx::PgPool) {
    let harness = Harness::start_without_app(pool).await;
    let post_fixture = async |path: &str, delivery: &str| {
        let mut payload = support::fixture(path);
        payload["installation"]["id"] = INSTALLATION_ID.into();
        harness
            .post_signed(
                path.split('/').next().unwrap(),
                delivery,
                &serde_json::to_vec(&payload).unwrap(),
            )
            .await;
        harness.outcome(delivery).await
    };
    let repositories = async || {
        conveyor::installations::repositories(&harness.pool, INSTALLATION_ID)
            .await
            .unwrap()
    };

    assert_eq!(
        post_fixture("installation/created.payload.json", "i-created").await,
        "installation"
    );
    let created = support::fixture("installation/created.payload.json");
    let expected: Vec<String> = created["repositories"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["full_name"].as_str().unwrap().to_owned())
        .collect();
    assert!(!expected.is_empty());
    assert_eq!(repositories().await, {
        let mut e = expected.clone();
        e.sort();
        e
    });

    assert_eq!(
        post_fixture("installation_repositories/added.payload.json", "i-added").await,
        "installation"
    );
    let added = support::fixture("installation_repositories/added.payload.json");
    let added_name = added["repositories_added"][0]["full_name"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(repositories().await.contains(&added_name));
    assert_eq!(
        post_fixture(
            "installation_repositories/removed.payload.json",
            "i-removed"
        )
        .await,
        "installation"
    );
    let removed = support::fixture("installation_repositories/removed.payload.json");
    let removed_name = removed["repositories_removed"][0]["full_name"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(!repositories().await.contains(&removed_name));

    assert_eq!(
        post_fixture("installation/suspend.payload.json", "i-suspend").await,
        "installation"
    );
    harness
        .post_signed("issues", "l-1", &labeled_issue(1, "x", "conveyor"))
        .await;
    assert_eq!(
        harness.outcome("l-1").await,
        "ignored: installation suspended"
    );

    assert_eq!(
        post_fixture("installation/unsuspend.payload.json", "i-unsuspend").await,
        "installation"
    );
    harness
        .post_signed("issues", "l-2", &labeled_issue(2, "x", "conveyor"))
        .await;
    assert_eq!(harness.outcome("l-2").await, "request_queued");

    assert_eq!(
        post_fixture("installation/deleted.payload.json", "i-deleted").await,
        "installation"
    );
    harness
        .post_signed("issues", "l-3", &labeled_issue(3, "x", "conveyor"))
        .await;
    assert_eq!(
        harness.outcome("l-3").await,
        "ignored: installation deleted"
    );

    let mut by_bot: Value = serde_json::from_slice(&labeled_issue(4, "x", "conveyor")).unwrap();
    by_bot["sender"]["type"] = "Bot".into();
    // Installed again later: GitHub's payload differs, in its timestamps at least, from the
    // first one (the same bytes again would be a duplicate).
    let mut again = support::fixture("installation/created.payload.json");
    again["installation"]["id"] = INSTALLATION_ID.into();
    again["installation"]["updated_at"] = 1_700_000_000.into();
    harness
        .post_signed(
            "installation",
            "i-again",
            &serde_json::to_vec(&again).unwrap(),
        )
        .await;
    assert_eq!(harness.outcome("i-again").await, "installation");
    harness
        .post_signed("issues", "l-4", &serde_json::to_vec(&by_bot).unwrap())
        .await;
    // A bot's label goes on to the request workers, which honour it only when the
    // repository's `allowed_bots` lists the bot.
    assert_eq!(harness.outcome("l-4").await, "request_queued");
    let actor_is_bot: bool = sqlx::query_scalar(
        "SELECT r.actor_is_bot FROM requests r JOIN deliveries d ON d.id = r.delivery_id
         WHERE d.delivery_id = 'l-4'",
    )
    .fetch_one(&harness.pool)
    .await
    .unwrap();
    assert!(actor_is_bot);
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn operators_list_and_replay_deliveries(pool: sqlx::PgPool) {
    let harness = Harness::start_without_app(pool).await;
    harness
        .post_signed("issues", "o-task", &labeled_issue(1, "x", "conveyor"))
        .await;
    let unlabeled = support::payloads::issue_unlabeled(2, "x", "bug", "alice");
    let mut closed_pull: serde_json::Value = serde_json::from_slice(&unlabeled).unwrap();
    closed_pull["action"] = "reopened".into();
    harness
        .post_signed(
            "issues",
            "o-ignored",
            &serde_json::to_vec(&closed_pull).unwrap(),
        )
        .await;
    harness.outcome("o-task").await;
    harness.outcome("o-ignored").await;

    let (status, _) = harness.api("GET", "/api/v2/deliveries", None).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "reads need the token when one is set"
    );
    let (status, list) = harness
        .api("GET", "/api/v2/deliveries?outcome=ignored", Some(API_TOKEN))
        .await;
    assert_eq!(status, StatusCode::OK);
    let rows = list["deliveries"].as_array().unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["id"], "o-ignored");
    assert_eq!(rows[0]["outcome"], "ignored: event not handled");
    assert_eq!(
        (rows[0]["event"].as_str(), rows[0]["action"].as_str()),
        (Some("issues"), Some("reopened"))
    );
    assert_eq!(rows[0]["repository"], "acme/widgets");
    assert!(rows[0]["processing_ms"].as_f64().unwrap() >= 0.0);
    let (_, all) = harness
        .api("GET", "/api/v2/deliveries?limit=1", Some(API_TOKEN))
        .await;
    assert_eq!(all["deliveries"][0]["id"], "o-ignored");
    let next = all["next"].as_i64().expect("a next page");
    let (_, rest) = harness
        .api(
            "GET",
            &format!("/api/v2/deliveries?limit=1&before={next}"),
            Some(API_TOKEN),
        )
        .await;
    assert_eq!(rest["deliveries"][0]["id"], "o-task");

    assert_eq!(
        harness
            .api("POST", "/api/v2/deliveries/o-task/replay", None)
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        harness
            .api("POST", "/api/v2/deliveries/o-task/replay", Some("wrong"))
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
    let (status, _) = harness
        .api("POST", "/api/v2/deliveries/o-task/replay", Some(API_TOKEN))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(harness.outcome("o-task").await, "request_queued");
    assert_eq!(
        count(&harness, "SELECT count(*) FROM requests").await,
        1,
        "a replay never queues a second request"
    );
    let (status, reply) = harness
        .api("POST", "/api/v2/deliveries/nope/replay", Some(API_TOKEN))
        .await;
    assert_eq!(
        (status, reply),
        (
            StatusCode::NOT_FOUND,
            json!({ "code": "not_found", "message": "no delivery nope" })
        )
    );
}

/// Every route behind the operator token, as the OpenAPI document lists them (the router
/// serves only what the document describes), with sample path parameters.
fn api_routes() -> Vec<(String, String)> {
    let (_, document) = conveyor::http::documented();
    let mut routes = Vec::new();
    for (path, operations) in document["paths"].as_object().unwrap() {
        for (method, operation) in operations.as_object().unwrap() {
            if operation["security"] != json!([{ "operatorToken": [] }]) {
                continue;
            }
            routes.push((method.to_uppercase(), support::sample_path(path)));
        }
    }
    assert!(routes.len() >= 30, "{routes:?}");
    routes
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn without_an_api_token_every_route_is_off_and_says_how_to_enable_it(pool: sqlx::PgPool) {
    let harness = Harness::start_without_app_or_token(pool).await;
    for (method, path) in api_routes() {
        let (method, path) = (method.as_str(), path.as_str());
        for token in [None, Some(API_TOKEN), Some("")] {
            let (status, reply) = api_with_json(&harness, method, path, token).await;
            assert_eq!(
                status,
                StatusCode::SERVICE_UNAVAILABLE,
                "{method} {path} {token:?}"
            );
            assert!(
                reply["message"]
                    .as_str()
                    .unwrap()
                    .contains("set CONVEYOR_API_TOKEN"),
                "{reply}"
            );
        }
    }
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn an_empty_api_token_is_no_token(pool: sqlx::PgPool) {
    let harness = Harness::start_configured(pool, |config| {
        config.github.app_id = None;
        config.api_token = Some(String::new().into());
    })
    .await;
    for (method, path) in api_routes() {
        let (method, path) = (method.as_str(), path.as_str());
        for token in [None, Some("")] {
            let (status, reply) = api_with_json(&harness, method, path, token).await;
            assert_eq!(
                status,
                StatusCode::SERVICE_UNAVAILABLE,
                "{method} {path} {token:?}: {reply}"
            );
        }
    }
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn with_a_token_every_route_needs_it(pool: sqlx::PgPool) {
    let harness = Harness::start_without_app(pool).await;
    for (method, path) in api_routes() {
        let (method, path) = (method.as_str(), path.as_str());
        for token in [None, Some(""), Some("wrong")] {
            let (status, reply) = api_with_json(&harness, method, path, token).await;
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "{method} {path} {token:?}: {reply}"
            );
        }
        if path.ends_with("/stream") {
            // Let in, it streams for as long as the client reads: its answer has no end.
            continue;
        }
        let (status, reply) = api_with_json(&harness, method, path, Some(API_TOKEN)).await;
        assert!(
            ![StatusCode::UNAUTHORIZED, StatusCode::SERVICE_UNAVAILABLE].contains(&status),
            "{method} {path}: {status} {reply}"
        );
    }
}

/// An API call with a JSON body, so routes that read one get past its extractor.
async fn api_with_json(
    harness: &Harness,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> (StatusCode, Value) {
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json");
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let body = Body::from(json!({ "blocker": 2 }).to_string());
    send(&harness.router, request.body(body).unwrap()).await
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn retention_drops_old_payloads_and_keeps_outcomes(pool: sqlx::PgPool) {
    let harness = Harness::start_without_app(pool).await;
    for (index, delivery) in ["r-old-1", "r-old-2", "r-new"].iter().enumerate() {
        harness
            .post_signed("issues", delivery, &labeled_issue(index as i64, "x", "bug"))
            .await;
        harness.outcome(delivery).await;
    }
    sqlx::query("UPDATE deliveries SET received_at = now() - interval '15 days' WHERE delivery_id LIKE 'r-old-%'")
        .execute(&harness.pool)
        .await
        .unwrap();
    let dropped = housekeeping::retention::prune_payloads(
        &harness.pool,
        std::time::Duration::from_secs(14 * 86_400),
    )
    .await
    .unwrap();
    assert_eq!(dropped, 2);
    assert_eq!(
        count(
            &harness,
            "SELECT count(*) FROM deliveries WHERE payload IS NULL"
        )
        .await,
        2
    );
    assert_eq!(
        count(
            &harness,
            "SELECT count(*) FROM deliveries WHERE outcome = 'request_queued'"
        )
        .await,
        3
    );
    let (status, reply) = harness
        .api("POST", "/api/v2/deliveries/r-old-1/replay", Some(API_TOKEN))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{reply}");
}

/// Hides a table interpreting installation events writes to, so that interpretation fails;
/// returns an installation event for our installation.
async fn break_installation_tables(harness: &Harness) -> Value {
    sqlx::query("ALTER TABLE installation_repositories RENAME TO moved_away")
        .execute(&harness.pool)
        .await
        .unwrap();
    let mut payload = support::fixture("installation/created.payload.json");
    payload["installation"]["id"] = INSTALLATION_ID.into();
    payload
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn an_interpretation_failure_is_retried_and_recorded(pool: sqlx::PgPool) {
    let harness = Harness::start_without_app(pool).await;
    let payload = break_installation_tables(&harness).await;
    harness
        .post_signed(
            "installation",
            "f-1",
            &serde_json::to_vec(&payload).unwrap(),
        )
        .await;
    let outcome = support::wait_until("a failed attempt", || async {
        let row: (i32, Option<String>) =
            sqlx::query_as("SELECT attempts, outcome FROM deliveries WHERE delivery_id = 'f-1'")
                .fetch_one(&harness.pool)
                .await
                .unwrap();
        (row.0 >= 1).then_some(row.1)
    })
    .await;
    assert!(
        outcome.as_deref().unwrap().starts_with("retrying: "),
        "{outcome:?}"
    );
    assert_eq!(
        count(&harness, "SELECT count(*) FROM installations").await,
        0,
        "the failed attempt left nothing"
    );
    sqlx::query("ALTER TABLE moved_away RENAME TO installation_repositories")
        .execute(&harness.pool)
        .await
        .unwrap();
    assert_eq!(harness.outcome("f-1").await, "installation");
    assert_eq!(
        count(&harness, "SELECT count(*) FROM installations").await,
        1
    );
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn a_delivery_that_keeps_failing_is_left_failed_and_visible(pool: sqlx::PgPool) {
    let harness = Harness::start_without_app(pool).await;
    let payload = break_installation_tables(&harness).await;
    // Stored as if four attempts had already failed: the next failure is the last.
    sqlx::query("INSERT INTO deliveries (delivery_id, event, payload, attempts) VALUES ('f-last', 'installation', $1, 4)")
        .bind(serde_json::to_vec(&payload).unwrap())
        .execute(&harness.pool)
        .await
        .unwrap();
    let outcome = harness.outcome("f-last").await;
    assert!(
        outcome.starts_with("failed: ") && outcome.contains("installation_repositories"),
        "{outcome}"
    );
    let (_, list) = harness
        .api("GET", "/api/v2/deliveries?outcome=failed", Some(API_TOKEN))
        .await;
    assert_eq!(list["deliveries"][0]["id"], "f-last");
    assert_eq!(list["deliveries"][0]["attempts"], 5);
}
