//! What people ask of Conveyor on GitHub: labels, comment commands, check-run buttons,
//! closed issues and pull requests. Interpretation queues each one in the delivery's
//! transaction; a worker decides it with what it needs from GitHub (the repository's
//! settings, the person's permission), applies it through the engine and queues the answers
//! (a reaction, a reply, the reports) in the outbox, in one transaction.

mod apply;
pub mod forge;
pub mod lookup;
pub mod queue;

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::github::{GitHubApp, GitHubError};
use crate::outbox;

/// Request workers per process: a slow GitHub lookup for one repository holds up no more
/// than one of them.
pub const WORKERS: usize = 4;
const IDLE_POLL: Duration = Duration::from_secs(5);
const FIRST_RETRY: Duration = Duration::from_secs(2);
const MAX_RETRY: Duration = Duration::from_secs(300);
/// Tries at deciding one request before it is closed as failed.
const MAX_ATTEMPTS: i32 = 12;

/// A request as queued: where it was made, by whom, and what it asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Asked {
    pub installation_id: i64,
    pub owner: String,
    pub name: String,
    pub default_branch: String,
    /// The issue or pull request; `None` for a check run's button or re-run, whose task
    /// says it.
    pub issue: Option<i64>,
    pub actor: String,
    pub actor_is_bot: bool,
    pub request: Request,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Request {
    /// A label was added to an issue.
    Labeled {
        label: String,
        title: String,
        body: String,
        /// All the issue's labels, the added one among them.
        #[serde(default)]
        labels: Vec<String>,
    },
    /// A label was taken off an issue.
    Unlabeled {
        label: String,
    },
    IssueClosed,
    /// A comment with at least one `/conveyor` command.
    Comment {
        comment: outbox::Comment,
        text: String,
        is_pull_request: bool,
        title: String,
        body: String,
        /// The issue's (or pull request's) labels.
        #[serde(default)]
        labels: Vec<String>,
    },
    /// A person's comment on an issue without a command: the answer to the questions a run
    /// there asked, if one waits for it from them.
    Answer {
        comment: outbox::Comment,
        text: String,
    },
    /// A button of a `conveyor` check run was clicked.
    CheckRunAction {
        identifier: String,
        head_sha: String,
        external_id: Option<String>,
    },
    /// Someone asked GitHub to run a check run (or a check suite) again.
    Rerequested {
        head_sha: String,
        external_id: Option<String>,
    },
    PullRequestClosed {
        merged: bool,
    },
}

pub struct Requests {
    pub pool: PgPool,
    pub github: Arc<GitHubApp>,
    /// Shared with the pages, which ask the same permissions.
    pub lookups: Arc<lookup::Lookups>,
}

/// Decides queued requests until `shutdown`; `added` wakes the workers.
pub async fn run(requests: Arc<Requests>, added: Arc<Notify>, shutdown: CancellationToken) {
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..WORKERS {
        workers.spawn(work(requests.clone(), added.clone(), shutdown.clone()));
    }
    workers.join_all().await;
}

async fn work(requests: Arc<Requests>, added: Arc<Notify>, shutdown: CancellationToken) {
    loop {
        let wait = match requests.next().await {
            Ok(true) => {
                // More may be queued: let a sibling look too.
                added.notify_one();
                Duration::ZERO
            }
            Ok(false) => match queue::next_due(&requests.pool).await {
                Ok(Some(due)) => due.min(IDLE_POLL),
                _ => IDLE_POLL,
            },
            Err(err) => {
                tracing::warn!(error = %format!("{err:#}"), "requests: a pass failed");
                FIRST_RETRY
            }
        };
        if wait.is_zero() {
            continue;
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = added.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

impl Requests {
    /// Decides the oldest due request; `false` when none is due.
    pub async fn next(&self) -> anyhow::Result<bool> {
        let mut tx = self.pool.begin().await?;
        let Some(taken) = queue::take(&mut tx).await? else {
            return Ok(false);
        };
        let span = tracing::info_span!("request", request_id = taken.id, actor = %taken.asked.actor, repository = %format!("{}/{}", taken.asked.owner, taken.asked.name));
        async {
            match apply::apply(self, &mut tx, &taken).await {
                Ok(outcome) => {
                    queue::processed(&mut *tx, taken.id, &outcome).await?;
                    tx.commit().await?;
                    tracing::info!(%outcome, "request decided");
                }
                Err(err) => {
                    // Nothing of it is kept; it is decided again later.
                    tx.rollback().await?;
                    let message = format!("{err:#}");
                    if !retryable(&err) {
                        tracing::warn!(error = %message, "request refused by GitHub for good");
                        queue::processed(&self.pool, taken.id, &format!("failed: {message}"))
                            .await?;
                    } else if taken.attempts + 1 >= MAX_ATTEMPTS {
                        tracing::error!(error = %message, "request given up after {MAX_ATTEMPTS} tries");
                        queue::processed(&self.pool, taken.id, &format!("failed: {message}"))
                            .await?;
                    } else {
                        let wait = (FIRST_RETRY * 2u32.pow(taken.attempts.clamp(0, 16) as u32))
                            .min(MAX_RETRY);
                        tracing::warn!(error = %message, retry_in_s = wait.as_secs(), "request could not be decided; will retry");
                        queue::retry_in(&self.pool, taken.id, wait, &message).await?;
                    }
                }
            }
            Ok::<_, anyhow::Error>(())
        }
        .instrument(span)
        .await?;
        Ok(true)
    }
}

/// Whether deciding a request that failed with `err` may succeed later: GitHub refusals
/// (no access, validation) will not change by waiting; outages and database errors may.
fn retryable(err: &anyhow::Error) -> bool {
    err.chain()
        .find_map(|cause| cause.downcast_ref::<GitHubError>())
        .is_none_or(GitHubError::is_retryable)
}
