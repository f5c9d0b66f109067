//! The delivery worker: claims lane heads, performs them on GitHub, and closes them or puts
//! them off with backoff (honouring GitHub's `retry-after` and rate-limit reset) until GitHub
//! takes them.

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::render;
use super::store::{self, Claimed};
use super::{Comment, Effect, Reaction};
use crate::engine::{runs, status_comments};
use crate::github::client::{self as wire, Repo};
use crate::github::{GitHubApp, GitHubError, InstallationClient};
use crate::report::check_run;
use crate::report::{comment, pull_request};

/// Lane heads delivered at once.
const BATCH: i64 = 16;
/// The longest wait between looks at the outbox when nobody wakes the worker.
const IDLE_POLL: Duration = Duration::from_secs(5);
const FIRST_RETRY: Duration = Duration::from_secs(1);
/// Retries back off up to this; an outage longer than that is noticed this soon after it ends.
const MAX_RETRY: Duration = Duration::from_secs(30);
/// A delivery still going after this is cut off and tried again later: well within the
/// claim's time, so no other deliverer ever takes an effect that is still being delivered.
/// (A rate limit GitHub asks to wait out longer is waited out between tries.)
const DELIVERY_LIMIT: Duration = Duration::from_secs(30);

pub struct Deliverer {
    pub pool: PgPool,
    pub github: Arc<GitHubApp>,
    /// `CONVEYOR_PUBLIC_URL`, for the check run's link to the run.
    pub public_url: String,
}

/// Delivers queued effects until `shutdown`; `added` wakes it when effects are queued.
pub async fn run(deliverer: Arc<Deliverer>, added: Arc<Notify>, shutdown: CancellationToken) {
    loop {
        let wait = match deliverer.pass().await {
            Ok(0) => match store::next_due(&deliverer.pool).await {
                Ok(Some(due)) => due.min(IDLE_POLL),
                Ok(None) => IDLE_POLL,
                Err(err) => {
                    tracing::warn!(error = %err, "outbox: cannot read when the next effect is due");
                    IDLE_POLL
                }
            },
            Ok(_) => Duration::ZERO,
            Err(err) => {
                tracing::warn!(error = %format!("{err:#}"), "outbox: delivery pass failed");
                FIRST_RETRY
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = added.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

impl Deliverer {
    /// Claims due lane heads and delivers them side by side; returns how many it claimed.
    pub async fn pass(&self) -> anyhow::Result<usize> {
        let claimed = store::claim(&self.pool, BATCH).await?;
        let count = claimed.len();
        let deliveries = claimed.into_iter().map(|claimed| {
            let span = tracing::info_span!("outbox", id = claimed.id, effect = ?claimed.effect);
            self.deliver_and_close(claimed).instrument(span)
        });
        futures_util::future::join_all(deliveries).await;
        Ok(count)
    }

    async fn deliver_and_close(&self, claimed: Claimed) {
        let delivered = tokio::time::timeout(DELIVERY_LIMIT, self.deliver(&claimed))
            .await
            .unwrap_or_else(|_| {
                Err(Undelivered::GitHub(GitHubError::Transport {
                    call: "outbox delivery",
                    message: format!("no answer within {DELIVERY_LIMIT:?}"),
                }))
            });
        let closed = match delivered {
            Ok(()) => store::delivered(&self.pool, claimed.id, &claimed.absorbs).await,
            Err(Undelivered::GitHub(err)) if err.is_retryable() => {
                let wait = retry_wait(claimed.attempts, err.retry_after());
                tracing::info!(error = %err, retry_in_s = wait.as_secs(), "outbox: GitHub did not take the effect; will retry");
                store::retry_in(&self.pool, claimed.id, wait, &err.to_string()).await
            }
            Err(Undelivered::GitHub(err)) => {
                tracing::warn!(error = %err, "outbox: GitHub refused the effect");
                store::failed(&self.pool, claimed.id, &err.to_string()).await
            }
            Err(Undelivered::Db(err)) => {
                let wait = retry_wait(claimed.attempts, None);
                tracing::warn!(error = %err, "outbox: database error while delivering; will retry");
                store::retry_in(&self.pool, claimed.id, wait, &err.to_string()).await
            }
        };
        if let Err(err) = closed {
            // The claim lapses and the effect is delivered again: syncs are idempotent, and
            // creates look for what an earlier try made.
            tracing::warn!(error = %err, "outbox: could not record the delivery");
        }
    }

    async fn deliver(&self, claimed: &Claimed) -> Result<(), Undelivered> {
        let place = &claimed.place;
        let client = self.github.installation(place.installation_id, &place.name);
        let repo = Repo {
            owner: &place.owner,
            name: &place.name,
        };
        let retried = claimed.attempts > 0;
        match &claimed.effect {
            Effect::StatusComment { task_id } => {
                self.status_comment(&client, repo, *task_id, retried).await
            }
            Effect::CheckRun { task_id, head_sha } => {
                self.check_run(&client, repo, *task_id, head_sha, retried)
                    .await
            }
            Effect::PullRequest { task_id, run_id } => {
                self.pull_request(&client, repo, *task_id, *run_id).await
            }
            Effect::React { comment, reaction } => {
                let reaction = match reaction {
                    Reaction::Accepted => wire::Reaction::PlusOne,
                    Reaction::Seen => wire::Reaction::Eyes,
                    Reaction::Refused => wire::Reaction::MinusOne,
                };
                client
                    .add_reaction(repo, wire_comment(*comment), reaction)
                    .await?;
                Ok(())
            }
            Effect::Reply { issue, body, .. } => {
                client.create_comment(repo, *issue, body).await?;
                Ok(())
            }
        }
    }

    async fn status_comment(
        &self,
        client: &InstallationClient,
        repo: Repo<'_>,
        task_id: i64,
        retried: bool,
    ) -> Result<(), Undelivered> {
        let Some(shown) = render::status_comment(&self.pool, task_id, &self.public_url).await?
        else {
            return Ok(());
        };
        let mut existing = status_comments::get(&self.pool, task_id)
            .await?
            .and_then(|status| status.comment_id);
        if existing.is_none() && retried {
            // An earlier try may have posted it and died before recording it.
            let marker = comment::marker(task_id);
            existing = client
                .issue_comments(repo, shown.issue)
                .await?
                .into_iter()
                .find(|posted| posted.body.starts_with(&marker))
                .map(|posted| posted.id);
        }
        let posted = client
            .upsert_comment(repo, shown.issue, existing, &shown.body)
            .await?;
        status_comments::set_comment(&self.pool, task_id, posted.id).await?;
        Ok(())
    }

    async fn check_run(
        &self,
        client: &InstallationClient,
        repo: Repo<'_>,
        task_id: i64,
        head_sha: &str,
        retried: bool,
    ) -> Result<(), Undelivered> {
        let Some(shown) =
            render::check_run(&self.pool, task_id, head_sha, &self.public_url).await?
        else {
            return Ok(());
        };
        let details_url = shown.details_url.clone();
        let external_id = task_id.to_string();
        let mut existing = shown.check_run_id;
        if existing.is_none() && retried {
            // An earlier try may have created it and died before recording it.
            existing = client
                .find_check_run(repo, head_sha, check_run::NAME, &external_id)
                .await?
                .map(|check| check.id);
        }
        let report = &shown.report;
        if let Some(id) = existing {
            let update = wire::CheckRunUpdate::from_report(report, Some(details_url.clone()));
            match client.update_check_run(repo, id, &update).await {
                Ok(_) => {
                    runs::set_check_run_id(&self.pool, task_id, head_sha, id).await?;
                    return Ok(());
                }
                // Deleted with its commit (a force-push) or by an admin: made anew below.
                Err(GitHubError::NotFound { .. }) => {}
                Err(err) => return Err(err.into()),
            }
        }
        let new =
            wire::NewCheckRun::from_report(report, head_sha, Some(details_url), Some(external_id));
        let created = client.create_check_run(repo, &new).await?;
        runs::set_check_run_id(&self.pool, task_id, head_sha, created.id).await?;
        Ok(())
    }

    async fn pull_request(
        &self,
        client: &InstallationClient,
        repo: Repo<'_>,
        task_id: i64,
        run_id: i64,
    ) -> Result<(), Undelivered> {
        let Some(wanted) = render::pull_request(&self.pool, task_id, run_id).await? else {
            return Ok(());
        };
        let pull = match client.open_pull_request(repo, &wanted.branch).await? {
            Some(open) => open,
            None => {
                client
                    .create_pull_request(
                        repo,
                        &pull_request::title(&wanted.title),
                        &wanted.branch,
                        &wanted.base,
                        &pull_request::body(wanted.issue, &wanted.pipeline, task_id),
                    )
                    .await?
            }
        };
        let mut tx = self.pool.begin().await?;
        runs::record_pull_request(&mut *tx, run_id, pull.number, &pull.html_url).await?;
        // The status comment links the pull request now that it exists.
        super::sync_status_comment(&mut tx, task_id).await?;
        tx.commit().await?;
        Ok(())
    }
}

fn wire_comment(comment: Comment) -> wire::CommentRef {
    match comment {
        Comment::Issue(id) => wire::CommentRef::Issue(id),
        Comment::Review(id) => wire::CommentRef::ReviewComment(id),
    }
}

/// Exponential backoff from [`FIRST_RETRY`] up to [`MAX_RETRY`], or what GitHub asked for.
fn retry_wait(attempts: i32, asked: Option<Duration>) -> Duration {
    let doubled = FIRST_RETRY * 2u32.saturating_pow(attempts.clamp(0, 16) as u32);
    let backoff = doubled.min(MAX_RETRY);
    asked.map_or(backoff, |asked| asked.max(FIRST_RETRY))
}

#[derive(Debug, thiserror::Error)]
enum Undelivered {
    #[error(transparent)]
    GitHub(#[from] GitHubError),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_to_a_ceiling_unless_github_names_the_wait() {
        assert_eq!(retry_wait(0, None), Duration::from_secs(1));
        assert_eq!(retry_wait(1, None), Duration::from_secs(2));
        assert_eq!(retry_wait(3, None), Duration::from_secs(8));
        assert_eq!(retry_wait(10, None), MAX_RETRY);
        assert_eq!(retry_wait(i32::MAX, None), MAX_RETRY);
        assert_eq!(
            retry_wait(0, Some(Duration::from_secs(600))),
            Duration::from_secs(600)
        );
        assert_eq!(retry_wait(5, Some(Duration::ZERO)), FIRST_RETRY);
    }
}
