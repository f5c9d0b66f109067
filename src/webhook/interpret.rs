//! Turning stored deliveries into intents, as a durable job beside the HTTP server.

use std::sync::Arc;
use std::time::Duration;

use sqlx::{PgConnection, PgPool};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::event::{CommentRef, Event, EventKind};
use super::inbox::{self, Decided, PendingDelivery, Summary};
use crate::engine::clarification;
use crate::installations::{self, Change, Status};
use crate::report::check_run;
use crate::requests::{Asked, Request, queue};
use crate::{commands, outbox};

/// Every comment Conveyor writes starts with a hidden marker beginning so.
const MARKER_PREFIX: &str = "<!-- conveyor:";

/// How often the job looks for deliveries even when nobody woke it (retries fall due too).
const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// Attempts at interpreting one delivery before it is left `failed`.
const MAX_ATTEMPTS: i32 = 5;
const FIRST_RETRY: Duration = Duration::from_secs(2);
/// Deliveries interpreted per transaction.
const BATCH: i64 = 100;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Intent {
    Installation {
        id: i64,
        account: String,
        change: Change,
    },
    /// Something a person asked of Conveyor, decided by the request workers.
    Request(Asked),
    Ignore(&'static str),
}

/// Whether interpreting `event` reads or writes the database; most deliveries need neither.
pub fn touches_database(event: &Event) -> bool {
    event.installation_id.is_some() && event.kind != EventKind::Unhandled
}

/// What a delivery's payload alone tells of it.
pub enum Reading {
    /// Its outcome: an action Conveyor does not act on, no installation, or JSON that is
    /// not the event its header names. Intake stores such a delivery already decided, and
    /// the job decides a replayed one the same way.
    Decided(Decided),
    /// The event, whose meaning depends on what the database holds.
    Event(Box<Event>),
}

fn malformed(err: &serde_json::Error) -> Decided {
    Decided {
        summary: Summary::default(),
        outcome: format!("ignored: malformed payload: {err}"),
    }
}

/// Reads the payload of an `event` delivery; an error when it is not JSON.
pub fn read(event: &str, payload: &[u8]) -> Result<Reading, serde_json::Error> {
    let event = match Event::parse(event, payload) {
        Ok(event) => event,
        Err(err) if err.is_data() => return Ok(Reading::Decided(malformed(&err))),
        Err(err) => return Err(err),
    };
    if touches_database(&event) {
        return Ok(Reading::Event(Box::new(event)));
    }
    Ok(match interpret(&event, None) {
        Intent::Ignore(reason) => Reading::Decided(Decided {
            summary: event.summary(),
            outcome: format!("ignored: {reason}"),
        }),
        _ => Reading::Event(Box::new(event)),
    })
}

/// What a delivery means, decided from the event and what is known of its installation.
pub fn interpret(event: &Event, installation: Option<Status>) -> Intent {
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
        _ => {}
    }
    match installation {
        Some(Status::Deleted) => return Intent::Ignore("installation deleted"),
        Some(Status::Suspended) => return Intent::Ignore("installation suspended"),
        Some(Status::Active) | None => {}
    }
    let Some(repo) = &event.repository else {
        return Intent::Ignore("no repository");
    };
    let Some(sender) = &event.sender else {
        return Intent::Ignore("no sender");
    };
    let (issue, actor, request) = match &event.kind {
        EventKind::IssueLabeled { issue, label } => (
            Some(issue.number),
            sender,
            Request::Labeled {
                label: label.clone(),
                title: issue.title.clone(),
                body: issue.body.clone(),
                labels: issue.labels.clone(),
            },
        ),
        EventKind::IssueUnlabeled { issue, label } => (
            Some(issue.number),
            sender,
            Request::Unlabeled {
                label: label.clone(),
            },
        ),
        EventKind::IssueClosed { issue } => (Some(issue.number), sender, Request::IssueClosed),
        EventKind::CommentCreated {
            issue,
            is_pull_request,
            comment,
            body,
            author,
        } => {
            // Conveyor's own comments never command it, whatever they quote.
            if body.contains(MARKER_PREFIX) {
                return Intent::Ignore("comment is Conveyor's own");
            }
            let request = if !commands::parse(body).is_empty() {
                Request::Comment {
                    comment: match comment {
                        CommentRef::Issue(id) => outbox::Comment::Issue(*id),
                        CommentRef::ReviewComment(id) => outbox::Comment::Review(*id),
                    },
                    text: body.clone(),
                    is_pull_request: *is_pull_request,
                    title: issue.title.clone(),
                    body: issue.body.clone(),
                    labels: issue.labels.clone(),
                }
            } else {
                // A person's plain comment on the issue may answer a run's questions; whether
                // one waits for it is the database's to say.
                match comment {
                    CommentRef::Issue(id) if !author.is_bot => Request::Answer {
                        comment: outbox::Comment::Issue(*id),
                        text: body.clone(),
                    },
                    _ => return Intent::Ignore("no command in the comment"),
                }
            };
            (Some(issue.number), author, request)
        }
        EventKind::CheckRunRequestedAction {
            check_run,
            identifier,
        } => {
            if check_run.name != check_run::NAME {
                return Intent::Ignore("not Conveyor's check run");
            }
            (
                None,
                sender,
                Request::CheckRunAction {
                    identifier: identifier.clone(),
                    head_sha: check_run.head_sha.clone(),
                    external_id: check_run.external_id.clone(),
                },
            )
        }
        EventKind::CheckRunRerequested { check_run } => {
            if check_run.name != check_run::NAME {
                return Intent::Ignore("not Conveyor's check run");
            }
            (
                None,
                sender,
                Request::Rerequested {
                    head_sha: check_run.head_sha.clone(),
                    external_id: check_run.external_id.clone(),
                },
            )
        }
        EventKind::CheckSuiteRerequested { head_sha, .. } => (
            None,
            sender,
            Request::Rerequested {
                head_sha: head_sha.clone(),
                external_id: None,
            },
        ),
        EventKind::PullRequestClosed { number, merged, .. } => (
            Some(*number),
            sender,
            Request::PullRequestClosed { merged: *merged },
        ),
        EventKind::Installation { .. }
        | EventKind::InstallationRepositories { .. }
        | EventKind::Unhandled => return Intent::Ignore("event not handled"),
    };
    Intent::Request(Asked {
        installation_id,
        owner: repo.owner.clone(),
        name: repo.name.clone(),
        default_branch: repo.default_branch.clone(),
        issue,
        actor: actor.login.clone(),
        actor_is_bot: actor.is_bot,
        request,
    })
}

/// Interprets up to a batch of due deliveries in one transaction; returns how many.
pub async fn process_batch(pool: &PgPool) -> anyhow::Result<usize> {
    let mut tx = pool.begin().await?;
    let deliveries = inbox::claim_pending(&mut *tx, BATCH).await?;
    let mut outcomes = Vec::with_capacity(deliveries.len());
    for delivery in &deliveries {
        let span = tracing::info_span!("delivery", delivery_id = %delivery.delivery_id, event = %delivery.event);
        if let Some(decided) = process(&mut tx, delivery).instrument(span).await? {
            outcomes.push((delivery.id, decided));
        }
    }
    inbox::record_outcomes(&mut *tx, &outcomes).await?;
    tx.commit().await?;
    Ok(deliveries.len())
}

/// Interprets one delivery; `None` when it failed and was scheduled for another attempt.
async fn process(
    conn: &mut PgConnection,
    delivery: &PendingDelivery,
) -> sqlx::Result<Option<Decided>> {
    let Some(payload) = &delivery.payload else {
        return Ok(Some(Decided {
            summary: Summary::default(),
            outcome: "ignored: payload deleted by retention".to_owned(),
        }));
    };
    Ok(Some(match read(&delivery.event, payload) {
        Ok(Reading::Decided(decided)) => decided,
        Ok(Reading::Event(event)) => return interpret_with_database(conn, delivery, *event).await,
        // A rejected delivery replayed: its body is not JSON.
        Err(err) => malformed(&err),
    }))
}

/// Interprets a delivery whose meaning depends on what the database holds, in a savepoint.
async fn interpret_with_database(
    conn: &mut PgConnection,
    delivery: &PendingDelivery,
    event: Event,
) -> sqlx::Result<Option<Decided>> {
    // A savepoint, so a failure undoes the delivery's effects but not the rest of the batch.
    let mut effects = sqlx::Connection::begin(&mut *conn).await?;
    match apply(&mut effects, delivery.id, &event).await {
        Ok(outcome) => {
            effects.commit().await?;
            tracing::debug!(%outcome, "delivery interpreted");
            Ok(Some(Decided {
                summary: event.summary(),
                outcome,
            }))
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
    Ok(match interpret(event, status) {
        Intent::Ignore(reason) => format!("ignored: {reason}"),
        Intent::Installation {
            id,
            account,
            change,
        } => {
            installations::apply(conn, id, &account, &change).await?;
            "installation".to_owned()
        }
        Intent::Request(Asked {
            request: Request::Answer { .. },
            issue: Some(issue),
            owner,
            name,
            ..
        }) if !clarification::awaited_on(&mut *conn, &owner, &name, issue).await? => {
            "ignored: no command in the comment".to_owned()
        }
        Intent::Request(asked) => {
            // A replayed delivery finds the request it queued the first time.
            queue::insert(conn, delivery_id, &asked).await?;
            "request_queued".to_owned()
        }
    })
}

/// Runs until `shutdown`, draining the inbox whenever `deliveries_added` fires.
pub async fn run(pool: PgPool, deliveries_added: Arc<Notify>, shutdown: CancellationToken) {
    loop {
        let woken = deliveries_added.notified();
        loop {
            match process_batch(&pool).await {
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
    use crate::webhook::event::{Actor, CheckRunRef, InstallationAction, Issue, Repository};

    fn event(kind: EventKind, installation_id: Option<i64>) -> Event {
        Event {
            name: "issues".into(),
            action: Some("labeled".into()),
            installation_id,
            repository: Some(Repository {
                owner: "acme".into(),
                name: "widgets".into(),
                default_branch: "main".into(),
            }),
            sender: Some(Actor {
                login: "alice".into(),
                is_bot: false,
            }),
            kind,
        }
    }

    fn issue() -> Issue {
        Issue {
            number: 3,
            title: "Add a thing".into(),
            body: "please".into(),
            labels: vec!["bug".into(), "conveyor".into()],
        }
    }

    fn labeled(label: &str, installation_id: Option<i64>) -> Event {
        event(
            EventKind::IssueLabeled {
                issue: issue(),
                label: label.into(),
            },
            installation_id,
        )
    }

    fn comment(body: &str, author: &str, is_bot: bool) -> Event {
        event(
            EventKind::CommentCreated {
                issue: issue(),
                is_pull_request: false,
                comment: CommentRef::Issue(77),
                body: body.into(),
                author: Actor {
                    login: author.into(),
                    is_bot,
                },
            },
            Some(9),
        )
    }

    #[test]
    fn a_label_is_a_request_whatever_the_label_for_the_settings_decide_the_trigger() {
        for status in [None, Some(Status::Active)] {
            for label in ["conveyor", "bug"] {
                let Intent::Request(asked) = interpret(&labeled(label, Some(9)), status) else {
                    panic!("expected a request");
                };
                assert_eq!((asked.installation_id, asked.issue), (9, Some(3)));
                assert_eq!(
                    (asked.owner.as_str(), asked.name.as_str()),
                    ("acme", "widgets")
                );
                assert_eq!(asked.actor, "alice");
                assert_eq!(
                    asked.request,
                    Request::Labeled {
                        label: label.into(),
                        title: "Add a thing".into(),
                        body: "please".into(),
                        labels: vec!["bug".into(), "conveyor".into()],
                    }
                );
            }
        }
    }

    #[test]
    fn a_comment_is_a_command_or_may_be_an_answer_unless_it_is_conveyors_own() {
        let Intent::Request(asked) = interpret(&comment("/conveyor run", "bob", false), None)
        else {
            panic!("expected a request");
        };
        assert!(matches!(
            asked.request,
            Request::Comment {
                comment: outbox::Comment::Issue(77),
                ..
            }
        ));
        assert_eq!(asked.actor, "bob");
        // A bot's command still goes to the workers: a repository may allow that bot.
        let Intent::Request(asked) = interpret(&comment("/conveyor run", "ci[bot]", true), None)
        else {
            panic!("expected a request");
        };
        assert!(asked.actor_is_bot);
        let Intent::Request(asked) = interpret(&comment("looks good", "bob", false), None) else {
            panic!("a plain comment may be an answer");
        };
        assert_eq!(
            asked.request,
            Request::Answer {
                comment: outbox::Comment::Issue(77),
                text: "looks good".into()
            }
        );
        assert_eq!(
            interpret(&comment("looks good", "ci[bot]", true), None),
            Intent::Ignore("no command in the comment")
        );
        let Intent::Request(asked) =
            interpret(&comment("```\n/conveyor run\n```", "bob", false), None)
        else {
            panic!("a plain comment may be an answer");
        };
        assert!(
            matches!(asked.request, Request::Answer { .. }),
            "a quoted command is no command"
        );
        assert_eq!(
            interpret(
                &comment(
                    "<!-- conveyor:reply -->\n/conveyor run",
                    "conveyor[bot]",
                    true
                ),
                None
            ),
            Intent::Ignore("comment is Conveyor's own")
        );
    }

    #[test]
    fn only_conveyors_check_runs_are_asked_of_it() {
        let check_run = |name: &str| CheckRunRef {
            id: 5,
            name: name.into(),
            head_sha: "abc".into(),
            external_id: Some("12".into()),
        };
        let action = |name: &str| {
            event(
                EventKind::CheckRunRequestedAction {
                    check_run: check_run(name),
                    identifier: "approve".into(),
                },
                Some(9),
            )
        };
        let Intent::Request(asked) = interpret(&action("conveyor"), None) else {
            panic!("expected a request");
        };
        assert_eq!(asked.issue, None, "the check run's task says the issue");
        assert_eq!(
            asked.request,
            Request::CheckRunAction {
                identifier: "approve".into(),
                head_sha: "abc".into(),
                external_id: Some("12".into())
            }
        );
        assert_eq!(
            interpret(&action("ci"), None),
            Intent::Ignore("not Conveyor's check run")
        );
    }

    #[test]
    fn ignores_with_a_reason() {
        let active = Some(Status::Active);
        let mut unhandled = labeled("conveyor", Some(9));
        unhandled.kind = EventKind::Unhandled;
        let mut anonymous = labeled("conveyor", Some(9));
        anonymous.sender = None;
        let cases = [
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
            (anonymous, active, "no sender"),
            (unhandled, active, "event not handled"),
        ];
        for (event, status, reason) in cases {
            assert_eq!(interpret(&event, status), Intent::Ignore(reason));
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
            interpret(&event, Some(Status::Suspended)),
            Intent::Installation { id: 9, .. }
        ));
    }
}
