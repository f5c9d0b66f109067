//! A stateful fake of the parts of GitHub's REST API and git smart-HTTP
//! server that Conveyor talks to.
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

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::process::Command as StdCommand;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use base64::Engine as _;
use chrono::{DateTime, SecondsFormat, Utc};
use hmac::{Hmac, Mac as _};
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::io::AsyncWriteExt as _;

/// The GitHub App id the fake expects as the JWT `iss` claim.
pub const APP_ID: u64 = 4242;

const PRIVATE_KEY_PEM: &str = include_str!("keys/app-private.pem");
const PUBLIC_KEY_PEM: &str = include_str!("keys/app-public.pem");

const DOCS_URL: &str = "https://docs.github.com/rest";
const BOT_LOGIN: &str = "conveyor[bot]";
const BOT_USER_ID: u64 = 142_424_242;
/// GitHub's limit for issue comment / pull request bodies.
const MAX_BODY_CHARS: usize = 65_536;
/// GitHub's limit for check run `output.summary` / `output.text`.
const MAX_CHECK_OUTPUT_CHARS: usize = 65_535;
/// GitHub's limit for issue and pull request titles.
const MAX_TITLE_CHARS: usize = 256;
/// GitHub documents no limit for a check run's `output.title`; the fake holds Conveyor to the
/// conservative bound it keeps (the one for issue titles), so an unbounded title shows up here.
const MAX_CHECK_TITLE_CHARS: usize = 256;
/// What `add_installation` grants: the permissions the App asks for when installed.
const DEFAULT_PERMISSIONS: &[(&str, &str)] = &[
    ("checks", "write"),
    ("contents", "write"),
    ("issues", "write"),
    ("metadata", "read"),
    ("pull_requests", "write"),
];
/// Permission levels, weakest first.
const ACCESS_LEVELS: &[&str] = &["read", "write", "admin"];
const FORBIDDEN_TO_INTEGRATION: &str = "Resource not accessible by integration";
const REPOSITORY_NOT_IN_INSTALLATION: &str = "There is at least one repository that does not exist or is not accessible to the parent installation.";
const PERMISSIONS_NOT_GRANTED: &str =
    "The permissions requested are not granted to this installation.";
const JWT_MAX_LIFETIME_SECS: i64 = 600;
const JWT_EXP_LEEWAY_SECS: i64 = 30;
const JWT_IAT_LEEWAY_SECS: i64 = 60;
/// Id of the App's webhook (`X-GitHub-Hook-ID`).
const APP_HOOK_ID: u64 = 471_203_958;
/// Delivery ids are allocated from here; real ones no longer fit in an `i32`.
const FIRST_DELIVERY_ID: i64 = 12_000_000_000;
const DELIVERIES_PER_PAGE_DEFAULT: usize = 30;
const DELIVERIES_PER_PAGE_MAX: usize = 100;
/// GitHub gives up on a webhook delivery after 10 seconds.
const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);

const CHECK_STATUSES: &[&str] = &[
    "queued",
    "in_progress",
    "completed",
    "waiting",
    "requested",
    "pending",
];
const CHECK_CONCLUSIONS: &[&str] = &[
    "action_required",
    "cancelled",
    "failure",
    "neutral",
    "success",
    "skipped",
    "stale",
    "timed_out",
];

/// The PEM (PKCS#1) private key of the fake GitHub App.
pub fn private_key_pem() -> &'static str {
    PRIVATE_KEY_PEM
}

/// An issue comment as stored by the fake.
#[derive(Clone, Debug)]
pub struct Comment {
    pub id: u64,
    pub body: String,
    /// Earlier bodies, oldest first.
    pub edits: Vec<String>,
    pub user_login: String,
}

/// A pull request as stored by the fake.
#[derive(Clone, Debug)]
pub struct PullRequest {
    pub number: u64,
    pub title: String,
    pub body: Option<String>,
    /// Head branch name (without the `owner:` prefix).
    pub head: String,
    pub base: String,
    pub state: String,
}

/// A check run as stored by the fake.
#[derive(Clone, Debug)]
pub struct CheckRun {
    pub id: u64,
    pub name: String,
    pub head_sha: String,
    pub status: String,
    pub conclusion: Option<String>,
    pub output_title: Option<String>,
    pub output_summary: Option<String>,
    pub output_text: Option<String>,
    pub details_url: Option<String>,
}

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

/// A canned response for [`FakeGitHub::inject`].
///
/// The body is sent as JSON with `content-type: application/json;
/// charset=utf-8`, except for `body: Value::Null` and statuses that cannot
/// carry a body (1xx, 204, 205, 304), which are sent with an empty body.
#[derive(Clone, Debug)]
pub struct Injected {
    pub status: u16,
    /// Extra response headers; they replace the fake's usual headers of the
    /// same name (e.g. `x-ratelimit-remaining`).
    pub headers: Vec<(String, String)>,
    pub body: Value,
}

impl Injected {
    /// A GitHub-style error response: `{"message": <reason phrase>,
    /// "documentation_url": "https://docs.github.com/rest"}`.
    ///
    /// Panics if `status` is not a valid HTTP status code.
    pub fn status(status: u16) -> Self {
        let code = StatusCode::from_u16(status)
            .unwrap_or_else(|_| panic!("Injected::status: invalid HTTP status {status}"));
        Injected {
            status,
            headers: Vec::new(),
            body: json!({
                "message": code.canonical_reason().unwrap_or("Error"),
                "documentation_url": DOCS_URL,
            }),
        }
    }

    /// Adds a response header (e.g. `retry-after`).
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// Replaces `message` in the body.
    pub fn with_message(mut self, message: &str) -> Self {
        match &mut self.body {
            Value::Object(map) => {
                map.insert("message".to_string(), Value::String(message.to_string()));
            }
            other => *other = json!({ "message": message }),
        }
        self
    }

    /// Checks everything that could make building the response fail, so that
    /// mistakes panic in the test rather than inside the server.
    fn validate(&self) {
        assert!(
            StatusCode::from_u16(self.status).is_ok(),
            "Injected: invalid HTTP status {}",
            self.status
        );
        for (name, value) in &self.headers {
            assert!(
                HeaderName::from_bytes(name.as_bytes()).is_ok(),
                "Injected: invalid header name {name:?}"
            );
            assert!(
                HeaderValue::from_str(value).is_ok(),
                "Injected: invalid value for header {name}: {value:?}"
            );
        }
    }

    fn response(&self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let bodyless = status.is_informational()
            || matches!(status.as_u16(), 204 | 205 | 304)
            || self.body.is_null();
        if bodyless {
            let mut resp = Response::new(Body::empty());
            *resp.status_mut() = status;
            resp
        } else {
            json_response(status, &self.body)
        }
    }

    /// Puts the injected headers on `resp`, replacing same-named ones.
    fn apply_headers(&self, resp: &mut Response) {
        let h = resp.headers_mut();
        let parsed: Vec<(HeaderName, HeaderValue)> = self
            .headers
            .iter()
            .filter_map(|(n, v)| {
                Some((
                    HeaderName::from_bytes(n.as_bytes()).ok()?,
                    HeaderValue::from_str(v).ok()?,
                ))
            })
            .collect();
        for (name, _) in &parsed {
            h.remove(name);
        }
        for (name, value) in parsed {
            h.append(name, value);
        }
    }
}

/// A delivery attempt of the App's webhook, as listed by
/// `GET /app/hook/deliveries`.
#[derive(Clone, Debug)]
pub struct HookDelivery {
    pub id: i64,
    pub guid: String,
    pub redelivery: bool,
    pub status: String,
    pub status_code: u16,
    pub event: String,
    pub action: Option<String>,
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
    tokens: HashMap<String, TokenRec>,
    issued: Vec<String>,
    token_ttl: Duration,
    requests: Vec<RecordedRequest>,
    next_id: u64,
    rate_used: u64,
    rate_reset: i64,
    injections: Vec<InjectionRule>,
    holds: Vec<HoldRule>,
    webhook_target: Option<WebhookTarget>,
    deliveries: Vec<DeliveryRec>,
    next_delivery_id: i64,
    redelivery_requests: Vec<i64>,
}

struct InjectionRule {
    method: String,
    /// Path segments; `*` matches any one non-empty segment.
    pattern: Vec<String>,
    responses: VecDeque<Injected>,
}

impl InjectionRule {
    fn matches(&self, method: &str, path: &str) -> bool {
        route_matches(&self.method, &self.pattern, method, path)
    }
}

/// Whether `method path` matches a rule's method and path segments (`*`: any one
/// non-empty segment).
fn route_matches(rule_method: &str, pattern: &[String], method: &str, path: &str) -> bool {
    if !rule_method.eq_ignore_ascii_case(method) {
        return false;
    }
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    segs.len() == pattern.len()
        && pattern
            .iter()
            .zip(&segs)
            .all(|(p, s)| if p == "*" { !s.is_empty() } else { p == s })
}

/// Parses a rule's path (query ignored) into segments.
fn route_pattern(path: &str) -> Vec<String> {
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    path.trim_start_matches('/')
        .split('/')
        .map(str::to_string)
        .collect()
}

/// One request to keep waiting, see [`FakeGitHub::hold`].
struct HoldRule {
    method: String,
    pattern: Vec<String>,
    arrived: Arc<tokio::sync::Notify>,
    release: tokio::sync::oneshot::Receiver<()>,
}

/// A request the fake keeps waiting before handling it, so that a test can make things
/// happen while a call to GitHub is in flight.
pub struct Hold {
    arrived: Arc<tokio::sync::Notify>,
    release: tokio::sync::oneshot::Sender<()>,
}

impl Hold {
    /// Waits until the request has arrived and is being held.
    pub async fn arrived(&self) {
        self.arrived.notified().await;
    }

    /// Lets the request through: it is handled now (dropping the hold does the same).
    pub fn release(self) {
        let _ = self.release.send(());
    }
}

#[derive(Clone)]
struct WebhookTarget {
    url: String,
    secret: String,
}

#[derive(Clone)]
struct DeliveryRec {
    id: i64,
    guid: String,
    delivered_at: DateTime<Utc>,
    redelivery: bool,
    duration: f64,
    status: String,
    status_code: u16,
    event: String,
    action: Option<String>,
    installation_id: Option<i64>,
    repository_id: Option<i64>,
    payload: Value,
}

struct InstallationRec {
    account: String,
    /// Permission name → `read` / `write` / `admin`.
    permissions: BTreeMap<String, String>,
}

/// What a token may reach: its installation's repositories (or the listed ones) with its
/// permissions.
#[derive(Clone)]
struct TokenScope {
    installation_id: i64,
    /// Repository ids; `None`: every repository of the installation.
    repositories: Option<Vec<u64>>,
    permissions: BTreeMap<String, String>,
}

impl TokenScope {
    fn reaches(&self, repo: &RepoRec) -> bool {
        repo.installation_id == self.installation_id
            && self
                .repositories
                .as_ref()
                .is_none_or(|ids| ids.contains(&repo.id))
    }

    /// Whether the token holds `permission` at `level` or above.
    fn allows(&self, permission: &str, level: &str) -> bool {
        let held = self
            .permissions
            .get(permission)
            .and_then(|h| access_rank(h));
        held.is_some_and(|held| Some(held) >= access_rank(level))
    }
}

fn access_rank(level: &str) -> Option<usize> {
    ACCESS_LEVELS.iter().position(|l| *l == level)
}

struct TokenRec {
    scope: TokenScope,
    expires_at: DateTime<Utc>,
}

struct RepoRec {
    id: u64,
    installation_id: i64,
    owner: String,
    name: String,
    next_number: u64,
    comments: Vec<CommentRec>,
    pulls: Vec<PullRec>,
    check_runs: Vec<CheckRunRec>,
    check_suites: HashMap<String, u64>,
}

struct CommentRec {
    id: u64,
    issue: u64,
    body: String,
    edits: Vec<String>,
    user_login: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

struct PullRec {
    id: u64,
    number: u64,
    title: String,
    body: Option<String>,
    head_ref: String,
    head_sha: String,
    base_ref: String,
    base_sha: String,
    state: String,
    draft: bool,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

struct CheckRunRec {
    id: u64,
    name: String,
    head_sha: String,
    status: String,
    conclusion: Option<String>,
    started_at: Option<DateTime<Utc>>,
    completed_at: Option<DateTime<Utc>>,
    details_url: Option<String>,
    external_id: Option<String>,
    output_title: Option<String>,
    output_summary: Option<String>,
    output_text: Option<String>,
    suite_id: u64,
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

    fn issue_token(&mut self, scope: TokenScope) -> (String, DateTime<Utc>) {
        let token = format!("ghs_{}", random_alnum(36));
        let ttl = chrono::Duration::from_std(self.token_ttl).unwrap_or(chrono::Duration::MAX);
        let expires_at = Utc::now()
            .checked_add_signed(ttl)
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        self.tokens
            .insert(token.clone(), TokenRec { scope, expires_at });
        self.issued.push(token.clone());
        (token, expires_at)
    }

    fn alloc_delivery_id(&mut self) -> i64 {
        let id = self.next_delivery_id;
        self.next_delivery_id += 1;
        id
    }

    /// Takes the hold on `method path`, if any: how to say it arrived, and when to go on.
    fn take_hold(
        &mut self,
        method: &str,
        path: &str,
    ) -> Option<(Arc<tokio::sync::Notify>, tokio::sync::oneshot::Receiver<()>)> {
        let pos = self
            .holds
            .iter()
            .position(|h| route_matches(&h.method, &h.pattern, method, path))?;
        let hold = self.holds.remove(pos);
        Some((hold.arrived, hold.release))
    }

    /// Pops the next injected response for `method path`, if any.
    fn take_injection(&mut self, method: &str, path: &str) -> Option<Injected> {
        let pos = self
            .injections
            .iter()
            .position(|r| r.matches(method, path))?;
        let injected = self.injections[pos].responses.pop_front();
        if self.injections[pos].responses.is_empty() {
            self.injections.remove(pos);
        }
        injected
    }

    /// What a currently valid installation token may reach.
    fn token_scope(&self, token: &str) -> Option<TokenScope> {
        let rec = self.tokens.get(token)?;
        (Utc::now() < rec.expires_at).then(|| rec.scope.clone())
    }

    /// A token of the whole installation, with everything it was granted.
    fn installation_scope(&self, installation_id: i64) -> TokenScope {
        TokenScope {
            installation_id,
            repositories: None,
            permissions: self
                .installations
                .get(&installation_id)
                .map(|i| i.permissions.clone())
                .unwrap_or_default(),
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
            tokens: HashMap::new(),
            issued: Vec::new(),
            token_ttl: Duration::from_secs(3600),
            requests: Vec::new(),
            next_id: 1_000_000,
            rate_used: 0,
            rate_reset: Utc::now().timestamp() + 3600,
            injections: Vec::new(),
            holds: Vec::new(),
            webhook_target: None,
            deliveries: Vec::new(),
            next_delivery_id: FIRST_DELIVERY_ID,
            redelivery_requests: Vec::new(),
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

    /// Registers an installation of the app on `account`, granted the App's usual
    /// permissions (checks, contents, issues and pull requests: write; metadata: read).
    pub fn add_installation(&self, installation_id: i64, account: &str) {
        let permissions = DEFAULT_PERMISSIONS
            .iter()
            .map(|(name, level)| (name.to_string(), level.to_string()))
            .collect();
        lock(&self.shared).installations.insert(
            installation_id,
            InstallationRec {
                account: account.to_string(),
                permissions,
            },
        );
    }

    /// Replaces what the installation was granted; tokens already issued keep theirs.
    pub fn set_installation_permissions(&self, installation_id: i64, permissions: &[(&str, &str)]) {
        let mut inner = lock(&self.shared);
        let installation = inner
            .installations
            .get_mut(&installation_id)
            .expect("known installation");
        installation.permissions = permissions
            .iter()
            .map(|(name, level)| (name.to_string(), level.to_string()))
            .collect();
    }

    /// Creates a bare repo `<root>/<owner>/<name>.git` with one initial commit
    /// on `main` containing `files`; `.sh` files are mode 100755.
    pub fn add_repo(&self, installation_id: i64, owner: &str, name: &str, files: &[(&str, &str)]) {
        let bare = self.root.join(owner).join(format!("{name}.git"));
        std::fs::create_dir_all(&bare).expect("create bare repo dir");
        run_git(
            &bare,
            &["init", "--quiet", "--bare", "--initial-branch=main", "."],
        );
        run_git(&bare, &["config", "http.receivepack", "true"]);

        let work = tempfile::tempdir().expect("create work tree");
        let wt = work.path();
        run_git(wt, &["init", "--quiet", "--initial-branch=main", "."]);
        for (path, contents) in files {
            let full = wt.join(path);
            if let Some(parent) = full.parent() {
                std::fs::create_dir_all(parent).expect("create file parent dir");
            }
            std::fs::write(&full, contents).expect("write repo file");
        }
        run_git(wt, &["add", "--all"]);
        for (path, _) in files {
            if path.ends_with(".sh") {
                run_git(wt, &["update-index", "--chmod=+x", "--", path]);
            }
        }
        run_git(
            wt,
            &["commit", "--quiet", "--allow-empty", "-m", "Initial commit"],
        );
        let bare_str = bare.to_str().expect("utf-8 path");
        run_git(
            wt,
            &[
                "push",
                "--quiet",
                bare_str,
                "refs/heads/main:refs/heads/main",
            ],
        );

        let mut inner = lock(&self.shared);
        let id = inner.alloc_id();
        if let Some(i) = inner.repo_index(owner, name) {
            inner.repos.remove(i);
        }
        inner.repos.push(RepoRec {
            id,
            installation_id,
            owner: owner.to_string(),
            name: name.to_string(),
            next_number: 100,
            comments: Vec::new(),
            pulls: Vec::new(),
            check_runs: Vec::new(),
            check_suites: HashMap::new(),
        });
    }

    /// Pushes a commit with `files` and symbolic `links` (path, target) to `branch` (made
    /// from `main` when missing), as a person pushing to GitHub would; returns its sha.
    pub fn push_files(
        &self,
        owner: &str,
        repo: &str,
        branch: &str,
        files: &[(&str, &str)],
        links: &[(&str, &str)],
    ) -> String {
        let bare = self.git_dir(owner, repo);
        let work = tempfile::tempdir().expect("create work tree");
        let wt = work.path();
        run_git(
            wt,
            &["clone", "--quiet", bare.to_str().expect("utf-8 path"), "."],
        );
        let start =
            if git_stdout(wt, &["rev-parse", "--verify", &format!("origin/{branch}")]).is_some() {
                format!("origin/{branch}")
            } else {
                "origin/main".to_owned()
            };
        run_git(wt, &["checkout", "--quiet", "-B", branch, &start]);
        for (path, contents) in files {
            let full = wt.join(path);
            std::fs::create_dir_all(full.parent().expect("a file has a parent")).expect("mkdir");
            // Never through a symbolic link the branch holds.
            let _ = std::fs::remove_file(&full);
            std::fs::write(&full, contents).expect("write repo file");
        }
        for (path, target) in links {
            let full = wt.join(path);
            std::fs::create_dir_all(full.parent().expect("a link has a parent")).expect("mkdir");
            let _ = std::fs::remove_file(&full);
            std::os::unix::fs::symlink(target, &full).expect("symlink");
        }
        run_git(wt, &["add", "--all"]);
        run_git(wt, &["commit", "--quiet", "-m", "A person's commit"]);
        run_git(
            wt,
            &[
                "push",
                "--quiet",
                "origin",
                &format!("HEAD:refs/heads/{branch}"),
            ],
        );
        git_stdout(wt, &["rev-parse", "HEAD"]).expect("the commit")
    }

    /// The commits reachable from `rev`, newest first.
    pub fn log(&self, owner: &str, repo: &str, rev: &str) -> Vec<String> {
        git_stdout(&self.git_dir(owner, repo), &["rev-list", rev])
            .map(|list| list.lines().map(str::to_owned).collect())
            .unwrap_or_default()
    }

    /// Lifetime of installation tokens issued from now on (default 1 hour).
    pub fn set_token_ttl(&self, ttl: Duration) {
        lock(&self.shared).token_ttl = ttl;
    }

    /// Issues an installation token directly, bypassing the JWT exchange, for
    /// every repository and permission of the installation. The token is also
    /// reported by [`FakeGitHub::issued_tokens`].
    pub fn mint_token(&self, installation_id: i64) -> String {
        let mut inner = lock(&self.shared);
        let scope = inner.installation_scope(installation_id);
        inner.issue_token(scope).0
    }

    /// Comments on issue/PR `issue`, oldest first.
    pub fn comments(&self, owner: &str, repo: &str, issue: u64) -> Vec<Comment> {
        let inner = lock(&self.shared);
        let Some(r) = inner.repo(owner, repo) else {
            return Vec::new();
        };
        r.comments
            .iter()
            .filter(|c| c.issue == issue)
            .map(|c| Comment {
                id: c.id,
                body: c.body.clone(),
                edits: c.edits.clone(),
                user_login: c.user_login.clone(),
            })
            .collect()
    }

    /// Deletes a comment, as a person can on github.com.
    pub fn delete_comment(&self, owner: &str, repo: &str, id: u64) {
        let mut inner = lock(&self.shared);
        let idx = inner.repo_index(owner, repo).expect("known repository");
        inner.repos[idx].comments.retain(|c| c.id != id);
    }

    /// Pull requests of the repo, in creation order.
    pub fn pull_requests(&self, owner: &str, repo: &str) -> Vec<PullRequest> {
        let inner = lock(&self.shared);
        let Some(r) = inner.repo(owner, repo) else {
            return Vec::new();
        };
        r.pulls
            .iter()
            .map(|p| PullRequest {
                number: p.number,
                title: p.title.clone(),
                body: p.body.clone(),
                head: p.head_ref.clone(),
                base: p.base_ref.clone(),
                state: p.state.clone(),
            })
            .collect()
    }

    /// Check runs of the repo, in creation order.
    pub fn check_runs(&self, owner: &str, repo: &str) -> Vec<CheckRun> {
        let inner = lock(&self.shared);
        let Some(r) = inner.repo(owner, repo) else {
            return Vec::new();
        };
        r.check_runs
            .iter()
            .map(|c| CheckRun {
                id: c.id,
                name: c.name.clone(),
                head_sha: c.head_sha.clone(),
                status: c.status.clone(),
                conclusion: c.conclusion.clone(),
                output_title: c.output_title.clone(),
                output_summary: c.output_summary.clone(),
                output_text: c.output_text.clone(),
                details_url: c.details_url.clone(),
            })
            .collect()
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.shared).requests.clone()
    }

    /// Every installation token issued so far, in order.
    pub fn issued_tokens(&self) -> Vec<String> {
        lock(&self.shared).issued.clone()
    }

    /// The commit `refs/heads/<branch>` points at in the bare repo.
    pub fn branch_sha(&self, owner: &str, repo: &str, branch: &str) -> Option<String> {
        let dir = self.git_dir(owner, repo);
        let refname = format!("refs/heads/{branch}");
        git_stdout(
            &dir,
            &[
                "rev-parse",
                "--verify",
                "--quiet",
                &format!("{refname}^{{commit}}"),
            ],
        )
    }

    /// `git show <rev>:<path>` in the bare repo.
    pub fn file_at(&self, owner: &str, repo: &str, rev: &str, path: &str) -> Option<String> {
        let dir = self.git_dir(owner, repo);
        let out = git_cmd(&dir, &["show", &format!("{rev}:{path}")])
            .output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        String::from_utf8(out.stdout).ok()
    }

    /// Path of the bare repository on disk.
    pub fn git_dir(&self, owner: &str, repo: &str) -> PathBuf {
        lock(&self.shared).git_dir(owner, repo)
    }

    /// The next `responses.len()` requests whose method equals `method`
    /// (case-insensitively) and whose path (without query) matches `path` are
    /// answered with these responses, in order, instead of being handled
    /// (state is not changed). `path` may contain `*` segments matching one
    /// path segment, e.g. `"/repos/acme/widgets/issues/*/comments"`.
    ///
    /// Applies to REST routes (including `/app/...`), before authentication;
    /// git smart-HTTP requests are never intercepted. Injected responses get
    /// the usual headers (content type, request id, rate limit), overridden
    /// by the injected headers of the same name, and are recorded in
    /// [`FakeGitHub::requests`]. When several injections match a request, the
    /// one registered first is used until it is exhausted.
    ///
    /// Panics if a response has an invalid status or header.
    pub fn inject(&self, method: &str, path: &str, responses: Vec<Injected>) {
        for r in &responses {
            r.validate();
        }
        if responses.is_empty() {
            return;
        }
        lock(&self.shared).injections.push(InjectionRule {
            method: method.to_string(),
            pattern: route_pattern(path),
            responses: responses.into(),
        });
    }

    /// The next REST request matching `method path` (as for [`FakeGitHub::inject`]) waits,
    /// before anything is done with it, until the returned [`Hold`] is released or dropped:
    /// a call to GitHub in flight for as long as the test wants.
    pub fn hold(&self, method: &str, path: &str) -> Hold {
        let arrived = Arc::new(tokio::sync::Notify::new());
        let (release, released) = tokio::sync::oneshot::channel();
        lock(&self.shared).holds.push(HoldRule {
            method: method.to_string(),
            pattern: route_pattern(path),
            arrived: arrived.clone(),
            release: released,
        });
        Hold { arrived, release }
    }

    /// Revokes every installation token issued so far: they now get
    /// `401 Bad credentials` on REST and `401` on git. Tokens issued
    /// afterwards work. [`FakeGitHub::issued_tokens`] still lists them.
    pub fn revoke_tokens(&self) {
        lock(&self.shared).tokens.clear();
    }

    /// Where `POST /app/hook/deliveries/{id}/attempts` redelivers to, and the
    /// webhook secret used for `X-Hub-Signature-256`.
    pub fn set_webhook_target(&self, url: &str, secret: &str) {
        lock(&self.shared).webhook_target = Some(WebhookTarget {
            url: url.to_string(),
            secret: secret.to_string(),
        });
    }

    /// Records a past delivery attempt of the App's webhook (delivered now,
    /// not a redelivery); returns its numeric id. `installation_id` and
    /// `repository_id` are taken from `payload.installation.id` and
    /// `payload.repository.id`. `status` is `"OK"` for a 2xx `status_code`,
    /// `"Invalid HTTP Response: <code>"` otherwise, and
    /// `"failed to connect to host"` for `0`.
    pub fn add_hook_delivery(
        &self,
        guid: &str,
        event: &str,
        action: Option<&str>,
        status_code: u16,
        payload: Value,
    ) -> i64 {
        let mut inner = lock(&self.shared);
        let id = inner.alloc_delivery_id();
        inner.deliveries.push(DeliveryRec {
            id,
            guid: guid.to_string(),
            delivered_at: Utc::now(),
            redelivery: false,
            duration: 0.27,
            status: delivery_status(status_code),
            status_code,
            event: event.to_string(),
            action: action.map(str::to_string),
            installation_id: payload.pointer("/installation/id").and_then(Value::as_i64),
            repository_id: payload.pointer("/repository/id").and_then(Value::as_i64),
            payload,
        });
        id
    }

    /// Delivery ids passed to `POST /app/hook/deliveries/{id}/attempts` by
    /// authenticated requests (known or not), in order.
    pub fn redelivery_requests(&self) -> Vec<i64> {
        lock(&self.shared).redelivery_requests.clone()
    }

    /// Every delivery attempt, oldest first, including the fake's own
    /// redeliveries once they have completed.
    pub fn hook_deliveries(&self) -> Vec<HookDelivery> {
        lock(&self.shared)
            .deliveries
            .iter()
            .map(|d| HookDelivery {
                id: d.id,
                guid: d.guid.clone(),
                redelivery: d.redelivery,
                status: d.status.clone(),
                status_code: d.status_code,
                event: d.event.clone(),
                action: d.action.clone(),
            })
            .collect()
    }
}

impl Drop for FakeGitHub {
    fn drop(&mut self) {
        self.server.abort();
    }
}

// ---------------------------------------------------------------------------
// git helpers
// ---------------------------------------------------------------------------

/// A `git` command isolated from the user's/system's configuration.
fn git_cmd(dir: &Path, args: &[&str]) -> StdCommand {
    let mut cmd = StdCommand::new("git");
    cmd.current_dir(dir)
        .args(args)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_AUTHOR_NAME", "Fake GitHub")
        .env("GIT_AUTHOR_EMAIL", "fake@github.invalid")
        .env("GIT_COMMITTER_NAME", "Fake GitHub")
        .env("GIT_COMMITTER_EMAIL", "fake@github.invalid");
    for var in [
        "GIT_DIR",
        "GIT_WORK_TREE",
        "GIT_INDEX_FILE",
        "GIT_CONFIG",
        "GIT_CONFIG_COUNT",
        "GIT_CONFIG_PARAMETERS",
        "GIT_OBJECT_DIRECTORY",
        "GIT_ALTERNATE_OBJECT_DIRECTORIES",
        "GIT_NAMESPACE",
        "GIT_PROTOCOL",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

fn run_git(dir: &Path, args: &[&str]) {
    let out = git_cmd(dir, args)
        .output()
        .unwrap_or_else(|e| panic!("failed to run git {args:?}: {e}"));
    assert!(
        out.status.success(),
        "git {args:?} in {} failed: {}{}",
        dir.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn git_stdout(dir: &Path, args: &[&str]) -> Option<String> {
    let out = git_cmd(dir, args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

async fn git_stdout_async(dir: &Path, args: &[&str]) -> Option<String> {
    let out = tokio::process::Command::from(git_cmd(dir, args))
        .output()
        .await
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

async fn git_succeeds_async(dir: &Path, args: &[&str]) -> bool {
    tokio::process::Command::from(git_cmd(dir, args))
        .output()
        .await
        .map(|o| o.status.success())
        .unwrap_or(false)
}

async fn branch_sha_async(dir: &Path, branch: &str) -> Option<String> {
    if branch.is_empty() {
        return None;
    }
    let spec = format!("refs/heads/{branch}^{{commit}}");
    git_stdout_async(dir, &["rev-parse", "--verify", "--quiet", &spec]).await
}

async fn commit_exists_async(dir: &Path, sha: &str) -> bool {
    let full_sha = sha.len() == 40 && sha.bytes().all(|b| b.is_ascii_hexdigit());
    full_sha && git_succeeds_async(dir, &["cat-file", "-e", &format!("{sha}^{{commit}}")]).await
}

// ---------------------------------------------------------------------------
// misc helpers
// ---------------------------------------------------------------------------

fn random_alnum(len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut out = String::with_capacity(len);
    while out.len() < len {
        for b in uuid::Uuid::new_v4().as_bytes() {
            if out.len() == len {
                break;
            }
            out.push(ALPHABET[usize::from(*b) % ALPHABET.len()] as char);
        }
    }
    out
}

fn ts(dt: &DateTime<Utc>) -> String {
    dt.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn opt_ts(dt: &Option<DateTime<Utc>>) -> Value {
    dt.as_ref().map_or(Value::Null, |d| Value::String(ts(d)))
}

fn node_id(prefix: &str, id: u64) -> String {
    let raw = format!("0:{id}");
    format!(
        "{prefix}_{}",
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(raw)
    )
}

fn json_response(status: StatusCode, value: &Value) -> Response {
    let mut resp = Response::new(Body::from(value.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    resp
}

fn gh_error(status: StatusCode, message: &str) -> Response {
    json_response(
        status,
        &json!({
            "message": message,
            "documentation_url": DOCS_URL,
            "status": status.as_u16().to_string(),
        }),
    )
}

fn not_found() -> Response {
    gh_error(StatusCode::NOT_FOUND, "Not Found")
}

fn bad_credentials() -> Response {
    gh_error(StatusCode::UNAUTHORIZED, "Bad credentials")
}

fn validation_failed(errors: Value) -> Response {
    json_response(
        StatusCode::UNPROCESSABLE_ENTITY,
        &json!({
            "message": "Validation Failed",
            "errors": errors,
            "documentation_url": DOCS_URL,
            "status": "422",
        }),
    )
}

/// GitHub's schema-validation style 422 (`Invalid request.\n\n...`).
fn invalid_request(detail: &str) -> Response {
    gh_error(
        StatusCode::UNPROCESSABLE_ENTITY,
        &format!("Invalid request.\n\n{detail}"),
    )
}

fn header_str<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Splits `Authorization: <scheme> <credentials>`.
fn split_auth(value: &str) -> Option<(String, &str)> {
    let (scheme, rest) = value.trim().split_once(' ')?;
    Some((scheme.to_ascii_lowercase(), rest.trim()))
}

fn str_field(body: &Value, key: &str) -> Option<String> {
    body.get(key).and_then(Value::as_str).map(str::to_string)
}

fn parse_time(body: &Value, key: &str) -> Result<Option<DateTime<Utc>>, Response> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => DateTime::parse_from_rfc3339(s)
            .map(|d| Some(d.with_timezone(&Utc)))
            .map_err(|_| {
                invalid_request(&format!(
                    "For 'properties/{key}', \"{s}\" is not a valid date-time."
                ))
            }),
        Some(other) => Err(invalid_request(&format!(
            "For 'properties/{key}', {other} is not a string."
        ))),
    }
}

/// A string-or-null field; `Ok(None)` when absent.
fn opt_string(body: &Value, key: &str) -> Result<Option<Option<String>>, Response> {
    match body.get(key) {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(None)),
        Some(Value::String(s)) => Ok(Some(Some(s.clone()))),
        Some(other) => Err(invalid_request(&format!(
            "For 'properties/{key}', {other} is not a string."
        ))),
    }
}

// ---------------------------------------------------------------------------
// JSON shapes
// ---------------------------------------------------------------------------

fn user_json(base: &str, login: &str, id: u64, kind: &str) -> Value {
    let enc = login.replace('[', "%5B").replace(']', "%5D");
    let api = format!("{base}/users/{enc}");
    let (html_url, avatar) = if kind == "Bot" {
        (
            "https://github.com/apps/conveyor".to_string(),
            format!("https://avatars.githubusercontent.com/in/{APP_ID}?v=4"),
        )
    } else {
        (
            format!("https://github.com/{login}"),
            format!("https://avatars.githubusercontent.com/u/{id}?v=4"),
        )
    };
    let node_prefix = match kind {
        "Bot" => "BOT",
        "Organization" => "O",
        _ => "U",
    };
    json!({
        "login": login,
        "id": id,
        "node_id": node_id(node_prefix, id),
        "avatar_url": avatar,
        "gravatar_id": "",
        "url": api,
        "html_url": html_url,
        "followers_url": format!("{api}/followers"),
        "following_url": format!("{api}/following{{/other_user}}"),
        "gists_url": format!("{api}/gists{{/gist_id}}"),
        "starred_url": format!("{api}/starred{{/owner}}{{/repo}}"),
        "subscriptions_url": format!("{api}/subscriptions"),
        "organizations_url": format!("{api}/orgs"),
        "repos_url": format!("{api}/repos"),
        "events_url": format!("{api}/events{{/privacy}}"),
        "received_events_url": format!("{api}/received_events"),
        "type": kind,
        "user_view_type": "public",
        "site_admin": false,
    })
}

fn bot_json(base: &str) -> Value {
    user_json(base, BOT_LOGIN, BOT_USER_ID, "Bot")
}

fn owner_id(login: &str) -> u64 {
    // Stable pseudo id derived from the login.
    login.bytes().fold(7_000_000u64, |acc, b| {
        acc.wrapping_mul(31).wrapping_add(u64::from(b))
    }) % 90_000_000
        + 10_000_000
}

fn repo_json(base: &str, r: &RepoRec) -> Value {
    let full = format!("{}/{}", r.owner, r.name);
    let api = format!("{base}/repos/{full}");
    json!({
        "id": r.id,
        "node_id": node_id("R", r.id),
        "name": r.name,
        "full_name": full,
        "private": true,
        "owner": user_json(base, &r.owner, owner_id(&r.owner), "Organization"),
        "html_url": format!("https://github.com/{full}"),
        "description": null,
        "fork": false,
        "url": api,
        "issues_url": format!("{api}/issues{{/number}}"),
        "pulls_url": format!("{api}/pulls{{/number}}"),
        "issue_comment_url": format!("{api}/issues/comments{{/number}}"),
        "git_url": format!("git://github.com/{full}.git"),
        "clone_url": format!("{base}/{full}.git"),
        "created_at": "2024-01-01T00:00:00Z",
        "updated_at": "2024-01-01T00:00:00Z",
        "pushed_at": "2024-01-01T00:00:00Z",
        "default_branch": "main",
        "visibility": "private",
        "archived": false,
        "disabled": false,
    })
}

fn comment_json(base: &str, r: &RepoRec, c: &CommentRec) -> Value {
    let full = format!("{}/{}", r.owner, r.name);
    json!({
        "id": c.id,
        "node_id": node_id("IC", c.id),
        "url": format!("{base}/repos/{full}/issues/comments/{}", c.id),
        "html_url": format!("https://github.com/{full}/issues/{}#issuecomment-{}", c.issue, c.id),
        "issue_url": format!("{base}/repos/{full}/issues/{}", c.issue),
        "body": c.body,
        "user": bot_json(base),
        "created_at": ts(&c.created_at),
        "updated_at": ts(&c.updated_at),
        "author_association": "NONE",
        "performed_via_github_app": app_json(base),
        "reactions": {
            "url": format!("{base}/repos/{full}/issues/comments/{}/reactions", c.id),
            "total_count": 0, "+1": 0, "-1": 0, "laugh": 0, "hooray": 0,
            "confused": 0, "heart": 0, "rocket": 0, "eyes": 0,
        },
    })
}

fn app_json(base: &str) -> Value {
    json!({
        "id": APP_ID,
        "slug": "conveyor",
        "node_id": node_id("A", APP_ID),
        "client_id": "Iv1.0123456789abcdef",
        "owner": user_json(base, "conveyor-dev", 9_999_999, "Organization"),
        "name": "Conveyor",
        "description": "Turns issues and slash commands into pipeline runs",
        "external_url": "https://conveyor.invalid",
        "html_url": "https://github.com/apps/conveyor",
        "created_at": "2024-01-01T00:00:00Z",
        "updated_at": "2024-01-01T00:00:00Z",
        "permissions": {
            "checks": "write", "contents": "write", "issues": "write",
            "metadata": "read", "pull_requests": "write",
        },
        "events": ["check_run", "issue_comment", "issues", "pull_request"],
    })
}

fn pull_json(base: &str, r: &RepoRec, p: &PullRec) -> Value {
    let full = format!("{}/{}", r.owner, r.name);
    let api = format!("{base}/repos/{full}");
    let html = format!("https://github.com/{full}/pull/{}", p.number);
    let owner = user_json(base, &r.owner, owner_id(&r.owner), "Organization");
    let repo = repo_json(base, r);
    let closed_at = if p.state == "closed" {
        Value::String(ts(&p.updated_at))
    } else {
        Value::Null
    };
    let links = json!({
        "self": {"href": format!("{api}/pulls/{}", p.number)},
        "html": {"href": html},
        "issue": {"href": format!("{api}/issues/{}", p.number)},
        "comments": {"href": format!("{api}/issues/{}/comments", p.number)},
        "review_comments": {"href": format!("{api}/pulls/{}/comments", p.number)},
        "review_comment": {"href": format!("{api}/pulls/comments{{/number}}")},
        "commits": {"href": format!("{api}/pulls/{}/commits", p.number)},
        "statuses": {"href": format!("{api}/statuses/{}", p.head_sha)},
    });
    let head = json!({
        "label": format!("{}:{}", r.owner, p.head_ref),
        "ref": p.head_ref,
        "sha": p.head_sha,
        "user": owner.clone(),
        "repo": repo.clone(),
    });
    let base_obj = json!({
        "label": format!("{}:{}", r.owner, p.base_ref),
        "ref": p.base_ref,
        "sha": p.base_sha,
        "user": owner,
        "repo": repo,
    });
    let value = json!({
        "url": format!("{api}/pulls/{}", p.number),
        "id": p.id,
        "node_id": node_id("PR", p.id),
        "html_url": html,
        "diff_url": format!("{html}.diff"),
        "patch_url": format!("{html}.patch"),
        "issue_url": format!("{api}/issues/{}", p.number),
        "commits_url": format!("{api}/pulls/{}/commits", p.number),
        "review_comments_url": format!("{api}/pulls/{}/comments", p.number),
        "review_comment_url": format!("{api}/pulls/comments{{/number}}"),
        "comments_url": format!("{api}/issues/{}/comments", p.number),
        "statuses_url": format!("{api}/statuses/{}", p.head_sha),
        "number": p.number,
        "state": p.state,
        "locked": false,
        "title": p.title,
        "user": bot_json(base),
        "body": p.body,
        "labels": [],
        "milestone": null,
        "active_lock_reason": null,
        "created_at": ts(&p.created_at),
        "updated_at": ts(&p.updated_at),
        "closed_at": closed_at,
        "merged_at": null,
        "merge_commit_sha": null,
        "assignee": null,
        "assignees": [],
        "requested_reviewers": [],
        "requested_teams": [],
    });
    let more = json!({
        "head": head,
        "base": base_obj,
        "_links": links,
        "author_association": "NONE",
        "auto_merge": null,
        "draft": p.draft,
        "merged": false,
        "mergeable": null,
        "rebaseable": null,
        "mergeable_state": "unknown",
        "merged_by": null,
        "comments": 0,
        "review_comments": 0,
        "maintainer_can_modify": false,
        "commits": 1,
        "additions": 0,
        "deletions": 0,
        "changed_files": 0,
    });
    merge_objects(value, more)
}

fn merge_objects(mut a: Value, b: Value) -> Value {
    if let (Value::Object(a_map), Value::Object(b_map)) = (&mut a, b) {
        a_map.extend(b_map);
    }
    a
}

fn check_run_json(base: &str, r: &RepoRec, c: &CheckRunRec) -> Value {
    let full = format!("{}/{}", r.owner, r.name);
    let api = format!("{base}/repos/{full}");
    let html = format!("https://github.com/{full}/runs/{}", c.id);
    json!({
        "id": c.id,
        "node_id": node_id("CR", c.id),
        "head_sha": c.head_sha,
        "external_id": c.external_id.clone().unwrap_or_default(),
        "url": format!("{api}/check-runs/{}", c.id),
        "html_url": html,
        "details_url": c.details_url.clone().unwrap_or_else(|| html.clone()),
        "status": c.status,
        "conclusion": c.conclusion,
        "started_at": opt_ts(&c.started_at),
        "completed_at": opt_ts(&c.completed_at),
        "output": {
            "title": c.output_title,
            "summary": c.output_summary,
            "text": c.output_text,
            "annotations_count": 0,
            "annotations_url": format!("{api}/check-runs/{}/annotations", c.id),
        },
        "name": c.name,
        "check_suite": {"id": c.suite_id},
        "app": app_json(base),
        "pull_requests": [],
    })
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
        lock(&shared).take_injection(parts.method.as_str(), parts.uri.path())
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

enum RepoRoute {
    CreateComment(u64),
    ListComments(u64),
    GetComment(u64),
    UpdateComment(u64),
    CreatePull,
    ListPulls,
    GetPull(u64),
    CreateCheckRun,
    GetCheckRun(u64),
    UpdateCheckRun(u64),
}

impl RepoRoute {
    /// The permissions a token needs for the route: any one of them will do.
    fn needs(&self) -> &'static [(&'static str, &'static str)] {
        use RepoRoute::*;
        match self {
            // Issue comments are also pull request comments.
            CreateComment(_) | UpdateComment(_) => {
                &[("issues", "write"), ("pull_requests", "write")]
            }
            ListComments(_) | GetComment(_) => &[("issues", "read"), ("pull_requests", "read")],
            CreatePull => &[("pull_requests", "write")],
            ListPulls | GetPull(_) => &[("pull_requests", "read")],
            CreateCheckRun | UpdateCheckRun(_) => &[("checks", "write")],
            GetCheckRun(_) => &[("checks", "read")],
        }
    }
}

fn parse_num(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn repo_route(method: &Method, rest: &[&str]) -> Option<RepoRoute> {
    use RepoRoute::*;
    let m = method.as_str();
    Some(match (m, rest) {
        ("POST", ["issues", n, "comments"]) => CreateComment(parse_num(n)?),
        ("GET", ["issues", n, "comments"]) => ListComments(parse_num(n)?),
        ("GET", ["issues", "comments", id]) => GetComment(parse_num(id)?),
        // GitHub accepts POST as an alias for PATCH (octocrab relies on it).
        ("PATCH" | "POST", ["issues", "comments", id]) => UpdateComment(parse_num(id)?),
        ("POST", ["pulls"]) => CreatePull,
        ("GET", ["pulls"]) => ListPulls,
        ("GET", ["pulls", n]) => GetPull(parse_num(n)?),
        ("POST", ["check-runs"]) => CreateCheckRun,
        ("GET", ["check-runs", id]) => GetCheckRun(parse_num(id)?),
        ("PATCH" | "POST", ["check-runs", id]) => UpdateCheckRun(parse_num(id)?),
        _ => return None,
    })
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
        ["repos", owner, repo, rest @ ..] => {
            repos_api(shared, parts, auth, owner, repo, rest, body).await
        }
        _ => not_found(),
    }
}

// ---------------------------------------------------------------------------
// POST /app/installations/{id}/access_tokens
// ---------------------------------------------------------------------------

fn verify_jwt(jwt: &str) -> Result<(), &'static str> {
    const UNDECODABLE: &str = "A JSON web token could not be decoded";
    let key = jsonwebtoken::DecodingKey::from_rsa_pem(PUBLIC_KEY_PEM.as_bytes())
        .expect("fake GitHub public key");
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.leeway = 0;
    validation.required_spec_claims = HashSet::new();
    let data = jsonwebtoken::decode::<Value>(jwt, &key, &validation).map_err(|_| UNDECODABLE)?;
    let claims = data.claims;
    let now = Utc::now().timestamp();

    let iat = claims.get("iat").and_then(Value::as_i64).ok_or(
        "'Issued at' claim ('iat') must be an Integer representing the time that the assertion was issued",
    )?;
    if iat > now + JWT_IAT_LEEWAY_SECS {
        return Err("'Issued at' claim ('iat') must be an Integer representing a time in the past");
    }
    let exp = claims
        .get("exp")
        .and_then(|v| v.as_i64().or_else(|| v.as_f64().map(|f| f as i64)))
        .ok_or("'Expiration time' claim ('exp') must be a numeric value representing the future time at which the assertion expires")?;
    if exp <= now {
        return Err(
            "'Expiration time' claim ('exp') must be a numeric value representing the future time at which the assertion expires",
        );
    }
    if exp > now + JWT_MAX_LIFETIME_SECS + JWT_EXP_LEEWAY_SECS {
        return Err("'Expiration time' claim ('exp') is too far in the future");
    }
    let iss_ok = match claims.get("iss") {
        Some(Value::Number(n)) => n.as_u64() == Some(APP_ID),
        Some(Value::String(s)) => s.trim() == APP_ID.to_string(),
        _ => return Err("'Issuer' claim ('iss') must be an Integer"),
    };
    if !iss_ok {
        return Err(UNDECODABLE);
    }
    Ok(())
}

/// Checks `Authorization: Bearer <App JWT>`; the error is GitHub's 401.
fn require_app_jwt(auth: Option<&str>) -> Result<(), Response> {
    let undecodable = || {
        gh_error(
            StatusCode::UNAUTHORIZED,
            "A JSON web token could not be decoded",
        )
    };
    let jwt = match auth.and_then(split_auth) {
        Some((scheme, jwt)) if scheme == "bearer" => jwt,
        _ => return Err(undecodable()),
    };
    verify_jwt(jwt).map_err(|msg| gh_error(StatusCode::UNAUTHORIZED, msg))
}

/// What `POST /app/installations/{id}/access_tokens` asked for, validated
/// against the installation.
fn requested_scope(
    inner: &Inner,
    installation_id: i64,
    body: &Value,
) -> Result<TokenScope, Response> {
    let installation = &inner.installations[&installation_id];
    let mut repositories: Vec<u64> = Vec::new();
    for (key, by_name) in [("repositories", true), ("repository_ids", false)] {
        let items = match body.get(key) {
            None | Some(Value::Null) => continue,
            Some(Value::Array(items)) => items,
            Some(other) => {
                return Err(invalid_request(&format!(
                    "For 'properties/{key}', {other} is not an array."
                )));
            }
        };
        for item in items {
            let found = match (by_name, item) {
                (true, Value::String(name)) => inner.repos.iter().find(|r| {
                    r.installation_id == installation_id && r.name.eq_ignore_ascii_case(name)
                }),
                (false, Value::Number(id)) => inner
                    .repos
                    .iter()
                    .find(|r| r.installation_id == installation_id && Some(r.id) == id.as_u64()),
                (_, other) => {
                    let kind = if by_name { "a string" } else { "an integer" };
                    return Err(invalid_request(&format!(
                        "For 'items', {other} is not {kind}."
                    )));
                }
            };
            match found {
                Some(r) if !repositories.contains(&r.id) => repositories.push(r.id),
                Some(_) => {}
                None => {
                    return Err(gh_error(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        REPOSITORY_NOT_IN_INSTALLATION,
                    ));
                }
            }
        }
    }
    let permissions = match body.get("permissions") {
        None | Some(Value::Null) => installation.permissions.clone(),
        Some(Value::Object(asked)) => {
            let mut granted = BTreeMap::new();
            for (name, level) in asked {
                let Some((level, rank)) = level.as_str().and_then(|l| Some((l, access_rank(l)?)))
                else {
                    return Err(invalid_request(&format!(
                        "For 'properties/{name}', {level} is not a member of {ACCESS_LEVELS:?}."
                    )));
                };
                let held = installation
                    .permissions
                    .get(name)
                    .and_then(|h| access_rank(h));
                if held.is_none_or(|held| held < rank) {
                    return Err(gh_error(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        PERMISSIONS_NOT_GRANTED,
                    ));
                }
                granted.insert(name.clone(), level.to_string());
            }
            // Every token may read the repository's metadata when the installation can.
            if let Some(metadata) = installation.permissions.get("metadata") {
                granted
                    .entry("metadata".to_string())
                    .or_insert_with(|| metadata.clone());
            }
            granted
        }
        Some(other) => {
            return Err(invalid_request(&format!(
                "For 'properties/permissions', {other} is not an object."
            )));
        }
    };
    Ok(TokenScope {
        installation_id,
        repositories: (!repositories.is_empty()).then_some(repositories),
        permissions,
    })
}

fn create_access_token(shared: &Shared, auth: Option<&str>, id: &str, body: &Bytes) -> Response {
    if let Err(resp) = require_app_jwt(auth) {
        return resp;
    }
    let Some(installation_id) = id.parse::<i64>().ok() else {
        return not_found();
    };
    let mut inner = lock(shared);
    if !inner.installations.contains_key(&installation_id) {
        return not_found();
    }
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        Value::Object(Default::default())
    } else {
        match serde_json::from_slice::<Value>(body) {
            Ok(v @ Value::Object(_)) => v,
            _ => return gh_error(StatusCode::BAD_REQUEST, "Problems parsing JSON"),
        }
    };
    let scope = match requested_scope(&inner, installation_id, &body) {
        Ok(scope) => scope,
        Err(resp) => return resp,
    };
    let (token, expires_at) = inner.issue_token(scope.clone());
    let mut value = json!({
        "token": token,
        "expires_at": ts(&expires_at),
        "permissions": scope.permissions,
        "repository_selection": if scope.repositories.is_some() { "selected" } else { "all" },
    });
    if let Some(ids) = &scope.repositories {
        let repos: Vec<Value> = ids
            .iter()
            .filter_map(|id| inner.repos.iter().find(|r| r.id == *id))
            .map(|r| repo_json(&inner.base_url, r))
            .collect();
        value["repositories"] = Value::Array(repos);
    }
    json_response(StatusCode::CREATED, &value)
}

// ---------------------------------------------------------------------------
// /app/hook/deliveries
// ---------------------------------------------------------------------------

/// `status` of a delivery attempt that got `status_code` (0: no response).
fn delivery_status(status_code: u16) -> String {
    match status_code {
        0 => "failed to connect to host".to_string(),
        200..=299 => "OK".to_string(),
        code => format!("Invalid HTTP Response: {code}"),
    }
}

fn delivery_json(d: &DeliveryRec) -> Value {
    json!({
        "id": d.id,
        "guid": d.guid,
        "delivered_at": ts(&d.delivered_at),
        "redelivery": d.redelivery,
        "duration": d.duration,
        "status": d.status,
        "status_code": d.status_code,
        "event": d.event,
        "action": d.action,
        "installation_id": d.installation_id,
        "repository_id": d.repository_id,
        "throttled_at": null,
    })
}

/// `GET /app/hook/deliveries?per_page=&cursor=&redelivery=`, newest first.
///
/// The cursor is `v1_<id>` of the last delivery of the previous page, so
/// deliveries made while paging do not shift later pages.
fn list_deliveries(shared: &Shared, parts: &Parts, auth: Option<&str>) -> Response {
    if let Err(resp) = require_app_jwt(auth) {
        return resp;
    }
    let query: HashMap<String, String> = Query::try_from_uri(&parts.uri)
        .map(|Query(q)| q)
        .unwrap_or_default();
    let per_page = query
        .get("per_page")
        .and_then(|p| p.parse::<usize>().ok())
        .filter(|&p| p > 0)
        .unwrap_or(DELIVERIES_PER_PAGE_DEFAULT)
        .min(DELIVERIES_PER_PAGE_MAX);
    let before = match query.get("cursor").filter(|c| !c.is_empty()) {
        None => None,
        Some(c) => match c.strip_prefix("v1_").and_then(|id| id.parse::<i64>().ok()) {
            Some(id) => Some(id),
            None => return gh_error(StatusCode::BAD_REQUEST, "Invalid cursor"),
        },
    };
    let redelivery = match query.get("redelivery").map(String::as_str) {
        None => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(other) => {
            return invalid_request(&format!(
                "For 'properties/redelivery', \"{other}\" is not a boolean."
            ));
        }
    };

    let inner = lock(shared);
    let mut matching: Vec<&DeliveryRec> = inner
        .deliveries
        .iter()
        .filter(|d| before.is_none_or(|b| d.id < b))
        .filter(|d| redelivery.is_none_or(|r| d.redelivery == r))
        .collect();
    matching.sort_by_key(|d| std::cmp::Reverse(d.id));
    let more = matching.len() > per_page;
    matching.truncate(per_page);
    let items: Vec<Value> = matching.iter().map(|d| delivery_json(d)).collect();
    let mut resp = json_response(StatusCode::OK, &Value::Array(items));
    if more && let Some(last) = matching.last() {
        let mut next = format!(
            "{}/app/hook/deliveries?per_page={per_page}&cursor=v1_{}",
            inner.base_url, last.id
        );
        if let Some(r) = redelivery {
            next.push_str(&format!("&redelivery={r}"));
        }
        if let Ok(v) = HeaderValue::from_str(&format!("<{next}>; rel=\"next\"")) {
            resp.headers_mut().insert(header::LINK, v);
        }
    }
    resp
}

/// `POST /app/hook/deliveries/{delivery_id}/attempts`.
fn redeliver(shared: &Shared, auth: Option<&str>, id: &str) -> Response {
    if let Err(resp) = require_app_jwt(auth) {
        return resp;
    }
    let Some(id) = parse_num(id).and_then(|n| i64::try_from(n).ok()) else {
        return not_found();
    };
    let (original, target) = {
        let mut inner = lock(shared);
        inner.redelivery_requests.push(id);
        let Some(original) = inner.deliveries.iter().find(|d| d.id == id).cloned() else {
            return not_found();
        };
        (original, inner.webhook_target.clone())
    };
    if let Some(target) = target {
        // GitHub accepts the request first and redelivers asynchronously.
        tokio::spawn(deliver(shared.clone(), target, original));
    }
    json_response(StatusCode::ACCEPTED, &json!({}))
}

fn sign_webhook(secret: &str, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC accepts keys of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// POSTs `original`'s payload to `target` like GitHub's Hookshot and records
/// the attempt as a redelivery.
async fn deliver(shared: Shared, target: WebhookTarget, original: DeliveryRec) {
    let body = serde_json::to_vec(&original.payload).expect("serialize webhook payload");
    let signature = sign_webhook(&target.secret, &body);
    let client = reqwest::Client::builder()
        .timeout(WEBHOOK_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("build webhook client");
    let delivered_at = Utc::now();
    let started = Instant::now();
    let result = client
        .post(&target.url)
        .header("X-GitHub-Event", &original.event)
        .header("X-GitHub-Delivery", &original.guid)
        .header("X-GitHub-Hook-ID", APP_HOOK_ID.to_string())
        .header("X-GitHub-Hook-Installation-Target-Type", "integration")
        .header("X-GitHub-Hook-Installation-Target-ID", APP_ID.to_string())
        .header("X-Hub-Signature-256", signature)
        .header("Content-Type", "application/json")
        .header("User-Agent", "GitHub-Hookshot/fake")
        .body(body)
        .send()
        .await;
    let (status_code, status) = match result {
        Ok(resp) => {
            let code = resp.status().as_u16();
            let _ = resp.bytes().await;
            (code, delivery_status(code))
        }
        Err(e) if e.is_timeout() => (0, "timed out".to_string()),
        Err(_) => (0, delivery_status(0)),
    };
    let duration = (started.elapsed().as_secs_f64() * 100.0).round() / 100.0;
    let mut inner = lock(&shared);
    let id = inner.alloc_delivery_id();
    inner.deliveries.push(DeliveryRec {
        id,
        delivered_at,
        redelivery: true,
        duration,
        status,
        status_code,
        ..original
    });
}

// ---------------------------------------------------------------------------
// /repos/{owner}/{repo}/...
// ---------------------------------------------------------------------------

async fn repos_api(
    shared: &Shared,
    parts: &Parts,
    auth: Option<&str>,
    owner: &str,
    repo: &str,
    rest: &[&str],
    body: Bytes,
) -> Response {
    // 1. Credentials are checked before anything else (even unknown routes).
    let scope = match auth {
        None => None,
        Some(value) => {
            let token = match split_auth(value) {
                Some((scheme, tok)) if scheme == "bearer" || scheme == "token" => tok,
                _ => return bad_credentials(),
            };
            match lock(shared).token_scope(token) {
                Some(scope) => Some(scope),
                None => return bad_credentials(),
            }
        }
    };
    // 2. Route.
    let Some(route) = repo_route(&parts.method, rest) else {
        return not_found();
    };
    // 3. Authentication required for the (private) repositories of the fake.
    let Some(scope) = scope else {
        return gh_error(StatusCode::UNAUTHORIZED, "Requires authentication");
    };
    // 4. Repository visible to the token? (Other repositories of the
    // installation are as invisible as anyone else's.)
    let (idx, git_dir) = {
        let inner = lock(shared);
        match inner.repo_index(owner, repo) {
            Some(i) if scope.reaches(&inner.repos[i]) => (i, inner.git_dir(owner, repo)),
            _ => return not_found(),
        }
    };
    // 5. Permission for what the route does.
    if !route
        .needs()
        .iter()
        .any(|(permission, level)| scope.allows(permission, level))
    {
        return gh_error(StatusCode::FORBIDDEN, FORBIDDEN_TO_INTEGRATION);
    }
    // 6. Body.
    let json_body = if parts.method == Method::POST || parts.method == Method::PATCH {
        if body.iter().all(u8::is_ascii_whitespace) {
            Value::Object(Default::default())
        } else {
            match serde_json::from_slice::<Value>(&body) {
                Ok(v @ Value::Object(_)) => v,
                Ok(_) => {
                    return gh_error(
                        StatusCode::BAD_REQUEST,
                        "Problems parsing JSON: body must be an object",
                    );
                }
                Err(_) => return gh_error(StatusCode::BAD_REQUEST, "Problems parsing JSON"),
            }
        }
    } else {
        Value::Null
    };
    let query: HashMap<String, String> = Query::try_from_uri(&parts.uri)
        .map(|Query(q)| q)
        .unwrap_or_default();

    match route {
        RepoRoute::CreateComment(issue) => create_comment(shared, idx, issue, &json_body),
        RepoRoute::ListComments(issue) => list_comments(shared, idx, issue),
        RepoRoute::GetComment(id) => get_comment(shared, idx, id),
        RepoRoute::UpdateComment(id) => update_comment(shared, idx, id, &json_body),
        RepoRoute::CreatePull => create_pull(shared, idx, &git_dir, &json_body).await,
        RepoRoute::ListPulls => list_pulls(shared, idx, &git_dir, &query).await,
        RepoRoute::GetPull(n) => get_pull(shared, idx, &git_dir, n).await,
        RepoRoute::CreateCheckRun => create_check_run(shared, idx, &git_dir, &json_body).await,
        RepoRoute::GetCheckRun(id) => get_check_run(shared, idx, id),
        RepoRoute::UpdateCheckRun(id) => update_check_run(shared, idx, id, &json_body),
    }
}

// --- issue comments --------------------------------------------------------

fn comment_body(body: &Value) -> Result<String, Response> {
    match body.get("body") {
        Some(Value::String(s)) => {
            if s.chars().count() > MAX_BODY_CHARS {
                Err(validation_failed(json!([{
                    "resource": "IssueComment",
                    "code": "custom",
                    "field": "body",
                    "message": format!("body is too long (maximum is {MAX_BODY_CHARS} characters)"),
                }])))
            } else {
                Ok(s.clone())
            }
        }
        _ => Err(validation_failed(json!([{
            "resource": "IssueComment",
            "code": "missing_field",
            "field": "body",
        }]))),
    }
}

fn create_comment(shared: &Shared, idx: usize, issue: u64, body: &Value) -> Response {
    let text = match comment_body(body) {
        Ok(t) => t,
        Err(resp) => return resp,
    };
    let mut inner = lock(shared);
    let id = inner.alloc_id();
    let now = Utc::now();
    let rec = CommentRec {
        id,
        issue,
        body: text,
        edits: Vec::new(),
        user_login: BOT_LOGIN.to_string(),
        created_at: now,
        updated_at: now,
    };
    let value = comment_json(&inner.base_url, &inner.repos[idx], &rec);
    inner.repos[idx].comments.push(rec);
    json_response(StatusCode::CREATED, &value)
}

fn list_comments(shared: &Shared, idx: usize, issue: u64) -> Response {
    let inner = lock(shared);
    let r = &inner.repos[idx];
    let items: Vec<Value> = r
        .comments
        .iter()
        .filter(|c| c.issue == issue)
        .map(|c| comment_json(&inner.base_url, r, c))
        .collect();
    json_response(StatusCode::OK, &Value::Array(items))
}

fn get_comment(shared: &Shared, idx: usize, id: u64) -> Response {
    let inner = lock(shared);
    let r = &inner.repos[idx];
    match r.comments.iter().find(|c| c.id == id) {
        Some(c) => json_response(StatusCode::OK, &comment_json(&inner.base_url, r, c)),
        None => not_found(),
    }
}

fn update_comment(shared: &Shared, idx: usize, id: u64, body: &Value) -> Response {
    let mut inner = lock(shared);
    if !inner.repos[idx].comments.iter().any(|c| c.id == id) {
        return not_found();
    }
    let text = match comment_body(body) {
        Ok(t) => t,
        Err(resp) => return resp,
    };
    let inner = &mut *inner;
    let repo = &mut inner.repos[idx];
    let pos = repo
        .comments
        .iter()
        .position(|c| c.id == id)
        .expect("checked above");
    let c = &mut repo.comments[pos];
    let previous = std::mem::replace(&mut c.body, text);
    c.edits.push(previous);
    c.updated_at = Utc::now();
    let value = comment_json(&inner.base_url, repo, &repo.comments[pos]);
    json_response(StatusCode::OK, &value)
}

// --- pull requests ---------------------------------------------------------

async fn create_pull(shared: &Shared, idx: usize, git_dir: &Path, body: &Value) -> Response {
    let mut missing = Vec::new();
    for field in ["title", "head", "base"] {
        match body.get(field) {
            Some(Value::String(s)) if !s.is_empty() => {}
            _ => missing.push(json!({
                "resource": "PullRequest",
                "field": field,
                "code": "missing_field",
            })),
        }
    }
    if !missing.is_empty() {
        return validation_failed(Value::Array(missing));
    }
    let title = str_field(body, "title").unwrap_or_default();
    if title.chars().count() > MAX_TITLE_CHARS {
        return validation_failed(json!([{
            "resource": "Issue",
            "code": "custom",
            "field": "title",
            "message": format!("title is too long (maximum is {MAX_TITLE_CHARS} characters)"),
        }]));
    }
    let head_param = str_field(body, "head").unwrap_or_default();
    let base_ref = str_field(body, "base").unwrap_or_default();
    let pr_body = body.get("body").and_then(Value::as_str).map(str::to_string);
    let draft = body.get("draft").and_then(Value::as_bool).unwrap_or(false);
    if pr_body
        .as_ref()
        .is_some_and(|b| b.chars().count() > MAX_BODY_CHARS)
    {
        return validation_failed(json!([{
            "resource": "Issue",
            "code": "custom",
            "field": "body",
            "message": format!("body is too long (maximum is {MAX_BODY_CHARS} characters)"),
        }]));
    }

    let repo_owner = lock(shared).repos[idx].owner.clone();
    // `head` is either `branch` or `owner:branch`; forks are not modelled.
    let head_ref = match head_param.split_once(':') {
        Some((o, b)) if o.eq_ignore_ascii_case(&repo_owner) => Some(b.to_string()),
        Some(_) => None,
        None => Some(head_param.clone()),
    };
    let base_sha = branch_sha_async(git_dir, &base_ref).await;
    let Some(base_sha) = base_sha else {
        return validation_failed(json!([{
            "resource": "PullRequest",
            "field": "base",
            "code": "invalid",
        }]));
    };
    let head = match &head_ref {
        Some(h) => branch_sha_async(git_dir, h)
            .await
            .map(|sha| (h.clone(), sha)),
        None => None,
    };
    let Some((head_ref, head_sha)) = head else {
        return validation_failed(json!([{
            "resource": "PullRequest",
            "field": "head",
            "code": "invalid",
        }]));
    };
    {
        let inner = lock(shared);
        let r = &inner.repos[idx];
        if r.pulls
            .iter()
            .any(|p| p.state == "open" && p.head_ref == head_ref && p.base_ref == base_ref)
        {
            return validation_failed(json!([{
                "resource": "PullRequest",
                "code": "custom",
                "message": format!("A pull request already exists for {}:{}.", r.owner, head_ref),
            }]));
        }
    }
    let no_commits = head_sha == base_sha
        || git_succeeds_async(
            git_dir,
            &["merge-base", "--is-ancestor", &head_sha, &base_sha],
        )
        .await;
    if no_commits {
        return validation_failed(json!([{
            "resource": "PullRequest",
            "code": "custom",
            "message": format!("No commits between {base_ref} and {head_ref}"),
        }]));
    }

    let mut inner = lock(shared);
    let id = inner.alloc_id();
    let now = Utc::now();
    let repo = &mut inner.repos[idx];
    let number = repo.next_number;
    repo.next_number += 1;
    repo.pulls.push(PullRec {
        id,
        number,
        title,
        body: pr_body,
        head_ref,
        head_sha,
        base_ref,
        base_sha,
        state: "open".to_string(),
        draft,
        created_at: now,
        updated_at: now,
    });
    let r = &inner.repos[idx];
    let value = pull_json(&inner.base_url, r, r.pulls.last().expect("just pushed"));
    json_response(StatusCode::CREATED, &value)
}

/// Refreshes the head/base shas of open PRs from the bare repo (GitHub
/// updates them when branches move).
async fn refresh_pull_shas(shared: &Shared, idx: usize, git_dir: &Path, numbers: &[u64]) {
    let refs: Vec<(u64, String, String)> = {
        let inner = lock(shared);
        inner.repos[idx]
            .pulls
            .iter()
            .filter(|p| p.state == "open" && numbers.contains(&p.number))
            .map(|p| (p.number, p.head_ref.clone(), p.base_ref.clone()))
            .collect()
    };
    for (number, head_ref, base_ref) in refs {
        let head_sha = branch_sha_async(git_dir, &head_ref).await;
        let base_sha = branch_sha_async(git_dir, &base_ref).await;
        let mut inner = lock(shared);
        if let Some(p) = inner.repos[idx]
            .pulls
            .iter_mut()
            .find(|p| p.number == number)
        {
            if let Some(sha) = head_sha {
                p.head_sha = sha;
            }
            if let Some(sha) = base_sha {
                p.base_sha = sha;
            }
        }
    }
}

async fn list_pulls(
    shared: &Shared,
    idx: usize,
    git_dir: &Path,
    query: &HashMap<String, String>,
) -> Response {
    let state = query.get("state").map(String::as_str).unwrap_or("open");
    if !matches!(state, "open" | "closed" | "all") {
        return validation_failed(json!([{
            "resource": "PullRequest",
            "field": "state",
            "code": "invalid",
        }]));
    }
    // Like GitHub, a `head` filter without the `owner:` prefix is ignored.
    let head_filter = query
        .get("head")
        .and_then(|h| h.split_once(':'))
        .map(|(o, b)| (o.to_string(), b.to_string()));
    let base_filter = query.get("base").cloned();

    let numbers: Vec<u64> = {
        let inner = lock(shared);
        let r = &inner.repos[idx];
        r.pulls
            .iter()
            .filter(|p| state == "all" || p.state == state)
            .filter(|p| {
                head_filter
                    .as_ref()
                    .is_none_or(|(o, b)| o.eq_ignore_ascii_case(&r.owner) && *b == p.head_ref)
            })
            .filter(|p| base_filter.as_ref().is_none_or(|b| *b == p.base_ref))
            .map(|p| p.number)
            .collect()
    };
    refresh_pull_shas(shared, idx, git_dir, &numbers).await;
    let inner = lock(shared);
    let r = &inner.repos[idx];
    // Default sort: created, descending.
    let items: Vec<Value> = r
        .pulls
        .iter()
        .rev()
        .filter(|p| numbers.contains(&p.number))
        .map(|p| pull_json(&inner.base_url, r, p))
        .collect();
    json_response(StatusCode::OK, &Value::Array(items))
}

async fn get_pull(shared: &Shared, idx: usize, git_dir: &Path, number: u64) -> Response {
    refresh_pull_shas(shared, idx, git_dir, &[number]).await;
    let inner = lock(shared);
    let r = &inner.repos[idx];
    match r.pulls.iter().find(|p| p.number == number) {
        Some(p) => json_response(StatusCode::OK, &pull_json(&inner.base_url, r, p)),
        None => not_found(),
    }
}

// --- check runs ------------------------------------------------------------

/// Fields of a check-run create/update request, validated.
struct CheckRunInput {
    name: Option<String>,
    status: Option<String>,
    conclusion: Option<String>,
    started_at: Option<DateTime<Utc>>,
    completed_at: Option<DateTime<Utc>>,
    details_url: Option<Option<String>>,
    external_id: Option<Option<String>>,
    /// (title, summary, text)
    output: Option<(String, String, Option<String>)>,
}

fn parse_check_run_input(body: &Value) -> Result<CheckRunInput, Response> {
    let name = match body.get("name") {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => {
            return Err(invalid_request(&format!(
                "For 'properties/name', {other} is not a string."
            )));
        }
    };
    let status = match body.get("status") {
        None => None,
        Some(Value::String(s)) if CHECK_STATUSES.contains(&s.as_str()) => Some(s.clone()),
        Some(other) => {
            return Err(invalid_request(&format!(
                "For 'properties/status', {other} is not a member of {CHECK_STATUSES:?}."
            )));
        }
    };
    let conclusion = match body.get("conclusion") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if CHECK_CONCLUSIONS.contains(&s.as_str()) => Some(s.clone()),
        Some(other) => {
            return Err(invalid_request(&format!(
                "For 'properties/conclusion', {other} is not a member of {CHECK_CONCLUSIONS:?}."
            )));
        }
    };
    let started_at = parse_time(body, "started_at")?;
    let completed_at = parse_time(body, "completed_at")?;
    let details_url = opt_string(body, "details_url")?;
    let external_id = opt_string(body, "external_id")?;
    let output = match body.get("output") {
        None | Some(Value::Null) => None,
        Some(out @ Value::Object(_)) => {
            let mut fields = Vec::new();
            for key in ["title", "summary"] {
                match out.get(key) {
                    Some(Value::String(s)) => fields.push(s.clone()),
                    _ => {
                        return Err(invalid_request(&format!("\"{key}\" wasn't supplied.")));
                    }
                }
            }
            let text = match out.get("text") {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) => Some(s.clone()),
                Some(other) => {
                    return Err(invalid_request(&format!(
                        "For 'properties/text', {other} is not a string."
                    )));
                }
            };
            for value in [Some(&fields[1]), text.as_ref()].into_iter().flatten() {
                let n = value.chars().count();
                if n > MAX_CHECK_OUTPUT_CHARS {
                    return Err(invalid_request(&format!(
                        "Only {MAX_CHECK_OUTPUT_CHARS} characters are allowed; {n} were supplied."
                    )));
                }
            }
            if fields[0].chars().count() > MAX_CHECK_TITLE_CHARS {
                return Err(validation_failed(json!([{
                    "resource": "CheckRun",
                    "code": "custom",
                    "field": "title",
                    "message": format!("title is too long (maximum is {MAX_CHECK_TITLE_CHARS} characters)"),
                }])));
            }
            let summary = fields.pop().unwrap_or_default();
            let title = fields.pop().unwrap_or_default();
            Some((title, summary, text))
        }
        Some(other) => {
            return Err(invalid_request(&format!(
                "For 'properties/output', {other} is not an object."
            )));
        }
    };
    if let Some(actions) = body.get("actions") {
        match actions {
            Value::Array(a) if a.len() <= 3 => {}
            _ => {
                return Err(invalid_request(
                    "For 'properties/actions', at most 3 actions are allowed.",
                ));
            }
        }
    }
    Ok(CheckRunInput {
        name,
        status,
        conclusion,
        started_at,
        completed_at,
        details_url,
        external_id,
        output,
    })
}

/// Applies `input` to `rec` with GitHub's status/conclusion rules.
fn apply_check_run_input(rec: &mut CheckRunRec, input: CheckRunInput) -> Result<(), Response> {
    let now = Utc::now();
    if let Some(conclusion) = input.conclusion {
        // Providing a conclusion automatically sets the status to completed.
        rec.status = "completed".to_string();
        rec.conclusion = Some(conclusion);
        rec.completed_at = Some(input.completed_at.unwrap_or(now));
    } else if let Some(status) = input.status {
        if status == "completed" {
            if rec.conclusion.is_none() {
                return Err(invalid_request(
                    "\"conclusion\" wasn't supplied; it is required when \"status\" is \"completed\".",
                ));
            }
        } else {
            rec.conclusion = None;
            rec.completed_at = None;
        }
        rec.status = status;
    }
    if let Some(completed_at) = input.completed_at
        && rec.status == "completed"
    {
        rec.completed_at = Some(completed_at);
    }
    if let Some(started_at) = input.started_at {
        rec.started_at = Some(started_at);
    }
    if let Some(name) = input.name {
        rec.name = name;
    }
    if let Some(details_url) = input.details_url {
        rec.details_url = details_url;
    }
    if let Some(external_id) = input.external_id {
        rec.external_id = external_id;
    }
    if let Some((title, summary, text)) = input.output {
        rec.output_title = Some(title);
        rec.output_summary = Some(summary);
        rec.output_text = text;
    }
    Ok(())
}

async fn create_check_run(shared: &Shared, idx: usize, git_dir: &Path, body: &Value) -> Response {
    for key in ["name", "head_sha"] {
        if !matches!(body.get(key), Some(Value::String(_))) {
            return invalid_request(&format!("\"{key}\" wasn't supplied."));
        }
    }
    let head_sha = str_field(body, "head_sha").unwrap_or_default();
    let input = match parse_check_run_input(body) {
        Ok(i) => i,
        Err(resp) => return resp,
    };
    if !commit_exists_async(git_dir, &head_sha).await {
        return gh_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            &format!("No commit found for SHA: {head_sha}"),
        );
    }
    let mut inner = lock(shared);
    let id = inner.alloc_id();
    let next_suite = inner.alloc_id();
    let suite_id = *inner.repos[idx]
        .check_suites
        .entry(head_sha.clone())
        .or_insert(next_suite);
    let mut rec = CheckRunRec {
        id,
        name: String::new(),
        head_sha,
        status: "queued".to_string(),
        conclusion: None,
        started_at: Some(Utc::now()),
        completed_at: None,
        details_url: None,
        external_id: None,
        output_title: None,
        output_summary: None,
        output_text: None,
        suite_id,
    };
    if let Err(resp) = apply_check_run_input(&mut rec, input) {
        return resp;
    }
    let value = check_run_json(&inner.base_url, &inner.repos[idx], &rec);
    inner.repos[idx].check_runs.push(rec);
    json_response(StatusCode::CREATED, &value)
}

fn get_check_run(shared: &Shared, idx: usize, id: u64) -> Response {
    let inner = lock(shared);
    let r = &inner.repos[idx];
    match r.check_runs.iter().find(|c| c.id == id) {
        Some(c) => json_response(StatusCode::OK, &check_run_json(&inner.base_url, r, c)),
        None => not_found(),
    }
}

fn update_check_run(shared: &Shared, idx: usize, id: u64, body: &Value) -> Response {
    let mut inner = lock(shared);
    let inner = &mut *inner;
    let repo = &mut inner.repos[idx];
    let Some(pos) = repo.check_runs.iter().position(|c| c.id == id) else {
        return not_found();
    };
    let input = match parse_check_run_input(body) {
        Ok(i) => i,
        Err(resp) => return resp,
    };
    // Validate on a copy so a rejected update leaves the run untouched.
    let current = &repo.check_runs[pos];
    let mut updated = CheckRunRec {
        id: current.id,
        name: current.name.clone(),
        head_sha: current.head_sha.clone(),
        status: current.status.clone(),
        conclusion: current.conclusion.clone(),
        started_at: current.started_at,
        completed_at: current.completed_at,
        details_url: current.details_url.clone(),
        external_id: current.external_id.clone(),
        output_title: current.output_title.clone(),
        output_summary: current.output_summary.clone(),
        output_text: current.output_text.clone(),
        suite_id: current.suite_id,
    };
    if let Err(resp) = apply_check_run_input(&mut updated, input) {
        return resp;
    }
    let value = check_run_json(&inner.base_url, repo, &updated);
    repo.check_runs[pos] = updated;
    json_response(StatusCode::OK, &value)
}

// ---------------------------------------------------------------------------
// git smart HTTP via `git http-backend`
// ---------------------------------------------------------------------------

fn git_unauthorized() -> Response {
    let mut resp = Response::new(Body::from(
        "Invalid username or token. Password authentication is not supported for Git operations.\n",
    ));
    *resp.status_mut() = StatusCode::UNAUTHORIZED;
    let h = resp.headers_mut();
    h.insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"GitHub\""),
    );
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

fn git_plain(status: StatusCode, text: impl Into<Body>) -> Response {
    let mut resp = Response::new(text.into());
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// What the token of a valid `Basic x-access-token:<token>` header may reach.
fn git_auth_scope(shared: &Shared, headers: &HeaderMap) -> Option<TokenScope> {
    let value = header_str(headers, &header::AUTHORIZATION)?;
    let (scheme, creds) = split_auth(value)?;
    if scheme != "basic" {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(creds)
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, token) = decoded.split_once(':')?;
    if user != "x-access-token" {
        return None;
    }
    lock(shared).token_scope(token)
}

async fn git_http(
    shared: &Shared,
    parts: &Parts,
    body: Bytes,
    owner: &str,
    repo: &str,
    rest: &str,
) -> Response {
    if rest.split('/').any(|s| s == ".." || s == ".") || owner.contains("..") {
        return git_plain(StatusCode::NOT_FOUND, "Not Found\n");
    }
    let Some(scope) = git_auth_scope(shared, &parts.headers) else {
        return git_unauthorized();
    };
    let (root, canonical_owner, canonical_name) = {
        let inner = lock(shared);
        match inner.repo(owner, repo) {
            Some(r) if scope.reaches(r) => (inner.root.clone(), r.owner.clone(), r.name.clone()),
            _ => return git_plain(StatusCode::NOT_FOUND, "Repository not found.\n"),
        }
    };
    // A push (receive-pack, including its ref advertisement) writes contents;
    // everything else reads them.
    let pushing = rest == "git-receive-pack"
        || (rest == "info/refs"
            && parts
                .uri
                .query()
                .is_some_and(|q| q.split('&').any(|kv| kv == "service=git-receive-pack")));
    if !scope.allows("contents", if pushing { "write" } else { "read" }) {
        return git_plain(
            StatusCode::FORBIDDEN,
            format!(
                "Permission to {canonical_owner}/{canonical_name}.git denied to {BOT_LOGIN}.\n"
            ),
        );
    }

    let path_info = format!("/{canonical_owner}/{canonical_name}.git/{rest}");
    let mut cmd = tokio::process::Command::from(git_cmd(&root, &["http-backend"]));
    cmd.env("GIT_PROJECT_ROOT", &root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("GATEWAY_INTERFACE", "CGI/1.1")
        .env("SERVER_PROTOCOL", "HTTP/1.1")
        .env("SERVER_SOFTWARE", "fake-github")
        .env("PATH_INFO", &path_info)
        .env("REQUEST_METHOD", parts.method.as_str())
        .env("QUERY_STRING", parts.uri.query().unwrap_or(""))
        .env("REMOTE_USER", "x-access-token")
        .env("REMOTE_ADDR", "127.0.0.1")
        .env("CONTENT_LENGTH", body.len().to_string())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    if let Some(ct) = header_str(&parts.headers, &header::CONTENT_TYPE) {
        cmd.env("CONTENT_TYPE", ct);
    }
    if let Some(enc) = header_str(&parts.headers, &header::CONTENT_ENCODING) {
        cmd.env("HTTP_CONTENT_ENCODING", enc);
    }
    if let Some(proto) = header_str(&parts.headers, &HeaderName::from_static("git-protocol")) {
        cmd.env("GIT_PROTOCOL", proto);
    }

    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(_) => {
            return git_plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                "failed to spawn git http-backend\n",
            );
        }
    };
    let mut stdin = child.stdin.take().expect("piped stdin");
    let writer = tokio::spawn(async move {
        let _ = stdin.write_all(&body).await;
        let _ = stdin.shutdown().await;
    });
    let output = child.wait_with_output().await;
    let _ = writer.await;
    let Ok(output) = output else {
        return git_plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            "git http-backend failed\n",
        );
    };
    parse_cgi_response(&output.stdout).unwrap_or_else(|| {
        git_plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            "git http-backend produced an invalid response\n",
        )
    })
}

fn parse_cgi_response(out: &[u8]) -> Option<Response> {
    let (head_end, body_start) = find_header_end(out)?;
    let head = std::str::from_utf8(&out[..head_end]).ok()?;
    let mut status = StatusCode::OK;
    let mut headers = HeaderMap::new();
    for line in head.lines() {
        let line = line.trim_end_matches('\r');
        if line.is_empty() {
            continue;
        }
        let (name, value) = line.split_once(':')?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            let code = value.split_whitespace().next()?.parse::<u16>().ok()?;
            status = StatusCode::from_u16(code).ok()?;
        } else {
            let name = HeaderName::from_bytes(name.trim().as_bytes()).ok()?;
            headers.append(name, HeaderValue::from_str(value).ok()?);
        }
    }
    let mut resp = Response::new(Body::from(out[body_start..].to_vec()));
    *resp.status_mut() = status;
    *resp.headers_mut() = headers;
    Some(resp)
}

/// (end of headers, start of body) of a CGI response.
fn find_header_end(out: &[u8]) -> Option<(usize, usize)> {
    let crlf = out.windows(4).position(|w| w == b"\r\n\r\n");
    let lf = out.windows(2).position(|w| w == b"\n\n");
    match (crlf, lf) {
        (Some(c), Some(l)) if l < c => Some((l, l + 2)),
        (Some(c), _) => Some((c, c + 4)),
        (None, Some(l)) => Some((l, l + 2)),
        (None, None) => None,
    }
}
