//! Check runs and the check suites they belong to.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::apps::APP_ID;
use super::git::{commit_exists_async, resolve_commit_async};
use super::repos::RepoRec;
use super::wire::{
    app_json, gh_error, invalid_request, json_response, node_id, not_found, opt_string, opt_ts,
    paginated, parse_time, str_field, validation_failed,
};
use super::{FakeGitHub, Shared, lock};

/// GitHub's limit for check run `output.summary` / `output.text`.
const MAX_CHECK_OUTPUT_CHARS: usize = 65_535;
/// GitHub documents no limit for a check run's `output.title`; the fake holds Conveyor to the
/// conservative bound it keeps (the one for issue titles), so an unbounded title shows up here.
const MAX_CHECK_TITLE_CHARS: usize = 256;

/// GitHub's schema for check run buttons: at most three per run...
const MAX_ACTIONS: usize = 3;
/// ...each field at most this many characters.
const ACTION_FIELD_LIMITS: [(&str, usize); 3] =
    [("label", 20), ("description", 40), ("identifier", 20)];
/// Values of the list's `filter` parameter.
const LIST_FILTERS: &[&str] = &["latest", "all"];

const CHECK_STATUSES: &[&str] = &[
    "queued",
    "in_progress",
    "completed",
    "waiting",
    "requested",
    "pending",
];
const CHECK_CONCLUSIONS: &[&str] = &[
    "action_required",
    "cancelled",
    "failure",
    "neutral",
    "success",
    "skipped",
    "stale",
    "timed_out",
];

/// A check run as stored by the fake.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckRun {
    pub id: u64,
    pub name: String,
    pub head_sha: String,
    pub status: String,
    pub conclusion: Option<String>,
    pub output_title: Option<String>,
    pub output_summary: Option<String>,
    pub output_text: Option<String>,
    pub details_url: Option<String>,
    pub external_id: Option<String>,
    /// The buttons the run shows.
    pub actions: Vec<CheckRunAction>,
}

/// A button on a check run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckRunAction {
    pub label: String,
    pub description: String,
    pub identifier: String,
}

#[derive(Clone)]
pub(super) struct CheckRunRec {
    id: u64,
    name: String,
    head_sha: String,
    status: String,
    conclusion: Option<String>,
    started_at: Option<DateTime<Utc>>,
    completed_at: Option<DateTime<Utc>>,
    details_url: Option<String>,
    external_id: Option<String>,
    output_title: Option<String>,
    output_summary: Option<String>,
    output_text: Option<String>,
    actions: Vec<CheckRunAction>,
    suite_id: u64,
    /// Every state the run has been in, the current one last.
    history: Vec<CheckRun>,
}

impl CheckRunRec {
    fn snapshot(&self) -> CheckRun {
        CheckRun {
            id: self.id,
            name: self.name.clone(),
            head_sha: self.head_sha.clone(),
            status: self.status.clone(),
            conclusion: self.conclusion.clone(),
            output_title: self.output_title.clone(),
            output_summary: self.output_summary.clone(),
            output_text: self.output_text.clone(),
            details_url: self.details_url.clone(),
            external_id: self.external_id.clone(),
            actions: self.actions.clone(),
        }
    }
}

impl FakeGitHub {
    /// Check runs of the repo, in creation order.
    pub fn check_runs(&self, owner: &str, repo: &str) -> Vec<CheckRun> {
        let inner = lock(&self.shared);
        let Some(r) = inner.repo(owner, repo) else {
            return Vec::new();
        };
        r.check_runs.iter().map(CheckRunRec::snapshot).collect()
    }

    /// Every state check run `id` went through, from its creation to now: one entry per
    /// accepted create or update.
    pub fn check_run_history(&self, owner: &str, repo: &str, id: u64) -> Vec<CheckRun> {
        let inner = lock(&self.shared);
        inner
            .repo(owner, repo)
            .and_then(|r| r.check_runs.iter().find(|c| c.id == id))
            .map(|c| c.history.clone())
            .unwrap_or_default()
    }
}

fn check_run_json(base: &str, r: &RepoRec, c: &CheckRunRec) -> Value {
    let full = format!("{}/{}", r.owner, r.name);
    let api = format!("{base}/repos/{full}");
    let html = format!("https://github.com/{full}/runs/{}", c.id);
    json!({
        "id": c.id,
        "node_id": node_id("CR", c.id),
        "head_sha": c.head_sha,
        "external_id": c.external_id.clone().unwrap_or_default(),
        "url": format!("{api}/check-runs/{}", c.id),
        "html_url": html,
        "details_url": c.details_url.clone().unwrap_or_else(|| html.clone()),
        "status": c.status,
        "conclusion": c.conclusion,
        "started_at": opt_ts(&c.started_at),
        "completed_at": opt_ts(&c.completed_at),
        "output": {
            "title": c.output_title,
            "summary": c.output_summary,
            "text": c.output_text,
            "annotations_count": 0,
            "annotations_url": format!("{api}/check-runs/{}/annotations", c.id),
        },
        "name": c.name,
        "check_suite": {"id": c.suite_id},
        "app": app_json(base),
        "pull_requests": [],
    })
}

/// Fields of a check-run create/update request, validated.
struct CheckRunInput {
    name: Option<String>,
    status: Option<String>,
    conclusion: Option<String>,
    started_at: Option<DateTime<Utc>>,
    completed_at: Option<DateTime<Utc>>,
    details_url: Option<Option<String>>,
    external_id: Option<Option<String>>,
    /// (title, summary, text)
    output: Option<(String, String, Option<String>)>,
    /// Replaces the run's buttons when given.
    actions: Option<Vec<CheckRunAction>>,
}

fn parse_check_run_input(body: &Value) -> Result<CheckRunInput, Response> {
    let name = match body.get("name") {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => {
            return Err(invalid_request(&format!(
                "For 'properties/name', {other} is not a string."
            )));
        }
    };
    let status = match body.get("status") {
        None => None,
        Some(Value::String(s)) if CHECK_STATUSES.contains(&s.as_str()) => Some(s.clone()),
        Some(other) => {
            return Err(invalid_request(&format!(
                "For 'properties/status', {other} is not a member of {CHECK_STATUSES:?}."
            )));
        }
    };
    let conclusion = match body.get("conclusion") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if CHECK_CONCLUSIONS.contains(&s.as_str()) => Some(s.clone()),
        Some(other) => {
            return Err(invalid_request(&format!(
                "For 'properties/conclusion', {other} is not a member of {CHECK_CONCLUSIONS:?}."
            )));
        }
    };
    let started_at = parse_time(body, "started_at")?;
    let completed_at = parse_time(body, "completed_at")?;
    let details_url = opt_string(body, "details_url")?;
    let external_id = opt_string(body, "external_id")?;
    let output = match body.get("output") {
        None | Some(Value::Null) => None,
        Some(out @ Value::Object(_)) => {
            let mut fields = Vec::new();
            for key in ["title", "summary"] {
                match out.get(key) {
                    Some(Value::String(s)) => fields.push(s.clone()),
                    _ => {
                        return Err(invalid_request(&format!("\"{key}\" wasn't supplied.")));
                    }
                }
            }
            let text = match out.get("text") {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) => Some(s.clone()),
                Some(other) => {
                    return Err(invalid_request(&format!(
                        "For 'properties/text', {other} is not a string."
                    )));
                }
            };
            for value in [Some(&fields[1]), text.as_ref()].into_iter().flatten() {
                let n = value.chars().count();
                if n > MAX_CHECK_OUTPUT_CHARS {
                    return Err(invalid_request(&format!(
                        "Only {MAX_CHECK_OUTPUT_CHARS} characters are allowed; {n} were supplied."
                    )));
                }
            }
            if fields[0].chars().count() > MAX_CHECK_TITLE_CHARS {
                return Err(validation_failed(json!([{
                    "resource": "CheckRun",
                    "code": "custom",
                    "field": "title",
                    "message": format!("title is too long (maximum is {MAX_CHECK_TITLE_CHARS} characters)"),
                }])));
            }
            let summary = fields.pop().unwrap_or_default();
            let title = fields.pop().unwrap_or_default();
            Some((title, summary, text))
        }
        Some(other) => {
            return Err(invalid_request(&format!(
                "For 'properties/output', {other} is not an object."
            )));
        }
    };
    let actions = body.get("actions").map(parse_actions).transpose()?;
    Ok(CheckRunInput {
        name,
        status,
        conclusion,
        started_at,
        completed_at,
        details_url,
        external_id,
        output,
        actions,
    })
}

/// `actions` as GitHub's schema has them: at most three, each with a `label` of at most 20
/// characters, a `description` of at most 40 and an `identifier` of at most 20.
fn parse_actions(actions: &Value) -> Result<Vec<CheckRunAction>, Response> {
    let Value::Array(items) = actions else {
        return Err(invalid_request(&format!(
            "For 'properties/actions', {actions} is not an array."
        )));
    };
    if items.len() > MAX_ACTIONS {
        return Err(invalid_request(&format!(
            "For 'properties/actions', {} items were supplied; at most {MAX_ACTIONS} are allowed.",
            items.len()
        )));
    }
    items
        .iter()
        .map(|item| {
            let mut fields = Vec::new();
            for (key, max) in ACTION_FIELD_LIMITS {
                let value = match item.get(key) {
                    Some(Value::String(s)) => s,
                    Some(other) => {
                        return Err(invalid_request(&format!(
                            "For 'properties/{key}', {other} is not a string."
                        )));
                    }
                    None => return Err(invalid_request(&format!("\"{key}\" wasn't supplied."))),
                };
                let n = value.chars().count();
                if n > max {
                    return Err(invalid_request(&format!(
                        "For 'properties/{key}', \"{value}\" is too long ({n} characters; at most {max} are allowed)."
                    )));
                }
                fields.push(value.clone());
            }
            let [label, description, identifier] =
                <[String; 3]>::try_from(fields).expect("three fields");
            Ok(CheckRunAction {
                label,
                description,
                identifier,
            })
        })
        .collect()
}

/// Applies `input` to `rec` with GitHub's status/conclusion rules and records the state it
/// leads to in the run's history.
fn apply_check_run_input(rec: &mut CheckRunRec, input: CheckRunInput) -> Result<(), Response> {
    let now = Utc::now();
    if let Some(conclusion) = input.conclusion {
        // Providing a conclusion automatically sets the status to completed.
        rec.status = "completed".to_string();
        rec.conclusion = Some(conclusion);
        rec.completed_at = Some(input.completed_at.unwrap_or(now));
    } else if let Some(status) = input.status {
        if status == "completed" {
            if rec.conclusion.is_none() {
                return Err(invalid_request(
                    "\"conclusion\" wasn't supplied; it is required when \"status\" is \"completed\".",
                ));
            }
        } else {
            rec.conclusion = None;
            rec.completed_at = None;
        }
        rec.status = status;
    }
    if let Some(completed_at) = input.completed_at
        && rec.status == "completed"
    {
        rec.completed_at = Some(completed_at);
    }
    if let Some(started_at) = input.started_at {
        rec.started_at = Some(started_at);
    }
    if let Some(name) = input.name {
        rec.name = name;
    }
    if let Some(details_url) = input.details_url {
        rec.details_url = details_url;
    }
    if let Some(external_id) = input.external_id {
        rec.external_id = external_id;
    }
    if let Some((title, summary, text)) = input.output {
        rec.output_title = Some(title);
        rec.output_summary = Some(summary);
        rec.output_text = text;
    }
    if let Some(actions) = input.actions {
        rec.actions = actions;
    }
    let state = rec.snapshot();
    rec.history.push(state);
    Ok(())
}

pub(super) async fn create_check_run(
    shared: &Shared,
    idx: usize,
    git_dir: &Path,
    body: &Value,
) -> Response {
    for key in ["name", "head_sha"] {
        if !matches!(body.get(key), Some(Value::String(_))) {
            return invalid_request(&format!("\"{key}\" wasn't supplied."));
        }
    }
    let head_sha = str_field(body, "head_sha").unwrap_or_default();
    let input = match parse_check_run_input(body) {
        Ok(i) => i,
        Err(resp) => return resp,
    };
    if !commit_exists_async(git_dir, &head_sha).await {
        return gh_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            &format!("No commit found for SHA: {head_sha}"),
        );
    }
    let mut inner = lock(shared);
    let id = inner.alloc_id();
    let next_suite = inner.alloc_id();
    let suite_id = *inner.repos[idx]
        .check_suites
        .entry(head_sha.clone())
        .or_insert(next_suite);
    let mut rec = CheckRunRec {
        id,
        name: String::new(),
        head_sha,
        status: "queued".to_string(),
        conclusion: None,
        started_at: Some(Utc::now()),
        completed_at: None,
        details_url: None,
        external_id: None,
        output_title: None,
        output_summary: None,
        output_text: None,
        actions: Vec::new(),
        suite_id,
        history: Vec::new(),
    };
    if let Err(resp) = apply_check_run_input(&mut rec, input) {
        return resp;
    }
    let value = check_run_json(&inner.base_url, &inner.repos[idx], &rec);
    inner.repos[idx].check_runs.push(rec);
    json_response(StatusCode::CREATED, &value)
}

pub(super) fn get_check_run(shared: &Shared, idx: usize, id: u64) -> Response {
    let inner = lock(shared);
    let r = &inner.repos[idx];
    match r.check_runs.iter().find(|c| c.id == id) {
        Some(c) => json_response(StatusCode::OK, &check_run_json(&inner.base_url, r, c)),
        None => not_found(),
    }
}

pub(super) fn update_check_run(shared: &Shared, idx: usize, id: u64, body: &Value) -> Response {
    let mut inner = lock(shared);
    let inner = &mut *inner;
    let repo = &mut inner.repos[idx];
    let Some(pos) = repo.check_runs.iter().position(|c| c.id == id) else {
        return not_found();
    };
    let input = match parse_check_run_input(body) {
        Ok(i) => i,
        Err(resp) => return resp,
    };
    // Validate on a copy so a rejected update leaves the run untouched.
    let mut updated = repo.check_runs[pos].clone();
    if let Err(resp) = apply_check_run_input(&mut updated, input) {
        return resp;
    }
    let value = check_run_json(&inner.base_url, repo, &updated);
    repo.check_runs[pos] = updated;
    json_response(StatusCode::OK, &value)
}

/// `GET /repos/{owner}/{repo}/commits/{ref}/check-runs`: the runs on the commit `git_ref`
/// names (a SHA, a branch or a tag), filtered by `check_name`, `status`, `app_id` and
/// `filter` (`latest`, the default: only the newest run of each name; `all`), newest first.
pub(super) async fn list_check_runs_for_ref(
    shared: &Shared,
    idx: usize,
    git_dir: &Path,
    git_ref: &str,
    query: &HashMap<String, String>,
) -> Response {
    let filter = query.get("filter").map_or("latest", String::as_str);
    if !LIST_FILTERS.contains(&filter) {
        return invalid_request(&format!(
            "For 'filter', \"{filter}\" is not a member of {LIST_FILTERS:?}."
        ));
    }
    if let Some(status) = query.get("status")
        && !["queued", "in_progress", "completed"].contains(&status.as_str())
    {
        return invalid_request(&format!(
            "For 'status', \"{status}\" is not a member of [\"queued\", \"in_progress\", \"completed\"]."
        ));
    }
    let Some(sha) = resolve_commit_async(git_dir, git_ref).await else {
        return gh_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            &format!("No commit found for SHA: {git_ref}"),
        );
    };
    let inner = lock(shared);
    let r = &inner.repos[idx];
    let app_matches = query
        .get("app_id")
        .is_none_or(|id| id.parse::<u64>().ok() == Some(APP_ID));
    let mut runs: Vec<&CheckRunRec> = r
        .check_runs
        .iter()
        .filter(|c| app_matches && c.head_sha == sha)
        .filter(|c| query.get("check_name").is_none_or(|n| *n == c.name))
        .filter(|c| query.get("status").is_none_or(|s| *s == c.status))
        .collect();
    runs.sort_by_key(|c| std::cmp::Reverse(c.id));
    if filter == "latest" {
        let mut seen = HashSet::new();
        runs.retain(|c| seen.insert(c.name.clone()));
    }
    let items = runs
        .iter()
        .map(|c| check_run_json(&inner.base_url, r, c))
        .collect();
    let path = format!("/repos/{}/{}/commits/{git_ref}/check-runs", r.owner, r.name);
    paginated(
        &inner.base_url,
        &path,
        query,
        items,
        |page, total| json!({ "total_count": total, "check_runs": page }),
    )
}
