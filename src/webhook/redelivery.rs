//! Recovering missed webhooks: GitHub does not retry a failed delivery by itself, so a sweep
//! asks it to redeliver those that failed and never reached the inbox.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use sqlx::{PgExecutor, PgPool};
use tokio_util::sync::CancellationToken;

use super::inbox;
use crate::github::GitHubApp;
use crate::github::app::HookDelivery;

/// Pages of 100 deliveries read per sweep: GitHub keeps only a few days of them.
const MAX_PAGES: usize = 10;
/// Only one process sweeps at a time; the others skip that round.
const SWEEP_LOCK: i64 = 0x636f_6e76_7377_6570;
/// Requests per delivery in all: one that failed this often is failing for a reason a
/// redelivery does not fix (too large, refused), and asking again only adds to GitHub's load.
const MAX_REQUESTS: i32 = 3;
/// GitHub redelivers deliveries of the past three days only; older records can never be
/// used again.
const FORGET_REQUESTS_AFTER_DAYS: i32 = 7;

#[derive(Debug, Default, PartialEq, Eq)]
pub struct SweepReport {
    pub examined: usize,
    pub redelivered: Vec<String>,
}

/// Delivery guids whose every attempt failed, with the latest attempt's id.
pub fn failed_deliveries(attempts: &[HookDelivery]) -> Vec<(String, i64)> {
    let mut by_guid: HashMap<&str, (bool, i64)> = HashMap::new();
    for attempt in attempts {
        let entry = by_guid.entry(&attempt.guid).or_insert((false, attempt.id));
        entry.0 |= (200..300).contains(&attempt.status_code);
        entry.1 = entry.1.max(attempt.id);
    }
    let mut failed: Vec<(String, i64)> = by_guid
        .into_iter()
        .filter(|(_, (delivered, _))| !delivered)
        .map(|(guid, (_, latest))| (guid.to_owned(), latest))
        .collect();
    failed.sort_by_key(|(_, id)| *id);
    failed
}

pub async fn sweep(pool: &PgPool, github: &GitHubApp) -> anyhow::Result<SweepReport> {
    // A session lock, not a transaction: no transaction stays open across calls to GitHub.
    let Some(elected) = crate::db::elect(pool, SWEEP_LOCK).await? else {
        return Ok(SweepReport::default());
    };
    let attempts = github.hook_deliveries(MAX_PAGES).await?;
    let failed = failed_deliveries(&attempts);
    let guids: Vec<String> = failed.iter().map(|(guid, _)| guid.clone()).collect();
    let stored = inbox::stored(pool, &guids).await?;
    let mut report = SweepReport {
        examined: attempts.len(),
        redelivered: Vec::new(),
    };
    forget_old_requests(pool).await?;
    for (guid, latest) in failed
        .into_iter()
        .filter(|(guid, _)| !stored.contains(guid))
    {
        if !count_request(pool, &guid).await? {
            tracing::debug!(delivery_id = %guid, "missed webhook already asked for {MAX_REQUESTS} times");
            continue;
        }
        match github.redeliver(latest).await {
            Ok(()) => {
                tracing::info!(delivery_id = %guid, "asked GitHub to redeliver a missed webhook");
                report.redelivered.push(guid);
            }
            Err(err) => {
                tracing::warn!(delivery_id = %guid, error = %err, "redelivery request failed")
            }
        }
    }
    elected.release().await?;
    Ok(report)
}

/// Counts one more request for `guid` if it has had fewer than [`MAX_REQUESTS`]; returns
/// whether it was counted. Committed before GitHub is asked, so a request that fails or a
/// process that dies after asking still counts: the limit holds whatever happens.
async fn count_request(db: impl PgExecutor<'_>, guid: &str) -> sqlx::Result<bool> {
    let counted: Option<i32> = sqlx::query_scalar(
        "INSERT INTO redelivery_requests AS r (guid, requests) VALUES ($1, 1)
         ON CONFLICT (guid) DO UPDATE
             SET requests = r.requests + 1, last_requested_at = now()
             WHERE r.requests < $2
         RETURNING requests",
    )
    .bind(guid)
    .bind(MAX_REQUESTS)
    .fetch_optional(db)
    .await?;
    Ok(counted.is_some())
}

async fn forget_old_requests(db: impl PgExecutor<'_>) -> sqlx::Result<()> {
    sqlx::query(
        "DELETE FROM redelivery_requests
         WHERE last_requested_at < now() - make_interval(days => $1)",
    )
    .bind(FORGET_REQUESTS_AFTER_DAYS)
    .execute(db)
    .await?;
    Ok(())
}

/// Sweeps at start and every `interval` until `shutdown`.
pub async fn run(
    pool: PgPool,
    github: Arc<GitHubApp>,
    interval: Duration,
    shutdown: CancellationToken,
) {
    loop {
        if let Err(err) = sweep(&pool, &github).await {
            tracing::warn!(error = %format!("{err:#}"), "redelivery sweep failed");
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;

    fn attempt(id: i64, guid: &str, status_code: u16) -> HookDelivery {
        HookDelivery {
            id,
            guid: guid.into(),
            delivered_at: Utc::now(),
            status_code,
            event: "issues".into(),
        }
    }

    #[test]
    fn only_deliveries_that_never_succeeded_are_redelivered_once() {
        let attempts = [
            attempt(1, "a", 502),
            attempt(2, "b", 202),
            attempt(3, "a", 503),
            attempt(4, "c", 200),
            attempt(5, "c", 500),
            attempt(6, "d", 0),
        ];
        assert_eq!(
            failed_deliveries(&attempts),
            [("a".to_owned(), 3), ("d".to_owned(), 6)]
        );
    }
}
