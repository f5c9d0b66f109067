//! `/tasks/{id}`: a task with its runs, the tasks it waits for and holds back, and its trail.

use axum::extract::{Path, State};
use maud::{Markup, html};

use super::auth::Viewer;
use super::{PageError, layout};
use crate::engine::board_view::BoardTask;
use crate::engine::{deferral, event_feed, events, runs};
use crate::http::AppState;

pub async fn task(
    viewer: Viewer,
    State(state): State<AppState>,
    Path(id): Path<i64>,
) -> Result<Markup, PageError> {
    let task = viewer
        .visible_task(&state, id)
        .await?
        .ok_or_else(|| PageError::not_found(format!("There is no task {id}.")))?;
    let waiting = deferral::reason(&state.pool, id).await?;
    let runs = runs::for_task(&state.pool, id).await?;
    let trail = events::for_task(&state.pool, id).await?;
    let mut blocked_by = Vec::new();
    for &other in &task.blocked_by {
        blocked_by.push((other, viewer.visible_task(&state, other).await?));
    }
    let mut blocks = Vec::new();
    for &other in &task.blocks {
        blocks.push((other, viewer.visible_task(&state, other).await?));
    }
    let shown = task.state.unwrap_or(task.board_state);
    let body = html! {
        h1 { "#" (task.id) " " (task.title) }
        dl {
            dt { "State" } dd { (layout::state(shown.as_str())) " (queue: " (task.queue_state.as_str()) ")" }
            dt { "Repository" } dd { (task.repository) }
            dt { "Pipeline" } dd { code { (task.pipeline) } }
            @if let (Some(url), Some(number)) = (&task.github, task.issue_number) {
                dt { "Issue" } dd { a href=(url) { "#" (number) " on GitHub" } }
            }
            @if let Some(url) = &task.pull_request_url {
                dt { "Pull request" } dd { a href=(url) { (url) } }
            }
            @if let Some(by) = &task.requested_by { dt { "Requested by" } dd { "@" (by) } }
            @if !task.labels.is_empty() { dt { "Labels" } dd { (task.labels.join(", ")) } }
            dt { "Created" } dd { (layout::time(task.created_at)) }
            dt { "Updated" } dd { (layout::time(task.updated_at)) }
        }
        @if let Some(reason) = &task.blocked_reason {
            p.reason { strong { "Blocked: " } (reason) }
        }
        @if let Some(reason) = &waiting {
            p.reason { strong { "Waiting: " } (reason.trim_start_matches("waiting: ")) }
        }
        @if !task.description.is_empty() {
            h2 { "Description" }
            p.wrap { (task.description) }
        }
        h2 { "Runs" }
        @if runs.is_empty() {
            p.hint { "No run yet." }
        } @else {
            ul.plain {
                @for run in &runs {
                    li.card {
                        a href=(format!("/runs/{}", run.id)) { "Run " (run.id) }
                        " (attempt " (run.attempt) ") " (layout::state(run.state.as_str()))
                        p.meta {
                            "started " (layout::time(run.started_at))
                            @if let Some(at) = run.finished_at { ", finished " (layout::time(at)) }
                        }
                        @if run.error_type.is_some() || run.failure.is_some() {
                            p.reason {
                                @if let Some(kind) = &run.error_type { code { (kind) } " " }
                                @if let Some(failure) = &run.failure { (failure) }
                            }
                        }
                    }
                }
            }
        }
        h2 { "Dependencies" }
        (dependencies("Blocked by", &blocked_by))
        (dependencies("Blocks", &blocks))
        h2 { "Events" }
        @if trail.is_empty() {
            p.hint { "No events." }
        } @else {
            ol.timeline {
                @for event in &trail {
                    li {
                        (layout::time(event.at)) " " strong { (event_feed::event_type(&event.kind, &event.detail)) }
                        @if let Some(run) = event.run_id {
                            " " a href=(format!("/runs/{run}")) { "run " (run) }
                        }
                        br;
                        code.wrap { (event.detail.to_string()) }
                    }
                }
            }
        }
    };
    Ok(layout::page(
        &format!("Task {}", task.id),
        Some(&viewer),
        body,
    ))
}

fn dependencies(heading: &str, tasks: &[(i64, Option<BoardTask>)]) -> Markup {
    html! {
        h3 { (heading) }
        @if tasks.is_empty() {
            p.hint { "None." }
        } @else {
            ul {
                @for (id, task) in tasks {
                    li {
                        a href=(format!("/tasks/{id}")) { "#" (id) }
                        @if let Some(task) = task {
                            " " (task.title) " " (layout::state(task.state.unwrap_or(task.board_state).as_str()))
                        }
                    }
                }
            }
        }
    }
}
