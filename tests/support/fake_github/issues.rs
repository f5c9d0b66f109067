//! Issue comments (which are also pull request conversation comments) and the reactions on
//! them and on pull request review comments.

use std::collections::HashMap;

use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::repos::RepoRec;
use super::wire::{
    account_json, app_json, invalid_request, json_response, node_id, not_found, paginated, ts,
    validation_failed,
};
use super::{BOT_LOGIN, FakeGitHub, Inner, Shared, lock};

/// GitHub's limit for issue comment / pull request bodies.
pub(super) const MAX_BODY_CHARS: usize = 65_536;

/// The reactions GitHub knows.
const REACTIONS: &[&str] = &[
    "+1", "-1", "laugh", "confused", "heart", "hooray", "rocket", "eyes",
];

/// An issue comment as stored by the fake.
#[derive(Clone, Debug)]
pub struct Comment {
    pub id: u64,
    pub body: String,
    /// Earlier bodies, oldest first.
    pub edits: Vec<String>,
    pub user_login: String,
}

pub(super) struct CommentRec {
    id: u64,
    issue: u64,
    body: String,
    edits: Vec<String>,
    user_login: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    reactions: Vec<ReactionRec>,
}

pub(super) struct ReactionRec {
    id: u64,
    content: String,
    user_login: String,
    created_at: DateTime<Utc>,
}

/// The two kinds of comment GitHub reacts to by id, each under its own route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum CommentKind {
    /// `/issues/comments/{id}`: a comment in an issue's or pull request's conversation.
    Issue,
    /// `/pulls/comments/{id}`: a review comment on a pull request's diff.
    Review,
}

impl FakeGitHub {
    /// Comments on issue/PR `issue`, oldest first.
    pub fn comments(&self, owner: &str, repo: &str, issue: u64) -> Vec<Comment> {
        let inner = lock(&self.shared);
        let Some(r) = inner.repo(owner, repo) else {
            return Vec::new();
        };
        r.comments
            .iter()
            .filter(|c| c.issue == issue)
            .map(|c| Comment {
                id: c.id,
                body: c.body.clone(),
                edits: c.edits.clone(),
                user_login: c.user_login.clone(),
            })
            .collect()
    }

    /// Deletes a comment, as a person can on github.com.
    pub fn delete_comment(&self, owner: &str, repo: &str, id: u64) {
        let mut inner = lock(&self.shared);
        let idx = inner.repo_index(owner, repo).expect("known repository");
        inner.repos[idx].comments.retain(|c| c.id != id);
    }

    /// `login` comments on issue/PR `issue`, as a person (or, for a login ending in `[bot]`,
    /// an App) does on github.com; returns the comment's id.
    pub fn add_user_comment(
        &self,
        owner: &str,
        repo: &str,
        issue: u64,
        login: &str,
        body: &str,
    ) -> u64 {
        let mut inner = lock(&self.shared);
        let idx = inner.repo_index(owner, repo).expect("known repository");
        inner.know_user(login);
        let id = inner.alloc_id();
        let now = Utc::now();
        inner.repos[idx].comments.push(CommentRec {
            id,
            issue,
            body: body.to_owned(),
            edits: Vec::new(),
            user_login: login.to_owned(),
            created_at: now,
            updated_at: now,
            reactions: Vec::new(),
        });
        id
    }

    /// The reactions on comment `comment_id` (an issue comment or a review comment), oldest
    /// first, by their content (`+1`, `eyes`, ...).
    pub fn reactions(&self, owner: &str, repo: &str, comment_id: u64) -> Vec<String> {
        let mut inner = lock(&self.shared);
        let Some(idx) = inner.repo_index(owner, repo) else {
            return Vec::new();
        };
        for kind in [CommentKind::Issue, CommentKind::Review] {
            if let Some(reactions) = inner.reactions_mut(idx, kind, comment_id) {
                return reactions.iter().map(|r| r.content.clone()).collect();
            }
        }
        Vec::new()
    }
}

impl Inner {
    /// The reactions of comment `id` of `kind` in repository `idx`, if there is such a comment.
    fn reactions_mut(
        &mut self,
        idx: usize,
        kind: CommentKind,
        id: u64,
    ) -> Option<&mut Vec<ReactionRec>> {
        let repo = &mut self.repos[idx];
        match kind {
            CommentKind::Issue => repo
                .comments
                .iter_mut()
                .find(|c| c.id == id)
                .map(|c| &mut c.reactions),
            CommentKind::Review => repo
                .review_comments
                .iter_mut()
                .find(|c| c.id == id)
                .map(|c| &mut c.reactions),
        }
    }
}

/// The `reactions` summary GitHub puts on a comment.
pub(super) fn reaction_summary(url: String, reactions: &[ReactionRec]) -> Value {
    let mut summary = json!({ "url": url, "total_count": reactions.len() });
    for content in REACTIONS {
        summary[*content] = reactions
            .iter()
            .filter(|r| r.content == *content)
            .count()
            .into();
    }
    summary
}

fn comment_json(base: &str, r: &RepoRec, c: &CommentRec) -> Value {
    let full = format!("{}/{}", r.owner, r.name);
    let by_app = c.user_login == BOT_LOGIN;
    json!({
        "id": c.id,
        "node_id": node_id("IC", c.id),
        "url": format!("{base}/repos/{full}/issues/comments/{}", c.id),
        "html_url": format!("https://github.com/{full}/issues/{}#issuecomment-{}", c.issue, c.id),
        "issue_url": format!("{base}/repos/{full}/issues/{}", c.issue),
        "body": c.body,
        "user": account_json(base, &c.user_login),
        "created_at": ts(&c.created_at),
        "updated_at": ts(&c.updated_at),
        "author_association": r.author_association(&c.user_login),
        "performed_via_github_app": if by_app { app_json(base) } else { Value::Null },
        "reactions": reaction_summary(
            format!("{base}/repos/{full}/issues/comments/{}/reactions", c.id),
            &c.reactions,
        ),
    })
}

fn reaction_json(base: &str, r: &ReactionRec) -> Value {
    json!({
        "id": r.id,
        "node_id": node_id("REA", r.id),
        "user": account_json(base, &r.user_login),
        "content": r.content,
        "created_at": ts(&r.created_at),
    })
}

fn comment_body(body: &Value) -> Result<String, Response> {
    match body.get("body") {
        Some(Value::String(s)) => {
            if s.chars().count() > MAX_BODY_CHARS {
                Err(validation_failed(json!([{
                    "resource": "IssueComment",
                    "code": "custom",
                    "field": "body",
                    "message": format!("body is too long (maximum is {MAX_BODY_CHARS} characters)"),
                }])))
            } else {
                Ok(s.clone())
            }
        }
        _ => Err(validation_failed(json!([{
            "resource": "IssueComment",
            "code": "missing_field",
            "field": "body",
        }]))),
    }
}

pub(super) fn create_comment(shared: &Shared, idx: usize, issue: u64, body: &Value) -> Response {
    let text = match comment_body(body) {
        Ok(t) => t,
        Err(resp) => return resp,
    };
    let mut inner = lock(shared);
    let id = inner.alloc_id();
    let now = Utc::now();
    let rec = CommentRec {
        id,
        issue,
        body: text,
        edits: Vec::new(),
        user_login: BOT_LOGIN.to_string(),
        created_at: now,
        updated_at: now,
        reactions: Vec::new(),
    };
    let value = comment_json(&inner.base_url, &inner.repos[idx], &rec);
    inner.repos[idx].comments.push(rec);
    json_response(StatusCode::CREATED, &value)
}

pub(super) fn list_comments(
    shared: &Shared,
    idx: usize,
    issue: u64,
    query: &HashMap<String, String>,
) -> Response {
    let inner = lock(shared);
    let r = &inner.repos[idx];
    let items: Vec<Value> = r
        .comments
        .iter()
        .filter(|c| c.issue == issue)
        .map(|c| comment_json(&inner.base_url, r, c))
        .collect();
    let path = format!("/repos/{}/{}/issues/{issue}/comments", r.owner, r.name);
    paginated(&inner.base_url, &path, query, items, |page, _| {
        Value::Array(page)
    })
}

pub(super) fn get_comment(shared: &Shared, idx: usize, id: u64) -> Response {
    let inner = lock(shared);
    let r = &inner.repos[idx];
    match r.comments.iter().find(|c| c.id == id) {
        Some(c) => json_response(StatusCode::OK, &comment_json(&inner.base_url, r, c)),
        None => not_found(),
    }
}

pub(super) fn update_comment(shared: &Shared, idx: usize, id: u64, body: &Value) -> Response {
    let mut inner = lock(shared);
    if !inner.repos[idx].comments.iter().any(|c| c.id == id) {
        return not_found();
    }
    let text = match comment_body(body) {
        Ok(t) => t,
        Err(resp) => return resp,
    };
    let inner = &mut *inner;
    let repo = &mut inner.repos[idx];
    let pos = repo
        .comments
        .iter()
        .position(|c| c.id == id)
        .expect("checked above");
    let c = &mut repo.comments[pos];
    let previous = std::mem::replace(&mut c.body, text);
    c.edits.push(previous);
    c.updated_at = Utc::now();
    let value = comment_json(&inner.base_url, repo, &repo.comments[pos]);
    json_response(StatusCode::OK, &value)
}

/// `POST .../{issues|pulls}/comments/{id}/reactions`: the App reacts. 201 with a new
/// reaction; 200 with the one it already left when it reacts the same way again.
pub(super) fn create_reaction(
    shared: &Shared,
    idx: usize,
    kind: CommentKind,
    id: u64,
    body: &Value,
) -> Response {
    let content = match body.get("content") {
        Some(Value::String(c)) if REACTIONS.contains(&c.as_str()) => c.clone(),
        Some(other) => {
            return invalid_request(&format!(
                "For 'properties/content', {other} is not a member of {REACTIONS:?}."
            ));
        }
        None => return invalid_request("\"content\" wasn't supplied."),
    };
    let mut inner = lock(shared);
    let reaction_id = inner.alloc_id();
    let base = inner.base_url.clone();
    let Some(reactions) = inner.reactions_mut(idx, kind, id) else {
        return not_found();
    };
    if let Some(existing) = reactions
        .iter()
        .find(|r| r.user_login == BOT_LOGIN && r.content == content)
    {
        return json_response(StatusCode::OK, &reaction_json(&base, existing));
    }
    let reaction = ReactionRec {
        id: reaction_id,
        content,
        user_login: BOT_LOGIN.to_owned(),
        created_at: Utc::now(),
    };
    let value = reaction_json(&base, &reaction);
    reactions.push(reaction);
    json_response(StatusCode::CREATED, &value)
}

/// `GET .../{issues|pulls}/comments/{id}/reactions[?content=]`, oldest first, paginated.
pub(super) fn list_reactions(
    shared: &Shared,
    idx: usize,
    kind: CommentKind,
    id: u64,
    query: &HashMap<String, String>,
) -> Response {
    let wanted = query.get("content");
    if let Some(content) = wanted
        && !REACTIONS.contains(&content.as_str())
    {
        return invalid_request(&format!(
            "For 'content', \"{content}\" is not a member of {REACTIONS:?}."
        ));
    }
    let mut inner = lock(shared);
    let base = inner.base_url.clone();
    let Some(reactions) = inner.reactions_mut(idx, kind, id) else {
        return not_found();
    };
    let items: Vec<Value> = reactions
        .iter()
        .filter(|r| wanted.is_none_or(|w| *w == r.content))
        .map(|r| reaction_json(&base, r))
        .collect();
    let r = &inner.repos[idx];
    let area = match kind {
        CommentKind::Issue => "issues",
        CommentKind::Review => "pulls",
    };
    let path = format!(
        "/repos/{}/{}/{area}/comments/{id}/reactions",
        r.owner, r.name
    );
    paginated(&base, &path, query, items, |page, _| Value::Array(page))
}
