//! The two things the bench times, as GitHub would drive them: signed webhooks posted to the
//! service over TCP, and what then arrives at the GitHub stand-in or in the database.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::json;
use sqlx::PgPool;
use tokio::time::MissedTickBehavior;

use super::github::{CheckRun, StandIn};
use crate::pipeline::definition::Settings;
use crate::webhook::signature;

const INSTALLATION_ID: i64 = 1;
pub const OWNER: &str = "bench";
pub const REPO: &str = "loop";
/// The step after the approval: when it starts is what the approval scenario times.
pub const NEXT_STEP: &str = "verify";
/// The repository's pipeline: a step that changes a file (so the gate has a commit to
/// approve), the gate, and a step after it.
pub const PIPELINE: &str = r#"pipelines:
  default:
    steps:
      - name: implement
        run: echo x >> NOTES.md
      - name: review
        approval: {}
      - name: verify
        run: "true"
"#;

const COMMENTER: &str = "bench-commenter";
/// Who labels the issues; an approval must come from someone else.
const REQUESTER: &str = "bench-requester";
const APPROVER: &str = "bench-approver";
/// The issue the comments are made on: `help` needs no task.
const COMMENTED_ISSUE: i64 = 1;
/// Issues labelled in the approval scenario are numbered from here.
const FIRST_LABELLED_ISSUE: i64 = 1_000;
const FIRST_COMMENT_ID: i64 = 1_000_000;
/// How often the database is asked whether the next step has run.
pub const POLL_EVERY: Duration = Duration::from_millis(5);

/// Posts webhooks to the service as GitHub does, signed with its secret.
#[derive(Clone)]
pub struct Hooks {
    pub client: reqwest::Client,
    /// The service's `…/webhooks/github`.
    pub url: String,
    pub secret: String,
}

impl Hooks {
    async fn send(&self, event: &str, delivery: &str, body: Vec<u8>) -> anyhow::Result<()> {
        let signature = signature::sign(self.secret.as_bytes(), &body);
        let response = self
            .client
            .post(&self.url)
            .header("content-type", "application/json")
            .header("x-github-event", event)
            .header("x-github-delivery", delivery)
            .header("x-hub-signature-256", signature)
            .body(body)
            .send()
            .await
            .with_context(|| format!("posting a {event} webhook"))?;
        let status = response.status();
        if status != reqwest::StatusCode::ACCEPTED {
            let text = response.text().await.unwrap_or_default();
            bail!("the service answered {status} to a {event} webhook: {text}");
        }
        Ok(())
    }
}

fn delivery_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// The parts of a payload every event of the loop carries.
fn envelope(action: &str, sender: &str) -> serde_json::Value {
    json!({
        "action": action,
        "installation": { "id": INSTALLATION_ID },
        "repository": {
            "name": REPO,
            "full_name": format!("{OWNER}/{REPO}"),
            "owner": { "login": OWNER, "type": "Organization" },
            "default_branch": "main",
        },
        "sender": { "login": sender, "type": "User" },
    })
}

/// `issue_comment.created`: `author` comments `body` on issue `issue`.
pub fn comment_payload(issue: i64, comment_id: i64, body: &str, author: &str) -> Vec<u8> {
    let mut payload = envelope("created", author);
    payload["issue"] = json!({ "number": issue, "title": "Bench issue", "body": "" });
    payload["comment"] = json!({
        "id": comment_id,
        "body": body,
        "user": { "login": author, "type": "User" },
    });
    payload.to_string().into_bytes()
}

/// `issues.labeled`: `by` puts `label` on issue `issue`.
pub fn labeled_payload(issue: i64, title: &str, label: &str, by: &str) -> Vec<u8> {
    let mut payload = envelope("labeled", by);
    payload["issue"] = json!({ "number": issue, "title": title, "body": "" });
    payload["label"] = json!({ "name": label });
    payload.to_string().into_bytes()
}

/// `check_run.requested_action`: `by` clicks the button `identifier` of Conveyor's check run
/// `check`.
pub fn click_payload(check: &CheckRun, identifier: &str, by: &str) -> Vec<u8> {
    let mut payload = envelope("requested_action", by);
    payload["check_run"] = json!({
        "id": check.id,
        "name": crate::report::check_run::NAME,
        "head_sha": check.head_sha,
        "external_id": check.external_id,
    });
    payload["requested_action"] = json!({ "identifier": identifier });
    payload.to_string().into_bytes()
}

/// How long after its approval click the next step started, from when its result row was
/// seen and how long the step ran. A step is recorded when it ends, so its start is read
/// back from its duration; the row is seen at most one poll (and one query) after it is
/// written, which this counts in.
pub fn click_to_step_start(clicked: Instant, seen: Instant, step_ms: i64) -> Duration {
    let step = Duration::from_millis(step_ms.max(0) as u64);
    seen.saturating_duration_since(clicked).saturating_sub(step)
}

fn ticker(every: Duration) -> tokio::time::Interval {
    let mut ticker = tokio::time::interval(every.max(Duration::from_millis(1)));
    // A sender that falls behind keeps the spacing rather than catching up in a burst.
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    ticker
}

/// Sends `count` comments with `/conveyor help`, one every `every`, and returns how long
/// each took from being sent to its reaction arriving at the stand-in.
pub async fn comments(
    hooks: &Hooks,
    github: &StandIn,
    count: usize,
    every: Duration,
    timeout: Duration,
) -> anyhow::Result<Vec<Duration>> {
    let mut ticker = ticker(every);
    let mut sends = tokio::task::JoinSet::new();
    for n in 0..count {
        ticker.tick().await;
        let comment_id = FIRST_COMMENT_ID + n as i64;
        let body = comment_payload(COMMENTED_ISSUE, comment_id, "/conveyor help", COMMENTER);
        let hooks = hooks.clone();
        // Each in its own task, so a slow answer does not hold back the next comment.
        sends.spawn(async move {
            let sent = Instant::now();
            hooks
                .send("issue_comment", &delivery_id(), body)
                .await
                .map(|()| (comment_id, sent))
        });
    }
    let mut sent = Vec::with_capacity(count);
    while let Some(done) = sends.join_next().await {
        sent.push(done??);
    }
    let deadline = Instant::now() + timeout;
    let mut latencies = Vec::with_capacity(count);
    for (comment_id, at) in sent {
        loop {
            if let Some(arrived) = github.reaction(comment_id) {
                latencies.push(arrived.saturating_duration_since(at));
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "comment {comment_id} got no reaction within {timeout:?} ({} of {count} did)",
                    latencies.len()
                );
            }
            // The stand-in timestamps arrivals itself; this only decides when to look.
            github.changed(Duration::from_millis(100)).await;
        }
    }
    Ok(latencies)
}

/// What the approval scenario measured.
pub struct Approvals {
    /// From an issue being labelled to its run's Approve button arriving at the stand-in.
    pub buttons: Vec<Duration>,
    /// From an approval click to the next step starting.
    pub clicks: Vec<Duration>,
}

struct Parked {
    task_id: i64,
    check: CheckRun,
}

struct Clicked {
    task_id: i64,
    delivery: String,
    at: Instant,
}

/// Labels `count` issues, one every `every`, waits for each run to park at its approval
/// step, then approves them one every `every` with the check run's button and times each
/// click to the start of the step after the gate.
pub async fn approvals(
    hooks: &Hooks,
    github: &StandIn,
    pool: &PgPool,
    count: usize,
    every: Duration,
    timeout: Duration,
) -> anyhow::Result<Approvals> {
    // The repository's settings name no label, so the default one starts a task.
    let trigger = Settings::default().trigger_label;
    let mut ticker = ticker(every);
    let mut labelled = Vec::with_capacity(count);
    for n in 0..count {
        ticker.tick().await;
        let issue = FIRST_LABELLED_ISSUE + n as i64;
        let body = labeled_payload(issue, &format!("Bench approval {n}"), &trigger, REQUESTER);
        let sent = Instant::now();
        hooks.send("issues", &delivery_id(), body).await?;
        labelled.push((issue, sent));
    }
    let mut buttons = Vec::with_capacity(count);
    let mut parked = Vec::with_capacity(count);
    for (issue, sent) in labelled {
        let (task_id, check) = wait_parked(github, pool, issue, timeout).await?;
        let shown = check.buttons_at.expect("asking for approval");
        buttons.push(shown.saturating_duration_since(sent));
        parked.push(Parked { task_id, check });
    }
    let clicks = click_all(hooks, pool, &parked, every, timeout).await?;
    Ok(Approvals { buttons, clicks })
}

/// Waits for issue `issue`'s task to wait for approval with its Approve button on GitHub.
async fn wait_parked(
    github: &StandIn,
    pool: &PgPool,
    issue: i64,
    timeout: Duration,
) -> anyhow::Result<(i64, CheckRun)> {
    let deadline = Instant::now() + timeout;
    loop {
        let task: Option<(i64, String)> = sqlx::query_as(
            "SELECT id, state::TEXT FROM tasks
             WHERE repo_owner = $1 AND repo_name = $2 AND issue_number = $3
             ORDER BY id DESC LIMIT 1",
        )
        .bind(OWNER)
        .bind(REPO)
        .bind(issue)
        .fetch_optional(pool)
        .await?;
        match task {
            Some((task_id, state)) if state == "awaiting_approval" => {
                if let Some(check) = github.asking_approval(task_id) {
                    return Ok((task_id, check));
                }
            }
            Some((task_id, state))
                if ["failed", "cancelled", "succeeded"].contains(&state.as_str()) =>
            {
                bail!(
                    "task {task_id} of issue #{issue} ended {state} before its approval step: {}",
                    run_failure(pool, task_id).await?
                );
            }
            _ => {}
        }
        if Instant::now() > deadline {
            bail!("issue #{issue}'s run did not wait for approval within {timeout:?}");
        }
        github.changed(Duration::from_millis(20)).await;
    }
}

async fn run_failure(pool: &PgPool, task_id: i64) -> sqlx::Result<String> {
    let failure: Option<Option<String>> =
        sqlx::query_scalar("SELECT failure FROM runs WHERE task_id = $1 ORDER BY id DESC LIMIT 1")
            .bind(task_id)
            .fetch_optional(pool)
            .await?;
    Ok(failure
        .flatten()
        .unwrap_or_else(|| "no failure recorded".to_owned()))
}

/// Clicks Approve on each parked run, one every `every`, and times each click to the start
/// of the step after the gate.
async fn click_all(
    hooks: &Hooks,
    pool: &PgPool,
    parked: &[Parked],
    every: Duration,
    timeout: Duration,
) -> anyhow::Result<Vec<Duration>> {
    let mut to_click = parked.iter();
    let mut next_click = Instant::now();
    let mut clicked: Vec<Clicked> = Vec::with_capacity(parked.len());
    let mut sends = tokio::task::JoinSet::new();
    let mut latencies = Vec::with_capacity(parked.len());
    let mut poll = ticker(POLL_EVERY);
    while latencies.len() < parked.len() {
        poll.tick().await;
        if Instant::now() >= next_click
            && let Some(run) = to_click.next()
        {
            let delivery = delivery_id();
            let body = click_payload(&run.check, crate::report::check_run::APPROVE, APPROVER);
            let hooks = hooks.clone();
            let posted = delivery.clone();
            clicked.push(Clicked {
                task_id: run.task_id,
                delivery,
                at: Instant::now(),
            });
            // Sent aside, so the polls keep their pace while the service answers.
            sends.spawn(async move { hooks.send("check_run", &posted, body).await });
            next_click += every;
        }
        while let Some(sent) = sends.try_join_next() {
            sent??;
        }
        let waiting: Vec<i64> = clicked.iter().map(|click| click.task_id).collect();
        if waiting.is_empty() {
            continue;
        }
        let started: Vec<(i64, i64)> = sqlx::query_as(
            "SELECT r.task_id, s.duration_ms FROM run_steps s JOIN runs r ON r.id = s.run_id
             WHERE r.task_id = ANY($1) AND s.name = $2",
        )
        .bind(&waiting)
        .bind(NEXT_STEP)
        .fetch_all(pool)
        .await?;
        let seen = Instant::now();
        for (task_id, step_ms) in started {
            if let Some(at) = clicked.iter().position(|click| click.task_id == task_id) {
                let click = clicked.swap_remove(at);
                latencies.push(click_to_step_start(click.at, seen, step_ms));
            }
        }
        if let Some(late) = clicked.iter().find(|click| click.at.elapsed() > timeout) {
            bail!(
                "task {}: step `{NEXT_STEP}` did not start within {timeout:?} of the approval click: {}",
                late.task_id,
                why_not_started(pool, late).await?
            );
        }
    }
    Ok(latencies)
}

/// What became of a click whose next step never came: the request's outcome and the task's
/// state.
async fn why_not_started(pool: &PgPool, click: &Clicked) -> sqlx::Result<String> {
    let outcome: Option<Option<String>> = sqlx::query_scalar(
        "SELECT r.outcome FROM requests r JOIN deliveries d ON d.id = r.delivery_id
         WHERE d.delivery_id = $1",
    )
    .bind(&click.delivery)
    .fetch_optional(pool)
    .await?;
    let state: Option<String> = sqlx::query_scalar("SELECT state::TEXT FROM tasks WHERE id = $1")
        .bind(click.task_id)
        .fetch_optional(pool)
        .await?;
    Ok(format!(
        "the click was {}; the task is {}",
        match outcome {
            None => "not queued as a request".to_owned(),
            Some(None) => "not decided yet".to_owned(),
            Some(Some(outcome)) => format!("decided: {outcome}"),
        },
        state.as_deref().unwrap_or("gone"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::definition::{self, Action};
    use crate::requests::Request;
    use crate::webhook::event::Event;
    use crate::webhook::interpret::{Intent, interpret};

    fn asked(event: &str, body: &[u8]) -> crate::requests::Asked {
        let event = Event::parse(event, body).unwrap();
        match interpret(&event, None) {
            Intent::Request(asked) => asked,
            other => panic!("expected a request, got {other:?}"),
        }
    }

    #[test]
    fn the_payloads_are_requests_of_the_bench_repository() {
        let comment = asked(
            "issue_comment",
            &comment_payload(1, 77, "/conveyor help", "c"),
        );
        assert_eq!(
            (
                comment.installation_id,
                comment.owner.as_str(),
                comment.name.as_str()
            ),
            (INSTALLATION_ID, OWNER, REPO)
        );
        assert_eq!((comment.issue, comment.actor.as_str()), (Some(1), "c"));
        assert!(
            matches!(&comment.request, Request::Comment { comment: crate::outbox::Comment::Issue(77), text, .. } if text == "/conveyor help")
        );

        let label = asked("issues", &labeled_payload(5, "T", "conveyor", "r"));
        assert_eq!((label.issue, label.actor.as_str()), (Some(5), "r"));
        assert!(
            matches!(&label.request, Request::Labeled { label, title, .. } if label == "conveyor" && title == "T")
        );

        let check = CheckRun {
            id: 9,
            head_sha: "abc".into(),
            external_id: Some("12".into()),
            conclusion: Some("action_required".into()),
            buttons_at: None,
        };
        let click = asked("check_run", &click_payload(&check, "approve", "a"));
        assert_eq!((click.issue, click.actor.as_str()), (None, "a"));
        assert_eq!(
            click.request,
            Request::CheckRunAction {
                identifier: "approve".into(),
                head_sha: "abc".into(),
                external_id: Some("12".into()),
            }
        );
    }

    #[test]
    fn the_pipeline_changes_a_file_then_waits_then_runs_the_timed_step() {
        let pipeline = definition::parse(PIPELINE, definition::DEFAULT_PIPELINE).unwrap();
        let steps: Vec<(&str, bool)> = pipeline
            .steps
            .iter()
            .map(|step| {
                (
                    step.name.as_str(),
                    matches!(step.action, Action::Approval(_)),
                )
            })
            .collect();
        assert_eq!(
            steps,
            [("implement", false), ("review", true), (NEXT_STEP, false)]
        );
    }

    #[test]
    fn the_next_step_starts_its_duration_before_its_row_is_seen() {
        let clicked = Instant::now();
        let seen = clicked + Duration::from_millis(900);
        assert_eq!(
            click_to_step_start(clicked, seen, 300),
            Duration::from_millis(600)
        );
        assert_eq!(
            click_to_step_start(clicked, seen, 0),
            Duration::from_millis(900)
        );
        // Clocks in milliseconds can round a step to more than was seen: never negative.
        assert_eq!(click_to_step_start(clicked, seen, 950), Duration::ZERO);
        assert_eq!(
            click_to_step_start(clicked, seen, -5),
            Duration::from_millis(900)
        );
    }
}
