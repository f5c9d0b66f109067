//! The board through the API: tasks made, moved, blocked and listed, with seed 001's
//! transition table and guards, against the real router and Postgres, and the work started
//! from GitHub showing on it.

mod support;

use axum::http::StatusCode;
use conveyor::engine::board::{BoardState, Rules};
use conveyor::engine::runs;
use conveyor::engine::tasks;
use conveyor::engine::{RunState, TaskState};
use conveyor::scheduler::claim_next;
use serde_json::{Value, json};
use sqlx::PgPool;
use support::{API_TOKEN, Harness, INSTALLATION_ID, OWNER, REPO};

async fn move_to(harness: &Harness, id: i64, to: &str) -> (StatusCode, Value) {
    harness
        .api_json(
            "POST",
            &format!("/api/v2/tasks/{id}/transition"),
            &json!({ "to": to }),
        )
        .await
}

async fn shown(harness: &Harness, id: i64) -> Value {
    let (status, task) = harness
        .api("GET", &format!("/api/v2/tasks/{id}"), Some(API_TOKEN))
        .await;
    assert_eq!(status, StatusCode::OK, "{task}");
    task
}

fn id(task: &Value) -> i64 {
    task["id"].as_i64().unwrap()
}

/// Claims the next task as a worker would, and ends its lease in `to`.
async fn claim_and_end(pool: &PgPool, expected: i64, to: TaskState) {
    let task = claim_next(pool, "p", "p/0")
        .await
        .unwrap()
        .expect("a task to claim");
    assert_eq!(task.id, expected);
    let mut tx = pool.begin().await.unwrap();
    tasks::transition(&mut tx, task.id, task.lease_epoch, to)
        .await
        .unwrap();
    tx.commit().await.unwrap();
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn a_task_made_through_the_api_goes_from_backlog_to_ready_to_claimed_to_done(pool: PgPool) {
    let harness = Harness::start_idle(pool.clone()).await;
    harness.install().await;
    let request = axum::http::Request::post("/api/v2/tasks")
        .header("authorization", format!("Bearer {API_TOKEN}"))
        .header("content-type", "application/json")
        .body(axum::body::Body::from(
            json!({
                "repository": "acme/widgets", "title": "Add a changelog", "task_type": "docs",
                "priority": 1, "base_branch": "main", "labels": ["docs"],
                "acceptance_criteria": ["CHANGELOG.md exists"],
            })
            .to_string(),
        ))
        .unwrap();
    let response = tower::ServiceExt::oneshot(harness.router.clone(), request)
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let task: Value = serde_json::from_slice(&body).unwrap();
    let task_id = id(&task);
    assert_eq!(location, format!("/api/v2/tasks/{task_id}"));
    assert_eq!(task["state"], "backlog");
    assert_eq!(task["source"], "manual");
    assert_eq!(task["repository"], "acme/widgets");
    assert_eq!(task["labels"], json!(["docs"]));
    assert_eq!(task["github"], Value::Null, "no issue behind it");
    assert!(
        claim_next(&pool, "p", "p/0").await.unwrap().is_none(),
        "the backlog is not claimed"
    );

    let (status, moved) = move_to(&harness, task_id, "ready").await;
    assert_eq!((status, &moved["state"]), (StatusCode::OK, &json!("ready")));
    let claimed = claim_next(&pool, "p", "p/0").await.unwrap().unwrap();
    assert_eq!(claimed.id, task_id);
    assert_eq!(shown(&harness, task_id).await["state"], "in_progress");
    let mut tx = pool.begin().await.unwrap();
    tasks::transition(&mut tx, task_id, claimed.lease_epoch, TaskState::Succeeded)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let done = shown(&harness, task_id).await;
    assert_eq!(done["state"], "done", "nothing to review: {done}");
    assert_eq!(done["queue_state"], "succeeded");
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn a_bad_task_is_refused_with_a_code_and_nothing_is_made(pool: PgPool) {
    let harness = Harness::start_idle(pool.clone()).await;
    let new = json!({
        "repository": "acme/widgets", "title": "x", "task_type": "feature", "priority": 1,
        "base_branch": "main",
    });
    let (status, reply) = harness.api_json("POST", "/api/v2/tasks", &new).await;
    assert_eq!(
        (status, reply["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("unknown_repository")),
        "{reply}"
    );
    harness.install().await;
    let mut without_branch = new.clone();
    without_branch
        .as_object_mut()
        .unwrap()
        .remove("base_branch");
    let (status, reply) = harness
        .api_json("POST", "/api/v2/tasks", &without_branch)
        .await;
    assert_eq!(
        (status, reply["code"].as_str()),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("base_branch_unknown")
        ),
        "{reply}"
    );
    for bad in [
        json!({ "repository": "acme", "title": "x", "task_type": "f", "priority": 1 }),
        json!({ "repository": "acme/widgets", "title": " ", "task_type": "f", "priority": 1 }),
        json!({ "repository": "acme/widgets", "title": "x", "priority": 1 }),
        json!({ "repository": "acme/widgets", "title": "x", "task_type": "f", "priority": 1,
                "base_branch": "main", "colour": "red" }),
    ] {
        let (status, reply) = harness.api_json("POST", "/api/v2/tasks", &bad).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {reply}");
        assert_eq!(reply["code"], "invalid_request", "{reply}");
        assert!(reply["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM tasks")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(count, 0);
}

/// Puts a new task at `state` the way its users and its scheduler would.
async fn task_at(harness: &Harness, state: BoardState) -> i64 {
    let pool = &harness.pool;
    // Above every earlier task, so that the claims below take this one.
    let earlier: i64 = sqlx::query_scalar("SELECT count(*) FROM tasks")
        .fetch_one(pool)
        .await
        .unwrap();
    let extra = json!({ "priority": 10 + earlier });
    let task = id(&harness
        .create_task(&format!("at {}", state.as_str()), extra)
        .await);
    // Room for every task this sets up to be in progress at once.
    sqlx::query("UPDATE repositories SET max_running = 64")
        .execute(pool)
        .await
        .unwrap();
    let ready = |task| async move {
        assert_eq!(move_to(harness, task, "ready").await.0, StatusCode::OK);
    };
    match state {
        BoardState::Backlog => {}
        BoardState::Ready => ready(task).await,
        BoardState::Blocked => {
            ready(task).await;
            assert_eq!(move_to(harness, task, "blocked").await.0, StatusCode::OK);
        }
        BoardState::Cancelled => {
            assert_eq!(move_to(harness, task, "cancelled").await.0, StatusCode::OK);
        }
        BoardState::InProgress => {
            ready(task).await;
            let claimed = claim_next(pool, "p", "p/0").await.unwrap().unwrap();
            assert_eq!(claimed.id, task);
        }
        BoardState::Done => {
            ready(task).await;
            claim_and_end(pool, task, TaskState::Succeeded).await;
        }
        BoardState::InReview => {
            ready(task).await;
            let claimed = claim_next(pool, "p", "p/0").await.unwrap().unwrap();
            let mut conn = pool.acquire().await.unwrap();
            let run = runs::start(&mut conn, task, "default").await.unwrap();
            runs::record_pull_request(
                &mut *conn,
                run.id,
                7,
                "https://github.com/acme/widgets/pull/7",
            )
            .await
            .unwrap();
            tasks::transition(&mut conn, task, claimed.lease_epoch, TaskState::Succeeded)
                .await
                .unwrap();
        }
    }
    assert_eq!(
        shown(harness, task).await["state"],
        state.as_str(),
        "set up at {state:?}"
    );
    task
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn every_invalid_transition_is_refused_with_the_allowed_ones_and_changes_nothing(
    pool: PgPool,
) {
    let harness = Harness::start_idle(pool.clone()).await;
    harness.install().await;
    for from in BoardState::ALL {
        let task = task_at(&harness, from).await;
        let before = shown(&harness, task).await;
        for to in BoardState::ALL
            .into_iter()
            .filter(|to| !from.allows(*to, Rules::default()))
        {
            let (status, reply) = move_to(&harness, task, to.as_str()).await;
            assert_eq!(status, StatusCode::CONFLICT, "{from:?} -> {to:?}: {reply}");
            assert_eq!(
                reply,
                json!({
                    "code": "invalid_transition",
                    "message": reply["message"],
                    "from": from.as_str(),
                    "to": to.as_str(),
                    "allowed": from.next(Rules::default()).iter().map(|s| s.as_str()).collect::<Vec<_>>(),
                }),
            );
        }
        let after = shown(&harness, task).await;
        assert_eq!(
            (&after["state"], &after["queue_state"], &after["events"]),
            (&before["state"], &before["queue_state"], &before["events"]),
            "{from:?}: refused moves change nothing"
        );
    }
    let (status, reply) = move_to(&harness, 424242, "ready").await;
    assert_eq!(
        (status, reply["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
    let (status, reply) = move_to(&harness, 1, "nowhere").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{reply}");
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn moves_the_table_allows_but_the_guards_refuse(pool: PgPool) {
    let harness = Harness::start_idle(pool.clone()).await;
    harness.install().await;
    let ready = task_at(&harness, BoardState::Ready).await;
    let (status, reply) = move_to(&harness, ready, "in_progress").await;
    assert_eq!(
        (status, reply["code"].as_str()),
        (StatusCode::CONFLICT, Some("claim_only"))
    );
    let running = task_at(&harness, BoardState::InProgress).await;
    for to in ["ready", "blocked", "in_review"] {
        let (status, reply) = move_to(&harness, running, to).await;
        assert_eq!(
            (status, reply["code"].as_str()),
            (StatusCode::CONFLICT, Some("run_in_progress")),
            "{to}: {reply}"
        );
    }
    let (status, reply) = move_to(&harness, running, "cancelled").await;
    assert_eq!(status, StatusCode::ACCEPTED, "its worker stops it: {reply}");
    let requested: bool = sqlx::query_scalar("SELECT cancel_requested FROM tasks WHERE id = $1")
        .bind(running)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(requested);
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn a_task_waits_for_its_blockers_visibly_and_becomes_ready_when_they_resolve(pool: PgPool) {
    let harness = Harness::start_idle(pool.clone()).await;
    harness.install().await;
    let first = id(&harness.create_task("first", json!({})).await);
    let second = harness
        .create_task("second", json!({ "blocked_by": [first] }))
        .await;
    let second = id(&second);
    assert_eq!(shown(&harness, second).await["blocked_by"], json!([first]));
    assert_eq!(shown(&harness, first).await["blocks"], json!([second]));

    let (status, reply) = move_to(&harness, second, "ready").await;
    assert_eq!(
        (status, reply["code"].as_str(), &reply["blocked_by"]),
        (
            StatusCode::CONFLICT,
            Some("blocked_by_dependencies"),
            &json!([first])
        ),
        "{reply}"
    );
    let (status, reply) = harness
        .api_json(
            "POST",
            &format!("/api/v2/tasks/{first}/dependencies"),
            &json!({ "blocked_by": second }),
        )
        .await;
    assert_eq!(
        (status, reply["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("dependency_cycle")),
        "{reply}"
    );

    // The blocker fails: its dependent shows blocked, saying why.
    assert_eq!(move_to(&harness, first, "ready").await.0, StatusCode::OK);
    claim_and_end(&pool, first, TaskState::Failed).await;
    assert_eq!(shown(&harness, first).await["state"], "blocked");
    let third = id(&harness.create_task("third", json!({})).await);
    assert_eq!(move_to(&harness, third, "ready").await.0, StatusCode::OK);
    let (status, _) = harness
        .api_json(
            "POST",
            &format!("/api/v2/tasks/{third}/dependencies"),
            &json!({ "blocked_by": first }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let waiting = shown(&harness, third).await;
    assert_eq!(waiting["state"], "blocked", "{waiting}");
    assert_eq!(waiting["blocked_reason"], format!("waiting for #{first}"));
    assert!(
        claim_next(&pool, "p", "p/0").await.unwrap().is_none(),
        "a task with an unresolved blocker is not claimed"
    );

    // Run again and done: both dependents may go.
    assert_eq!(move_to(&harness, first, "ready").await.0, StatusCode::OK);
    claim_and_end(&pool, first, TaskState::Succeeded).await;
    assert_eq!(shown(&harness, third).await["state"], "ready");
    assert_eq!(move_to(&harness, second, "ready").await.0, StatusCode::OK);
    let (status, removed) = harness
        .api(
            "DELETE",
            &format!("/api/v2/tasks/{second}/dependencies/{first}"),
            Some(API_TOKEN),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{removed}");
    assert_eq!(removed["blocked_by"], json!([]));
    let (status, _) = harness
        .api(
            "DELETE",
            &format!("/api/v2/tasks/{second}/dependencies/{first}"),
            Some(API_TOKEN),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn a_finished_task_is_reopened_and_restored_with_a_fresh_round(pool: PgPool) {
    let harness = Harness::start_idle(pool.clone()).await;
    harness.install().await;
    let done = task_at(&harness, BoardState::Done).await;
    assert_eq!(move_to(&harness, done, "ready").await.0, StatusCode::OK);
    let again = shown(&harness, done).await;
    assert_eq!(
        (
            &again["state"],
            &again["queue_state"],
            &again["retry_count"]
        ),
        (&json!("ready"), &json!("queued"), &json!(0))
    );
    claim_and_end(&pool, done, TaskState::Succeeded).await;
    let cancelled = task_at(&harness, BoardState::Cancelled).await;
    let (status, restored) = move_to(&harness, cancelled, "backlog").await;
    assert_eq!(status, StatusCode::OK, "{restored}");
    assert_eq!(
        (&restored["state"], &restored["queue_state"]),
        (&json!("backlog"), &json!("held"))
    );
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn the_board_has_seed_001s_columns_with_counts_and_filters(pool: PgPool) {
    let harness = Harness::start_idle(pool.clone()).await;
    harness.install().await;
    let docs = id(&harness
        .create_task("docs", json!({ "labels": ["docs"], "task_type": "docs" }))
        .await);
    let ready = task_at(&harness, BoardState::Ready).await;
    let (status, board) = harness
        .api("GET", "/api/v2/tasks/board", Some(API_TOKEN))
        .await;
    assert_eq!(status, StatusCode::OK);
    let columns: Vec<(&str, i64)> = board["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["state"].as_str().unwrap(), c["count"].as_i64().unwrap()))
        .collect();
    assert_eq!(
        columns,
        [
            ("backlog", 1),
            ("ready", 1),
            ("in_progress", 0),
            ("in_review", 0),
            ("blocked", 0),
            ("done", 0),
            ("cancelled", 0)
        ]
    );
    assert_eq!(board["columns"][1]["tasks"][0]["id"], ready);

    let (_, listed) = harness
        .api("GET", "/api/v2/tasks?label=docs", Some(API_TOKEN))
        .await;
    let ids: Vec<i64> = listed["tasks"].as_array().unwrap().iter().map(id).collect();
    assert_eq!(ids, [docs]);
    let (_, listed) = harness
        .api(
            "GET",
            "/api/v2/tasks?state=ready&repo=acme/widgets",
            Some(API_TOKEN),
        )
        .await;
    let ids: Vec<i64> = listed["tasks"].as_array().unwrap().iter().map(id).collect();
    assert_eq!(ids, [ready]);
    let (_, page) = harness
        .api("GET", "/api/v2/tasks?limit=1", Some(API_TOKEN))
        .await;
    assert_eq!(page["tasks"][0]["id"], ready, "newest first");
    let (_, next) = harness
        .api(
            "GET",
            &format!("/api/v2/tasks?limit=1&cursor={}", page["next"]),
            Some(API_TOKEN),
        )
        .await;
    assert_eq!(next["tasks"][0]["id"], docs);
    let (status, reply) = harness
        .api("GET", "/api/v2/tasks?state=queued", Some(API_TOKEN))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{reply}");
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn the_state_machine_answers_both_tables(pool: PgPool) {
    let harness = Harness::start_idle(pool).await;
    let (status, tables) = harness
        .api("GET", "/api/v2/state-machine", Some(API_TOKEN))
        .await;
    assert_eq!(status, StatusCode::OK);
    for from in BoardState::ALL {
        let next: Vec<&str> = from
            .next(Rules::default())
            .iter()
            .map(|s| s.as_str())
            .collect();
        assert_eq!(tables["task"][from.as_str()], json!(next), "{from:?}");
    }
    assert_eq!(tables["task"].as_object().unwrap().len(), 7);
    assert_eq!(
        tables["task"]["backlog"],
        json!(["ready", "cancelled"]),
        "seed 001 §4"
    );
    for from in RunState::ALL {
        let next: Vec<&str> = from.next().iter().map(|s| s.as_str()).collect();
        assert_eq!(tables["run"][from.as_str()], json!(next), "{from:?}");
    }
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn label_started_work_shows_on_the_board_with_its_github_link(pool: PgPool) {
    let harness = Harness::start_idle(pool.clone()).await;
    harness.add_repo_with_pipeline();
    let task_id = harness.label("label-1", 42, "Fix the widget").await;
    let (_, board) = harness
        .api(
            "GET",
            "/api/v2/tasks/board?repo=acme/widgets",
            Some(API_TOKEN),
        )
        .await;
    let ready = &board["columns"][1];
    assert_eq!(ready["state"], "ready");
    let card = &ready["tasks"][0];
    assert_eq!(card["id"], task_id);
    assert_eq!(card["source"], "github");
    assert_eq!(card["issue_number"], 42);
    let git_url = &harness.github.url;
    assert_eq!(
        card["github"],
        format!("{git_url}/acme/widgets/issues/42"),
        "{card}"
    );
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn an_api_task_runs_its_pipeline_to_a_pull_request_in_review_and_is_done_when_merged(
    pool: PgPool,
) {
    let harness = Harness::start(pool.clone()).await;
    harness.add_repo_with_pipeline();
    harness.install().await;
    let task = id(&harness.create_task("Write the notes", json!({})).await);
    assert_eq!(move_to(&harness, task, "ready").await.0, StatusCode::OK);
    // The run ends in review; the outbox then opens its pull request.
    let in_review = support::wait_until("the task waits in review on its PR", || async {
        let task = shown(&harness, task).await;
        (task["state"] == "in_review" && task["pull_request_url"].is_string()).then_some(task)
    })
    .await;
    let pulls = harness.github.pull_requests(OWNER, REPO);
    assert_eq!(pulls.len(), 1, "{pulls:?}");
    let pull = &pulls[0];
    assert!(in_review["pull_request_url"].is_string(), "{in_review}");
    assert!(
        pull.head.starts_with(&format!("conveyor/task-{task}-")),
        "{}",
        pull.head
    );
    let body = pull.body.as_deref().unwrap_or_default();
    assert!(!body.contains("Closes #"), "no issue to close: {body}");

    let mut closed = support::fixture("pull_request/closed.payload.json");
    closed["number"] = json!(pull.number);
    closed["pull_request"]["number"] = json!(pull.number);
    closed["pull_request"]["merged"] = json!(true);
    closed["repository"]["name"] = json!(REPO);
    closed["repository"]["full_name"] = json!(format!("{OWNER}/{REPO}"));
    closed["repository"]["owner"]["login"] = json!(OWNER);
    closed["installation"] = json!({ "id": INSTALLATION_ID });
    let (status, reply) = harness
        .post_signed(
            "pull_request",
            "merged-1",
            &serde_json::to_vec(&closed).unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{reply}");
    support::wait_until("the merge moves it to done", || async {
        (shown(&harness, task).await["state"] == "done").then_some(())
    })
    .await;
}

/// Posts `body` to `path` with the operator token and, when given, an `Idempotency-Key`.
async fn post_keyed(
    harness: &Harness,
    path: &str,
    key: Option<&str>,
    body: &Value,
) -> (StatusCode, Option<String>, Value) {
    let mut request = axum::http::Request::post(path)
        .header("authorization", format!("Bearer {API_TOKEN}"))
        .header("content-type", "application/json");
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    let request = request
        .body(axum::body::Body::from(body.to_string()))
        .unwrap();
    let response = tower::ServiceExt::oneshot(harness.router.clone(), request)
        .await
        .unwrap();
    let status = response.status();
    let location = response
        .headers()
        .get("location")
        .map(|value| value.to_str().unwrap().to_owned());
    let bytes = http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap()
        .to_bytes();
    (status, location, serde_json::from_slice(&bytes).unwrap())
}

async fn task_count(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM tasks")
        .fetch_one(pool)
        .await
        .unwrap()
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn an_idempotency_key_makes_a_repeat_point_at_what_the_first_request_made(pool: PgPool) {
    let harness = Harness::start(pool.clone()).await;
    harness.install().await;
    let body = json!({
        "repository": format!("{OWNER}/{REPO}"), "title": "Once", "task_type": "feature",
        "priority": 1, "base_branch": "main",
    });
    let (status, first, task) = post_keyed(&harness, "/api/v2/tasks", Some("k-1"), &body).await;
    assert_eq!(status, StatusCode::CREATED, "{task}");
    let first = first.unwrap();
    let (status, again, refusal) = post_keyed(&harness, "/api/v2/tasks", Some("k-1"), &body).await;
    assert_eq!(status, StatusCode::CONFLICT, "{refusal}");
    assert_eq!(refusal["code"], "duplicate_request");
    assert_eq!(again.as_deref(), Some(first.as_str()));
    assert_eq!(refusal["location"], first);
    assert_eq!(task_count(&pool).await, 1);

    let mut other = body.clone();
    other["title"] = json!("Another");
    let (status, _, refusal) = post_keyed(&harness, "/api/v2/tasks", Some("k-1"), &other).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{refusal}");
    assert_eq!(refusal["code"], "idempotency_key_reused");
    assert_eq!(task_count(&pool).await, 1);

    // Starting something: the repeat points at the task it started.
    let id = id(&task);
    let run = format!("/api/v2/tasks/{id}/run");
    let (status, _, started) = post_keyed(&harness, &run, Some("k-run"), &json!({})).await;
    assert_eq!(status, StatusCode::OK, "{started}");
    let (status, again, _) = post_keyed(&harness, &run, Some("k-run"), &json!({})).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(again, Some(format!("/api/v2/tasks/{id}")));

    // Without a key, nothing changes.
    let (status, _, _) = post_keyed(&harness, "/api/v2/tasks", None, &body).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(task_count(&pool).await, 2);
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn a_failed_or_unauthorised_request_leaves_its_key_free_and_old_keys_are_forgotten(
    pool: PgPool,
) {
    let harness = Harness::start(pool.clone()).await;
    harness.install().await;
    let good = json!({
        "repository": format!("{OWNER}/{REPO}"), "title": "Later", "task_type": "feature",
        "priority": 1, "base_branch": "main",
    });
    let mut bad = good.clone();
    bad["repository"] = json!("nobody/here");
    for _ in 0..2 {
        let (status, _, refusal) = post_keyed(&harness, "/api/v2/tasks", Some("k-2"), &bad).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            refusal["code"], "unknown_repository",
            "refused as itself each time"
        );
    }
    let request = axum::http::Request::post("/api/v2/tasks")
        .header("authorization", "Bearer wrong")
        .header("content-type", "application/json")
        .header("idempotency-key", "k-2")
        .body(axum::body::Body::from(good.to_string()))
        .unwrap();
    let (status, _) = support::send(&harness.router, request).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, task) = post_keyed(&harness, "/api/v2/tasks", Some("k-2"), &good).await;
    assert_eq!(status, StatusCode::CREATED, "{task}");

    sqlx::query("UPDATE idempotency_keys SET created_at = now() - interval '7 hours'")
        .execute(&pool)
        .await
        .unwrap();
    let (status, _, _) = post_keyed(&harness, "/api/v2/tasks", Some("k-2"), &good).await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "a key older than 6 h is forgotten"
    );
    sqlx::query("UPDATE idempotency_keys SET created_at = now() - interval '7 hours'")
        .execute(&pool)
        .await
        .unwrap();
    let pruned = conveyor::housekeeping::retention::prune_idempotency_keys(&pool)
        .await
        .unwrap();
    assert_eq!(pruned, 1);

    let long = "k".repeat(300);
    let (status, _, refusal) = post_keyed(&harness, "/api/v2/tasks", Some(&long), &good).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(refusal["code"], "invalid_idempotency_key");
}
