//! `conveyor bench workspace`: what the mirror cache saves each run. A generated repository
//! (20,000 files and 5,000 commits by default, made with `git fast-import`) is served over
//! smart HTTP by `git http-backend` behind a small CGI adapter on 127.0.0.1, as GitHub would
//! serve it. Each run, interleaved: a fresh clone into a workspace (what every run did
//! before), and a workspace from the warm mirror (the fetch of one new commit pushed since
//! the last run, and the git dir linked from the mirror); then each is checked out at its
//! base, as a run does.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

use super::loop_latency::github::{git, run_git};
use super::{millis, percentile};
use crate::pipeline::Checkout;
use crate::pipeline::git::Git;
use crate::pipeline::mirror::{Mirrors, Origin};
use crate::pipeline::sandbox::{Sandbox, SandboxMode};
use crate::pipeline::workspace::Workspaces;

#[derive(Debug, clap::Args)]
pub struct WorkspaceBench {
    /// Files in the generated repository.
    #[arg(long, default_value_t = 20_000)]
    pub files: usize,
    /// Commits in its history (the first adds every file, each other changes a few).
    #[arg(long, default_value_t = 5_000)]
    pub commits: usize,
    /// How many times to measure each way (the median is reported).
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
}

/// Files each commit after the first changes.
const CHANGED_PER_COMMIT: usize = 4;
/// Lines in a generated file.
const LINES: usize = 24;
const OWNER: &str = "bench";
const REPO: &str = "generated";
/// A made-up installation, so the bench's mirror never meets a real one.
const INSTALLATION: i64 = 0;

/// One run's times.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// A clone from the remote into a new workspace.
    pub fresh_clone: Duration,
    /// The mirror's fetch and the git dir linked from it for a new workspace.
    pub from_mirror: Duration,
    /// Writing the base into the work tree and the steps' own `.git`, after each.
    pub check_out_fresh: Duration,
    pub check_out_mirror: Duration,
}

#[derive(Debug)]
pub struct WorkspaceReport {
    pub files: usize,
    pub commits: usize,
    pub packed_bytes: u64,
    pub cold_mirror: Duration,
    pub samples: Vec<Sample>,
}

impl WorkspaceReport {
    fn median(&self, of: impl Fn(&Sample) -> Duration) -> Duration {
        let mut times: Vec<Duration> = self.samples.iter().map(of).collect();
        times.sort();
        percentile(&times, 50.0)
    }

    /// How many times faster a workspace comes from the warm mirror than from a fresh clone.
    pub fn speedup(&self) -> f64 {
        ratio(
            self.median(|s| s.fresh_clone),
            self.median(|s| s.from_mirror),
        )
    }
}

fn ratio(before: Duration, after: Duration) -> f64 {
    before.as_secs_f64() / after.as_secs_f64().max(1e-9)
}

/// Runs the benchmark in a scratch directory under `data_dir`, removed afterwards.
pub async fn run(bench: &WorkspaceBench, data_dir: &Path) -> anyhow::Result<WorkspaceReport> {
    if bench.files == 0 || bench.commits == 0 {
        bail!("--files and --commits must be at least 1");
    }
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    let scratch = tempfile::Builder::new()
        .prefix("bench-workspace-")
        .tempdir_in(data_dir)
        .with_context(|| format!("making a scratch directory in {}", data_dir.display()))?;
    let root = scratch.path().join("remote");
    let bare = root.join(OWNER).join(format!("{REPO}.git"));
    let started = Instant::now();
    generate(&bare, bench.files, bench.commits).await?;
    let packed_bytes = pack_bytes(&bare)?;
    println!(
        "repository: {} files, {} commits, {:.1} MiB packed, generated in {:.1} s",
        bench.files,
        bench.commits,
        packed_bytes as f64 / f64::from(1 << 20),
        started.elapsed().as_secs_f64()
    );

    let stop = CancellationToken::new();
    let base_url = serve(root.clone(), stop.clone()).await?;
    let url = format!("{base_url}/{OWNER}/{REPO}.git");
    let measured = measure(bench, &scratch.path().join("data"), &bare, &url).await;
    stop.cancel();
    let (cold_mirror, samples) = measured?;
    Ok(WorkspaceReport {
        files: bench.files,
        commits: bench.commits,
        packed_bytes,
        cold_mirror,
        samples,
    })
}

async fn measure(
    bench: &WorkspaceBench,
    data: &Path,
    bare: &Path,
    url: &str,
) -> anyhow::Result<(Duration, Vec<Sample>)> {
    let git = Git::default();
    let workspaces = Workspaces::open(data);
    let mirrors = Mirrors::open(data, u64::MAX);
    let origin = Origin::installation(INSTALLATION, OWNER, REPO, url);
    let unconfined = Sandbox::new(SandboxMode::Off, Vec::new());
    let check_out = async |checkout: &Checkout| -> anyhow::Result<Duration> {
        let started = Instant::now();
        checkout
            .check_out(&git, &checkout.default_head, None, url, &unconfined)
            .await
            .context("checking out the base")?;
        Ok(started.elapsed())
    };

    let started = Instant::now();
    Checkout::clone(&git, &origin, &mirrors, &workspaces)
        .await
        .context("making the mirror")?;
    let cold_mirror = started.elapsed();
    println!(
        "cold mirror (a repository's first run): {:.1} ms",
        millis(cold_mirror)
    );

    let mut samples = Vec::new();
    for run in 1..=bench.runs.max(1) {
        push_commit(bare, bench.files, run).await?;

        let started = Instant::now();
        let workspace = workspaces.create().context("creating a workspace")?;
        git.clone(url, &workspace.git_dir()).await?;
        let default_head = git
            .resolve(&workspace.git_dir(), "HEAD")
            .await?
            .context("the clone has no HEAD")?;
        let fresh_clone = started.elapsed();
        let fresh = Checkout {
            workspace,
            default_head,
        };
        let check_out_fresh = check_out(&fresh).await?;
        drop(fresh);

        let started = Instant::now();
        let mirrored = Checkout::clone(&git, &origin, &mirrors, &workspaces)
            .await
            .context("a workspace from the mirror")?;
        let from_mirror = started.elapsed();
        let check_out_mirror = check_out(&mirrored).await?;
        drop(mirrored);

        let sample = Sample {
            fresh_clone,
            from_mirror,
            check_out_fresh,
            check_out_mirror,
        };
        println!(
            "run {run}: fresh clone {:.1} ms, from the warm mirror {:.1} ms (fetch + workspace); check-out {:.1} ms / {:.1} ms",
            millis(sample.fresh_clone),
            millis(sample.from_mirror),
            millis(sample.check_out_fresh),
            millis(sample.check_out_mirror),
        );
        samples.push(sample);
    }
    Ok((cold_mirror, samples))
}

pub fn print(report: &WorkspaceReport) {
    let fresh = report.median(|s| s.fresh_clone);
    let mirror = report.median(|s| s.from_mirror);
    let (out_fresh, out_mirror) = (
        report.median(|s| s.check_out_fresh),
        report.median(|s| s.check_out_mirror),
    );
    println!(
        "median of {} runs ({} files, {} commits, {:.1} MiB packed):",
        report.samples.len(),
        report.files,
        report.commits,
        report.packed_bytes as f64 / f64::from(1 << 20)
    );
    println!(
        "  fresh clone (before)             {:>8.1} ms",
        millis(fresh)
    );
    println!(
        "  warm mirror (fetch + workspace)  {:>8.1} ms",
        millis(mirror)
    );
    println!(
        "  check-out of the base, either way {:>7.1} ms / {:.1} ms (work tree and the steps' .git)",
        millis(out_fresh),
        millis(out_mirror)
    );
    println!(
        "  whole workspace with its check-out: {:.1} ms before, {:.1} ms now ({:.1}x)",
        millis(fresh + out_fresh),
        millis(mirror + out_mirror),
        ratio(fresh + out_fresh, mirror + out_mirror)
    );
    println!("speedup: {:.1}x", report.speedup());
}

/// Makes the bare repository `bare`: `commits` commits on `main`, the first adding `files`
/// files of made-up source text, each later one changing a few of them.
async fn generate(bare: &Path, files: usize, commits: usize) -> anyhow::Result<()> {
    std::fs::create_dir_all(bare)?;
    run_git(
        bare,
        &["init", "--quiet", "--bare", "--initial-branch=main"],
    )
    .await?;
    let mut rng = fastrand::Rng::with_seed(11);
    let mut stream = Vec::new();
    for commit in 0..commits {
        let paths: Vec<usize> = if commit == 0 {
            (0..files).collect()
        } else {
            (0..CHANGED_PER_COMMIT.min(files))
                .map(|_| rng.usize(..files))
                .collect()
        };
        write_commit(&mut stream, &mut rng, commit, &paths, false);
    }
    fast_import(bare, &stream).await?;
    // As a host serves it: packed with deltas, not fast-import's quick pack.
    run_git(bare, &["repack", "-a", "-d", "-q"]).await
}

/// Adds a commit changing one file to `main`, as someone pushing between runs would.
async fn push_commit(bare: &Path, files: usize, run: usize) -> anyhow::Result<()> {
    let mut rng = fastrand::Rng::with_seed(run as u64);
    let path = rng.usize(..files);
    let mut stream = Vec::new();
    write_commit(&mut stream, &mut rng, run, &[path], true);
    fast_import(bare, &stream).await
}

/// One `git fast-import` commit on `main` writing `paths`: after the commit before it in
/// the same stream, or after `main` as it stands in the repository if `on_top`.
fn write_commit(
    stream: &mut Vec<u8>,
    rng: &mut fastrand::Rng,
    commit: usize,
    paths: &[usize],
    on_top: bool,
) {
    use std::io::Write;
    const WORDS: &[&str] = &[
        "let", "fn", "match", "return", "self", "value", "config", "error", "result", "items",
        "count", "buffer", "index", "state", "request", "=", "+", "{", "}", "(", ")", ";",
    ];
    let message = format!("Change {commit}\n");
    let _ = write!(
        stream,
        "commit refs/heads/main\ncommitter Conveyor bench <bench@conveyor.invalid> {} +0000\ndata {}\n{message}",
        1_700_000_000 + commit,
        message.len()
    );
    if on_top {
        // A new fast-import starts the branch afresh unless told where it stands.
        stream.extend_from_slice(b"from refs/heads/main^0\n");
    }
    for path in paths {
        let mut text = format!("// file {path}, version {commit}\n");
        for _ in 0..LINES {
            let line: Vec<&str> = (0..8).map(|_| WORDS[rng.usize(..WORDS.len())]).collect();
            text.push_str(&line.join(" "));
            text.push('\n');
        }
        let _ = write!(
            stream,
            "M 100644 inline src/m{:03}/file{path:05}.rs\ndata {}\n{text}",
            path % 200,
            text.len()
        );
    }
    stream.push(b'\n');
}

async fn fast_import(bare: &Path, stream: &[u8]) -> anyhow::Result<()> {
    let mut child = git(bare)
        .args(["fast-import", "--quiet"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running git fast-import")?;
    let mut stdin = child.stdin.take().context("fast-import's stdin")?;
    stdin.write_all(stream).await?;
    drop(stdin);
    let output = child.wait_with_output().await?;
    if !output.status.success() {
        bail!(
            "git fast-import: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

fn pack_bytes(bare: &Path) -> anyhow::Result<u64> {
    let mut bytes = 0;
    for entry in std::fs::read_dir(bare.join("objects/pack"))? {
        bytes += entry?.metadata()?.len();
    }
    Ok(bytes)
}

/// Serves the repositories under `root` over smart HTTP on 127.0.0.1 until `stop`; returns
/// the base URL.
async fn serve(root: PathBuf, stop: CancellationToken) -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let app = Router::new().fallback(http_backend).with_state(root);
    tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await;
        if let Err(err) = served {
            tracing::warn!(error = %err, "the bench's git server stopped");
        }
    });
    Ok(url)
}

/// One request through `git http-backend`, run as a CGI program.
async fn http_backend(State(root): State<PathBuf>, request: Request) -> Response {
    match cgi(&root, request).await {
        Ok(response) => response,
        Err(err) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{err:#}\n")).into_response(),
    }
}

async fn cgi(root: &Path, request: Request) -> anyhow::Result<Response> {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX).await?;
    let header = |name: &HeaderName| {
        parts
            .headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let mut command = git(root);
    command
        .arg("http-backend")
        .env("GIT_PROJECT_ROOT", root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("GATEWAY_INTERFACE", "CGI/1.1")
        .env("SERVER_PROTOCOL", "HTTP/1.1")
        .env("REQUEST_METHOD", parts.method.as_str())
        .env("PATH_INFO", parts.uri.path())
        .env("QUERY_STRING", parts.uri.query().unwrap_or_default())
        .env("CONTENT_TYPE", header(&header::CONTENT_TYPE))
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("HTTP_CONTENT_ENCODING", header(&header::CONTENT_ENCODING))
        .env(
            "GIT_PROTOCOL",
            header(&HeaderName::from_static("git-protocol")),
        )
        .env("REMOTE_ADDR", "127.0.0.1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = command.spawn().context("running git http-backend")?;
    let mut stdin = child.stdin.take().context("http-backend's stdin")?;
    let feed = tokio::spawn(async move {
        let fed = stdin.write_all(&body).await;
        drop(stdin);
        fed
    });
    let output = child.wait_with_output().await?;
    feed.await??;
    parse_cgi(output.stdout.into())
}

/// A CGI program's output as an HTTP response: headers (a `Status:` one among them), a blank
/// line, the body.
fn parse_cgi(output: Bytes) -> anyhow::Result<Response> {
    let (head, body) = (0..output.len())
        .find_map(|at| {
            if output[at..].starts_with(b"\r\n\r\n") {
                Some((at, at + 4))
            } else if output[at..].starts_with(b"\n\n") {
                Some((at, at + 2))
            } else {
                None
            }
        })
        .context("http-backend gave no headers")?;
    let mut response = Response::new(Body::from(output.slice(body..)));
    for line in std::str::from_utf8(&output[..head])?.lines() {
        let (name, value) = line
            .split_once(':')
            .with_context(|| format!("http-backend header {line:?}"))?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            let code = value.split_whitespace().next().unwrap_or_default();
            *response.status_mut() = StatusCode::from_bytes(code.as_bytes())?;
        } else {
            response.headers_mut().append(
                HeaderName::from_bytes(name.trim().as_bytes())?,
                HeaderValue::from_str(value)?,
            );
        }
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgi_output_becomes_a_response() {
        let response = parse_cgi(Bytes::from_static(
            b"Status: 404 Not Found\r\nContent-Type: text/plain\r\n\r\nnope",
        ))
        .unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert_eq!(response.headers()["content-type"], "text/plain");
        let plain = parse_cgi(Bytes::from_static(b"Expires: x\n\nbody")).unwrap();
        assert_eq!(plain.status(), StatusCode::OK);
        assert!(parse_cgi(Bytes::from_static(b"no headers")).is_err());
    }

    #[tokio::test]
    async fn a_small_repository_is_measured_both_ways() {
        let data = tempfile::tempdir().unwrap();
        let bench = WorkspaceBench {
            files: 50,
            commits: 20,
            runs: 2,
        };
        let report = run(&bench, data.path()).await.unwrap();
        assert_eq!(report.samples.len(), 2);
        assert!(report.packed_bytes > 0);
        assert!(report.speedup() > 0.0);
        assert_eq!(
            std::fs::read_dir(data.path()).unwrap().count(),
            0,
            "the scratch directory stayed"
        );
    }
}
