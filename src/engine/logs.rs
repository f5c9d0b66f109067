//! Step logs: each line of a step's output with the time it was read, stored while the step
//! runs, in batches, under the lease of the worker running it; bounded per attempt of a step
//! (its first and last lines kept, a line between them counting what was cut); read back in
//! pages for a client following the run.

use std::collections::VecDeque;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgExecutor, PgPool};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::Instrument;

use crate::pipeline::{Line, LineSink};

/// Lines kept from the start of one attempt of a step.
pub const HEAD_LINES: usize = 2_000;
/// Lines kept from the end of one attempt of a step.
pub const TAIL_LINES: usize = 3_000;
/// Lines wait at most this long to be stored, so a follower sees them soon.
const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// Lines stored in one statement at most.
const BATCH_LINES: usize = 500;
/// Lines read from the step and not stored yet; past this the step waits on its output.
const QUEUED_LINES: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow, schemars::JsonSchema)]
pub struct LogLine {
    pub seq: i64,
    pub ts: DateTime<Utc>,
    pub position: i32,
    pub step: String,
    pub attempt: i32,
    pub line: String,
}

/// Whose lines a writer stores: one attempt of one step of a run, under lease `epoch`.
#[derive(Debug, Clone)]
pub struct Target {
    pub run_id: i64,
    pub epoch: i64,
    pub position: usize,
    pub step: String,
    pub attempt: u32,
}

/// Starts storing the lines of `target`; they go to the sink returned, whose closing waits
/// until all are stored.
pub fn open(pool: PgPool, target: Target) -> LineSink {
    let (lines, queued) = mpsc::channel(QUEUED_LINES);
    let stored = tokio::spawn(write(pool, target, queued).in_current_span());
    LineSink::new(lines, stored)
}

/// Stores lines as they come until the sink closes. A batch that cannot be stored is lost
/// (and said so in Conveyor's log), never the step: the queue is drained whatever happens.
async fn write(pool: PgPool, target: Target, mut queued: mpsc::Receiver<Line>) {
    // Here, before the first line, so that the trail shows the start before anything the
    // step did: the step's end is recorded only after its sink has closed.
    let started = super::runs::step_started(
        &pool,
        target.run_id,
        target.epoch,
        target.position,
        &target.step,
        target.attempt,
    );
    if let Err(err) = started.await {
        tracing::warn!(error = %err, step = %target.step, "could not record the step's start");
    }
    let mut log = Bounded::default();
    let mut writing = true;
    let mut batch = Vec::with_capacity(BATCH_LINES);
    while let Some(first) = queued.recv().await {
        batch.push(first);
        let due = Instant::now() + FLUSH_EVERY;
        while batch.len() < BATCH_LINES {
            match tokio::time::timeout_at(due, queued.recv()).await {
                Ok(Some(line)) => batch.push(line),
                Ok(None) | Err(_) => break,
            }
        }
        if writing {
            match log.store(&pool, &target, &batch).await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::warn!(step = %target.step, "step log dropped: the task's lease moved on");
                    writing = false;
                }
                Err(err) => {
                    tracing::warn!(error = %err, step = %target.step, lines = batch.len(), "step log lines could not be stored")
                }
            }
        }
        batch.clear();
    }
}

/// Where one attempt's stored lines stand: how many of the head are stored, the lines of the
/// tail (by `seq`), and the line standing for those cut between them.
#[derive(Default)]
struct Bounded {
    head: usize,
    tail: VecDeque<i64>,
    cut_line: Option<i64>,
    cut: u64,
}

impl Bounded {
    /// Stores `batch`, then trims the tail to [`TAIL_LINES`]; `false` when the lease moved
    /// on and nothing was stored.
    async fn store(
        &mut self,
        pool: &PgPool,
        target: &Target,
        batch: &[Line],
    ) -> sqlx::Result<bool> {
        let mut tx = pool.begin().await?;
        let seqs: Vec<i64> = sqlx::query_scalar(
            "INSERT INTO run_logs (run_id, position, step, attempt, ts, line)
             SELECT $1, $2, $3, $4, l.ts, l.line
             FROM unnest($5::TIMESTAMPTZ[], $6::TEXT[]) WITH ORDINALITY AS l(ts, line, n)
             WHERE EXISTS (SELECT 1 FROM runs r JOIN tasks t ON t.id = r.task_id
                           WHERE r.id = $1 AND t.lease_epoch = $7 AND t.state = 'running')
             ORDER BY l.n
             RETURNING seq",
        )
        .bind(target.run_id)
        .bind(target.position as i32)
        .bind(&target.step)
        .bind(target.attempt as i32)
        .bind(batch.iter().map(|line| line.at).collect::<Vec<_>>())
        .bind(
            batch
                .iter()
                .map(|line| line.text.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(target.epoch)
        .fetch_all(&mut *tx)
        .await?;
        if seqs.is_empty() {
            return Ok(false);
        }
        let mut seqs = seqs;
        seqs.sort_unstable();
        let into_head = (HEAD_LINES - self.head).min(seqs.len());
        self.head += into_head;
        self.tail.extend(&seqs[into_head..]);
        let mut dropped = Vec::new();
        while self.tail.len() > TAIL_LINES {
            let seq = self
                .tail
                .pop_front()
                .expect("the tail is longer than its bound");
            // The first line cut becomes the line saying how many were: it sits between
            // the head and the tail.
            match self.cut_line {
                None => self.cut_line = Some(seq),
                Some(_) => dropped.push(seq),
            }
            self.cut += 1;
        }
        if let Some(cut_line) = self.cut_line.filter(|_| self.cut > 0) {
            sqlx::query("DELETE FROM run_logs WHERE seq = ANY($1)")
                .bind(&dropped)
                .execute(&mut *tx)
                .await?;
            sqlx::query("UPDATE run_logs SET line = $2 WHERE seq = $1")
                .bind(cut_line)
                .bind(cut_note(self.cut))
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(true)
    }
}

pub fn cut_note(lines: u64) -> String {
    format!("… conveyor: {lines} lines of output cut here …")
}

/// The run's lines after `after`, at most `limit`, in order.
pub async fn page(
    db: impl PgExecutor<'_>,
    run_id: i64,
    after: i64,
    limit: i64,
) -> sqlx::Result<Vec<LogLine>> {
    sqlx::query_as(
        "SELECT seq, ts, position, step, attempt, line FROM run_logs
         WHERE run_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
    )
    .bind(run_id)
    .bind(after)
    .bind(limit)
    .fetch_all(db)
    .await
}
