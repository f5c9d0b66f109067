//! Every effect Conveyor has on GitHub (the status comment, check runs, pull requests,
//! reactions, replies), written as a row in the transaction of the change that causes it and
//! delivered by [`deliver::run`]: so a GitHub outage or a killed process delays a report but
//! never loses it, and a task's outcome never depends on GitHub being up when it ends.
//!
//! Effects of one lane (a task, a comment) are delivered in order. The status comment and a
//! check run are delivered as *syncs*: the delivery renders what the records say at that
//! moment, so a sync absorbs the syncs of the same target queued behind it (the latest state
//! wins) and every sync after the last change shows the final state.

pub mod deliver;
mod render;
mod store;

use serde::{Deserialize, Serialize};
use sqlx::PgExecutor;

/// The `LISTEN`/`NOTIFY` channel that wakes the delivery worker.
pub const CHANNEL: &str = "conveyor_outbox";

/// A comment, by its API family: issue comments and pull-request review comments have
/// separate ids and endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "id", rename_all = "snake_case")]
pub enum Comment {
    Issue(i64),
    Review(i64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reaction {
    /// The command was accepted.
    Accepted,
    /// The command was seen and is being worked on.
    Seen,
    /// The command was refused; a reply says why.
    Refused,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Effect {
    /// Bring the task's status comment in line with its records (posting it if needed).
    StatusComment { task_id: i64 },
    /// Bring the task's `conveyor` check run on `head_sha` in line with its records
    /// (creating it if needed).
    CheckRun { task_id: i64, head_sha: String },
    /// Open the pull request for the branch the run pushed, or find the open one.
    PullRequest { task_id: i64, run_id: i64 },
    React {
        comment: Comment,
        reaction: Reaction,
    },
    /// A comment answering a person (help, a refused command); posted once.
    Reply {
        issue: i64,
        to: Option<Comment>,
        body: String,
    },
}

impl Effect {
    /// Effects of one lane are delivered one after the other, in the order they were queued.
    fn lane(&self) -> String {
        match self {
            Effect::StatusComment { task_id }
            | Effect::CheckRun { task_id, .. }
            | Effect::PullRequest { task_id, .. } => format!("task:{task_id}"),
            Effect::React { comment, .. }
            | Effect::Reply {
                to: Some(comment), ..
            } => comment_lane(comment),
            Effect::Reply {
                issue, to: None, ..
            } => format!("issue:{issue}"),
        }
    }

    /// Whether delivering the effect brings its target to what the records say, so that it
    /// stands for later effects of the same target queued behind it.
    fn is_sync(&self) -> bool {
        matches!(
            self,
            Effect::StatusComment { .. } | Effect::CheckRun { .. } | Effect::PullRequest { .. }
        )
    }

    /// What the effect changes on GitHub; `None` for effects that each change something new.
    fn target(&self) -> Option<String> {
        match self {
            Effect::StatusComment { task_id } => Some(format!("status-comment:{task_id}")),
            Effect::CheckRun { task_id, head_sha } => {
                Some(format!("check-run:{task_id}:{head_sha}"))
            }
            Effect::PullRequest { run_id, .. } => Some(format!("pull-request:{run_id}")),
            Effect::React { comment, reaction } => {
                Some(format!("{}:{reaction:?}", comment_lane(comment)))
            }
            Effect::Reply { .. } => None,
        }
    }
}

fn comment_lane(comment: &Comment) -> String {
    match comment {
        Comment::Issue(id) => format!("comment:{id}"),
        Comment::Review(id) => format!("review-comment:{id}"),
    }
}

/// The repository an effect acts on, and the installation that may act on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    pub installation_id: i64,
    pub owner: String,
    pub name: String,
}

impl From<&crate::engine::tasks::Task> for Place {
    fn from(task: &crate::engine::tasks::Task) -> Self {
        Self {
            installation_id: task.installation_id,
            owner: task.repo_owner.clone(),
            name: task.repo_name.clone(),
        }
    }
}

/// Queues `effects` for `place`, in order; call it in the transaction of the change that
/// causes them. The delivery worker is woken when that transaction commits.
pub async fn enqueue(
    conn: &mut sqlx::PgConnection,
    place: &Place,
    effects: &[Effect],
) -> sqlx::Result<()> {
    if effects.is_empty() {
        return Ok(());
    }
    for effect in effects {
        if let Effect::CheckRun { task_id, head_sha } = effect {
            store::note_check_run(&mut *conn, *task_id, head_sha).await?;
        }
    }
    store::insert(&mut *conn, place, effects).await?;
    wake(&mut *conn).await
}

/// Queues the status-comment sync of task `task_id`, whose repository is read from the task.
pub async fn sync_status_comment(conn: &mut sqlx::PgConnection, task_id: i64) -> sqlx::Result<()> {
    sync_task(conn, task_id, &[Effect::StatusComment { task_id }]).await
}

/// Queues `effects` for the repository of task `task_id`, read from the task (callers
/// holding the task use [`enqueue`] with its [`Place`]).
pub async fn sync_task(
    conn: &mut sqlx::PgConnection,
    task_id: i64,
    effects: &[Effect],
) -> sqlx::Result<()> {
    let place: Option<(i64, String, String)> =
        sqlx::query_as("SELECT installation_id, repo_owner, repo_name FROM tasks WHERE id = $1")
            .bind(task_id)
            .fetch_optional(&mut *conn)
            .await?;
    let Some((installation_id, owner, name)) = place else {
        return Ok(());
    };
    let place = Place {
        installation_id,
        owner,
        name,
    };
    enqueue(conn, &place, effects).await
}

/// The status comment and every check run of each task in `task_ids`, brought up to date:
/// after a change that ended runs without their workers (a rescue, a cancel).
pub async fn sync_tasks(conn: &mut sqlx::PgConnection, task_ids: &[i64]) -> sqlx::Result<()> {
    for &task_id in task_ids {
        let mut effects = check_runs(&mut *conn, task_id, None).await?;
        effects.push(Effect::StatusComment { task_id });
        sync_task(conn, task_id, &effects).await?;
    }
    Ok(())
}

/// Syncs of every check run the task has, and of one on `current` (the commit its run
/// reports on now): a run that moved to a new commit closes the check runs it left behind.
pub async fn check_runs(
    conn: &mut sqlx::PgConnection,
    task_id: i64,
    current: Option<&str>,
) -> sqlx::Result<Vec<Effect>> {
    let mut shas = crate::engine::runs::check_shas(&mut *conn, task_id).await?;
    if let Some(current) = current
        && !shas.iter().any(|sha| sha == current)
    {
        shas.push(current.to_owned());
    }
    Ok(shas
        .into_iter()
        .map(|head_sha| Effect::CheckRun { task_id, head_sha })
        .collect())
}

/// Queues the check run of every parked run that has none on GitHub and none on its way
/// (lost with a restored database, or refused by GitHub while it was down for long): a run
/// waiting for an approval must show its buttons. Returns how many were queued.
pub async fn restore_parked(pool: &sqlx::PgPool) -> sqlx::Result<usize> {
    let mut tx = pool.begin().await?;
    let missing: Vec<(i64, String)> = sqlx::query_as(
        "SELECT r.task_id, r.check_sha FROM runs r
         LEFT JOIN check_runs c ON c.task_id = r.task_id AND c.head_sha = r.check_sha
         WHERE r.state = 'awaiting_approval' AND r.resume_at_step IS NULL
           AND r.check_sha IS NOT NULL AND c.check_run_id IS NULL
           AND NOT EXISTS (
               SELECT 1 FROM outbox o
               WHERE o.delivered_at IS NULL
                 AND o.target = 'check-run:' || r.task_id || ':' || r.check_sha
           )",
    )
    .fetch_all(&mut *tx)
    .await?;
    for (task_id, head_sha) in &missing {
        let effect = Effect::CheckRun {
            task_id: *task_id,
            head_sha: head_sha.clone(),
        };
        sync_task(&mut tx, *task_id, &[effect]).await?;
    }
    tx.commit().await?;
    Ok(missing.len())
}

async fn wake(db: impl PgExecutor<'_>) -> sqlx::Result<()> {
    sqlx::query("SELECT pg_notify($1, '')")
        .bind(CHANNEL)
        .execute(db)
        .await?;
    Ok(())
}

/// Deletes up to `batch` effects delivered (or closed as refused) more than `age` ago;
/// returns how many.
pub async fn delete_delivered(
    db: impl PgExecutor<'_>,
    age: std::time::Duration,
    batch: i64,
) -> sqlx::Result<u64> {
    crate::db::delete_older(db, "outbox", "delivered_at", age, batch).await
}

/// Effects not delivered yet, oldest first: what a person (or a test) sees waiting on GitHub.
pub async fn pending(db: impl PgExecutor<'_>) -> sqlx::Result<Vec<(i64, Effect)>> {
    store::pending(db).await
}
