//! The event feed's readers in tests: a task to hang events on, and what the feed shows.

use conveyor::engine::board::BoardState;
use conveyor::engine::event_feed::{self, Cursor};
use conveyor::engine::tasks::{self, BoardFields, NewTask};
use sqlx::PgPool;

use super::{OWNER, REPO};

/// A task of `acme/widgets` to hang events on.
pub async fn a_task(pool: &PgPool) -> i64 {
    let mut conn = pool.acquire().await.unwrap();
    let task = NewTask {
        installation_id: 1,
        repo_owner: OWNER.to_owned(),
        repo_name: REPO.to_owned(),
        default_branch: "main".to_owned(),
        title: "Events".to_owned(),
        pipeline: "default".to_owned(),
        board: BoardFields {
            state: BoardState::Backlog,
            ..BoardFields::default()
        },
        ..NewTask::default()
    };
    tasks::create(&mut conn, &task).await.unwrap().unwrap()
}

pub async fn kinds_after(pool: &PgPool, after: Option<i64>) -> Vec<(i64, String)> {
    event_feed::page(pool, Cursor { after }, None, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|event| {
            (
                event.id,
                event.payload["mark"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

/// The newest event id, readable or not.
pub async fn last_id(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT max(id) FROM task_events")
        .fetch_one(pool)
        .await
        .unwrap()
}

/// The events after `after`, once there are any: transactions of other tests, anywhere on
/// the server, hold events back while they run.
pub async fn readable_after(pool: &PgPool, after: i64) -> Vec<(i64, String)> {
    super::wait_until("events are readable", || async {
        Some(kinds_after(pool, Some(after)).await).filter(|read| !read.is_empty())
    })
    .await
}
