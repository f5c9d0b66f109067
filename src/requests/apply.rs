//! Deciding one request: who asked, whether they may, and what it does to the task, with its
//! answers queued in the outbox in the same transaction.

use serde_json::json;
use sqlx::PgConnection;

use super::forge::OnGitHub;
use super::lookup::PipelineText;
use super::queue::Taken;
use super::{Asked, Request, Requests};
use crate::authz::{self, Action, Actor, Permission};
use crate::commands::{self, Command, ParseError, code};
use crate::engine::approvals::{self, Decided, Verdict};
use crate::engine::clarification::{self, Answered, Refusal};
use crate::engine::forge::Forge;
use crate::engine::retries::{self, Retry};
use crate::engine::tasks::{self, BoardFields, NewTask, Task};
use crate::engine::{board, events};
use crate::github::InstallationClient;
use crate::github::client::Repo;
use crate::outbox::{self, Comment, Effect, Place, Reaction};
use crate::pipeline::definition::{self, DEFAULT_PIPELINE, DefinitionError, Settings};
use crate::report::{check_run, reply};

/// What deciding a request needs at hand.
struct Scope<'a> {
    requests: &'a Requests,
    asked: &'a Asked,
    client: InstallationClient,
    place: Place,
}

impl Scope<'_> {
    fn repo(&self) -> Repo<'_> {
        Repo {
            owner: &self.asked.owner,
            name: &self.asked.name,
        }
    }

    fn forge(&self) -> OnGitHub<'_> {
        OnGitHub {
            client: &self.client,
            owner: &self.asked.owner,
            name: &self.asked.name,
        }
    }

    fn actor(&self) -> Actor<'_> {
        Actor {
            login: &self.asked.actor,
            is_bot: self.asked.actor_is_bot,
        }
    }

    async fn pipeline_file(&self) -> anyhow::Result<PipelineText> {
        Ok(self
            .requests
            .lookups
            .pipeline_file(&self.client, self.repo(), &self.asked.default_branch)
            .await?)
    }

    /// The repository's settings: the defaults when it has no pipeline file, the error when
    /// its `settings` block is wrong.
    async fn settings(&self) -> anyhow::Result<Result<Settings, DefinitionError>> {
        Ok(match self.pipeline_file().await? {
            Ok(Some(text)) => definition::parse_settings(&text),
            Ok(None) => Ok(Settings::default()),
            Err(err) => Err(err),
        })
    }

    /// The pipeline a new task runs (see [`definition::choose`]); an error only when the
    /// file names no such pipeline. A file that cannot be read or parsed gives the name
    /// asked for, or the default, and the run reports what is wrong with the file.
    async fn pipeline_for(
        &self,
        named: Option<&str>,
        labels: &[String],
    ) -> anyhow::Result<Result<String, DefinitionError>> {
        let fallback = || named.unwrap_or(DEFAULT_PIPELINE).to_owned();
        Ok(match self.pipeline_file().await? {
            Ok(Some(text)) => match definition::choose(&text, named, labels) {
                Err(err @ DefinitionError::NoSuchPipeline { .. }) => Err(err),
                Err(_) => Ok(fallback()),
                chosen => chosen,
            },
            Ok(None) | Err(_) => Ok(fallback()),
        })
    }

    async fn permission(&self) -> anyhow::Result<Permission> {
        Ok(self
            .requests
            .lookups
            .permission(&self.client, self.repo(), &self.asked.actor)
            .await?)
    }

    /// Whether the actor may do `action` here; the refusal's reason otherwise.
    async fn allowed(
        &self,
        action: Action,
        settings: &Settings,
        requester: Option<&str>,
    ) -> anyhow::Result<Result<(), String>> {
        let permission = if action.needs_permission() {
            self.permission().await?
        } else {
            Permission::None
        };
        Ok(
            authz::check(action, &self.actor(), permission, settings, requester)
                .map_err(|refusal| refusal.to_string()),
        )
    }

    /// Answers a refused click (which has no comment to react to) with a reply on the
    /// task's issue naming the person; returns the request's outcome.
    async fn refuse(
        &self,
        conn: &mut PgConnection,
        issue: Option<i64>,
        command: &str,
        why: &str,
    ) -> sqlx::Result<String> {
        // A task made through the API has no issue to reply on: its check run asked.
        if let Some(issue) = issue {
            let body = reply::refused(command, &format!("@{}: {why}", self.asked.actor));
            let reply = Effect::Reply {
                issue,
                to: None,
                body,
            };
            self.enqueue(conn, &[reply]).await?;
        }
        Ok(format!("refused: {why}"))
    }

    async fn enqueue(&self, conn: &mut PgConnection, effects: &[Effect]) -> sqlx::Result<()> {
        outbox::enqueue(conn, &self.place, effects).await
    }

    fn new_task(&self, delivery_id: Option<i64>, issue: i64, title: &str, body: &str) -> NewTask {
        NewTask {
            installation_id: self.asked.installation_id,
            repo_owner: self.asked.owner.clone(),
            repo_name: self.asked.name.clone(),
            default_branch: self.asked.default_branch.clone(),
            issue_number: Some(issue),
            title: title.to_owned(),
            body: body.to_owned(),
            pipeline: DEFAULT_PIPELINE.to_owned(),
            delivery_id,
            requested_by: Some(self.asked.actor.clone()),
            pull_request: None,
            retry_of: None,
            timeout_minutes: None,
            retry_from: None,
            board: BoardFields::default(),
            // The delivery's, found by its id.
            correlation_id: None,
        }
    }
}

/// Decides `taken` in `conn`'s transaction; returns the outcome recorded on the request.
/// An error leaves nothing behind, and the request is decided again later.
pub(super) async fn apply(
    requests: &Requests,
    conn: &mut PgConnection,
    taken: &Taken,
) -> anyhow::Result<String> {
    let asked = &taken.asked;
    let scope = Scope {
        requests,
        asked,
        client: requests
            .github
            .installation(asked.installation_id, &asked.name),
        place: Place {
            installation_id: asked.installation_id,
            owner: asked.owner.clone(),
            name: asked.name.clone(),
        },
    };
    match &asked.request {
        Request::Labeled {
            label,
            title,
            body,
            labels,
        } => {
            let issue = Issue {
                title,
                body,
                labels,
            };
            labeled(&scope, conn, taken.delivery_id, label, &issue).await
        }
        Request::Unlabeled { label } => {
            let settings = match scope.settings().await? {
                Ok(settings) => settings,
                Err(_) => return Ok("ignored: settings unreadable".to_owned()),
            };
            match settings.started_by(label) {
                Some(None) => cancel_live(&scope, conn, None).await,
                Some(Some(pipeline)) => cancel_live(&scope, conn, Some(pipeline)).await,
                None => Ok("ignored: label is not the trigger".to_owned()),
            }
        }
        Request::IssueClosed => cancel_live(&scope, conn, None).await,
        Request::PullRequestClosed { merged } => pull_request_closed(&scope, conn, *merged).await,
        Request::Comment {
            comment,
            text,
            is_pull_request,
            title,
            body,
            labels,
        } => {
            let said = Said {
                comment: *comment,
                is_pull_request: *is_pull_request,
                issue: Issue {
                    title,
                    body,
                    labels,
                },
                delivery_id: taken.delivery_id,
            };
            commented(&scope, conn, &said, text).await
        }
        Request::Answer { comment, text } => answered(&scope, conn, *comment, text).await,
        Request::CheckRunAction {
            identifier,
            head_sha,
            external_id,
        } => {
            let Some(task) = check_run_task(&scope, conn, external_id.as_deref(), head_sha).await?
            else {
                return Ok("ignored: not a check run of Conveyor's".to_owned());
            };
            let approve = match identifier.as_str() {
                check_run::APPROVE => true,
                check_run::REJECT => false,
                _ => return Ok(format!("ignored: unknown action `{identifier}`")),
            };
            let command = if approve { "approve" } else { "reject" };
            let settings = match scope.settings().await? {
                Ok(settings) => settings,
                Err(err) => {
                    let why = err.to_string();
                    return Ok(scope.refuse(conn, task.issue_number, command, &why).await?);
                }
            };
            if !authz::honours(&scope.actor(), &settings) {
                return Ok("ignored: sender is a bot".to_owned());
            }
            let seen = Some(head_sha.as_str());
            Ok(
                match decide(
                    &scope,
                    conn,
                    &task,
                    approve,
                    None,
                    seen,
                    "check_run",
                    &settings,
                )
                .await?
                {
                    Ok(done) => done,
                    Err(why) => scope.refuse(conn, task.issue_number, command, &why).await?,
                },
            )
        }
        Request::Rerequested {
            head_sha,
            external_id,
        } => {
            let Some(task) = check_run_task(&scope, conn, external_id.as_deref(), head_sha).await?
            else {
                return Ok("ignored: not a check run of Conveyor's".to_owned());
            };
            let settings = match scope.settings().await? {
                Ok(settings) => settings,
                Err(_) => return Ok("ignored: settings unreadable".to_owned()),
            };
            if !authz::honours(&scope.actor(), &settings) {
                return Ok("ignored: sender is a bot".to_owned());
            }
            if let Err(why) = scope.allowed(Action::Retry, &settings, None).await? {
                return Ok(scope.refuse(conn, task.issue_number, "retry", &why).await?);
            }
            let Some(issue) = task.issue_number else {
                return Ok(
                    "ignored: a task without an issue is retried through the API".to_owned(),
                );
            };
            Ok(match retry(&scope, conn, issue, None).await? {
                Ok(done) => done,
                Err(why) => scope.refuse(conn, Some(issue), "retry", &why).await?,
            })
        }
    }
}

/// What a request knows of its issue.
struct Issue<'a> {
    title: &'a str,
    body: &'a str,
    labels: &'a [String],
}

async fn labeled(
    scope: &Scope<'_>,
    conn: &mut PgConnection,
    delivery_id: Option<i64>,
    label: &str,
    issue: &Issue<'_>,
) -> anyhow::Result<String> {
    let Some(number) = scope.asked.issue else {
        return Ok("ignored: no issue".to_owned());
    };
    // A broken pipeline file falls back to the default settings: the default label then
    // starts a run, whose failure says what is wrong with the file.
    let settings = scope.settings().await?.unwrap_or_default();
    let Some(named) = settings.started_by(label) else {
        return Ok("ignored: label is not the trigger".to_owned());
    };
    if !authz::honours(&scope.actor(), &settings) {
        return Ok("ignored: sender is a bot".to_owned());
    }
    // The trigger label runs the pipeline another of the issue's labels names, if one does.
    let named = named.or_else(|| {
        issue
            .labels
            .iter()
            .find_map(|other| settings.pipeline_named_by(other))
    });
    let pipeline = match scope.pipeline_for(named, issue.labels).await? {
        Ok(pipeline) => pipeline,
        Err(err) => {
            let why = err.to_string();
            let reply = Effect::Reply {
                issue: number,
                to: None,
                body: reply::label_refused(label, &why),
            };
            scope.enqueue(conn, &[reply]).await?;
            return Ok(format!("refused: {why}"));
        }
    };
    let task = NewTask {
        pipeline,
        ..scope.new_task(delivery_id, number, issue.title, issue.body)
    };
    Ok(match tasks::create(conn, &task).await? {
        Some(task_id) => {
            tracing::info!(task_id = task_id, pipeline = %task.pipeline, "task created");
            "task_created".to_owned()
        }
        None => "ignored: the issue already has a live task".to_owned(),
    })
}

/// Cancels the issue's live task, if it has one; with `pipeline`, only a task running that
/// pipeline (its label was taken off).
async fn cancel_live(
    scope: &Scope<'_>,
    conn: &mut PgConnection,
    pipeline: Option<&str>,
) -> anyhow::Result<String> {
    let Some(issue) = scope.asked.issue else {
        return Ok("ignored: no issue".to_owned());
    };
    let Some(task) =
        tasks::live_for_issue(&mut *conn, &scope.asked.owner, &scope.asked.name, issue).await?
    else {
        return Ok("ignored: no live task".to_owned());
    };
    if pipeline.is_some_and(|pipeline| pipeline != task.pipeline) {
        return Ok(format!(
            "ignored: the live task runs pipeline `{}`",
            task.pipeline
        ));
    }
    tasks::cancel(conn, task.id, Some(&scope.asked.actor)).await?;
    Ok(format!("cancelled task {}", task.id))
}

async fn pull_request_closed(
    scope: &Scope<'_>,
    conn: &mut PgConnection,
    merged: bool,
) -> anyhow::Result<String> {
    let Some(number) = scope.asked.issue else {
        return Ok("ignored: no pull request".to_owned());
    };
    let ids: Vec<i64> = sqlx::query_scalar(
        "SELECT DISTINCT t.id FROM tasks t LEFT JOIN runs r ON r.task_id = t.id
         WHERE t.repo_owner = $1 AND t.repo_name = $2
           AND (r.pull_request_number = $3 OR t.pull_request = $3)
         ORDER BY t.id",
    )
    .bind(&scope.asked.owner)
    .bind(&scope.asked.name)
    .bind(number)
    .fetch_all(&mut *conn)
    .await?;
    if ids.is_empty() {
        return Ok("ignored: not a pull request of Conveyor's".to_owned());
    }
    let kind = if merged {
        "pull_request_merged"
    } else {
        "pull_request_closed"
    };
    for &task_id in &ids {
        events::record(
            &mut *conn,
            task_id,
            None,
            kind,
            json!({ "pull_request": number, "by": scope.asked.actor }),
        )
        .await?;
        if let Some(task) = tasks::get(&mut *conn, task_id).await?
            && !task.state.is_final()
        {
            tasks::cancel(conn, task.id, Some(&scope.asked.actor)).await?;
        }
    }
    if merged {
        board::pull_request_merged(conn, &ids, number, &scope.asked.actor).await?;
    }
    Ok(format!("{kind}: tasks {ids:?} are done"))
}

/// A plain comment: the answer to the questions the issue's live task waits on, when its
/// requester wrote it; anyone else's comment is no answer and is left alone.
async fn answered(
    scope: &Scope<'_>,
    conn: &mut PgConnection,
    comment: Comment,
    text: &str,
) -> anyhow::Result<String> {
    let Some(issue) = scope.asked.issue else {
        return Ok("ignored: no issue".to_owned());
    };
    let (owner, name) = (&scope.asked.owner, &scope.asked.name);
    let Some(task) = tasks::live_for_issue(&mut *conn, owner, name, issue).await? else {
        return Ok("ignored: no command in the comment".to_owned());
    };
    match clarification::answer(conn, task.id, &scope.asked.actor, text).await? {
        Answered::Taken { run_id } => {
            tracing::info!(
                task = task.id,
                run = run_id,
                answer_bytes = text.len(),
                "questions answered"
            );
            outbox::sync_tasks(conn, &[task.id]).await?;
            let seen = Effect::React {
                comment,
                reaction: Reaction::Seen,
            };
            scope.enqueue(conn, &[seen]).await?;
            Ok(format!("answered the questions of task {}", task.id))
        }
        Answered::Refused(refusal @ Refusal::NotAsked) => Ok(format!("ignored: {refusal}")),
        Answered::Refused(refusal @ Refusal::TooLong(_)) => {
            let why = refusal.to_string();
            let effects = [
                Effect::React {
                    comment,
                    reaction: Reaction::Refused,
                },
                Effect::Reply {
                    issue,
                    to: Some(comment),
                    body: reply::answer_refused(&why),
                },
            ];
            scope.enqueue(conn, &effects).await?;
            Ok(format!("refused: {why}"))
        }
    }
}

/// A comment's place and what it was made on.
struct Said<'a> {
    comment: Comment,
    is_pull_request: bool,
    issue: Issue<'a>,
    delivery_id: Option<i64>,
}

async fn commented(
    scope: &Scope<'_>,
    conn: &mut PgConnection,
    said: &Said<'_>,
    text: &str,
) -> anyhow::Result<String> {
    let Some(issue) = scope.asked.issue else {
        return Ok("ignored: no issue".to_owned());
    };
    let parsed = commands::parse(text);
    if parsed.is_empty() {
        return Ok("ignored: no command".to_owned());
    }
    let settings = match scope.settings().await? {
        Ok(settings) => settings,
        Err(err) => {
            if scope.asked.actor_is_bot {
                return Ok("ignored: sender is a bot".to_owned());
            }
            let effects = [
                Effect::React {
                    comment: said.comment,
                    reaction: Reaction::Refused,
                },
                Effect::Reply {
                    issue,
                    to: Some(said.comment),
                    body: reply::refused("/conveyor", &err.to_string()),
                },
            ];
            scope.enqueue(conn, &effects).await?;
            return Ok("refused: settings unreadable".to_owned());
        }
    };
    if !authz::honours(&scope.actor(), &settings) {
        return Ok("ignored: sender is a bot".to_owned());
    }
    let mut outcomes = Vec::new();
    let mut answers = Vec::new();
    let (mut accepted, mut seen, mut refused) = (false, false, false);
    for command in parsed {
        let done = match command {
            Ok(command) => run_command(scope, conn, said, issue, &settings, &command).await?,
            Err(ParseError::UnknownCommand(word)) => Handled::Refused {
                why: format!("unknown command `{word}`"),
                answer: reply::help(Some(&word)),
            },
            Err(err) => Handled::Refused {
                why: err.to_string(),
                answer: reply::parse_error(&err),
            },
        };
        match done {
            Handled::Accepted(outcome) => {
                accepted = true;
                outcomes.push(outcome);
            }
            Handled::Seen(outcome) => {
                seen = true;
                outcomes.push(outcome);
            }
            Handled::Answered { outcome, answer } => {
                accepted = true;
                outcomes.push(outcome);
                answers.push(answer);
            }
            Handled::Refused { why, answer } => {
                refused = true;
                outcomes.push(format!("refused: {why}"));
                answers.push(answer);
            }
        }
    }
    let mut effects = Vec::new();
    for (yes, reaction) in [
        (accepted, Reaction::Accepted),
        (seen, Reaction::Seen),
        (refused, Reaction::Refused),
    ] {
        if yes {
            effects.push(Effect::React {
                comment: said.comment,
                reaction,
            });
        }
    }
    if !answers.is_empty() {
        effects.push(Effect::Reply {
            issue,
            to: Some(said.comment),
            body: answers.join("\n\n---\n\n"),
        });
    }
    scope.enqueue(conn, &effects).await?;
    Ok(outcomes.join("; "))
}

enum Handled {
    /// Done; the comment gets a 👍.
    Accepted(String),
    /// Taken up; the comment gets a 👀.
    Seen(String),
    /// Done, with a reply (help).
    Answered { outcome: String, answer: String },
    /// Not done; the comment gets a 👎 and the reply says why.
    Refused { why: String, answer: String },
}

fn refused(command: &Command, why: String) -> Handled {
    Handled::Refused {
        answer: reply::refused(command.name(), &why),
        why,
    }
}

async fn run_command(
    scope: &Scope<'_>,
    conn: &mut PgConnection,
    said: &Said<'_>,
    issue: i64,
    settings: &Settings,
    command: &Command,
) -> anyhow::Result<Handled> {
    let owner = &scope.asked.owner;
    let name = &scope.asked.name;
    Ok(match command {
        Command::Help => Handled::Answered {
            outcome: "help".to_owned(),
            answer: reply::help(None),
        },
        Command::Status => match tasks::latest_for_issue(&mut *conn, owner, name, issue).await? {
            Some(task) => {
                outbox::sync_tasks(conn, &[task.id]).await?;
                Handled::Seen(format!("status of task {}", task.id))
            }
            None => refused(command, "no Conveyor task has run here yet".to_owned()),
        },
        Command::Run {
            pipeline,
            timeout_minutes,
        } => {
            if let Err(why) = scope.allowed(Action::Run, settings, None).await? {
                return Ok(refused(command, why));
            }
            if let Some(live) = tasks::live_for_issue(&mut *conn, owner, name, issue).await? {
                return Ok(refused(command, busy(&live)));
            }
            let pipeline = match scope
                .pipeline_for(pipeline.as_deref(), said.issue.labels)
                .await?
            {
                Ok(pipeline) => pipeline,
                Err(err) => return Ok(refused(command, err.to_string())),
            };
            let mut task = NewTask {
                pipeline,
                timeout_minutes: timeout_minutes.map(|minutes| minutes as i32),
                ..scope.new_task(said.delivery_id, issue, said.issue.title, said.issue.body)
            };
            if said.is_pull_request {
                match scope.forge().pull_request(issue).await? {
                    Ok(target) => task.pull_request = Some(target),
                    Err(why) => return Ok(refused(command, why)),
                }
            }
            create(scope, conn, &task).await?
        }
        Command::Retry { step } => {
            if let Err(why) = scope.allowed(Action::Retry, settings, None).await? {
                return Ok(refused(command, why));
            }
            match retry(scope, conn, issue, step.as_deref()).await? {
                Ok(done) => Handled::Accepted(done),
                Err(why) => refused(command, why),
            }
        }
        Command::Cancel => {
            if let Err(why) = scope.allowed(Action::Cancel, settings, None).await? {
                return Ok(refused(command, why));
            }
            match tasks::live_for_issue(&mut *conn, owner, name, issue).await? {
                Some(task) => {
                    tasks::cancel(conn, task.id, Some(&scope.asked.actor)).await?;
                    Handled::Accepted(format!("cancelled task {}", task.id))
                }
                None => refused(
                    command,
                    "there is no queued, running or waiting task to cancel".to_owned(),
                ),
            }
        }
        Command::Approve | Command::Reject { .. } => {
            let (approve, reason) = match command {
                Command::Reject { reason } => (false, reason.as_deref()),
                _ => (true, None),
            };
            let Some(task) = tasks::live_for_issue(&mut *conn, owner, name, issue).await? else {
                return Ok(refused(
                    command,
                    "no run here waits for an approval".to_owned(),
                ));
            };
            match decide(
                scope, conn, &task, approve, reason, None, "comment", settings,
            )
            .await?
            {
                Ok(done) => Handled::Accepted(done),
                Err(why) => refused(command, why),
            }
        }
    })
}

/// Why a new task cannot start while `live` is there.
fn busy(live: &Task) -> String {
    format!(
        "task {} is still {}; wait for it or `/conveyor cancel` it first",
        live.id,
        live.state.words()
    )
}

/// Creates `task`; a pull-request task shows a queued check run on the PR's head at once.
async fn create(
    scope: &Scope<'_>,
    conn: &mut PgConnection,
    task: &NewTask,
) -> anyhow::Result<Handled> {
    let Some(task_id) = tasks::create(conn, task).await? else {
        return Ok(Handled::Refused {
            why: "the issue already has a live task".to_owned(),
            answer: reply::refused("run", "this issue already has a live task"),
        });
    };
    let mut effects = vec![Effect::StatusComment { task_id }];
    if let Some(pull) = &task.pull_request {
        effects.push(Effect::CheckRun {
            task_id,
            head_sha: pull.head_sha.clone(),
        });
    }
    scope.enqueue(conn, &effects).await?;
    tracing::info!(task_id = task_id, "task created");
    Ok(Handled::Accepted(format!("task {task_id} created")))
}

/// Runs the issue's latest task again as a new task, linked to it (see
/// [`retries::retry`]).
async fn retry(
    scope: &Scope<'_>,
    conn: &mut PgConnection,
    issue: i64,
    step: Option<&str>,
) -> anyhow::Result<Result<String, String>> {
    let (owner, name) = (&scope.asked.owner, &scope.asked.name);
    let Some(last) = tasks::latest_for_issue(&mut *conn, owner, name, issue).await? else {
        return Ok(Err(
            "no Conveyor task has run here yet; use `/conveyor run`".to_owned(),
        ));
    };
    let ask = Retry {
        task_id: last.id,
        step,
        by: &scope.asked.actor,
        default_branch: Some(&scope.asked.default_branch),
        correlation_id: None,
    };
    let from = step
        .map(|step| format!(" from step {}", code(step)))
        .unwrap_or_default();
    Ok(match retries::retry(conn, &ask, &scope.forge()).await? {
        Ok(retried) => Ok(format!(
            "task {} created, retrying task {}{from}",
            retried.task_id, retried.retry_of
        )),
        Err(why) => Err(why.to_string()),
    })
}

/// Approves or rejects the task's gate; the refusal's reason otherwise.
#[allow(clippy::too_many_arguments)]
async fn decide(
    scope: &Scope<'_>,
    conn: &mut PgConnection,
    task: &Task,
    approve: bool,
    reason: Option<&str>,
    seen_sha: Option<&str>,
    source: &'static str,
    settings: &Settings,
) -> anyhow::Result<Result<String, String>> {
    let verdict = Verdict {
        task_id: task.id,
        run_id: None,
        approve,
        actor: scope.actor(),
        permission: scope.permission().await?,
        reason,
        seen_sha,
        source,
    };
    Ok(
        match approvals::decide(conn, &verdict, settings, &scope.forge()).await? {
            Decided::Approved { .. } => Ok(format!("approved task {}", task.id)),
            Decided::Rejected { .. } => Ok(format!("rejected task {}", task.id)),
            Decided::Refused(why) => Err(why.to_string()),
        },
    )
}

/// The task a check run belongs to: named by its external id, or found by its commit.
async fn check_run_task(
    scope: &Scope<'_>,
    conn: &mut PgConnection,
    external_id: Option<&str>,
    head_sha: &str,
) -> sqlx::Result<Option<Task>> {
    let task_id: Option<i64> = match external_id.and_then(|id| id.parse().ok()) {
        Some(id) => Some(id),
        None => {
            sqlx::query_scalar(
                "SELECT c.task_id FROM check_runs c JOIN tasks t ON t.id = c.task_id
                 WHERE c.head_sha = $1 AND t.repo_owner = $2 AND t.repo_name = $3
                 ORDER BY c.created_at DESC LIMIT 1",
            )
            .bind(head_sha)
            .bind(&scope.asked.owner)
            .bind(&scope.asked.name)
            .fetch_optional(&mut *conn)
            .await?
        }
    };
    let Some(task_id) = task_id else {
        return Ok(None);
    };
    let task = tasks::get(&mut *conn, task_id).await?;
    // An external id is the clicker's to set on their own check runs: the task must be of
    // this repository and installation.
    Ok(task.filter(|task| {
        task.repo_owner == scope.asked.owner
            && task.repo_name == scope.asked.name
            && task.installation_id == scope.asked.installation_id
    }))
}
