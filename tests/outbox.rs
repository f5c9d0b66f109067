//! The outbox against the fake GitHub: the status comment and the check run reach GitHub
//! once each, in order, through outages, refusals and deliveries cut off half-way.

mod support;

use std::sync::Arc;
use std::time::Duration;

use conveyor::engine::status_comments;
use conveyor::engine::tasks::{self, NewTask};
use conveyor::github::GitHubApp;
use conveyor::github::client::{CheckRunOutput, NewCheckRun, Repo};
use conveyor::outbox::deliver::Deliverer;
use conveyor::outbox::{self, Comment, Effect, Place, Reaction};
use conveyor::scheduler::{SessionPool, leases};
use conveyor::waiting_report;
use sqlx::PgPool;
use support::fake_github::Injected;
use support::{FakeGitHub, INSTALLATION_ID, OWNER, REPO};

const ISSUE: i64 = 7;

async fn enqueue(pool: &PgPool) -> i64 {
    let task = NewTask {
        installation_id: INSTALLATION_ID,
        repo_owner: OWNER.into(),
        repo_name: REPO.into(),
        default_branch: "main".into(),
        issue_number: Some(ISSUE),
        title: "Waits a while".into(),
        pipeline: "default".into(),
        ..Default::default()
    };
    tasks::create(&mut pool.acquire().await.unwrap(), &task)
        .await
        .unwrap()
        .unwrap()
}

fn deliverer(pool: &PgPool, app: &Arc<GitHubApp>) -> Deliverer {
    Deliverer {
        pool: pool.clone(),
        github: app.clone(),
        public_url: "https://conveyor.example".into(),
    }
}

async fn queue(pool: &PgPool, effects: &[Effect]) {
    let place = Place {
        installation_id: INSTALLATION_ID,
        owner: OWNER.into(),
        name: REPO.into(),
    };
    let mut tx = pool.begin().await.unwrap();
    outbox::enqueue(&mut tx, &place, effects).await.unwrap();
    tx.commit().await.unwrap();
}

/// A reaction to comment `on` and a reply to it: two effects of one lane.
fn react_and_reply(on: Comment) -> [Effect; 2] {
    [
        Effect::React {
            comment: on,
            reaction: Reaction::Accepted,
        },
        Effect::Reply {
            issue: ISSUE,
            to: Some(on),
            body: "<!-- conveyor:reply -->\nhelp".into(),
        },
    ]
}

/// Makes every effect put off for a retry due now, instead of waiting out its backoff.
async fn due_now(pool: &PgPool) {
    sqlx::query("UPDATE outbox SET next_attempt_at = now() WHERE delivered_at IS NULL")
        .execute(pool)
        .await
        .unwrap();
}

async fn outcomes(pool: &PgPool) -> Vec<Option<String>> {
    sqlx::query_scalar("SELECT outcome FROM outbox ORDER BY id")
        .fetch_all(pool)
        .await
        .unwrap()
}

fn calls(github: &FakeGitHub, method: &str, path: &str) -> usize {
    github
        .requests()
        .into_iter()
        .filter(|r| r.method == method && r.path.split('?').next() == Some(path))
        .count()
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn a_waiting_task_has_one_comment_that_follows_its_reason(pool: PgPool) {
    let (app, github) = support::app_and_fake().await;
    let deliverer = deliverer(&pool, &app);
    let task_id = enqueue(&pool).await;
    assert_eq!(
        waiting_report::report(&pool, Duration::ZERO).await.unwrap(),
        1
    );
    assert_eq!(
        waiting_report::report(&pool, Duration::ZERO).await.unwrap(),
        0,
        "a reason is reported once"
    );
    deliverer.pass().await.unwrap();
    let comments = github.comments(OWNER, REPO, ISSUE as u64);
    assert_eq!(comments.len(), 1);
    assert!(
        comments[0]
            .body
            .contains("waiting: no healthy worker session"),
        "{}",
        comments[0].body
    );

    // A healthy session appears: the reason changes, and the same comment is edited.
    leases::heartbeat(&pool, "p", &SessionPool::new(1))
        .await
        .unwrap();
    assert_eq!(
        waiting_report::report(&pool, Duration::ZERO).await.unwrap(),
        1
    );
    deliverer.pass().await.unwrap();
    let comments = github.comments(OWNER, REPO, ISSUE as u64);
    assert_eq!(comments.len(), 1, "one status comment per task");
    assert!(
        comments[0].body.contains("waiting: no free worker session"),
        "{}",
        comments[0].body
    );
    assert_eq!(
        status_comments::get(&pool, task_id)
            .await
            .unwrap()
            .unwrap()
            .comment_id,
        Some(comments[0].id as i64)
    );
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn queued_syncs_of_one_target_are_delivered_as_one(pool: PgPool) {
    let (app, github) = support::app_and_fake().await;
    let task_id = enqueue(&pool).await;
    for _ in 0..5 {
        queue(&pool, &[Effect::StatusComment { task_id }]).await;
    }
    assert_eq!(deliverer(&pool, &app).pass().await.unwrap(), 1);
    assert_eq!(github.comments(OWNER, REPO, ISSUE as u64).len(), 1);
    let path = format!("/repos/{OWNER}/{REPO}/issues/{ISSUE}/comments");
    assert_eq!(calls(&github, "POST", &path), 1);
    let outcomes = outcomes(&pool).await;
    assert_eq!(outcomes[0].as_deref(), Some("delivered"));
    assert!(
        outcomes[1..]
            .iter()
            .all(|o| o.as_deref().unwrap().starts_with("absorbed by")),
        "{outcomes:?}"
    );
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn effects_wait_out_an_outage_in_order_and_land_once(pool: PgPool) {
    let (app, github) = support::app_and_fake().await;
    let deliverer = deliverer(&pool, &app);
    let task_id = enqueue(&pool).await;
    let comment = github.add_user_comment(OWNER, REPO, ISSUE as u64, "alice", "/conveyor help");
    let on = Comment::Issue(comment as i64);
    let [react, reply] = react_and_reply(on);
    queue(&pool, &[react, reply, Effect::StatusComment { task_id }]).await;
    let outage = github.outage_until_lifted(502);
    deliverer.pass().await.unwrap();
    let pending: Vec<(i32, Option<String>)> = sqlx::query_as(
        "SELECT attempts, last_error FROM outbox WHERE delivered_at IS NULL ORDER BY id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(pending.len(), 3, "nothing lost");
    assert_eq!(pending[0].0, 1, "the lane's head was tried");
    assert!(
        pending[0].1.as_deref().unwrap().contains("502"),
        "{pending:?}"
    );
    assert_eq!(
        pending[1].0, 0,
        "the reply waits behind the reaction to its comment"
    );
    assert_eq!(pending[2].0, 1, "another lane was tried side by side");

    outage.lift();
    due_now(&pool).await;
    while deliverer.pass().await.unwrap() > 0 {}
    assert_eq!(github.reactions(OWNER, REPO, comment), ["+1"]);
    let comments = github.comments(OWNER, REPO, ISSUE as u64);
    assert_eq!(
        comments.len(),
        3,
        "the person's, the reply, the status: {comments:#?}"
    );
    assert_eq!(
        comments
            .iter()
            .filter(|c| c.body.contains("conveyor:reply"))
            .count(),
        1
    );
    assert_eq!(
        comments
            .iter()
            .filter(|c| c.body.contains("conveyor:task:"))
            .count(),
        1
    );
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn a_refusal_closes_the_effect_without_holding_up_its_lane(pool: PgPool) {
    let (app, github) = support::app_and_fake().await;
    let comment = github.add_user_comment(OWNER, REPO, ISSUE as u64, "alice", "/conveyor help");
    let on = Comment::Issue(comment as i64);
    github.inject(
        "POST",
        &format!("/repos/{OWNER}/{REPO}/issues/comments/{comment}/reactions"),
        vec![Injected::status(422).with_message("Validation Failed")],
    );
    queue(&pool, &react_and_reply(on)).await;
    let deliverer = deliverer(&pool, &app);
    while deliverer.pass().await.unwrap() > 0 {}
    assert_eq!(
        outcomes(&pool).await,
        [Some("failed".into()), Some("delivered".into())]
    );
    assert_eq!(github.comments(OWNER, REPO, ISSUE as u64).len(), 2);
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn a_delivery_cut_off_after_github_took_it_is_not_made_twice(pool: PgPool) {
    let (app, github) = support::app_and_fake().await;
    let task_id = enqueue(&pool).await;
    let client = app.installation(INSTALLATION_ID, REPO);
    let repo = Repo {
        owner: OWNER,
        name: REPO,
    };
    // An earlier delivery posted the comment and died before recording it: its claim has
    // lapsed and its attempt is counted.
    queue(&pool, &[Effect::StatusComment { task_id }]).await;
    client
        .create_comment(
            repo,
            ISSUE,
            &format!("<!-- conveyor:task:{task_id} -->\nposted before the crash"),
        )
        .await
        .unwrap();
    sqlx::query("UPDATE outbox SET attempts = 1, locked_until = now() - interval '1 second'")
        .execute(&pool)
        .await
        .unwrap();
    deliverer(&pool, &app).pass().await.unwrap();
    let comments = github.comments(OWNER, REPO, ISSUE as u64);
    assert_eq!(comments.len(), 1, "{comments:#?}");
    assert!(
        comments[0].body.contains("has queued"),
        "brought up to date: {}",
        comments[0].body
    );

    // The same for a check run, found by its external id.
    let sha = github.branch_sha(OWNER, REPO, "main").unwrap();
    let earlier = NewCheckRun {
        name: "conveyor".into(),
        head_sha: sha.clone(),
        status: "in_progress",
        conclusion: None,
        details_url: None,
        external_id: Some(task_id.to_string()),
        output: CheckRunOutput {
            title: "before the crash".into(),
            summary: "x".into(),
            text: None,
        },
        actions: Vec::new(),
    };
    client.create_check_run(repo, &earlier).await.unwrap();
    queue(
        &pool,
        &[Effect::CheckRun {
            task_id,
            head_sha: sha,
        }],
    )
    .await;
    sqlx::query("UPDATE outbox SET attempts = 1 WHERE delivered_at IS NULL")
        .execute(&pool)
        .await
        .unwrap();
    deliverer(&pool, &app).pass().await.unwrap();
    let checks = github.check_runs(OWNER, REPO);
    assert_eq!(checks.len(), 1, "{checks:#?}");
    assert_eq!(checks[0].status, "queued", "brought up to date");
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn delivered_effects_are_deleted_once_old_and_pending_ones_never(pool: PgPool) {
    let (app, github) = support::app_and_fake().await;
    let task_id = enqueue(&pool).await;
    queue(&pool, &[Effect::StatusComment { task_id }]).await;
    deliverer(&pool, &app).pass().await.unwrap();
    let _outage = github.outage_until_lifted(502);
    queue(
        &pool,
        &[Effect::Reply {
            issue: ISSUE,
            to: None,
            body: "x".into(),
        }],
    )
    .await;
    deliverer(&pool, &app).pass().await.unwrap();
    sqlx::query("UPDATE outbox SET delivered_at = delivered_at - interval '15 days', created_at = created_at - interval '15 days'")
        .execute(&pool)
        .await
        .unwrap();
    let age = Duration::from_secs(14 * 86_400);
    let deleted = conveyor::housekeeping::retention::prune_requests_and_effects(&pool, age)
        .await
        .unwrap();
    assert_eq!(deleted, 1);
    assert_eq!(outcomes(&pool).await, [None], "the undelivered reply stays");
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn idle_workers_wait_for_work_and_stop_when_asked(pool: PgPool) {
    assert_eq!(
        conveyor::requests::queue::next_due(&pool).await.unwrap(),
        None,
        "nothing pending is not something due now"
    );
    let (app, _github) = support::app_and_fake().await;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let requests = Arc::new(conveyor::requests::Requests {
        pool: pool.clone(),
        github: app.clone(),
        lookups: Default::default(),
    });
    let woken = Arc::new(tokio::sync::Notify::new());
    let jobs = [
        tokio::spawn(conveyor::requests::run(
            requests,
            woken.clone(),
            shutdown.clone(),
        )),
        tokio::spawn(outbox::deliver::run(
            Arc::new(deliverer(&pool, &app)),
            woken,
            shutdown.clone(),
        )),
    ];
    tokio::time::sleep(Duration::from_millis(200)).await;
    shutdown.cancel();
    for job in jobs {
        tokio::time::timeout(Duration::from_secs(10), job)
            .await
            .expect("an idle worker stops when asked")
            .unwrap();
    }
}
