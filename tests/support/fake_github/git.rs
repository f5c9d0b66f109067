//! git: helpers that run it, and the smart-HTTP server (`git http-backend`).

use std::path::Path;
use std::process::Command as StdCommand;

use axum::body::{Body, Bytes};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::Response;
use base64::Engine as _;
use tokio::io::AsyncWriteExt as _;

use super::apps::TokenScope;
use super::wire::{header_str, split_auth};
use super::{BOT_LOGIN, Shared, lock};

// ---------------------------------------------------------------------------
// git helpers
// ---------------------------------------------------------------------------

/// A `git` command isolated from the user's/system's configuration.
pub(super) fn git_cmd(dir: &Path, args: &[&str]) -> StdCommand {
    let mut cmd = StdCommand::new("git");
    cmd.current_dir(dir)
        .args(args)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_AUTHOR_NAME", "Fake GitHub")
        .env("GIT_AUTHOR_EMAIL", "fake@github.invalid")
        .env("GIT_COMMITTER_NAME", "Fake GitHub")
        .env("GIT_COMMITTER_EMAIL", "fake@github.invalid");
    for var in [
        "GIT_DIR",
        "GIT_WORK_TREE",
        "GIT_INDEX_FILE",
        "GIT_CONFIG",
        "GIT_CONFIG_COUNT",
        "GIT_CONFIG_PARAMETERS",
        "GIT_OBJECT_DIRECTORY",
        "GIT_ALTERNATE_OBJECT_DIRECTORIES",
        "GIT_NAMESPACE",
        "GIT_PROTOCOL",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

pub(super) fn run_git(dir: &Path, args: &[&str]) {
    let out = git_cmd(dir, args)
        .output()
        .unwrap_or_else(|e| panic!("failed to run git {args:?}: {e}"));
    assert!(
        out.status.success(),
        "git {args:?} in {} failed: {}{}",
        dir.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

pub(super) fn git_stdout(dir: &Path, args: &[&str]) -> Option<String> {
    let out = git_cmd(dir, args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

async fn git_stdout_async(dir: &Path, args: &[&str]) -> Option<String> {
    let out = tokio::process::Command::from(git_cmd(dir, args))
        .output()
        .await
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The raw bytes `git args` prints, when it succeeds.
pub(super) async fn git_bytes_async(dir: &Path, args: &[&str]) -> Option<Vec<u8>> {
    let out = tokio::process::Command::from(git_cmd(dir, args))
        .output()
        .await
        .ok()?;
    out.status.success().then_some(out.stdout)
}

pub(super) async fn git_succeeds_async(dir: &Path, args: &[&str]) -> bool {
    tokio::process::Command::from(git_cmd(dir, args))
        .output()
        .await
        .map(|o| o.status.success())
        .unwrap_or(false)
}

pub(super) async fn branch_sha_async(dir: &Path, branch: &str) -> Option<String> {
    if branch.is_empty() {
        return None;
    }
    let spec = format!("refs/heads/{branch}^{{commit}}");
    git_stdout_async(dir, &["rev-parse", "--verify", "--quiet", &spec]).await
}

pub(super) async fn commit_exists_async(dir: &Path, sha: &str) -> bool {
    let full_sha = sha.len() == 40 && sha.bytes().all(|b| b.is_ascii_hexdigit());
    full_sha && git_succeeds_async(dir, &["cat-file", "-e", &format!("{sha}^{{commit}}")]).await
}

/// The commit a REST `ref` parameter names: a full SHA, a branch or a tag (nothing else git
/// would understand, such as `HEAD~1`).
pub(super) async fn resolve_commit_async(dir: &Path, git_ref: &str) -> Option<String> {
    if commit_exists_async(dir, git_ref).await {
        return Some(git_ref.to_ascii_lowercase());
    }
    if git_ref.is_empty() || git_ref.starts_with('-') {
        return None;
    }
    for namespace in ["refs/heads", "refs/tags"] {
        let spec = format!("{namespace}/{git_ref}^{{commit}}");
        if let Some(sha) = git_stdout_async(dir, &["rev-parse", "--verify", "--quiet", &spec]).await
        {
            return Some(sha);
        }
    }
    None
}

// ---------------------------------------------------------------------------
// git smart HTTP via `git http-backend`
// ---------------------------------------------------------------------------

fn git_unauthorized() -> Response {
    let mut resp = Response::new(Body::from(
        "Invalid username or token. Password authentication is not supported for Git operations.\n",
    ));
    *resp.status_mut() = StatusCode::UNAUTHORIZED;
    let h = resp.headers_mut();
    h.insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"GitHub\""),
    );
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

fn git_plain(status: StatusCode, text: impl Into<Body>) -> Response {
    let mut resp = Response::new(text.into());
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// What the token of a valid `Basic x-access-token:<token>` header may reach.
fn git_auth_scope(shared: &Shared, headers: &HeaderMap) -> Option<TokenScope> {
    let value = header_str(headers, &header::AUTHORIZATION)?;
    let (scheme, creds) = split_auth(value)?;
    if scheme != "basic" {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(creds)
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, token) = decoded.split_once(':')?;
    if user != "x-access-token" {
        return None;
    }
    lock(shared).token_scope(token)
}

pub(super) async fn git_http(
    shared: &Shared,
    parts: &Parts,
    body: Bytes,
    owner: &str,
    repo: &str,
    rest: &str,
) -> Response {
    if rest.split('/').any(|s| s == ".." || s == ".") || owner.contains("..") {
        return git_plain(StatusCode::NOT_FOUND, "Not Found\n");
    }
    let Some(scope) = git_auth_scope(shared, &parts.headers) else {
        return git_unauthorized();
    };
    let (root, canonical_owner, canonical_name) = {
        let inner = lock(shared);
        match inner.repo(owner, repo) {
            Some(r) if scope.reaches(r) => (inner.root.clone(), r.owner.clone(), r.name.clone()),
            _ => return git_plain(StatusCode::NOT_FOUND, "Repository not found.\n"),
        }
    };
    // A push (receive-pack, including its ref advertisement) writes contents;
    // everything else reads them.
    let pushing = rest == "git-receive-pack"
        || (rest == "info/refs"
            && parts
                .uri
                .query()
                .is_some_and(|q| q.split('&').any(|kv| kv == "service=git-receive-pack")));
    if !scope.allows("contents", if pushing { "write" } else { "read" }) {
        return git_plain(
            StatusCode::FORBIDDEN,
            format!(
                "Permission to {canonical_owner}/{canonical_name}.git denied to {BOT_LOGIN}.\n"
            ),
        );
    }

    let path_info = format!("/{canonical_owner}/{canonical_name}.git/{rest}");
    let mut cmd = tokio::process::Command::from(git_cmd(&root, &["http-backend"]));
    cmd.env("GIT_PROJECT_ROOT", &root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("GATEWAY_INTERFACE", "CGI/1.1")
        .env("SERVER_PROTOCOL", "HTTP/1.1")
        .env("SERVER_SOFTWARE", "fake-github")
        .env("PATH_INFO", &path_info)
        .env("REQUEST_METHOD", parts.method.as_str())
        .env("QUERY_STRING", parts.uri.query().unwrap_or(""))
        .env("REMOTE_USER", "x-access-token")
        .env("REMOTE_ADDR", "127.0.0.1")
        .env("CONTENT_LENGTH", body.len().to_string())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    if let Some(ct) = header_str(&parts.headers, &header::CONTENT_TYPE) {
        cmd.env("CONTENT_TYPE", ct);
    }
    if let Some(enc) = header_str(&parts.headers, &header::CONTENT_ENCODING) {
        cmd.env("HTTP_CONTENT_ENCODING", enc);
    }
    if let Some(proto) = header_str(&parts.headers, &HeaderName::from_static("git-protocol")) {
        cmd.env("GIT_PROTOCOL", proto);
    }

    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(_) => {
            return git_plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                "failed to spawn git http-backend\n",
            );
        }
    };
    let mut stdin = child.stdin.take().expect("piped stdin");
    let writer = tokio::spawn(async move {
        let _ = stdin.write_all(&body).await;
        let _ = stdin.shutdown().await;
    });
    let output = child.wait_with_output().await;
    let _ = writer.await;
    let Ok(output) = output else {
        return git_plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            "git http-backend failed\n",
        );
    };
    parse_cgi_response(&output.stdout).unwrap_or_else(|| {
        git_plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            "git http-backend produced an invalid response\n",
        )
    })
}

fn parse_cgi_response(out: &[u8]) -> Option<Response> {
    let (head_end, body_start) = find_header_end(out)?;
    let head = std::str::from_utf8(&out[..head_end]).ok()?;
    let mut status = StatusCode::OK;
    let mut headers = HeaderMap::new();
    for line in head.lines() {
        let line = line.trim_end_matches('\r');
        if line.is_empty() {
            continue;
        }
        let (name, value) = line.split_once(':')?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            let code = value.split_whitespace().next()?.parse::<u16>().ok()?;
            status = StatusCode::from_u16(code).ok()?;
        } else {
            let name = HeaderName::from_bytes(name.trim().as_bytes()).ok()?;
            headers.append(name, HeaderValue::from_str(value).ok()?);
        }
    }
    let mut resp = Response::new(Body::from(out[body_start..].to_vec()));
    *resp.status_mut() = status;
    *resp.headers_mut() = headers;
    Some(resp)
}

/// (end of headers, start of body) of a CGI response.
fn find_header_end(out: &[u8]) -> Option<(usize, usize)> {
    let crlf = out.windows(4).position(|w| w == b"\r\n\r\n");
    let lf = out.windows(2).position(|w| w == b"\n\n");
    match (crlf, lf) {
        (Some(c), Some(l)) if l < c => Some((l, l + 2)),
        (Some(c), _) => Some((c, c + 4)),
        (None, Some(l)) => Some((l, l + 2)),
        (None, None) => None,
    }
}
