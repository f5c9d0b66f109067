//! The event feed: the trail of tasks and runs (`task_events`) as clients read it, in an
//! order that never gains an event behind them (see migration 0027), named by the seed's
//! event types, with the workflow and correlation each event belongs to.

use std::collections::VecDeque;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::Stream;
use serde::Serialize;
use serde_json::Value;
use sqlx::{PgExecutor, PgPool};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// The channel a transaction that added events notifies when it commits.
pub const CHANNEL: &str = "conveyor_events";

/// A follower looks again this often without a wake-up: events held back behind a
/// transaction that was still running, or a listener that lost its connection.
const LOOK_AGAIN: Duration = Duration::from_millis(500);
/// Events read at a time by a follower.
const FOLLOW_BATCH: i64 = 200;

/// One event as the API, the stream and the WebSocket show it.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct FeedEvent {
    pub id: i64,
    #[serde(rename = "type")]
    pub kind: String,
    pub ts: DateTime<Utc>,
    pub task_id: i64,
    pub run_id: Option<i64>,
    /// `owner/repo`.
    pub project: String,
    pub workflow_name: String,
    /// The hash of the pipeline definition the run pinned; none before a run read it.
    pub workflow_version: Option<String>,
    pub correlation_id: Option<String>,
    pub payload: Value,
}

#[derive(sqlx::FromRow)]
struct Row {
    id: i64,
    kind: String,
    detail: Value,
    at: DateTime<Utc>,
    task_id: i64,
    run_id: Option<i64>,
    project: String,
    workflow_name: String,
    workflow_version: Option<String>,
    correlation_id: Option<String>,
}

impl From<Row> for FeedEvent {
    fn from(row: Row) -> Self {
        Self {
            id: row.id,
            kind: event_type(&row.kind, &row.detail).to_owned(),
            ts: row.at,
            task_id: row.task_id,
            run_id: row.run_id,
            project: row.project,
            workflow_name: row.workflow_name,
            workflow_version: row.workflow_version,
            correlation_id: row.correlation_id,
            payload: row.detail,
        }
    }
}

/// The published type of a trail entry: the trail keeps what happened (`kind`, `detail`),
/// and this is the one place its public name is decided.
pub fn event_type(kind: &str, detail: &Value) -> &'static str {
    let to = detail.get("to").and_then(Value::as_str);
    let board_to = detail.get("board_to").and_then(Value::as_str).or(to);
    match kind {
        "created" => "task.created",
        "claimed" => "task.claimed",
        "step_started" => "task.step_started",
        "step_completed" => "task.step_completed",
        "state" | "board" => match board_to {
            Some("blocked") => "task.blocked",
            Some("in_review" | "done") => "task.completed",
            Some("cancelled") => "task.cancelled",
            _ => "task.updated",
        },
        "run" => match to {
            Some("pending") => "run.created",
            // Runs recorded before `pending` existed started running.
            Some("running")
                if matches!(
                    detail.get("from").and_then(Value::as_str),
                    None | Some("pending")
                ) =>
            {
                "run.started"
            }
            Some("running") => "run.resumed",
            Some("awaiting_approval") => "run.awaiting_approval",
            Some("awaiting_input") => "run.awaiting_input",
            // `succeeded` is what runs recorded before the state was renamed.
            Some("completed" | "succeeded") => "run.completed",
            Some("failed") => "run.failed",
            Some("cancelled") => "run.cancelled",
            _ => "run.interrupted",
        },
        "approval" => match detail.get("decision").and_then(Value::as_str) {
            Some("reject") => "approval.rejected",
            _ => "approval.granted",
        },
        "answer" => "run.answered",
        "cancel_requested" => "task.cancel_requested",
        "force_run" => "task.force_run",
        "pull_request_merged" => "task.pull_request_merged",
        "pull_request_closed" => "task.pull_request_closed",
        "quick_run.started" => "quick_run.started",
        "quick_run.completed" => "quick_run.completed",
        "quick_run.failed" => "quick_run.failed",
        "quick_run.promoted" => "quick_run.promoted",
        _ => "task.updated",
    }
}

/// Where a reader stands: after the event it saw last, or at the start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cursor {
    pub after: Option<i64>,
}

/// Up to `limit` events after `cursor` that no transaction still running in this database
/// can precede (those of other databases on the server never write here), of
/// the `projects` (`owner/repo`, any case) when given. An id the feed no longer holds
/// (retention took it) is read as a position by id.
pub async fn page(
    db: impl PgExecutor<'_>,
    cursor: Cursor,
    projects: Option<&[String]>,
    limit: i64,
) -> sqlx::Result<Vec<FeedEvent>> {
    let projects: Option<Vec<String>> =
        projects.map(|names| names.iter().map(|name| name.to_lowercase()).collect());
    let rows: Vec<Row> = sqlx::query_as(
        "WITH since AS (
             SELECT COALESCE((SELECT tx FROM task_events WHERE id = $1),
                             (SELECT min(tx) FROM task_events WHERE id > $1),
                             '0'::xid8) AS tx,
                    COALESCE($1, 0) AS id
         ), snapshot AS (
             SELECT pg_current_snapshot() AS taken
         ), elsewhere AS (
             -- Transactions known to run in other databases of the server: they cannot
             -- write this feed. One that ended before this was read is not known here, and
             -- is taken as this database's: holding back is safe, skipping is not.
             SELECT backend_xid::text::BIGINT AS xid FROM pg_stat_activity
             WHERE backend_xid IS NOT NULL
               AND datid IS DISTINCT FROM (SELECT oid FROM pg_database
                                           WHERE datname = current_database())
         ), horizon AS (
             SELECT COALESCE(
                        (SELECT min(running) FROM pg_snapshot_xip(taken) AS running
                         WHERE (running::text::NUMERIC % 4294967296)::BIGINT
                               NOT IN (SELECT xid FROM elsewhere)),
                        pg_snapshot_xmax(taken)) AS before
             FROM snapshot
         )
         SELECT e.id, e.kind, e.detail, e.at, e.task_id, e.run_id,
                t.repo_owner || '/' || t.repo_name AS project,
                t.pipeline AS workflow_name, r.definition_hash AS workflow_version,
                t.correlation_id
         FROM since, horizon, task_events e
         JOIN tasks t ON t.id = e.task_id
         LEFT JOIN runs r ON r.id = e.run_id
         WHERE (e.tx, e.id) > (since.tx, since.id)
           AND e.tx < horizon.before
           AND ($2::TEXT[] IS NULL OR lower(t.repo_owner || '/' || t.repo_name) = ANY($2))
         ORDER BY e.tx, e.id
         LIMIT $3",
    )
    .bind(cursor.after)
    .bind(projects)
    .bind(limit)
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(FeedEvent::from).collect())
}

/// Wakes a process's followers of the feed when events are committed. Its listener (one
/// database connection, held for the process's life) starts with the first follower: a
/// process nobody follows spends no connection on it.
#[derive(Clone, Default)]
pub struct Wakeups {
    added: Arc<Notify>,
    started: Arc<OnceLock<()>>,
}

impl Wakeups {
    fn start(&self, pool: &PgPool) {
        self.started.get_or_init(|| {
            let added = self.added.clone();
            tokio::spawn(crate::wakeup::listen_with(
                pool.clone(),
                CHANNEL,
                move || added.notify_waiters(),
                CancellationToken::new(),
            ));
        });
    }
}

/// The events after `cursor`, then each new one as it becomes readable, for as long as the
/// stream is polled.
pub fn follow(
    pool: PgPool,
    wakeups: Wakeups,
    cursor: Cursor,
    projects: Option<Vec<String>>,
) -> impl Stream<Item = FeedEvent> {
    wakeups.start(&pool);
    let added = wakeups.added;
    let start = (VecDeque::<FeedEvent>::new(), cursor);
    futures_util::stream::unfold(start, move |(mut read, mut cursor)| {
        let (pool, added, projects) = (pool.clone(), added.clone(), projects.clone());
        async move {
            loop {
                if let Some(event) = read.pop_front() {
                    cursor.after = Some(event.id);
                    return Some((event, (read, cursor)));
                }
                // Armed before reading, so that a commit between the read and the wait
                // still wakes this follower.
                let woken = added.notified();
                tokio::pin!(woken);
                woken.as_mut().enable();
                match page(&pool, cursor, projects.as_deref(), FOLLOW_BATCH).await {
                    Ok(events) if !events.is_empty() => read.extend(events),
                    Ok(_) => {
                        tokio::select! {
                            _ = woken => {}
                            _ = tokio::time::sleep(LOOK_AGAIN) => {}
                        }
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, "could not read the event feed; trying again");
                        tokio::time::sleep(LOOK_AGAIN).await;
                    }
                }
            }
        }
    })
}
