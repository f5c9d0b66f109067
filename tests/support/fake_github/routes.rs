//! `/repos/{owner}/{repo}/...`: credentials, routing and the permission each route needs.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::Query;
use axum::http::request::Parts;
use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde_json::Value;

use super::apps::FORBIDDEN_TO_INTEGRATION;
use super::checks::{create_check_run, get_check_run, list_check_runs_for_ref, update_check_run};
use super::contents::get_contents;
use super::issues::{
    CommentKind, create_comment, create_reaction, get_comment, list_comments, list_reactions,
    update_comment,
};
use super::pulls::{create_pull, get_pull, list_pulls};
use super::repos::{collaborator_permission, get_ref};
use super::wire::{bad_credentials, gh_error, not_found, percent_decode, split_auth};
use super::{Shared, lock};

enum RepoRoute {
    CreateComment(u64),
    ListComments(u64),
    GetComment(u64),
    UpdateComment(u64),
    CreatePull,
    ListPulls,
    GetPull(u64),
    CreateCheckRun,
    GetCheckRun(u64),
    UpdateCheckRun(u64),
    ListCheckRunsForRef(String),
    CreateReaction(CommentKind, u64),
    ListReactions(CommentKind, u64),
    CollaboratorPermission(String),
    /// A path inside the repository; empty for its root.
    Contents(String),
    /// `git/ref/{ref}`: one reference, `heads/<branch>` say.
    GetRef(String),
}

impl RepoRoute {
    /// The permissions a token needs for the route: any one of them will do.
    fn needs(&self) -> &'static [(&'static str, &'static str)] {
        use RepoRoute::*;
        match self {
            // Issue comments are also pull request comments.
            CreateComment(_) | UpdateComment(_) => {
                &[("issues", "write"), ("pull_requests", "write")]
            }
            ListComments(_) | GetComment(_) => &[("issues", "read"), ("pull_requests", "read")],
            CreatePull => &[("pull_requests", "write")],
            ListPulls | GetPull(_) => &[("pull_requests", "read")],
            CreateCheckRun | UpdateCheckRun(_) => &[("checks", "write")],
            GetCheckRun(_) | ListCheckRunsForRef(_) => &[("checks", "read")],
            CreateReaction(CommentKind::Issue, _) => {
                &[("issues", "write"), ("pull_requests", "write")]
            }
            ListReactions(CommentKind::Issue, _) => {
                &[("issues", "read"), ("pull_requests", "read")]
            }
            CreateReaction(CommentKind::Review, _) => &[("pull_requests", "write")],
            ListReactions(CommentKind::Review, _) => &[("pull_requests", "read")],
            CollaboratorPermission(_) => &[("metadata", "read")],
            Contents(_) | GetRef(_) => &[("contents", "read")],
        }
    }
}

pub(super) fn parse_num(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Path segments joined by `/`, each percent-decoded, empty ones dropped.
fn decoded_path(segments: &[&str]) -> Option<String> {
    let decoded: Option<Vec<String>> = segments
        .iter()
        .filter(|s| !s.is_empty())
        .map(|s| percent_decode(s))
        .collect();
    Some(decoded?.join("/"))
}

fn repo_route(method: &Method, rest: &[&str]) -> Option<RepoRoute> {
    use RepoRoute::*;
    let m = method.as_str();
    Some(match (m, rest) {
        ("POST", ["issues", n, "comments"]) => CreateComment(parse_num(n)?),
        ("GET", ["issues", n, "comments"]) => ListComments(parse_num(n)?),
        ("GET", ["issues", "comments", id]) => GetComment(parse_num(id)?),
        // GitHub accepts POST as an alias for PATCH (octocrab relies on it).
        ("PATCH" | "POST", ["issues", "comments", id]) => UpdateComment(parse_num(id)?),
        ("POST", ["pulls"]) => CreatePull,
        ("GET", ["pulls"]) => ListPulls,
        ("GET", ["pulls", n]) => GetPull(parse_num(n)?),
        ("POST", ["check-runs"]) => CreateCheckRun,
        ("GET", ["check-runs", id]) => GetCheckRun(parse_num(id)?),
        ("PATCH" | "POST", ["check-runs", id]) => UpdateCheckRun(parse_num(id)?),
        // A ref may hold slashes (`feature/x`), encoded or not.
        ("GET", ["commits", git_ref @ .., "check-runs"]) if !git_ref.is_empty() => {
            ListCheckRunsForRef(decoded_path(git_ref)?)
        }
        ("POST", ["issues", "comments", id, "reactions"]) => {
            CreateReaction(CommentKind::Issue, parse_num(id)?)
        }
        ("GET", ["issues", "comments", id, "reactions"]) => {
            ListReactions(CommentKind::Issue, parse_num(id)?)
        }
        ("POST", ["pulls", "comments", id, "reactions"]) => {
            CreateReaction(CommentKind::Review, parse_num(id)?)
        }
        ("GET", ["pulls", "comments", id, "reactions"]) => {
            ListReactions(CommentKind::Review, parse_num(id)?)
        }
        ("GET", ["collaborators", user, "permission"]) => {
            CollaboratorPermission(percent_decode(user)?)
        }
        ("GET", ["contents", path @ ..]) => Contents(decoded_path(path)?),
        ("GET", ["git", "ref", reference @ ..]) if !reference.is_empty() => {
            GetRef(decoded_path(reference)?)
        }
        _ => return None,
    })
}

pub(super) async fn repos_api(
    shared: &Shared,
    parts: &Parts,
    auth: Option<&str>,
    owner: &str,
    repo: &str,
    rest: &[&str],
    body: Bytes,
) -> Response {
    // 1. Credentials are checked before anything else (even unknown routes).
    let scope = match auth {
        None => None,
        Some(value) => {
            let token = match split_auth(value) {
                Some((scheme, tok)) if scheme == "bearer" || scheme == "token" => tok,
                _ => return bad_credentials(),
            };
            match lock(shared).token_scope(token) {
                Some(scope) => Some(scope),
                None => return bad_credentials(),
            }
        }
    };
    // 2. Route.
    let Some(route) = repo_route(&parts.method, rest) else {
        return not_found();
    };
    // 3. Authentication required for the (private) repositories of the fake.
    let Some(scope) = scope else {
        return gh_error(StatusCode::UNAUTHORIZED, "Requires authentication");
    };
    // 4. Repository visible to the token? (Other repositories of the
    // installation are as invisible as anyone else's.)
    let (idx, git_dir) = {
        let inner = lock(shared);
        match inner.repo_index(owner, repo) {
            Some(i) if scope.reaches(&inner.repos[i]) => (i, inner.git_dir(owner, repo)),
            _ => return not_found(),
        }
    };
    // 5. Permission for what the route does.
    if !route
        .needs()
        .iter()
        .any(|(permission, level)| scope.allows(permission, level))
    {
        return gh_error(StatusCode::FORBIDDEN, FORBIDDEN_TO_INTEGRATION);
    }
    // 6. Body.
    let json_body = if parts.method == Method::POST || parts.method == Method::PATCH {
        if body.iter().all(u8::is_ascii_whitespace) {
            Value::Object(Default::default())
        } else {
            match serde_json::from_slice::<Value>(&body) {
                Ok(v @ Value::Object(_)) => v,
                Ok(_) => {
                    return gh_error(
                        StatusCode::BAD_REQUEST,
                        "Problems parsing JSON: body must be an object",
                    );
                }
                Err(_) => return gh_error(StatusCode::BAD_REQUEST, "Problems parsing JSON"),
            }
        }
    } else {
        Value::Null
    };
    let query: HashMap<String, String> = Query::try_from_uri(&parts.uri)
        .map(|Query(q)| q)
        .unwrap_or_default();

    match route {
        RepoRoute::CreateComment(issue) => create_comment(shared, idx, issue, &json_body),
        RepoRoute::ListComments(issue) => list_comments(shared, idx, issue, &query),
        RepoRoute::GetComment(id) => get_comment(shared, idx, id),
        RepoRoute::UpdateComment(id) => update_comment(shared, idx, id, &json_body),
        RepoRoute::CreatePull => create_pull(shared, idx, &git_dir, &json_body).await,
        RepoRoute::ListPulls => list_pulls(shared, idx, &git_dir, &query).await,
        RepoRoute::GetPull(n) => get_pull(shared, idx, &git_dir, n).await,
        RepoRoute::CreateCheckRun => create_check_run(shared, idx, &git_dir, &json_body).await,
        RepoRoute::GetCheckRun(id) => get_check_run(shared, idx, id),
        RepoRoute::UpdateCheckRun(id) => update_check_run(shared, idx, id, &json_body),
        RepoRoute::ListCheckRunsForRef(git_ref) => {
            list_check_runs_for_ref(shared, idx, &git_dir, &git_ref, &query).await
        }
        RepoRoute::CreateReaction(kind, id) => create_reaction(shared, idx, kind, id, &json_body),
        RepoRoute::ListReactions(kind, id) => list_reactions(shared, idx, kind, id, &query),
        RepoRoute::CollaboratorPermission(login) => collaborator_permission(shared, idx, &login),
        RepoRoute::Contents(path) => {
            get_contents(shared, idx, &git_dir, parts, &path, &query).await
        }
        RepoRoute::GetRef(reference) => get_ref(shared, idx, &git_dir, &reference).await,
    }
}
