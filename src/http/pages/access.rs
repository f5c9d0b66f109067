//! What a viewer may see and change, repository by repository. The operator (the token, or
//! a session it opened) may see and change everything. A person signed in with GitHub sees a
//! repository's tasks and runs when GitHub gives them [`authz::SEE_ON_PAGES`] on it, and
//! controls it with [`authz::CONTROL_ON_PAGES`]; GitHub is asked as the App, through the
//! same short-lived cache the commands' permission checks use.

use axum::http::StatusCode;
use futures_util::{StreamExt, TryStreamExt};

use super::PageError;
use super::auth::{Principal, Viewer};
use crate::authz::{self, Permission};
use crate::engine::board_view::{self, BoardTask};
use crate::engine::repositories;
use crate::github::GitHubError;
use crate::github::client::Repo;
use crate::http::AppState;

/// GitHub is asked about this many repositories at once while a board is drawn.
const CONCURRENT_LOOKUPS: usize = 8;

/// The repositories a viewer may see.
pub enum Visible {
    All,
    /// `owner/name` of each.
    Only(Vec<String>),
}

impl Visible {
    pub fn includes(&self, repository: &str) -> bool {
        match self {
            Visible::All => true,
            Visible::Only(shown) => shown
                .iter()
                .any(|name| name.eq_ignore_ascii_case(repository)),
        }
    }

    /// The list a query narrows to: `None` for every repository.
    pub fn as_filter(&self) -> Option<Vec<String>> {
        match self {
            Visible::All => None,
            Visible::Only(shown) => Some(shown.clone()),
        }
    }
}

impl Viewer {
    /// The viewer's permission on `owner/name`.
    pub async fn permission(
        &self,
        state: &AppState,
        owner: &str,
        name: &str,
    ) -> Result<Permission, PageError> {
        let login = match self.principal() {
            Principal::Operator => return Ok(Permission::Admin),
            Principal::GitHub { login, .. } => login,
        };
        let Some(installation) = repositories::installation_of(&state.pool, owner, name).await?
        else {
            return Ok(Permission::None);
        };
        let client = state.github.installation(installation, name);
        match state
            .lookups
            .permission(&client, Repo { owner, name }, login)
            .await
        {
            Ok(permission) => Ok(permission),
            // The App no longer reaches the repository, or GitHub knows no such person.
            Err(GitHubError::NotFound { .. }) => Ok(Permission::None),
            Err(err) => {
                tracing::warn!(error = %err, repository = %format!("{owner}/{name}"), "permission lookup for the pages failed");
                Err(PageError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "GitHub could not be asked what you may see; try again in a moment.",
                ))
            }
        }
    }

    /// Whether the viewer may see `owner/name`'s tasks and runs. A repository hidden from
    /// them is answered as missing, so its name does not leak either.
    pub async fn may_see(
        &self,
        state: &AppState,
        owner: &str,
        name: &str,
    ) -> Result<bool, PageError> {
        Ok(self.permission(state, owner, name).await? >= authz::SEE_ON_PAGES)
    }

    /// Task `id`, unless there is none or the viewer may not see its repository: both look
    /// the same to them.
    pub async fn visible_task(
        &self,
        state: &AppState,
        id: i64,
    ) -> Result<Option<BoardTask>, PageError> {
        let Some(task) = board_view::get(&state.pool, id, &state.github_web_url).await? else {
            return Ok(None);
        };
        let seen = self
            .may_see(state, &task.repo_owner, &task.repo_name)
            .await?;
        Ok(seen.then_some(task))
    }

    /// Whether the viewer may pause, resume and stop `owner/name`.
    pub async fn may_control(
        &self,
        state: &AppState,
        owner: &str,
        name: &str,
    ) -> Result<bool, PageError> {
        Ok(self.permission(state, owner, name).await? >= authz::CONTROL_ON_PAGES)
    }

    /// The repositories the viewer may see, of those Conveyor knows.
    pub async fn visible(&self, state: &AppState) -> Result<Visible, PageError> {
        if self.principal() == &Principal::Operator {
            return Ok(Visible::All);
        }
        let known = repositories::names(&state.pool).await?;
        let seen: Vec<Option<String>> = futures_util::stream::iter(known)
            .map(|(owner, name)| async move {
                let seen = self.may_see(state, &owner, &name).await?;
                Ok::<_, PageError>(seen.then(|| format!("{owner}/{name}")))
            })
            .buffered(CONCURRENT_LOOKUPS)
            .try_collect()
            .await?;
        Ok(Visible::Only(seen.into_iter().flatten().collect()))
    }
}
