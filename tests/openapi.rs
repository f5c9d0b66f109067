//! The OpenAPI 3.1 document: served, self-consistent, its schemas those of the handlers'
//! types (a real request validates, a broken one does not), and every route it lists is
//! served by the router, guarded as it says.

mod support;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;
use support::{API_TOKEN, Harness};

fn document() -> Value {
    conveyor::http::documented().1
}

/// Every `$ref` in `value`.
fn refs<'a>(value: &'a Value, found: &mut Vec<&'a str>) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(target)) = map.get("$ref") {
                found.push(target);
            }
            map.values().for_each(|v| refs(v, found));
        }
        Value::Array(items) => items.iter().for_each(|v| refs(v, found)),
        _ => {}
    }
}

/// A validator for the request body of `method path`, its refs resolved in the document.
fn body_validator(document: &Value, path: &str, method: &str) -> jsonschema::Validator {
    let schema =
        &document["paths"][path][method]["requestBody"]["content"]["application/json"]["schema"];
    assert!(schema.is_object(), "{method} {path} has a body schema");
    let mut root = schema.clone();
    root["components"] = document["components"].clone();
    jsonschema::validator_for(&root).unwrap()
}

#[test]
fn the_document_is_openapi_3_1_and_every_reference_resolves() {
    let document = document();
    assert_eq!(document["openapi"], "3.1.0");
    let mut found = Vec::new();
    refs(&document, &mut found);
    assert!(found.len() > 20, "{found:?}");
    for target in found {
        let pointer = target.strip_prefix('#').expect("a local reference");
        assert!(document.pointer(pointer).is_some(), "{target} resolves");
    }
    for (path, operations) in document["paths"].as_object().unwrap() {
        for (method, operation) in operations.as_object().unwrap() {
            assert!(operation["summary"].is_string(), "{method} {path}");
            assert!(operation["responses"].as_object().unwrap().len() >= 2);
            let declared: Vec<&str> = operation["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|p| p["in"] == "path")
                .map(|p| p["name"].as_str().unwrap())
                .collect();
            let templated: Vec<&str> = path
                .split('/')
                .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
                .collect();
            assert_eq!(declared, templated, "{method} {path}");
        }
    }
    // The external contract's routes are all there.
    for (method, path) in [
        ("post", "/api/v2/tasks"),
        ("get", "/api/v2/tasks/board"),
        ("post", "/api/v2/tasks/{id}/transition"),
        ("delete", "/api/v2/tasks/{id}/dependencies/{dep_id}"),
        ("get", "/api/v2/state-machine"),
        ("post", "/api/v2/import/prd/preview"),
        ("get", "/api/v2/import/{job_id}"),
        ("post", "/api/v2/quick-runs/{id}/promote"),
        ("get", "/api/v2/events/stream"),
        ("get", "/ws"),
        ("get", "/api/v2/projects/{owner}/{name}/status"),
        ("get", "/api/v2/runs/{id}/logs"),
        ("post", "/api/v2/tasks/{id}/retry"),
        ("post", "/api/v2/runs/{id}/approve"),
        ("post", "/api/v2/runs/{id}/reject"),
        ("post", "/webhooks/github"),
        ("get", "/api/v2/openapi.json"),
    ] {
        assert!(
            document["paths"][path][method].is_object(),
            "{method} {path} is documented"
        );
    }
}

#[test]
fn request_schemas_are_the_handlers_types() {
    let document = document();
    let create = body_validator(&document, "/api/v2/tasks", "post");
    let good = json!({
        "repository": "acme/widgets", "title": "Add a flag", "task_type": "feature",
        "priority": 2, "labels": ["cli"], "blocked_by": [3],
    });
    assert!(create.is_valid(&good));
    assert!(!create.is_valid(&json!({ "title": "no repository" })));
    let mut unknown = good.clone();
    unknown["colour"] = json!("red");
    assert!(
        !create.is_valid(&unknown),
        "unknown fields are refused, as serde does"
    );

    let transition = body_validator(&document, "/api/v2/tasks/{id}/transition", "post");
    assert!(transition.is_valid(&json!({ "to": "ready", "reason": "go" })));
    let retry = body_validator(&document, "/api/v2/tasks/{id}/retry", "post");
    assert!(retry.is_valid(&json!({ "step": "test" })));
    assert!(!retry.is_valid(&json!({ "stepp": "test" })));
    assert_eq!(
        document["paths"]["/api/v2/runs/{id}/reject"]["post"]["requestBody"]["required"], false,
        "a rejection's reason may be left out"
    );
    let import = body_validator(&document, "/api/v2/import/prd/preview", "post");
    assert!(import.is_valid(&json!({
        "repository": "acme/widgets", "markdown": "- 1.1 A", "granularity": "subtask",
    })));
    assert!(!import.is_valid(&json!({
        "repository": "acme/widgets", "markdown": "- 1.1 A", "granularity": "word",
    })));
    let task = &document["components"]["schemas"]["BoardTask"]["properties"];
    for field in [
        "id",
        "repository",
        "title",
        "state",
        "task_type",
        "priority",
        "source",
    ] {
        assert!(task[field].is_object(), "a task has {field}");
    }
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn every_documented_route_is_served_and_guarded_as_documented(pool: PgPool) {
    let harness = Harness::start(pool).await;
    let (status, served) = harness.api("GET", "/api/v2/openapi.json", None).await;
    assert_eq!(status, StatusCode::OK);
    let document = document();
    assert_eq!(served, document);
    for (path, operations) in document["paths"].as_object().unwrap() {
        let concrete = support::sample_path(path);
        for (method, operation) in operations.as_object().unwrap() {
            let request = Request::builder()
                .method(method.to_uppercase().as_str())
                .uri(&concrete)
                .header("content-type", "application/json")
                .body(Body::from("{}"))
                .unwrap();
            let (status, _) = support::send(&harness.router, request).await;
            // Token or signature: refused without either. Open: served.
            let expected = if operation["security"] == json!([]) {
                StatusCode::OK
            } else {
                StatusCode::UNAUTHORIZED
            };
            assert_eq!(status, expected, "{method} {concrete} unauthenticated");
        }
    }
    // A typed answer is what the document says it is.
    harness.install().await;
    let (status, deliveries) = harness
        .api("GET", "/api/v2/deliveries", Some(API_TOKEN))
        .await;
    assert_eq!(status, StatusCode::OK, "{deliveries}");
    assert_eq!(
        deliveries["deliveries"][0]["event"], "installation",
        "{deliveries}"
    );
    support::assert_documented("/api/v2/deliveries", "get", 200, &deliveries);
    let mut broken = deliveries.clone();
    broken["deliveries"][0]["attempts"] = json!("many");
    assert!(
        !support::answer_validator("/api/v2/deliveries", "get", 200).is_valid(&broken),
        "the schema says what a delivery's fields are"
    );
    let (status, _) = harness
        .api("GET", "/api/v2/nothing-here", Some(API_TOKEN))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
