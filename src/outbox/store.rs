//! The outbox's rows: queued in a change's transaction, claimed one lane head at a time
//! under a time-limited lock (a killed deliverer's rows come back when it lapses), and closed
//! as delivered, absorbed, failed, or put off until a retry is due.

use std::time::Duration;

use sqlx::PgExecutor;

use super::{Effect, Place};

/// How long a claimed effect stays the claimer's: longer than a delivery may take (see
/// `deliver::DELIVERY_LIMIT`), short enough that a killed deliverer's effects are soon
/// taken over.
pub(super) const CLAIM_FOR: Duration = Duration::from_secs(45);

pub(super) async fn insert(
    db: impl PgExecutor<'_>,
    place: &Place,
    effects: &[Effect],
) -> sqlx::Result<()> {
    let lanes: Vec<String> = effects.iter().map(Effect::lane).collect();
    let targets: Vec<String> = effects
        .iter()
        .map(|effect| {
            effect
                .target()
                .unwrap_or_else(|| format!("once:{}", uuid::Uuid::new_v4()))
        })
        .collect();
    let bodies: Vec<serde_json::Value> = effects
        .iter()
        .map(|effect| serde_json::to_value(effect).expect("effects serialize"))
        .collect();
    sqlx::query(
        "INSERT INTO outbox (installation_id, repo_owner, repo_name, lane, target, effect)
         SELECT $1, $2, $3, lane, target, effect
         FROM unnest($4::TEXT[], $5::TEXT[], $6::JSONB[]) WITH ORDINALITY AS e(lane, target, effect, n)
         ORDER BY n",
    )
    .bind(place.installation_id)
    .bind(&place.owner)
    .bind(&place.name)
    .bind(lanes)
    .bind(targets)
    .bind(bodies)
    .execute(db)
    .await?;
    Ok(())
}

/// Notes that the task reports on `head_sha`, before its check run there exists.
pub(super) async fn note_check_run(
    db: impl PgExecutor<'_>,
    task_id: i64,
    head_sha: &str,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO check_runs (task_id, head_sha) VALUES ($1, $2) ON CONFLICT DO NOTHING",
    )
    .bind(task_id)
    .bind(head_sha)
    .execute(db)
    .await?;
    Ok(())
}

/// A claimed effect, with the queued syncs of the same target it stands for.
#[derive(Debug)]
pub(super) struct Claimed {
    pub id: i64,
    pub place: Place,
    pub effect: Effect,
    /// Deliveries tried before this one; a retried create first looks for what an earlier
    /// try may have made.
    pub attempts: i32,
    /// Later effects of the same target, queued before anything else of the lane: the
    /// delivery renders the records after they were written, so it delivers them too.
    pub absorbs: Vec<i64>,
}

#[derive(sqlx::FromRow)]
struct Row {
    id: i64,
    installation_id: i64,
    repo_owner: String,
    repo_name: String,
    effect: serde_json::Value,
    attempts: i32,
    absorbs: Vec<i64>,
}

/// Claims up to `limit` lane heads that are due and not claimed by anyone else.
pub(super) async fn claim(db: impl PgExecutor<'_>, limit: i64) -> sqlx::Result<Vec<Claimed>> {
    let rows: Vec<Row> = sqlx::query_as(
        "WITH heads AS (
             SELECT DISTINCT ON (lane) id FROM outbox
             WHERE delivered_at IS NULL
             ORDER BY lane, id
         ), due AS (
             SELECT o.id FROM outbox o JOIN heads USING (id)
             WHERE o.next_attempt_at <= now()
               AND (o.locked_until IS NULL OR o.locked_until < now())
             ORDER BY o.id
             LIMIT $1
             FOR UPDATE OF o SKIP LOCKED
         )
         UPDATE outbox o
         SET locked_until = now() + make_interval(secs => $2), attempts = o.attempts + 1
         FROM due
         WHERE o.id = due.id
         RETURNING o.id, o.installation_id, o.repo_owner, o.repo_name, o.effect,
                   o.attempts - 1 AS attempts,
                   ARRAY(
                       SELECT later.id FROM outbox later
                       WHERE later.lane = o.lane AND later.target = o.target
                         AND later.delivered_at IS NULL AND later.id > o.id
                         AND NOT EXISTS (
                             SELECT 1 FROM outbox other
                             WHERE other.lane = o.lane AND other.delivered_at IS NULL
                               AND other.target <> o.target
                               AND other.id > o.id AND other.id < later.id
                         )
                       ORDER BY later.id
                   ) AS absorbs",
    )
    .bind(limit)
    .bind(CLAIM_FOR.as_secs_f64())
    .fetch_all(db)
    .await?;
    let mut claimed = Vec::with_capacity(rows.len());
    for row in rows {
        match serde_json::from_value::<Effect>(row.effect) {
            Ok(effect) => claimed.push(Claimed {
                id: row.id,
                place: Place {
                    installation_id: row.installation_id,
                    owner: row.repo_owner,
                    name: row.repo_name,
                },
                absorbs: if effect.is_sync() {
                    row.absorbs
                } else {
                    Vec::new()
                },
                effect,
                attempts: row.attempts,
            }),
            Err(err) => {
                tracing::error!(outbox = row.id, error = %err, "an outbox row this version cannot read");
            }
        }
    }
    Ok(claimed)
}

/// Closes a delivered effect and those it stood for.
pub(super) async fn delivered(
    db: impl PgExecutor<'_>,
    id: i64,
    absorbs: &[i64],
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE outbox SET delivered_at = now(), locked_until = NULL,
             outcome = CASE WHEN id = $1 THEN 'delivered' ELSE 'absorbed by ' || $1 END
         WHERE id = $1 OR (id = ANY($2) AND delivered_at IS NULL)",
    )
    .bind(id)
    .bind(absorbs)
    .execute(db)
    .await?;
    Ok(())
}

/// Puts a failed delivery off until `after` from now.
pub(super) async fn retry_in(
    db: impl PgExecutor<'_>,
    id: i64,
    after: Duration,
    error: &str,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE outbox SET locked_until = NULL, last_error = $3,
             next_attempt_at = now() + make_interval(secs => $2)
         WHERE id = $1",
    )
    .bind(id)
    .bind(after.as_secs_f64())
    .bind(error)
    .execute(db)
    .await?;
    Ok(())
}

/// Closes an effect GitHub refused for good (a 4xx other than a rate limit): trying again
/// would be refused again, and would hold up its lane.
pub(super) async fn failed(db: impl PgExecutor<'_>, id: i64, error: &str) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE outbox SET delivered_at = now(), locked_until = NULL, outcome = 'failed',
             last_error = $2
         WHERE id = $1",
    )
    .bind(id)
    .bind(error)
    .execute(db)
    .await?;
    Ok(())
}

/// When the next queued effect falls due, if any is queued.
pub(super) async fn next_due(db: impl PgExecutor<'_>) -> sqlx::Result<Option<Duration>> {
    // No `GREATEST(0, …)` around the minimum: it would turn "nothing queued" (NULL) into
    // "due now".
    let seconds: Option<f64> = sqlx::query_scalar(
        "SELECT EXTRACT(EPOCH FROM min(GREATEST(next_attempt_at, COALESCE(locked_until, next_attempt_at))) - now())::FLOAT8
         FROM outbox WHERE delivered_at IS NULL",
    )
    .fetch_one(db)
    .await?;
    Ok(seconds.map(|seconds| Duration::from_secs_f64(seconds.max(0.0))))
}

pub(super) async fn pending(db: impl PgExecutor<'_>) -> sqlx::Result<Vec<(i64, Effect)>> {
    let rows: Vec<(i64, serde_json::Value)> =
        sqlx::query_as("SELECT id, effect FROM outbox WHERE delivered_at IS NULL ORDER BY id")
            .fetch_all(db)
            .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(id, effect)| Some((id, serde_json::from_value(effect).ok()?)))
        .collect())
}
