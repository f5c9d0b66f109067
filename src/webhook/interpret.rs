//! Turning stored deliveries into intents, as a durable job beside the HTTP server.

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::event::{Event, EventKind};
use super::inbox;
use crate::engine::tasks::{self, NewTask};

/// The label that enqueues an issue unless a repository chooses another.
pub const DEFAULT_TRIGGER_LABEL: &str = "conveyor";
pub const DEFAULT_PIPELINE: &str = "default";

/// How often the job looks for deliveries even when nobody woke it.
const POLL_INTERVAL: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Intent {
    CreateTask(NewTask),
    Ignore(&'static str),
}

/// What a delivery means, decided from the event alone.
pub fn interpret(event: &Event, trigger_label: &str) -> Intent {
    let Some(installation_id) = event.installation_id else {
        return Intent::Ignore("no installation");
    };
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
        EventKind::Unhandled => Intent::Ignore("event not handled"),
    }
}

/// Interprets the oldest pending delivery; `false` when there was none.
pub async fn process_next(pool: &PgPool, tasks_added: &Notify) -> anyhow::Result<bool> {
    let mut tx = pool.begin().await?;
    let Some(delivery) = inbox::claim_pending(&mut *tx).await? else {
        return Ok(false);
    };
    let span =
        tracing::info_span!("delivery", delivery = %delivery.delivery_id, event = %delivery.event);
    let (summary, outcome) = async {
        let event = match Event::parse(&delivery.event, &delivery.payload) {
            Ok(event) => event,
            Err(err) => {
                return Ok((
                    Default::default(),
                    format!("ignored: malformed payload: {err}"),
                ));
            }
        };
        let outcome = match interpret(&event, DEFAULT_TRIGGER_LABEL) {
            Intent::Ignore(reason) => format!("ignored: {reason}"),
            Intent::CreateTask(mut task) => {
                task.delivery_id = Some(delivery.id);
                match tasks::create(&mut tx, &task).await? {
                    Some(task_id) => {
                        tracing::info!(task = task_id, "task created");
                        "task_created".to_owned()
                    }
                    None => "ignored: the issue already has a live task".to_owned(),
                }
            }
        };
        Ok::<_, sqlx::Error>((event.summary(), outcome))
    }
    .instrument(span.clone())
    .await?;
    inbox::record_outcome(&mut *tx, delivery.id, &summary, &outcome).await?;
    tx.commit().await?;
    span.in_scope(|| tracing::info!(%outcome, "delivery interpreted"));
    if outcome == "task_created" {
        tasks_added.notify_waiters();
    }
    Ok(true)
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
            match process_next(&pool, &tasks_added).await {
                Ok(true) => continue,
                Ok(false) => break,
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
    use crate::webhook::event::{Issue, Repository};

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
        let Intent::CreateTask(task) = interpret(&labeled("conveyor", Some(9)), "conveyor") else {
            panic!("expected a task");
        };
        assert_eq!((task.installation_id, task.issue_number), (9, 3));
        assert_eq!(
            (task.repo_owner.as_str(), task.repo_name.as_str()),
            ("acme", "widgets")
        );
        assert_eq!(task.pipeline, "default");
    }

    #[test]
    fn other_labels_events_and_missing_installations_are_ignored() {
        assert_eq!(
            interpret(&labeled("bug", Some(9)), "conveyor"),
            Intent::Ignore("label is not the trigger")
        );
        assert_eq!(
            interpret(&labeled("conveyor", None), "conveyor"),
            Intent::Ignore("no installation")
        );
        let mut ping = labeled("conveyor", Some(9));
        ping.kind = EventKind::Unhandled;
        assert_eq!(
            interpret(&ping, "conveyor"),
            Intent::Ignore("event not handled")
        );
    }
}
