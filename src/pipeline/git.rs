//! The `git` binary, with credentials passed through the environment: never in the URL,
//! the process arguments or `.git/config`.

use std::path::Path;
use std::process::Stdio;

use base64::Engine;
use secrecy::{ExposeSecret, SecretString};
use tokio::process::Command;

const AUTHOR_NAME: &str = "Conveyor";
const AUTHOR_EMAIL: &str = "conveyor@users.noreply.github.com";

#[derive(Debug, thiserror::Error)]
#[error("git {action} failed: {message}")]
pub struct GitError {
    pub action: &'static str,
    pub message: String,
}

#[derive(Default)]
pub struct Git {
    /// The `Authorization` header git sends to the remote, if any.
    auth_header: Option<SecretString>,
}

impl Git {
    /// Git authenticating as a GitHub installation (user `x-access-token`).
    pub fn with_token(token: &SecretString) -> Self {
        let basic = base64::engine::general_purpose::STANDARD
            .encode(format!("x-access-token:{}", token.expose_secret()));
        Self {
            auth_header: Some(format!("Authorization: Basic {basic}").into()),
        }
    }

    fn command(&self, dir: &Path) -> Command {
        let mut command = Command::new("git");
        command
            .current_dir(dir)
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_AUTHOR_NAME", AUTHOR_NAME)
            .env("GIT_AUTHOR_EMAIL", AUTHOR_EMAIL)
            .env("GIT_COMMITTER_NAME", AUTHOR_NAME)
            .env("GIT_COMMITTER_EMAIL", AUTHOR_EMAIL)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        if let Some(header) = &self.auth_header {
            command
                .env("GIT_CONFIG_COUNT", "1")
                .env("GIT_CONFIG_KEY_0", "http.extraHeader")
                .env("GIT_CONFIG_VALUE_0", header.expose_secret());
        }
        command
    }

    async fn run(
        &self,
        action: &'static str,
        dir: &Path,
        args: &[&str],
    ) -> Result<String, GitError> {
        let output = self
            .command(dir)
            .args(args)
            .output()
            .await
            .map_err(|err| GitError {
                action,
                message: format!("could not run git: {err}"),
            })?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            let stderr = String::from_utf8_lossy(&output.stderr);
            Err(GitError {
                action,
                message: stderr.trim().to_owned(),
            })
        }
    }

    pub async fn clone(&self, url: &str, dest: &Path) -> Result<(), GitError> {
        let parent = dest.parent().expect("a clone destination has a parent");
        let dest = dest.to_str().expect("workspace paths are UTF-8");
        self.run(
            "clone",
            parent,
            &["clone", "--quiet", "--no-tags", url, dest],
        )
        .await?;
        Ok(())
    }

    /// Whether the work tree differs from HEAD, untracked files included.
    pub async fn has_changes(&self, dir: &Path) -> Result<bool, GitError> {
        let status = self.run("status", dir, &["status", "--porcelain"]).await?;
        Ok(!status.trim().is_empty())
    }

    pub async fn head(&self, dir: &Path) -> Result<String, GitError> {
        Ok(self
            .run("rev-parse", dir, &["rev-parse", "HEAD"])
            .await?
            .trim()
            .to_owned())
    }

    /// Commits every change in the work tree on a new branch; returns the commit's sha.
    pub async fn commit_all(
        &self,
        dir: &Path,
        branch: &str,
        message: &str,
    ) -> Result<String, GitError> {
        self.run("checkout", dir, &["checkout", "--quiet", "-B", branch])
            .await?;
        self.run("add", dir, &["add", "--all"]).await?;
        self.run(
            "commit",
            dir,
            &[
                "-c",
                "commit.gpgsign=false",
                "commit",
                "--quiet",
                "--no-verify",
                "-m",
                message,
            ],
        )
        .await?;
        self.head(dir).await
    }

    /// Pushes HEAD to `branch` of `remote`, replacing what an earlier run of the task pushed.
    pub async fn push(&self, dir: &Path, remote: &str, branch: &str) -> Result<(), GitError> {
        let refspec = format!("+HEAD:refs/heads/{branch}");
        self.run("push", dir, &["push", "--quiet", remote, &refspec])
            .await?;
        Ok(())
    }

    pub async fn diff(&self, dir: &Path, from: &str, to: &str) -> Result<String, GitError> {
        self.run("diff", dir, &["diff", "--stat", "--patch", from, to])
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
mod tests {
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

    #[tokio::test]
    async fn commits_changes_on_a_branch_and_pushes_them() {
        let root = tempfile::tempdir().unwrap();
        let origin = root.path().join("origin.git");
        let git = Git::default();
        git.run(
            "init",
            root.path(),
            &[
                "init",
                "--quiet",
                "--bare",
                "-b",
                "main",
                origin.to_str().unwrap(),
            ],
        )
        .await
        .unwrap();
        let seed = root.path().join("seed");
        git.clone(origin.to_str().unwrap(), &seed).await.unwrap();
        std::fs::write(seed.join("a.txt"), "one\n").unwrap();
        git.commit_all(&seed, "main", "seed").await.unwrap();
        git.push(&seed, "origin", "main").await.unwrap();

        let work = root.path().join("work");
        git.clone(origin.to_str().unwrap(), &work).await.unwrap();
        assert!(!git.has_changes(&work).await.unwrap());
        std::fs::write(work.join("b.txt"), "two\n").unwrap();
        assert!(git.has_changes(&work).await.unwrap());
        let base = git.head(&work).await.unwrap();
        let sha = git
            .commit_all(&work, "conveyor/1-x", "add b")
            .await
            .unwrap();
        git.push(&work, "origin", "conveyor/1-x").await.unwrap();
        let pushed = git
            .run("rev-parse", &origin, &["rev-parse", "conveyor/1-x"])
            .await
            .unwrap();
        assert_eq!(pushed.trim(), sha);
        let diff = git.diff(&work, &base, &sha).await.unwrap();
        assert!(diff.contains("+two"), "{diff}");
    }
}
