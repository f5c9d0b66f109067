//! PRD import through the API: a markdown task list previewed as a plan, committed as board
//! tasks with their dependencies in one transaction, refused whole when it does not hold
//! together, and run by the workers in dependency order.

mod support;

use axum::http::StatusCode;
use conveyor::engine::runs;
use serde_json::{Value, json};
use sqlx::PgPool;
use support::{API_TOKEN, Harness, OWNER, REPO};

const SAMPLE: &str = include_str!("fixtures/sample-prd-task-list.md");

fn request(markdown: &str, extra: Value) -> Value {
    let mut body = json!({
        "repository": format!("{OWNER}/{REPO}"),
        "markdown": markdown,
        "base_branch": "main",
    });
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    body
}

async fn commit(harness: &Harness, markdown: &str, extra: Value) -> (StatusCode, Value) {
    harness
        .api_json(
            "POST",
            "/api/v2/import/prd/commit",
            &request(markdown, extra),
        )
        .await
}

async fn task_count(harness: &Harness) -> usize {
    harness.task_ids().await.len()
}

/// The board's tasks of the repository, oldest first.
async fn board_tasks(harness: &Harness) -> Vec<Value> {
    let (status, page) = harness
        .api(
            "GET",
            "/api/v2/tasks?repo=acme/widgets&limit=200",
            Some(API_TOKEN),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let mut tasks = page["tasks"].as_array().unwrap().clone();
    tasks.reverse();
    tasks
}

fn ids(values: &Value) -> Vec<i64> {
    values
        .as_array()
        .unwrap()
        .iter()
        .map(|id| id.as_i64().unwrap())
        .collect()
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn the_samples_preview_is_its_plan_and_makes_nothing(pool: PgPool) {
    let harness = Harness::start_idle(pool).await;
    harness.install().await;
    let (status, plan) = harness
        .api_json(
            "POST",
            "/api/v2/import/prd/preview",
            &request(SAMPLE, json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{plan}");
    assert_eq!(plan["tasks"].as_array().unwrap().len(), 39);
    assert_eq!(plan["waves"].as_array().unwrap().len(), 29);
    assert_eq!(plan["waves"][0], json!(["1.1"]));
    assert_eq!(plan["blocked_roots"], json!(["1.1"]));
    let second = &plan["tasks"][1];
    assert_eq!(second["key"], "1.2");
    assert_eq!(second["blocked_by"], json!(["1.1"]));
    assert!(
        plan["edges"]
            .as_array()
            .unwrap()
            .contains(&json!({"from": "1.1", "to": "1.2"}))
    );
    assert_eq!(task_count(&harness).await, 0);
    let jobs: i64 = sqlx::query_scalar("SELECT count(*) FROM import_jobs")
        .fetch_one(&harness.pool)
        .await
        .unwrap();
    assert_eq!(jobs, 0);
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn a_commit_makes_every_task_with_its_edges_and_the_import_job(pool: PgPool) {
    let harness = Harness::start_idle(pool).await;
    harness.install().await;
    let (status, location, job) = harness
        .api_json_located(
            "POST",
            "/api/v2/import/prd/commit",
            &request(SAMPLE, json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{job}");
    assert_eq!(location, Some(format!("/api/v2/import/{}", job["id"])));
    let task_ids = ids(&job["tasks"]);
    assert_eq!(task_ids.len(), 39);
    assert_eq!(job["repository"], "acme/widgets");
    assert_eq!(job["granularity"], "task");
    assert_eq!(job["created_by"], "api:operator");
    let key = |key: &str| job["keys"][key].as_i64().unwrap();
    assert_eq!(task_ids[0], key("1.1"));

    let tasks = board_tasks(&harness).await;
    assert_eq!(
        tasks
            .iter()
            .map(|t| t["id"].as_i64().unwrap())
            .collect::<Vec<_>>(),
        task_ids
    );
    for task in &tasks {
        assert_eq!(task["source"], "prd_import", "{task}");
        assert_eq!(task["state"], "backlog", "{task}");
        assert_eq!(task["queue_state"], "held", "{task}");
    }
    let first = &tasks[0];
    assert_eq!(first["title"], "Compose up/down scripts verified");
    assert_eq!(first["acceptance_criteria"].as_array().unwrap().len(), 4);
    assert_eq!(
        first["context_files"],
        json!(["ai_docs/tasks/task_outcomes.md"])
    );
    assert!(
        first["description"]
            .as_str()
            .unwrap()
            .contains("docker compose build"),
        "{first}"
    );
    assert_eq!(tasks[1]["blocked_by"], json!([key("1.1")]));
    assert!(ids(&first["blocks"]).contains(&key("1.2")));

    let (status, preview) = harness
        .api_json(
            "POST",
            "/api/v2/import/prd/preview",
            &request(SAMPLE, json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let edges: i64 = sqlx::query_scalar("SELECT count(*) FROM task_blockers")
        .fetch_one(&harness.pool)
        .await
        .unwrap();
    assert_eq!(edges as usize, preview["edges"].as_array().unwrap().len());

    let (status, shown) = harness
        .api("GET", &location.unwrap(), Some(API_TOKEN))
        .await;
    assert_eq!(status, StatusCode::OK, "{shown}");
    assert_eq!(shown["tasks"], job["tasks"]);
    assert_eq!(shown["keys"], job["keys"]);
    let (status, missing) = harness
        .api("GET", "/api/v2/import/999999", Some(API_TOKEN))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(missing["code"], "not_found");
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn a_list_that_does_not_hold_together_is_refused_whole(pool: PgPool) {
    let harness = Harness::start_idle(pool).await;
    harness.install().await;
    let cases = [
        (
            "- 1.1 A (Dependencies: [1.2])\n- 1.2 B (Dependencies: [1.1])\n",
            "prd_cycle",
            Value::Null,
        ),
        (
            "- 1.1 A\n- 1.2 B (Dependencies: [3.4])\n",
            "prd_bad_reference",
            json!(2),
        ),
        ("- 1.1 A\n\n- 1.1 B\n", "prd_duplicate_key", json!(3)),
        ("just prose\n", "prd_no_tasks", Value::Null),
        (
            "- 1.1 A\n- 1.2 B (Dependencies: [1.x])\n",
            "prd_malformed_dependencies",
            json!(2),
        ),
    ];
    for (markdown, code, line) in &cases {
        for path in ["preview", "commit"] {
            let (status, refusal) = harness
                .api_json(
                    "POST",
                    &format!("/api/v2/import/prd/{path}"),
                    &request(markdown, json!({})),
                )
                .await;
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{refusal}");
            assert_eq!(refusal["code"], *code, "{refusal}");
            assert_eq!(&refusal["line"], line, "{refusal}");
        }
    }
    let (_, cycle) = commit(&harness, cases[0].0, json!({})).await;
    assert_eq!(cycle["keys"], json!(["1.1", "1.2"]), "{cycle}");
    assert_eq!(task_count(&harness).await, 0);
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn the_repository_must_be_installed_with_a_known_branch(pool: PgPool) {
    let harness = Harness::start_idle(pool).await;
    let (status, refusal) = commit(&harness, "- 1.1 A\n", json!({})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{refusal}");
    assert_eq!(refusal["code"], "unknown_repository");
    harness.install().await;
    let mut body = request("- 1.1 A\n", json!({}));
    body.as_object_mut().unwrap().remove("base_branch");
    let (status, refusal) = harness
        .api_json("POST", "/api/v2/import/prd/preview", &body)
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{refusal}");
    assert_eq!(refusal["code"], "base_branch_unknown");
    let (status, refusal) =
        commit(&harness, "- 1.1 A\n", json!({ "max_parallelism_hint": 0 })).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{refusal}");
    assert_eq!(refusal["code"], "invalid_request");
    assert_eq!(task_count(&harness).await, 0);
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn subtask_granularity_makes_children_that_their_parent_waits_for(pool: PgPool) {
    let harness = Harness::start_idle(pool).await;
    harness.install().await;
    let markdown = "- 1.1 Build it\n  - 1.1.1 Write it\n  - 1.1.2 Test it\n\
                    - 1.2 Ship it (Dependencies: [1.1])\n";
    let (status, job) = commit(
        &harness,
        markdown,
        json!({ "granularity": "subtask", "auto_ready": true }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{job}");
    assert_eq!(job["granularity"], "subtask");
    let key = |key: &str| job["keys"][key].as_i64().unwrap();
    let tasks = board_tasks(&harness).await;
    assert_eq!(tasks.len(), 4);
    let task = |key: i64| tasks.iter().find(|t| t["id"] == key).unwrap();
    let parent = task(key("1.1"));
    assert_eq!(parent["children"], json!([key("1.1.1"), key("1.1.2")]));
    assert_eq!(parent["blocked_by"], json!([key("1.1.1"), key("1.1.2")]));
    assert_eq!(parent["state"], "blocked", "{parent}");
    assert_eq!(task(key("1.1.1"))["parent_id"], key("1.1"));
    assert_eq!(task(key("1.1.1"))["state"], "ready");
    assert_eq!(task(key("1.1.2"))["blocked_by"], json!([key("1.1.1")]));
    assert_eq!(task(key("1.1.2"))["state"], "blocked");
    assert_eq!(task(key("1.2"))["blocked_by"], json!([key("1.1")]));
}

/// A pipeline that changes nothing: its runs end done, which is what frees their dependents.
const CHECK_ONLY: &str = "pipelines:
  default:
    steps:
      - name: check
        run: echo \"checking $CONVEYOR_TASK_TITLE\"
";

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn an_imported_chain_runs_in_dependency_order(pool: PgPool) {
    let harness = Harness::start(pool).await;
    harness.add_repo(&[(".github/conveyor.yml", CHECK_ONLY), ("README.md", "# w\n")]);
    harness.install().await;
    // Written out of order, so that creation order alone would run them wrongly.
    let markdown = "- 1.1 Last (Dependencies: [1.3])\n- 1.2 First\n\
                    - 1.3 Middle (Dependencies: [1.2])\n";
    let (status, job) = commit(&harness, markdown, json!({ "auto_ready": true })).await;
    assert_eq!(status, StatusCode::CREATED, "{job}");
    let order: Vec<i64> = ["1.2", "1.3", "1.1"]
        .iter()
        .map(|key| job["keys"][key].as_i64().unwrap())
        .collect();
    support::wait_until("the chain is done", || async {
        let tasks = board_tasks(&harness).await;
        tasks.iter().all(|t| t["state"] == "done").then_some(())
    })
    .await;
    let mut previous_end = None;
    for task in order {
        let task_runs = runs::for_task(&harness.pool, task).await.unwrap();
        assert_eq!(task_runs.len(), 1, "task {task} ran once");
        let run = &task_runs[0];
        if let Some(end) = previous_end {
            assert!(
                run.started_at >= end,
                "task {task} started before its blocker ended"
            );
        }
        previous_end = run.finished_at;
    }
}
