//! Signing in to the pages with GitHub, through the App's OAuth client and the fake GitHub's
//! OAuth endpoints: a person sees the repositories GitHub lets them read, controls the ones
//! they administer, and a sign-in that did not start in their browser is refused. Over plain
//! HTTP for the rules, and once in headless Chromium for the flow a person clicks through.

#[path = "support/browser.rs"]
mod browser;
mod support;

use browser::Browser;
use fantoccini::Locator;
use reqwest::StatusCode;
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use serde_json::json;
use sqlx::PgPool;
use support::fake_github::{CLIENT_ID, CLIENT_SECRET};
use support::{Harness, INSTALLATION_ID, OWNER, REPO, csrf_field};

/// Reads `acme/widgets` on GitHub.
const READER: &str = "bob";
/// Administers `acme/widgets`.
const ADMIN: &str = "carol";
/// A repository of the installation that neither may read.
const HIDDEN: &str = "secret";

/// The service with the fake App's OAuth client, its callback registered at GitHub.
async fn start(pool: PgPool) -> (Harness, String) {
    let (harness, base) = Harness::start_public(pool, |config| {
        config.workers = 0;
        config.github.client_id = Some(CLIENT_ID.to_owned());
        config.github.client_secret = Some(CLIENT_SECRET.to_owned().into());
    })
    .await;
    harness
        .github
        .register_oauth_callback(&format!("{base}/auth/callback"));
    (harness, base)
}

/// A task in `acme/widgets` and one in `acme/secret`, both repositories of the installation;
/// their ids.
async fn a_task_in_each_repository(harness: &Harness) -> (i64, i64) {
    harness.add_repo_with_pipeline();
    harness.github.add_repo(
        INSTALLATION_ID,
        OWNER,
        HIDDEN,
        &[("README.md", "# secret\n")],
    );
    harness.github.set_permission(OWNER, REPO, READER, "read");
    harness.github.set_permission(OWNER, REPO, ADMIN, "admin");
    harness.install().await;
    // As an `installation_repositories.added` delivery leaves it.
    sqlx::query(
        "INSERT INTO installation_repositories (installation_id, repository_id, full_name)
         VALUES ($1, 4343, $2)",
    )
    .bind(INSTALLATION_ID)
    .bind(format!("{OWNER}/{HIDDEN}"))
    .execute(&harness.pool)
    .await
    .unwrap();
    let shown = harness.create_task("Fix the widget", json!({})).await;
    let hidden = harness
        .create_task(
            "Rotate the keys",
            json!({ "repository": format!("{OWNER}/{HIDDEN}") }),
        )
        .await;
    (
        shown["id"].as_i64().unwrap(),
        hidden["id"].as_i64().unwrap(),
    )
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn location(response: &reqwest::Response) -> String {
    response.headers()[LOCATION].to_str().unwrap().to_owned()
}

/// The `name=value` of the cookie a response sets.
fn cookie(response: &reqwest::Response) -> String {
    let header = response.headers()[SET_COOKIE].to_str().unwrap();
    header.split(';').next().unwrap().to_owned()
}

/// Starts signing in with GitHub: the anonymous session's cookie and where GitHub sends the
/// browser back, with `login` signed in to GitHub.
async fn to_github_and_back(harness: &Harness, base: &str, login: &str) -> (String, String) {
    harness.github.sign_in_browser_as(login);
    let http = client();
    let start = http
        .get(format!("{base}/signin/github?next=/tasks"))
        .send()
        .await
        .unwrap();
    assert_eq!(start.status(), StatusCode::SEE_OTHER);
    let to_github = location(&start);
    assert!(
        to_github.starts_with(&format!(
            "{}/login/oauth/authorize?client_id={CLIENT_ID}",
            harness.github.url
        )),
        "{to_github}"
    );
    let back = http.get(&to_github).send().await.unwrap();
    assert_eq!(back.status(), StatusCode::FOUND);
    (cookie(&start), location(&back))
}

/// Follows the whole sign-in as a browser would: the signed-in session's cookie.
async fn sign_in_as(harness: &Harness, base: &str, login: &str) -> String {
    let (anonymous, callback) = to_github_and_back(harness, base, login).await;
    assert!(
        callback.starts_with(&format!("{base}/auth/callback?code=")),
        "{callback}"
    );
    let done = client()
        .get(&callback)
        .header(COOKIE, anonymous)
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&done), "/tasks");
    cookie(&done)
}

async fn get(base: &str, path: &str, session: &str) -> (StatusCode, String) {
    let response = client()
        .get(format!("{base}{path}"))
        .header(COOKIE, session)
        .send()
        .await
        .unwrap();
    (response.status(), response.text().await.unwrap())
}

async fn post(base: &str, path: &str, session: &str, csrf: &str) -> StatusCode {
    client()
        .post(format!("{base}{path}"))
        .header(COOKIE, session)
        .form(&[("csrf", csrf)])
        .send()
        .await
        .unwrap()
        .status()
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn a_person_sees_the_repositories_they_can_read_and_controls_those_they_administer(
    pool: PgPool,
) {
    let (harness, base) = start(pool).await;
    let (shown, hidden) = a_task_in_each_repository(&harness).await;
    let pause = format!("/repositories/{OWNER}/{REPO}/pause");

    let reader = sign_in_as(&harness, &base, READER).await;
    let (status, board) = get(&base, "/tasks", &reader).await;
    assert_eq!(status, StatusCode::OK);
    assert!(board.contains("Fix the widget"), "{board}");
    assert!(board.contains(&format!("Sign out ({READER})")), "{board}");
    assert!(!board.contains("Rotate the keys"), "{board}");
    assert!(!board.contains("acme/secret"), "{board}");
    assert_eq!(
        get(&base, &format!("/tasks/{shown}"), &reader).await.0,
        StatusCode::OK
    );
    let (status, page) = get(&base, &format!("/tasks/{hidden}"), &reader).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{page}");
    assert!(!page.contains("Rotate the keys"));

    let (status, repositories) = get(&base, "/repositories", &reader).await;
    assert_eq!(status, StatusCode::OK);
    assert!(repositories.contains("acme/widgets"), "{repositories}");
    assert!(!repositories.contains("acme/secret"), "{repositories}");
    assert!(
        !repositories.contains("Pause acme/widgets"),
        "{repositories}"
    );
    let token = csrf_field(&repositories);
    assert_eq!(
        post(&base, &pause, &reader, &token).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        post(
            &base,
            &format!("/repositories/{OWNER}/{HIDDEN}/pause"),
            &reader,
            &token
        )
        .await,
        StatusCode::NOT_FOUND
    );
    assert!(!harness.repo_paused().await, "a reader paused nothing");

    let admin = sign_in_as(&harness, &base, ADMIN).await;
    let (_, repositories) = get(&base, "/repositories", &admin).await;
    assert!(
        repositories.contains("Pause acme/widgets"),
        "{repositories}"
    );
    assert!(!repositories.contains("acme/secret"), "{repositories}");
    let token = csrf_field(&repositories);
    assert_eq!(
        post(&base, &pause, &admin, &token).await,
        StatusCode::SEE_OTHER
    );
    assert!(harness.repo_paused().await);

    // An account GitHub gives nothing on either repository sees an empty board.
    harness.github.sign_in_browser_as("mallory");
    let outsider = sign_in_as(&harness, &base, "mallory").await;
    let (status, board) = get(&base, "/tasks", &outsider).await;
    assert_eq!(status, StatusCode::OK);
    assert!(!board.contains("Fix the widget") && !board.contains("Rotate the keys"));
    assert_eq!(
        get(&base, &format!("/tasks/{shown}"), &outsider).await.0,
        StatusCode::NOT_FOUND
    );
}

/// Follows GitHub's redirect back with the browser's cookie.
async fn follow(http: &reqwest::Client, url: &str, cookie: &str) -> reqwest::Response {
    http.get(url).header(COOKIE, cookie).send().await.unwrap()
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn a_sign_in_that_did_not_start_in_this_browser_or_that_github_refused_signs_no_one_in(
    pool: PgPool,
) {
    let (harness, base) = start(pool).await;
    let http = client();
    let signed_in = |response: &reqwest::Response| {
        response
            .headers()
            .get(SET_COOKIE)
            .is_some_and(|cookie| !cookie.to_str().unwrap().contains("Max-Age=0"))
    };

    // GitHub's answer without the session that asked for it: another site sent it.
    let (anonymous, callback) = to_github_and_back(&harness, &base, READER).await;
    let response = http.get(&callback).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert!(!signed_in(&response));
    // With the session, but a state it was not sent with.
    let forged = callback.replace("state=", "state=x");
    let response = follow(&http, &forged, &anonymous).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    // The real answer signs in; the same code a second time is refused by GitHub.
    let response = follow(&http, &callback, &anonymous).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let replayed = follow(&http, &callback, &anonymous).await;
    assert_eq!(replayed.status(), StatusCode::UNAUTHORIZED);
    assert!(!signed_in(&replayed));
    assert!(
        replayed
            .text()
            .await
            .unwrap()
            .contains("bad_verification_code")
    );

    // A code left unused past GitHub's ten minutes.
    let (anonymous, callback) = to_github_and_back(&harness, &base, READER).await;
    harness.github.expire_oauth_codes();
    let response = follow(&http, &callback, &anonymous).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    // The person cancels on GitHub.
    harness.github.deny_authorization();
    let http_start = http
        .get(format!("{base}/signin/github"))
        .send()
        .await
        .unwrap();
    let anonymous = cookie(&http_start);
    let back = http.get(location(&http_start)).send().await.unwrap();
    let callback = location(&back);
    assert!(callback.contains("error=access_denied"), "{callback}");
    let response = follow(&http, &callback, &anonymous).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(!signed_in(&response));
    assert!(
        response
            .text()
            .await
            .unwrap()
            .contains("The user has denied your application access.")
    );
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn without_an_oauth_client_only_the_operator_token_signs_in(pool: PgPool) {
    let (harness, base) = Harness::start_public(pool, |config| config.workers = 0).await;
    let http = client();
    let form = http.get(format!("{base}/signin")).send().await.unwrap();
    assert_eq!(form.status(), StatusCode::OK);
    let form = form.text().await.unwrap();
    assert!(!form.contains("Sign in with GitHub"), "{form}");
    assert!(form.contains("Operator token"));
    let start = http
        .get(format!("{base}/signin/github"))
        .send()
        .await
        .unwrap();
    assert_eq!(start.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(start.text().await.unwrap().contains("GITHUB_CLIENT_ID"));
    assert!(
        harness
            .github
            .calls("GET", "/login/oauth/authorize")
            .is_empty()
    );
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn a_person_signs_in_with_github_in_a_browser(pool: PgPool) {
    let (harness, base) = start(pool).await;
    a_task_in_each_repository(&harness).await;
    harness.github.sign_in_browser_as(READER);
    let browser = Browser::start().await;
    browser.client.goto(&format!("{base}/tasks")).await.unwrap();
    browser.wait_for_path("/signin").await;
    browser
        .client
        .find(Locator::Id("github"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser.wait_for_path("/tasks").await;
    let board = browser.text_of("main").await;
    assert!(board.contains("Fix the widget"), "{board}");
    assert!(!board.contains("Rotate the keys"), "{board}");
    let signed_in_as = browser.text_of("form[action='/signout'] button").await;
    assert_eq!(signed_in_as, format!("Sign out ({READER})"));
    browser.close().await;
}
