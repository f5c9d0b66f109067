//! What goes on the wire: GitHub's error bodies, common JSON shapes and request parsing.

use std::collections::HashMap;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::Response;
use base64::Engine as _;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};

use super::apps::APP_ID;
use super::repos::RepoRec;
use super::{BOT_LOGIN, BOT_USER_ID, DOCS_URL};

// ---------------------------------------------------------------------------
// misc helpers
// ---------------------------------------------------------------------------

pub(super) fn random_alnum(len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut out = String::with_capacity(len);
    while out.len() < len {
        for b in uuid::Uuid::new_v4().as_bytes() {
            if out.len() == len {
                break;
            }
            out.push(ALPHABET[usize::from(*b) % ALPHABET.len()] as char);
        }
    }
    out
}

pub(super) fn ts(dt: &DateTime<Utc>) -> String {
    dt.to_rfc3339_opts(SecondsFormat::Secs, true)
}

pub(super) fn opt_ts(dt: &Option<DateTime<Utc>>) -> Value {
    dt.as_ref().map_or(Value::Null, |d| Value::String(ts(d)))
}

pub(super) fn node_id(prefix: &str, id: u64) -> String {
    let raw = format!("0:{id}");
    format!(
        "{prefix}_{}",
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(raw)
    )
}

pub(super) fn json_response(status: StatusCode, value: &Value) -> Response {
    let mut resp = Response::new(Body::from(value.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    resp
}

pub(super) fn gh_error(status: StatusCode, message: &str) -> Response {
    json_response(
        status,
        &json!({
            "message": message,
            "documentation_url": DOCS_URL,
            "status": status.as_u16().to_string(),
        }),
    )
}

pub(super) fn not_found() -> Response {
    gh_error(StatusCode::NOT_FOUND, "Not Found")
}

pub(super) fn bad_credentials() -> Response {
    gh_error(StatusCode::UNAUTHORIZED, "Bad credentials")
}

pub(super) fn validation_failed(errors: Value) -> Response {
    json_response(
        StatusCode::UNPROCESSABLE_ENTITY,
        &json!({
            "message": "Validation Failed",
            "errors": errors,
            "documentation_url": DOCS_URL,
            "status": "422",
        }),
    )
}

/// GitHub's schema-validation style 422 (`Invalid request.\n\n...`).
pub(super) fn invalid_request(detail: &str) -> Response {
    gh_error(
        StatusCode::UNPROCESSABLE_ENTITY,
        &format!("Invalid request.\n\n{detail}"),
    )
}

pub(super) fn header_str<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Splits `Authorization: <scheme> <credentials>`.
pub(super) fn split_auth(value: &str) -> Option<(String, &str)> {
    let (scheme, rest) = value.trim().split_once(' ')?;
    Some((scheme.to_ascii_lowercase(), rest.trim()))
}

pub(super) fn str_field(body: &Value, key: &str) -> Option<String> {
    body.get(key).and_then(Value::as_str).map(str::to_string)
}

pub(super) fn parse_time(body: &Value, key: &str) -> Result<Option<DateTime<Utc>>, Response> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => DateTime::parse_from_rfc3339(s)
            .map(|d| Some(d.with_timezone(&Utc)))
            .map_err(|_| {
                invalid_request(&format!(
                    "For 'properties/{key}', \"{s}\" is not a valid date-time."
                ))
            }),
        Some(other) => Err(invalid_request(&format!(
            "For 'properties/{key}', {other} is not a string."
        ))),
    }
}

/// A string-or-null field; `Ok(None)` when absent.
pub(super) fn opt_string(body: &Value, key: &str) -> Result<Option<Option<String>>, Response> {
    match body.get(key) {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(None)),
        Some(Value::String(s)) => Ok(Some(Some(s.clone()))),
        Some(other) => Err(invalid_request(&format!(
            "For 'properties/{key}', {other} is not a string."
        ))),
    }
}

// ---------------------------------------------------------------------------
// JSON shapes
// ---------------------------------------------------------------------------

pub(super) fn user_json(base: &str, login: &str, id: u64, kind: &str) -> Value {
    let enc = login.replace('[', "%5B").replace(']', "%5D");
    let api = format!("{base}/users/{enc}");
    let (html_url, avatar) = if kind == "Bot" {
        (
            format!(
                "https://github.com/apps/{}",
                login.trim_end_matches("[bot]")
            ),
            format!("https://avatars.githubusercontent.com/in/{APP_ID}?v=4"),
        )
    } else {
        (
            format!("https://github.com/{login}"),
            format!("https://avatars.githubusercontent.com/u/{id}?v=4"),
        )
    };
    let node_prefix = match kind {
        "Bot" => "BOT",
        "Organization" => "O",
        _ => "U",
    };
    json!({
        "login": login,
        "id": id,
        "node_id": node_id(node_prefix, id),
        "avatar_url": avatar,
        "gravatar_id": "",
        "url": api,
        "html_url": html_url,
        "followers_url": format!("{api}/followers"),
        "following_url": format!("{api}/following{{/other_user}}"),
        "gists_url": format!("{api}/gists{{/gist_id}}"),
        "starred_url": format!("{api}/starred{{/owner}}{{/repo}}"),
        "subscriptions_url": format!("{api}/subscriptions"),
        "organizations_url": format!("{api}/orgs"),
        "repos_url": format!("{api}/repos"),
        "events_url": format!("{api}/events{{/privacy}}"),
        "received_events_url": format!("{api}/received_events"),
        "type": kind,
        "user_view_type": "public",
        "site_admin": false,
    })
}

pub(super) fn bot_json(base: &str) -> Value {
    user_json(base, BOT_LOGIN, BOT_USER_ID, "Bot")
}

/// The id of the account `login`: the App bot's, or a stable one made from the login (the
/// same in the fake's answers and in the payloads tests build).
pub fn account_id(login: &str) -> u64 {
    if login == BOT_LOGIN {
        BOT_USER_ID
    } else {
        owner_id(login)
    }
}

/// The account `login` as GitHub shows it: Conveyor's own bot, another App's bot (a login
/// ending in `[bot]`) or a person.
pub(super) fn account_json(base: &str, login: &str) -> Value {
    match login {
        BOT_LOGIN => bot_json(base),
        _ if login.ends_with("[bot]") => user_json(base, login, account_id(login), "Bot"),
        _ => user_json(base, login, account_id(login), "User"),
    }
}

pub(super) fn owner_id(login: &str) -> u64 {
    // Stable pseudo id derived from the login.
    login.bytes().fold(7_000_000u64, |acc, b| {
        acc.wrapping_mul(31).wrapping_add(u64::from(b))
    }) % 90_000_000
        + 10_000_000
}

pub(super) fn repo_json(base: &str, r: &RepoRec) -> Value {
    let full = format!("{}/{}", r.owner, r.name);
    let api = format!("{base}/repos/{full}");
    json!({
        "id": r.id,
        "node_id": node_id("R", r.id),
        "name": r.name,
        "full_name": full,
        "private": true,
        "owner": user_json(base, &r.owner, owner_id(&r.owner), "Organization"),
        "html_url": format!("https://github.com/{full}"),
        "description": null,
        "fork": false,
        "url": api,
        "issues_url": format!("{api}/issues{{/number}}"),
        "pulls_url": format!("{api}/pulls{{/number}}"),
        "issue_comment_url": format!("{api}/issues/comments{{/number}}"),
        "git_url": format!("git://github.com/{full}.git"),
        "clone_url": format!("{base}/{full}.git"),
        "created_at": "2024-01-01T00:00:00Z",
        "updated_at": "2024-01-01T00:00:00Z",
        "pushed_at": "2024-01-01T00:00:00Z",
        "default_branch": "main",
        "visibility": "private",
        "archived": false,
        "disabled": false,
    })
}

pub(super) fn app_json(base: &str) -> Value {
    json!({
        "id": APP_ID,
        "slug": "conveyor",
        "node_id": node_id("A", APP_ID),
        "client_id": "Iv1.0123456789abcdef",
        "owner": user_json(base, "conveyor-dev", 9_999_999, "Organization"),
        "name": "Conveyor",
        "description": "Turns issues and slash commands into pipeline runs",
        "external_url": "https://conveyor.invalid",
        "html_url": "https://github.com/apps/conveyor",
        "created_at": "2024-01-01T00:00:00Z",
        "updated_at": "2024-01-01T00:00:00Z",
        "permissions": {
            "checks": "write", "contents": "write", "issues": "write",
            "metadata": "read", "pull_requests": "write",
        },
        "events": ["check_run", "issue_comment", "issues", "pull_request"],
    })
}

pub(super) fn merge_objects(mut a: Value, b: Value) -> Value {
    if let (Value::Object(a_map), Value::Object(b_map)) = (&mut a, b) {
        a_map.extend(b_map);
    }
    a
}

/// GitHub's page size when a list request names none, and the largest it serves.
const PER_PAGE_DEFAULT: usize = 30;
const PER_PAGE_MAX: usize = 100;

/// One page of `items` as GitHub serves a list: `per_page` (30 unless asked, 100 at most) items
/// from page `page` (from 1), shaped by `shape` (given the page and the total), with a `Link`
/// header to the first, previous, next and last pages that exist.
pub(super) fn paginated(
    base_url: &str,
    path: &str,
    query: &HashMap<String, String>,
    items: Vec<Value>,
    shape: impl FnOnce(Vec<Value>, usize) -> Value,
) -> Response {
    let per_page = query
        .get("per_page")
        .and_then(|p| p.parse::<usize>().ok())
        .filter(|&p| p > 0)
        .unwrap_or(PER_PAGE_DEFAULT)
        .min(PER_PAGE_MAX);
    let page = query
        .get("page")
        .and_then(|p| p.parse::<usize>().ok())
        .filter(|&p| p > 0)
        .unwrap_or(1);
    let total = items.len();
    let last = total.div_ceil(per_page).max(1);
    let on_page: Vec<Value> = items
        .into_iter()
        .skip((page - 1).saturating_mul(per_page))
        .take(per_page)
        .collect();
    let mut resp = json_response(StatusCode::OK, &shape(on_page, total));
    let link_to = |n: usize| {
        let mut params: Vec<(&str, String)> = query
            .iter()
            .filter(|(k, _)| k.as_str() != "page" && k.as_str() != "per_page")
            .map(|(k, v)| (k.as_str(), v.clone()))
            .collect();
        params.sort();
        params.push(("per_page", per_page.to_string()));
        params.push(("page", n.to_string()));
        let query: Vec<String> = params
            .iter()
            .map(|(k, v)| format!("{k}={}", query_escape(v)))
            .collect();
        format!("<{base_url}{path}?{}>", query.join("&"))
    };
    let mut links = Vec::new();
    if page > 1 {
        links.push(format!("{}; rel=\"prev\"", link_to(page - 1)));
        links.push(format!("{}; rel=\"first\"", link_to(1)));
    }
    if page < last {
        links.push(format!("{}; rel=\"next\"", link_to(page + 1)));
        links.push(format!("{}; rel=\"last\"", link_to(last)));
    }
    if !links.is_empty()
        && let Ok(value) = HeaderValue::from_str(&links.join(", "))
    {
        resp.headers_mut().insert(header::LINK, value);
    }
    resp
}

/// Percent-encodes a query value (everything but unreserved characters).
fn query_escape(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `%XX`-decodes one path segment; `None` when that is not UTF-8.
pub(super) fn percent_decode(segment: &str) -> Option<String> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}
