//! Parent tasks and waves (seed 002) through the API and the scheduler's claim: a parent
//! runs nothing and follows its children, its children run at most `max_parallelism` at
//! once, a failed child does what the parent's failure policy says; and the board's rules
//! around them: the auto-approve flag and the audited force-run.

mod support;

use axum::http::StatusCode;
use conveyor::engine::TaskState;
use conveyor::engine::runs;
use conveyor::engine::tasks;
use conveyor::scheduler::{claim, claim_next};
use serde_json::{Value, json};
use sqlx::PgPool;
use support::{API_TOKEN, Harness, OWNER, REPO};

async fn create(harness: &Harness, title: &str, extra: Value) -> i64 {
    harness.create_task(title, extra).await["id"]
        .as_i64()
        .unwrap()
}

async fn move_to(harness: &Harness, id: i64, to: &str) -> (StatusCode, Value) {
    harness
        .api_json(
            "POST",
            &format!("/api/v2/tasks/{id}/transition"),
            &json!({ "to": to }),
        )
        .await
}

async fn ready(harness: &Harness, id: i64) {
    let (status, reply) = move_to(harness, id, "ready").await;
    assert_eq!(status, StatusCode::OK, "{reply}");
}

/// Makes ready `task` wait for `blocker` (a task in the backlog cannot be readied while it
/// waits).
async fn depend(harness: &Harness, task: i64, blocker: i64) {
    let (status, reply) = harness
        .api_json(
            "POST",
            &format!("/api/v2/tasks/{task}/dependencies"),
            &json!({ "blocked_by": blocker }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{reply}");
}

/// Cancels task `id` through the API, as an operator would.
async fn cancel(harness: &Harness, id: i64) {
    let (status, reply) = harness
        .api(
            "POST",
            &format!("/api/v2/tasks/{id}/cancel"),
            Some(API_TOKEN),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{reply}");
}

async fn shown(harness: &Harness, id: i64) -> Value {
    let (status, task) = harness
        .api("GET", &format!("/api/v2/tasks/{id}"), Some(API_TOKEN))
        .await;
    assert_eq!(status, StatusCode::OK, "{task}");
    task
}

/// A parent with `children` children, all ready, and room in the repository for all.
async fn family(harness: &Harness, parent: Value, children: usize) -> (i64, Vec<i64>) {
    let parent_id = create(harness, "parent", parent).await;
    let mut ids = Vec::new();
    for n in 0..children {
        let child = create(
            harness,
            &format!("child {n}"),
            json!({ "parent_id": parent_id }),
        )
        .await;
        ids.push(child);
    }
    ready(harness, parent_id).await;
    for &child in &ids {
        ready(harness, child).await;
    }
    sqlx::query("UPDATE repositories SET max_running = 64")
        .execute(&harness.pool)
        .await
        .unwrap();
    (parent_id, ids)
}

/// Ends the lease of claimed `task` in `to`, as its worker would.
async fn end(pool: &PgPool, task: &tasks::Task, to: TaskState) {
    let mut tx = pool.begin().await.unwrap();
    tasks::transition(&mut tx, task.id, task.lease_epoch, to)
        .await
        .unwrap();
    tx.commit().await.unwrap();
}

async fn claim_one(pool: &PgPool) -> Option<tasks::Task> {
    claim_next(pool, "p", "p/0").await.unwrap()
}

fn workers(n: usize) -> Vec<String> {
    (0..n).map(|n| format!("p/{n}")).collect()
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn a_parent_runs_nothing_and_is_done_when_its_children_are_done_or_cancelled(pool: PgPool) {
    let harness = Harness::start_idle(pool.clone()).await;
    harness.install().await;
    let (parent, children) = family(&harness, json!({}), 3).await;
    let after = create(&harness, "after the parent", json!({})).await;
    ready(&harness, after).await;
    depend(&harness, after, parent).await;
    assert_eq!(shown(&harness, parent).await["queue_state"], "held");

    let (status, reply) = move_to(&harness, children[2], "cancelled").await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    let claimed = claim(&pool, "p", &workers(8)).await.unwrap();
    let mut claimed_ids: Vec<i64> = claimed.iter().map(|(_, task)| task.id).collect();
    claimed_ids.sort_unstable();
    assert_eq!(
        claimed_ids,
        children[..2],
        "the children run, neither the parent nor what waits for it"
    );
    end(&pool, &claimed[0].1, TaskState::Succeeded).await;
    let waiting = shown(&harness, parent).await;
    assert_ne!(waiting["state"], "done", "a child still runs: {waiting}");
    end(&pool, &claimed[1].1, TaskState::Succeeded).await;

    let done = shown(&harness, parent).await;
    assert_eq!(done["state"], "done", "{done}");
    assert_eq!(done["queue_state"], "succeeded");
    assert!(runs::for_task(&pool, parent).await.unwrap().is_empty());
    let next = claim_one(&pool).await.expect("what waited for the parent");
    assert_eq!(next.id, after);
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn the_claim_runs_at_most_max_parallelism_children_of_a_parent(pool: PgPool) {
    let harness = Harness::start_idle(pool.clone()).await;
    harness.install().await;
    let (parent, children) = family(&harness, json!({ "max_parallelism": 2 }), 4).await;
    assert_eq!(shown(&harness, parent).await["max_parallelism"], 2);
    let other = create(&harness, "unrelated", json!({})).await;
    ready(&harness, other).await;

    let claimed = claim(&pool, "p", &workers(8)).await.unwrap();
    let ids: Vec<i64> = claimed.iter().map(|(_, task)| task.id).collect();
    assert_eq!(ids.len(), 3, "two children and the unrelated task: {ids:?}");
    assert!(ids.contains(&other));
    let running: Vec<&tasks::Task> = claimed
        .iter()
        .map(|(_, task)| task)
        .filter(|task| task.id != other)
        .collect();
    assert_eq!(
        running.iter().map(|t| t.id).collect::<Vec<_>>(),
        children[..2]
    );
    assert!(
        claim_one(&pool).await.is_none(),
        "the parent's limit is full"
    );

    end(&pool, running[0], TaskState::Succeeded).await;
    let claimed = claim(&pool, "p", &workers(8)).await.unwrap();
    let ids: Vec<i64> = claimed.iter().map(|(_, task)| task.id).collect();
    assert_eq!(ids, [children[2]], "one slot freed, one child started");
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn an_imported_parent_takes_the_hint_and_policy_and_completes_without_running(pool: PgPool) {
    let harness = Harness::start_idle(pool.clone()).await;
    harness.install().await;
    let markdown = "- 1.1 Build it\n  - 1.1.1 Write it\n  - 1.1.2 Test it\n";
    let (status, job) = harness
        .api_json(
            "POST",
            "/api/v2/import/prd/commit",
            &json!({
                "repository": format!("{OWNER}/{REPO}"), "markdown": markdown,
                "base_branch": "main", "granularity": "subtask", "auto_ready": true,
                "max_parallelism_hint": 2, "failure_policy": "continue",
            }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{job}");
    let key = |key: &str| job["keys"][key].as_i64().unwrap();
    let parent = shown(&harness, key("1.1")).await;
    assert_eq!(parent["max_parallelism"], 2, "{parent}");
    assert_eq!(parent["failure_policy"], "continue");
    assert_eq!(
        shown(&harness, key("1.1.1")).await["max_parallelism"],
        Value::Null
    );
    for child in ["1.1.1", "1.1.2"] {
        let claimed = claim_one(&pool).await.expect("the next sub-task");
        assert_eq!(claimed.id, key(child), "sub-tasks run in order");
        end(&pool, &claimed, TaskState::Succeeded).await;
    }
    assert!(
        claim_one(&pool).await.is_none(),
        "the parent does not run its own pipeline after its children"
    );
    assert_eq!(shown(&harness, key("1.1")).await["state"], "done");
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn with_the_stop_policy_a_failed_child_blocks_its_waiting_siblings_and_the_parent(
    pool: PgPool,
) {
    let harness = Harness::start_idle(pool.clone()).await;
    harness.install().await;
    let (parent, children) = family(&harness, json!({ "max_parallelism": 1 }), 3).await;
    assert_eq!(shown(&harness, parent).await["failure_policy"], "stop");
    let first = claim_one(&pool).await.unwrap();
    assert_eq!(first.id, children[0]);
    end(&pool, &first, TaskState::Failed).await;

    let parent = shown(&harness, parent).await;
    assert_eq!(parent["state"], "blocked", "{parent}");
    let reason = parent["blocked_reason"].as_str().unwrap();
    assert!(
        reason.contains(&format!("task #{} failed", children[0])),
        "{reason}"
    );
    for &sibling in &children[1..] {
        let sibling = shown(&harness, sibling).await;
        assert_eq!(sibling["state"], "blocked", "{sibling}");
        assert_eq!(sibling["queue_state"], "held");
    }
    assert!(claim_one(&pool).await.is_none(), "the wave stopped");
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn with_the_continue_policy_the_others_go_on_and_the_parent_ends_blocked(pool: PgPool) {
    let harness = Harness::start_idle(pool.clone()).await;
    harness.install().await;
    let parent = create(
        &harness,
        "parent",
        json!({ "max_parallelism": 1, "failure_policy": "continue" }),
    )
    .await;
    let failing = create(
        &harness,
        "fails",
        json!({ "parent_id": parent, "priority": 3 }),
    )
    .await;
    let independent = create(&harness, "goes on", json!({ "parent_id": parent })).await;
    let dependent = create(
        &harness,
        "waits for the failing one",
        json!({ "parent_id": parent }),
    )
    .await;
    for task in [parent, failing, independent, dependent] {
        ready(&harness, task).await;
    }
    depend(&harness, dependent, failing).await;
    let first = claim_one(&pool).await.unwrap();
    assert_eq!(first.id, failing);
    end(&pool, &first, TaskState::Failed).await;
    assert_eq!(
        shown(&harness, dependent).await["queue_state"],
        "held",
        "what waits for a failure is stopped"
    );
    let still = shown(&harness, parent).await;
    assert_ne!(
        still["state"], "blocked",
        "a sibling can still run: {still}"
    );

    let next = claim_one(&pool)
        .await
        .expect("the independent sibling goes on");
    assert_eq!(next.id, independent);
    end(&pool, &next, TaskState::Succeeded).await;
    let ended = shown(&harness, parent).await;
    assert_eq!(ended["state"], "blocked", "{ended}");
    let reason = ended["blocked_reason"].as_str().unwrap();
    assert!(
        reason.contains(&format!("task #{failing} failed")),
        "{reason}"
    );
    assert!(claim_one(&pool).await.is_none());
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn with_the_retry_policy_a_failed_child_runs_again_until_its_attempts_are_used(pool: PgPool) {
    let harness = Harness::start_idle(pool.clone()).await;
    harness.install().await;
    let (parent, children) = family(
        &harness,
        json!({ "max_parallelism": 1, "failure_policy": "retry" }),
        2,
    )
    .await;
    sqlx::query("UPDATE tasks SET max_attempts = 2 WHERE id = $1")
        .bind(children[0])
        .execute(&pool)
        .await
        .unwrap();
    for attempt in 1..=2 {
        let claimed = claim_one(&pool).await.expect("the failing child again");
        assert_eq!((claimed.id, claimed.attempts), (children[0], attempt));
        end(&pool, &claimed, TaskState::Failed).await;
        if attempt == 1 {
            let retried = shown(&harness, children[0]).await;
            assert_eq!(retried["state"], "ready", "{retried}");
            assert_ne!(shown(&harness, parent).await["state"], "blocked");
        }
    }
    let parent = shown(&harness, parent).await;
    assert_eq!(parent["state"], "blocked", "out of attempts: {parent}");
    assert_eq!(shown(&harness, children[1]).await["state"], "blocked");
    assert!(claim_one(&pool).await.is_none());
}

/// A task claimed and held in progress.
async fn in_progress(harness: &Harness) -> i64 {
    let task = create(harness, "running", json!({})).await;
    ready(harness, task).await;
    assert_eq!(claim_one(&harness.pool).await.unwrap().id, task);
    task
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn without_auto_approve_in_progress_to_done_is_refused_with_the_allowed_ones(pool: PgPool) {
    let harness = Harness::start_idle(pool).await;
    harness.install().await;
    let task = in_progress(&harness).await;
    let allowed = json!(["in_review", "blocked", "ready", "cancelled"]);
    let (status, reply) = move_to(&harness, task, "done").await;
    assert_eq!(status, StatusCode::CONFLICT, "{reply}");
    assert_eq!(reply["code"], "invalid_transition");
    assert_eq!(reply["allowed"], allowed);
    let (_, tables) = harness
        .api("GET", "/api/v2/state-machine", Some(API_TOKEN))
        .await;
    assert_eq!(tables["task"]["in_progress"], allowed);
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn with_auto_approve_the_table_allows_in_progress_to_done(pool: PgPool) {
    let harness = Harness::start_configured(pool, |config| {
        config.workers = 0;
        config.feature_prd_auto_approve_review = true;
    })
    .await;
    harness.install().await;
    let (_, tables) = harness
        .api("GET", "/api/v2/state-machine", Some(API_TOKEN))
        .await;
    assert_eq!(
        tables["task"]["in_progress"],
        json!(["in_review", "blocked", "ready", "cancelled", "done"])
    );
    let task = in_progress(&harness).await;
    let (status, reply) = move_to(&harness, task, "done").await;
    assert_eq!(
        (status, reply["code"].as_str()),
        (StatusCode::CONFLICT, Some("run_in_progress")),
        "the table allows it, and the run still decides: {reply}"
    );
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn with_auto_approve_a_run_with_a_pull_request_goes_straight_to_done(pool: PgPool) {
    let harness = Harness::start_configured(pool, |config| {
        config.feature_prd_auto_approve_review = true;
    })
    .await;
    harness.add_repo_with_pipeline();
    harness.install().await;
    let task = create(&harness, "Write the notes", json!({})).await;
    ready(&harness, task).await;
    let done = support::wait_until("the run ends its task done", || async {
        let task = shown(&harness, task).await;
        (task["state"] == "done" && task["pull_request_url"].is_string()).then_some(task)
    })
    .await;
    assert_eq!(done["queue_state"], "succeeded");
    assert_eq!(harness.github.pull_requests(OWNER, REPO).len(), 1);
    let in_review = done["events"]
        .as_array()
        .unwrap()
        .iter()
        .any(|event| event["detail"]["board_to"] == "in_review");
    assert!(!in_review, "never in review: {done}");
}

async fn run(harness: &Harness, id: i64, body: Value) -> (StatusCode, Value) {
    harness
        .api_json("POST", &format!("/api/v2/tasks/{id}/run"), &body)
        .await
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn a_forced_run_queues_a_blocked_task_and_is_audited(pool: PgPool) {
    let harness = Harness::start_idle(pool.clone()).await;
    harness.install().await;
    let blocker = create(&harness, "blocker", json!({})).await;
    let task = create(&harness, "waits", json!({ "priority": 5 })).await;
    ready(&harness, blocker).await;
    ready(&harness, task).await;
    depend(&harness, task, blocker).await;
    let (status, reply) = run(&harness, task, json!({})).await;
    assert_eq!(
        (status, reply["code"].as_str()),
        (StatusCode::CONFLICT, Some("blocked_by_dependencies")),
        "{reply}"
    );
    assert_eq!(shown(&harness, task).await["state"], "blocked");

    let (status, reply) = run(&harness, task, json!({ "force": true })).await;
    assert_eq!(
        (status, reply["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_request")),
        "a forced run says why: {reply}"
    );
    let (status, reply) = run(
        &harness,
        task,
        json!({ "force": true, "reason": "the blocker is done by hand" }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    let claimed = claim_one(&pool).await.expect("the forced task is claimed");
    assert_eq!(claimed.id, task, "above its unresolved blocker");
    let trail = shown(&harness, task).await["events"].clone();
    let forced = trail
        .as_array()
        .unwrap()
        .iter()
        .find(|event| event["kind"] == "force_run")
        .unwrap_or_else(|| panic!("no force_run event: {trail}"));
    assert_eq!(forced["detail"]["by"], "api:operator");
    assert_eq!(forced["detail"]["reason"], "the blocker is done by hand");
    assert_eq!(forced["detail"]["unresolved_blockers"], json!([blocker]));

    end(&pool, &claimed, TaskState::Succeeded).await;
    let cancelled = create(&harness, "cancelled", json!({})).await;
    assert_eq!(
        move_to(&harness, cancelled, "cancelled").await.0,
        StatusCode::OK
    );
    for (finished, state) in [(task, "done"), (cancelled, "cancelled")] {
        let before = shown(&harness, finished).await;
        assert_eq!(before["state"], state);
        let (status, reply) = run(
            &harness,
            finished,
            json!({ "force": true, "reason": "again" }),
        )
        .await;
        assert_eq!(
            (status, reply["code"].as_str()),
            (StatusCode::CONFLICT, Some("not_forceable")),
            "{state}: {reply}"
        );
        let after = shown(&harness, finished).await;
        assert_eq!(
            (&after["state"], &after["events"]),
            (&before["state"], &before["events"]),
            "a refused force-run changes nothing"
        );
    }
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn cancelling_a_parent_cancels_the_children_that_have_not_ended(pool: PgPool) {
    let harness = Harness::start_idle(pool.clone()).await;
    harness.install().await;
    let (parent, children) = family(&harness, json!({ "max_parallelism": 1 }), 3).await;
    let running = claim_one(&pool).await.expect("the first child");
    assert_eq!(running.id, children[0]);
    let grandchild = create(&harness, "grandchild", json!({ "parent_id": children[2] })).await;
    ready(&harness, grandchild).await;

    cancel(&harness, parent).await;
    for id in [parent, children[1], children[2], grandchild] {
        let task = shown(&harness, id).await;
        assert_eq!(task["state"], "cancelled", "{task}");
        assert_eq!(task["queue_state"], "cancelled", "{task}");
    }
    assert!(
        tasks::cancel_requested(&pool, children[0]).await.unwrap(),
        "the running child is asked to stop"
    );
    assert!(
        claim_one(&pool).await.is_none(),
        "nothing of the parent's runs"
    );
}

/// Claims from several processes at the same moment: whichever locks the repository last
/// still counts the children the others started, and the parent stays within its limit.
#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn claims_from_several_processes_at_once_keep_a_parent_within_max_parallelism(pool: PgPool) {
    let harness = Harness::start_idle(pool.clone()).await;
    harness.install().await;
    for round in 0..60 {
        let (parent, _) = family(&harness, json!({ "max_parallelism": 1 }), 3).await;
        let claimers: Vec<_> = (0..4)
            .map(|n| {
                let pool = pool.clone();
                tokio::spawn(async move {
                    claim(&pool, &format!("p{n}"), &[format!("p{n}/0")])
                        .await
                        .unwrap()
                })
            })
            .collect();
        let mut claimed = Vec::new();
        for claimer in claimers {
            claimed.extend(claimer.await.unwrap());
        }
        assert!(
            claimed.len() <= 1,
            "round {round}: {} children of parent {parent} (limit 1) started",
            claimed.len()
        );
        for (_, task) in &claimed {
            end(&pool, task, TaskState::Cancelled).await;
        }
        cancel(&harness, parent).await;
    }
}
