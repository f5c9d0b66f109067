//! A workspace's bare git directory made straight from a mirror's files, as `git clone
//! --bare --no-tags` of the mirror followed by detaching `HEAD` at [`MIRROR_HEAD`] made it,
//! without running git: a run's workspace then costs a few hard links and two small files
//! instead of three git processes.
//!
//! What it relies on, and why it holds:
//! - Only the mirror's holder writes it (under its lock, see `mirror.rs`), so its files do not
//!   change while they are read and linked here.
//! - The mirror keeps its refs in git's `files` format: `packed-refs` plus loose files under
//!   `refs/`, a loose one overriding its packed entry. Every ref git fetched is a direct one,
//!   and a branch always names a commit (git refuses to point `refs/heads/*` elsewhere), as
//!   does [`MIRROR_HEAD`], the remote's default branch. Anything else there is damage.
//! - Object files (loose objects, packs, their indexes) are never changed once written, so a
//!   hard link to one stays what it was whatever the mirror does next.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::path::Path;

use super::git::MIRROR_HEAD;

const BRANCHES: &str = "refs/heads/";
/// What `git init --bare` writes, as `git clone --bare` leaves it for the workspace.
const CONFIG: &str = "[core]\n\trepositoryformatversion = 0\n\tfilemode = true\n\tbare = true\n";
/// Git's own header: branches name commits, so no entry needs a peeled line.
const PACKED_REFS_HEADER: &str = "# pack-refs with: peeled fully-peeled sorted \n";

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("the default branch has no commits")]
    NoDefaultHead,
    /// The mirror's refs are not what git writes.
    #[error("damaged ref {0:?} in the mirror")]
    Damaged(String),
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Makes the new bare `git_dir` from `mirror`: its objects hard links to the mirror's (copies
/// where the file system has no links), its branches the mirror's, its `HEAD` detached at the
/// mirror's [`MIRROR_HEAD`], which is returned.
pub fn make(mirror: &Path, git_dir: &Path) -> Result<String, LinkError> {
    let refs = refs(mirror)?;
    let head = refs
        .get(MIRROR_HEAD)
        .ok_or(LinkError::NoDefaultHead)?
        .clone();
    fs::create_dir(git_dir)?;
    fs::create_dir_all(git_dir.join("refs/heads"))?;
    fs::create_dir(git_dir.join("refs/tags"))?;
    link_tree(&mirror.join("objects"), &git_dir.join("objects"))?;
    let mut packed = PACKED_REFS_HEADER.to_owned();
    for (name, oid) in refs.iter().filter(|(name, _)| name.starts_with(BRANCHES)) {
        packed.push_str(&format!("{oid} {name}\n"));
    }
    fs::write(git_dir.join("packed-refs"), packed)?;
    fs::write(git_dir.join("config"), CONFIG)?;
    // Last: git takes a directory for a repository only once it has a `HEAD`.
    let mut file = fs::File::create_new(git_dir.join("HEAD"))?;
    writeln!(file, "{head}")?;
    Ok(head)
}

/// Every ref of the repository `git_dir` and the object it names, sorted by name as git
/// sorts them (bytewise).
fn refs(git_dir: &Path) -> Result<BTreeMap<String, String>, LinkError> {
    let mut refs = BTreeMap::new();
    match fs::read_to_string(git_dir.join("packed-refs")) {
        Ok(text) => {
            for line in text.lines() {
                // The header, and the peeled value of the tag above.
                if line.starts_with('#') || line.starts_with('^') {
                    continue;
                }
                let (oid, name) = line
                    .split_once(' ')
                    .ok_or_else(|| LinkError::Damaged(line.to_owned()))?;
                refs.insert(name.to_owned(), object_id(name, oid)?);
            }
        }
        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
        Err(err) => return Err(err.into()),
    }
    loose_refs(&git_dir.join("refs"), "refs", &mut refs)?;
    Ok(refs)
}

fn loose_refs(
    dir: &Path,
    prefix: &str,
    refs: &mut BTreeMap<String, String>,
) -> Result<(), LinkError> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let file_name = entry.file_name();
        let name = file_name
            .to_str()
            .map(|segment| format!("{prefix}/{segment}"))
            .ok_or_else(|| LinkError::Damaged(format!("{prefix}/{file_name:?}")))?;
        if entry.file_type()?.is_dir() {
            loose_refs(&entry.path(), &name, refs)?;
        } else if !name.ends_with(".lock") {
            // A `.lock` is a ref update a killed git left half-way; git reads past it too.
            let text = fs::read_to_string(entry.path())?;
            refs.insert(name.clone(), object_id(&name, text.trim_end())?);
        }
    }
    Ok(())
}

/// `text` as an object id (SHA-1 or SHA-256, in lower-case hex, as git writes it).
fn object_id(name: &str, text: &str) -> Result<String, LinkError> {
    let hex = text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if hex && matches!(text.len(), 40 | 64) {
        Ok(text.to_owned())
    } else {
        Err(LinkError::Damaged(name.to_owned()))
    }
}

/// Makes `to` a tree of directories like `from`, each file a hard link to `from`'s.
fn link_tree(from: &Path, to: &Path) -> io::Result<()> {
    fs::create_dir(to)?;
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let (source, target) = (entry.path(), to.join(entry.file_name()));
        if entry.file_type()?.is_dir() {
            link_tree(&source, &target)?;
        } else if fs::hard_link(&source, &target).is_err() {
            fs::copy(&source, &target)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::git::Git;
    use crate::pipeline::git::tests::{origin, sh_git};

    /// `git for-each-ref` and `HEAD` of the repository `git_dir`.
    fn shown(git_dir: &Path) -> (String, String) {
        let dir = git_dir.to_str().unwrap();
        (
            sh_git(git_dir, &["--git-dir", dir, "for-each-ref"]),
            std::fs::read_to_string(git_dir.join("HEAD")).unwrap(),
        )
    }

    #[tokio::test]
    async fn the_git_dir_is_what_a_clone_made_and_outlives_the_mirror() {
        let root = tempfile::tempdir().unwrap();
        let url = origin(root.path(), &[("a.txt", "one\n")], &[]);
        let mirror = root.path().join("mirror.git");
        let git = Git::default();
        git.init_mirror(&mirror).await.unwrap();
        git.fetch_mirror(&mirror, &url).await.unwrap();
        // Packed refs, a loose ref overriding a packed one, a loose ref alone and a loose
        // object, as a mirror holds them after a repack and a later fetch.
        let m = mirror.to_str().unwrap();
        sh_git(&mirror, &["--git-dir", m, "pack-refs", "--all"]);
        let tree = sh_git(&mirror, &["--git-dir", m, "rev-parse", "main^{tree}"]);
        let loose = sh_git(
            &mirror,
            &[
                "--git-dir",
                m,
                "commit-tree",
                &tree,
                "-p",
                "main",
                "-m",
                "loose",
            ],
        );
        sh_git(
            &mirror,
            &["--git-dir", m, "update-ref", "refs/heads/main", &loose],
        );
        sh_git(
            &mirror,
            &["--git-dir", m, "update-ref", "refs/heads/topic/x", &loose],
        );
        sh_git(
            &mirror,
            &["--git-dir", m, "update-ref", MIRROR_HEAD, &loose],
        );
        std::fs::write(mirror.join("refs/heads/topic/y.lock"), "junk").unwrap();

        let cloned = root.path().join("cloned.git");
        let c = cloned.to_str().unwrap();
        sh_git(root.path(), &["clone", "-q", "--bare", "--no-tags", m, c]);
        sh_git(
            root.path(),
            &["--git-dir", c, "update-ref", "--no-deref", "HEAD", &loose],
        );
        let made = root.path().join("made.git");
        assert_eq!(make(&mirror, &made).unwrap(), loose);
        assert_eq!(shown(&made), shown(&cloned));

        // Repacked, pruned, then gone: the git dir still has every object of its own.
        sh_git(&mirror, &["--git-dir", m, "repack", "-a", "-d", "-q"]);
        sh_git(&mirror, &["--git-dir", m, "prune", "--expire=now"]);
        std::fs::remove_dir_all(&mirror).unwrap();
        let dir = made.to_str().unwrap();
        sh_git(root.path(), &["--git-dir", dir, "fsck", "--no-dangling"]);
        assert_eq!(
            sh_git(
                root.path(),
                &["--git-dir", dir, "cat-file", "-p", "HEAD:a.txt"]
            ),
            "one"
        );
    }

    #[test]
    fn a_mirror_with_no_default_head_or_a_damaged_ref_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let mirror = root.path().join("mirror.git");
        std::fs::create_dir_all(mirror.join("refs/heads")).unwrap();
        std::fs::create_dir_all(mirror.join("objects/pack")).unwrap();
        let target = root.path().join("ws");
        assert!(matches!(
            make(&mirror, &target),
            Err(LinkError::NoDefaultHead)
        ));
        std::fs::write(mirror.join("refs/heads/main"), "ref: refs/heads/other\n").unwrap();
        assert!(
            matches!(make(&mirror, &target), Err(LinkError::Damaged(name)) if name == "refs/heads/main")
        );
        assert!(!target.exists());
    }
}
