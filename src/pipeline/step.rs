//! Running one step: a shell command in its own process group, with its output captured.

use std::io::Read;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use super::definition::Step;

/// Output beyond this is cut from the front: the end of a log is where failures show.
const MAX_OUTPUT_BYTES: usize = 1024 * 1024;

/// Variables a step inherits from Conveyor's own environment; everything else (the App key,
/// the webhook secret, the database URL) stays out of reach of repository code.
const INHERITED_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LANG",
    "LC_ALL",
    "TMPDIR",
    "SHELL",
    "CARGO_HOME",
    "RUSTUP_HOME",
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepResult {
    pub position: usize,
    pub name: String,
    pub command: String,
    /// `None` when the step was killed (timeout, signal) or could not start.
    pub exit_code: Option<i32>,
    pub duration: Duration,
    pub output: String,
    pub timed_out: bool,
}

impl StepResult {
    pub fn succeeded(&self) -> bool {
        self.exit_code == Some(0)
    }

    /// The last `lines` lines of output.
    pub fn tail(&self, lines: usize) -> &str {
        let trimmed = self.output.trim_end();
        match trimmed.rmatch_indices('\n').nth(lines.saturating_sub(1)) {
            Some((index, _)) => &trimmed[index + 1..],
            None => trimmed,
        }
    }
}

/// Kills the step's whole process group when dropped, so nothing it started outlives it,
/// whether it finished, timed out or its worker was cancelled.
struct ProcessGroup(i32);

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        // SAFETY: killpg only sends a signal; a group that no longer exists yields ESRCH.
        unsafe {
            libc::killpg(self.0, libc::SIGKILL);
        }
    }
}

pub async fn run(position: usize, step: &Step, dir: &Path, env: &[(String, String)]) -> StepResult {
    let started = Instant::now();
    let (exit_code, output, timed_out) = match spawn_and_wait(step, dir, env).await {
        Ok(done) => done,
        Err(err) => (
            None,
            format!("conveyor: could not start `sh -c {}`: {err}\n", step.run),
            false,
        ),
    };
    StepResult {
        position,
        name: step.name.clone(),
        command: step.run.clone(),
        exit_code,
        duration: started.elapsed(),
        output,
        timed_out,
    }
}

async fn spawn_and_wait(
    step: &Step,
    dir: &Path,
    env: &[(String, String)],
) -> std::io::Result<(Option<i32>, String, bool)> {
    let (reader, writer) = std::io::pipe()?;
    let mut command = tokio::process::Command::new("sh");
    command
        .arg("-c")
        .arg(&step.run)
        .current_dir(dir)
        .env_clear()
        .envs(
            INHERITED_ENV
                .iter()
                .filter_map(|name| std::env::var(name).ok().map(|v| (*name, v))),
        )
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(writer.try_clone()?)
        .stderr(writer)
        .process_group(0)
        .kill_on_drop(true);
    let mut child = command.spawn()?;
    // The command holds the pipe's write ends; drop them so the reader sees EOF.
    drop(command);
    let group = ProcessGroup(child.id().expect("a just-spawned child has a pid") as i32);
    let collector = tokio::task::spawn_blocking(move || collect(reader));

    let (exit_code, timed_out) = match tokio::time::timeout(step.timeout(), child.wait()).await {
        Ok(status) => (status?.code(), false),
        Err(_) => (None, true),
    };
    drop(group);
    let mut output = collector.await.unwrap_or_default();
    if timed_out {
        output.push_str(&format!(
            "\nconveyor: step timed out after {} minutes\n",
            step.timeout_minutes
        ));
    }
    Ok((exit_code, output, timed_out))
}

fn collect(mut reader: std::io::PipeReader) -> String {
    let mut kept = Vec::new();
    let mut buffer = [0u8; 8192];
    while let Ok(n) = reader.read(&mut buffer) {
        if n == 0 {
            break;
        }
        kept.extend_from_slice(&buffer[..n]);
        if kept.len() > 2 * MAX_OUTPUT_BYTES {
            kept.drain(..kept.len() - MAX_OUTPUT_BYTES);
        }
    }
    if kept.len() > MAX_OUTPUT_BYTES {
        kept.drain(..kept.len() - MAX_OUTPUT_BYTES);
    }
    String::from_utf8_lossy(&kept).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(run: &str, timeout_minutes: u64) -> Step {
        Step {
            name: "s".into(),
            run: run.into(),
            timeout_minutes,
        }
    }

    #[tokio::test]
    async fn captures_interleaved_output_and_exit_code() {
        let dir = tempfile::tempdir().unwrap();
        let result = run(
            0,
            &step("echo out; echo err >&2; exit 3", 1),
            dir.path(),
            &[],
        )
        .await;
        assert_eq!(result.exit_code, Some(3));
        assert_eq!(result.output, "out\nerr\n");
        assert!(!result.succeeded());
    }

    #[tokio::test]
    async fn sees_task_variables_but_not_conveyors_secrets() {
        // SAFETY: no other thread of this test reads or writes this variable.
        unsafe { std::env::set_var("GITHUB_WEBHOOK_SECRET_STEP_TEST", "hunter2") };
        let dir = tempfile::tempdir().unwrap();
        let env = [("CONVEYOR_ISSUE_NUMBER".to_owned(), "7".to_owned())];
        let result = run(
            0,
            &step(
                "echo \"$CONVEYOR_ISSUE_NUMBER:$GITHUB_WEBHOOK_SECRET_STEP_TEST\"",
                1,
            ),
            dir.path(),
            &env,
        )
        .await;
        assert_eq!(result.output, "7:\n");
        assert!(result.succeeded());
    }

    #[tokio::test]
    async fn background_children_do_not_outlive_the_step() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("pid");
        let script = format!("sleep 30 & echo $! > {}", marker.display());
        let result = run(0, &step(&script, 1), dir.path(), &[]).await;
        assert!(result.succeeded());
        let pid: i32 = std::fs::read_to_string(&marker)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // A killed process may linger as a zombie until it is reaped; that is not running.
        // SIGKILL is delivered asynchronously, so the kernel gets a moment to carry it out.
        let running = || {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|stat| !stat.contains(") Z "))
        };
        for _ in 0..50 {
            if !running() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(!running(), "the background sleep survived its step");
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        let result = StepResult {
            position: 0,
            name: "s".into(),
            command: "c".into(),
            exit_code: Some(1),
            duration: Duration::ZERO,
            output: "a\nb\nc\n".into(),
            timed_out: false,
        };
        assert_eq!(result.tail(2), "b\nc");
        assert_eq!(result.tail(10), "a\nb\nc");
    }
}
