//! The one path every GitHub REST call takes: named, timed, retried by one policy,
//! and its failure classified.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use octocrab::Octocrab;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use super::app::GitHubApp;
use super::error::GitHubError;

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

#[derive(Debug, Clone, Serialize)]
pub struct NewCheckRun {
    pub name: String,
    pub head_sha: String,
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conclusion: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    pub output: CheckRunOutput,
}

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
}

#[cfg(test)]
mod tests {
    use super::*;

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
