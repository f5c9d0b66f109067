//! The test harness: a fake GitHub, the real router and workers on a fresh database, and
//! helpers to send signed webhooks built from GitHub's own payloads.
#![allow(dead_code)]

pub mod fake_github;
pub mod feed;
pub mod payloads;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use conveyor::config::{Config, GitHubConfig};
use conveyor::engine::TaskState;
use conveyor::pipeline::sandbox::SandboxMode;
use conveyor::service::Service;
use conveyor::webhook::signature;
use serde_json::{Value, json};
use sqlx::PgPool;
use tempfile::TempDir;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

pub use fake_github::FakeGitHub;

pub const WEBHOOK_SECRET: &str = "test webhook secret";
pub const API_TOKEN: &str = "test api token";
pub const INSTALLATION_ID: i64 = 1001;
pub const OWNER: &str = "acme";
pub const REPO: &str = "widgets";

/// A pipeline whose `implement` step writes a file from the task's title and whose `verify`
/// step checks it, as a user's repository would carry.
pub const PIPELINE_YAML: &str = "pipelines:
  default:
    steps:
      - name: implement
        run: ./scripts/do-the-work.sh
      - name: verify
        run: grep -q . NOTES.md
";

pub const WORK_SCRIPT: &str = "#!/bin/sh
set -e
printf '%s\\n' \"$CONVEYOR_TASK_TITLE\" > NOTES.md
echo \"implemented issue $CONVEYOR_ISSUE_NUMBER\"
";

pub struct Harness {
    pub github: FakeGitHub,
    pub pool: PgPool,
    pub router: Router,
    pub data_dir: TempDir,
    /// Interpretation and workers; dropping the set aborts them with the harness.
    _jobs: JoinSet<()>,
}

pub fn config(github: &FakeGitHub, data_dir: &Path, webhook_secret: Option<&str>) -> Config {
    Config {
        database_url: String::new(),
        listen: "127.0.0.1:0".parse().unwrap(),
        public_url: None,
        data_dir: data_dir.to_owned(),
        mirror_budget_mb: 10_240,
        sandbox: SandboxMode::On,
        workers: 2,
        api_token: Some(API_TOKEN.to_owned().into()),
        secret_key: None,
        webhook_buffer_mb: 64,
        webhook_body_timeout_secs: 10,
        redelivery_interval_secs: 0,
        report_waiting_after_secs: 10,
        delivery_retention_days: 14,
        task_retention_days: 90,
        // Short, so heartbeats (and the due-retry check riding on them) come every second.
        lease_timeout_secs: 6,
        log_format: conveyor::logging::LogFormat::Text,
        shutdown_grace_secs: 30,
        feature_prd_auto_approve_review: false,
        github: GitHubConfig {
            app_id: Some(fake_github::APP_ID.to_string()),
            private_key: Some(fake_github::private_key_pem().to_owned().into()),
            private_key_path: None,
            client_id: None,
            client_secret: None,
            webhook_secret: webhook_secret.map(|s| s.to_owned().into()),
            api_url: github.url.clone(),
            git_url: github.url.clone(),
        },
    }
}

impl Harness {
    /// The service with its workers running against a fake GitHub holding one installation.
    pub async fn start(pool: PgPool) -> Harness {
        Self::start_with(pool, Some(WEBHOOK_SECRET), true, true).await
    }

    pub async fn start_with_secret(pool: PgPool, secret: Option<&str>) -> Harness {
        Self::start_with(pool, secret, true, true).await
    }

    /// No worker sessions: requests are decided and tasks created, but none runs.
    pub async fn start_idle(pool: PgPool) -> Harness {
        Self::start_configured(pool, |config| config.workers = 0).await
    }

    /// No GitHub App configured: deliveries are interpreted, and their requests wait.
    pub async fn start_without_app(pool: PgPool) -> Harness {
        Self::start_with(pool, Some(WEBHOOK_SECRET), false, true).await
    }

    pub async fn start_without_app_or_token(pool: PgPool) -> Harness {
        Self::start_with(pool, Some(WEBHOOK_SECRET), false, false).await
    }

    async fn start_with(pool: PgPool, secret: Option<&str>, app: bool, api_token: bool) -> Harness {
        Self::start_configured(pool, |config| {
            config.github.webhook_secret = secret.map(|s| s.to_owned().into());
            if !app {
                config.github.app_id = None;
            }
            if !api_token {
                config.api_token = None;
            }
        })
        .await
    }

    /// The service with the test settings as `adjust` changes them.
    pub async fn start_configured(pool: PgPool, adjust: impl FnOnce(&mut Config)) -> Harness {
        let github = FakeGitHub::start().await;
        github.add_installation(INSTALLATION_ID, OWNER);
        let data_dir = tempfile::tempdir().unwrap();
        let mut config = config(&github, data_dir.path(), Some(WEBHOOK_SECRET));
        adjust(&mut config);
        let service = Service::new(&config, pool.clone()).await.unwrap();
        let jobs = service.spawn_background(CancellationToken::new());
        Harness {
            github,
            pool,
            router: service.router(),
            data_dir,
            _jobs: jobs,
        }
    }

    /// [`Harness::start_configured`], served on a real socket whose address is the
    /// service's `CONVEYOR_PUBLIC_URL`, for flows where GitHub sends a browser back to it.
    pub async fn start_public(pool: PgPool, adjust: impl FnOnce(&mut Config)) -> (Harness, String) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let public_url = url.clone();
        let harness = Self::start_configured(pool, |config| {
            config.public_url = Some(public_url);
            adjust(config);
        })
        .await;
        let router = harness.router.clone();
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        (harness, url)
    }

    /// Stops every job of the service at once, as a killed process would, and starts the
    /// service again on the same database, fake GitHub and data directory.
    pub async fn restart(&mut self) {
        self._jobs.abort_all();
        while self._jobs.join_next().await.is_some() {}
        let config = config(&self.github, self.data_dir.path(), Some(WEBHOOK_SECRET));
        let service = Service::new(&config, self.pool.clone()).await.unwrap();
        self._jobs = service.spawn_background(CancellationToken::new());
        self.router = service.router();
    }

    /// The repository `acme/widgets` of the installation, holding `files`.
    pub fn add_repo(&self, files: &[(&str, &str)]) {
        self.github.add_repo(INSTALLATION_ID, OWNER, REPO, files);
    }

    /// Labels issue `number` with the trigger label and waits for the task it creates to end
    /// and its reports to reach GitHub.
    pub async fn label_and_finish(
        &self,
        delivery: &str,
        number: i64,
        title: &str,
    ) -> (i64, TaskState) {
        let task_id = self.label(delivery, number, title).await;
        let state = self.final_state(task_id).await;
        self.settled().await;
        (task_id, state)
    }

    /// Labels issue `number` with the trigger label; returns the task it creates.
    pub async fn label(&self, delivery: &str, number: i64, title: &str) -> i64 {
        let (status, reply) = self
            .post_signed(
                "issues",
                delivery,
                &labeled_issue(number, title, "conveyor"),
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{reply}");
        assert_eq!(self.request_outcome(delivery).await, "task_created");
        sqlx::query_scalar("SELECT id FROM tasks WHERE issue_number = $1 ORDER BY id DESC LIMIT 1")
            .bind(number)
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    /// Waits for the request the delivery queued to be decided, and returns its outcome.
    pub async fn request_outcome(&self, delivery: &str) -> String {
        assert_eq!(self.outcome(delivery).await, "request_queued");
        wait_until(&format!("request of {delivery} decided"), || async {
            sqlx::query_scalar::<_, Option<String>>(
                "SELECT r.outcome FROM requests r JOIN deliveries d ON d.id = r.delivery_id
                 WHERE d.delivery_id = $1 AND r.processed_at IS NOT NULL",
            )
            .bind(delivery)
            .fetch_optional(&self.pool)
            .await
            .unwrap()
            .flatten()
        })
        .await
    }

    /// Waits until the outbox has delivered everything queued for GitHub.
    pub async fn settled(&self) {
        wait_until("the outbox delivered everything", || async {
            let pending: i64 =
                sqlx::query_scalar("SELECT count(*) FROM outbox WHERE delivered_at IS NULL")
                    .fetch_one(&self.pool)
                    .await
                    .unwrap();
            (pending == 0).then_some(())
        })
        .await
    }

    /// A repository of the installation with a working pipeline and its script.
    pub fn add_repo_with_pipeline(&self) {
        self.add_repo(&[
            (".github/conveyor.yml", PIPELINE_YAML),
            ("scripts/do-the-work.sh", WORK_SCRIPT),
            ("README.md", "# widgets\n"),
        ]);
    }

    /// Posts a webhook through the real router, signed unless `signature` overrides it.
    pub async fn post(
        &self,
        event: &str,
        delivery: &str,
        body: &[u8],
        signature: Option<&str>,
    ) -> (StatusCode, Value) {
        let signature = signature.map_or_else(
            || signature::sign(WEBHOOK_SECRET.as_bytes(), body),
            str::to_owned,
        );
        let request = Request::post("/webhooks/github")
            .header("content-type", "application/json")
            .header("x-github-event", event)
            .header("x-github-delivery", delivery)
            .header("x-hub-signature-256", signature)
            .body(Body::from(body.to_vec()))
            .unwrap();
        send(&self.router, request).await
    }

    pub async fn post_signed(
        &self,
        event: &str,
        delivery: &str,
        body: &[u8],
    ) -> (StatusCode, Value) {
        self.post(event, delivery, body, None).await
    }

    /// Tells Conveyor the App is installed on `acme/widgets`, as GitHub does: a signed
    /// `installation.created` delivery (the real fixture, for this installation and
    /// repository).
    pub async fn install(&self) {
        let mut payload = fixture("installation/created.payload.json");
        payload["installation"]["id"] = json!(INSTALLATION_ID);
        payload["installation"]["account"]["login"] = json!(OWNER);
        payload["repositories"] = json!([{
            "id": 4242, "node_id": "R_1", "name": REPO,
            "full_name": format!("{OWNER}/{REPO}"), "private": true,
        }]);
        let body = serde_json::to_vec(&payload).unwrap();
        let (status, reply) = self.post_signed("installation", "install-1", &body).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{reply}");
        wait_until("the installation is known", || async {
            let known: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM installation_repositories WHERE full_name = $1)",
            )
            .bind(format!("{OWNER}/{REPO}"))
            .fetch_one(&self.pool)
            .await
            .unwrap();
            known.then_some(())
        })
        .await;
    }

    /// Calls the operator API, with `token` as the bearer token if given.
    pub async fn api(&self, method: &str, path: &str, token: Option<&str>) -> (StatusCode, Value) {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        send(&self.router, request.body(Body::empty()).unwrap()).await
    }

    /// Calls the operator API with the operator token and a JSON body.
    pub async fn api_json(&self, method: &str, path: &str, body: &Value) -> (StatusCode, Value) {
        let (status, _, body) = self.api_json_located(method, path, body).await;
        (status, body)
    }

    /// Creates a board task of the harness's repository through the API: a feature of
    /// priority 2 on `main`, with `extra`'s fields on top; the task as the API answers it.
    pub async fn create_task(&self, title: &str, extra: Value) -> Value {
        let mut body = json!({
            "repository": format!("{OWNER}/{REPO}"),
            "title": title,
            "task_type": "feature",
            "priority": 2,
            "base_branch": "main",
        });
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let (status, task) = self.api_json("POST", "/api/v2/tasks", &body).await;
        assert_eq!(status, StatusCode::CREATED, "{task}");
        task
    }

    /// [`Harness::api_json`], with the reply's `Location` header.
    pub async fn api_json_located(
        &self,
        method: &str,
        path: &str,
        body: &Value,
    ) -> (StatusCode, Option<String>, Value) {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header("authorization", format!("Bearer {API_TOKEN}"))
            .header("content-type", "application/json")
            .body(Body::from(body.to_string()))
            .unwrap();
        send_located(&self.router, request).await
    }

    /// Serves the router on a real socket, for callers outside the process (GitHub's redeliveries).
    pub async fn listen(&self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let router = self.router.clone();
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        url
    }

    pub async fn task_ids(&self) -> Vec<i64> {
        sqlx::query_scalar("SELECT id FROM tasks ORDER BY id")
            .fetch_all(&self.pool)
            .await
            .unwrap()
    }

    /// Waits for the delivery to be processed for good and returns its outcome.
    pub async fn outcome(&self, delivery: &str) -> String {
        wait_until(&format!("delivery {delivery} interpreted"), || async {
            sqlx::query_scalar::<_, Option<String>>(
                "SELECT outcome FROM deliveries WHERE delivery_id = $1 AND processed_at IS NOT NULL",
            )
            .bind(delivery)
            .fetch_optional(&self.pool)
            .await
            .unwrap()
            .flatten()
        })
        .await
    }

    /// Whether the operator's pause is on for the harness's repository.
    pub async fn repo_paused(&self) -> bool {
        sqlx::query_scalar("SELECT paused FROM repositories WHERE owner = $1 AND name = $2")
            .bind(OWNER)
            .bind(REPO)
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    pub async fn state(&self, task_id: i64) -> TaskState {
        sqlx::query_scalar("SELECT state FROM tasks WHERE id = $1")
            .bind(task_id)
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    /// Waits for the task to reach `state`.
    pub async fn reach(&self, task_id: i64, state: TaskState) {
        wait_until(&format!("task {task_id} {state:?}"), || async {
            (self.state(task_id).await == state).then_some(())
        })
        .await
    }

    /// Waits for the task to reach a final state.
    pub async fn final_state(&self, task_id: i64) -> TaskState {
        wait_until(&format!("task {task_id} finished"), || async {
            let state = self.state(task_id).await;
            state.is_final().then_some(state)
        })
        .await
    }

    /// The issue's one status comment once the issue's last task's run ended (finished, put
    /// off for a retry, or parked) and the outbox delivered its report.
    pub async fn final_comment(&self, issue: u64) -> fake_github::Comment {
        let task_id: i64 = wait_until(&format!("a task for #{issue}"), || async {
            sqlx::query_scalar(
                "SELECT id FROM tasks WHERE issue_number = $1 ORDER BY id DESC LIMIT 1",
            )
            .bind(issue as i64)
            .fetch_optional(&self.pool)
            .await
            .unwrap()
        })
        .await;
        wait_until(&format!("task {task_id}'s run to end"), || async {
            let state = self.state(task_id).await;
            (!matches!(state, TaskState::Queued | TaskState::Running)).then_some(())
        })
        .await;
        self.settled().await;
        let marker = format!("<!-- conveyor:task:{task_id} -->");
        let mine: Vec<fake_github::Comment> = self
            .github
            .comments(OWNER, REPO, issue)
            .into_iter()
            .filter(|c| c.body.starts_with(&marker))
            .collect();
        assert_eq!(mine.len(), 1, "one status comment per task: {mine:#?}");
        mine.into_iter().next().unwrap()
    }

    /// Run workspaces left in the data directory (each process keeps its own in a folder).
    pub fn workspaces_left(&self) -> Vec<PathBuf> {
        let Ok(owners) = std::fs::read_dir(self.data_dir.path().join("workspaces")) else {
            return Vec::new();
        };
        owners
            .map(|owner| owner.unwrap().path())
            .filter(|owner| owner.is_dir())
            .flat_map(|owner| std::fs::read_dir(owner).unwrap())
            .map(|run| run.unwrap().path())
            .collect()
    }
}

/// The CSRF token a page's forms carry.
pub fn csrf_field(page: &str) -> String {
    let start = page.find(r#"name="csrf" value=""#).expect("a CSRF field") + 19;
    page[start..][..page[start..].find('"').unwrap()].to_owned()
}

pub async fn send(router: &Router, request: Request<Body>) -> (StatusCode, Value) {
    let (status, _, body) = send_located(router, request).await;
    (status, body)
}

/// [`send`], with the reply's `Location` header.
pub async fn send_located(
    router: &Router,
    request: Request<Body>,
) -> (StatusCode, Option<String>, Value) {
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let location = response
        .headers()
        .get("location")
        .map(|value| value.to_str().unwrap().to_owned());
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, location, body)
}

/// Polls `probe` until it yields a value; fails the test after 30 s.
pub async fn wait_until<T, F, Fut>(what: &str, probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    wait_until_within(what, Duration::from_secs(30), probe).await
}

/// [`wait_until`] for something that takes longer than usual by design (an outage).
pub async fn wait_until_within<T, F, Fut>(what: &str, limit: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `shared/fixtures/github-webhooks`: beside the checkout, or under `CONVEYOR_SHARED_DIR`
/// for a checkout elsewhere (a git worktree).
pub fn fixtures_dir() -> PathBuf {
    std::env::var_os("CONVEYOR_SHARED_DIR")
        .map_or_else(
            || Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared"),
            PathBuf::from,
        )
        .join("fixtures/github-webhooks")
}

/// One of GitHub's own example payloads from `shared/fixtures/github-webhooks`.
pub fn fixture(relative: &str) -> Value {
    let path = fixtures_dir().join(relative);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// Every example payload under `shared/fixtures/github-webhooks`, as (event, file name, payload).
pub fn all_fixtures() -> Vec<(String, String, Value)> {
    let root = fixtures_dir();
    let mut all = Vec::new();
    for event in std::fs::read_dir(&root).unwrap() {
        let event = event.unwrap().path();
        if !event.is_dir() {
            continue;
        }
        for file in std::fs::read_dir(&event).unwrap() {
            let file = file.unwrap().path();
            if file.extension().is_some_and(|e| e == "json") {
                let payload =
                    serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
                let name = |p: &Path| p.file_name().unwrap().to_string_lossy().into_owned();
                all.push((name(&event), name(&file), payload));
            }
        }
    }
    all.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    all
}

/// GitHub's `issues`/`labeled` example, patched to our installation, repository, issue and label,
/// and stamped with the time it is made, as each labelling on GitHub is.
pub fn labeled_issue(issue_number: i64, title: &str, label: &str) -> Vec<u8> {
    let mut payload = fixture("issues/labeled.payload.json");
    payload["issue"]["updated_at"] = chrono::Utc::now()
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
        .into();
    payload["installation"] = serde_json::json!({ "id": INSTALLATION_ID, "node_id": "MDIzOkludGVncmF0aW9uSW5zdGFsbGF0aW9uMTAwMQ==" });
    payload["label"]["name"] = label.into();
    payload["issue"]["number"] = issue_number.into();
    payload["issue"]["title"] = title.into();
    payload["repository"]["name"] = REPO.into();
    payload["repository"]["full_name"] = format!("{OWNER}/{REPO}").into();
    payload["repository"]["owner"]["login"] = OWNER.into();
    payload["repository"]["default_branch"] = "main".into();
    serde_json::to_vec(&payload).unwrap()
}

/// Running processes whose command line contains `marker`.
pub fn processes_with(marker: &str) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            process_running(pid) && String::from_utf8_lossy(&cmdline).contains(marker)
        })
        .collect()
}

/// Whether process `pid` still runs; a zombie waiting to be reaped does not count.
pub fn process_running(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| !stat.contains(") Z "))
}

/// A `MakeWriter` that keeps everything written to it: the logs a test reads back.
#[derive(Clone, Default)]
pub struct Captured(pub std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    /// Every log line of this thread, at every level, until the guard goes.
    pub fn logs() -> (Self, tracing::subscriber::DefaultGuard) {
        let captured = Self::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(move || writer.clone())
            .finish();
        (captured, tracing::subscriber::set_default(subscriber))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// The App as Conveyor configures it, against a fake GitHub holding one installation with
/// one repository.
pub async fn app_and_fake() -> (std::sync::Arc<conveyor::github::GitHubApp>, FakeGitHub) {
    let github = FakeGitHub::start().await;
    github.add_installation(INSTALLATION_ID, OWNER);
    github.add_repo(INSTALLATION_ID, OWNER, REPO, &[("README.md", "x\n")]);
    let dir = tempfile::tempdir().unwrap();
    let config = config(&github, dir.path(), None);
    let credentials = conveyor::github::AppCredentials::from_config(&config.github)
        .unwrap()
        .unwrap();
    let app = conveyor::github::GitHubApp::new(&github.url, credentials).unwrap();
    (std::sync::Arc::new(app), github)
}

/// Runs `pipeline` on the repository at `repo` as `conveyor run --repo REPO --pipeline
/// PIPELINE --title TITLE --body BODY` would, in the real sandbox, with its data under
/// `root`: what it printed, and whether it succeeded.
pub async fn conveyor_run(
    root: &Path,
    repo: &Path,
    pipeline: &str,
    title: &str,
    body: &str,
) -> (String, anyhow::Result<()>) {
    let mut out = Vec::new();
    let args = conveyor::local_run::LocalRun {
        repo: repo.to_str().unwrap().to_owned(),
        title: title.to_owned(),
        body: body.to_owned(),
        pipeline: pipeline.to_owned(),
        data_dir: root.join("data"),
        mirror_budget_bytes: u64::MAX,
        sandbox: conveyor::pipeline::sandbox::Sandbox::new(
            conveyor::pipeline::sandbox::SandboxMode::On,
            Vec::new(),
        ),
    };
    let result = conveyor::local_run::run(args, &mut out).await;
    (String::from_utf8(out).unwrap(), result)
}

/// A documented path template with sample values for its parameters.
pub fn sample_path(template: &str) -> String {
    template
        .replace("{owner}", "acme")
        .replace("{name}", "widgets")
        .replace("{dep_id}", "2")
        .replace("{job_id}", "1")
        .replace("{id}", "1")
}

/// A validator for the `status` answer of `method path` as the OpenAPI document describes
/// it, its refs resolved in the document.
pub fn answer_validator(path: &str, method: &str, status: u16) -> jsonschema::Validator {
    let document = conveyor::http::documented().1;
    let schema = &document["paths"][path][method]["responses"][status.to_string()]["content"]["application/json"]
        ["schema"];
    assert!(
        schema.is_object(),
        "{method} {path} answers {status} with a schema"
    );
    let mut root = schema.clone();
    root["components"] = document["components"].clone();
    jsonschema::validator_for(&root).unwrap()
}

/// Fails unless `answer` is what the document says `method path` answers with `status`.
pub fn assert_documented(path: &str, method: &str, status: u16, answer: &Value) {
    let validator = answer_validator(path, method, status);
    let errors: Vec<String> = validator
        .iter_errors(answer)
        .map(|err| err.to_string())
        .collect();
    assert!(errors.is_empty(), "{method} {path}: {errors:#?}\n{answer}");
}
