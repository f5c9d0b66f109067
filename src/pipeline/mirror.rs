//! The mirror cache: one bare mirror of each repository under `CONVEYOR_DATA_DIR/mirrors`
//! (`<installation>/<owner>/<repo>.git`), from which a run's git directory is made by a local
//! clone rather than a clone from the remote.
//!
//! - A mirror is only written (made, fetched, repaired, evicted) under an exclusive flock on
//!   the lock file beside it, so the processes sharing a data dir take turns. A caller that
//!   waited while another fetched uses that fetch if it began after the caller asked: it saw
//!   the remote at least as recently as the caller's own would have.
//! - A workspace's objects are hard links to the mirror's files, which git never changes once
//!   written: a later fetch, repack, repair or eviction of the mirror takes nothing from a
//!   live workspace, so none of them waits for runs to end. The steps get a `--no-hardlinks`
//!   copy of the workspace (`Git::copy_for_steps`), and the mirrors are never mounted in the
//!   sandbox.
//! - A mirror appears under its name only whole: it is made beside it and renamed into place,
//!   and discarded by renaming it away before it is deleted.
//! - A workspace's git directory is made from the mirror's files directly (`linked.rs`): hard
//!   links and two small files, no git process.
//! - A mirror git cannot fetch into or a workspace cannot be made from (it does not open, a
//!   pack is damaged, a ref is garbage) is discarded and cloned again: a broken cache costs a
//!   clone, never a run. Only when the fresh clone fails too is the remote at fault.
//! - Every fetch adds a pack; once there are [`TIDY_AT_PACKS`] the mirror is repacked, after
//!   the workspace is made (still under the lock), so that no run waits for it.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use super::git::{Git, GitError};
use super::linked::{self, LinkError};
use super::workspace::flock;

/// When the mirror's last fetch began, in nanoseconds since the epoch.
const FETCHED: &str = "conveyor-fetched";
/// Its modification time is when a workspace was last made from the mirror.
const USED: &str = "conveyor-used";
const MIRROR_SUFFIX: &str = ".git";
/// Joins a mirror's name to what is made beside it; no repository name holds it.
const BESIDE: char = '+';
/// Packs (one per fetch) at which the mirror is repacked: git's own `gc.autoPackLimit`.
/// Fetches never leave loose objects (see [`Git::fetch_mirror`]), so packs are all that grow.
const TIDY_AT_PACKS: usize = 50;

#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    /// The repository could not be cloned from its remote.
    #[error(transparent)]
    Remote(#[from] GitError),
    /// The mirrors directory cannot be used.
    #[error("mirror cache: {0}")]
    Local(#[from] std::io::Error),
}

/// A repository to mirror: where it is fetched from and where its mirror lives.
#[derive(Debug, Clone)]
pub struct Origin {
    url: String,
    /// The mirror's directory, relative to the mirrors directory.
    path: PathBuf,
}

impl Origin {
    /// Repository `owner/name` of GitHub installation `installation`, at `url`. Installations
    /// never share a mirror: each fetches with its own token, and reaches its own repositories.
    pub fn installation(installation: i64, owner: &str, name: &str, url: &str) -> Self {
        let path = PathBuf::from(installation.to_string())
            .join(segment(owner))
            .join(format!("{}{MIRROR_SUFFIX}", segment(name)));
        Self {
            url: url.to_owned(),
            path,
        }
    }

    /// A repository outside any installation (`conveyor run`), known by its URL alone.
    pub fn local(url: &str) -> Self {
        let digest = hex::encode(&Sha256::digest(url.as_bytes())[..8]);
        Self {
            url: url.to_owned(),
            path: PathBuf::from("local").join(format!("{digest}{MIRROR_SUFFIX}")),
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }
}

/// A name as one path segment. GitHub's names are ASCII letters, digits, `.`, `-` and `_`,
/// the same whatever their case; anything else (a `/`, a leading `.`) is escaped.
fn segment(name: &str) -> String {
    let mut segment: String = name
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '%'
            }
        })
        .collect();
    if segment.is_empty() || segment.starts_with('.') {
        segment.insert(0, '%');
    }
    segment
}

/// What the mirror needed before a workspace was made from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refresh {
    /// There was no mirror: it was cloned.
    Cloned,
    /// It was fetched.
    Fetched,
    /// Another caller's fetch, begun after this one asked, was enough.
    Shared,
    /// It was broken: discarded and cloned again.
    Repaired,
}

/// A workspace's git directory made from a mirror.
#[derive(Debug)]
pub struct Made {
    /// The remote's default branch head, where the git directory's `HEAD` is detached.
    pub default_head: String,
    pub refresh: Refresh,
}

/// The mirrors of a data dir, within a budget of bytes on disk.
pub struct Mirrors {
    root: PathBuf,
    budget_bytes: u64,
}

impl Mirrors {
    pub fn open(data_dir: &Path, budget_bytes: u64) -> Self {
        let data_dir = std::path::absolute(data_dir).unwrap_or_else(|_| data_dir.to_owned());
        Self {
            root: data_dir.join("mirrors"),
            budget_bytes,
        }
    }

    /// Where the mirror of `origin` lives, whether or not it exists.
    pub fn mirror_dir(&self, origin: &Origin) -> PathBuf {
        self.root.join(&origin.path)
    }

    /// Brings the mirror of `origin` up to date, or makes it, and makes the new bare
    /// `git_dir` from it with the remote's branches and default head. Then evicts the least
    /// recently used mirrors beyond the budget.
    pub async fn workspace(
        &self,
        git: &Git,
        origin: &Origin,
        git_dir: &Path,
    ) -> Result<Made, MirrorError> {
        let asked = SystemTime::now();
        let dir = self.mirror_dir(origin);
        let lock = hold(&dir).await?;
        remove_leftovers(&dir)?;
        let mut refresh = refresh(git, origin, &dir, asked).await?;
        let default_head = match link(&dir, git_dir).await {
            Ok(head) => head,
            Err(err) => {
                tracing::warn!(mirror = %dir.display(), error = %err, "no workspace could be made from the mirror: cloning the remote again");
                remove_any(git_dir)?;
                replace(git, origin, &dir).await?;
                refresh = Refresh::Repaired;
                link(&dir, git_dir).await.map_err(|err| match err {
                    // A fresh clone without it: the remote's repository is empty.
                    LinkError::NoDefaultHead => MirrorError::Remote(GitError {
                        action: "clone",
                        message: err.to_string(),
                    }),
                    LinkError::Io(err) => MirrorError::Local(err),
                    LinkError::Damaged(_) => MirrorError::Local(std::io::Error::other(err)),
                })?
            }
        };
        File::create(dir.join(USED))?.set_modified(SystemTime::now())?;
        if refresh == Refresh::Fetched
            && pack_count(&dir)? >= TIDY_AT_PACKS
            && let Err(err) = git.tidy(&dir).await
        {
            tracing::warn!(mirror = %dir.display(), error = %err, "could not repack the mirror");
        }
        drop(lock);
        let (root, budget) = (self.root.clone(), self.budget_bytes);
        let evicted = tokio::task::spawn_blocking(move || evict(&root, budget, &dir)).await;
        match evicted {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::warn!(error = %err, "could not evict mirrors over the budget"),
            Err(err) => tracing::warn!(error = %err, "mirror eviction stopped"),
        }
        Ok(Made {
            default_head,
            refresh,
        })
    }
}

/// Makes the mirror in `dir` current enough for a caller that asked at `asked`.
async fn refresh(
    git: &Git,
    origin: &Origin,
    dir: &Path,
    asked: SystemTime,
) -> Result<Refresh, MirrorError> {
    if std::fs::symlink_metadata(dir).is_err() {
        replace(git, origin, dir).await?;
        return Ok(Refresh::Cloned);
    }
    if fetched_at(dir).is_some_and(|at| at >= asked) {
        return Ok(Refresh::Shared);
    }
    let started = SystemTime::now();
    if let Err(err) = git.fetch_mirror(dir, &origin.url).await {
        // The remote or the mirror failed (git cannot open it, a pack is damaged; a ref whose
        // commit is missing is fetched again instead): a fresh clone tells which, and if the
        // remote did, the mirror is kept for when it is back.
        tracing::warn!(mirror = %dir.display(), error = %err, "fetching into the mirror failed: trying a fresh clone");
        replace(git, origin, dir).await?;
        return Ok(Refresh::Repaired);
    }
    stamp(dir, started)?;
    Ok(Refresh::Fetched)
}

/// Makes the workspace's `git_dir` from the mirror in `dir`, off the async threads.
async fn link(dir: &Path, git_dir: &Path) -> Result<String, LinkError> {
    let (dir, git_dir) = (dir.to_owned(), git_dir.to_owned());
    tokio::task::spawn_blocking(move || linked::make(&dir, &git_dir))
        .await
        .map_err(|err| LinkError::Io(std::io::Error::other(err)))?
}

fn pack_count(dir: &Path) -> std::io::Result<usize> {
    let mut packs = 0;
    for entry in std::fs::read_dir(dir.join("objects/pack"))? {
        if entry?.path().extension().is_some_and(|ext| ext == "pack") {
            packs += 1;
        }
    }
    Ok(packs)
}

/// Clones `origin` beside `dir` and puts the clone in its place.
async fn replace(git: &Git, origin: &Origin, dir: &Path) -> Result<(), MirrorError> {
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let fresh = beside(dir, "new");
    let started = SystemTime::now();
    let cloned = async {
        git.init_mirror(&fresh).await?;
        git.fetch_mirror(&fresh, &origin.url).await
    }
    .await;
    if let Err(err) = cloned {
        remove_any(&fresh)?;
        return Err(err.into());
    }
    stamp(&fresh, started)?;
    discard(dir)?;
    std::fs::rename(&fresh, dir)?;
    Ok(())
}

/// A new name beside `dir`, for something made or removed in its stead.
fn beside(dir: &Path, what: &str) -> PathBuf {
    let name = dir.file_name().unwrap_or_default().to_string_lossy();
    dir.with_file_name(format!("{name}{BESIDE}{what}-{:08x}", fastrand::u32(..)))
}

/// Renames `dir` away, then deletes it, so that no half-deleted mirror is ever under its name.
fn discard(dir: &Path) -> std::io::Result<()> {
    if std::fs::symlink_metadata(dir).is_err() {
        return Ok(());
    }
    let gone = beside(dir, "old");
    std::fs::rename(dir, &gone)?;
    remove_any(&gone)
}

/// What a process stopped half-way left beside `dir` (only ever made under its lock).
fn remove_leftovers(dir: &Path) -> std::io::Result<()> {
    let (Some(parent), Some(name)) = (dir.parent(), dir.file_name()) else {
        return Ok(());
    };
    let prefix = format!("{}{BESIDE}", name.to_string_lossy());
    let entries = match std::fs::read_dir(parent) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(err) => return Err(err),
    };
    for entry in entries {
        let entry = entry?;
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            tracing::info!(path = %entry.path().display(), "removing what an interrupted mirror update left");
            remove_any(&entry.path())?;
        }
    }
    Ok(())
}

fn remove_any(path: &Path) -> std::io::Result<()> {
    let removed = match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(err) => Err(err),
    };
    match removed {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(err),
        _ => Ok(()),
    }
}

fn lock_path(dir: &Path) -> PathBuf {
    let name = dir.file_name().unwrap_or_default().to_string_lossy();
    dir.with_file_name(format!("{name}.lock"))
}

/// Waits, off the async threads, for the exclusive lock of the mirror in `dir`.
async fn hold(dir: &Path) -> std::io::Result<File> {
    let path = lock_path(dir);
    let taken = tokio::task::spawn_blocking(move || {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let file = open_lock(&path)?;
        flock(&file, true)?;
        Ok(file)
    })
    .await;
    taken.map_err(std::io::Error::other)?
}

/// Lock files stay for good: one deleted while another process waits on it would let two
/// processes hold "the" lock at once.
fn open_lock(path: &Path) -> std::io::Result<File> {
    File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
}

fn stamp(dir: &Path, fetch_began: SystemTime) -> std::io::Result<()> {
    let nanos = fetch_began
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    std::fs::write(dir.join(FETCHED), nanos.to_string())
}

fn fetched_at(dir: &Path) -> Option<SystemTime> {
    let nanos: u64 = std::fs::read_to_string(dir.join(FETCHED))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(UNIX_EPOCH + Duration::from_nanos(nanos))
}

/// A mirror on disk, as eviction weighs it.
struct Held {
    dir: PathBuf,
    bytes: u64,
    used: SystemTime,
}

/// Removes the least recently used mirrors until those left fit in `budget` bytes; `keep`
/// (the one just used) and any another process holds are left alone.
fn evict(root: &Path, budget: u64, keep: &Path) -> std::io::Result<()> {
    let mut mirrors = Vec::new();
    find_mirrors(root, &mut mirrors)?;
    let mut total: u64 = mirrors.iter().map(|mirror| mirror.bytes).sum();
    if total <= budget {
        return Ok(());
    }
    mirrors.sort_by_key(|mirror| mirror.used);
    for mirror in mirrors {
        if total <= budget {
            break;
        }
        if mirror.dir == keep {
            continue;
        }
        let lock = open_lock(&lock_path(&mirror.dir))?;
        if !flock(&lock, false)? {
            continue;
        }
        if std::fs::symlink_metadata(&mirror.dir).is_ok() {
            tracing::info!(mirror = %mirror.dir.display(), bytes = mirror.bytes, budget, "evicting the least recently used mirror");
            discard(&mirror.dir)?;
        }
        total -= mirror.bytes;
    }
    if total > budget {
        tracing::info!(bytes = total, budget, "mirrors in use exceed the budget");
    }
    Ok(())
}

fn find_mirrors(dir: &Path, found: &mut Vec<Held>) -> std::io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(err) => return Err(err),
    };
    for entry in entries {
        let entry = entry?;
        if !entry.file_type()?.is_dir() {
            continue;
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.contains(BESIDE) {
            continue;
        }
        let path = entry.path();
        if name.ends_with(MIRROR_SUFFIX) {
            let used = std::fs::metadata(path.join(USED))
                .or_else(|_| entry.metadata())
                .and_then(|meta| meta.modified())
                .unwrap_or(UNIX_EPOCH);
            found.push(Held {
                bytes: disk_bytes(&path)?,
                dir: path,
                used,
            });
        } else {
            find_mirrors(&path, found)?;
        }
    }
    Ok(())
}

fn disk_bytes(dir: &Path) -> std::io::Result<u64> {
    let mut bytes = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        bytes += if meta.is_dir() {
            disk_bytes(&entry.path())?
        } else {
            meta.len()
        };
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_stay_one_path_segment() {
        assert_eq!(segment("Acme"), "acme");
        assert_eq!(segment("my.repo-1_x"), "my.repo-1_x");
        assert_eq!(segment(".."), "%..");
        assert_eq!(segment("a/b"), "a%b");
        assert_eq!(segment(""), "%");
        let origin = Origin::installation(7, "Acme", "Widgets", "https://x/acme/widgets.git");
        assert_eq!(origin.path, Path::new("7/acme/widgets.git"));
        assert_ne!(
            Origin::installation(8, "acme", "widgets", "u").path,
            origin.path
        );
        assert_ne!(Origin::local("/a").path, Origin::local("/b").path);
    }

    #[tokio::test]
    async fn callers_that_wait_together_share_one_fetch() {
        let root = tempfile::tempdir().unwrap();
        let url = super::super::git::tests::origin(root.path(), &[("a.txt", "one\n")], &[]);
        let mirrors = Mirrors::open(&root.path().join("data"), u64::MAX);
        let origin = Origin::local(&url);
        let git = Git::default();
        let first = mirrors
            .workspace(&git, &origin, &root.path().join("ws0"))
            .await
            .unwrap();
        assert_eq!(first.refresh, Refresh::Cloned);

        // Both ask while someone else holds the mirror, so that both asked before the
        // fetch that the first of them to get the lock makes.
        let held = hold(&mirrors.mirror_dir(&origin)).await.unwrap();
        let (one, two) = (root.path().join("ws1"), root.path().join("ws2"));
        let both = async {
            tokio::join!(
                mirrors.workspace(&git, &origin, &one),
                mirrors.workspace(&git, &origin, &two),
            )
        };
        let release = async {
            tokio::time::sleep(Duration::from_millis(200)).await;
            drop(held);
        };
        let ((a, b), ()) = tokio::join!(both, release);
        let mut refreshes = [a.unwrap().refresh, b.unwrap().refresh];
        refreshes.sort_by_key(|r| *r as u8);
        assert_eq!(refreshes, [Refresh::Fetched, Refresh::Shared]);
        let next = mirrors
            .workspace(&git, &origin, &root.path().join("ws3"))
            .await
            .unwrap();
        assert_eq!(next.refresh, Refresh::Fetched, "a later caller fetches");
        assert_eq!(next.default_head, first.default_head);
    }

    #[tokio::test]
    async fn the_mirror_is_repacked_once_fetches_made_enough_packs() {
        use super::super::git::tests::{origin, sh_git};
        let root = tempfile::tempdir().unwrap();
        let url = origin(root.path(), &[("a.txt", "one\n")], &[]);
        let mirrors = Mirrors::open(&root.path().join("data"), u64::MAX);
        let origin = Origin::local(&url);
        let (git, dir) = (Git::default(), mirrors.mirror_dir(&origin));
        let seed = root.path().join("seed");
        let mut n = 0;
        let mut fetch_one = async || {
            sh_git(&seed, &["commit", "--allow-empty", "-qm", "next"]);
            sh_git(&seed, &["push", "-q", &url, "HEAD:main"]);
            n += 1;
            let made = mirrors
                .workspace(&git, &origin, &root.path().join(format!("ws{n}")))
                .await
                .unwrap();
            assert_eq!(made.refresh, Refresh::Fetched);
            let ws = root.path().join(format!("ws{n}"));
            sh_git(
                &ws,
                &["--git-dir", ws.to_str().unwrap(), "fsck", "--no-dangling"],
            );
        };
        let ws0 = root.path().join("ws0");
        let cloned = mirrors.workspace(&git, &origin, &ws0).await.unwrap();
        assert_eq!(cloned.refresh, Refresh::Cloned);
        fetch_one().await;
        fetch_one().await;
        assert_eq!(
            pack_count(&dir).unwrap(),
            3,
            "the clone's pack and two fetches'"
        );

        // Packs of one object each, as if many fetches had come and gone.
        let d = dir.to_str().unwrap();
        let pack = format!("{d}/objects/pack/pack");
        while pack_count(&dir).unwrap() < TIDY_AT_PACKS - 1 {
            let file = root.path().join("blob");
            std::fs::write(&file, format!("{}\n", fastrand::u64(..))).unwrap();
            let file = file.to_str().unwrap();
            let blob = sh_git(root.path(), &["--git-dir", d, "hash-object", "-w", file]);
            let listed = std::process::Command::new("git")
                .args(["--git-dir", d, "pack-objects", "-q", &pack])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap();
            use std::io::Write;
            writeln!(listed.stdin.as_ref().unwrap(), "{blob}").unwrap();
            assert!(listed.wait_with_output().unwrap().status.success());
        }
        fetch_one().await;
        assert!(
            pack_count(&dir).unwrap() <= 2,
            "not repacked at {TIDY_AT_PACKS} packs"
        );
    }

    #[tokio::test]
    async fn what_an_interrupted_update_left_is_removed_and_a_half_made_mirror_replaced() {
        let root = tempfile::tempdir().unwrap();
        let url = super::super::git::tests::origin(root.path(), &[("a.txt", "one\n")], &[]);
        let mirrors = Mirrors::open(&root.path().join("data"), u64::MAX);
        let origin = Origin::local(&url);
        let dir = mirrors.mirror_dir(&origin);
        let left = beside(&dir, "new");
        std::fs::create_dir_all(left.join("objects")).unwrap();
        std::fs::create_dir_all(dir.join("objects")).unwrap();
        let made = mirrors
            .workspace(&Git::default(), &origin, &root.path().join("ws"))
            .await
            .unwrap();
        assert_eq!(made.refresh, Refresh::Repaired);
        assert!(!left.exists(), "a leftover stayed");
        let siblings: Vec<_> = std::fs::read_dir(dir.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(siblings.len(), 2, "the mirror and its lock: {siblings:?}");
    }
}
