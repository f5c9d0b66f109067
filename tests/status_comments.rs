//! A task's one status comment, shared by the waiting report and the task's run, with no
//! transaction or row lock held while GitHub is called: a run that starts while a waiting
//! report is in flight takes the comment over, never posts a second one, and its text is
//! never overwritten by the late "waiting".

mod support;

use std::sync::Arc;
use std::time::Duration;

use conveyor::engine::status_comments::{self, StatusComment};
use conveyor::engine::tasks::{self, NewTask, Task};
use conveyor::github::GitHubApp;
use conveyor::scheduler::{SessionPool, claim_next, leases};
use conveyor::status_comment::{self, PublishError};
use conveyor::waiting_report;
use sqlx::PgPool;
use support::{FakeGitHub, INSTALLATION_ID, OWNER, REPO};

const ISSUE: i64 = 7;
const RUNNING: &str = "the run's text";

async fn enqueue(pool: &PgPool) -> i64 {
    let task = NewTask {
        installation_id: INSTALLATION_ID,
        repo_owner: OWNER.into(),
        repo_name: REPO.into(),
        default_branch: "main".into(),
        issue_number: ISSUE,
        title: "Waits a while".into(),
        body: String::new(),
        pipeline: "default".into(),
        delivery_id: None,
    };
    tasks::create(&mut pool.acquire().await.unwrap(), &task)
        .await
        .unwrap()
        .unwrap()
}

/// One waiting-report pass, as the background job makes them.
fn report_waiting(pool: &PgPool, app: &Arc<GitHubApp>) -> tokio::task::JoinHandle<usize> {
    let (pool, app) = (pool.clone(), app.clone());
    tokio::spawn(async move {
        waiting_report::report(&pool, &app, Duration::ZERO)
            .await
            .unwrap()
    })
}

/// The claimed task's run showing its text in the status comment.
fn publish_run(
    pool: &PgPool,
    app: &Arc<GitHubApp>,
    task: Task,
) -> tokio::task::JoinHandle<Result<(), PublishError>> {
    let (pool, client) = (pool.clone(), app.installation(INSTALLATION_ID, REPO));
    tokio::spawn(async move {
        let mut conn = pool.acquire().await.unwrap();
        status_comment::publish(&mut conn, &client, &task, RUNNING, None).await
    })
}

/// Claims the task while the waiting report's call to GitHub is held, starts the run's
/// report, and checks that the run does not write before the waiting report has landed.
async fn race(pool: &PgPool, app: &Arc<GitHubApp>, hold: support::fake_github::Hold) {
    let waiting = report_waiting(pool, app);
    hold.arrived().await;
    let claimed = claim_next(pool, "p", "p/0")
        .await
        .unwrap()
        .expect("no lock on the task while GitHub is called: it can be claimed");
    let mut run = publish_run(pool, app, claimed);
    assert!(
        tokio::time::timeout(Duration::from_millis(500), &mut run)
            .await
            .is_err(),
        "the run wrote its comment while a waiting report was in flight"
    );
    hold.release();
    assert_eq!(waiting.await.unwrap(), 1);
    run.await.unwrap().unwrap();
}

/// The issue's one comment, which shows the run's text, and showed `waiting` before.
async fn assert_taken_over(pool: &PgPool, github: &FakeGitHub, task_id: i64, waiting: &str) {
    let comments = github.comments(OWNER, REPO, ISSUE as u64);
    assert_eq!(comments.len(), 1, "one status comment per task");
    assert_eq!(comments[0].body, RUNNING, "the run's text is the last one");
    assert!(
        comments[0].edits.iter().any(|body| body.contains(waiting)),
        "{:?}",
        comments[0].edits
    );
    assert_eq!(
        status_comments::get(pool, task_id).await.unwrap(),
        Some(StatusComment {
            comment_id: comments[0].id as i64,
            waiting: None,
        })
    );
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn a_run_starting_while_the_first_waiting_report_is_posted_takes_that_comment_over(
    pool: PgPool,
) {
    let (app, github) = support::app_and_fake().await;
    let task_id = enqueue(&pool).await;
    let hold = github.hold(
        "POST",
        &format!("/repos/{OWNER}/{REPO}/issues/{ISSUE}/comments"),
    );

    race(&pool, &app, hold).await;

    assert_taken_over(
        &pool,
        &github,
        task_id,
        "waiting: no healthy worker session",
    )
    .await;
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn a_run_starting_while_a_waiting_report_is_edited_is_never_overwritten(pool: PgPool) {
    let (app, github) = support::app_and_fake().await;
    let task_id = enqueue(&pool).await;
    assert_eq!(report_waiting(&pool, &app).await.unwrap(), 1);
    // A healthy session appears: the reason changes, and the comment is edited.
    leases::heartbeat(&pool, "p", &SessionPool::new(1))
        .await
        .unwrap();
    let hold = github.hold("PATCH", &format!("/repos/{OWNER}/{REPO}/issues/comments/*"));

    race(&pool, &app, hold).await;

    assert_taken_over(&pool, &github, task_id, "waiting: no free worker session").await;
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn a_waiting_report_on_a_task_claimed_since_it_was_read_writes_nothing(pool: PgPool) {
    let (app, github) = support::app_and_fake().await;
    let task_id = enqueue(&pool).await;
    let read = tasks::get(&pool, task_id).await.unwrap().unwrap();
    claim_next(&pool, "p", "p/0").await.unwrap().unwrap();

    let client = app.installation(INSTALLATION_ID, REPO);
    let mut conn = pool.acquire().await.unwrap();
    let reported = status_comment::publish(
        &mut conn,
        &client,
        &read,
        "waiting",
        Some("waiting: no free worker session".into()),
    )
    .await;

    assert!(
        matches!(reported, Err(PublishError::NotWaiting)),
        "{reported:?}"
    );
    assert!(github.comments(OWNER, REPO, ISSUE as u64).is_empty());
    assert_eq!(status_comments::get(&pool, task_id).await.unwrap(), None);
}
