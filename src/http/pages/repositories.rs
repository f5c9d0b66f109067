//! `/repositories`: where each repository stands for the scheduler, with the operator's
//! pause, resume and stop (the changes `engine::repositories` allows, as the API's).

use axum::Form;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};

use super::auth::{CsrfOnly, Viewer};
use super::{PageError, layout};
use crate::engine::repositories::{self, ProjectState, ProjectStatus, RepositoryError};
use crate::http::AppState;

impl From<RepositoryError> for PageError {
    fn from(err: RepositoryError) -> Self {
        match err {
            RepositoryError::NotFound(_) => PageError::not_found(err.to_string()),
            RepositoryError::InvalidChange { .. } => {
                PageError::new(StatusCode::CONFLICT, err.to_string())
            }
            RepositoryError::Db(err) => {
                tracing::error!(error = %err, "page query failed");
                PageError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "The database is unavailable; try again in a moment.",
                )
            }
        }
    }
}

/// An operator's control, named as in its URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Control {
    Pause,
    Resume,
    Stop,
}

impl Control {
    const ALL: [Control; 3] = [Control::Pause, Control::Resume, Control::Stop];

    fn as_str(self) -> &'static str {
        match self {
            Control::Pause => "pause",
            Control::Resume => "resume",
            Control::Stop => "stop",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Control::Pause => "Pause",
            Control::Resume => "Resume",
            Control::Stop => "Stop and cancel its tasks",
        }
    }

    /// The state it leads to: offered where the table allows that change.
    fn to(self) -> ProjectState {
        match self {
            Control::Pause => ProjectState::Paused,
            Control::Resume => ProjectState::Running,
            Control::Stop => ProjectState::Stopping,
        }
    }
}

pub async fn list(viewer: Viewer, State(state): State<AppState>) -> Result<Markup, PageError> {
    let visible = viewer.visible(&state).await?;
    let mut conn = state.pool.acquire().await?;
    let mut shown: Vec<(String, String, ProjectStatus, bool)> = Vec::new();
    for (owner, name) in repositories::names(&mut *conn).await? {
        if !visible.includes(&format!("{owner}/{name}")) {
            continue;
        }
        let status = repositories::status(&mut conn, &owner, &name).await?;
        let controls = viewer.may_control(&state, &owner, &name).await?;
        shown.push((owner, name, status, controls));
    }
    let body = html! {
        h1 { "Repositories" }
        @if shown.is_empty() {
            p.hint { "No repository has had a task yet." }
        } @else {
            p.hint { "Queued: tasks waiting for a worker. Waiting: runs parked for an approval or an answer." }
            ul.plain {
                @for (owner, name, status, controls) in &shown {
                    li {
                        article.card aria-labelledby=(format!("repository-{owner}-{name}")) {
                            h2 id=(format!("repository-{owner}-{name}")) {
                                a href=(format!("/tasks?repo={owner}/{name}")) { (status.repository) }
                                " " (layout::state(status.state.as_str()))
                            }
                            dl {
                                dt { "Queued" } dd { (status.queue_depth) }
                                dt { "Running" } dd { (status.running) }
                                dt { "Waiting" } dd { (status.waiting) }
                            }
                            @if *controls {
                                (self::controls(&viewer, owner, name, status.state))
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(layout::page("Repositories", Some(&viewer), body))
}

fn controls(viewer: &Viewer, owner: &str, name: &str, state: ProjectState) -> Markup {
    html! {
        @for control in Control::ALL.into_iter().filter(|control| state.next().contains(&control.to())) {
            form method="post" action=(format!("/repositories/{owner}/{name}/{}", control.as_str())) {
                @if let Some(csrf) = viewer.csrf() {
                    input type="hidden" name="csrf" value=(csrf);
                }
                button type="submit" aria-label=(format!("{} {owner}/{name}", control.label())) {
                    (control.label())
                }
            }
            " "
        }
    }
}

/// `POST /repositories/{owner}/{name}/{pause|resume|stop}`, then back to the list.
pub async fn control(
    viewer: Viewer,
    State(state): State<AppState>,
    Path((owner, name, action)): Path<(String, String, String)>,
    Form(form): Form<CsrfOnly>,
) -> Result<Response, PageError> {
    viewer.check(form.csrf.as_deref())?;
    if !viewer.may_see(&state, &owner, &name).await? {
        return Err(PageError::not_found(format!(
            "There is no repository {owner}/{name} here."
        )));
    }
    if !viewer.may_control(&state, &owner, &name).await? {
        return Err(PageError::new(
            StatusCode::FORBIDDEN,
            format!(
                "Pausing, resuming or stopping {owner}/{name} needs {} permission on it.",
                crate::authz::CONTROL_ON_PAGES
            ),
        ));
    }
    let control = Control::ALL
        .into_iter()
        .find(|control| control.as_str() == action)
        .ok_or_else(|| PageError::not_found(format!("There is no control `{action}`.")))?;
    let mut tx = state.pool.begin().await?;
    match control {
        Control::Pause => repositories::set_paused(&mut tx, &owner, &name, true).await?,
        Control::Resume => repositories::set_paused(&mut tx, &owner, &name, false).await?,
        Control::Stop => {
            repositories::stop(&mut tx, &owner, &name).await?;
        }
    }
    tx.commit().await?;
    tracing::info!(repository = %format!("{owner}/{name}"), control = control.as_str(), by = viewer.who(), "repository control from the pages");
    Ok(Redirect::to("/repositories").into_response())
}
