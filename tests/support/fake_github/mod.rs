//! A stateful fake of the parts of GitHub's REST API and git smart-HTTP
//! server that Conveyor talks to, one module per API area.
//!
//! The fake runs an axum server on `127.0.0.1:<random port>` on the current
//! tokio runtime. Bare repositories live in a temporary directory owned by the
//! [`FakeGitHub`] value and are served through `git http-backend`.
//!
//! Note: handlers are fully async (git is run through `tokio::process`), but
//! the server shares the test's runtime. A test that blocks a runtime thread
//! while waiting for the fake (e.g. `std::process::Command::new("git")` against
//! the fake's URL on a `current_thread` runtime) will deadlock; use
//! `tokio::process`, `spawn_blocking` or a `multi_thread` runtime.
#![allow(dead_code)]
// Validation helpers return ready-made error responses; their size is irrelevant here.
#![allow(clippy::result_large_err)]

mod apps;
mod checks;
mod contents;
mod faults;
mod git;
mod hooks;
mod issues;
mod manifests;
mod oauth;
mod pulls;
mod repos;
mod routes;
mod wire;

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use chrono::Utc;
use serde_json::Value;

// What tests use; each test binary uses part of it.
#[allow(unused_imports)]
pub use self::{
    apps::{APP_ID, private_key_pem},
    checks::{CheckRun, CheckRunAction},
    faults::{Hold, Injected, Outage},
    hooks::HookDelivery,
    issues::Comment,
    manifests::CreatedApp,
    oauth::{CLIENT_ID, CLIENT_SECRET},
    pulls::PullRequest,
    wire::account_id,
};

use apps::{InstallationRec, TokenRec, create_access_token};
use faults::{HoldRule, InjectionRule, OutageRule, route_matches, route_pattern};
use git::git_http;
use hooks::{DeliveryRec, FIRST_DELIVERY_ID, WebhookTarget, list_deliveries, redeliver};
use repos::RepoRec;
use routes::repos_api;
use wire::{gh_error, header_str, not_found};

const DOCS_URL: &str = "https://docs.github.com/rest";
/// The login of the App's bot account: the author of everything Conveyor posts.
pub const BOT_LOGIN: &str = "conveyor[bot]";
const BOT_USER_ID: u64 = 142_424_242;

/// One HTTP request received by the fake.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    pub method: String,
    /// Path plus `?query` when there was one.
    pub path: String,
    pub status: u16,
    pub authorization: Option<String>,
    /// The JSON body of a REST request (`None` for git traffic, an empty or non-JSON body).
    pub body: Option<Value>,
}

/// Handle to a running fake GitHub. The server stops when this is dropped.
pub struct FakeGitHub {
    /// `http://127.0.0.1:PORT`, no trailing slash.
    pub url: String,
    shared: Shared,
    server: tokio::task::JoinHandle<()>,
    root: PathBuf,
    _tempdir: tempfile::TempDir,
}

type Shared = Arc<Mutex<Inner>>;

struct Inner {
    base_url: String,
    root: PathBuf,
    installations: HashMap<i64, InstallationRec>,
    repos: Vec<RepoRec>,
    /// Lower-cased logins of the accounts tests made known (commenters, collaborators).
    users: BTreeSet<String>,
    tokens: HashMap<String, TokenRec>,
    issued: Vec<String>,
    token_ttl: Duration,
    requests: Vec<RecordedRequest>,
    next_id: u64,
    rate_used: u64,
    rate_reset: i64,
    injections: Vec<InjectionRule>,
    holds: Vec<HoldRule>,
    outages: Vec<OutageRule>,
    webhook_target: Option<WebhookTarget>,
    deliveries: Vec<DeliveryRec>,
    next_delivery_id: i64,
    redelivery_requests: Vec<i64>,
    manifests: manifests::Manifests,
    oauth: oauth::OAuth,
}

fn lock(shared: &Shared) -> MutexGuard<'_, Inner> {
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

impl Inner {
    fn alloc_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn repo_index(&self, owner: &str, name: &str) -> Option<usize> {
        self.repos
            .iter()
            .position(|r| r.owner.eq_ignore_ascii_case(owner) && r.name.eq_ignore_ascii_case(name))
    }

    fn repo(&self, owner: &str, name: &str) -> Option<&RepoRec> {
        self.repo_index(owner, name).map(|i| &self.repos[i])
    }

    fn git_dir(&self, owner: &str, name: &str) -> PathBuf {
        match self.repo(owner, name) {
            Some(r) => self.root.join(&r.owner).join(format!("{}.git", r.name)),
            None => self.root.join(owner).join(format!("{name}.git")),
        }
    }
}

impl FakeGitHub {
    /// Starts the fake on `127.0.0.1:0`, spawned on the current tokio runtime.
    pub async fn start() -> FakeGitHub {
        let tempdir = tempfile::tempdir().expect("create tempdir for fake GitHub");
        let root = tempdir.path().join("repos");
        std::fs::create_dir_all(&root).expect("create repo root");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake GitHub");
        let addr = listener.local_addr().expect("local addr");
        let url = format!("http://{addr}");
        let shared: Shared = Arc::new(Mutex::new(Inner {
            base_url: url.clone(),
            root: root.clone(),
            installations: HashMap::new(),
            repos: Vec::new(),
            users: BTreeSet::new(),
            tokens: HashMap::new(),
            issued: Vec::new(),
            token_ttl: Duration::from_secs(3600),
            requests: Vec::new(),
            next_id: 1_000_000,
            rate_used: 0,
            rate_reset: Utc::now().timestamp() + 3600,
            injections: Vec::new(),
            holds: Vec::new(),
            outages: Vec::new(),
            webhook_target: None,
            deliveries: Vec::new(),
            next_delivery_id: FIRST_DELIVERY_ID,
            redelivery_requests: Vec::new(),
            manifests: Default::default(),
            oauth: Default::default(),
        }));
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeGitHub {
            url,
            shared,
            server,
            root,
            _tempdir: tempdir,
        }
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.shared).requests.clone()
    }

    /// The requests so far whose method is `method` and whose path (query aside) matches
    /// `path`, where a `*` segment matches any one segment (as for [`FakeGitHub::inject`]),
    /// each with the status it was answered.
    pub fn calls(&self, method: &str, path: &str) -> Vec<RecordedRequest> {
        let pattern = route_pattern(path);
        lock(&self.shared)
            .requests
            .iter()
            .filter(|r| {
                let path = r.path.split_once('?').map_or(r.path.as_str(), |(p, _)| p);
                route_matches(method, &pattern, &r.method, path)
            })
            .cloned()
            .collect()
    }
}

impl Drop for FakeGitHub {
    fn drop(&mut self) {
        self.server.abort();
    }
}

// ---------------------------------------------------------------------------
// HTTP entry point
// ---------------------------------------------------------------------------

async fn handle(State(shared): State<Shared>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let path_q = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| parts.uri.path().to_string());
    let authorization = header_str(&parts.headers, &header::AUTHORIZATION).map(str::to_string);
    let body = axum::body::to_bytes(body, usize::MAX).await;

    let segs: Vec<String> = parts
        .uri
        .path()
        .trim_start_matches('/')
        .split('/')
        .map(str::to_string)
        .collect();
    let git_target = git_target(&segs);
    let is_git = git_target.is_some();
    let held = if is_git {
        None
    } else {
        lock(&shared).take_hold(parts.method.as_str(), parts.uri.path())
    };
    if let Some((arrived, release)) = held {
        arrived.notify_one();
        // Released, or the hold was dropped: either way, go on.
        let _ = release.await;
    }
    let injected = if is_git {
        None
    } else {
        let mut inner = lock(&shared);
        inner
            .outage_answer()
            .or_else(|| inner.take_injection(parts.method.as_str(), parts.uri.path()))
    };
    let recorded_body = match &body {
        Ok(bytes) if !is_git => serde_json::from_slice::<Value>(bytes).ok(),
        _ => None,
    };

    let mut resp = match (&injected, body) {
        (Some(injected), _) => injected.response(),
        (None, Err(_)) => gh_error(StatusCode::BAD_REQUEST, "Problems reading request body"),
        (None, Ok(body)) => match git_target {
            Some((owner, repo, rest)) => {
                git_http(&shared, &parts, body, &owner, &repo, &rest).await
            }
            None => {
                let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
                api(&shared, &parts, &segs, body).await
            }
        },
    };

    let mut inner = lock(&shared);
    if !is_git {
        inner.rate_used += 1;
        let h = resp.headers_mut();
        let mut put = |name: &'static str, value: String| {
            if let Ok(v) = HeaderValue::from_str(&value) {
                h.insert(HeaderName::from_static(name), v);
            }
        };
        let id = uuid::Uuid::new_v4().simple().to_string().to_uppercase();
        put(
            "x-github-request-id",
            format!(
                "{}:{}:{}:{}",
                &id[0..4],
                &id[4..10],
                &id[10..17],
                &id[17..24]
            ),
        );
        put("x-github-api-version-selected", "2022-11-28".to_string());
        put("x-ratelimit-limit", "5000".to_string());
        put(
            "x-ratelimit-remaining",
            5000u64.saturating_sub(inner.rate_used).to_string(),
        );
        put("x-ratelimit-reset", inner.rate_reset.to_string());
        put("x-ratelimit-used", inner.rate_used.to_string());
        put("x-ratelimit-resource", "core".to_string());
    }
    if let Some(injected) = &injected {
        injected.apply_headers(&mut resp);
    }
    inner.requests.push(RecordedRequest {
        method: parts.method.to_string(),
        path: path_q,
        status: resp.status().as_u16(),
        authorization,
        body: recorded_body,
    });
    resp
}

/// `(owner, repo-without-.git, rest)` when the path addresses a git repository.
fn git_target(segs: &[String]) -> Option<(String, String, String)> {
    if segs.len() < 3 || segs[0].is_empty() || segs[1].is_empty() {
        return None;
    }
    if segs[0] == "repos" || segs[0] == "app" {
        return None;
    }
    let rest = segs[2..].join("/");
    if let Some(repo) = segs[1].strip_suffix(".git") {
        if repo.is_empty() {
            return None;
        }
        return Some((segs[0].clone(), repo.to_string(), rest));
    }
    let smart = rest == "info/refs" || rest == "git-upload-pack" || rest == "git-receive-pack";
    smart.then(|| (segs[0].clone(), segs[1].clone(), rest))
}

async fn api(shared: &Shared, parts: &Parts, segs: &[&str], body: Bytes) -> Response {
    let auth = header_str(&parts.headers, &header::AUTHORIZATION);
    match segs {
        ["app", "installations", id, "access_tokens"] if parts.method == Method::POST => {
            create_access_token(shared, auth, id, &body)
        }
        ["app", "hook", "deliveries"] if parts.method == Method::GET => {
            list_deliveries(shared, parts, auth)
        }
        ["app", "hook", "deliveries", id, "attempts"] if parts.method == Method::POST => {
            redeliver(shared, auth, id)
        }
        ["settings", "apps", "new"] if parts.method == Method::POST => {
            manifests::new_app_from_form(shared, parts, None, &body)
        }
        ["organizations", org, "settings", "apps", "new"] if parts.method == Method::POST => {
            manifests::new_app_from_form(shared, parts, Some(org), &body)
        }
        ["app-manifests", code, "conversions"] if parts.method == Method::POST => {
            manifests::convert(shared, code)
        }
        ["login", "oauth", "authorize"] if parts.method == Method::GET => {
            oauth::authorize(shared, parts)
        }
        ["login", "oauth", "access_token"] if parts.method == Method::POST => {
            oauth::access_token(shared, parts, &body)
        }
        ["user"] if parts.method == Method::GET => oauth::user(shared, auth),
        ["repos", owner, repo, rest @ ..] => {
            repos_api(shared, parts, auth, owner, repo, rest, body).await
        }
        _ => not_found(),
    }
}
