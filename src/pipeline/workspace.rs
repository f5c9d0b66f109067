//! Ephemeral workspaces under `CONVEYOR_DATA_DIR/workspaces`, removed when dropped; those a
//! killed process left behind are removed when the next process starts.
//!
//! Each process keeps its workspaces in a directory of its own and holds an exclusive lock
//! on a file beside it for as long as it lives: a directory whose lock can be taken belongs
//! to a process that is gone.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use tempfile::TempDir;

const LOCK_SUFFIX: &str = ".lock";
const REPO: &str = "repo";
const GIT: &str = "git";
const IO: &str = "io";

/// This process's workspaces.
pub struct Workspaces {
    data_dir: PathBuf,
    /// This process's directory and the lock file held for its life (the lock goes with the
    /// descriptor); made with the first workspace, so that a data dir that is not usable yet
    /// fails runs, not the start of the service.
    own: Mutex<Option<(PathBuf, File)>>,
}

impl Workspaces {
    /// Removes the workspaces of dead processes.
    pub fn open(data_dir: &Path) -> Self {
        // Workspace paths are absolute; so must the data dir be for `Workspace::route`.
        let data_dir = std::path::absolute(data_dir).unwrap_or_else(|_| data_dir.to_owned());
        match remove_abandoned(&workspaces_dir(&data_dir)) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
                tracing::warn!(error = %err, "could not remove workspaces left behind");
            }
            _ => {}
        }
        Self {
            data_dir,
            own: Mutex::new(None),
        }
    }

    pub fn create(&self) -> std::io::Result<Workspace> {
        let mut own = self.own.lock().expect("workspace lock");
        let dir = match &*own {
            Some((dir, _)) => dir.clone(),
            None => {
                let claimed = claim(&workspaces_dir(&self.data_dir))?;
                let dir = claimed.0.clone();
                *own = Some(claimed);
                dir
            }
        };
        let run = tempfile::Builder::new().prefix("run-").tempdir_in(&dir)?;
        std::fs::create_dir(run.path().join(REPO))?;
        std::fs::create_dir(run.path().join(IO))?;
        Ok(Workspace {
            dir: run,
            data_dir: self.data_dir.clone(),
        })
    }
}

/// Makes a directory for this process's workspaces beside a lock file it holds.
fn claim(root: &Path) -> std::io::Result<(PathBuf, File)> {
    std::fs::create_dir_all(root)?;
    let name = format!("p{}-{:08x}", std::process::id(), fastrand::u32(..));
    let lock = File::create(root.join(format!("{name}{LOCK_SUFFIX}")))?;
    if !flock(&lock, false)? {
        return Err(std::io::Error::other("workspace lock is taken"));
    }
    let dir = root.join(name);
    std::fs::create_dir(&dir)?;
    Ok((dir, lock))
}

pub struct Workspace {
    dir: TempDir,
    data_dir: PathBuf,
}

impl Workspace {
    /// The work tree: the steps' to change, mounted in their sandbox.
    pub fn repo_dir(&self) -> PathBuf {
        self.dir.path().join(REPO)
    }

    /// Where Conveyor and the steps hand each other files that are no part of the work (a
    /// rendered prompt, questions and answers): mounted in the sandbox, never committed.
    pub fn io_dir(&self) -> PathBuf {
        self.dir.path().join(IO)
    }

    /// Conveyor's own git directory for the work tree, out of the steps' reach.
    pub fn git_dir(&self) -> PathBuf {
        self.dir.path().join(GIT)
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The directories from the data dir down to this workspace, which the sandbox's user
    /// must be able to pass through to reach the work tree.
    pub fn route(&self) -> Vec<&Path> {
        let mut route: Vec<&Path> = self
            .dir
            .path()
            .ancestors()
            .take_while(|dir| dir.starts_with(&self.data_dir))
            .collect();
        route.reverse();
        route
    }
}

pub fn workspaces_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("workspaces")
}

fn remove_abandoned(root: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(root)? {
        let path = entry?.path();
        let Some(owner) = path
            .file_name()
            .and_then(|name| name.to_str())
            .and_then(|name| name.strip_suffix(LOCK_SUFFIX))
        else {
            continue;
        };
        let Ok(lock) = File::open(&path) else {
            continue;
        };
        if flock(&lock, false)? {
            let dir = root.join(owner);
            if dir.exists() {
                tracing::info!(dir = %dir.display(), "removing workspaces a stopped process left behind");
                std::fs::remove_dir_all(&dir)?;
            }
            std::fs::remove_file(&path)?;
        }
    }
    Ok(())
}

/// Takes the exclusive flock on `file`: waiting for whoever holds it (in this process or
/// another) when `wait`, else only if nobody does. The lock goes with the descriptor.
pub(super) fn flock(file: &File, wait: bool) -> std::io::Result<bool> {
    let operation = if wait {
        libc::LOCK_EX
    } else {
        libc::LOCK_EX | libc::LOCK_NB
    };
    loop {
        // SAFETY: flock only acts on the descriptor we pass.
        if unsafe { libc::flock(file.as_raw_fd(), operation) } == 0 {
            return Ok(true);
        }
        let err = std::io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EWOULDBLOCK) => return Ok(false),
            Some(libc::EINTR) => continue,
            _ => return Err(err),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runs_in(data: &Path) -> Vec<PathBuf> {
        let mut runs = Vec::new();
        for owner in std::fs::read_dir(workspaces_dir(data)).unwrap() {
            let owner = owner.unwrap().path();
            if owner.is_dir() {
                runs.extend(std::fs::read_dir(owner).unwrap().map(|e| e.unwrap().path()));
            }
        }
        runs
    }

    #[test]
    fn is_removed_when_dropped() {
        let data = tempfile::tempdir().unwrap();
        let workspaces = Workspaces::open(data.path());
        let workspace = workspaces.create().unwrap();
        assert_eq!(workspace.route().first(), Some(&data.path()));
        assert_eq!(workspace.route().last(), Some(&workspace.path()));
        std::fs::create_dir_all(workspace.repo_dir().join("src")).unwrap();
        assert_eq!(runs_in(data.path()).len(), 1);
        drop(workspace);
        assert!(runs_in(data.path()).is_empty());
    }

    #[test]
    fn a_relative_data_dir_still_gives_the_whole_route() {
        let here = std::env::current_dir().unwrap();
        let data = tempfile::tempdir_in(&here).unwrap();
        let relative = data.path().strip_prefix(&here).unwrap();
        let workspace = Workspaces::open(relative).create().unwrap();
        assert_eq!(workspace.route().first(), Some(&data.path()));
        assert_eq!(workspace.route().len(), 4, "{:?}", workspace.route());
    }

    #[test]
    fn a_dead_processs_workspaces_are_removed_and_a_live_ones_kept() {
        let data = tempfile::tempdir().unwrap();
        let live = Workspaces::open(data.path());
        let kept = live.create().unwrap();
        // A killed process runs no destructors: its workspace and lock file stay, and
        // nobody holds the lock. Laid out by hand rather than by dropping a `Workspaces`,
        // because another test's child, forked in between, may share the dropped lock's
        // descriptor for a moment.
        let root = workspaces_dir(data.path());
        let left = root.join("p1-dead").join("run-left");
        std::fs::create_dir_all(left.join(REPO)).unwrap();
        File::create(root.join(format!("p1-dead{LOCK_SUFFIX}"))).unwrap();

        let _next = Workspaces::open(data.path());
        assert!(!left.exists(), "a dead process's workspace survived");
        assert!(!root.join(format!("p1-dead{LOCK_SUFFIX}")).exists());
        assert!(
            kept.repo_dir().exists(),
            "a live process's workspace was removed"
        );
    }
}
