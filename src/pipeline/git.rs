//! Conveyor's own git: the `git` binary on a git directory of Conveyor's, out of the steps'
//! reach, with the steps' directory only as its work tree. It runs with a cleared environment,
//! no system or global configuration, hooks and fsmonitor off, so nothing a step writes
//! (hooks, `.git/config`, filters, a push URL) is ever read by it. Credentials reach git
//! through its environment, for fetch and push only: never the URL, argv or a file.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use base64::Engine;
use secrecy::{ExposeSecret, SecretString};
use tokio::process::Command;

use super::changes::{self, ChangedFile};

const AUTHOR_NAME: &str = "Conveyor";
const AUTHOR_EMAIL: &str = "conveyor@users.noreply.github.com";
/// Settings that override anything a repository could carry.
const SAFE_CONFIG: &[&str] = &[
    "core.hooksPath=/dev/null",
    "core.fsmonitor=false",
    "core.untrackedCache=false",
    "core.symlinks=true",
    "commit.gpgSign=false",
    "protocol.ext.allow=never",
];

#[derive(Debug, thiserror::Error)]
#[error("git {action} failed: {message}")]
pub struct GitError {
    pub action: &'static str,
    pub message: String,
}

/// A file as a commit holds it.
#[derive(Debug, PartialEq, Eq)]
pub enum TreeEntry {
    Missing,
    /// A regular file of this many bytes, and its blob.
    File {
        size: u64,
        blob: String,
    },
    Directory,
    /// Anything else (symbolic link, directory, submodule), described for a person.
    Other(&'static str),
}

/// Where a mirror keeps the remote's default branch (its `HEAD`) as last fetched.
pub const MIRROR_HEAD: &str = "refs/conveyor/default-head";

/// Longest any git command may take: a remote that stops answering must not hold a worker
/// session, and its repository's slot, for good.
const TIME_LIMIT: Duration = Duration::from_secs(30 * 60);

pub struct Git {
    /// The `Authorization` header git sends to the remote, if any.
    auth_header: Option<SecretString>,
    time_limit: Duration,
}

impl Default for Git {
    fn default() -> Self {
        Self {
            auth_header: None,
            time_limit: TIME_LIMIT,
        }
    }
}

impl Git {
    /// Git authenticating as a GitHub installation (user `x-access-token`).
    pub fn with_token(token: &SecretString) -> Self {
        let basic = base64::engine::general_purpose::STANDARD
            .encode(format!("x-access-token:{}", token.expose_secret()));
        Self {
            auth_header: Some(format!("Authorization: Basic {basic}").into()),
            ..Self::default()
        }
    }

    /// Git on `git_dir` (with `work_tree`, if any), or on no repository at all for `clone`.
    fn command(
        &self,
        git_dir: Option<&Path>,
        work_tree: Option<&Path>,
        authenticated: bool,
    ) -> Command {
        let mut command = Command::new("git");
        command
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", "/nonexistent")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_ATTR_NOSYSTEM", "1")
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_AUTHOR_NAME", AUTHOR_NAME)
            .env("GIT_AUTHOR_EMAIL", AUTHOR_EMAIL)
            .env("GIT_COMMITTER_NAME", AUTHOR_NAME)
            .env("GIT_COMMITTER_EMAIL", AUTHOR_EMAIL)
            .env("LC_ALL", "C")
            .current_dir("/")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        for setting in SAFE_CONFIG {
            command.args(["-c", setting]);
        }
        if let Some(git_dir) = git_dir {
            command.arg("--git-dir").arg(git_dir);
        }
        if let Some(work_tree) = work_tree {
            command.arg("--work-tree").arg(work_tree);
        }
        if let (true, Some(header)) = (authenticated, &self.auth_header) {
            command
                .env("GIT_CONFIG_COUNT", "1")
                .env("GIT_CONFIG_KEY_0", "http.extraHeader")
                .env("GIT_CONFIG_VALUE_0", header.expose_secret());
        }
        command
    }

    async fn output(
        &self,
        action: &'static str,
        command: Command,
        args: &[&str],
    ) -> Result<String, GitError> {
        let stdout = self.output_bytes(action, command, args).await?;
        Ok(String::from_utf8_lossy(&stdout).into_owned())
    }

    /// Runs `command` with `args` to its end, within the time limit (git is killed past it).
    async fn output_bytes(
        &self,
        action: &'static str,
        mut command: Command,
        args: &[&str],
    ) -> Result<Vec<u8>, GitError> {
        let failed = |message: String| GitError { action, message };
        let output = tokio::time::timeout(self.time_limit, command.args(args).output())
            .await
            .map_err(|_| failed(format!("no end within {:?}", self.time_limit)))?
            .map_err(|err| failed(format!("could not run git: {err}")))?;
        if output.status.success() {
            Ok(output.stdout)
        } else {
            let stderr = String::from_utf8_lossy(&output.stderr);
            Err(failed(stderr.trim().to_owned()))
        }
    }

    /// Runs git on `git_dir` alone.
    async fn run(
        &self,
        action: &'static str,
        git_dir: &Path,
        args: &[&str],
    ) -> Result<String, GitError> {
        self.output(action, self.command(Some(git_dir), None, false), args)
            .await
    }

    /// Runs git on `git_dir` with `work_tree`.
    async fn run_in(
        &self,
        action: &'static str,
        git_dir: &Path,
        work_tree: &Path,
        args: &[&str],
    ) -> Result<String, GitError> {
        self.output(
            action,
            self.command(Some(git_dir), Some(work_tree), false),
            args,
        )
        .await
    }

    /// Fetches every branch of `url` into the new bare git directory `git_dir`.
    pub async fn clone(&self, url: &str, git_dir: &Path) -> Result<(), GitError> {
        let path = git_dir.to_str().expect("workspace paths are UTF-8");
        self.output(
            "clone",
            self.command(None, None, true),
            &["clone", "--quiet", "--bare", "--no-tags", url, path],
        )
        .await?;
        Ok(())
    }

    /// Makes `git_dir` an empty bare repository for [`Git::fetch_mirror`] to fill.
    pub async fn init_mirror(&self, git_dir: &Path) -> Result<(), GitError> {
        let path = git_dir.to_str().expect("data dir paths are UTF-8");
        self.output(
            "init",
            self.command(None, None, false),
            &["init", "--quiet", "--bare", path],
        )
        .await?;
        Ok(())
    }

    /// Brings every branch of `url` into the bare `git_dir` as its own branches (those gone
    /// from the remote are deleted), and the remote's default branch to [`MIRROR_HEAD`].
    /// Objects are never deleted: every fetch is kept as a pack of its own, and nothing
    /// runs git's automatic maintenance; [`Git::tidy`] does that, when asked.
    pub async fn fetch_mirror(&self, git_dir: &Path, url: &str) -> Result<(), GitError> {
        let head = format!("+HEAD:{MIRROR_HEAD}");
        let mut command = self.command(Some(git_dir), None, true);
        command.args([
            "-c",
            "fetch.unpackLimit=1",
            "-c",
            "gc.auto=0",
            "-c",
            "maintenance.auto=false",
        ]);
        self.output(
            "fetch",
            command,
            &[
                "fetch",
                "--quiet",
                "--prune",
                "--no-tags",
                "--no-write-fetch-head",
                url,
                "+refs/heads/*:refs/heads/*",
                &head,
            ],
        )
        .await?;
        Ok(())
    }

    /// Repacks `git_dir` into one pack and packs its refs, in the foreground.
    pub async fn tidy(&self, git_dir: &Path) -> Result<(), GitError> {
        self.run("gc", git_dir, &["gc", "--quiet"]).await?;
        Ok(())
    }

    /// The commit `rev` names, or `None` when there is no such ref.
    pub async fn resolve(&self, git_dir: &Path, rev: &str) -> Result<Option<String>, GitError> {
        let spec = format!("{rev}^{{commit}}");
        match self
            .run(
                "rev-parse",
                git_dir,
                &["rev-parse", "--verify", "--quiet", &spec],
            )
            .await
        {
            Ok(sha) => Ok(Some(sha.trim().to_owned())),
            Err(err) if err.message.is_empty() => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// Fills `work_tree` with `commit` and records it in the git directory's index.
    pub async fn check_out(
        &self,
        git_dir: &Path,
        work_tree: &Path,
        commit: &str,
    ) -> Result<(), GitError> {
        self.run_in(
            "checkout",
            git_dir,
            work_tree,
            &["read-tree", "--reset", "-u", commit],
        )
        .await?;
        Ok(())
    }

    /// Gives the steps a git repository of their own in `work_tree/.git`: a copy of
    /// Conveyor's (never sharing a file with it), at `commit`, its index matching the work
    /// tree, its `origin` the repository's URL without credentials.
    pub async fn copy_for_steps(
        &self,
        git_dir: &Path,
        work_tree: &Path,
        commit: &str,
        public_url: &str,
    ) -> Result<(), GitError> {
        let copy = work_tree.join(".git");
        let copy_path = copy.to_str().expect("workspace paths are UTF-8");
        let source = git_dir.to_str().expect("workspace paths are UTF-8");
        self.run(
            "clone",
            git_dir,
            &[
                "clone",
                "--quiet",
                "--bare",
                "--no-hardlinks",
                source,
                copy_path,
            ],
        )
        .await?;
        self.run("config", &copy, &["config", "core.bare", "false"])
            .await?;
        self.run(
            "config",
            &copy,
            &["config", "remote.origin.url", public_url],
        )
        .await?;
        self.run(
            "config",
            &copy,
            &[
                "config",
                "remote.origin.fetch",
                "+refs/heads/*:refs/remotes/origin/*",
            ],
        )
        .await?;
        let head = self.resolve(&copy, "HEAD").await?;
        if head.as_deref() != Some(commit) {
            self.run(
                "checkout",
                &copy,
                &["update-ref", "--no-deref", "HEAD", commit],
            )
            .await?;
        }
        std::fs::copy(git_dir.join("index"), copy.join("index")).map_err(|err| GitError {
            action: "checkout",
            message: format!("copying the index: {err}"),
        })?;
        Ok(())
    }

    /// How `path` stands in `commit`.
    pub async fn entry(
        &self,
        git_dir: &Path,
        commit: &str,
        path: &str,
    ) -> Result<TreeEntry, GitError> {
        let listing = self
            .run(
                "ls-tree",
                git_dir,
                &["ls-tree", "-l", "-z", commit, "--", path],
            )
            .await?;
        let Some(line) = listing
            .split('\0')
            .find(|line| line.split_once('\t').is_some_and(|(_, name)| name == path))
        else {
            return Ok(TreeEntry::Missing);
        };
        let mut fields = line.split_whitespace();
        let (mode, kind, blob, size) = (
            fields.next().unwrap_or_default(),
            fields.next().unwrap_or_default(),
            fields.next().unwrap_or_default(),
            fields.next().unwrap_or_default(),
        );
        Ok(match (mode, kind) {
            ("100644" | "100755", "blob") => TreeEntry::File {
                size: size.parse().unwrap_or(u64::MAX),
                blob: blob.to_owned(),
            },
            ("120000", _) => TreeEntry::Other("a symbolic link"),
            (_, "tree") => TreeEntry::Directory,
            (_, "commit") => TreeEntry::Other("a submodule"),
            _ => TreeEntry::Other("not a regular file"),
        })
    }

    pub async fn blob(&self, git_dir: &Path, blob: &str) -> Result<Vec<u8>, GitError> {
        let command = self.command(Some(git_dir), None, false);
        self.output_bytes("cat-file", command, &["cat-file", "blob", blob])
            .await
    }

    /// Records the whole work tree in the index and lists the paths that differ from
    /// `base` (a rename counts as both its paths).
    pub async fn stage_changes(
        &self,
        git_dir: &Path,
        work_tree: &Path,
        base: &str,
    ) -> Result<Vec<String>, GitError> {
        self.run_in("add", git_dir, work_tree, &["add", "--all", "--", "."])
            .await?;
        let changed = self
            .run(
                "diff",
                git_dir,
                &[
                    "diff",
                    "--cached",
                    "--name-only",
                    "--no-renames",
                    "-z",
                    base,
                ],
            )
            .await?;
        Ok(changed
            .split('\0')
            .filter(|path| !path.is_empty())
            .map(str::to_owned)
            .collect())
    }

    /// Commits the index on top of `parent`; returns the new commit. No hook runs.
    pub async fn commit(
        &self,
        git_dir: &Path,
        parent: &str,
        message: &str,
    ) -> Result<String, GitError> {
        let tree = self.run("write-tree", git_dir, &["write-tree"]).await?;
        let commit = self
            .run(
                "commit-tree",
                git_dir,
                &["commit-tree", tree.trim(), "-p", parent, "-m", message],
            )
            .await?;
        Ok(commit.trim().to_owned())
    }

    /// Pushes `commit` to `branch` of `url`, only if the branch is still at `expected`
    /// (`None`: only if it does not exist), so that nobody else's commits are destroyed.
    pub async fn push(
        &self,
        git_dir: &Path,
        url: &str,
        commit: &str,
        branch: &str,
        expected: Option<&str>,
    ) -> Result<(), GitError> {
        let lease = format!(
            "--force-with-lease=refs/heads/{branch}:{}",
            expected.unwrap_or_default()
        );
        let refspec = format!("{commit}:refs/heads/{branch}");
        self.output(
            "push",
            self.command(Some(git_dir), None, true),
            &["push", "--quiet", "--no-verify", &lease, url, &refspec],
        )
        .await?;
        Ok(())
    }

    /// What changed from commit `from` to commit `to`, file by file, renames found.
    pub async fn changed_files(
        &self,
        git_dir: &Path,
        from: &str,
        to: &str,
    ) -> Result<Vec<ChangedFile>, GitError> {
        let mut outputs = Vec::with_capacity(2);
        for format in ["--numstat", "--name-status"] {
            let command = self.command(Some(git_dir), None, false);
            let args = ["diff", format, "-z", "-M", from, to];
            outputs.push(self.output_bytes("diff", command, &args).await?);
        }
        changes::parse(&outputs[0], &outputs[1]).map_err(|err| GitError {
            action: "diff",
            message: err.to_string(),
        })
    }

    /// The patch from commit `from` to commit `to`: its first `max_bytes` bytes, and the size
    /// of the whole, read as git writes it so that a huge diff is never held whole.
    pub async fn patch(
        &self,
        git_dir: &Path,
        from: &str,
        to: &str,
        max_bytes: usize,
    ) -> Result<(Vec<u8>, u64), GitError> {
        let args = ["diff", "--patch", "--no-color", "--no-ext-diff", from, to];
        self.read_diff(git_dir, &args, max_bytes).await
    }

    /// The patch from commit `from` to commit `to` that [`Git::apply`] takes (binary files
    /// included), when it is at most `max_bytes`.
    pub async fn binary_patch(
        &self,
        git_dir: &Path,
        from: &str,
        to: &str,
        max_bytes: usize,
    ) -> Result<Option<Vec<u8>>, GitError> {
        let args = [
            "diff",
            "--binary",
            "--full-index",
            "--no-renames",
            "--no-color",
            "--no-ext-diff",
            from,
            to,
        ];
        let (patch, total) = self.read_diff(git_dir, &args, max_bytes).await?;
        Ok((total <= max_bytes as u64).then_some(patch))
    }

    /// Applies `patch` (made by [`Git::binary_patch`]) to the files of `work_tree`; git
    /// refuses a patch that would write outside the work tree or through a symbolic link.
    pub async fn apply(
        &self,
        git_dir: &Path,
        work_tree: &Path,
        patch: &Path,
    ) -> Result<(), GitError> {
        let mut command = self.command(Some(git_dir), Some(work_tree), false);
        command.current_dir(work_tree);
        let patch = patch.to_str().expect("workspace paths are UTF-8");
        let args = ["apply", "--binary", "--whitespace=nowarn", patch];
        self.output("apply", command, &args).await?;
        Ok(())
    }

    /// Runs `git diff` with `args`, keeping the first `max_bytes` bytes of its output and
    /// counting the whole, read as git writes it so that a huge diff is never held whole.
    async fn read_diff(
        &self,
        git_dir: &Path,
        args: &[&str],
        max_bytes: usize,
    ) -> Result<(Vec<u8>, u64), GitError> {
        use tokio::io::AsyncReadExt;
        let failed = |message: String| GitError {
            action: "diff",
            message,
        };
        let mut command = self.command(Some(git_dir), None, false);
        command
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let read = async {
            let mut child = command
                .spawn()
                .map_err(|err| failed(format!("could not run git: {err}")))?;
            let mut stdout = child.stdout.take().expect("stdout is piped");
            let mut stderr = child.stderr.take().expect("stderr is piped");
            let errors = tokio::spawn(async move {
                let mut text = String::new();
                let _ = stderr.read_to_string(&mut text).await;
                text
            });
            let mut kept = Vec::new();
            let mut total = 0u64;
            let mut buffer = vec![0u8; 64 * 1024];
            loop {
                let n = stdout
                    .read(&mut buffer)
                    .await
                    .map_err(|err| failed(format!("reading git's output: {err}")))?;
                if n == 0 {
                    break;
                }
                total += n as u64;
                let room = max_bytes.saturating_sub(kept.len());
                kept.extend_from_slice(&buffer[..n.min(room)]);
            }
            let status = child
                .wait()
                .await
                .map_err(|err| failed(format!("could not run git: {err}")))?;
            if status.success() {
                Ok((kept, total))
            } else {
                Err(failed(errors.await.unwrap_or_default().trim().to_owned()))
            }
        };
        tokio::time::timeout(self.time_limit, read)
            .await
            .map_err(|_| failed(format!("no end within {:?}", self.time_limit)))?
    }

    pub async fn diff(&self, git_dir: &Path, from: &str, to: &str) -> Result<String, GitError> {
        self.run("diff", git_dir, &["diff", "--stat", "--patch", from, to])
            .await
    }
}

/// `conveyor/<key>-<slug of the title>` (the key is the issue number), safe as a git ref.
pub fn branch_name(key: &str, title: &str) -> String {
    const MAX_SLUG: usize = 48;
    let mut slug = String::new();
    for c in title.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_alphanumeric() {
            slug.push(c);
        } else if !slug.is_empty() && !slug.ends_with('-') {
            slug.push('-');
        }
        if slug.len() >= MAX_SLUG {
            break;
        }
    }
    let slug = slug.trim_end_matches('-');
    if slug.is_empty() {
        format!("conveyor/{key}")
    } else {
        format!("conveyor/{key}-{slug}")
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    #[test]
    fn branch_names_are_slugged_and_bounded() {
        assert_eq!(
            branch_name("12", "Add a README, please!"),
            "conveyor/12-add-a-readme-please"
        );
        assert_eq!(branch_name("3", "  ¿Qué?  "), "conveyor/3-qu");
        assert_eq!(branch_name("4", "!!!"), "conveyor/4");
        let long = branch_name("5", &"word ".repeat(40));
        assert!(long.len() <= "conveyor/5-".len() + 48, "{long}");
        assert!(!long.ends_with('-'));
    }

    /// Plain git in `dir`, as a person would run it.
    pub(in crate::pipeline) fn sh_git(dir: &Path, args: &[&str]) -> String {
        let output = std::process::Command::new("git")
            .args([
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@t",
                "-c",
                "init.defaultBranch=main",
            ])
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    /// A bare `origin.git` under `root` whose `main` holds `files` (and symlinks).
    pub(in crate::pipeline) fn origin(
        root: &Path,
        files: &[(&str, &str)],
        links: &[(&str, &str)],
    ) -> String {
        let seed = root.join("seed");
        std::fs::create_dir_all(&seed).unwrap();
        sh_git(&seed, &["init", "-q"]);
        for (path, text) in files {
            let path = seed.join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        for (path, target) in links {
            let path = seed.join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::os::unix::fs::symlink(target, path).unwrap();
        }
        sh_git(&seed, &["add", "-A"]);
        sh_git(&seed, &["commit", "-qm", "seed"]);
        let origin = root.join("origin.git");
        sh_git(
            root,
            &["clone", "-q", "--bare", "seed", origin.to_str().unwrap()],
        );
        origin.to_str().unwrap().to_owned()
    }

    #[tokio::test]
    async fn commits_the_work_tree_on_conveyors_git_dir_and_pushes_with_a_lease() {
        let root = tempfile::tempdir().unwrap();
        let url = origin(root.path(), &[("a.txt", "one\n")], &[]);
        let (git_dir, work) = (root.path().join("git"), root.path().join("work"));
        std::fs::create_dir(&work).unwrap();
        let git = Git::default();
        git.clone(&url, &git_dir).await.unwrap();
        let base = git.resolve(&git_dir, "HEAD").await.unwrap().unwrap();
        assert_eq!(
            git.resolve(&git_dir, "refs/heads/nope").await.unwrap(),
            None
        );
        git.check_out(&git_dir, &work, &base).await.unwrap();
        git.copy_for_steps(&git_dir, &work, &base, "https://example.test/o/r.git")
            .await
            .unwrap();
        assert_eq!(
            std::fs::read_to_string(work.join("a.txt")).unwrap(),
            "one\n"
        );
        assert_eq!(
            sh_git(&work, &["status", "--porcelain"]),
            "",
            "the steps' clone is clean"
        );
        assert_eq!(
            sh_git(&work, &["remote", "get-url", "origin"]),
            "https://example.test/o/r.git"
        );

        assert!(
            git.stage_changes(&git_dir, &work, &base)
                .await
                .unwrap()
                .is_empty()
        );
        std::fs::write(work.join("b.txt"), "two\n").unwrap();
        std::fs::remove_file(work.join("a.txt")).unwrap();
        assert_eq!(
            git.stage_changes(&git_dir, &work, &base).await.unwrap(),
            ["a.txt", "b.txt"]
        );
        let sha = git.commit(&git_dir, &base, "change").await.unwrap();
        git.push(&git_dir, &url, &sha, "conveyor/1-x", None)
            .await
            .unwrap();
        assert_eq!(sh_git(Path::new(&url), &["rev-parse", "conveyor/1-x"]), sha);
        let diff = git.diff(&git_dir, &base, &sha).await.unwrap();
        assert!(diff.contains("+two"), "{diff}");

        // Someone else pushes to the branch: a push expecting the old head is refused.
        let other = git.commit(&git_dir, &sha, "someone else").await.unwrap();
        git.push(&git_dir, &url, &other, "conveyor/1-x", Some(&sha))
            .await
            .unwrap();
        let err = git
            .push(&git_dir, &url, &sha, "conveyor/1-x", Some(&sha))
            .await
            .unwrap_err();
        assert!(err.message.contains("stale info"), "{err}");
        assert!(
            git.push(&git_dir, &url, &sha, "conveyor/1-x", None)
                .await
                .is_err()
        );
        assert_eq!(
            sh_git(Path::new(&url), &["rev-parse", "conveyor/1-x"]),
            other
        );
    }

    #[tokio::test]
    async fn nothing_the_steps_write_in_their_git_dir_is_run_or_followed() {
        let root = tempfile::tempdir().unwrap();
        let url = origin(root.path(), &[("a.txt", "one\n")], &[]);
        let evil = root.path().join("evil.git");
        sh_git(
            root.path(),
            &["init", "-q", "--bare", evil.to_str().unwrap()],
        );
        let (git_dir, work) = (root.path().join("git"), root.path().join("work"));
        std::fs::create_dir(&work).unwrap();
        let git = Git::default();
        git.clone(&url, &git_dir).await.unwrap();
        let base = git.resolve(&git_dir, "HEAD").await.unwrap().unwrap();
        git.check_out(&git_dir, &work, &base).await.unwrap();
        git.copy_for_steps(&git_dir, &work, &base, &url)
            .await
            .unwrap();

        // What a hostile step would leave behind.
        let marker = root.path().join("pwned");
        let touch = format!("#!/bin/sh\ntouch {}\n", marker.display());
        for hook in [
            "pre-commit",
            "post-commit",
            "pre-push",
            "reference-transaction",
            "post-index-change",
        ] {
            let path = work.join(".git/hooks").join(hook);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &touch).unwrap();
            std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
                .unwrap();
        }
        let fsmonitor = format!("touch {}", marker.display());
        sh_git(&work, &["config", "core.fsmonitor", &fsmonitor]);
        sh_git(
            &work,
            &["config", "remote.origin.pushurl", evil.to_str().unwrap()],
        );
        sh_git(
            &work,
            &[
                "config",
                "filter.evil.clean",
                &format!("touch {}; cat", marker.display()),
            ],
        );
        std::fs::write(work.join(".gitattributes"), "* filter=evil\n").unwrap();
        std::fs::write(work.join("b.txt"), "two\n").unwrap();

        let changed = git.stage_changes(&git_dir, &work, &base).await.unwrap();
        assert_eq!(changed, [".gitattributes", "b.txt"]);
        let sha = git.commit(&git_dir, &base, "change").await.unwrap();
        git.push(&git_dir, &url, &sha, "conveyor/2-x", None)
            .await
            .unwrap();

        assert!(
            !marker.exists(),
            "a hook, fsmonitor or filter of the steps ran"
        );
        assert_eq!(sh_git(Path::new(&url), &["rev-parse", "conveyor/2-x"]), sha);
        assert_eq!(
            sh_git(&evil, &["for-each-ref"]),
            "",
            "pushed to the steps' push URL"
        );
    }

    #[tokio::test]
    async fn a_binary_patch_of_the_work_carries_it_to_a_fresh_work_tree() {
        let root = tempfile::tempdir().unwrap();
        let url = origin(root.path(), &[("a.txt", "one\n"), ("gone.txt", "x\n")], &[]);
        let git = Git::default();
        let work_tree = |name: &str| {
            let (git_dir, work) = (
                root.path().join(format!("{name}.git")),
                root.path().join(name),
            );
            std::fs::create_dir(&work).unwrap();
            (git_dir, work)
        };
        let (git_dir, work) = work_tree("first");
        git.clone(&url, &git_dir).await.unwrap();
        let base = git.resolve(&git_dir, "HEAD").await.unwrap().unwrap();
        git.check_out(&git_dir, &work, &base).await.unwrap();
        std::fs::write(work.join("a.txt"), "one\ntwo\n").unwrap();
        std::fs::remove_file(work.join("gone.txt")).unwrap();
        std::fs::create_dir(work.join("new")).unwrap();
        let bytes: Vec<u8> = (0..=255u8).cycle().take(3000).collect();
        std::fs::write(work.join("new/blob.bin"), &bytes).unwrap();
        std::os::unix::fs::symlink("a.txt", work.join("link")).unwrap();
        git.stage_changes(&git_dir, &work, &base).await.unwrap();
        let wip = git.commit(&git_dir, &base, "wip").await.unwrap();
        let patch = git
            .binary_patch(&git_dir, &base, &wip, 1 << 20)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            git.binary_patch(&git_dir, &base, &wip, 100).await.unwrap(),
            None
        );

        let (again_dir, again) = work_tree("again");
        git.clone(&url, &again_dir).await.unwrap();
        git.check_out(&again_dir, &again, &base).await.unwrap();
        let file = root.path().join("work.patch");
        std::fs::write(&file, &patch).unwrap();
        git.apply(&again_dir, &again, &file).await.unwrap();
        assert_eq!(
            std::fs::read_to_string(again.join("a.txt")).unwrap(),
            "one\ntwo\n"
        );
        assert!(!again.join("gone.txt").exists());
        assert_eq!(std::fs::read(again.join("new/blob.bin")).unwrap(), bytes);
        assert_eq!(
            std::fs::read_link(again.join("link")).unwrap(),
            Path::new("a.txt")
        );
        git.stage_changes(&again_dir, &again, &base).await.unwrap();
        let again_wip = git.commit(&again_dir, &base, "wip").await.unwrap();
        let tree = |dir: &Path, commit: &str| {
            sh_git(
                dir,
                &[
                    "--git-dir",
                    dir.to_str().unwrap(),
                    "rev-parse",
                    &format!("{commit}^{{tree}}"),
                ],
            )
        };
        assert_eq!(tree(&again_dir, &again_wip), tree(&git_dir, &wip));

        // A patch whose path runs through a link out of the work tree is refused.
        let outside = tempfile::tempdir().unwrap();
        let (evil_dir, evil) = work_tree("evil");
        git.clone(&url, &evil_dir).await.unwrap();
        git.check_out(&evil_dir, &evil, &base).await.unwrap();
        std::os::unix::fs::symlink(outside.path(), evil.join("out")).unwrap();
        let hostile = "diff --git a/out/x b/out/x\nnew file mode 100644\n--- /dev/null\n+++ b/out/x\n@@ -0,0 +1 @@\n+x\n";
        std::fs::write(&file, hostile).unwrap();
        assert!(git.apply(&evil_dir, &evil, &file).await.is_err());
        assert!(!outside.path().join("x").exists());
    }

    #[tokio::test]
    async fn a_remote_that_never_answers_fails_the_command_in_time() {
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/o/r.git", silent.local_addr().unwrap());
        let root = tempfile::tempdir().unwrap();
        let git = Git {
            time_limit: Duration::from_millis(500),
            ..Git::default()
        };
        let started = std::time::Instant::now();
        let err = git.clone(&url, &root.path().join("git")).await.unwrap_err();
        assert!(err.message.contains("no end within"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn tree_entries_say_what_a_path_is() {
        let root = tempfile::tempdir().unwrap();
        let url = origin(
            root.path(),
            &[("dir/a.txt", "one\n"), ("f.txt", "12345")],
            &[("link", "/etc/passwd")],
        );
        let git_dir = root.path().join("git");
        let git = Git::default();
        git.clone(&url, &git_dir).await.unwrap();
        let entry = |path: &'static str| {
            let (git, git_dir) = (&git, &git_dir);
            async move { git.entry(git_dir, "HEAD", path).await.unwrap() }
        };
        let TreeEntry::File { size, blob } = entry("f.txt").await else {
            panic!("f.txt is a file")
        };
        assert_eq!(size, 5);
        assert_eq!(git.blob(&git_dir, &blob).await.unwrap(), b"12345");
        assert_eq!(entry("link").await, TreeEntry::Other("a symbolic link"));
        assert_eq!(entry("dir").await, TreeEntry::Directory);
        assert_eq!(entry("missing").await, TreeEntry::Missing);
        assert_eq!(entry("dir/missing").await, TreeEntry::Missing);
    }
}
