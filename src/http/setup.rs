//! The operator's first pages: `/` says where the installation stands and what to do next;
//! `/setup` and `/setup/callback` create the GitHub App from `app-manifest.json`.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chacha20poly1305::aead::OsRng;
use chacha20poly1305::aead::rand_core::RngCore;
use maud::{Markup, html};
use secrecy::ExposeSecret;
use serde::Deserialize;

use super::AppState;
use super::pages::layout::page;
use crate::github::credentials::{Current, Source, Sourced};
use crate::github::manifest::{self as conversion, CreatedApp};
use crate::github::oauth::OAuthClient;
use crate::github::{AppCredentials, GitHubError};
use crate::installations;
use crate::scheduler::leases::{self, ProcessHealth};
use crate::setup::{manifest, store};

/// Everything `/` shows, read before rendering.
struct Standing {
    database: bool,
    credentials: Current,
    registered: Option<store::Registered>,
    installations: i64,
    workers: Vec<ProcessHealth>,
    public_url: String,
}

impl Standing {
    async fn read(state: &AppState) -> Self {
        let credentials = state.credentials.current();
        let public_url = state.setup.public_url.clone();
        let database = sqlx::query("SELECT 1").execute(&state.pool).await.is_ok();
        let mut standing = Standing {
            database,
            credentials,
            registered: None,
            installations: 0,
            workers: Vec::new(),
            public_url,
        };
        if !database {
            return standing;
        }
        let (registered, installations, workers) = tokio::join!(
            store::registered(&state.pool),
            installations::active_count(&state.pool),
            leases::processes(&state.pool),
        );
        match (registered, installations, workers) {
            (Ok(registered), Ok(installations), Ok(workers)) => {
                standing.registered = registered;
                standing.installations = installations;
                standing.workers = workers;
            }
            _ => standing.database = false,
        }
        standing
    }

    /// The install page of the App made at set-up, when it is the App in use.
    fn install_url(&self) -> Option<String> {
        let app = self.credentials.app.as_ref()?;
        let registered = self.registered.as_ref()?;
        (app.source == Source::Setup).then(|| {
            format!(
                "{}/installations/new",
                registered.html_url.trim_end_matches('/')
            )
        })
    }
}

pub async fn status(State(state): State<AppState>) -> Markup {
    let standing = Standing::read(&state).await;
    page(
        "Status",
        None,
        html! {
            h1 { "Conveyor" }
            section aria-labelledby="next" {
                h2 id="next" { "Next step" }
                (next_step(&standing))
            }
            section aria-labelledby="standing" {
                h2 id="standing" { "Where this installation stands" }
                table {
                    tbody {
                        tr {
                            th scope="row" { "Database" }
                            td { (check(standing.database, "reachable", "unreachable: check DATABASE_URL")) }
                        }
                        tr {
                            th scope="row" { "GitHub App" }
                            td { (app_line(&standing)) }
                        }
                        tr {
                            th scope="row" { "Webhook secret" }
                            td {
                                @match &standing.credentials.webhook_secret {
                                    Some(secret) => (check(true, &format!("present, {}", source_text(secret.source, "GITHUB_WEBHOOK_SECRET")), "")),
                                    None => (check(false, "", "missing: every webhook is refused")),
                                }
                            }
                        }
                        tr {
                            th scope="row" { "Public URL" }
                            td {
                                code { (standing.public_url) }
                                @if is_local(&standing.public_url) {
                                    br;
                                    "GitHub cannot reach this address: set " code { "CONVEYOR_PUBLIC_URL" } " to where GitHub can send webhooks."
                                }
                            }
                        }
                        tr {
                            th scope="row" { "Installations" }
                            td { (standing.installations) " active" }
                        }
                    }
                }
            }
            section aria-labelledby="workers" {
                h2 id="workers" { "Workers" }
                (workers(&standing.workers))
            }
        },
    )
}

fn check(ok: bool, good: &str, bad: &str) -> Markup {
    html! {
        @if ok { span class="ok" { "✓ " (good) } } @else { span class="missing" { "✗ " (bad) } }
    }
}

fn source_text(source: Source, variable: &str) -> String {
    match source {
        Source::Environment => format!("from the environment ({variable})"),
        Source::Setup => "from set-up".to_owned(),
    }
}

fn app_line(standing: &Standing) -> Markup {
    let Some(app) = &standing.credentials.app else {
        return check(false, "", "not configured");
    };
    let described = match (&app.source, &standing.registered) {
        (Source::Setup, Some(registered)) => html! {
            "created at set-up: " a href=(registered.html_url) { (registered.slug) } " (id " (registered.app_id) ")"
        },
        _ => html! { "id " (app.value.app_id()) ", " (source_text(app.source, "GITHUB_APP_ID")) },
    };
    html! { span class="ok" { "✓ " } (described) }
}

fn workers(workers: &[ProcessHealth]) -> Markup {
    if workers.is_empty() {
        return html! { p { "No worker process is running: tasks wait in the queue." } };
    }
    html! {
        table {
            thead {
                tr { th scope="col" { "Process" } th scope="col" { "Healthy sessions" } th scope="col" { "Last heartbeat" } }
            }
            tbody {
                @for worker in workers {
                    tr {
                        td { code { (worker.id) } }
                        td { (check(worker.healthy_sessions > 0, &format!("{} of {}", worker.healthy_sessions, worker.sessions), &format!("{} of {}", worker.healthy_sessions, worker.sessions))) }
                        td { (format!("{:.0}", worker.heartbeat_age_secs.max(0.0))) " s ago" }
                    }
                }
            }
        }
    }
}

fn next_step(standing: &Standing) -> Markup {
    if !standing.database {
        return html! { p { "Make Postgres reachable at " code { "DATABASE_URL" } "; nothing works without it." } };
    }
    if standing.credentials.app.is_none() {
        return html! {
            p { a class="button" href="/setup" { "Create the GitHub App" } }
            p { "GitHub makes it from Conveyor's manifest and hands its keys back here; nothing to copy by hand." }
        };
    }
    if standing.credentials.webhook_secret.is_none() {
        return html! { p { "Set " code { "GITHUB_WEBHOOK_SECRET" } " to the App's webhook secret and restart." } };
    }
    if standing.installations == 0 {
        return match standing.install_url() {
            Some(url) => {
                html! { p { a class="button" href=(url) { "Install the App" } " on the repositories it should work on." } }
            }
            None => {
                html! { p { "Install the App on the repositories it should work on, from its page on GitHub." } }
            }
        };
    }
    if !standing
        .workers
        .iter()
        .any(|worker| worker.healthy_sessions > 0)
    {
        return html! { p { "No healthy worker session: tasks wait until " code { "conveyor serve" } " or " code { "conveyor worker" } " runs where steps can run." } };
    }
    html! { p { "Ready: label an issue with " code { "conveyor" } " (or comment " code { "/conveyor run" } ") in a repository the App is installed on." } }
}

/// Whether `url` names this machine, which GitHub cannot send webhooks to.
fn is_local(url: &str) -> bool {
    let host = url.split_once("://").map_or(url, |(_, rest)| rest);
    ["localhost", "127.", "[::1]", "0.0.0.0"]
        .iter()
        .any(|local| host.starts_with(local))
}

#[derive(Deserialize)]
pub struct SetupQuery {
    org: Option<String>,
}

/// Starts GitHub's manifest flow: a form that posts the manifest to GitHub, with a `state`
/// the callback must bring back.
pub async fn start(State(state): State<AppState>, Query(query): Query<SetupQuery>) -> Response {
    let org = query.org.filter(|org| !org.is_empty());
    if let Some(org) = &org
        && !is_account_name(org)
    {
        return problem(
            StatusCode::BAD_REQUEST,
            "Not an organization name",
            "An organization name is letters, digits and single hyphens, at most 39 characters.",
        );
    }
    let flow = random_state();
    if let Err(err) = store::start_flow(&state.pool, &flow).await {
        tracing::warn!(error = %err, "set-up: storing the flow's state failed");
        return problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "Database unreachable",
            "The set-up could not be started: the database did not answer.",
        );
    }
    let web = state.github_web_url.trim_end_matches('/');
    let action = match &org {
        Some(org) => format!("{web}/organizations/{org}/settings/apps/new?state={flow}"),
        None => format!("{web}/settings/apps/new?state={flow}"),
    };
    let manifest = manifest::for_public_url(&state.setup.public_url);
    let configured = state.credentials.current().app;
    page("Create the GitHub App", None, html! {
        h1 { "Create the GitHub App" }
        @if let Some(app) = configured {
            p {
                @match app.source {
                    Source::Environment => "An App is configured in the environment (GITHUB_APP_ID); it stays in use while that is set.",
                    Source::Setup => "An App was already created here; a new one replaces it.",
                }
            }
        }
        p {
            "GitHub will show the App Conveyor asks for, owned by "
            @match &org { Some(org) => { "the organization " strong { (org) } }, None => "your account" }
            ", with its webhook at " code { (manifest["hook_attributes"]["url"].as_str().unwrap_or_default()) }
            ". You can rename it there; GitHub then sends you back here."
        }
        form method="post" action=(action) {
            input type="hidden" name="manifest" value=(manifest.to_string());
            button type="submit" { "Create the App on GitHub" }
        }
        form method="get" action="/setup" {
            p {
                label for="org" { "Or for an organization (its login):" }
                " "
                input id="org" name="org" type="text" autocomplete="off" value=(org.as_deref().unwrap_or_default());
                " "
                button type="submit" { "Use this organization" }
            }
        }
        p { a href="/" { "Back to the status page" } }
    })
    .into_response()
}

#[derive(Deserialize)]
pub struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
}

/// GitHub sends the person back here with a code: exchanged for the App, whose keys are
/// stored sealed and used from now on.
pub async fn callback(
    State(state): State<AppState>,
    Query(query): Query<CallbackQuery>,
) -> Response {
    let (Some(code), Some(flow)) = (query.code, query.state) else {
        return problem(
            StatusCode::BAD_REQUEST,
            "Missing code or state",
            "GitHub sends a code and the state of the set-up back here; this request has neither both. Start again from /setup.",
        );
    };
    match store::finish_flow(&state.pool, &flow).await {
        Ok(true) => {}
        Ok(false) => {
            tracing::warn!("set-up callback refused: unknown or expired state");
            return problem(
                StatusCode::BAD_REQUEST,
                "Unknown set-up",
                "This set-up was not started here, was already finished, or is more than an hour old. Start again from /setup.",
            );
        }
        Err(err) => {
            tracing::warn!(error = %err, "set-up: reading the flow's state failed");
            return problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "Database unreachable",
                "The database did not answer; nothing was stored.",
            );
        }
    }
    if !conversion::is_well_formed_code(&code) {
        return problem(
            StatusCode::BAD_REQUEST,
            "Not a code from GitHub",
            "The code is not one GitHub hands out. Start again from /setup.",
        );
    }
    let app = match conversion::convert(&state.setup.api_url, &code).await {
        Ok(app) => app,
        Err(err @ (GitHubError::NotFound { .. } | GitHubError::Unprocessable { .. })) => {
            tracing::warn!(error = %err, "set-up: GitHub refused the code");
            return problem(
                StatusCode::BAD_REQUEST,
                "GitHub refused the code",
                "The code is unknown, already used or expired (GitHub keeps it for an hour). Nothing was stored. Start again from /setup.",
            );
        }
        Err(err) => {
            tracing::warn!(error = %err, "set-up: exchanging the code failed");
            return problem(
                StatusCode::BAD_GATEWAY,
                "GitHub did not answer",
                &format!(
                    "Exchanging the code failed ({err}); nothing was stored. Start again from /setup."
                ),
            );
        }
    };
    match keep(&state, &app).await {
        Ok(()) => {}
        Err(err) => {
            tracing::error!(error = %format!("{err:#}"), "set-up: keeping the App failed");
            return problem(
                StatusCode::INTERNAL_SERVER_ERROR,
                "The App could not be kept",
                &format!(
                    "GitHub made the App {}, but it could not be stored: {err:#}. Delete it on GitHub and start again from /setup.",
                    app.slug
                ),
            );
        }
    }
    tracing::info!(app_id = app.id, slug = %app.slug, "GitHub App created at set-up");
    let environment_wins = state
        .credentials
        .current()
        .app
        .is_some_and(|app| app.source == Source::Environment);
    let install = format!("{}/installations/new", app.html_url.trim_end_matches('/'));
    page("App created", None, html! {
        h1 { "The App " (app.slug) " is created" }
        @if environment_wins {
            p { "GITHUB_APP_ID is set: the environment's App stays in use until it is unset." }
        }
        p { "Its keys are stored sealed in the database. Next, install it on the repositories it should work on." }
        p { a class="button" href=(install) { "Install the App" } }
        p { a href="/" { "Back to the status page" } }
    })
    .into_response()
}

/// Checks the App's key, stores the App and puts it in use, in that order: a key that does
/// not parse stores nothing.
async fn keep(state: &AppState, app: &CreatedApp) -> anyhow::Result<()> {
    let credentials = AppCredentials::new(
        app.id.to_string(),
        app.pem.expose_secret(),
        "the key GitHub made",
    )?;
    let key = state.setup.sealing_key()?;
    store::save(&state.pool, &key, app).await?;
    state.credentials.adopt_setup(Current {
        app: Some(Sourced::new(credentials, Source::Setup)),
        webhook_secret: Some(Sourced::new(app.webhook_secret.clone(), Source::Setup)),
        oauth: Some(Sourced::new(
            OAuthClient {
                client_id: app.client_id.clone(),
                client_secret: app.client_secret.clone(),
            },
            Source::Setup,
        )),
    });
    Ok(())
}

fn random_state() -> String {
    let mut bytes = [0; 32];
    OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// A GitHub login: alphanumerics and inner single hyphens, at most 39 characters.
fn is_account_name(name: &str) -> bool {
    name.len() <= 39
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--")
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

fn problem(status: StatusCode, title: &str, message: &str) -> Response {
    let body = page(
        title,
        None,
        html! {
            h1 { (title) }
            p { (message) }
            p { a href="/setup" { "Start the set-up again" } " · " a href="/" { "Status page" } }
        },
    );
    (status, body).into_response()
}
