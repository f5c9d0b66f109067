//! `/runs/{id}` (the check run's details page): the step timeline, the log (followed live
//! over `/runs/{id}/log/stream` while the run is running), the typed failure with its
//! remediation, the approval a parked run waits for, and what the run changed.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use maud::{Markup, PreEscaped, html};
use serde::Deserialize;
use serde_json::json;
use sqlx::PgPool;

use super::auth::Viewer;
use super::{PageError, layout};
use crate::engine::approvals::Gate;
use crate::engine::board_view::BoardTask;
use crate::engine::logs::{self, LogLine};
use crate::engine::{RunState, artifacts, runs};
use crate::http::AppState;
use crate::pipeline::changes::{ChangedFile, FileStatus};
use crate::report::approval::{Approvers, risk_notes, who_may_approve};

/// Lines of the log the page holds when it is served; the stream brings the rest.
const PAGE_LINES: i64 = 5_000;
/// Lines read at a time by the stream.
const STREAM_BATCH: i64 = 500;
/// How often the stream looks for new lines. Lines are stored every 100 ms without a
/// notification: looking this often puts a line on the page well within a second of the
/// step printing it, for one small indexed query per follower.
const LOOK_EVERY: Duration = Duration::from_millis(200);
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// Run `id` and its task, unless there is none or the viewer may not see its repository.
async fn run_or_404(
    state: &AppState,
    viewer: &Viewer,
    id: i64,
) -> Result<(runs::Run, BoardTask), PageError> {
    let missing = || PageError::not_found(format!("There is no run {id}."));
    let run = runs::get(&state.pool, id).await?.ok_or_else(missing)?;
    let task = viewer
        .visible_task(state, run.task_id)
        .await?
        .ok_or_else(missing)?;
    Ok((run, task))
}

pub async fn run(
    viewer: Viewer,
    State(state): State<AppState>,
    Path(id): Path<i64>,
) -> Result<Markup, PageError> {
    // Read before the lines: a run seen running after its lines were read leaves none
    // the stream, starting after them, could miss.
    let (run, task) = run_or_404(&state, &viewer, id).await?;
    let steps = runs::steps(&state.pool, id).await?;
    let lines = logs::page(&state.pool, id, 0, PAGE_LINES).await?;
    let artifacts = artifacts::get(&state.pool, id).await?;
    let running = run.state.is_live();
    let last_seq = lines.last().map_or(0, |line| line.seq);
    let body = html! {
        h1 { "Run " (run.id) }
        p {
            (layout::state(run.state.as_str())) " "
            "attempt " (run.attempt) " of "
            a href=(format!("/tasks/{}", run.task_id)) {
                "task #" (run.task_id) " " (task.title)
            }
        }
        dl {
            dt { "Pipeline" } dd { code { (run.pipeline) } }
            dt { "Repository" } dd { (task.repository) }
            dt { "Started" } dd { (layout::time(run.started_at)) }
            @if let Some(at) = run.finished_at { dt { "Finished" } dd { (layout::time(at)) } }
            dt { "Time used" } dd { (layout::duration(run.time_used_ms)) }
            @if let Some(branch) = &run.branch { dt { "Branch" } dd { code { (branch) } } }
            @if let Some(sha) = &run.base_sha { dt { "Base" } dd { code { (sha) } } }
            @if let Some(sha) = &run.head_sha { dt { "Head" } dd { code { (sha) } } }
            @if let Some(url) = &run.pull_request_url {
                dt { "Pull request" } dd { a href=(url) { (url) } }
            }
            @if let Some(sha) = &run.definition_sha {
                dt { "Pipeline file" } dd { "read at " code { (sha) } }
            }
        }
        @if let (RunState::AwaitingApproval, Some(gate)) = (run.state, &run.approval) {
            (approval(&gate.0, task.github.as_deref()))
        }
        @if let (RunState::AwaitingInput, Some(questions)) = (run.state, &run.questions) {
            section aria-labelledby="questions" {
                h2 #questions { "Waiting for answers" }
                p.wrap { (questions) }
                p.hint { "Answer on GitHub, in a comment on the issue." }
            }
        }
        @if let Some(kind) = &run.error_type {
            section aria-labelledby="failure" {
                h2 #failure { "Failure" }
                dl {
                    dt { "Type" } dd { code { (kind) } }
                    @if let Some(failure) = &run.failure { dt { "What happened" } dd { (failure) } }
                    @if let Some(step) = &run.failed_step { dt { "Failed step" } dd { (step) } }
                    @if let Some(step) = &run.last_successful_step { dt { "Last step that passed" } dd { (step) } }
                    @if let Some(remediation) = &run.remediation { dt { "What to do" } dd.wrap { (remediation) } }
                }
            }
        }
        h2 { "Steps" }
        @if steps.is_empty() {
            p.hint { "No step has finished yet." }
        } @else {
            ol.timeline {
                @for step in &steps {
                    li {
                        strong { (step.name) } " "
                        @match (step.timed_out, step.exit_code) {
                            (true, _) => { span.error { "timed out" } }
                            (false, Some(0)) => { "passed" }
                            (false, Some(code)) => { span.error { "exit code " (code) } }
                            (false, None) => { "no exit code" }
                        }
                        " · " (layout::duration(step.duration_ms))
                        @if step.attempts > 1 { " · " (step.attempts) " attempts" }
                        br;
                        code.meta { (step.command) }
                    }
                }
            }
        }
        h2 #log-heading { "Log" }
        @if running {
            p #live.hint aria-live="polite" { "The run is running: new lines appear as its steps print them." }
        }
        pre #log role="log" aria-labelledby="log-heading" tabindex="0" {
            @for line in &lines { (log_line(line)) }
        }
        @if lines.len() as i64 == PAGE_LINES {
            p.hint { "The first " (PAGE_LINES) " lines are shown; the API serves the rest: "
                code { "/api/v2/runs/" (id) "/logs?after=" (last_seq) } }
        }
        @if let Some(changes) = &artifacts {
            h2 { "Files modified" }
            (files(&changes.files.0))
            h2 { "Diff" }
            @if changes.truncated {
                p.hint { "The diff is " (changes.diff_bytes) " bytes; its first part is shown." }
            }
            @if changes.diff.is_empty() {
                p.hint { "Empty." }
            } @else {
                pre tabindex="0" aria-label="Diff" { (changes.diff) }
            }
        }
        @if running { (follow_script(id, last_seq)) }
    };
    Ok(layout::page(&format!("Run {id}"), Some(&viewer), body))
}

fn log_line(line: &LogLine) -> String {
    format!("{} │ {}\n", line.step, line.line)
}

/// The few lines of script that follow the log: each line the stream sends is appended as
/// text, and the end of the run is announced.
fn follow_script(id: i64, after: i64) -> Markup {
    html! {
        script {
            (PreEscaped(format!(
                "(function () {{
  var log = document.getElementById('log'), live = document.getElementById('live');
  var source = new EventSource('/runs/{id}/log/stream?after={after}');
  source.addEventListener('line', function (event) {{
    var line = JSON.parse(event.data);
    log.append(line.step + ' │ ' + line.line + '\\n');
  }});
  source.addEventListener('end', function (event) {{
    source.close();
    live.textContent = 'The run is ' + JSON.parse(event.data).state.replace('_', ' ') + ': reload the page for its results.';
  }});
}})();"
            )))
        }
    }
}

fn approval(gate: &Gate, issue: Option<&str>) -> Markup {
    let approvers = Approvers {
        permission: gate.approver_permission(),
        allow_self_approval: gate.allow_self_approval,
        requester: gate.requester.as_deref(),
    };
    let notes = risk_notes(&gate.files);
    html! {
        section aria-labelledby="approval" {
            h2 #approval { "Waiting for approval" }
            dl {
                dt { "Step" } dd { (gate.step) }
                dt { "Commit" } dd { code { (gate.head_sha) } }
                dt { "Who may approve" } dd { (who_may_approve(&approvers)) }
            }
            @if let Some(message) = &gate.message { p.wrap { (message) } }
            @if !notes.is_empty() {
                h3 { "Worth a second look" }
                ul { @for note in &notes { li { (note) } } }
            }
            p {
                "Approve or reject on GitHub: with the buttons of the "
                code { "conveyor" } " check run, or by commenting "
                code { "/conveyor approve" } " or " code { "/conveyor reject <reason>" }
                @if let Some(url) = issue { " on " a href=(url) { "the issue" } }
                "."
            }
        }
    }
}

fn files(files: &[ChangedFile]) -> Markup {
    html! {
        @if files.is_empty() {
            p.hint { "None." }
        } @else {
            div.table {
                table {
                    thead { tr { th scope="col" { "File" } th scope="col" { "Change" } th scope="col" { "Lines" } } }
                    tbody {
                        @for file in files {
                            tr {
                                td { code { (file.path) } }
                                td {
                                    @match &file.status {
                                        FileStatus::Added => "added",
                                        FileStatus::Modified => "modified",
                                        FileStatus::Deleted => "deleted",
                                        FileStatus::Renamed { from } => { "renamed from " code { (from) } },
                                        FileStatus::TypeChanged => "type changed",
                                    }
                                }
                                td {
                                    @match (file.lines_added, file.lines_deleted) {
                                        (Some(added), Some(deleted)) => { "+" (added) " −" (deleted) },
                                        _ => "binary",
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct StreamQuery {
    after: Option<i64>,
}

/// `GET /runs/{id}/log/stream?after=SEQ`: the run's log lines after `SEQ` (or the
/// `Last-Event-ID` an EventSource resumes with) as `line` events with the line's `seq` as
/// id, then an `end` event with the run's state once it stopped running.
pub async fn log_stream(
    viewer: Viewer,
    State(state): State<AppState>,
    Path(id): Path<i64>,
    Query(query): Query<StreamQuery>,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    run_or_404(&state, &viewer, id).await?;
    let resumed = headers
        .get("last-event-id")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse().ok());
    let after = resumed.or(query.after).unwrap_or(0).max(0);
    let events = futures_util::stream::unfold(
        Follow {
            pool: state.pool.clone(),
            id,
            after,
            read: VecDeque::new(),
            ended: false,
        },
        next_event,
    );
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response())
}

struct Follow {
    pool: PgPool,
    id: i64,
    after: i64,
    read: VecDeque<LogLine>,
    ended: bool,
}

async fn next_event(mut follow: Follow) -> Option<(Result<Event, Infallible>, Follow)> {
    loop {
        if let Some(line) = follow.read.pop_front() {
            let data = json!({ "seq": line.seq, "step": line.step, "attempt": line.attempt, "ts": line.ts, "line": line.line });
            let event = Event::default()
                .event("line")
                .id(line.seq.to_string())
                .data(data.to_string());
            return Some((Ok(event), follow));
        }
        if follow.ended {
            return None;
        }
        // The state first: a run not running once its last lines were read has no more.
        let read = async {
            let run = runs::get(&follow.pool, follow.id).await?;
            let lines = logs::page(&follow.pool, follow.id, follow.after, STREAM_BATCH).await?;
            Ok::<_, sqlx::Error>((run.map(|run| run.state), lines))
        };
        match read.await {
            Ok((_, lines)) if !lines.is_empty() => {
                follow.after = lines.last().map_or(follow.after, |line| line.seq);
                follow.read.extend(lines);
            }
            Ok((Some(state), _)) if state.is_live() => tokio::time::sleep(LOOK_EVERY).await,
            Ok((state, _)) => {
                follow.ended = true;
                let state = state.map_or("deleted", RunState::as_str);
                let event = Event::default()
                    .event("end")
                    .data(json!({ "state": state }).to_string());
                return Some((Ok(event), follow));
            }
            Err(err) => {
                tracing::warn!(error = %err, run_id = follow.id, "could not read the run's log; trying again");
                tokio::time::sleep(LOOK_EVERY).await;
            }
        }
    }
}
