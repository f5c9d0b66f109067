//! The operator's pages: in headless Chromium (Debian's `chromium` and `chromium-driver`,
//! driven over WebDriver) for what a person sees and clicks — the board, a run's live log,
//! the repositories' controls — and over plain HTTP for who may see them and CSRF.

#[path = "support/browser.rs"]
mod browser;
mod support;

use std::path::PathBuf;
use std::time::Duration;

use browser::Browser;
use chrono::{DateTime, Utc};
use conveyor::engine::TaskState;
use fantoccini::Locator;
use reqwest::StatusCode;
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use sqlx::PgPool;
use support::{API_TOKEN, Harness, OWNER, REPO, csrf_field, payloads, wait_until};

const REQUESTER: &str = "alice";

async fn labelled(harness: &Harness, number: i64, title: &str) -> i64 {
    harness.add_repo_with_pipeline();
    harness
        .label(&format!("label-{number}"), number, title)
        .await
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn the_board_shows_a_labelled_issues_task_with_its_github_link(pool: PgPool) {
    let harness = Harness::start_idle(pool).await;
    let task_id = labelled(&harness, 42, "Fix the widget").await;
    let base = harness.listen().await;
    let browser = Browser::start().await;
    browser.sign_in_to(&base, "/tasks").await;

    let card = format!("#column-ready + ul article:has(a[href='/tasks/{task_id}'])");
    let card = browser.client.find(Locator::Css(&card)).await.unwrap();
    let text = card.text().await.unwrap();
    assert!(text.contains("Fix the widget"), "{text}");
    assert!(text.contains("acme/widgets"), "{text}");
    let issue = card
        .find(Locator::LinkText("Issue #42 on GitHub"))
        .await
        .unwrap();
    assert_eq!(
        issue.attr("href").await.unwrap().as_deref(),
        Some(format!("{}/acme/widgets/issues/42", harness.github.url).as_str())
    );

    // The label filter, as a person uses it.
    let label = browser.client.find(Locator::Id("label")).await.unwrap();
    label.send_keys("not-this-one").await.unwrap();
    browser
        .client
        .find(Locator::Css("form.filters button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_until("the filtered board", || async {
        let url = browser.client.current_url().await.unwrap();
        url.query()
            .is_some_and(|query| query.contains("label=not-this-one"))
            .then_some(())
    })
    .await;
    assert_eq!(browser.text_of("#column-ready").await, "ready (0)");
    browser.close().await;
}

/// The work tree of the run whose step created `marker`.
async fn waiting_workspace(harness: &Harness, marker: &str) -> PathBuf {
    wait_until(&format!("a step waiting with {marker}"), || async {
        harness
            .workspaces_left()
            .into_iter()
            .map(|run| run.join("repo"))
            .find(|repo| repo.join(marker).exists())
    })
    .await
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn a_run_page_shows_a_log_line_within_a_second_of_the_step_printing_it(pool: PgPool) {
    let harness = Harness::start(pool).await;
    let pipeline = "pipelines:\n  default:\n    steps:\n      - name: talk\n        run: echo first line; touch waiting; while [ ! -f go ]; do sleep 0.05; done; echo after release\n";
    let task_id = label_with(&harness, pipeline).await;
    let workspace = waiting_workspace(&harness, "waiting").await;
    let run_id = latest_run(&harness, task_id).await;
    let base = harness.listen().await;
    let browser = Browser::start().await;
    browser.sign_in_to(&base, &format!("/runs/{run_id}")).await;
    wait_until("the first line on the page", || async {
        browser
            .text_of("#log")
            .await
            .contains("talk │ first line")
            .then_some(())
    })
    .await;

    std::fs::write(workspace.join("go"), "").unwrap();
    let seen: DateTime<Utc> = wait_until("the line after the wait on the page", || async {
        browser
            .text_of("#log")
            .await
            .contains("talk │ after release")
            .then(Utc::now)
    })
    .await;
    let printed: DateTime<Utc> =
        sqlx::query_scalar("SELECT ts FROM run_logs WHERE run_id = $1 AND line = 'after release'")
            .bind(run_id)
            .fetch_one(&harness.pool)
            .await
            .unwrap();
    let late = (seen - printed).to_std().unwrap_or_default();
    assert!(late < Duration::from_secs(1), "the line took {late:?}");

    assert!(harness.final_state(task_id).await.is_final());
    wait_until("the page told the run is over", || async {
        browser
            .text_of("#live")
            .await
            .contains("reload the page for its results")
            .then_some(())
    })
    .await;
    let log = browser.text_of("#log").await;
    assert_eq!(log.matches("after release").count(), 1, "{log}");
    browser.close().await;
}

/// The `name=value` of a `Set-Cookie`, and the whole header to look at its attributes.
fn cookie(response: &reqwest::Response) -> (String, String) {
    let header = response
        .headers()
        .get(SET_COOKIE)
        .expect("a cookie is set")
        .to_str()
        .unwrap()
        .to_owned();
    (header.split(';').next().unwrap().to_owned(), header)
}

/// The value of the first hidden `csrf` field of a page.
#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn pages_need_a_session_or_the_token_and_forms_their_sessions_csrf_token(pool: PgPool) {
    let harness = Harness::start_idle(pool).await;
    labelled(&harness, 42, "Fix the widget").await;
    let base = harness.listen().await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let pause = format!("{base}/repositories/{OWNER}/{REPO}/pause");

    for (path, next) in [
        ("/tasks", "%2Ftasks"),
        ("/runs/1?x=1", "%2Fruns%2F1%3Fx%3D1"),
        ("/repositories", "%2Frepositories"),
    ] {
        let response = http.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::SEE_OTHER, "{path}");
        assert_eq!(
            response.headers()[LOCATION],
            format!("/signin?next={next}").as_str()
        );
    }
    let response = http
        .post(&pause)
        .form(&[("csrf", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert!(!harness.repo_paused().await);

    // The sign-in form opens an anonymous session whose token it carries.
    let form = http.get(format!("{base}/signin")).send().await.unwrap();
    assert_eq!(form.status(), StatusCode::OK);
    let (anonymous, header) = cookie(&form);
    assert!(
        header.contains("HttpOnly") && header.contains("SameSite=Lax"),
        "{header}"
    );
    let anonymous_csrf = csrf_field(&form.text().await.unwrap());
    let sign_in = |fields: Vec<(&'static str, String)>, cookie: Option<String>| {
        let mut request = http.post(format!("{base}/signin")).form(&fields);
        if let Some(cookie) = cookie {
            request = request.header(COOKIE, cookie);
        }
        request.send()
    };
    let token = || ("token", API_TOKEN.to_owned());
    let refused = sign_in(vec![token()], Some(anonymous.clone()))
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let refused = sign_in(vec![token(), ("csrf", anonymous_csrf.clone())], None)
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let wrong = sign_in(
        vec![("token", "wrong".into()), ("csrf", anonymous_csrf.clone())],
        Some(anonymous.clone()),
    )
    .await
    .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert!(wrong.headers().get(SET_COOKIE).is_none());
    let signed_in = sign_in(
        vec![
            token(),
            ("csrf", anonymous_csrf.clone()),
            ("next", "/repositories".into()),
        ],
        Some(anonymous.clone()),
    )
    .await
    .unwrap();
    assert_eq!(signed_in.status(), StatusCode::SEE_OTHER);
    assert_eq!(signed_in.headers()[LOCATION], "/repositories");
    let (session, header) = cookie(&signed_in);
    assert!(
        header.contains("HttpOnly") && header.contains("SameSite=Lax"),
        "{header}"
    );

    let page = http
        .get(format!("{base}/repositories"))
        .header(COOKIE, &session)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let session_csrf = csrf_field(&page.text().await.unwrap());
    assert_ne!(session_csrf, anonymous_csrf, "signing in gives a new token");

    // A form without the session's token, or with another session's, changes nothing.
    for fields in [vec![], vec![("csrf", anonymous_csrf.as_str())]] {
        let response = http
            .post(&pause)
            .header(COOKIE, &session)
            .form(&fields)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{fields:?}");
        assert!(!harness.repo_paused().await);
    }
    let response = http
        .post(&pause)
        .header(COOKIE, &session)
        .form(&[("csrf", session_csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert!(harness.repo_paused().await);

    // Signing out needs the token too, and ends the session in the browser.
    let signout = format!("{base}/signout");
    let response = http
        .post(&signout)
        .header(COOKIE, &session)
        .form(&[("csrf", "")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let response = http
        .post(&signout)
        .header(COOKIE, &session)
        .form(&[("csrf", session_csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert!(cookie(&response).1.contains("Max-Age=0"));

    // A cookie changed by hand is no session.
    let (name, value) = session.split_once('=').unwrap();
    let tampered = format!("{name}=x{value}");
    let response = http
        .get(format!("{base}/tasks"))
        .header(COOKIE, tampered)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);

    // Scripts send the token itself, and need no CSRF token.
    let bearer = |request: reqwest::RequestBuilder, token: &str| {
        request
            .header("authorization", format!("Bearer {token}"))
            .send()
    };
    let board = bearer(http.get(format!("{base}/tasks")), API_TOKEN)
        .await
        .unwrap();
    assert_eq!(board.status(), StatusCode::OK);
    assert!(board.text().await.unwrap().contains("Fix the widget"));
    let wrong = bearer(http.get(format!("{base}/tasks")), "wrong")
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let resumed = bearer(
        http.post(format!("{base}/repositories/{OWNER}/{REPO}/resume"))
            .form(&[("unused", "")]),
        API_TOKEN,
    )
    .await
    .unwrap();
    assert_eq!(resumed.status(), StatusCode::SEE_OTHER);
    assert!(!harness.repo_paused().await);
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn a_repository_is_paused_and_resumed_from_its_page(pool: PgPool) {
    let harness = Harness::start_idle(pool).await;
    let task_id = labelled(&harness, 42, "Fix the widget").await;
    let base = harness.listen().await;
    let browser = Browser::start().await;
    browser.sign_in_to(&base, "/repositories").await;
    let text = browser.text_of("article.card").await;
    assert!(
        text.contains("acme/widgets") && text.contains("running"),
        "{text}"
    );

    for (button, state, paused_after) in [
        ("Pause acme/widgets", "paused", true),
        ("Resume acme/widgets", "running", false),
    ] {
        browser
            .client
            .find(Locator::Css(&format!("button[aria-label='{button}']")))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        wait_until(&format!("the page shows {state}"), || async {
            browser
                .text_of("article.card h2 .state")
                .await
                .eq(state)
                .then_some(())
        })
        .await;
        assert_eq!(harness.repo_paused().await, paused_after, "{button}");
    }
    assert_eq!(harness.state(task_id).await, TaskState::Queued);
    browser.close().await;
}

/// A page as a script reads it, with the operator token.
async fn page(harness: &Harness, path: &str) -> String {
    let (status, body) = harness.api("GET", path, Some(API_TOKEN)).await;
    assert_eq!(status, StatusCode::OK, "{path}: {body}");
    body.as_str().expect("an HTML page").to_owned()
}

/// Labels issue 7 as the requester in a repository holding `pipeline`; the task it creates.
async fn label_with(harness: &Harness, pipeline: &str) -> i64 {
    harness.add_repo(&[
        (".github/conveyor.yml", pipeline),
        ("scripts/do-the-work.sh", support::WORK_SCRIPT),
        ("README.md", "# widgets\n"),
    ]);
    harness
        .github
        .set_permission(OWNER, REPO, REQUESTER, "write");
    let body = payloads::labeled_issue_by(7, "Add release notes", "conveyor", REQUESTER, "User");
    let (status, _) = harness.post_signed("issues", "label-7", &body).await;
    assert_eq!(status, 202);
    assert_eq!(harness.request_outcome("label-7").await, "task_created");
    harness.task_ids().await[0]
}

async fn latest_run(harness: &Harness, task_id: i64) -> i64 {
    sqlx::query_scalar("SELECT max(id) FROM runs WHERE task_id = $1")
        .bind(task_id)
        .fetch_one(&harness.pool)
        .await
        .unwrap()
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn a_parked_run_shows_who_may_approve_its_changes_and_its_steps(pool: PgPool) {
    let harness = Harness::start(pool).await;
    let gated = "pipelines:
  default:
    steps:
      - name: implement
        run: ./scripts/do-the-work.sh
      - name: review
        approval:
          message: Check the notes before the pull request opens
";
    let task_id = label_with(&harness, gated).await;
    harness.reach(task_id, TaskState::AwaitingApproval).await;
    let run_id = latest_run(&harness, task_id).await;

    let run = page(&harness, &format!("/runs/{run_id}")).await;
    for expected in [
        "Waiting for approval",
        "Check the notes before the pull request opens",
        "anyone with write permission or more, except @alice who started the run",
        "/conveyor approve",
        "<strong>implement</strong> passed",
        "<code>NOTES.md</code></td><td>added</td><td>+1 −0",
        "+Add release notes",
        "implement │ implemented issue 7",
    ] {
        assert!(run.contains(expected), "{expected} in {run}");
    }
    assert!(!run.contains("EventSource"), "a parked run is not followed");
    assert!(!run.contains("<button"), "approval stays on GitHub: {run}");

    let board = page(&harness, "/tasks").await;
    assert!(
        board.contains("Waiting: </strong>for an approval on GitHub"),
        "{board}"
    );
    let task = page(&harness, &format!("/tasks/{task_id}")).await;
    for expected in [
        format!("href=\"/runs/{run_id}\""),
        "run.awaiting_approval".to_owned(),
        "task.created".to_owned(),
        format!("{}/acme/widgets/issues/7", harness.github.url),
    ] {
        assert!(task.contains(&expected), "{expected} in {task}");
    }
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn a_failed_run_shows_its_typed_failure_with_what_to_do(pool: PgPool) {
    let harness = Harness::start(pool).await;
    let failing = "pipelines:
  default:
    steps:
      - name: implement
        run: echo implementing
      - name: check
        run: echo checking; exit 3
";
    let task_id = label_with(&harness, failing).await;
    assert_eq!(harness.final_state(task_id).await, TaskState::Failed);
    let run_id = latest_run(&harness, task_id).await;
    let remediation: String = sqlx::query_scalar("SELECT remediation FROM runs WHERE id = $1")
        .bind(run_id)
        .fetch_one(&harness.pool)
        .await
        .unwrap();
    let run = page(&harness, &format!("/runs/{run_id}")).await;
    for expected in [
        "<dt>Type</dt><dd><code>step_failed</code>",
        "<dt>Failed step</dt><dd>check</dd>",
        "<dt>Last step that passed</dt><dd>implement</dd>",
        "exit code 3",
        "check │ checking",
        &maud::html! { (remediation) }.into_string(),
    ] {
        assert!(run.contains(expected), "{expected} in {run}");
    }

    let board = page(&harness, "/tasks").await;
    assert!(
        board.contains("Blocked: </strong>its run failed"),
        "{board}"
    );
    let missing = harness.api("GET", "/runs/999", Some(API_TOKEN)).await;
    assert_eq!(missing.0, StatusCode::NOT_FOUND);
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn without_the_operator_token_the_pages_are_off(pool: PgPool) {
    let harness = Harness::start_without_app_or_token(pool).await;
    for path in ["/signin", "/tasks", "/repositories"] {
        let (status, body) = harness.api("GET", path, None).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{path}");
        assert!(
            body.as_str()
                .is_some_and(|page| page.contains("CONVEYOR_API_TOKEN")),
            "{path}: {body}"
        );
    }
}
