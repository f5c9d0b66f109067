//! Turning stored deliveries into intents, as a durable job beside the HTTP server.

use std::sync::Arc;
use std::time::Duration;

use sqlx::{PgConnection, PgPool};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::event::{Event, EventKind};
use super::inbox::{self, PendingDelivery, Summary};
use crate::engine::tasks::{self, NewTask};
use crate::installations::{self, Change, Status};

/// The label that enqueues an issue unless a repository chooses another.
pub const DEFAULT_TRIGGER_LABEL: &str = "conveyor";
pub const DEFAULT_PIPELINE: &str = "default";

/// How often the job looks for deliveries even when nobody woke it (retries fall due too).
const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// Attempts at interpreting one delivery before it is left `failed`.
const MAX_ATTEMPTS: i32 = 5;
const FIRST_RETRY: Duration = Duration::from_secs(2);
/// Deliveries interpreted per transaction.
const BATCH: i64 = 100;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Intent {
    CreateTask(NewTask),
    Installation {
        id: i64,
        account: String,
        change: Change,
    },
    Ignore(&'static str),
}

/// Whether interpreting `event` reads or writes the database; most deliveries need neither.
pub fn touches_database(event: &Event) -> bool {
    event.installation_id.is_some() && event.kind != EventKind::Unhandled
}

/// What a delivery means, decided from the event and what is known of its installation.
pub fn interpret(event: &Event, installation: Option<Status>, trigger_label: &str) -> Intent {
    let Some(installation_id) = event.installation_id else {
        return Intent::Ignore("no installation");
    };
    // Installation events apply whatever the installation's state: they change it.
    match &event.kind {
        EventKind::Installation {
            action,
            account,
            repositories,
        } => {
            return Intent::Installation {
                id: installation_id,
                account: account.clone(),
                change: Change::Installation {
                    action: *action,
                    repositories: repositories.clone(),
                },
            };
        }
        EventKind::InstallationRepositories {
            account,
            added,
            removed,
        } => {
            return Intent::Installation {
                id: installation_id,
                account: account.clone(),
                change: Change::Repositories {
                    added: added.clone(),
                    removed: removed.clone(),
                },
            };
        }
        EventKind::Unhandled => return Intent::Ignore("event not handled"),
        EventKind::IssueLabeled { .. } => {}
    }
    match installation {
        Some(Status::Deleted) => return Intent::Ignore("installation deleted"),
        Some(Status::Suspended) => return Intent::Ignore("installation suspended"),
        Some(Status::Active) | None => {}
    }
    if event.sender_is_bot {
        return Intent::Ignore("sender is a bot");
    }
    match &event.kind {
        EventKind::IssueLabeled { issue, label } => {
            if label != trigger_label {
                return Intent::Ignore("label is not the trigger");
            }
            let Some(repo) = &event.repository else {
                return Intent::Ignore("no repository");
            };
            Intent::CreateTask(NewTask {
                installation_id,
                repo_owner: repo.owner.clone(),
                repo_name: repo.name.clone(),
                default_branch: repo.default_branch.clone(),
                issue_number: issue.number,
                title: issue.title.clone(),
                body: issue.body.clone(),
                pipeline: DEFAULT_PIPELINE.to_owned(),
                delivery_id: None,
            })
        }
        _ => Intent::Ignore("event not handled"),
    }
}

/// Interprets up to a batch of due deliveries in one transaction; returns how many.
pub async fn process_batch(pool: &PgPool, tasks_added: &Notify) -> anyhow::Result<usize> {
    let mut tx = pool.begin().await?;
    let deliveries = inbox::claim_pending(&mut *tx, BATCH).await?;
    let mut outcomes = Vec::with_capacity(deliveries.len());
    for delivery in &deliveries {
        let span = tracing::info_span!("delivery", delivery = %delivery.delivery_id, event = %delivery.event);
        if let Some((summary, outcome)) = process(&mut tx, delivery).instrument(span).await? {
            outcomes.push((delivery.id, summary, outcome));
        }
    }
    inbox::record_outcomes(&mut *tx, &outcomes).await?;
    tx.commit().await?;
    if outcomes
        .iter()
        .any(|(_, _, outcome)| outcome == "task_created")
    {
        tasks_added.notify_one();
    }
    Ok(deliveries.len())
}

/// Interprets one delivery; `None` when it failed and was scheduled for another attempt.
async fn process(
    conn: &mut PgConnection,
    delivery: &PendingDelivery,
) -> sqlx::Result<Option<(Summary, String)>> {
    let Some(payload) = &delivery.payload else {
        return Ok(Some((
            Summary::default(),
            "ignored: payload deleted by retention".to_owned(),
        )));
    };
    let event = match Event::parse(&delivery.event, payload) {
        Ok(event) => event,
        Err(err) => {
            return Ok(Some((
                Summary::default(),
                format!("ignored: malformed payload: {err}"),
            )));
        }
    };
    if !touches_database(&event)
        && let Intent::Ignore(reason) = interpret(&event, None, DEFAULT_TRIGGER_LABEL)
    {
        return Ok(Some((event.summary(), format!("ignored: {reason}"))));
    }
    // A savepoint, so a failure undoes the delivery's effects but not the rest of the batch.
    let mut effects = sqlx::Connection::begin(&mut *conn).await?;
    match apply(&mut effects, delivery.id, &event).await {
        Ok(outcome) => {
            effects.commit().await?;
            tracing::debug!(%outcome, "delivery interpreted");
            Ok(Some((event.summary(), outcome)))
        }
        Err(err) => {
            effects.rollback().await?;
            let retry_in = (delivery.attempts + 1 < MAX_ATTEMPTS)
                .then(|| FIRST_RETRY * 2u32.pow(delivery.attempts as u32));
            tracing::warn!(error = %err, attempt = delivery.attempts + 1, retry_in_s = retry_in.map(|d| d.as_secs()), "interpreting delivery failed");
            inbox::record_failure(&mut *conn, delivery.id, &err.to_string(), retry_in).await?;
            Ok(None)
        }
    }
}

async fn apply(conn: &mut PgConnection, delivery_id: i64, event: &Event) -> sqlx::Result<String> {
    let status = match event.installation_id {
        Some(id) => installations::status(&mut *conn, id).await?,
        None => None,
    };
    Ok(match interpret(event, status, DEFAULT_TRIGGER_LABEL) {
        Intent::Ignore(reason) => format!("ignored: {reason}"),
        Intent::Installation {
            id,
            account,
            change,
        } => {
            installations::apply(conn, id, &account, &change).await?;
            "installation".to_owned()
        }
        Intent::CreateTask(mut task) => {
            task.delivery_id = Some(delivery_id);
            match tasks::create(conn, &task).await? {
                Some(task_id) => {
                    tracing::info!(task = task_id, "task created");
                    "task_created".to_owned()
                }
                // A replayed delivery finds the task it created the first time.
                None if tasks::created_by_delivery(&mut *conn, delivery_id)
                    .await?
                    .is_some() =>
                {
                    "task_created".to_owned()
                }
                None => "ignored: the issue already has a live task".to_owned(),
            }
        }
    })
}

/// Runs until `shutdown`, draining the inbox whenever `deliveries_added` fires.
pub async fn run(
    pool: PgPool,
    deliveries_added: Arc<Notify>,
    tasks_added: Arc<Notify>,
    shutdown: CancellationToken,
) {
    loop {
        let woken = deliveries_added.notified();
        loop {
            match process_batch(&pool, &tasks_added).await {
                Ok(0) => break,
                Ok(_) => continue,
                Err(err) => {
                    tracing::error!(error = %format!("{err:#}"), "interpreting deliveries failed");
                    break;
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = woken => {}
            _ = tokio::time::sleep(POLL_INTERVAL) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhook::event::{InstallationAction, Issue, Repository};

    fn labeled(label: &str, installation_id: Option<i64>) -> Event {
        Event {
            name: "issues".into(),
            action: Some("labeled".into()),
            installation_id,
            repository: Some(Repository {
                owner: "acme".into(),
                name: "widgets".into(),
                default_branch: "main".into(),
            }),
            sender_is_bot: false,
            kind: EventKind::IssueLabeled {
                issue: Issue {
                    number: 3,
                    title: "Add a thing".into(),
                    body: "please".into(),
                },
                label: label.into(),
            },
        }
    }

    #[test]
    fn the_trigger_label_creates_a_task() {
        for status in [None, Some(Status::Active)] {
            let Intent::CreateTask(task) =
                interpret(&labeled("conveyor", Some(9)), status, "conveyor")
            else {
                panic!("expected a task");
            };
            assert_eq!((task.installation_id, task.issue_number), (9, 3));
            assert_eq!(
                (task.repo_owner.as_str(), task.repo_name.as_str()),
                ("acme", "widgets")
            );
            assert_eq!(task.pipeline, "default");
        }
    }

    #[test]
    fn ignores_with_a_reason() {
        let active = Some(Status::Active);
        let mut bot = labeled("conveyor", Some(9));
        bot.sender_is_bot = true;
        let mut unhandled = labeled("conveyor", Some(9));
        unhandled.kind = EventKind::Unhandled;
        let cases = [
            (labeled("bug", Some(9)), active, "label is not the trigger"),
            (labeled("conveyor", None), active, "no installation"),
            (
                labeled("conveyor", Some(9)),
                Some(Status::Suspended),
                "installation suspended",
            ),
            (
                labeled("conveyor", Some(9)),
                Some(Status::Deleted),
                "installation deleted",
            ),
            (bot, active, "sender is a bot"),
            (unhandled, active, "event not handled"),
        ];
        for (event, status, reason) in cases {
            assert_eq!(
                interpret(&event, status, "conveyor"),
                Intent::Ignore(reason)
            );
        }
    }

    #[test]
    fn installation_events_apply_even_to_a_suspended_installation() {
        let mut event = labeled("conveyor", Some(9));
        event.kind = EventKind::Installation {
            action: InstallationAction::Unsuspend,
            account: "acme".into(),
            repositories: vec![],
        };
        assert!(matches!(
            interpret(&event, Some(Status::Suspended), "conveyor"),
            Intent::Installation { id: 9, .. }
        ));
    }
}
