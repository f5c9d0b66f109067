//! Approval gates: a run parked at an approval step, and the decisions taken on it. The one
//! place an approval or a rejection is accepted or refused, whatever it came from (the check
//! run's buttons, a comment command, the API); every decision, refused ones included, is in
//! the audit trail, and an accepted one is reported on GitHub (check run, status comment).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::types::Json;
use sqlx::{PgConnection, PgExecutor};

use super::events;
use super::forge::Forge;
use super::runs::{self, StepRecord};
use super::state::TaskState;
use super::tasks;
use crate::authz::{self, Action, Actor, Permission};
use crate::outbox::{self, Effect};
use crate::pipeline::changes::ChangedFile;
use crate::pipeline::definition::Settings;
use crate::report::{GATE_COMMAND, Outcome};

/// What a parked run waits for, as it was when it parked: the step, the commit the approval
/// is bound to, who may give it (from the settings the run started with) and what the run
/// changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gate {
    pub step: String,
    pub position: i32,
    pub message: Option<String>,
    pub head_sha: String,
    pub approver_permission: String,
    pub allow_self_approval: bool,
    pub requester: Option<String>,
    pub files: Vec<ChangedFile>,
    pub decision: Option<Decision>,
}

impl Gate {
    pub fn approver_permission(&self) -> Permission {
        Permission::from_github(&self.approver_permission, Some(&self.approver_permission))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub approved: bool,
    pub by: String,
    pub reason: Option<String>,
    pub at: DateTime<Utc>,
}

/// A person's approval or rejection of a task's gate.
#[derive(Debug, Clone)]
pub struct Verdict<'a> {
    pub task_id: i64,
    /// The run the person decides on, when they named one: refused unless it is the one
    /// that waits.
    pub run_id: Option<i64>,
    pub approve: bool,
    pub actor: Actor<'a>,
    /// The actor's permission on the repository, as GitHub says.
    pub permission: Permission,
    pub reason: Option<&'a str>,
    /// The commit the person saw: the check run's, for a button.
    pub seen_sha: Option<&'a str>,
    /// Where the verdict came from (`check_run`, `comment`, `api`), for the audit trail.
    pub source: &'static str,
}

/// Why a verdict was not taken: nothing changed but the audit trail.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GateRefusal {
    #[error("the run is not waiting for an approval")]
    NotWaiting,
    #[error(transparent)]
    NotAllowed(authz::Refusal),
    #[error(
        "this check run is for another commit; the run waits for an approval of {}",
        short(.waits)
    )]
    OtherCommit { waits: String },
    #[error(
        "the branch moved since the run asked for approval of {} (it is at {}); run it again with `/conveyor retry`",
        short(.waits),
        .now.as_deref().map_or("nothing", short)
    )]
    BranchMoved { waits: String, now: Option<String> },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decided {
    /// The run goes on: the task is back in the queue.
    Approved { run_id: i64, head_sha: String },
    /// The run failed with the rejection as its reason.
    Rejected { run_id: i64, head_sha: String },
    /// Nothing changed; the reason is for the person.
    Refused(GateRefusal),
}

/// Parks run `run_id` at `gate`; `false` when the run is no longer running. The caller ends
/// the task's lease to `awaiting_approval` in the same transaction.
pub async fn park(db: impl PgExecutor<'_>, run_id: i64, gate: &Gate) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "UPDATE runs SET state = 'awaiting_approval', approval = $2, check_sha = $3,
             resume_at_step = NULL
         WHERE id = $1 AND state = 'running'",
    )
    .bind(run_id)
    .bind(Json(gate))
    .bind(&gate.head_sha)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Records that a gate passed by itself (no path it lists changed), as its step's result
/// and in the audit trail.
pub async fn passed_by_itself(
    conn: &mut PgConnection,
    task_id: i64,
    run_id: i64,
    step: &str,
    position: i32,
    changed: &[String],
) -> sqlx::Result<()> {
    let listed: String = changed.iter().map(|path| format!("- {path}\n")).collect();
    let output =
        format!("approved automatically: no listed path changed\nchanged files:\n{listed}");
    runs::record_gate_step(
        &mut *conn,
        run_id,
        &gate_step(step, position, true, &output),
    )
    .await?;
    events::record(
        conn,
        task_id,
        Some(run_id),
        "approval",
        json!({ "step": step, "accepted": true, "automatic": true, "changed": changed }),
    )
    .await
}

/// Takes `verdict` on the task's gate, in the caller's transaction: accepted, it moves the
/// task on and queues the gate's check run and the status comment; refused, it changes
/// nothing. Either way the decision is in the audit trail. `forge` says where the run's
/// branch is now: an approval holds only for the commit it was asked for.
pub async fn decide(
    conn: &mut PgConnection,
    verdict: &Verdict<'_>,
    settings: &Settings,
    forge: &impl Forge,
) -> anyhow::Result<Decided> {
    let task_id = verdict.task_id;
    let state: Option<TaskState> =
        sqlx::query_scalar("SELECT state FROM tasks WHERE id = $1 FOR UPDATE")
            .bind(task_id)
            .fetch_optional(&mut *conn)
            .await?;
    let parked = match state {
        Some(TaskState::AwaitingApproval) => waiting(&mut *conn, task_id).await?,
        _ => None,
    };
    let parked = parked.filter(|(run_id, _)| verdict.run_id.is_none_or(|named| named == *run_id));
    let Some((run_id, mut gate)) = parked else {
        let why = GateRefusal::NotWaiting;
        audit(conn, task_id, verdict.run_id, verdict, None, Err(&why)).await?;
        return Ok(Decided::Refused(why));
    };
    let branch = runs::get(&mut *conn, run_id)
        .await?
        .and_then(|run| run.branch);
    let branch_head = match branch {
        Some(branch) => forge.branch_head(&branch).await?,
        None => None,
    };
    // Who may decide is what the run started with, whatever the file says now.
    let pinned = Settings {
        approver_permission: gate.approver_permission(),
        allow_self_approval: gate.allow_self_approval,
        ..settings.clone()
    };
    let action = if verdict.approve {
        Action::Approve
    } else {
        Action::Reject
    };
    let refusal = if let Err(refusal) = authz::check(
        action,
        &verdict.actor,
        verdict.permission,
        &pinned,
        gate.requester.as_deref(),
    ) {
        Some(GateRefusal::NotAllowed(refusal))
    } else if verdict.seen_sha.is_some_and(|seen| seen != gate.head_sha) {
        Some(GateRefusal::OtherCommit {
            waits: gate.head_sha.clone(),
        })
    } else if branch_head.as_deref() != Some(gate.head_sha.as_str()) {
        Some(GateRefusal::BranchMoved {
            waits: gate.head_sha.clone(),
            now: branch_head,
        })
    } else {
        None
    };
    if let Some(why) = refusal {
        audit(conn, task_id, Some(run_id), verdict, Some(&gate), Err(&why)).await?;
        return Ok(Decided::Refused(why));
    }
    let decision = Decision {
        approved: verdict.approve,
        by: verdict.actor.login.to_owned(),
        reason: verdict.reason.map(str::to_owned),
        at: Utc::now(),
    };
    gate.decision = Some(decision);
    audit(conn, task_id, Some(run_id), verdict, Some(&gate), Ok(())).await?;
    let by = verdict.actor.login;
    let head_sha = gate.head_sha.clone();
    let decided = if verdict.approve {
        let output = format!("approved by @{by}");
        runs::record_gate_step(
            &mut *conn,
            run_id,
            &gate_step(&gate.step, gate.position, true, &output),
        )
        .await?;
        sqlx::query("UPDATE runs SET approval = $2, resume_at_step = $3 WHERE id = $1")
            .bind(run_id)
            .bind(Json(&gate))
            .bind(gate.position + 1)
            .execute(&mut *conn)
            .await?;
        tasks::leave_gate(
            conn,
            task_id,
            TaskState::Queued,
            json!({ "approved_by": by }),
        )
        .await?;
        Decided::Approved {
            run_id,
            head_sha: head_sha.clone(),
        }
    } else {
        let output = match verdict.reason {
            Some(reason) => format!("rejected by @{by}: {reason}"),
            None => format!("rejected by @{by}"),
        };
        runs::record_gate_step(
            &mut *conn,
            run_id,
            &gate_step(&gate.step, gate.position, false, &output),
        )
        .await?;
        let outcome = Outcome::Rejected {
            by: by.to_owned(),
            reason: verdict.reason.map(str::to_owned),
        };
        sqlx::query(
            "UPDATE runs SET approval = $2, state = 'failed', finished_at = now(), failure = $3
             WHERE id = $1",
        )
        .bind(run_id)
        .bind(Json(&gate))
        .bind(format!("rejected by @{by}"))
        .execute(&mut *conn)
        .await?;
        runs::record_outcome(&mut *conn, run_id, &outcome).await?;
        tasks::leave_gate(
            conn,
            task_id,
            TaskState::Failed,
            json!({ "rejected_by": by }),
        )
        .await?;
        Decided::Rejected {
            run_id,
            head_sha: head_sha.clone(),
        }
    };
    let effects = [
        Effect::CheckRun { task_id, head_sha },
        Effect::StatusComment { task_id },
    ];
    outbox::sync_task(conn, task_id, &effects).await?;
    Ok(decided)
}

/// The task's gate the run waits at now, if it waits.
pub async fn waiting(db: impl PgExecutor<'_>, task_id: i64) -> sqlx::Result<Option<(i64, Gate)>> {
    let row: Option<(i64, Json<Gate>)> = sqlx::query_as(
        "SELECT id, approval FROM runs
         WHERE task_id = $1 AND state = 'awaiting_approval' AND resume_at_step IS NULL
           AND approval IS NOT NULL
         ORDER BY id DESC LIMIT 1",
    )
    .bind(task_id)
    .fetch_optional(db)
    .await?;
    Ok(row.map(|(id, gate)| (id, gate.0)))
}

async fn audit(
    conn: &mut PgConnection,
    task_id: i64,
    run_id: Option<i64>,
    verdict: &Verdict<'_>,
    gate: Option<&Gate>,
    result: Result<(), &GateRefusal>,
) -> sqlx::Result<()> {
    events::record(
        conn,
        task_id,
        run_id,
        "approval",
        json!({
            "decision": if verdict.approve { "approve" } else { "reject" },
            "by": verdict.actor.login,
            "permission": verdict.permission.as_str(),
            "reason": verdict.reason,
            "source": verdict.source,
            "step": gate.map(|gate| &gate.step),
            "head_sha": gate.map(|gate| &gate.head_sha),
            "seen_sha": verdict.seen_sha,
            "accepted": result.is_ok(),
            "refused": result.err().map(ToString::to_string),
        }),
    )
    .await
}

fn gate_step(name: &str, position: i32, passed: bool, output: &str) -> StepRecord {
    StepRecord {
        position,
        name: name.to_owned(),
        command: GATE_COMMAND.to_owned(),
        exit_code: Some(if passed { 0 } else { 1 }),
        duration_ms: 0,
        output: output.to_owned(),
        timed_out: false,
        attempts: 1,
    }
}

fn short(sha: &str) -> &str {
    &sha[..sha.len().min(12)]
}
