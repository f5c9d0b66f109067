//! Quick runs through the API: a prompt run through the repository's pipeline, kept off the
//! board until it is promoted, with its start and end in its task's trail.

mod support;

use axum::http::StatusCode;
use conveyor::engine::{TaskState, events, runs};
use serde_json::{Value, json};
use sqlx::PgPool;
use support::{API_TOKEN, Harness, OWNER, REPO};

async fn start_quick_run(harness: &Harness, prompt: &str) -> Value {
    let (status, location, run) = harness
        .api_json_located(
            "POST",
            "/api/v2/quick-runs",
            &json!({
                "repository": format!("{OWNER}/{REPO}"),
                "prompt": prompt,
                "base_branch": "main",
            }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{run}");
    assert_eq!(location, Some(format!("/api/v2/quick-runs/{}", run["id"])));
    run
}

/// What the board shows: the task list's ids and every column's count.
async fn board(harness: &Harness) -> (Vec<i64>, i64) {
    let (status, page) = harness.api("GET", "/api/v2/tasks", Some(API_TOKEN)).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let listed = page["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|task| task["id"].as_i64().unwrap())
        .collect();
    let (status, columns) = harness
        .api("GET", "/api/v2/tasks/board", Some(API_TOKEN))
        .await;
    assert_eq!(status, StatusCode::OK, "{columns}");
    let counted = columns["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|column| column["count"].as_i64().unwrap())
        .sum();
    (listed, counted)
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn a_quick_run_is_off_the_board_until_promoted(pool: PgPool) {
    let harness = Harness::start_idle(pool).await;
    harness.install().await;
    let run = start_quick_run(&harness, "Fix the typo in README.md\nIt says 'widgest'.").await;
    assert_eq!(run["status"], "queued", "{run}");
    assert_eq!(run["repository"], "acme/widgets");
    assert_eq!(run["pipeline"], "default");
    assert!(run["promoted_at"].is_null());
    let id = run["id"].as_i64().unwrap();
    let task_id = run["task_id"].as_i64().unwrap();
    assert_eq!(harness.task_ids().await, [task_id], "a task underneath");
    assert_eq!(board(&harness).await, (vec![], 0));

    let (status, shown) = harness
        .api("GET", &format!("/api/v2/quick-runs/{id}"), Some(API_TOKEN))
        .await;
    assert_eq!(status, StatusCode::OK, "{shown}");
    assert_eq!(
        shown["prompt"],
        "Fix the typo in README.md\nIt says 'widgest'."
    );

    let promote = format!("/api/v2/quick-runs/{id}/promote");
    let (status, task) = harness.api("POST", &promote, Some(API_TOKEN)).await;
    assert_eq!(status, StatusCode::CREATED, "{task}");
    assert_eq!(task["id"], task_id);
    assert_eq!(task["source"], "promoted_quick_action");
    assert_eq!(task["quick_run"], id);
    assert_eq!(task["title"], "Fix the typo in README.md");
    assert_eq!(board(&harness).await, (vec![task_id], 1));

    let (status, again) = harness.api("POST", &promote, Some(API_TOKEN)).await;
    assert_eq!(status, StatusCode::CONFLICT, "{again}");
    assert_eq!(again["code"], "already_promoted");
    let (status, missing) = harness
        .api("POST", "/api/v2/quick-runs/999999/promote", Some(API_TOKEN))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{missing}");
    assert_eq!(missing["code"], "not_found");
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn a_quick_run_is_refused_for_an_unknown_repository_or_an_empty_prompt(pool: PgPool) {
    let harness = Harness::start_idle(pool).await;
    let body = json!({ "repository": "acme/widgets", "prompt": "Go", "base_branch": "main" });
    let (status, refusal) = harness.api_json("POST", "/api/v2/quick-runs", &body).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{refusal}");
    assert_eq!(refusal["code"], "unknown_repository");
    harness.install().await;
    let body = json!({ "repository": "acme/widgets", "prompt": "  ", "base_branch": "main" });
    let (status, refusal) = harness.api_json("POST", "/api/v2/quick-runs", &body).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{refusal}");
    assert_eq!(refusal["code"], "invalid_request");
    assert!(harness.task_ids().await.is_empty());
    let (status, missing) = harness
        .api("GET", "/api/v2/quick-runs/1", Some(API_TOKEN))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{missing}");
}

/// The quick-run events of task `task_id`'s trail, in order.
async fn quick_run_events(harness: &Harness, task_id: i64) -> Vec<String> {
    events::for_task(&harness.pool, task_id)
        .await
        .unwrap()
        .into_iter()
        .map(|event| event.kind)
        .filter(|kind| kind.starts_with("quick_run."))
        .collect()
}

/// The service with workers, on an installed repository carrying `pipeline`.
async fn with_pipeline(pool: PgPool, pipeline: &str) -> Harness {
    let harness = Harness::start(pool).await;
    harness.add_repo(&[(".github/conveyor.yml", pipeline), ("README.md", "# w\n")]);
    harness.install().await;
    harness
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn a_quick_runs_prompt_reaches_its_pipeline_and_its_trail(pool: PgPool) {
    let pipeline = "pipelines:
  default:
    steps:
      - name: ask
        prompt: |
          {{ task.body }}
      - name: agent
        run: cat \"$CONVEYOR_PROMPT_FILE\" > out.md
";
    let harness = with_pipeline(pool, pipeline).await;
    let prompt = "Rename widget to gadget\neverywhere in src/";
    let run = start_quick_run(&harness, prompt).await;
    let id = run["id"].as_i64().unwrap();
    let task_id = run["task_id"].as_i64().unwrap();
    assert_eq!(harness.final_state(task_id).await, TaskState::Succeeded);
    harness.settled().await;

    let (_, shown) = harness
        .api("GET", &format!("/api/v2/quick-runs/{id}"), Some(API_TOKEN))
        .await;
    assert_eq!(shown["status"], "succeeded", "{shown}");
    let task_runs = runs::for_task(&harness.pool, task_id).await.unwrap();
    assert_eq!(shown["runs"], json!([task_runs[0].id]));
    let branch = task_runs[0]
        .branch
        .clone()
        .expect("the run pushed a branch");
    assert_eq!(
        harness.github.file_at(OWNER, REPO, &branch, "out.md"),
        Some(format!("{prompt}\n"))
    );
    assert_eq!(
        quick_run_events(&harness, task_id).await,
        ["quick_run.started", "quick_run.completed"]
    );
    // Its pull request is open, yet the board does not show it.
    assert_eq!(board(&harness).await, (vec![], 0));
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn a_failed_quick_run_says_so_in_its_trail(pool: PgPool) {
    let pipeline = "pipelines:
  default:
    steps:
      - name: break
        run: exit 3
";
    let harness = with_pipeline(pool, pipeline).await;
    let run = start_quick_run(&harness, "Try something").await;
    let task_id = run["task_id"].as_i64().unwrap();
    assert_eq!(harness.final_state(task_id).await, TaskState::Failed);
    assert_eq!(
        quick_run_events(&harness, task_id).await,
        ["quick_run.started", "quick_run.failed"]
    );
    assert_eq!(board(&harness).await, (vec![], 0));
}
