//! Running one step in its sandbox, with its output captured and bounded, and passed on line
//! by line as it comes.

use std::io::Read;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::definition::Step;
use super::sandbox::{Sandbox, SandboxError, StepCommand};
use super::workspace::Workspace;

/// Output kept per step: the head (how it started) and the tail (where failures show), with
/// what lies between counted and cut.
const MAX_OUTPUT_BYTES: usize = 1024 * 1024;
/// A line of output longer than this is passed on in pieces of this size: a progress bar
/// redrawn with `\r` or a minified file must not make one unbounded line.
pub const MAX_LINE_BYTES: usize = 4096;

/// The exit code by which a step says it asked the requester questions (`EX_TEMPFAIL`): its
/// run waits for the answer and then runs the step again.
pub const ASKS_EXIT_CODE: i32 = 75;

/// One line of a step's output (without its line end), and when it was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub at: DateTime<Utc>,
    pub text: String,
}

/// Where a running step's lines go, and the task that stores them: closing it waits until
/// every line sent is stored, so a step's log is whole once its result is recorded.
pub struct LineSink {
    lines: mpsc::Sender<Line>,
    stored: JoinHandle<()>,
}

impl LineSink {
    pub fn new(lines: mpsc::Sender<Line>, stored: JoinHandle<()>) -> Self {
        Self { lines, stored }
    }

    /// Passes on one line that Conveyor itself writes for the step; a log writer that
    /// stopped loses it, as it would the step's own lines.
    pub async fn send(&self, text: &str) {
        let line = Line {
            at: Utc::now(),
            text: text.to_owned(),
        };
        let _ = self.lines.send(line).await;
    }

    pub async fn close(self) {
        drop(self.lines);
        if let Err(err) = self.stored.await {
            tracing::warn!(error = %err, "the step's log writer stopped");
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepResult {
    pub position: usize,
    pub name: String,
    pub command: String,
    /// `None` when the step was killed (timeout, signal).
    pub exit_code: Option<i32>,
    pub duration: Duration,
    pub output: String,
    pub timed_out: bool,
    /// Stopped because the run's time budget ran out (not the step's own timeout).
    pub out_of_budget: bool,
    /// How many times the step ran: this result is the last of them.
    pub attempts: u32,
}

impl StepResult {
    pub fn succeeded(&self) -> bool {
        self.exit_code == Some(0)
    }

    /// Whether the step stopped to ask the requester questions.
    pub fn asks(&self) -> bool {
        self.exit_code == Some(ASKS_EXIT_CODE)
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

/// Runs `step` in `workspace` for at most its timeout or `budget` (what is left of the run's
/// time), whichever is shorter, sending its output to `lines` as it comes; an error means it
/// could not start at all (no sandbox, no shell), which is Conveyor's failure, not the step's.
pub async fn run(
    position: usize,
    step: &Step,
    workspace: &Workspace,
    env: &[(String, String)],
    sandbox: &Sandbox,
    budget: Duration,
    lines: Option<&LineSink>,
) -> Result<StepResult, SandboxError> {
    // A gate is the runner's to wait at; one that reaches here must fail rather than pass.
    let Some(script) = step.script() else {
        return Ok(StepResult {
            position,
            name: step.name.clone(),
            command: String::new(),
            exit_code: None,
            duration: Duration::ZERO,
            output: format!(
                "conveyor: step `{}` is an approval, which this runner cannot wait for\n",
                step.name
            ),
            timed_out: false,
            out_of_budget: false,
            attempts: 1,
        });
    };
    let started = Instant::now();
    let (reader, writer) = std::io::pipe().map_err(SandboxError::Spawn)?;
    let (work_tree, io) = (workspace.repo_dir(), workspace.io_dir());
    let command = StepCommand {
        script,
        workspace: &work_tree,
        io: Some(&io),
        env,
        network: step.has_network(),
        limits: step.limits,
    };
    let sender = lines.map(|sink| sink.lines.clone());
    let collector = tokio::task::spawn_blocking({
        let sender = sender.clone();
        move || collect(reader, sender)
    });
    let spawned = sandbox.spawn(&command, Some(&writer)).await;
    // The step holds its own copies: ours must go for the output to reach its end.
    drop(writer);
    let mut running = spawned?;
    let limit = step.timeout().min(budget);
    let (exit_code, stopped) = match tokio::time::timeout(limit, running.wait()).await {
        Ok(status) => (status.map_err(SandboxError::Spawn)?.code(), false),
        Err(_) => (None, true),
    };
    // Ends whatever the step left running, so the output pipe closes.
    drop(running);
    let mut output = collector.await.unwrap_or_default();
    let out_of_budget = stopped && budget < step.timeout();
    let timed_out = stopped && !out_of_budget;
    let note = if out_of_budget {
        Some("conveyor: step stopped: the run's time budget ran out".to_owned())
    } else if timed_out {
        Some(format!(
            "conveyor: step timed out after {} minutes",
            step.timeout_minutes
        ))
    } else {
        None
    };
    if let Some(note) = note {
        output.push_str(&format!("\n{note}\n"));
        if let Some(sender) = &sender {
            let _ = sender
                .send(Line {
                    at: Utc::now(),
                    text: note,
                })
                .await;
        }
    }
    Ok(StepResult {
        position,
        name: step.name.clone(),
        command: script.to_owned(),
        exit_code,
        duration: started.elapsed(),
        output,
        timed_out,
        out_of_budget,
        attempts: 1,
    })
}

/// Reads the step's output to its end, keeping at most [`MAX_OUTPUT_BYTES`]: the first half
/// and the last half, with a line saying how much was cut between them, and sends each line
/// to `lines` as it completes. NUL bytes are dropped (the database cannot store them) and
/// invalid UTF-8 is replaced.
fn collect(mut reader: std::io::PipeReader, mut lines: Option<mpsc::Sender<Line>>) -> String {
    let half = MAX_OUTPUT_BYTES / 2;
    let mut head = Vec::new();
    let mut tail = std::collections::VecDeque::new();
    let mut cut = 0usize;
    let mut line = Vec::new();
    let mut buffer = [0u8; 8192];
    // A receiver gone (the log writer stopped) stops the sending, never the step.
    let send = |text: &[u8], lines: &mut Option<mpsc::Sender<Line>>| {
        if let Some(sender) = lines {
            let line = Line {
                at: Utc::now(),
                text: String::from_utf8_lossy(text).into_owned(),
            };
            if sender.blocking_send(line).is_err() {
                *lines = None;
            }
        }
    };
    while let Ok(n) = reader.read(&mut buffer) {
        if n == 0 {
            break;
        }
        let mut bytes = buffer[..n].iter().copied().filter(|&b| b != 0);
        if lines.is_some() {
            for byte in bytes.clone() {
                if byte == b'\n' {
                    send(&line, &mut lines);
                    line.clear();
                } else {
                    line.push(byte);
                    if line.len() == MAX_LINE_BYTES {
                        send(&line, &mut lines);
                        line.clear();
                    }
                }
            }
        }
        head.extend(bytes.by_ref().take(half - head.len()));
        tail.extend(bytes);
        if tail.len() > half {
            let excess = tail.len() - half;
            tail.drain(..excess);
            cut += excess;
        }
    }
    if !line.is_empty() {
        send(&line, &mut lines);
    }
    let mut output = String::from_utf8_lossy(&head).into_owned();
    if cut > 0 {
        output.push_str(&format!("\n… conveyor: {cut} bytes of output cut here …\n"));
    }
    output.push_str(&String::from_utf8_lossy(tail.make_contiguous()));
    output
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::pipeline::definition::Limits;
    use crate::pipeline::sandbox::SandboxMode;
    use crate::pipeline::workspace::{Workspace, Workspaces};

    /// A workspace handed to the sandbox, as a run makes it.
    struct Place {
        _data: tempfile::TempDir,
        _workspaces: Workspaces,
        workspace: Workspace,
    }

    impl Place {
        fn new(sandbox: &Sandbox) -> Self {
            let data = tempfile::tempdir().unwrap();
            let workspaces = Workspaces::open(data.path());
            let workspace = workspaces.create().unwrap();
            sandbox.hand_over(&workspace).unwrap();
            Self {
                _data: data,
                _workspaces: workspaces,
                workspace,
            }
        }

        fn dir(&self) -> PathBuf {
            self.workspace.repo_dir()
        }

        /// Runs `step` here.
        async fn run(
            &self,
            step: &Step,
            env: &[(String, String)],
            sandbox: &Sandbox,
        ) -> StepResult {
            run(0, step, &self.workspace, env, sandbox, DAY, None)
                .await
                .unwrap()
        }
    }

    /// A budget no test step reaches.
    const DAY: Duration = Duration::from_secs(24 * 3600);

    fn sandbox() -> Sandbox {
        Sandbox::new(SandboxMode::On, Vec::new())
    }

    async fn run_in(sandbox: &Sandbox, step: &Step) -> (StepResult, Place) {
        let place = Place::new(sandbox);
        let result = place.run(step, &[], sandbox).await;
        (result, place)
    }

    fn step(run: &str) -> Step {
        Step::new("s", run)
    }

    /// Host processes whose command line contains `marker` and that still run.
    fn running_with(marker: &str) -> Vec<i32> {
        let mut found = Vec::new();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map_or(true, |stat| stat.contains(") Z "));
            if !zombie && String::from_utf8_lossy(&cmdline).contains(marker) {
                found.push(pid);
            }
        }
        found
    }

    /// Waits briefly for processes with `marker` to be gone (SIGKILL is delivered
    /// asynchronously); returns those still there.
    async fn gone(marker: &str) -> Vec<i32> {
        for _ in 0..100 {
            if running_with(marker).is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        running_with(marker)
    }

    #[tokio::test]
    async fn captures_interleaved_output_and_exit_code() {
        let (result, _place) = run_in(&sandbox(), &step("echo out; echo err >&2; exit 3")).await;
        assert_eq!(result.exit_code, Some(3));
        assert_eq!(result.output, "out\nerr\n");
        assert!(!result.succeeded());
    }

    #[tokio::test]
    async fn sees_task_variables_but_not_conveyors_environment() {
        // SAFETY: no other thread of this test reads or writes this variable.
        unsafe { std::env::set_var("GITHUB_WEBHOOK_SECRET_STEP_TEST", "hunter2") };
        let sandbox = sandbox();
        let place = Place::new(&sandbox);
        let env = [("CONVEYOR_ISSUE_NUMBER".to_owned(), "7".to_owned())];
        let script = "echo \"$CONVEYOR_ISSUE_NUMBER:$GITHUB_WEBHOOK_SECRET_STEP_TEST\"; \
                      cat /proc/1/environ /proc/*/environ 2>/dev/null | tr '\\0' '\\n'";
        let result = place.run(&step(script), &env, &sandbox).await;
        assert!(result.output.starts_with("7:\n"), "{}", result.output);
        assert!(!result.output.contains("hunter2"), "{}", result.output);
        assert!(
            result.output.contains("CONVEYOR_ISSUE_NUMBER=7"),
            "{}",
            result.output
        );
        assert!(result.succeeded());
    }

    #[tokio::test]
    async fn runs_unprivileged_and_sees_only_its_workspace_and_the_system() {
        let sandbox = sandbox();
        let place = Place::new(&sandbox);
        let here = std::env::current_dir().unwrap();
        let script = format!(
            "id -u; pwd; ls /; touch made-here; \
             touch /usr/x 2>&1 || echo usr-read-only; \
             ls {} 2>&1 || echo no-host-cwd; \
             ls {} 2>&1 || echo no-data-dir; \
             ls /proc | grep -c '^[0-9]'",
            here.display(),
            place.workspace.path().display()
        );
        let result = place.run(&step(&script), &[], &sandbox).await;
        let out = &result.output;
        assert!(result.succeeded(), "{out}");
        let mut lines = out.lines();
        assert_eq!(lines.next(), Some("1000"), "{out}");
        assert_eq!(lines.next(), Some("/workspace"), "{out}");
        assert!(place.dir().join("made-here").exists(), "{out}");
        for absent in ["root\n", "home\n", "work\n", "var\n", "run\n"] {
            assert!(!out.contains(absent), "/{absent} is visible: {out}");
        }
        assert!(out.contains("usr-read-only"), "{out}");
        assert!(
            out.contains("no-host-cwd") && out.contains("no-data-dir"),
            "{out}"
        );
        let processes: usize = out.lines().last().unwrap().parse().unwrap();
        assert!(processes <= 6, "the step sees host processes: {out}");
    }

    #[tokio::test]
    async fn a_secret_file_under_a_mounted_tree_is_covered() {
        let secret = tempfile::Builder::new()
            .prefix("conveyor-step-test-")
            .tempfile_in("/etc")
            .unwrap();
        std::fs::write(secret.path(), "BEGIN PRIVATE KEY").unwrap();
        std::fs::set_permissions(
            secret.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o644),
        )
        .unwrap();
        let script = format!("cat {}; echo end", secret.path().display());
        let open = sandbox();
        let (seen, _place) = run_in(&open, &step(&script)).await;
        assert!(
            seen.output.contains("BEGIN PRIVATE KEY"),
            "the test file is readable"
        );
        let covered = Sandbox::new(SandboxMode::On, vec![secret.path().to_owned()]);
        let (hidden, _place) = run_in(&covered, &step(&script)).await;
        assert!(!hidden.output.contains("BEGIN"), "{}", hidden.output);
        assert!(hidden.output.ends_with("end\n"), "{}", hidden.output);
    }

    #[tokio::test]
    async fn a_step_reaches_its_exchange_directory_outside_the_work_tree() {
        for sandbox in [sandbox(), Sandbox::new(SandboxMode::Off, Vec::new())] {
            let place = Place::new(&sandbox);
            let io = place.workspace.io_dir();
            std::fs::write(io.join("prompt.md"), "do it\n").unwrap();
            let prompt = sandbox.step_path(&io, "prompt.md");
            let questions = sandbox.step_path(&io, "questions.md");
            let env = [
                ("PROMPT".to_owned(), prompt),
                ("QUESTIONS".to_owned(), questions),
            ];
            let script = "cat \"$PROMPT\" && echo why > \"$QUESTIONS\"";
            let result = place.run(&step(script), &env, &sandbox).await;
            assert_eq!(result.output, "do it\n", "{:?}", sandbox.mode());
            assert_eq!(
                std::fs::read_to_string(io.join("questions.md")).unwrap(),
                "why\n"
            );
            assert!(!place.dir().join("questions.md").exists());
        }
    }

    #[tokio::test]
    async fn every_process_the_step_started_ends_with_it() {
        let marker = format!("{}.{}", 3000 + fastrand::u32(..1000), fastrand::u32(..1000));
        let script = format!(
            "setsid sleep {marker} & (sleep {marker} &) ; nohup sleep {marker} >/dev/null 2>&1 & sleep 0.2; echo started"
        );
        let (result, _place) = run_in(&sandbox(), &step(&script)).await;
        assert!(result.succeeded(), "{}", result.output);
        assert_eq!(
            gone(&marker).await,
            Vec::<i32>::new(),
            "children outlived the step"
        );
    }

    #[tokio::test]
    async fn a_cancelled_step_takes_every_process_with_it() {
        let sandbox = sandbox();
        let place = Place::new(&sandbox);
        let marker = format!("{}.{}", 4000 + fastrand::u32(..1000), fastrand::u32(..1000));
        let script = format!("setsid sleep {marker} & touch ready; sleep {marker}");
        let dir = place.dir();
        let running = tokio::spawn({
            let sandbox = sandbox.clone();
            async move { place.run(&step(&script), &[], &sandbox).await }
        });
        // Bounded, so that a sandbox that cannot start fails the test instead of hanging it.
        let started = Instant::now();
        while !dir.join("ready").exists() {
            assert!(
                !running.is_finished() && started.elapsed() < Duration::from_secs(30),
                "the step never started"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(!running_with(&marker).is_empty(), "the step runs");
        running.abort();
        let _ = running.await;
        assert_eq!(
            gone(&marker).await,
            Vec::<i32>::new(),
            "the step outlived its cancel"
        );
    }

    #[tokio::test]
    async fn output_keeps_its_head_and_tail_and_loses_nul_bytes() {
        let script = "printf 'first\\0line\\n'; head -c 3000000 /dev/zero | tr '\\0' x; printf '\\nlast line\\n'";
        let (result, _place) = run_in(&sandbox(), &step(script)).await;
        assert!(
            result.output.starts_with("firstline\nxxx"),
            "{}",
            &result.output[..20]
        );
        assert!(result.output.ends_with("xxx\nlast line\n"));
        assert!(
            result.output.len() <= MAX_OUTPUT_BYTES + 100,
            "{}",
            result.output.len()
        );
        assert!(result.output.contains("bytes of output cut here"));
        assert!(!result.output.contains('\0'));
    }

    #[tokio::test]
    async fn limits_stop_fork_floods_large_files_and_large_allocations() {
        let limits = Limits {
            memory_mb: 256,
            processes: 30,
            file_size_mb: 1,
        };
        let limited = |run: &str| Step {
            limits,
            ..step(run)
        };
        let sandbox = sandbox();
        let (forks, _p) = run_in(
            &sandbox,
            &limited("for i in $(seq 60); do sleep 2 & done 2>&1; echo spawned"),
        )
        .await;
        assert!(forks.output.contains("fork"), "{}", forks.output);
        let (file, _p) = run_in(&sandbox, &limited("head -c 2000000 /dev/zero > big")).await;
        assert!(!file.succeeded(), "{}", file.output);
        let (memory, _p) = run_in(
            &sandbox,
            &limited("awk 'BEGIN { s = sprintf(\"%400000000s\", \"\"); print length(s) }'"),
        )
        .await;
        assert!(!memory.succeeded(), "{}", memory.output);
        let (fine, _p) = run_in(&sandbox, &limited("head -c 500000 /dev/zero > ok")).await;
        assert!(fine.succeeded(), "{}", fine.output);
    }

    #[tokio::test]
    async fn the_hosts_loopback_is_out_of_reach_and_no_network_means_none() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let script = format!(
            "ip -o -4 addr show | awk '{{print $2}}' | sort | tr '\\n' ' '; echo; \
             for host in 10.0.2.2 127.0.0.1; do \
               bash -c \"exec 3<>/dev/tcp/$host/{port}\" 2>/dev/null && echo reached-$host; done; echo done"
        );
        let sandbox = sandbox();
        let (networked, _p) = run_in(&sandbox, &step(&script)).await;
        assert_eq!(networked.output, "lo tap0 \ndone\n");
        let offline = Step {
            network: Some(false),
            ..step(&script)
        };
        let (offline, _p) = run_in(&sandbox, &offline).await;
        assert_eq!(offline.output, "lo \ndone\n");
        assert!(
            listener.accept().is_err(),
            "a step reached the host's loopback"
        );
    }

    #[tokio::test]
    async fn a_sandbox_that_cannot_start_is_conveyors_failure_not_the_steps() {
        let sandbox = sandbox();
        let place = Place::new(&sandbox);
        std::fs::remove_dir_all(place.dir()).unwrap();
        let err = run(0, &step("true"), &place.workspace, &[], &sandbox, DAY, None)
            .await
            .unwrap_err();
        assert!(matches!(err, SandboxError::Unavailable(_)), "{err}");
        assert!(err.to_string().contains("CONVEYOR_SANDBOX=off"), "{err}");
    }

    #[tokio::test]
    async fn unconfined_steps_still_get_a_cleared_environment_and_their_limits() {
        // SAFETY: no other thread of this test reads or writes this variable.
        unsafe { std::env::set_var("GITHUB_WEBHOOK_SECRET_OFF_TEST", "hunter2") };
        let off = Sandbox::new(SandboxMode::Off, Vec::new());
        let place = Place::new(&off);
        let env = [("CONVEYOR_ISSUE_NUMBER".to_owned(), "7".to_owned())];
        let script = "echo \"$CONVEYOR_ISSUE_NUMBER:$GITHUB_WEBHOOK_SECRET_OFF_TEST\"; head -c 3000000 /dev/zero > big";
        let small = Step {
            limits: Limits {
                file_size_mb: 1,
                ..Limits::default()
            },
            ..step(script)
        };
        let result = place.run(&small, &env, &off).await;
        assert!(result.output.starts_with("7:\n"), "{}", result.output);
        assert!(
            !result.succeeded(),
            "the file size limit held: {}",
            result.output
        );
    }

    #[tokio::test]
    async fn an_approval_step_fails_instead_of_passing_unapproved() {
        let gate = Step::approval("review", Default::default());
        let off = Sandbox::new(SandboxMode::Off, Vec::new());
        let result = Place::new(&off).run(&gate, &[], &off).await;
        assert!(!result.succeeded());
        assert!(result.output.contains("approval"), "{}", result.output);
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
            out_of_budget: false,
            attempts: 1,
        };
        assert_eq!(result.tail(2), "b\nc");
        assert_eq!(result.tail(10), "a\nb\nc");
    }
}
