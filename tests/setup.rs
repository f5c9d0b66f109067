//! Set-up from the App manifest against the fake GitHub: `/setup` posts the manifest,
//! GitHub sends the person back with a code, the callback trades it for the App and stores
//! it sealed; from then on, without a restart, webhooks are verified with the stored secret
//! and tokens are minted as the stored App. The environment, when set, still wins.

mod support;

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use conveyor::config::Config;
use conveyor::service::Service;
use conveyor::webhook::signature;
use serde_json::Value;
use sqlx::PgPool;
use support::{Captured, Harness, fake_github, labeled_issue, send};

const PUBLIC_URL: &str = "https://conveyor.test";
const KEY_FILE: &str = "secret.key";

/// No App and no webhook secret in the environment: set-up has everything to do.
fn unconfigured(config: &mut Config) {
    config.public_url = Some(PUBLIC_URL.to_owned());
    config.github.app_id = None;
    config.github.private_key = None;
    config.github.webhook_secret = None;
}

async fn start_unconfigured(pool: PgPool) -> Harness {
    Harness::start_configured(pool, unconfigured).await
}

async fn page(harness: &Harness, path: &str) -> (StatusCode, String) {
    let (status, body) = send(
        &harness.router,
        Request::get(path).body(Body::empty()).unwrap(),
    )
    .await;
    let Value::String(html) = body else {
        panic!("{path} answered JSON: {body}")
    };
    (status, html)
}

fn unescape(text: &str) -> String {
    text.replace("&quot;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// The value of attribute `name` in the first tag after `marker`.
fn attribute(html: &str, marker: &str, name: &str) -> String {
    let from = html
        .find(marker)
        .unwrap_or_else(|| panic!("{marker} in {html}"));
    let rest = &html[from..];
    let start = rest.find(&format!("{name}=\"")).unwrap() + name.len() + 2;
    let end = start + rest[start..].find('"').unwrap();
    unescape(&rest[start..end])
}

/// The manifest form `/setup` shows: where it posts, and the manifest.
async fn setup_form(harness: &Harness, path: &str) -> (String, Value) {
    let (status, html) = page(harness, path).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(!html.contains("<script"), "no JavaScript: {html}");
    let action = attribute(&html, "<form method=\"post\"", "action");
    let manifest = attribute(&html, "name=\"manifest\"", "value");
    (action, serde_json::from_str(&manifest).unwrap())
}

/// What the person does on GitHub: posts the form there; GitHub answers with the redirect
/// to the callback. Returns the callback's path and query.
async fn submit_on_github(action: &str, manifest: &Value) -> String {
    let body = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("manifest", &manifest.to_string())
        .finish();
    let response = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .post(action)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 302);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let rest = location
        .strip_prefix(PUBLIC_URL)
        .unwrap_or_else(|| panic!("redirected to {location}"));
    rest.to_owned()
}

/// The whole flow: `/setup`, GitHub, the callback. Returns the callback's answer.
async fn create_app(harness: &Harness) -> (StatusCode, String) {
    let (action, manifest) = setup_form(harness, "/setup").await;
    let callback = submit_on_github(&action, &manifest).await;
    page(harness, &callback).await
}

async fn stored_rows(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM github_app")
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn post_signed_with(
    harness: &Harness,
    secret: &str,
    delivery: &str,
    body: &[u8],
) -> StatusCode {
    let signature = signature::sign(secret.as_bytes(), body);
    harness
        .post("issues", delivery, body, Some(&signature))
        .await
        .0
}

/// The `iss` of every App JWT the fake received for installation tokens.
fn token_issuers(github: &support::FakeGitHub) -> BTreeSet<u64> {
    use base64::Engine;
    github
        .calls("POST", "/app/installations/*/access_tokens")
        .iter()
        .map(|call| {
            let jwt = call
                .authorization
                .as_deref()
                .unwrap()
                .strip_prefix("Bearer ")
                .unwrap();
            let claims = jwt.split('.').nth(1).unwrap();
            let claims: Value = serde_json::from_slice(
                &base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(claims)
                    .unwrap(),
            )
            .unwrap();
            claims["iss"].as_str().unwrap().parse().unwrap()
        })
        .collect()
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn the_manifest_flow_creates_the_app_and_puts_it_in_use_without_a_restart(pool: PgPool) {
    let harness = start_unconfigured(pool.clone()).await;
    harness.add_repo_with_pipeline();
    let (status, home) = page(&harness, "/").await;
    assert_eq!(status, StatusCode::OK);
    assert!(home.contains("href=\"/setup\""), "{home}");
    assert!(home.contains("Create the GitHub App"), "{home}");
    assert!(home.contains("not configured"), "{home}");
    assert!(home.contains(PUBLIC_URL), "{home}");
    assert!(home.contains("No worker process is running"), "{home}");

    let (action, manifest) = setup_form(&harness, "/setup").await;
    assert!(
        action.starts_with(&format!("{}/settings/apps/new?state=", harness.github.url)),
        "{action}"
    );
    assert_eq!(
        manifest["hook_attributes"]["url"],
        format!("{PUBLIC_URL}/webhooks/github")
    );
    assert_eq!(
        manifest["redirect_url"],
        format!("{PUBLIC_URL}/setup/callback")
    );
    assert_eq!(manifest["setup_url"], format!("{PUBLIC_URL}/"));

    let (logs, guard) = Captured::logs();
    let callback = submit_on_github(&action, &manifest).await;
    let (status, done) = page(&harness, &callback).await;
    drop(guard);
    assert_eq!(status, StatusCode::OK, "{done}");
    let created = harness.github.created_apps();
    let [app] = created.as_slice() else {
        panic!("one App made: {created:?}")
    };
    let install = format!("{}/apps/{}/installations/new", harness.github.url, app.slug);
    assert!(done.contains(&format!("href=\"{install}\"")), "{done}");

    // Stored, sealed: no secret in the row in any form.
    let row: String = sqlx::query_scalar("SELECT row_to_json(github_app)::text FROM github_app")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(
        row.contains(&app.slug) && row.contains(&app.client_id),
        "{row}"
    );
    for secret in [&app.webhook_secret, &app.client_secret, "PRIVATE KEY"] {
        assert!(!row.contains(secret), "{secret} in the stored row");
        let hex_secret = hex::encode(secret);
        assert!(
            !row.contains(&hex_secret),
            "{secret} in the stored row, in hex"
        );
    }
    let text = logs.text();
    for secret in [&app.webhook_secret, &app.client_secret, "PRIVATE KEY"] {
        assert!(!text.contains(secret), "{secret} logged: {text}");
    }

    // The status page now points at the install page.
    let (_, home) = page(&harness, "/").await;
    assert!(home.contains("created at set-up"), "{home}");
    assert!(home.contains(&format!("href=\"{install}\"")), "{home}");
    assert!(home.contains("present, from set-up"), "{home}");

    // The same router, no restart: the stored secret verifies webhooks.
    let body = labeled_issue(7, "After set-up", "conveyor");
    assert_eq!(
        post_signed_with(&harness, "another secret", "d-forged", &body).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        post_signed_with(&harness, &app.webhook_secret, "d-setup", &body).await,
        StatusCode::ACCEPTED
    );
    // And tokens are minted as the stored App: the request reads the repository's pipeline.
    assert_eq!(harness.request_outcome("d-setup").await, "task_created");
    assert_eq!(token_issuers(&harness.github), BTreeSet::from([app.id]));
    // The worker sessions started with the App, and the status page shows their health.
    support::wait_until("the workers heartbeat", || async {
        let (_, home) = page(&harness, "/").await;
        home.contains("2 of 2").then_some(())
    })
    .await;
}

/// `GET path` on the router with `cookie`: the status, the `Location` and the `Set-Cookie`.
async fn get_with_cookie(
    harness: &Harness,
    path: &str,
    cookie: Option<&str>,
) -> (StatusCode, String, Option<String>) {
    use tower::ServiceExt;
    let mut request = Request::get(path);
    if let Some(cookie) = cookie {
        request = request.header("cookie", cookie);
    }
    let response = harness
        .router
        .clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|value| value.to_str().unwrap().to_owned())
    };
    let location = header("location").unwrap_or_default();
    (response.status(), location, header("set-cookie"))
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn the_app_made_at_set_up_signs_people_in_with_github(pool: PgPool) {
    let harness = start_unconfigured(pool).await;
    let (_, form) = page(&harness, "/signin").await;
    assert!(
        !form.contains("Sign in with GitHub"),
        "no client yet: {form}"
    );
    assert_eq!(create_app(&harness).await.0, StatusCode::OK);
    let created = harness.github.created_apps();
    let app = &created[0];

    // Without a restart the sign-in form offers GitHub, as the App made at set-up.
    let (_, form) = page(&harness, "/signin").await;
    assert!(form.contains("Sign in with GitHub"), "{form}");
    let (status, to_github, anonymous) = get_with_cookie(&harness, "/signin/github", None).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    // Served at an https:// address, the session cookie never travels in the clear.
    let anonymous = anonymous.unwrap();
    assert!(anonymous.ends_with("; Secure"), "{anonymous}");
    let cookie_of = |set_cookie: &str| set_cookie.split(';').next().unwrap().to_owned();
    assert!(
        to_github.starts_with(&format!(
            "{}/login/oauth/authorize?client_id={}",
            harness.github.url, app.client_id
        )),
        "{to_github}"
    );
    // GitHub knows the callback from the manifest, and the stored client secret redeems
    // the code it sends back.
    harness.github.sign_in_browser_as("bob");
    let back = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(&to_github)
        .send()
        .await
        .unwrap();
    assert_eq!(back.status().as_u16(), 302);
    let callback = back.headers()["location"].to_str().unwrap();
    let callback = callback
        .strip_prefix(&format!("{PUBLIC_URL}/auth/callback"))
        .unwrap_or_else(|| panic!("sent back to {callback}"));
    let (status, next, signed_in) = get_with_cookie(
        &harness,
        &format!("/auth/callback{callback}"),
        Some(&cookie_of(&anonymous)),
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(next, "/tasks");
    let signed_in = cookie_of(&signed_in.unwrap());
    let (status, _, _) = get_with_cookie(&harness, "/tasks", Some(&signed_in)).await;
    assert_eq!(status, StatusCode::OK);
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn the_key_file_is_made_0600_and_reused_after_a_restart(pool: PgPool) {
    let harness = start_unconfigured(pool.clone()).await;
    let key_file = harness.data_dir.path().join(KEY_FILE);
    assert!(!key_file.exists(), "no key is made before it is needed");
    assert_eq!(create_app(&harness).await.0, StatusCode::OK);
    let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let key = std::fs::read_to_string(&key_file).unwrap();

    // Another service on the same database and data directory opens what the first sealed.
    let mut config = support::config(&harness.github, harness.data_dir.path(), None);
    unconfigured(&mut config);
    let service = Service::new(&config, pool.clone()).await.unwrap();
    assert_eq!(std::fs::read_to_string(&key_file).unwrap(), key);
    let app = harness.github.created_apps().pop().unwrap();
    let body = labeled_issue(1, "x", "conveyor");
    let request = |secret: &str, delivery: &str| {
        Request::post("/webhooks/github")
            .header("content-type", "application/json")
            .header("x-github-event", "issues")
            .header("x-github-delivery", delivery)
            .header(
                "x-hub-signature-256",
                signature::sign(secret.as_bytes(), &body),
            )
            .body(Body::from(body.clone()))
            .unwrap()
    };
    let router = service.router();
    assert_eq!(
        send(&router, request(&app.webhook_secret, "d-1")).await.0,
        StatusCode::ACCEPTED
    );
    assert_eq!(
        send(&router, request("not it", "d-2")).await.0,
        StatusCode::UNAUTHORIZED
    );
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn a_configured_secret_key_seals_and_another_key_cannot_open(pool: PgPool) {
    let harness = Harness::start_configured(pool.clone(), |config| {
        unconfigured(config);
        config.secret_key = Some("ab".repeat(32).into());
    })
    .await;
    assert_eq!(create_app(&harness).await.0, StatusCode::OK);
    assert!(!harness.data_dir.path().join(KEY_FILE).exists());

    let mut config = support::config(&harness.github, harness.data_dir.path(), None);
    unconfigured(&mut config);
    config.secret_key = Some("cd".repeat(32).into());
    let refused = Service::new(&config, pool.clone()).await.err().unwrap();
    assert!(
        format!("{refused:#}").contains("does not open"),
        "{refused:#}"
    );
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn the_environment_wins_over_set_up(pool: PgPool) {
    let harness = Harness::start_configured(pool.clone(), |config| {
        config.public_url = Some(PUBLIC_URL.to_owned());
    })
    .await;
    harness.add_repo_with_pipeline();
    let (_, form) = page(&harness, "/setup").await;
    assert!(form.contains("GITHUB_APP_ID"), "{form}");
    let (status, done) = create_app(&harness).await;
    assert_eq!(status, StatusCode::OK, "{done}");
    assert!(done.contains("GITHUB_APP_ID is set"), "{done}");
    assert_eq!(stored_rows(&pool).await, 1);
    let app = harness.github.created_apps().pop().unwrap();

    let body = labeled_issue(3, "Env wins", "conveyor");
    assert_eq!(
        post_signed_with(&harness, &app.webhook_secret, "d-stored", &body).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        post_signed_with(&harness, support::WEBHOOK_SECRET, "d-env", &body).await,
        StatusCode::ACCEPTED
    );
    assert_eq!(harness.request_outcome("d-env").await, "task_created");
    assert_eq!(
        token_issuers(&harness.github),
        BTreeSet::from([fake_github::APP_ID])
    );
    let (_, home) = page(&harness, "/").await;
    assert!(
        home.contains("from the environment (GITHUB_APP_ID)"),
        "{home}"
    );
    assert!(
        home.contains("from the environment (GITHUB_WEBHOOK_SECRET)"),
        "{home}"
    );
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn a_wrong_or_missing_state_is_refused_and_a_code_is_spent_once(pool: PgPool) {
    let harness = start_unconfigured(pool.clone()).await;
    let (action, manifest) = setup_form(&harness, "/setup").await;
    let callback = submit_on_github(&action, &manifest).await;
    let code = url::form_urlencoded::parse(callback.split_once('?').unwrap().1.as_bytes())
        .find(|(name, _)| name == "code")
        .unwrap()
        .1
        .into_owned();
    for path in [
        format!("/setup/callback?code={code}&state=forged"),
        format!("/setup/callback?code={code}"),
    ] {
        let (status, html) = page(&harness, &path).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {html}");
    }
    assert!(
        harness
            .github
            .calls("POST", "/app-manifests/*/conversions")
            .is_empty()
    );
    assert_eq!(stored_rows(&pool).await, 0);
    // The real state still finishes the set-up, once.
    assert_eq!(page(&harness, &callback).await.0, StatusCode::OK);
    let (status, again) = page(&harness, &callback).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{again}");
    // A spent code under a fresh state: GitHub answers 404, and the stored App stays.
    let (action, _) = setup_form(&harness, "/setup").await;
    let fresh = action.split_once("state=").unwrap().1;
    let (status, html) = page(
        &harness,
        &format!("/setup/callback?code={code}&state={fresh}"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{html}");
    assert!(html.contains("GitHub refused the code"), "{html}");
    let spent: Vec<u16> = harness
        .github
        .calls("POST", "/app-manifests/*/conversions")
        .iter()
        .map(|call| call.status)
        .collect();
    assert_eq!(spent, [201, 404]);
    assert_eq!(stored_rows(&pool).await, 1);
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn an_unknown_malformed_or_expired_code_is_refused_and_stores_nothing(pool: PgPool) {
    let harness = start_unconfigured(pool.clone()).await;
    let state_of = |action: &str| action.split_once("state=").unwrap().1.to_owned();

    let (action, _) = setup_form(&harness, "/setup").await;
    let (status, html) = page(
        &harness,
        &format!(
            "/setup/callback?code=never-issued&state={}",
            state_of(&action)
        ),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{html}");
    assert!(html.contains("GitHub refused the code"), "{html}");

    let (action, _) = setup_form(&harness, "/setup").await;
    let (status, html) = page(
        &harness,
        &format!("/setup/callback?code=../../x&state={}", state_of(&action)),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{html}");

    let (action, manifest) = setup_form(&harness, "/setup").await;
    let callback = submit_on_github(&action, &manifest).await;
    harness.github.expire_manifest_codes();
    let (status, html) = page(&harness, &callback).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{html}");
    assert_eq!(
        harness
            .github
            .calls("POST", "/app-manifests/*/conversions")
            .iter()
            .map(|call| call.status)
            .collect::<Vec<_>>(),
        [404, 422]
    );
    assert_eq!(stored_rows(&pool).await, 0);
    let body = labeled_issue(1, "x", "conveyor");
    let app = harness.github.created_apps().pop().unwrap();
    assert_eq!(
        post_signed_with(&harness, &app.webhook_secret, "d-1", &body).await,
        StatusCode::SERVICE_UNAVAILABLE
    );
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn an_organization_gets_the_organization_form(pool: PgPool) {
    let harness = start_unconfigured(pool).await;
    let (action, manifest) = setup_form(&harness, "/setup?org=acme").await;
    assert!(
        action.starts_with(&format!(
            "{}/organizations/acme/settings/apps/new?state=",
            harness.github.url
        )),
        "{action}"
    );
    let callback = submit_on_github(&action, &manifest).await;
    assert_eq!(page(&harness, &callback).await.0, StatusCode::OK);
    assert_eq!(harness.github.created_apps()[0].owner, "acme");
    let (status, html) = page(&harness, "/setup?org=not%20a%20name").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{html}");
}

/// The events side is `deploy.rs`'s test: the manifest's events are those the code acts on.
#[test]
fn the_manifest_asks_for_the_permissions_tokens_are_minted_with() {
    let manifest: Value = serde_json::from_str(include_str!("../app-manifest.json")).unwrap();
    let mut permissions = manifest["default_permissions"].as_object().unwrap().clone();
    // Every App has it; tokens get it without asking.
    assert_eq!(permissions.remove("metadata").unwrap(), "read");
    let used = serde_json::to_value(&conveyor::github::app::TOKEN_PERMISSIONS).unwrap();
    assert_eq!(Value::Object(permissions), used);
}
