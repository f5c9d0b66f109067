//! Pull requests (same-repository and from forks) and their review comments.

use std::collections::HashMap;
use std::path::Path;

use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::git::git_stdout;
use super::git::{branch_sha_async, git_succeeds_async};
use super::issues::{MAX_BODY_CHARS, ReactionRec};
use super::repos::RepoRec;
use super::wire::{
    account_json, json_response, merge_objects, node_id, not_found, owner_id, repo_json, str_field,
    ts, user_json, validation_failed,
};
use super::{BOT_LOGIN, FakeGitHub, Shared, lock};

/// GitHub's limit for issue and pull request titles.
const MAX_TITLE_CHARS: usize = 256;

/// Who opens pull requests that tests open as a person.
const PERSON_LOGIN: &str = "octocat";

/// A pull request as stored by the fake.
#[derive(Clone, Debug)]
pub struct PullRequest {
    pub number: u64,
    pub title: String,
    pub body: Option<String>,
    /// Head branch name (without the `owner:` prefix).
    pub head: String,
    /// The commit the head branch was at when GitHub last looked.
    pub head_sha: String,
    /// `owner/name` of the repository the head branch lives in (a fork's, for a fork).
    pub head_repo: String,
    pub base: String,
    pub state: String,
    pub merged: bool,
}

pub(super) struct PullRec {
    id: u64,
    number: u64,
    title: String,
    body: Option<String>,
    user_login: String,
    /// The owner of the repository the head branch lives in: the base repository's owner,
    /// or a fork's.
    head_owner: String,
    head_ref: String,
    head_sha: String,
    base_ref: String,
    base_sha: String,
    state: String,
    merged: bool,
    draft: bool,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl PullRec {
    fn is_from_fork(&self, repo_owner: &str) -> bool {
        !self.head_owner.eq_ignore_ascii_case(repo_owner)
    }
}

/// A review comment on a pull request's diff.
pub(super) struct ReviewCommentRec {
    pub(super) id: u64,
    pull: u64,
    body: String,
    user_login: String,
    created_at: DateTime<Utc>,
    pub(super) reactions: Vec<ReactionRec>,
}

impl FakeGitHub {
    /// Pull requests of the repo, in creation order.
    pub fn pull_requests(&self, owner: &str, repo: &str) -> Vec<PullRequest> {
        let inner = lock(&self.shared);
        let Some(r) = inner.repo(owner, repo) else {
            return Vec::new();
        };
        r.pulls
            .iter()
            .map(|p| PullRequest {
                number: p.number,
                title: p.title.clone(),
                body: p.body.clone(),
                head: p.head_ref.clone(),
                head_sha: p.head_sha.clone(),
                head_repo: format!("{}/{}", p.head_owner, r.name),
                base: p.base_ref.clone(),
                state: p.state.clone(),
                merged: p.merged,
            })
            .collect()
    }

    /// A person opens a pull request from `head_branch` of the same repository into `base`,
    /// both existing branches; returns its number.
    pub fn open_pull_request_from(
        &self,
        owner: &str,
        repo: &str,
        head_branch: &str,
        base: &str,
        title: &str,
    ) -> u64 {
        let head_sha = self
            .branch_sha(owner, repo, head_branch)
            .unwrap_or_else(|| panic!("no branch {head_branch}"));
        self.open_pull(owner, repo, owner, head_branch, &head_sha, base, title)
    }

    /// Someone opens a pull request from `head_branch` of their fork `fork_owner/<repo>`, at
    /// commit `head_sha`, into `base`; returns its number. The fork itself is not modelled:
    /// its head stays at `head_sha`.
    #[allow(clippy::too_many_arguments)]
    pub fn open_fork_pull_request(
        &self,
        owner: &str,
        repo: &str,
        fork_owner: &str,
        head_branch: &str,
        head_sha: &str,
        base: &str,
        title: &str,
    ) -> u64 {
        self.open_pull(owner, repo, fork_owner, head_branch, head_sha, base, title)
    }

    #[allow(clippy::too_many_arguments)]
    fn open_pull(
        &self,
        owner: &str,
        repo: &str,
        head_owner: &str,
        head_branch: &str,
        head_sha: &str,
        base: &str,
        title: &str,
    ) -> u64 {
        let base_sha = self
            .branch_sha(owner, repo, base)
            .unwrap_or_else(|| panic!("no branch {base}"));
        let author = if head_owner.eq_ignore_ascii_case(owner) {
            PERSON_LOGIN
        } else {
            head_owner
        };
        let mut inner = lock(&self.shared);
        let idx = inner.repo_index(owner, repo).expect("known repository");
        inner.know_user(author);
        let id = inner.alloc_id();
        let now = Utc::now();
        let r = &mut inner.repos[idx];
        let number = r.next_number;
        r.next_number += 1;
        r.pulls.push(PullRec {
            id,
            number,
            title: title.to_owned(),
            body: None,
            user_login: author.to_owned(),
            head_owner: head_owner.to_owned(),
            head_ref: head_branch.to_owned(),
            head_sha: head_sha.to_owned(),
            base_ref: base.to_owned(),
            base_sha,
            state: "open".to_owned(),
            merged: false,
            draft: false,
            created_at: now,
            updated_at: now,
        });
        number
    }

    /// Closes pull request `number`, merging it first when `merged` (its head commit becomes
    /// the base branch's, as a fast-forward would make it).
    pub fn close_pull_request(&self, owner: &str, repo: &str, number: u64, merged: bool) {
        let git_dir = self.git_dir(owner, repo);
        let mut inner = lock(&self.shared);
        let idx = inner.repo_index(owner, repo).expect("known repository");
        let p = inner.repos[idx]
            .pulls
            .iter_mut()
            .find(|p| p.number == number)
            .expect("known pull request");
        if merged {
            let base = format!("refs/heads/{}", p.base_ref);
            git_stdout(&git_dir, &["update-ref", &base, &p.head_sha])
                .expect("the head commit is in the repository");
        }
        p.state = "closed".to_owned();
        p.merged = merged;
        p.updated_at = Utc::now();
    }

    /// `login` comments on the diff of pull request `pull`; returns the review comment's id.
    pub fn add_review_comment(
        &self,
        owner: &str,
        repo: &str,
        pull: u64,
        login: &str,
        body: &str,
    ) -> u64 {
        let mut inner = lock(&self.shared);
        let idx = inner.repo_index(owner, repo).expect("known repository");
        inner.know_user(login);
        let id = inner.alloc_id();
        inner.repos[idx].review_comments.push(ReviewCommentRec {
            id,
            pull,
            body: body.to_owned(),
            user_login: login.to_owned(),
            created_at: Utc::now(),
            reactions: Vec::new(),
        });
        id
    }
}

fn pull_json(base: &str, r: &RepoRec, p: &PullRec) -> Value {
    let full = format!("{}/{}", r.owner, r.name);
    let api = format!("{base}/repos/{full}");
    let html = format!("https://github.com/{full}/pull/{}", p.number);
    let owner = user_json(base, &r.owner, owner_id(&r.owner), "Organization");
    let repo = repo_json(base, r);
    let closed_at = if p.state == "closed" {
        Value::String(ts(&p.updated_at))
    } else {
        Value::Null
    };
    let links = json!({
        "self": {"href": format!("{api}/pulls/{}", p.number)},
        "html": {"href": html},
        "issue": {"href": format!("{api}/issues/{}", p.number)},
        "comments": {"href": format!("{api}/issues/{}/comments", p.number)},
        "review_comments": {"href": format!("{api}/pulls/{}/comments", p.number)},
        "review_comment": {"href": format!("{api}/pulls/comments{{/number}}")},
        "commits": {"href": format!("{api}/pulls/{}/commits", p.number)},
        "statuses": {"href": format!("{api}/statuses/{}", p.head_sha)},
    });
    let head = if p.is_from_fork(&r.owner) {
        let mut fork = repo_json(base, r);
        let fork_owner = user_json(base, &p.head_owner, owner_id(&p.head_owner), "User");
        let full_name = format!("{}/{}", p.head_owner, r.name);
        fork["full_name"] = full_name.clone().into();
        fork["fork"] = true.into();
        fork["owner"] = fork_owner.clone();
        fork["html_url"] = format!("https://github.com/{full_name}").into();
        fork["url"] = format!("{base}/repos/{full_name}").into();
        json!({
            "label": format!("{}:{}", p.head_owner, p.head_ref),
            "ref": p.head_ref,
            "sha": p.head_sha,
            "user": fork_owner,
            "repo": fork,
        })
    } else {
        json!({
            "label": format!("{}:{}", r.owner, p.head_ref),
            "ref": p.head_ref,
            "sha": p.head_sha,
            "user": owner.clone(),
            "repo": repo.clone(),
        })
    };
    let base_obj = json!({
        "label": format!("{}:{}", r.owner, p.base_ref),
        "ref": p.base_ref,
        "sha": p.base_sha,
        "user": owner,
        "repo": repo,
    });
    let value = json!({
        "url": format!("{api}/pulls/{}", p.number),
        "id": p.id,
        "node_id": node_id("PR", p.id),
        "html_url": html,
        "diff_url": format!("{html}.diff"),
        "patch_url": format!("{html}.patch"),
        "issue_url": format!("{api}/issues/{}", p.number),
        "commits_url": format!("{api}/pulls/{}/commits", p.number),
        "review_comments_url": format!("{api}/pulls/{}/comments", p.number),
        "review_comment_url": format!("{api}/pulls/comments{{/number}}"),
        "comments_url": format!("{api}/issues/{}/comments", p.number),
        "statuses_url": format!("{api}/statuses/{}", p.head_sha),
        "number": p.number,
        "state": p.state,
        "locked": false,
        "title": p.title,
        "user": account_json(base, &p.user_login),
        "body": p.body,
        "labels": [],
        "milestone": null,
        "active_lock_reason": null,
        "created_at": ts(&p.created_at),
        "updated_at": ts(&p.updated_at),
        "closed_at": closed_at,
        "merged_at": if p.merged { Value::String(ts(&p.updated_at)) } else { Value::Null },
        "merge_commit_sha": null,
        "assignee": null,
        "assignees": [],
        "requested_reviewers": [],
        "requested_teams": [],
    });
    let more = json!({
        "head": head,
        "base": base_obj,
        "_links": links,
        "author_association": r.author_association(&p.user_login),
        "auto_merge": null,
        "draft": p.draft,
        "merged": p.merged,
        "mergeable": null,
        "rebaseable": null,
        "mergeable_state": "unknown",
        "merged_by": null,
        "comments": 0,
        "review_comments": 0,
        "maintainer_can_modify": false,
        "commits": 1,
        "additions": 0,
        "deletions": 0,
        "changed_files": 0,
    });
    merge_objects(value, more)
}

pub(super) async fn create_pull(
    shared: &Shared,
    idx: usize,
    git_dir: &Path,
    body: &Value,
) -> Response {
    let mut missing = Vec::new();
    for field in ["title", "head", "base"] {
        match body.get(field) {
            Some(Value::String(s)) if !s.is_empty() => {}
            _ => missing.push(json!({
                "resource": "PullRequest",
                "field": field,
                "code": "missing_field",
            })),
        }
    }
    if !missing.is_empty() {
        return validation_failed(Value::Array(missing));
    }
    let title = str_field(body, "title").unwrap_or_default();
    if title.chars().count() > MAX_TITLE_CHARS {
        return validation_failed(json!([{
            "resource": "Issue",
            "code": "custom",
            "field": "title",
            "message": format!("title is too long (maximum is {MAX_TITLE_CHARS} characters)"),
        }]));
    }
    let head_param = str_field(body, "head").unwrap_or_default();
    let base_ref = str_field(body, "base").unwrap_or_default();
    let pr_body = body.get("body").and_then(Value::as_str).map(str::to_string);
    let draft = body.get("draft").and_then(Value::as_bool).unwrap_or(false);
    if pr_body
        .as_ref()
        .is_some_and(|b| b.chars().count() > MAX_BODY_CHARS)
    {
        return validation_failed(json!([{
            "resource": "Issue",
            "code": "custom",
            "field": "body",
            "message": format!("body is too long (maximum is {MAX_BODY_CHARS} characters)"),
        }]));
    }

    let repo_owner = lock(shared).repos[idx].owner.clone();
    // `head` is either `branch` or `owner:branch`; forks are not modelled.
    let head_ref = match head_param.split_once(':') {
        Some((o, b)) if o.eq_ignore_ascii_case(&repo_owner) => Some(b.to_string()),
        Some(_) => None,
        None => Some(head_param.clone()),
    };
    let base_sha = branch_sha_async(git_dir, &base_ref).await;
    let Some(base_sha) = base_sha else {
        return validation_failed(json!([{
            "resource": "PullRequest",
            "field": "base",
            "code": "invalid",
        }]));
    };
    let head = match &head_ref {
        Some(h) => branch_sha_async(git_dir, h)
            .await
            .map(|sha| (h.clone(), sha)),
        None => None,
    };
    let Some((head_ref, head_sha)) = head else {
        return validation_failed(json!([{
            "resource": "PullRequest",
            "field": "head",
            "code": "invalid",
        }]));
    };
    {
        let inner = lock(shared);
        let r = &inner.repos[idx];
        if r.pulls.iter().any(|p| {
            p.state == "open"
                && !p.is_from_fork(&r.owner)
                && p.head_ref == head_ref
                && p.base_ref == base_ref
        }) {
            return validation_failed(json!([{
                "resource": "PullRequest",
                "code": "custom",
                "message": format!("A pull request already exists for {}:{}.", r.owner, head_ref),
            }]));
        }
    }
    let no_commits = head_sha == base_sha
        || git_succeeds_async(
            git_dir,
            &["merge-base", "--is-ancestor", &head_sha, &base_sha],
        )
        .await;
    if no_commits {
        return validation_failed(json!([{
            "resource": "PullRequest",
            "code": "custom",
            "message": format!("No commits between {base_ref} and {head_ref}"),
        }]));
    }

    let mut inner = lock(shared);
    let id = inner.alloc_id();
    let now = Utc::now();
    let repo = &mut inner.repos[idx];
    let number = repo.next_number;
    repo.next_number += 1;
    let head_owner = repo.owner.clone();
    repo.pulls.push(PullRec {
        id,
        number,
        title,
        body: pr_body,
        user_login: BOT_LOGIN.to_owned(),
        head_owner,
        head_ref,
        head_sha,
        base_ref,
        base_sha,
        state: "open".to_string(),
        merged: false,
        draft,
        created_at: now,
        updated_at: now,
    });
    let r = &inner.repos[idx];
    let value = pull_json(&inner.base_url, r, r.pulls.last().expect("just pushed"));
    json_response(StatusCode::CREATED, &value)
}

/// Refreshes the head/base shas of open PRs from the bare repo (GitHub
/// updates them when branches move); a fork's head stays where it was.
async fn refresh_pull_shas(shared: &Shared, idx: usize, git_dir: &Path, numbers: &[u64]) {
    let refs: Vec<(u64, Option<String>, String)> = {
        let inner = lock(shared);
        let r = &inner.repos[idx];
        r.pulls
            .iter()
            .filter(|p| p.state == "open" && numbers.contains(&p.number))
            .map(|p| {
                let head = (!p.is_from_fork(&r.owner)).then(|| p.head_ref.clone());
                (p.number, head, p.base_ref.clone())
            })
            .collect()
    };
    for (number, head_ref, base_ref) in refs {
        let head_sha = match head_ref {
            Some(head_ref) => branch_sha_async(git_dir, &head_ref).await,
            None => None,
        };
        let base_sha = branch_sha_async(git_dir, &base_ref).await;
        let mut inner = lock(shared);
        if let Some(p) = inner.repos[idx]
            .pulls
            .iter_mut()
            .find(|p| p.number == number)
        {
            if let Some(sha) = head_sha {
                p.head_sha = sha;
            }
            if let Some(sha) = base_sha {
                p.base_sha = sha;
            }
        }
    }
}

pub(super) async fn list_pulls(
    shared: &Shared,
    idx: usize,
    git_dir: &Path,
    query: &HashMap<String, String>,
) -> Response {
    let state = query.get("state").map(String::as_str).unwrap_or("open");
    if !matches!(state, "open" | "closed" | "all") {
        return validation_failed(json!([{
            "resource": "PullRequest",
            "field": "state",
            "code": "invalid",
        }]));
    }
    // Like GitHub, a `head` filter without the `owner:` prefix is ignored.
    let head_filter = query
        .get("head")
        .and_then(|h| h.split_once(':'))
        .map(|(o, b)| (o.to_string(), b.to_string()));
    let base_filter = query.get("base").cloned();

    let numbers: Vec<u64> = {
        let inner = lock(shared);
        let r = &inner.repos[idx];
        r.pulls
            .iter()
            .filter(|p| state == "all" || p.state == state)
            .filter(|p| {
                head_filter
                    .as_ref()
                    .is_none_or(|(o, b)| o.eq_ignore_ascii_case(&p.head_owner) && *b == p.head_ref)
            })
            .filter(|p| base_filter.as_ref().is_none_or(|b| *b == p.base_ref))
            .map(|p| p.number)
            .collect()
    };
    refresh_pull_shas(shared, idx, git_dir, &numbers).await;
    let inner = lock(shared);
    let r = &inner.repos[idx];
    // Default sort: created, descending.
    let items: Vec<Value> = r
        .pulls
        .iter()
        .rev()
        .filter(|p| numbers.contains(&p.number))
        .map(|p| pull_json(&inner.base_url, r, p))
        .collect();
    json_response(StatusCode::OK, &Value::Array(items))
}

pub(super) async fn get_pull(shared: &Shared, idx: usize, git_dir: &Path, number: u64) -> Response {
    refresh_pull_shas(shared, idx, git_dir, &[number]).await;
    let inner = lock(shared);
    let r = &inner.repos[idx];
    match r.pulls.iter().find(|p| p.number == number) {
        Some(p) => json_response(StatusCode::OK, &pull_json(&inner.base_url, r, p)),
        None => not_found(),
    }
}
