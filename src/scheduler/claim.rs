//! The claim: one statement moves the next ready task from queued to running, within its
//! repository's limit, bound to a worker session and a new lease epoch.

use sqlx::PgPool;

use crate::engine::blockers::UNFINISHED_BLOCKERS;
use crate::engine::tasks::{TASK_COLUMNS, Task};

/// Claims the highest-priority, oldest queued task whose repository is below its limit.
pub async fn claim_next(pool: &PgPool, process: &str, worker: &str) -> sqlx::Result<Option<Task>> {
    // Locking the repository row serialises claims per repository across processes; a
    // claimer that finds it locked skips to another repository instead of waiting.
    sqlx::query_as(&format!(
        "WITH next (task_id, owner, name) AS (
             SELECT t.id, r.owner, r.name
             FROM tasks t
             JOIN repositories r ON r.owner = t.repo_owner AND r.name = t.repo_name
             WHERE t.state = 'queued' AND r.running < r.max_running AND NOT r.paused
               AND NOT {UNFINISHED_BLOCKERS}
             ORDER BY t.priority DESC, t.created_at, t.id
             LIMIT 1
             FOR UPDATE OF t, r SKIP LOCKED
         ), slot AS (
             UPDATE repositories r SET running = r.running + 1
             FROM next WHERE r.owner = next.owner AND r.name = next.name
         ), claimed AS (
             UPDATE tasks
             SET state = 'running', lease_epoch = lease_epoch + 1, attempts = attempts + 1,
                 claimed_by = $1, process_id = $2, updated_at = now()
             FROM next
             WHERE tasks.id = next.task_id
             RETURNING {TASK_COLUMNS}
         ), audit AS (
             INSERT INTO task_events (task_id, kind, detail)
             SELECT id, 'claimed', jsonb_build_object('worker', $1::TEXT, 'epoch', lease_epoch)
             FROM claimed
         )
         SELECT * FROM claimed"
    ))
    .bind(worker)
    .bind(process)
    .fetch_optional(pool)
    .await
}
