//! The claim: one statement moves the next ready tasks from queued to running, within their
//! repositories' limits, each bound to a worker session and a new lease epoch. The sessions
//! of a process that ask at about the same time are served by one statement.

use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};

use crate::engine::blockers::UNFINISHED_BLOCKERS;
use crate::engine::tasks::{TASK_COLUMNS, Task};
use crate::metrics;

/// A claimed task and the session it was claimed for.
#[derive(sqlx::FromRow)]
struct Claimed {
    claimed_by: String,
    /// Seconds since the task became claimable.
    waited: Option<f64>,
    #[sqlx(flatten)]
    task: Task,
}

/// Claims up to one task for each of `workers`: the highest-priority, oldest queued tasks
/// whose repositories are below their limits, whose parents (if any) run fewer children than
/// their `max_parallelism`, and which no unfinished task blocks (unless forced). Returns
/// the claimed tasks with the session each one went to; fewer than asked for when there is
/// not that much ready work.
pub async fn claim(
    pool: &PgPool,
    process: &str,
    workers: &[String],
) -> sqlx::Result<Vec<(String, Task)>> {
    // Locking the repository rows serialises claims per repository across processes; a
    // claimer that finds one locked skips its tasks instead of waiting. A locked row is
    // read at its newest version, so `free` is exact. The scan takes a few more tasks than
    // there are sessions, so that a repository whose limit cuts its run of tasks short does
    // not leave sessions empty-handed.
    //
    // A parent's children are limited first, by the children it runs now (an index probe
    // per parent among the picked tasks; their dependency levels are their blockers).
    // Children of one parent live in its repository, whose locked row serialises their
    // claims; `running_children` counts them with a snapshot taken after that lock, which
    // sees what another process's claim committed since this statement began.
    let claimed: Vec<Claimed> = sqlx::query_as(&format!(
        "WITH picked AS (
             SELECT t.id AS task_id, t.repo_owner AS owner, t.repo_name AS name,
                    t.priority AS rank_priority, t.created_at AS rank_created,
                    r.max_running - r.running AS free, t.parent_id AS parent
             FROM tasks t
             JOIN repositories r ON r.owner = t.repo_owner AND r.name = t.repo_name
             WHERE t.state = 'queued' AND r.running < r.max_running AND NOT r.paused
               AND (t.forced OR NOT {UNFINISHED_BLOCKERS})
             ORDER BY t.priority DESC, t.created_at, t.id
             LIMIT 4 * cardinality($2::TEXT[])
             FOR UPDATE OF t, r SKIP LOCKED
         ), parents AS (
             SELECT p.id, p.max_parallelism - running_children(p.id) AS free_children
             FROM tasks p
             WHERE p.id IN (SELECT parent FROM picked) AND p.max_parallelism IS NOT NULL
         ), within_parents AS (
             SELECT * FROM (
                 SELECT picked.*, parents.free_children, row_number() OVER (
                     PARTITION BY picked.parent
                     ORDER BY rank_priority DESC, rank_created, task_id
                 ) AS nth_child
                 FROM picked LEFT JOIN parents ON parents.id = picked.parent
             ) ranked
             WHERE free_children IS NULL OR nth_child <= free_children
         ), within_limits AS (
             SELECT * FROM (
                 SELECT within_parents.*, row_number() OVER (
                     PARTITION BY owner, name
                     ORDER BY rank_priority DESC, rank_created, task_id
                 ) AS nth
                 FROM within_parents
             ) ranked
             WHERE nth <= free
         ), chosen AS (
             SELECT * FROM (
                 SELECT task_id, owner, name, row_number() OVER (
                     ORDER BY rank_priority DESC, rank_created, task_id
                 ) AS seat
                 FROM within_limits
             ) seated
             WHERE seat <= cardinality($2::TEXT[])
         ), slots AS (
             UPDATE repositories r SET running = r.running + taken.n
             FROM (SELECT owner, name, count(*) AS n FROM chosen GROUP BY owner, name) taken
             WHERE r.owner = taken.owner AND r.name = taken.name
         ), claimed AS (
             UPDATE tasks
             SET state = 'running', board_state = 'in_progress', lease_epoch = lease_epoch + 1, attempts = attempts + 1,
                 claimed_by = ($2::TEXT[])[chosen.seat], process_id = $1, updated_at = now()
             FROM chosen
             WHERE tasks.id = chosen.task_id
             RETURNING {TASK_COLUMNS}, claimed_by,
                       EXTRACT(EPOCH FROM now() - queued_at)::FLOAT8 AS waited
         ), audit AS (
             INSERT INTO task_events (task_id, kind, detail)
             SELECT id, 'claimed', jsonb_build_object('worker', claimed_by, 'epoch', lease_epoch)
             FROM claimed
         )
         SELECT * FROM claimed"
    ))
    .bind(process)
    .bind(workers)
    .fetch_all(pool)
    .await?;
    Ok(claimed
        .into_iter()
        .map(|claimed| {
            if let Some(waited) = claimed.waited {
                metrics::queue_wait(Duration::from_secs_f64(waited.max(0.0)));
            }
            (claimed.claimed_by, claimed.task)
        })
        .collect())
}

/// Claims one task for `worker`.
pub async fn claim_next(pool: &PgPool, process: &str, worker: &str) -> sqlx::Result<Option<Task>> {
    let claimed = claim(pool, process, &[worker.to_owned()]).await?;
    Ok(claimed.into_iter().next().map(|(_, task)| task))
}

type Request = (String, oneshot::Sender<Option<Task>>);

/// The sessions' way to ask for work: requests that arrive while a claim is running are
/// served together by the next one.
#[derive(Clone)]
pub struct Claims {
    requests: mpsc::UnboundedSender<Request>,
}

impl Claims {
    /// Starts the claimer for `process`; it stops when every `Claims` handle is dropped.
    pub fn spawn(pool: PgPool, process: String) -> (Self, tokio::task::JoinHandle<()>) {
        let (requests, receiver) = mpsc::unbounded_channel();
        let claimer = tokio::spawn(serve(pool, process, receiver));
        (Self { requests }, claimer)
    }

    /// A task for `worker`, or `None` when there is no ready work it may take now.
    pub async fn next(&self, worker: &str) -> Option<Task> {
        let (reply, answer) = oneshot::channel();
        self.requests.send((worker.to_owned(), reply)).ok()?;
        answer.await.ok().flatten()
    }
}

async fn serve(pool: PgPool, process: String, mut requests: mpsc::UnboundedReceiver<Request>) {
    while let Some(first) = requests.recv().await {
        let mut waiting = vec![first];
        // Keep claiming while it yields work: a claim can come back short because of
        // repository limits or other processes' claims, not only because the queue is empty.
        loop {
            while let Ok(more) = requests.try_recv() {
                waiting.push(more);
            }
            let workers: Vec<String> = waiting.iter().map(|(worker, _)| worker.clone()).collect();
            let claimed = match claim(&pool, &process, &workers).await {
                Ok(claimed) => claimed,
                Err(err) => {
                    tracing::error!(error = %err, "claiming tasks failed");
                    Vec::new()
                }
            };
            if claimed.is_empty() {
                break;
            }
            for (worker, task) in claimed {
                if let Some(at) = waiting.iter().position(|(asked, _)| *asked == worker) {
                    let (_, reply) = waiting.swap_remove(at);
                    // Sessions wait for their answer, so this only fails when the process is
                    // going down: the task is then rescued once the process is gone.
                    let _ = reply.send(Some(task));
                }
            }
            if waiting.is_empty() {
                break;
            }
        }
        for (_, reply) in waiting {
            let _ = reply.send(None);
        }
    }
}
