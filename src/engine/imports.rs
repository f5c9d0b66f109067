//! PRD import, the database half: a [`Plan`] becomes tasks, their dependencies and the
//! [`ImportJob`] that remembers which key became which task.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::types::Json;
use sqlx::{PgConnection, PgExecutor};

use super::blockers::{self, BlockerError};
use super::board::BoardState;
use super::parents::FailurePolicy;
use super::prd::{Granularity, Plan};
use super::tasks::{self, BoardFields, NewTask};

/// A committed import.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, schemars::JsonSchema)]
pub struct ImportJob {
    pub id: i64,
    pub repository: String,
    pub granularity: String,
    /// In the plan's key order.
    #[serde(rename = "tasks")]
    pub task_ids: Vec<i64>,
    /// Each key of the task list → its task.
    #[serde(rename = "keys")]
    #[schemars(with = "BTreeMap<String, i64>")]
    pub task_keys: Json<BTreeMap<String, i64>>,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
}

/// How the plan's tasks start.
#[derive(Debug, Clone)]
pub struct Commit<'a> {
    /// Every task is made from it, with its own title, description and board fields.
    pub base: &'a NewTask,
    pub granularity: Granularity,
    /// Tasks start ready (blocked while their blockers are unresolved) rather than in the
    /// backlog.
    pub auto_ready: bool,
    /// Who imported it, for the job.
    pub by: &'a str,
    /// How many children of each parent run at once: the plan's `max_parallelism_hint`.
    pub max_parallelism: Option<i32>,
    /// What a failed child does to its siblings, for each parent.
    pub failure_policy: FailurePolicy,
}

/// Creates every task of `plan`, its dependency edges and the import job. Call inside a
/// transaction: a refused edge leaves half an import otherwise.
///
/// A parent (granularity `subtask`) runs nothing itself (see `engine::parents`): it is done
/// when its children are, so what waits for it waits for all of them, as the plan's waves
/// say. It also waits for its children as blockers, so the board shows what it waits for.
pub async fn commit(
    conn: &mut PgConnection,
    plan: &Plan,
    how: &Commit<'_>,
) -> Result<ImportJob, BlockerError> {
    let state = if how.auto_ready {
        BoardState::Ready
    } else {
        BoardState::Backlog
    };
    let mut ids: BTreeMap<String, i64> = BTreeMap::new();
    let mut task_ids = Vec::with_capacity(plan.tasks.len());
    let parents: BTreeSet<&str> = plan
        .tasks
        .iter()
        .filter_map(|planned| planned.parent.as_deref())
        .collect();
    // The plan lists a parent before its children.
    for planned in &plan.tasks {
        let parent_id = planned.parent.as_ref().map(|key| ids[key]);
        let is_parent = parents.contains(planned.key.as_str());
        let task = NewTask {
            title: planned.title.clone(),
            body: planned.description.clone().unwrap_or_default(),
            board: BoardFields {
                state,
                source: "prd_import",
                acceptance_criteria: planned.acceptance_criteria.clone(),
                context_files: planned.context_files.clone(),
                parent_id,
                max_parallelism: how.max_parallelism.filter(|_| is_parent),
                failure_policy: how.failure_policy,
                ..BoardFields::default()
            },
            ..how.base.clone()
        };
        let id = tasks::create(conn, &task)
            .await?
            .expect("a task without an issue or a delivery has no twin");
        ids.insert(planned.key.clone(), id);
        task_ids.push(id);
    }
    for edge in &plan.edges {
        blockers::add(conn, ids[&edge.to], ids[&edge.from]).await?;
    }
    for planned in &plan.tasks {
        if let Some(parent) = &planned.parent {
            blockers::add(conn, ids[parent], ids[&planned.key]).await?;
        }
    }
    let job = sqlx::query_as(
        "INSERT INTO import_jobs (repository, granularity, task_ids, task_keys, created_by)
         VALUES ($1, $2, $3, $4, $5)
         RETURNING id, repository, granularity, task_ids, task_keys, created_at, created_by",
    )
    .bind(format!("{}/{}", how.base.repo_owner, how.base.repo_name))
    .bind(how.granularity.as_str())
    .bind(&task_ids)
    .bind(Json(&ids))
    .bind(how.by)
    .fetch_one(&mut *conn)
    .await?;
    Ok(job)
}

pub async fn get(db: impl PgExecutor<'_>, id: i64) -> sqlx::Result<Option<ImportJob>> {
    sqlx::query_as(
        "SELECT id, repository, granularity, task_ids, task_keys, created_at, created_by
         FROM import_jobs WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(db)
    .await
}
