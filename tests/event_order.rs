//! The event feed's order: a reader misses no event when transactions commit out of order,
//! an event waits while an older transaction that may still add events runs, and a
//! transaction of another database on the server holds nothing back.

mod support;

use conveyor::engine::events;
use serde_json::json;
use sqlx::{Connection, PgConnection, PgPool};
use support::feed::{a_task, kinds_after, last_id, readable_after};

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn a_reader_misses_no_event_of_a_transaction_that_commits_late(pool: PgPool) {
    let task = a_task(&pool).await;
    let seen = last_id(&pool).await;

    // `late` has the older transaction and the younger event; `early` the reverse.
    let mut early = pool.begin().await.unwrap();
    sqlx::query("SELECT pg_current_xact_id()")
        .execute(&mut *early)
        .await
        .unwrap();
    let mut late = pool.begin().await.unwrap();
    events::record(&mut *late, task, None, "note", json!({ "mark": "late" }))
        .await
        .unwrap();
    events::record(&mut *early, task, None, "note", json!({ "mark": "early" }))
        .await
        .unwrap();
    early.commit().await.unwrap();
    let read = readable_after(&pool, seen).await;
    assert_eq!(
        read.iter()
            .map(|(_, mark)| mark.as_str())
            .collect::<Vec<_>>(),
        ["early"]
    );
    let (early_id, _) = read[0];

    late.commit().await.unwrap();
    let read = readable_after(&pool, early_id).await;
    assert_eq!(read.len(), 1);
    assert_eq!(read[0].1, "late");
    assert!(read[0].0 < early_id, "the late event has the smaller id");
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn an_event_waits_behind_an_older_transaction_still_running(pool: PgPool) {
    let task = a_task(&pool).await;
    let seen = last_id(&pool).await;
    let mut older = pool.begin().await.unwrap();
    sqlx::query("SELECT pg_current_xact_id()")
        .execute(&mut *older)
        .await
        .unwrap();
    events::record(&pool, task, None, "note", json!({ "mark": "younger" }))
        .await
        .unwrap();
    assert_eq!(kinds_after(&pool, Some(seen)).await, []);
    older.commit().await.unwrap();
    let read = readable_after(&pool, seen).await;
    assert_eq!(read[0].1, "younger");
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn a_transaction_of_another_database_holds_nothing_back(pool: PgPool) {
    let task = a_task(&pool).await;
    let seen = last_id(&pool).await;
    // The server's own database, not this test's.
    let url = std::env::var("DATABASE_URL").expect("DATABASE_URL");
    let mut elsewhere = PgConnection::connect(&url).await.unwrap();
    let mut running = elsewhere.begin().await.unwrap();
    sqlx::query("SELECT pg_current_xact_id()")
        .execute(&mut *running)
        .await
        .unwrap();
    events::record(&pool, task, None, "note", json!({ "mark": "here" }))
        .await
        .unwrap();
    let read = readable_after(&pool, seen).await;
    assert_eq!(read[0].1, "here");
    running.rollback().await.unwrap();
}
