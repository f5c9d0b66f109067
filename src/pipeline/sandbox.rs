//! The one place that knows bubblewrap. Steps are untrusted code: each runs in namespaces of
//! its own (user, pid, mount, ipc, uts, network) as an unprivileged user, sees the system
//! read-only, its workspace at `/workspace` and nothing else of the host, and reaches the
//! internet only through a user-mode network stack that cannot reach the host's loopback.

use std::ffi::OsString;
use std::io::{PipeWriter, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::process::{Child, Command};

use super::definition::Limits;
use super::workspace::Workspace;

/// Where a step finds its workspace, whatever the host path.
pub const WORKSPACE: &str = "/workspace";
/// Where a step finds the files Conveyor hands it beside the work (its workspace's
/// [`Workspace::io_dir`]).
pub const IO: &str = "/conveyor";
/// A step's user inside the sandbox.
const SANDBOX_UID: u32 = 1000;
/// When Conveyor runs as root, the sandbox runs as `nobody` on the host: a process mapped to
/// root would pass every owner check on root's files (`/etc/shadow`, a key under `/etc`)
/// and is exempt from the process limit.
const HOST_UID_WHEN_ROOT: u32 = 65534;
/// slirp4netns's built-in DNS forwarder, which also serves hosts whose resolver is on loopback.
const SLIRP_DNS: &[u8] = b"nameserver 10.0.2.3\n";
const PATH: &str = "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin";
/// How long bubblewrap and the network stack get to come up before the step is given up.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// Tries at starting a sandbox before the step fails for want of one.
const START_ATTEMPTS: u32 = 3;
/// With the sandbox off, the host variables a step inherits; everything else (the App key,
/// the webhook secret, the database URL) stays out of reach.
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SandboxMode {
    On,
    /// Steps run as Conveyor's own user with only a cleared environment between them and
    /// the host: for hosts where bubblewrap cannot run, at the operator's risk.
    Off,
}

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error(
        "steps did not run: the sandbox could not start ({0}). Install bubblewrap and slirp4netns; when Conveyor runs as root, the sandbox runs as uid {HOST_UID_WHEN_ROOT}, which must be able to pass through every directory above CONVEYOR_DATA_DIR (for example a data dir under /var/lib, not /root); or set CONVEYOR_SANDBOX=off to run steps unconfined"
    )]
    Unavailable(String),
    #[error("steps did not run: could not start `sh`: {0}")]
    Spawn(std::io::Error),
}

/// What to run and how: the step's script, its workspace on the host, its environment
/// (the whole of it), network and limits.
pub struct StepCommand<'a> {
    pub script: &'a str,
    pub workspace: &'a Path,
    /// The workspace's exchange directory, mounted at [`IO`].
    pub io: Option<&'a Path>,
    pub env: &'a [(String, String)],
    pub network: bool,
    pub limits: Limits,
}

#[derive(Debug, Clone)]
pub struct Sandbox {
    mode: SandboxMode,
    /// Host files and directories under the mounted system trees (a key under `/etc`, say)
    /// that a step must not see: each is covered by an empty one.
    hidden: Vec<PathBuf>,
}

impl Sandbox {
    pub fn new(mode: SandboxMode, hidden: Vec<PathBuf>) -> Self {
        Self { mode, hidden }
    }

    pub fn mode(&self) -> SandboxMode {
        self.mode
    }

    /// The host user the sandbox runs as, when it is not Conveyor's own.
    fn host_owner(&self) -> Option<u32> {
        (self.mode == SandboxMode::On && running_as_root()).then_some(HOST_UID_WHEN_ROOT)
    }

    /// Makes the work tree of `workspace` the step's: owned by the sandbox's host user and
    /// reachable by it from the data dir (each directory on the way made traversable, not
    /// readable).
    pub fn hand_over(&self, workspace: &Workspace) -> std::io::Result<()> {
        let Some(owner) = self.host_owner() else {
            return Ok(());
        };
        for parent in workspace.route() {
            let mut permissions = std::fs::metadata(parent)?.permissions();
            permissions.set_mode(permissions.mode() | 0o111);
            std::fs::set_permissions(parent, permissions)?;
        }
        chown_tree(&workspace.repo_dir(), owner)?;
        chown_tree(&workspace.io_dir(), owner)
    }

    /// The path by which a step reaches `file` of the workspace's exchange directory `io`.
    pub fn step_path(&self, io: &Path, file: &str) -> String {
        match self.mode {
            SandboxMode::On => format!("{IO}/{file}"),
            SandboxMode::Off => io.join(file).to_string_lossy().into_owned(),
        }
    }

    /// Whether a step can run here: starts a sandbox (with its network) that runs `true`.
    pub async fn check(&self, scratch: &Path) -> Result<(), SandboxError> {
        let command = StepCommand {
            script: "true",
            workspace: scratch,
            io: None,
            env: &[],
            network: true,
            limits: Limits::default(),
        };
        let mut running = self.spawn(&command, None).await?;
        let status = running.wait().await.map_err(SandboxError::Spawn)?;
        if status.success() {
            Ok(())
        } else {
            Err(SandboxError::Unavailable(format!(
                "a trial step ended with {status}"
            )))
        }
    }

    /// Starts the step; its output (stdout and stderr) goes to `output`, or nowhere.
    pub async fn spawn(
        &self,
        step: &StepCommand<'_>,
        output: Option<&PipeWriter>,
    ) -> Result<Running, SandboxError> {
        let copy = |pipe: &PipeWriter| pipe.try_clone().map_err(SandboxError::Spawn);
        if self.mode == SandboxMode::Off {
            let (stdout, stderr) = match output {
                Some(pipe) => (copy(pipe)?.into(), copy(pipe)?.into()),
                None => (Stdio::null(), Stdio::null()),
            };
            return spawn_unconfined(step, stdout, stderr);
        }
        let mut attempt = 1;
        loop {
            let output = match output {
                Some(pipe) => OwnedFd::from(copy(pipe)?),
                None => {
                    OwnedFd::from(std::fs::File::create("/dev/null").map_err(SandboxError::Spawn)?)
                }
            };
            match self.spawn_confined(step, output).await {
                // The step has not run, so a sandbox that did not come up (a namespace the
                // kernel could not make just then) can be tried again before the run fails.
                Err(SandboxError::Unavailable(why)) if attempt < START_ATTEMPTS => {
                    tracing::warn!(attempt, error = %why, "the step's sandbox did not start; trying again");
                    tokio::time::sleep(Duration::from_millis(50 * u64::from(attempt))).await;
                    attempt += 1;
                }
                result => return result,
            }
        }
    }

    /// Starts the step in a new sandbox, its output to `output`. bubblewrap's own messages go
    /// elsewhere, so that a sandbox that failed to start leaves nothing in the step's output.
    async fn spawn_confined(
        &self,
        step: &StepCommand<'_>,
        output: OwnedFd,
    ) -> Result<Running, SandboxError> {
        let unavailable =
            |what: &str, err: std::io::Error| SandboxError::Unavailable(format!("{what}: {err}"));
        let (info_read, info_write) = pipe().map_err(|e| unavailable("pipe", e))?;
        let (block_read, block_write) = pipe().map_err(|e| unavailable("pipe", e))?;
        let (go_read, go_write) = pipe().map_err(|e| unavailable("pipe", e))?;
        let resolv = if step.network {
            let (read, write) = pipe().map_err(|e| unavailable("pipe", e))?;
            write_and_close(write, SLIRP_DNS).map_err(|e| unavailable("pipe", e))?;
            Some(read)
        } else {
            None
        };
        let (diagnostics_read, diagnostics_write) = pipe().map_err(|e| unavailable("pipe", e))?;
        let (started_read, started_write) = pipe().map_err(|e| unavailable("pipe", e))?;
        let mut inherited = vec![
            (info_write.as_raw_fd(), Fds::INFO),
            (block_read.as_raw_fd(), Fds::BLOCK),
            (output.as_raw_fd(), Fds::OUTPUT),
            (started_write.as_raw_fd(), Fds::STARTED),
            (go_read.as_raw_fd(), Fds::GO),
        ];
        inherited.extend(resolv.as_ref().map(|fd| (fd.as_raw_fd(), Fds::RESOLV)));
        let diagnostics_copy = diagnostics_write
            .try_clone()
            .map_err(|e| unavailable("pipe", e))?;

        let mut command = Command::new("bwrap");
        command
            .args(self.bwrap_args(step))
            .current_dir("/")
            // bubblewrap is pid 1 inside and its environment is readable there: it gets
            // exactly the step's.
            .env_clear()
            .envs(sandbox_env(step.env))
            .stdin(Stdio::null())
            .stdout(diagnostics_write)
            .stderr(diagnostics_copy)
            .process_group(0)
            .kill_on_drop(true);
        if let Some(owner) = self.host_owner() {
            command.uid(owner).gid(owner);
        }
        // SAFETY: the closure only calls fcntl, dup2 and close, which are async-signal-safe.
        unsafe {
            command.pre_exec(move || remap(&inherited));
        }
        let child = command.spawn().map_err(|e| unavailable("bwrap", e))?;
        // The child holds its own copies; ours must go for the pipes to report EOF.
        drop(command);
        drop((
            info_write,
            block_read,
            resolv,
            output,
            started_write,
            go_read,
        ));
        let mut running = Running::new(child);
        let diagnostics = tokio::task::spawn_blocking(move || read_bounded(diagnostics_read));
        let failed = |what: String, diagnostics: tokio::task::JoinHandle<String>| async move {
            let said = diagnostics.await.unwrap_or_default();
            SandboxError::Unavailable(format!("{what}: {}", said.trim()))
        };

        let pid = match tokio::time::timeout(
            START_TIMEOUT,
            tokio::task::spawn_blocking(move || read_child_pid(info_read)),
        )
        .await
        {
            Ok(Ok(Some(pid))) => pid,
            _ => {
                let status = running.stop_and_wait().await;
                let what = format!("bwrap exited with {status} before the step started");
                return Err(failed(what, diagnostics).await);
            }
        };
        // The sandbox's pid 1 waits on the block pipe, so it cannot have exited and its pid
        // cannot have been reused yet.
        running.pid1 = pidfd_open(pid).ok();
        // bubblewrap reports pid 1 before it sets anything up: the sandbox is ready only when
        // the prelude says so from inside. Only then does the network stack configure the
        // namespace; bubblewrap's own setup (the loopback address) done at the same time
        // fails now and then.
        let ready = match write_and_close(block_write, b"go") {
            Ok(()) => tokio::time::timeout(
                START_TIMEOUT,
                tokio::task::spawn_blocking(move || read_byte(started_read)),
            )
            .await
            .is_ok_and(|read| matches!(read, Ok(Ok(true)))),
            Err(_) => false,
        };
        if !ready {
            let status = running.stop_and_wait().await;
            let what = format!("bwrap exited with {status} before the step started");
            return Err(failed(what, diagnostics).await);
        }
        if step.network {
            match start_network(pid).await {
                Ok(network) => running.network = Some(network),
                Err(err) => {
                    running.stop_and_wait().await;
                    return Err(SandboxError::Unavailable(format!(
                        "the step's network (slirp4netns): {err}"
                    )));
                }
            }
        }
        if let Err(err) = write_and_close(go_write, b"go\n") {
            running.stop_and_wait().await;
            return Err(failed(format!("starting the step: {err}"), diagnostics).await);
        }
        Ok(running)
    }

    fn bwrap_args(&self, step: &StepCommand<'_>) -> Vec<OsString> {
        let mut args = Args::default();
        args.add([
            "--unshare-user",
            "--unshare-pid",
            "--unshare-ipc",
            "--unshare-uts",
        ]);
        args.add(["--unshare-net", "--unshare-cgroup-try"]);
        args.add(["--uid", &SANDBOX_UID.to_string()]);
        args.add(["--gid", &SANDBOX_UID.to_string()]);
        args.add([
            "--hostname",
            "conveyor-step",
            "--die-with-parent",
            "--new-session",
        ]);
        args.add(["--ro-bind", "/usr", "/usr", "--ro-bind", "/etc", "/etc"]);
        for top in ["/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"] {
            match std::fs::read_link(top) {
                Ok(target) => {
                    args.add(["--symlink"]);
                    args.path(&target);
                    args.add([top]);
                }
                Err(_) if Path::new(top).is_dir() => args.add(["--ro-bind", top, top]),
                Err(_) => {}
            }
        }
        for hidden in self.hidden.iter().filter(|path| path.exists()) {
            if hidden.is_dir() {
                args.add(["--tmpfs"]);
            } else {
                args.add(["--ro-bind", "/dev/null"]);
            }
            args.path(hidden);
        }
        if step.network {
            args.add(["--ro-bind-data", &Fds::RESOLV.to_string()]);
            args.add(["/etc/resolv.conf"]);
        }
        args.add(["--proc", "/proc", "--tmpfs", "/tmp", "--tmpfs", "/dev"]);
        // Device nodes one by one: mounting a devpts (`--dev`) would make bubblewrap nest a
        // second user namespace, which the network stack then cannot join.
        for device in ["null", "zero", "full", "random", "urandom"] {
            let path = format!("/dev/{device}");
            args.add(["--dev-bind", &path, &path]);
        }
        args.add([
            "--symlink",
            "/proc/self/fd",
            "/dev/fd",
            "--tmpfs",
            "/dev/shm",
        ]);
        args.add(["--bind"]);
        args.path(step.workspace);
        args.add([WORKSPACE, "--chdir", WORKSPACE]);
        if let Some(io) = step.io {
            args.add(["--bind"]);
            args.path(io);
            args.add([IO]);
        }
        args.add(["--info-fd", &Fds::INFO.to_string()]);
        args.add(["--block-fd", &Fds::BLOCK.to_string()]);
        // Inside, before the step: its output goes to its own descriptor, not to
        // bubblewrap's streams; it says the sandbox is ready and waits for the word to go.
        let (output, started, go) = (Fds::OUTPUT, Fds::STARTED, Fds::GO);
        let prelude = format!(
            "exec >&{output} 2>&{output} {output}>&-; printf x >&{started}; exec {started}>&-; \
             read go <&{go} || exit 125; exec {go}<&-; exec \"$@\""
        );
        args.add(["--", "sh", "-c", &prelude, "sh"]);
        // Limits are set inside, on the step's own user: set on bubblewrap they would count
        // every sandbox of the host user together.
        let limits = step.limits;
        args.add(["prlimit"]);
        args.add([format!("--as={}", limits.memory_mb << 20).as_str()]);
        args.add([format!("--nproc={}", limits.processes).as_str()]);
        args.add([format!("--fsize={}", limits.file_size_mb << 20).as_str()]);
        args.add(["--core=0", "--", "sh", "-c", step.script]);
        args.0
    }
}

/// The descriptors bubblewrap inherits, at fixed numbers: `sh` takes one digit only.
struct Fds;

impl Fds {
    /// Where bubblewrap reports the sandbox's pid 1.
    const INFO: RawFd = 3;
    /// What bubblewrap waits on before it starts the step.
    const BLOCK: RawFd = 4;
    /// The step's stdout and stderr.
    const OUTPUT: RawFd = 5;
    /// Where the prelude says the sandbox is ready.
    const STARTED: RawFd = 6;
    /// The `/etc/resolv.conf` of a step with network.
    const RESOLV: RawFd = 7;
    /// What the prelude waits on before it runs the step: the network is up.
    const GO: RawFd = 8;
}

/// bubblewrap's arguments.
#[derive(Default)]
struct Args(Vec<OsString>);

impl Args {
    fn add<'a>(&mut self, args: impl IntoIterator<Item = &'a str>) {
        self.0.extend(args.into_iter().map(OsString::from));
    }

    fn path(&mut self, path: &Path) {
        self.0.push(path.as_os_str().to_owned());
    }
}

/// The whole environment of a sandboxed step: a fixed base and the task's variables.
fn sandbox_env(task: &[(String, String)]) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = [
        ("PATH", PATH),
        ("HOME", "/tmp"),
        ("TMPDIR", "/tmp"),
        ("LANG", "C.UTF-8"),
    ]
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .to_vec();
    env.extend(task.iter().cloned());
    env
}

fn spawn_unconfined(
    step: &StepCommand<'_>,
    stdout: Stdio,
    stderr: Stdio,
) -> Result<Running, SandboxError> {
    let limits = step.limits;
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(step.script)
        .current_dir(step.workspace)
        .env_clear()
        .envs(
            INHERITED_ENV
                .iter()
                .filter_map(|name| std::env::var(name).ok().map(|v| (*name, v))),
        )
        .envs(step.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .process_group(0)
        .kill_on_drop(true);
    // SAFETY: setrlimit is async-signal-safe.
    unsafe {
        command.pre_exec(move || {
            set_limit(libc::RLIMIT_AS, limits.memory_mb << 20)?;
            set_limit(libc::RLIMIT_NPROC, limits.processes)?;
            set_limit(libc::RLIMIT_FSIZE, limits.file_size_mb << 20)?;
            set_limit(libc::RLIMIT_CORE, 0)
        });
    }
    let child = command.spawn().map_err(SandboxError::Spawn)?;
    drop(command);
    Ok(Running::new(child))
}

fn set_limit(resource: libc::__rlimit_resource_t, value: u64) -> std::io::Result<()> {
    let limit = libc::rlimit {
        rlim_cur: value,
        rlim_max: value,
    };
    // SAFETY: setrlimit reads the struct we pass.
    if unsafe { libc::setrlimit(resource, &limit) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// A step's processes. Dropping it ends every one of them: the sandbox's pid 1 is killed,
/// and with it its whole pid namespace, `setsid` and double-forked children included.
pub struct Running {
    child: Child,
    group: Option<i32>,
    pid1: Option<OwnedFd>,
    network: Option<Network>,
}

impl Running {
    fn new(child: Child) -> Self {
        let group = child.id().map(|pid| pid as i32);
        Self {
            child,
            group,
            pid1: None,
            network: None,
        }
    }

    pub async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        self.child.wait().await
    }

    async fn stop_and_wait(&mut self) -> String {
        self.kill();
        match self.child.wait().await {
            Ok(status) => status.to_string(),
            Err(err) => err.to_string(),
        }
    }

    fn kill(&mut self) {
        if let Some(pid1) = &self.pid1 {
            // SAFETY: pidfd_send_signal only signals the process the pidfd refers to, which
            // cannot be another process even after it exited.
            unsafe {
                libc::syscall(
                    libc::SYS_pidfd_send_signal,
                    pid1.as_raw_fd(),
                    libc::SIGKILL,
                    std::ptr::null::<libc::siginfo_t>(),
                    0,
                );
            }
        }
        if let Some(group) = self.group {
            // SAFETY: killpg only sends a signal; a group that no longer exists yields ESRCH.
            unsafe {
                libc::killpg(group, libc::SIGKILL);
            }
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.kill();
    }
}

/// slirp4netns serving one sandbox; it exits when its exit pipe closes or it is killed.
struct Network {
    _process: Child,
    _exit: OwnedFd,
}

async fn start_network(pid: i32) -> std::io::Result<Network> {
    let (ready_read, ready_write) = pipe()?;
    let (exit_read, exit_write) = pipe()?;
    const READY: RawFd = 3;
    const EXIT: RawFd = 4;
    let inherited = [
        (ready_write.as_raw_fd(), READY),
        (exit_read.as_raw_fd(), EXIT),
    ];
    let mut command = Command::new("slirp4netns");
    command
        .args(["--configure", "--mtu=65520", "--disable-host-loopback"])
        .arg("--enable-seccomp")
        .arg(format!("--ready-fd={READY}"))
        .arg(format!("--exit-fd={EXIT}"))
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    // Its own mount namespace and dropped capabilities need root; unprivileged, it has
    // neither to give up.
    if running_as_root() {
        command.arg("--enable-sandbox");
    }
    command.arg(pid.to_string()).arg("tap0");
    // SAFETY: the closure only calls fcntl, dup2 and close, which are async-signal-safe.
    unsafe {
        command.pre_exec(move || remap(&inherited));
    }
    let mut process = command.spawn()?;
    drop(command);
    drop((ready_write, exit_read));
    let ready = tokio::time::timeout(
        START_TIMEOUT,
        tokio::task::spawn_blocking(move || read_byte(ready_read)),
    )
    .await;
    if !matches!(ready, Ok(Ok(Ok(true)))) {
        let _ = process.start_kill();
        let mut message = String::new();
        if let Some(mut stderr) = process.stderr.take() {
            use tokio::io::AsyncReadExt;
            let _ = stderr.read_to_string(&mut message).await;
        }
        return Err(std::io::Error::other(format!(
            "did not come up: {}",
            message.trim()
        )));
    }
    Ok(Network {
        _process: process,
        _exit: exit_write,
    })
}

/// Reads bubblewrap's `--info-fd` report up to the sandbox's pid 1 (as the host sees it);
/// `None` when bubblewrap exited without starting one.
fn read_child_pid(info: OwnedFd) -> Option<i32> {
    #[derive(serde::Deserialize)]
    struct Info {
        #[serde(rename = "child-pid")]
        child_pid: i32,
    }
    let mut file = std::fs::File::from(info);
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 512];
    loop {
        let n = file.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..n]);
        // The descriptor stays open in the sandbox until the step starts: parse as it comes.
        if let Ok(info) = serde_json::from_slice::<Info>(&buffer) {
            return Some(info.child_pid);
        }
    }
}

/// What bubblewrap says, kept to a few kilobytes.
fn read_bounded(pipe: OwnedFd) -> String {
    let mut said = Vec::new();
    let _ = std::fs::File::from(pipe)
        .take(8 * 1024)
        .read_to_end(&mut said);
    String::from_utf8_lossy(&said).into_owned()
}

/// In a just-forked child, puts each descriptor `from` at number `to`, open across exec.
fn remap(fds: &[(RawFd, RawFd)]) -> std::io::Result<()> {
    let check = |result: libc::c_int| {
        if result == -1 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(result)
        }
    };
    // First out of the way of every target, then into place.
    let mut moved = [0; 8];
    for (slot, &(from, _)) in moved.iter_mut().zip(fds) {
        // SAFETY: F_DUPFD makes a new descriptor in the child; nothing else is touched.
        *slot = check(unsafe { libc::fcntl(from, libc::F_DUPFD, 64) })?;
    }
    for (&moved, &(_, to)) in moved.iter().zip(fds) {
        // SAFETY: dup2 and close act on the child's own descriptors.
        unsafe {
            check(libc::dup2(moved, to))?;
            check(libc::close(moved))?;
        }
    }
    Ok(())
}

/// Whether one byte arrives before the other end closes.
fn read_byte(pipe: OwnedFd) -> std::io::Result<bool> {
    let mut byte = [0u8; 1];
    Ok(std::fs::File::from(pipe).read(&mut byte)? == 1)
}

fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the array we own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } == -1 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn pidfd_open(pid: i32) -> std::io::Result<OwnedFd> {
    // SAFETY: pidfd_open returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the descriptor was just created and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

fn write_and_close(fd: OwnedFd, bytes: &[u8]) -> std::io::Result<()> {
    std::io::Write::write_all(&mut std::fs::File::from(fd), bytes)
}

fn running_as_root() -> bool {
    // SAFETY: geteuid only reads the caller's credentials.
    unsafe { libc::geteuid() == 0 }
}

fn chown_tree(path: &Path, owner: u32) -> std::io::Result<()> {
    std::os::unix::fs::lchown(path, Some(owner), Some(owner))?;
    if std::fs::symlink_metadata(path)?.is_dir() {
        for entry in std::fs::read_dir(path)? {
            chown_tree(&entry?.path(), owner)?;
        }
    }
    Ok(())
}
