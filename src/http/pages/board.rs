//! `/tasks`: the board, a column per state in seed 001's order, filtered by repository and
//! label; each card links to its issue or pull request and says why it waits.

use axum::extract::{Query, State};
use maud::{Markup, html};
use serde::Deserialize;

use super::auth::Viewer;
use super::{PageError, layout};
use crate::engine::board_view::{self, BoardTask, Filter};
use crate::engine::{TaskState, deferral, repositories};
use crate::http::AppState;

/// Cards shown in a column; its heading counts them all.
const COLUMN_TASKS: i64 = 50;

#[derive(Debug, Deserialize)]
pub struct BoardQuery {
    repo: Option<String>,
    label: Option<String>,
}

/// An empty field of the filter form means no filter.
fn given(value: &Option<String>) -> Option<String> {
    value
        .as_deref()
        .map(str::trim)
        .filter(|value| !value.is_empty())
        .map(str::to_owned)
}

pub async fn board(
    viewer: Viewer,
    State(state): State<AppState>,
    Query(query): Query<BoardQuery>,
) -> Result<Markup, PageError> {
    let visible = viewer.visible(&state).await?;
    let filter = Filter {
        repository: given(&query.repo),
        label: given(&query.label),
        only_repositories: visible.as_filter(),
        ..Filter::default()
    };
    let repositories: Vec<String> = repositories::names(&state.pool)
        .await?
        .into_iter()
        .map(|(owner, name)| format!("{owner}/{name}"))
        .filter(|repository| visible.includes(repository))
        .collect();
    let mut columns = Vec::new();
    for (column, count) in board_view::counts(&state.pool, &filter).await? {
        let mut cards = Vec::new();
        if count > 0 {
            let shown = Filter {
                state: Some(column),
                ..filter.clone()
            };
            for task in board_view::list(
                &state.pool,
                &shown,
                None,
                COLUMN_TASKS,
                &state.github_web_url,
            )
            .await?
            {
                let waiting = match task.queue_state {
                    TaskState::Queued => deferral::reason(&state.pool, task.id).await?,
                    TaskState::AwaitingApproval => Some("for an approval on GitHub".to_owned()),
                    TaskState::AwaitingInput => Some("for answers on GitHub".to_owned()),
                    _ => None,
                };
                cards.push(card(&task, waiting.as_deref()));
            }
        }
        columns.push((column, count, cards));
    }
    let body = html! {
        h1 { "Board" }
        form.filters method="get" action="/tasks" role="search" aria-label="Filter tasks" {
            div {
                label for="repo" { "Repository" }
                select #repo name="repo" {
                    option value="" { "All repositories" }
                    @for name in &repositories {
                        option value=(name) selected[filter.repository.as_deref() == Some(name.as_str())] {
                            (name)
                        }
                    }
                }
            }
            div {
                label for="label" { "Label" }
                input #label type="text" name="label" value=[filter.label.as_deref()];
            }
            button type="submit" { "Filter" }
            @if filter.repository.is_some() || filter.label.is_some() {
                a href="/tasks" { "Clear filters" }
            }
        }
        div.columns {
            @for (column, count, cards) in &columns {
                section.column aria-labelledby=(format!("column-{}", column.as_str())) {
                    h2 id=(format!("column-{}", column.as_str())) {
                        (column.as_str().replace('_', " ")) " (" (count) ")"
                    }
                    @if cards.is_empty() {
                        p.hint { "No tasks." }
                    } @else {
                        ul {
                            @for card in cards { li { (card) } }
                        }
                        @if *count > cards.len() as i64 {
                            p.hint { "Newest " (cards.len()) " shown." }
                        }
                    }
                }
            }
        }
    };
    Ok(layout::page("Board", Some(&viewer), body))
}

fn card(task: &BoardTask, waiting: Option<&str>) -> Markup {
    html! {
        article.card {
            h3 { a href=(format!("/tasks/{}", task.id)) { "#" (task.id) " " (task.title) } }
            p.meta {
                (task.repository) " · pipeline " code { (task.pipeline) }
                @if let Some(step) = &task.current_step { " · step " (step) }
            }
            @if task.github.is_some() || task.pull_request_url.is_some() {
                p.meta {
                    @if let (Some(url), Some(number)) = (&task.github, task.issue_number) {
                        a href=(url) { "Issue #" (number) " on GitHub" }
                    }
                    @if let Some(url) = &task.pull_request_url {
                        " " a href=(url) { "Pull request" }
                    }
                }
            }
            @if !task.labels.is_empty() {
                p.meta { "Labels: " (task.labels.join(", ")) }
            }
            @if let Some(reason) = &task.blocked_reason {
                p.reason { strong { "Blocked: " } (reason) }
            }
            @if let Some(reason) = waiting {
                p.reason { strong { "Waiting: " } (reason.trim_start_matches("waiting: ")) }
            }
        }
    }
}
