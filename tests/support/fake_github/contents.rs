//! `GET /repos/{owner}/{repo}/contents/{path}`, served from the bare repository.

use std::collections::HashMap;
use std::path::Path;

use axum::body::Body;
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use base64::Engine as _;
use serde_json::{Value, json};

use super::git::{git_bytes_async, resolve_commit_async};
use super::wire::{gh_error, header_str, json_response, not_found};
use super::{Shared, lock};

/// Files above this size are only served raw (or, as an `object`, without their content).
const MAX_JSON_BLOB_BYTES: usize = 1024 * 1024;
/// Files above this size are not served at all.
const MAX_BLOB_BYTES: usize = 100 * 1024 * 1024;
const BLOB_TOO_LARGE: &str = "This API returns blobs up to 1 MB in size. The requested blob is too large to fetch via the API, but you can use the Git Data API to request blobs up to 100 MB in size.";
/// The branch a request without `ref` reads.
const DEFAULT_BRANCH: &str = "main";

/// One entry of a git tree, as `git ls-tree -l` describes it.
struct Entry {
    mode: String,
    sha: String,
    size: usize,
    path: String,
}

impl Entry {
    /// GitHub's name for the kind of entry.
    fn kind(&self) -> &'static str {
        match self.mode.as_str() {
            "040000" => "dir",
            "120000" => "symlink",
            "160000" => "submodule",
            _ => "file",
        }
    }

    fn name(&self) -> &str {
        self.path.rsplit('/').next().unwrap_or(&self.path)
    }
}

/// How the caller asked to see the content (`Accept`).
#[derive(PartialEq)]
enum MediaType {
    Json,
    Raw,
    Object,
}

impl MediaType {
    fn of(parts: &Parts) -> Self {
        let accept = header_str(&parts.headers, &header::ACCEPT).unwrap_or("");
        if accept.contains("vnd.github.raw") || accept.contains("vnd.github.v3.raw") {
            Self::Raw
        } else if accept.contains("vnd.github.object") {
            Self::Object
        } else {
            Self::Json
        }
    }
}

/// The entries `git ls-tree -l` lists for `args` (NUL-terminated, so any path survives).
async fn ls_tree(git_dir: &Path, args: &[&str]) -> Option<Vec<Entry>> {
    let mut all = vec!["ls-tree", "-z", "-l"];
    all.extend_from_slice(args);
    let out = git_bytes_async(git_dir, &all).await?;
    let entries = out
        .split(|b| *b == 0)
        .filter(|record| !record.is_empty())
        .filter_map(|record| {
            let record = String::from_utf8_lossy(record);
            let (meta, path) = record.split_once('\t')?;
            let mut fields = meta.split_whitespace();
            let mode = fields.next()?.to_owned();
            let _kind = fields.next()?;
            let sha = fields.next()?.to_owned();
            let size = fields.next()?.parse().unwrap_or(0);
            Some(Entry {
                mode,
                sha,
                size,
                path: path.to_owned(),
            })
        })
        .collect();
    Some(entries)
}

/// Where a symbolic link at `link` pointing at `target` leads inside the repository, if it
/// stays inside.
fn link_target(link: &str, target: &str) -> Option<String> {
    if target.starts_with('/') {
        return None;
    }
    let mut parts: Vec<&str> = link.split('/').collect();
    parts.pop();
    for segment in target.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            other => parts.push(other),
        }
    }
    Some(parts.join("/"))
}

pub(super) async fn get_contents(
    shared: &Shared,
    idx: usize,
    git_dir: &Path,
    parts: &Parts,
    path: &str,
    query: &HashMap<String, String>,
) -> Response {
    if path.split('/').any(|s| s == "." || s == "..") {
        return not_found();
    }
    let git_ref = query
        .get("ref")
        .filter(|r| !r.is_empty())
        .map_or(DEFAULT_BRANCH, String::as_str);
    let Some(commit) = resolve_commit_async(git_dir, git_ref).await else {
        return gh_error(
            StatusCode::NOT_FOUND,
            &format!("No commit found for the ref {git_ref}"),
        );
    };
    let (base, full) = {
        let inner = lock(shared);
        let r = &inner.repos[idx];
        (inner.base_url.clone(), format!("{}/{}", r.owner, r.name))
    };
    let urls = Urls {
        base: &base,
        full: &full,
        git_ref,
    };
    let media = MediaType::of(parts);
    if path.is_empty() {
        let entries = ls_tree(git_dir, &[&commit]).await.unwrap_or_default();
        return directory(&urls, "", &entries, &media);
    }
    let Some(mut entry) = ls_tree(git_dir, &[&commit, "--", path])
        .await
        .and_then(|mut found| found.pop())
        .filter(|e| e.path == path)
    else {
        return not_found();
    };
    match entry.kind() {
        "dir" => {
            let listing = format!("{path}/");
            let entries = ls_tree(git_dir, &[&commit, "--", &listing])
                .await
                .unwrap_or_default();
            directory(&urls, path, &entries, &media)
        }
        "submodule" => json_response(StatusCode::OK, &urls.entry_json(&entry, None)),
        kind => {
            let mut bytes = git_bytes_async(git_dir, &["cat-file", "blob", &entry.sha])
                .await
                .unwrap_or_default();
            if kind == "symlink" {
                // A link to a file of the repository is answered with that file.
                let target = String::from_utf8_lossy(&bytes).into_owned();
                let resolved = match link_target(path, &target) {
                    Some(to) => ls_tree(git_dir, &[&commit, "--", &to])
                        .await
                        .and_then(|mut found| found.pop())
                        .filter(|e| e.path == to && e.kind() == "file"),
                    None => None,
                };
                match resolved {
                    Some(file) => {
                        bytes = git_bytes_async(git_dir, &["cat-file", "blob", &file.sha])
                            .await
                            .unwrap_or_default();
                        entry = file;
                    }
                    None => {
                        let mut value = urls.entry_json(&entry, None);
                        value["target"] = target.into();
                        return json_response(StatusCode::OK, &value);
                    }
                }
            }
            file(&urls, &entry, bytes, &media)
        }
    }
}

fn file(urls: &Urls<'_>, entry: &Entry, bytes: Vec<u8>, media: &MediaType) -> Response {
    if bytes.len() > MAX_BLOB_BYTES
        || (bytes.len() > MAX_JSON_BLOB_BYTES && *media == MediaType::Json)
    {
        return json_response(
            StatusCode::FORBIDDEN,
            &json!({
                "message": BLOB_TOO_LARGE,
                "errors": [{ "resource": "Blob", "field": "data", "code": "too_large" }],
                "documentation_url": "https://docs.github.com/rest/repos/contents#get-repository-content",
                "status": "403",
            }),
        );
    }
    match media {
        MediaType::Raw => {
            let content_type = if std::str::from_utf8(&bytes).is_ok() {
                "text/plain; charset=utf-8"
            } else {
                "application/octet-stream"
            };
            let mut resp = Response::new(Body::from(bytes));
            resp.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
            resp
        }
        MediaType::Json | MediaType::Object => {
            let content = (bytes.len() <= MAX_JSON_BLOB_BYTES).then_some(bytes.as_slice());
            json_response(StatusCode::OK, &urls.entry_json(entry, Some(content)))
        }
    }
}

/// A directory: a list of its entries, or with the `object` media type, one object holding
/// them as `entries`.
fn directory(urls: &Urls<'_>, path: &str, entries: &[Entry], media: &MediaType) -> Response {
    let items: Vec<Value> = entries.iter().map(|e| urls.entry_json(e, None)).collect();
    if *media != MediaType::Object {
        return json_response(StatusCode::OK, &Value::Array(items));
    }
    let name = path.rsplit('/').next().unwrap_or("");
    json_response(
        StatusCode::OK,
        &json!({
            "type": "dir",
            "name": name,
            "path": path,
            "size": 0,
            "url": urls.api(path),
            "html_url": urls.html("tree", path),
            "entries": items,
        }),
    )
}

/// The links GitHub puts on a content entry.
struct Urls<'a> {
    base: &'a str,
    full: &'a str,
    git_ref: &'a str,
}

impl Urls<'_> {
    fn api(&self, path: &str) -> String {
        format!(
            "{}/repos/{}/contents/{path}?ref={}",
            self.base, self.full, self.git_ref
        )
    }

    fn html(&self, view: &str, path: &str) -> String {
        format!(
            "https://github.com/{}/{view}/{}/{path}",
            self.full, self.git_ref
        )
    }

    /// An entry as GitHub lists it; `content` is `Some` for a file shown with its content
    /// (`Some(None)`: too large to include, so empty with encoding `none`).
    fn entry_json(&self, entry: &Entry, content: Option<Option<&[u8]>>) -> Value {
        let kind = entry.kind();
        let git_kind = if kind == "dir" { "trees" } else { "blobs" };
        let view = if kind == "dir" { "tree" } else { "blob" };
        let git_url = format!(
            "{}/repos/{}/git/{git_kind}/{}",
            self.base, self.full, entry.sha
        );
        let html_url = self.html(view, &entry.path);
        let download_url = (kind == "file").then(|| {
            format!(
                "https://raw.githubusercontent.com/{}/{}/{}",
                self.full, self.git_ref, entry.path
            )
        });
        let mut value = json!({
            "type": kind,
            "size": if kind == "dir" { 0 } else { entry.size },
            "name": entry.name(),
            "path": entry.path,
            "sha": entry.sha,
            "url": self.api(&entry.path),
            "git_url": git_url,
            "html_url": html_url,
            "download_url": download_url,
            "_links": { "self": self.api(&entry.path), "git": git_url, "html": html_url },
        });
        match content {
            Some(Some(bytes)) => {
                value["encoding"] = "base64".into();
                value["content"] = base64_lines(bytes).into();
            }
            Some(None) => {
                value["encoding"] = "none".into();
                value["content"] = "".into();
            }
            None => {}
        }
        value
    }
}

/// Base64 broken into lines of 60 characters, as GitHub sends file content.
fn base64_lines(bytes: &[u8]) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(bytes);
    let mut out = String::with_capacity(encoded.len() + encoded.len() / 60 + 1);
    for chunk in encoded.as_bytes().chunks(60) {
        out.push_str(std::str::from_utf8(chunk).expect("base64 is ASCII"));
        out.push('\n');
    }
    out
}
