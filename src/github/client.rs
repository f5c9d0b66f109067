//! The one path every GitHub REST call takes: named, timed, retried by one policy,
//! and its failure classified.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::{ACCEPT, CONTENT_TYPE, HeaderMap, HeaderValue};
use http_body_util::BodyExt as _;
use octocrab::{Octocrab, Page};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use super::app::GitHubApp;
use super::error::GitHubError;
use crate::report::check_run::{self, CheckRunReport};

/// Attempts per call for failures that may pass (network, 5xx, rate limits).
const MAX_ATTEMPTS: u32 = 4;
const BASE_BACKOFF: Duration = Duration::from_millis(250);
/// A rate limit that asks for a longer wait than this fails the call instead; the caller
/// keeps the work and tries later.
const MAX_RATE_LIMIT_WAIT: Duration = Duration::from_secs(15 * 60);

pub(crate) async fn call<T, F, Fut>(name: &'static str, mut request: F) -> Result<T, GitHubError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = octocrab::Result<T>>,
{
    let mut attempt = 1;
    loop {
        let started = Instant::now();
        let result = request()
            .await
            .map_err(|err| GitHubError::classify(name, err));
        let elapsed_ms = started.elapsed().as_millis() as u64;
        match result {
            Ok(value) => {
                tracing::debug!(call = name, elapsed_ms, attempt, "github call");
                return Ok(value);
            }
            Err(err) if err.is_retryable() && attempt < MAX_ATTEMPTS => {
                let wait = match &err {
                    GitHubError::RateLimited { wait, .. } => *wait,
                    _ => backoff(attempt),
                };
                if wait > MAX_RATE_LIMIT_WAIT {
                    return Err(err);
                }
                tracing::warn!(call = name, elapsed_ms, attempt, error = %err, wait_ms = wait.as_millis() as u64, "github call failed, retrying");
                tokio::time::sleep(wait).await;
                attempt += 1;
            }
            Err(err) => {
                tracing::warn!(call = name, elapsed_ms, attempt, error = %err, "github call failed");
                return Err(err);
            }
        }
    }
}

/// Exponential backoff with full jitter.
fn backoff(attempt: u32) -> Duration {
    let ceiling = BASE_BACKOFF * 2u32.pow(attempt - 1);
    ceiling.mul_f64(0.5 + fastrand::f64() / 2.0)
}

#[derive(Debug, Clone, Deserialize)]
pub struct Comment {
    pub id: i64,
    pub html_url: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PullRequest {
    pub number: i64,
    pub html_url: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct CheckRun {
    pub id: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct CheckRunOutput {
    pub title: String,
    pub summary: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

/// A button on a check run; clicking it sends `check_run.requested_action` with `identifier`.
/// GitHub allows three per run, a label of 20 characters, a description of 40 and an
/// identifier of 20.
#[derive(Debug, Clone, Serialize)]
pub struct CheckRunAction {
    pub label: String,
    pub description: String,
    pub identifier: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct NewCheckRun {
    pub name: String,
    pub head_sha: String,
    /// `queued`, `in_progress` or `completed`; only `completed` takes a conclusion.
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conclusion: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    pub output: CheckRunOutput,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<CheckRunAction>,
}

impl NewCheckRun {
    /// The request that shows `report` as the `conveyor` check run on `head_sha`.
    pub fn from_report(
        report: &CheckRunReport,
        head_sha: &str,
        details_url: Option<String>,
        external_id: Option<String>,
    ) -> Self {
        Self {
            name: check_run::NAME.to_owned(),
            head_sha: head_sha.to_owned(),
            status: report.status.as_str(),
            conclusion: report.conclusion.map(|conclusion| conclusion.as_str()),
            details_url,
            external_id,
            output: CheckRunOutput::from_report(report),
            actions: CheckRunAction::from_report(report),
        }
    }
}

impl CheckRunUpdate {
    /// The request that brings an existing check run to `report`.
    pub fn from_report(report: &CheckRunReport, details_url: Option<String>) -> Self {
        Self {
            status: report.status.as_str(),
            conclusion: report.conclusion.map(|conclusion| conclusion.as_str()),
            details_url,
            output: CheckRunOutput::from_report(report),
            actions: CheckRunAction::from_report(report),
        }
    }
}

impl CheckRunOutput {
    fn from_report(report: &CheckRunReport) -> Self {
        Self {
            title: report.title.clone(),
            summary: report.summary.clone(),
            text: report.text.clone(),
        }
    }
}

impl CheckRunAction {
    fn from_report(report: &CheckRunReport) -> Vec<Self> {
        report
            .buttons
            .iter()
            .map(|button| Self {
                label: button.label.clone(),
                description: button.description.clone(),
                identifier: button.identifier.clone(),
            })
            .collect()
    }
}

/// A new state for an existing check run.
#[derive(Debug, Clone, Serialize)]
pub struct CheckRunUpdate {
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conclusion: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details_url: Option<String>,
    pub output: CheckRunOutput,
    /// Always sent: GitHub keeps a run's buttons until a request replaces them, so an empty
    /// list is how they go once a decision is made.
    pub actions: Vec<CheckRunAction>,
}

/// A reaction Conveyor puts on a comment to acknowledge it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reaction {
    PlusOne,
    MinusOne,
    Eyes,
    Rocket,
}

impl Reaction {
    /// GitHub's name for the reaction (`content`).
    pub fn content(self) -> &'static str {
        match self {
            Self::PlusOne => "+1",
            Self::MinusOne => "-1",
            Self::Eyes => "eyes",
            Self::Rocket => "rocket",
        }
    }
}

/// A comment GitHub addresses by id: one in an issue's or pull request's conversation, or a
/// review comment on a pull request's diff. The two live under different routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommentRef {
    Issue(i64),
    ReviewComment(i64),
}

/// What a user may do in a repository. `permission` is GitHub's legacy base role (`admin`,
/// `write`, `read` or `none`; `maintain` shows as `write` and `triage` as `read`); `role_name`
/// names the role itself, custom roles included.
#[derive(Debug, Clone, Deserialize)]
pub struct CollaboratorPermission {
    pub permission: String,
    pub role_name: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PullRequestDetail {
    pub number: i64,
    pub html_url: String,
    /// `open` or `closed`.
    pub state: String,
    #[serde(default)]
    pub merged: bool,
    pub head: PullRequestRef,
    pub base: PullRequestRef,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PullRequestRef {
    #[serde(rename = "ref")]
    pub ref_name: String,
    pub sha: String,
    /// `None` when the head's fork has been deleted.
    pub repo: Option<RepoName>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RepoName {
    pub full_name: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(from = "IssueCommentWire")]
pub struct IssueComment {
    pub id: i64,
    pub body: String,
    pub user_login: String,
}

#[derive(Deserialize)]
struct IssueCommentWire {
    id: i64,
    #[serde(default)]
    body: Option<String>,
    user: Option<Login>,
}

#[derive(Deserialize)]
struct Login {
    login: String,
}

impl From<IssueCommentWire> for IssueComment {
    fn from(wire: IssueCommentWire) -> Self {
        Self {
            id: wire.id,
            body: wire.body.unwrap_or_default(),
            // GitHub shows comments of deleted accounts as by `ghost`; its API sends no user.
            user_login: wire.user.map_or_else(|| "ghost".to_owned(), |u| u.login),
        }
    }
}

/// One page of `GET /repos/{owner}/{repo}/commits/{ref}/check-runs`.
#[derive(Deserialize)]
struct CheckRunList {
    total_count: usize,
    check_runs: Vec<ListedCheckRun>,
}

#[derive(Deserialize)]
struct ListedCheckRun {
    id: i64,
    external_id: Option<String>,
}

/// GitHub's largest page.
const PER_PAGE: usize = 100;

/// Which repository a call is about.
#[derive(Debug, Clone, Copy)]
pub struct Repo<'a> {
    pub owner: &'a str,
    pub name: &'a str,
}

/// A client acting as one installation of the App on one of its repositories. Tokens come
/// from the App's cache; a call answered 401 is made once more with a fresh token.
pub struct InstallationClient {
    app: Arc<GitHubApp>,
    installation_id: i64,
    /// The only repository the client's tokens reach; GitHub answers 404 for any other.
    repository: String,
}

impl InstallationClient {
    pub(crate) fn new(app: Arc<GitHubApp>, installation_id: i64, repository: &str) -> Self {
        Self {
            app,
            installation_id,
            repository: repository.to_owned(),
        }
    }

    /// A current installation token for the client's repository, for git over HTTPS.
    pub async fn token(&self) -> Result<SecretString, GitHubError> {
        self.app.token(self.installation_id, &self.repository).await
    }

    async fn request<T, F, Fut>(&self, name: &'static str, request: F) -> Result<T, GitHubError>
    where
        F: Fn(Octocrab) -> Fut,
        Fut: Future<Output = octocrab::Result<T>>,
    {
        let mut refreshed = false;
        loop {
            let token = self.token().await?;
            let octocrab = self.app.octocrab_with(token.clone(), name)?;
            match call(name, || request(octocrab.clone())).await {
                Err(GitHubError::Unauthorized { .. }) if !refreshed => {
                    tracing::info!(
                        call = name,
                        installation = self.installation_id,
                        repository = %self.repository,
                        "token refused; minting a new one"
                    );
                    self.app
                        .forget_token(self.installation_id, &self.repository, &token)
                        .await;
                    refreshed = true;
                }
                result => return result,
            }
        }
    }

    pub async fn create_comment(
        &self,
        repo: Repo<'_>,
        issue: i64,
        body: &str,
    ) -> Result<Comment, GitHubError> {
        let route = &format!(
            "/repos/{}/{}/issues/{issue}/comments",
            repo.owner, repo.name
        );
        let payload = &serde_json::json!({ "body": body });
        self.request("create comment", move |gh| async move {
            gh.post(route, Some(payload)).await
        })
        .await
    }

    pub async fn update_comment(
        &self,
        repo: Repo<'_>,
        comment_id: i64,
        body: &str,
    ) -> Result<Comment, GitHubError> {
        let route = &format!(
            "/repos/{}/{}/issues/comments/{comment_id}",
            repo.owner, repo.name
        );
        let payload = &serde_json::json!({ "body": body });
        self.request("update comment", move |gh| async move {
            gh.patch(route, Some(payload)).await
        })
        .await
    }

    /// Edits comment `existing` on `issue`, or posts the body as a new comment when there is
    /// none or someone deleted it.
    pub async fn upsert_comment(
        &self,
        repo: Repo<'_>,
        issue: i64,
        existing: Option<i64>,
        body: &str,
    ) -> Result<Comment, GitHubError> {
        if let Some(id) = existing {
            match self.update_comment(repo, id, body).await {
                Err(GitHubError::NotFound { .. }) => {}
                edited => return edited,
            }
        }
        self.create_comment(repo, issue, body).await
    }

    pub async fn create_pull_request(
        &self,
        repo: Repo<'_>,
        title: &str,
        head: &str,
        base: &str,
        body: &str,
    ) -> Result<PullRequest, GitHubError> {
        let route = &format!("/repos/{}/{}/pulls", repo.owner, repo.name);
        let payload =
            &serde_json::json!({ "title": title, "head": head, "base": base, "body": body });
        self.request("create pull request", move |gh| async move {
            gh.post(route, Some(payload)).await
        })
        .await
    }

    /// The open pull request from `branch` of the same repository, if there is one.
    pub async fn open_pull_request(
        &self,
        repo: Repo<'_>,
        branch: &str,
    ) -> Result<Option<PullRequest>, GitHubError> {
        let route = &format!("/repos/{}/{}/pulls", repo.owner, repo.name);
        let query = &[
            ("head", format!("{}:{branch}", repo.owner)),
            ("state", "open".to_owned()),
        ];
        let pulls: Vec<PullRequest> = self
            .request("list pull requests", move |gh| async move {
                gh.get(route, Some(query)).await
            })
            .await?;
        Ok(pulls.into_iter().next())
    }

    pub async fn create_check_run(
        &self,
        repo: Repo<'_>,
        check: &NewCheckRun,
    ) -> Result<CheckRun, GitHubError> {
        let route = &format!("/repos/{}/{}/check-runs", repo.owner, repo.name);
        self.request("create check run", move |gh| async move {
            gh.post(route, Some(check)).await
        })
        .await
    }

    /// Reacts to a comment. Reacting twice with the same content is no error: GitHub answers
    /// 200 with the reaction already there.
    pub async fn add_reaction(
        &self,
        repo: Repo<'_>,
        comment: CommentRef,
        reaction: Reaction,
    ) -> Result<(), GitHubError> {
        let route = &match comment {
            CommentRef::Issue(id) => format!(
                "/repos/{}/{}/issues/comments/{id}/reactions",
                repo.owner, repo.name
            ),
            CommentRef::ReviewComment(id) => format!(
                "/repos/{}/{}/pulls/comments/{id}/reactions",
                repo.owner, repo.name
            ),
        };
        let payload = &serde_json::json!({ "content": reaction.content() });
        let _: serde_json::Value = self
            .request("add reaction", move |gh| async move {
                gh.post(route, Some(payload)).await
            })
            .await?;
        Ok(())
    }

    /// `user`'s permission on the repository. GitHub answers `none` for an account without
    /// access and 404 for a login no account has (deleted or renamed since it acted); neither
    /// may do anything, so both come back as `none`.
    pub async fn collaborator_permission(
        &self,
        repo: Repo<'_>,
        user: &str,
    ) -> Result<CollaboratorPermission, GitHubError> {
        let route = &format!(
            "/repos/{}/{}/collaborators/{}/permission",
            repo.owner,
            repo.name,
            encode_path(user)
        );
        let answer = self
            .request("get collaborator permission", move |gh| async move {
                gh.get(route, None::<&()>).await
            })
            .await;
        match answer {
            Err(GitHubError::NotFound { .. }) => Ok(CollaboratorPermission {
                permission: "none".to_owned(),
                role_name: None,
            }),
            other => other,
        }
    }

    pub async fn update_check_run(
        &self,
        repo: Repo<'_>,
        id: i64,
        update: &CheckRunUpdate,
    ) -> Result<CheckRun, GitHubError> {
        let route = &format!("/repos/{}/{}/check-runs/{id}", repo.owner, repo.name);
        self.request("update check run", move |gh| async move {
            gh.patch(route, Some(update)).await
        })
        .await
    }

    /// The check run named `name` on `head_sha` that carries `external_id`, the newest if
    /// several do: how a create retried after an unanswered attempt finds what that attempt
    /// made instead of making a second one.
    pub async fn find_check_run(
        &self,
        repo: Repo<'_>,
        head_sha: &str,
        name: &str,
        external_id: &str,
    ) -> Result<Option<CheckRun>, GitHubError> {
        let route = &format!(
            "/repos/{}/{}/commits/{}/check-runs",
            repo.owner,
            repo.name,
            encode_path(head_sha)
        );
        let mut found: Option<i64> = None;
        let mut seen = 0;
        for page in 1.. {
            let query = &[
                ("check_name", name.to_owned()),
                ("filter", "all".to_owned()),
                ("per_page", PER_PAGE.to_string()),
                ("page", page.to_string()),
            ];
            let list: CheckRunList = self
                .request("list check runs", move |gh| async move {
                    gh.get(route, Some(query)).await
                })
                .await?;
            let count = list.check_runs.len();
            seen += count;
            found = list
                .check_runs
                .into_iter()
                .filter(|run| run.external_id.as_deref() == Some(external_id))
                .map(|run| run.id)
                .chain(found)
                .max();
            if count < PER_PAGE || seen >= list.total_count {
                break;
            }
        }
        Ok(found.map(|id| CheckRun { id }))
    }

    pub async fn pull_request(
        &self,
        repo: Repo<'_>,
        number: i64,
    ) -> Result<PullRequestDetail, GitHubError> {
        let route = &format!("/repos/{}/{}/pulls/{number}", repo.owner, repo.name);
        self.request("get pull request", move |gh| async move {
            gh.get(route, None::<&()>).await
        })
        .await
    }

    /// The commit `branch` points at now, or `None` when there is no such branch.
    pub async fn branch_sha(
        &self,
        repo: Repo<'_>,
        branch: &str,
    ) -> Result<Option<String>, GitHubError> {
        #[derive(Deserialize)]
        struct Reference {
            object: Target,
        }
        #[derive(Deserialize)]
        struct Target {
            sha: String,
        }
        let route = &format!(
            "/repos/{}/{}/git/ref/heads/{}",
            repo.owner,
            repo.name,
            encode_path(branch)
        );
        let found: Result<Reference, GitHubError> = self
            .request("get branch ref", move |gh| async move {
                gh.get(route, None::<&()>).await
            })
            .await;
        match found {
            Ok(reference) => Ok(Some(reference.object.sha)),
            Err(GitHubError::NotFound { .. }) => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// The bytes of the file at `path` in `git_ref`, or `None` when the path (or the ref) does
    /// not exist. Asks for the raw media type, the one that serves files over 1 MB.
    pub async fn file_contents(
        &self,
        repo: Repo<'_>,
        path: &str,
        git_ref: &str,
    ) -> Result<Option<Vec<u8>>, GitHubError> {
        const CALL: &str = "get file contents";
        let route = &format!(
            "/repos/{}/{}/contents/{}?ref={}",
            repo.owner,
            repo.name,
            encode_path(path),
            encode_path(git_ref)
        );
        let answer = self
            .request(CALL, move |gh| async move {
                let mut headers = HeaderMap::new();
                headers.insert(
                    ACCEPT,
                    HeaderValue::from_static("application/vnd.github.raw+json"),
                );
                let response = gh._get_with_headers(route.as_str(), Some(headers)).await?;
                let response = octocrab::map_github_error(response).await?;
                let json = response
                    .headers()
                    .get(CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| v.starts_with("application/json"));
                let bytes = response.into_body().collect().await?.to_bytes();
                Ok((json, bytes))
            })
            .await;
        let (json, bytes) = match answer {
            Err(GitHubError::NotFound { .. }) => return Ok(None),
            other => other?,
        };
        if json {
            // Raw is only served for files (and links to files); anything else comes back
            // described in JSON: a directory as a list of its entries, others with a `type`.
            let kind = match serde_json::from_slice::<serde_json::Value>(&bytes) {
                Ok(serde_json::Value::Array(_)) => "directory".to_owned(),
                Ok(value) => value
                    .get("type")
                    .and_then(|t| t.as_str())
                    .unwrap_or("different kind of entry")
                    .to_owned(),
                Err(_) => "different kind of entry".to_owned(),
            };
            return Err(GitHubError::NotAFile {
                call: CALL,
                path: path.to_owned(),
                kind,
            });
        }
        Ok(Some(bytes.to_vec()))
    }

    /// Every comment on issue or pull request `issue`, oldest first.
    pub async fn issue_comments(
        &self,
        repo: Repo<'_>,
        issue: i64,
    ) -> Result<Vec<IssueComment>, GitHubError> {
        const CALL: &str = "list issue comments";
        let route = &format!(
            "/repos/{}/{}/issues/{issue}/comments",
            repo.owner, repo.name
        );
        let query = &[("per_page", PER_PAGE)];
        let mut page: Page<IssueComment> = self
            .request(
                CALL,
                move |gh| async move { gh.get(route, Some(query)).await },
            )
            .await?;
        let mut comments = std::mem::take(&mut page.items);
        while let Some(next) = &next_page_route(&page) {
            page = self
                .request(
                    CALL,
                    move |gh| async move { gh.get(next, None::<&()>).await },
                )
                .await?;
            comments.append(&mut page.items);
        }
        Ok(comments)
    }
}

/// The route of the page after `page`: the path and query of its `Link`, asked of the API
/// base like every other route. octocrab sends the token along with an absolute URI only
/// when its host is api.github.com, so a next page on GitHub Enterprise (or any other API
/// base) would go out unauthenticated.
fn next_page_route<T>(page: &Page<T>) -> Option<String> {
    let next = page.next.as_ref()?;
    next.path_and_query().map(|route| route.as_str().to_owned())
}

/// Percent-encodes each `/`-separated segment of `path` for use in a URL path (or query
/// value): file names and refs may hold spaces, `#`, `?` or non-ASCII characters.
fn encode_path(path: &str) -> String {
    let mut encoded = String::with_capacity(path.len());
    for byte in path.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' => {
                encoded.push(byte as char)
            }
            _ => encoded.push_str(&format!("%{byte:02X}")),
        }
    }
    encoded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_and_refs_are_percent_encoded_but_slashes_kept() {
        for (raw, encoded) in [
            (".github/conveyor.yml", ".github/conveyor.yml"),
            ("docs/a b#1?.md", "docs/a%20b%231%3F.md"),
            ("feature/x+y", "feature/x%2By"),
            ("é.txt", "%C3%A9.txt"),
            ("dependabot[bot]", "dependabot%5Bbot%5D"),
        ] {
            assert_eq!(encode_path(raw), encoded, "{raw}");
        }
    }

    #[test]
    fn reactions_use_githubs_content_names() {
        let names: Vec<&str> = [
            Reaction::PlusOne,
            Reaction::MinusOne,
            Reaction::Eyes,
            Reaction::Rocket,
        ]
        .into_iter()
        .map(Reaction::content)
        .collect();
        assert_eq!(names, ["+1", "-1", "eyes", "rocket"]);
    }

    #[test]
    fn comments_of_deleted_accounts_read_as_ghost() {
        let comment: IssueComment =
            serde_json::from_str(r#"{"id": 7, "body": null, "user": null}"#).unwrap();
        assert_eq!((comment.id, comment.body.as_str()), (7, ""));
        assert_eq!(comment.user_login, "ghost");
        let comment: IssueComment =
            serde_json::from_str(r#"{"id": 8, "body": "hi", "user": {"login": "octocat"}}"#)
                .unwrap();
        assert_eq!(
            (comment.body.as_str(), comment.user_login.as_str()),
            ("hi", "octocat")
        );
    }

    #[test]
    fn backoff_grows_and_stays_jittered_under_its_ceiling() {
        for attempt in 1..=3 {
            let ceiling = BASE_BACKOFF * 2u32.pow(attempt - 1);
            let wait = backoff(attempt);
            assert!(
                wait <= ceiling && wait >= ceiling / 2,
                "{attempt}: {wait:?}"
            );
        }
    }
}
