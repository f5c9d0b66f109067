//! The GitHub the loop bench points Conveyor at: a load sink on 127.0.0.1 that answers only
//! the REST calls Conveyor makes in the loop, in the shapes `github::client` and
//! `github::app` parse, and notes when each reaction and check-run write arrives. Git goes
//! to local bare repositories (`{git_root}/{owner}/{repo}.git`), which the stand-in also
//! reads branch heads from.
//!
//! It is not a fake for tests: it checks no credentials and keeps only what the bench looks
//! at (tests use `tests/support/fake_github`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{Context, bail};
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::pipeline::definition::PIPELINE_FILE;

/// A check run as Conveyor last wrote it.
#[derive(Debug, Clone)]
pub struct CheckRun {
    pub id: i64,
    pub head_sha: String,
    pub external_id: Option<String>,
    pub conclusion: Option<String>,
    /// When a write first made it ask for an action (`action_required`): the moment its
    /// Approve button appeared.
    pub buttons_at: Option<Instant>,
}

#[derive(Default)]
struct Recorded {
    /// First reaction to each issue comment, by comment id.
    reactions: HashMap<i64, Instant>,
    check_runs: Vec<CheckRun>,
    /// Bodies of the comments Conveyor wrote, by issue number.
    comments: HashMap<i64, Vec<(i64, String)>>,
}

struct Shared {
    /// `owner/name` → the bare repository.
    repos: HashMap<String, PathBuf>,
    pipeline_file: String,
    next_id: AtomicI64,
    recorded: Mutex<Recorded>,
    /// Fired after every reaction and check-run write.
    changed: Notify,
}

impl Shared {
    fn id(&self) -> i64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    fn known(&self, owner: &str, repo: &str) -> Option<&PathBuf> {
        self.repos.get(&format!("{owner}/{repo}"))
    }

    fn recorded(&self) -> std::sync::MutexGuard<'_, Recorded> {
        self.recorded.lock().expect("stand-in records")
    }
}

pub struct StandIn {
    /// The REST base, for `GITHUB_API_URL`.
    pub url: String,
    shared: Arc<Shared>,
    stop: CancellationToken,
}

impl StandIn {
    /// Serves `repos` (`owner/name`, each a bare repository under `git_root`) with
    /// `pipeline_file` as their `.github/conveyor.yml`, until dropped.
    pub async fn start(
        git_root: &Path,
        repos: &[&str],
        pipeline_file: &str,
    ) -> anyhow::Result<Self> {
        let shared = Arc::new(Shared {
            repos: repos
                .iter()
                .map(|full| (full.to_string(), git_root.join(format!("{full}.git"))))
                .collect(),
            pipeline_file: pipeline_file.to_owned(),
            next_id: AtomicI64::new(1),
            recorded: Mutex::default(),
            changed: Notify::new(),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the GitHub stand-in")?;
        let url = format!("http://{}", listener.local_addr()?);
        let stop = CancellationToken::new();
        let app = router(shared.clone());
        let stopped = stop.clone();
        tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(stopped.cancelled_owned())
                .await;
            if let Err(err) = served {
                tracing::error!(error = %err, "the GitHub stand-in stopped");
            }
        });
        Ok(Self { url, shared, stop })
    }

    /// When the first reaction to issue comment `comment_id` arrived.
    pub fn reaction(&self, comment_id: i64) -> Option<Instant> {
        self.shared.recorded().reactions.get(&comment_id).copied()
    }

    /// The newest check run of task `task_id` that shows the Approve button.
    pub fn asking_approval(&self, task_id: i64) -> Option<CheckRun> {
        let external_id = task_id.to_string();
        self.shared
            .recorded()
            .check_runs
            .iter()
            .rev()
            .find(|run| {
                run.external_id.as_deref() == Some(external_id.as_str())
                    && run.conclusion.as_deref() == Some("action_required")
            })
            .cloned()
    }

    /// Waits until the next reaction or check-run write, or `timeout`.
    pub async fn changed(&self, timeout: std::time::Duration) {
        tokio::time::timeout(timeout, self.shared.changed.notified())
            .await
            .ok();
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route(
            "/app/installations/{id}/access_tokens",
            post(installation_token),
        )
        .route("/repos/{owner}/{repo}/contents/{*path}", get(contents))
        .route(
            "/repos/{owner}/{repo}/collaborators/{user}/permission",
            get(permission),
        )
        .route(
            "/repos/{owner}/{repo}/git/ref/heads/{*branch}",
            get(branch_ref),
        )
        .route(
            "/repos/{owner}/{repo}/issues/comments/{id}/reactions",
            post(reaction),
        )
        .route(
            "/repos/{owner}/{repo}/issues/{number}/comments",
            post(create_comment).get(list_comments),
        )
        .route(
            "/repos/{owner}/{repo}/issues/comments/{id}",
            patch(update_comment),
        )
        .route("/repos/{owner}/{repo}/check-runs", post(create_check_run))
        .route(
            "/repos/{owner}/{repo}/check-runs/{id}",
            patch(update_check_run),
        )
        .route(
            "/repos/{owner}/{repo}/commits/{sha}/check-runs",
            get(list_check_runs),
        )
        .route(
            "/repos/{owner}/{repo}/pulls",
            get(list_pulls).post(create_pull),
        )
        .fallback(unexpected)
        .with_state(shared)
}

/// GitHub's shape of an error, which octocrab reads.
fn error(status: StatusCode, message: &str) -> Response {
    let body = json!({ "message": message, "documentation_url": "https://docs.github.com/rest" });
    (status, Json(body)).into_response()
}

fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "Not Found")
}

async fn unexpected(uri: Uri) -> Response {
    tracing::warn!(%uri, "the GitHub stand-in has no answer for this call");
    not_found()
}

/// Any App JWT is taken without checking its signature: the stand-in only has to answer
/// fast and in GitHub's shape, and the bench made the key itself.
async fn installation_token(UrlPath(_installation): UrlPath<i64>) -> Response {
    let expires_at = chrono::Utc::now() + chrono::Duration::hours(1);
    let body = json!({ "token": "ghs_bench", "expires_at": expires_at.to_rfc3339() });
    (StatusCode::CREATED, Json(body)).into_response()
}

async fn contents(
    State(shared): State<Arc<Shared>>,
    UrlPath((owner, repo, path)): UrlPath<(String, String, String)>,
) -> Response {
    if shared.known(&owner, &repo).is_none() || path != PIPELINE_FILE {
        return not_found();
    }
    (
        [("content-type", "application/vnd.github.raw")],
        shared.pipeline_file.clone(),
    )
        .into_response()
}

/// Everyone may write: the bench measures the loop, not who may use it.
async fn permission(
    State(shared): State<Arc<Shared>>,
    UrlPath((owner, repo, _user)): UrlPath<(String, String, String)>,
) -> Response {
    if shared.known(&owner, &repo).is_none() {
        return not_found();
    }
    Json(json!({ "permission": "write", "role_name": "write" })).into_response()
}

async fn branch_ref(
    State(shared): State<Arc<Shared>>,
    UrlPath((owner, repo, branch)): UrlPath<(String, String, String)>,
) -> Response {
    let Some(bare) = shared.known(&owner, &repo) else {
        return not_found();
    };
    match branch_head(bare, &branch).await {
        Ok(Some(sha)) => Json(json!({
            "ref": format!("refs/heads/{branch}"),
            "object": { "type": "commit", "sha": sha },
        }))
        .into_response(),
        Ok(None) => not_found(),
        Err(err) => error(StatusCode::INTERNAL_SERVER_ERROR, &format!("{err:#}")),
    }
}

/// Where `branch` of the bare repository `bare` points, if it exists.
async fn branch_head(bare: &Path, branch: &str) -> anyhow::Result<Option<String>> {
    let output = tokio::process::Command::new("git")
        .arg("--git-dir")
        .arg(bare)
        .args(["rev-parse", "--verify", "--quiet"])
        .arg(format!("refs/heads/{branch}^{{commit}}"))
        .kill_on_drop(true)
        .output()
        .await
        .context("running git rev-parse")?;
    Ok(output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned()))
}

#[derive(Deserialize)]
struct Content {
    content: String,
}

async fn reaction(
    State(shared): State<Arc<Shared>>,
    UrlPath((owner, repo, comment)): UrlPath<(String, String, i64)>,
    Json(asked): Json<Content>,
) -> Response {
    let arrived = Instant::now();
    if shared.known(&owner, &repo).is_none() {
        return not_found();
    }
    shared
        .recorded()
        .reactions
        .entry(comment)
        .or_insert(arrived);
    shared.changed.notify_waiters();
    let body = json!({ "id": shared.id(), "content": asked.content });
    (StatusCode::CREATED, Json(body)).into_response()
}

#[derive(Deserialize)]
struct CommentBody {
    body: String,
}

fn comment_json(owner: &str, repo: &str, issue: i64, id: i64, body: &str) -> Value {
    json!({
        "id": id,
        "body": body,
        "html_url": format!("https://github.com/{owner}/{repo}/issues/{issue}#issuecomment-{id}"),
        "user": { "login": "conveyor[bot]", "type": "Bot" },
    })
}

async fn create_comment(
    State(shared): State<Arc<Shared>>,
    UrlPath((owner, repo, issue)): UrlPath<(String, String, i64)>,
    Json(comment): Json<CommentBody>,
) -> Response {
    if shared.known(&owner, &repo).is_none() {
        return not_found();
    }
    let id = shared.id();
    let body = comment_json(&owner, &repo, issue, id, &comment.body);
    shared
        .recorded()
        .comments
        .entry(issue)
        .or_default()
        .push((id, comment.body));
    (StatusCode::CREATED, Json(body)).into_response()
}

async fn list_comments(
    State(shared): State<Arc<Shared>>,
    UrlPath((owner, repo, issue)): UrlPath<(String, String, i64)>,
) -> Response {
    if shared.known(&owner, &repo).is_none() {
        return not_found();
    }
    let recorded = shared.recorded();
    let listed: Vec<Value> = recorded
        .comments
        .get(&issue)
        .into_iter()
        .flatten()
        .map(|(id, body)| comment_json(&owner, &repo, issue, *id, body))
        .collect();
    Json(listed).into_response()
}

async fn update_comment(
    State(shared): State<Arc<Shared>>,
    UrlPath((owner, repo, id)): UrlPath<(String, String, i64)>,
    Json(comment): Json<CommentBody>,
) -> Response {
    if shared.known(&owner, &repo).is_none() {
        return not_found();
    }
    let mut recorded = shared.recorded();
    for (issue, comments) in recorded.comments.iter_mut() {
        if let Some(found) = comments.iter_mut().find(|(known, _)| *known == id) {
            found.1 = comment.body;
            return Json(comment_json(&owner, &repo, *issue, id, &found.1)).into_response();
        }
    }
    not_found()
}

/// The fields of a check-run write the bench looks at.
#[derive(Deserialize)]
struct CheckRunWrite {
    head_sha: Option<String>,
    external_id: Option<String>,
    conclusion: Option<String>,
}

fn check_run_json(run: &CheckRun) -> Value {
    json!({
        "id": run.id,
        "name": crate::report::check_run::NAME,
        "head_sha": run.head_sha,
        "external_id": run.external_id,
        "conclusion": run.conclusion,
    })
}

/// Notes the moment `run` first asks for an action.
fn note_buttons(run: &mut CheckRun, arrived: Instant) {
    if run.buttons_at.is_none() && run.conclusion.as_deref() == Some("action_required") {
        run.buttons_at = Some(arrived);
    }
}

async fn create_check_run(
    State(shared): State<Arc<Shared>>,
    UrlPath((owner, repo)): UrlPath<(String, String)>,
    Json(write): Json<CheckRunWrite>,
) -> Response {
    let arrived = Instant::now();
    if shared.known(&owner, &repo).is_none() {
        return not_found();
    }
    let Some(head_sha) = write.head_sha else {
        return error(StatusCode::UNPROCESSABLE_ENTITY, "head_sha is missing");
    };
    let mut run = CheckRun {
        id: shared.id(),
        head_sha,
        external_id: write.external_id,
        conclusion: write.conclusion,
        buttons_at: None,
    };
    note_buttons(&mut run, arrived);
    let body = check_run_json(&run);
    shared.recorded().check_runs.push(run);
    shared.changed.notify_waiters();
    (StatusCode::CREATED, Json(body)).into_response()
}

async fn update_check_run(
    State(shared): State<Arc<Shared>>,
    UrlPath((owner, repo, id)): UrlPath<(String, String, i64)>,
    Json(write): Json<CheckRunWrite>,
) -> Response {
    let arrived = Instant::now();
    if shared.known(&owner, &repo).is_none() {
        return not_found();
    }
    let body = {
        let mut recorded = shared.recorded();
        let Some(run) = recorded.check_runs.iter_mut().find(|run| run.id == id) else {
            return not_found();
        };
        // An update without a conclusion (back in progress) clears it, as on GitHub.
        run.conclusion = write.conclusion;
        if let Some(external_id) = write.external_id {
            run.external_id = Some(external_id);
        }
        note_buttons(run, arrived);
        check_run_json(run)
    };
    shared.changed.notify_waiters();
    Json(body).into_response()
}

async fn list_check_runs(
    State(shared): State<Arc<Shared>>,
    UrlPath((owner, repo, sha)): UrlPath<(String, String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if shared.known(&owner, &repo).is_none() {
        return not_found();
    }
    let named = query
        .get("check_name")
        .is_none_or(|name| name == crate::report::check_run::NAME);
    let runs: Vec<Value> = shared
        .recorded()
        .check_runs
        .iter()
        .filter(|run| named && run.head_sha == sha)
        .map(check_run_json)
        .collect();
    Json(json!({ "total_count": runs.len(), "check_runs": runs })).into_response()
}

/// No pull request is ever open: each run that proposes its work opens one.
async fn list_pulls(
    State(shared): State<Arc<Shared>>,
    UrlPath((owner, repo)): UrlPath<(String, String)>,
) -> Response {
    if shared.known(&owner, &repo).is_none() {
        return not_found();
    }
    Json(json!([])).into_response()
}

async fn create_pull(
    State(shared): State<Arc<Shared>>,
    UrlPath((owner, repo)): UrlPath<(String, String)>,
) -> Response {
    if shared.known(&owner, &repo).is_none() {
        return not_found();
    }
    let number = shared.id();
    let body = json!({
        "number": number,
        "html_url": format!("https://github.com/{owner}/{repo}/pull/{number}"),
    });
    (StatusCode::CREATED, Json(body)).into_response()
}

/// Git with nothing of the user's configuration, committing as the bench.
pub(in crate::bench) fn git(dir: &Path) -> tokio::process::Command {
    let mut command = tokio::process::Command::new("git");
    command
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", "Conveyor bench")
        .env("GIT_AUTHOR_EMAIL", "bench@conveyor.invalid")
        .env("GIT_COMMITTER_NAME", "Conveyor bench")
        .env("GIT_COMMITTER_EMAIL", "bench@conveyor.invalid")
        .kill_on_drop(true);
    command
}

pub(in crate::bench) async fn run_git(dir: &Path, args: &[&str]) -> anyhow::Result<()> {
    let output = git(dir).args(args).output().await.context("running git")?;
    if !output.status.success() {
        bail!(
            "git {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// Makes the bare repository `{git_root}/{full_name}.git` whose `main` holds `files`.
pub async fn bare_repo(
    git_root: &Path,
    full_name: &str,
    files: &[(&str, &str)],
) -> anyhow::Result<()> {
    let work = tempfile::tempdir().context("making a work tree for the bench repository")?;
    run_git(work.path(), &["init", "--quiet", "--initial-branch=main"]).await?;
    for (path, text) in files {
        let file = work.path().join(path);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&file, text)?;
    }
    run_git(work.path(), &["add", "--all"]).await?;
    run_git(
        work.path(),
        &["commit", "--quiet", "--message", "Bench repository"],
    )
    .await?;
    let bare = git_root.join(format!("{full_name}.git"));
    std::fs::create_dir_all(bare.parent().expect("a repository has an owner"))?;
    let work_path = work.path().to_str().context("temporary paths are UTF-8")?;
    let bare_path = bare.to_str().context("temporary paths are UTF-8")?;
    run_git(
        git_root,
        &["clone", "--quiet", "--bare", work_path, bare_path],
    )
    .await
}

/// A fresh RSA key for the App, in PEM: Conveyor signs its JWTs with it, and the stand-in
/// takes them unchecked.
pub async fn app_key() -> anyhow::Result<String> {
    let output = tokio::process::Command::new("openssl")
        .args(["genrsa", "2048"])
        .kill_on_drop(true)
        .output()
        .await
        .context("running `openssl genrsa` to make the App's key (is openssl installed?)")?;
    if !output.status.success() {
        bail!(
            "openssl genrsa: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    String::from_utf8(output.stdout).context("openssl genrsa wrote no PEM")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::GitHubConfig;
    use crate::github::client::{
        CheckRunOutput, CheckRunUpdate, CommentRef, NewCheckRun, Reaction, Repo,
    };
    use crate::github::{AppCredentials, GitHubApp};

    fn check_run(head_sha: &str, conclusion: &'static str) -> NewCheckRun {
        NewCheckRun {
            name: crate::report::check_run::NAME.to_owned(),
            head_sha: head_sha.to_owned(),
            status: "completed",
            conclusion: Some(conclusion),
            details_url: None,
            external_id: Some("5".to_owned()),
            output: CheckRunOutput {
                title: "t".into(),
                summary: "s".into(),
                text: None,
            },
            actions: Vec::new(),
        }
    }

    /// Conveyor's own client, with a key of the bench's, gets from the stand-in every answer
    /// the loop needs, and the stand-in notes the writes the bench times.
    #[tokio::test]
    async fn conveyors_client_is_answered_by_the_stand_in() {
        let root = tempfile::tempdir().unwrap();
        bare_repo(root.path(), "acme/widgets", &[("README.md", "hi\n")])
            .await
            .unwrap();
        let stand_in = StandIn::start(root.path(), &["acme/widgets"], "pipelines: {}\n")
            .await
            .unwrap();
        let config = GitHubConfig {
            app_id: Some("1".into()),
            private_key: Some(app_key().await.unwrap().into()),
            private_key_path: None,
            client_id: None,
            client_secret: None,
            webhook_secret: None,
            api_url: stand_in.url.clone(),
            git_url: root.path().to_str().unwrap().to_owned(),
        };
        let credentials = AppCredentials::from_config(&config).unwrap().unwrap();
        let app = Arc::new(GitHubApp::new(&stand_in.url, credentials).unwrap());
        let client = app.installation(1, "widgets");
        let repo = Repo {
            owner: "acme",
            name: "widgets",
        };

        let file = client
            .file_contents(repo, PIPELINE_FILE, "main")
            .await
            .unwrap();
        assert_eq!(file.as_deref(), Some(&b"pipelines: {}\n"[..]));
        assert_eq!(
            client
                .file_contents(repo, "other.yml", "main")
                .await
                .unwrap(),
            None
        );
        let elsewhere = Repo {
            owner: "acme",
            name: "gadgets",
        };
        assert_eq!(
            client
                .file_contents(elsewhere, PIPELINE_FILE, "main")
                .await
                .unwrap(),
            None
        );
        let permission = client
            .collaborator_permission(repo, "anyone")
            .await
            .unwrap();
        assert_eq!(permission.permission, "write");

        let main = client.branch_sha(repo, "main").await.unwrap().unwrap();
        assert_eq!(main.len(), 40, "{main}");
        assert_eq!(client.branch_sha(repo, "conveyor/1-x").await.unwrap(), None);

        assert_eq!(stand_in.reaction(77), None);
        client
            .add_reaction(repo, CommentRef::Issue(77), Reaction::PlusOne)
            .await
            .unwrap();
        assert!(stand_in.reaction(77).is_some());

        let asking = client
            .create_check_run(repo, &check_run(&main, "action_required"))
            .await
            .unwrap();
        let shown = stand_in.asking_approval(5).unwrap();
        assert_eq!(
            (shown.id, shown.head_sha.as_str()),
            (asking.id, main.as_str())
        );
        assert!(shown.buttons_at.is_some());
        assert_eq!(stand_in.asking_approval(6).map(|run| run.id), None);
        let found = client
            .find_check_run(repo, &main, crate::report::check_run::NAME, "5")
            .await
            .unwrap();
        assert_eq!(found.map(|run| run.id), Some(asking.id));
        let decided = CheckRunUpdate {
            status: "completed",
            conclusion: Some("success"),
            details_url: None,
            output: check_run(&main, "success").output,
            actions: Vec::new(),
        };
        client
            .update_check_run(repo, asking.id, &decided)
            .await
            .unwrap();
        assert_eq!(stand_in.asking_approval(5).map(|run| run.id), None);

        let posted = client.upsert_comment(repo, 3, None, "first").await.unwrap();
        client
            .upsert_comment(repo, 3, Some(posted.id), "second")
            .await
            .unwrap();
        let comments = client.issue_comments(repo, 3).await.unwrap();
        let bodies: Vec<(i64, &str)> = comments
            .iter()
            .map(|comment| (comment.id, comment.body.as_str()))
            .collect();
        assert_eq!(bodies, [(posted.id, "second")]);

        assert!(
            client
                .open_pull_request(repo, "conveyor/1-x")
                .await
                .unwrap()
                .is_none()
        );
        client
            .create_pull_request(repo, "t", "conveyor/1-x", "main", "b")
            .await
            .unwrap();
    }
}
