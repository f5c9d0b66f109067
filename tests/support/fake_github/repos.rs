//! Repositories: their bare git repositories on disk, what tests do to them, and who may
//! do what in them (collaborators).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::json;

use super::checks::CheckRunRec;
use super::git::{git_cmd, git_stdout, run_git};
use super::issues::CommentRec;
use super::pulls::{PullRec, ReviewCommentRec};
use super::wire::{account_json, json_response, not_found};
use super::{FakeGitHub, Inner, Shared, lock};

/// Repository roles, weakest first, each with the legacy base permission GitHub reports for
/// it (`maintain` shows as `write`, `triage` as `read`).
const ROLES: &[(&str, &str)] = &[
    ("read", "read"),
    ("triage", "read"),
    ("write", "write"),
    ("maintain", "write"),
    ("admin", "admin"),
];

pub(super) struct RepoRec {
    pub(super) id: u64,
    pub(super) installation_id: i64,
    pub(super) owner: String,
    pub(super) name: String,
    pub(super) next_number: u64,
    pub(super) comments: Vec<CommentRec>,
    pub(super) pulls: Vec<PullRec>,
    pub(super) check_runs: Vec<CheckRunRec>,
    pub(super) check_suites: HashMap<String, u64>,
    pub(super) review_comments: Vec<ReviewCommentRec>,
    /// Lower-cased login → (login as given, role).
    collaborators: BTreeMap<String, (String, String)>,
}

impl RepoRec {
    /// `login`'s role in the repository, if any.
    pub(super) fn role(&self, login: &str) -> Option<&str> {
        self.collaborators
            .get(&login.to_ascii_lowercase())
            .map(|(_, role)| role.as_str())
    }

    /// How GitHub labels `login`'s comments here.
    pub(super) fn author_association(&self, login: &str) -> &'static str {
        if login.eq_ignore_ascii_case(&self.owner) {
            "OWNER"
        } else if self.role(login).is_some() {
            "COLLABORATOR"
        } else {
            "NONE"
        }
    }
}

impl Inner {
    /// Records that an account named `login` exists (GitHub answers 404 for logins that
    /// belong to no account).
    pub(super) fn know_user(&mut self, login: &str) {
        self.users.insert(login.to_ascii_lowercase());
    }
}

impl FakeGitHub {
    /// Creates a bare repo `<root>/<owner>/<name>.git` with one initial commit
    /// on `main` containing `files`; `.sh` files are mode 100755.
    pub fn add_repo(&self, installation_id: i64, owner: &str, name: &str, files: &[(&str, &str)]) {
        let bare = self.root.join(owner).join(format!("{name}.git"));
        std::fs::create_dir_all(&bare).expect("create bare repo dir");
        run_git(
            &bare,
            &["init", "--quiet", "--bare", "--initial-branch=main", "."],
        );
        run_git(&bare, &["config", "http.receivepack", "true"]);

        let work = tempfile::tempdir().expect("create work tree");
        let wt = work.path();
        run_git(wt, &["init", "--quiet", "--initial-branch=main", "."]);
        for (path, contents) in files {
            let full = wt.join(path);
            if let Some(parent) = full.parent() {
                std::fs::create_dir_all(parent).expect("create file parent dir");
            }
            std::fs::write(&full, contents).expect("write repo file");
        }
        run_git(wt, &["add", "--all"]);
        for (path, _) in files {
            if path.ends_with(".sh") {
                run_git(wt, &["update-index", "--chmod=+x", "--", path]);
            }
        }
        run_git(
            wt,
            &["commit", "--quiet", "--allow-empty", "-m", "Initial commit"],
        );
        let bare_str = bare.to_str().expect("utf-8 path");
        run_git(
            wt,
            &[
                "push",
                "--quiet",
                bare_str,
                "refs/heads/main:refs/heads/main",
            ],
        );

        let mut inner = lock(&self.shared);
        let id = inner.alloc_id();
        if let Some(i) = inner.repo_index(owner, name) {
            inner.repos.remove(i);
        }
        inner.repos.push(RepoRec {
            id,
            installation_id,
            owner: owner.to_string(),
            name: name.to_string(),
            next_number: 100,
            comments: Vec::new(),
            pulls: Vec::new(),
            check_runs: Vec::new(),
            check_suites: HashMap::new(),
            review_comments: Vec::new(),
            collaborators: BTreeMap::new(),
        });
    }

    /// Pushes a commit with `files` and symbolic `links` (path, target) to `branch` (made
    /// from `main` when missing), as a person pushing to GitHub would; returns its sha.
    pub fn push_files(
        &self,
        owner: &str,
        repo: &str,
        branch: &str,
        files: &[(&str, &str)],
        links: &[(&str, &str)],
    ) -> String {
        let bare = self.git_dir(owner, repo);
        let work = tempfile::tempdir().expect("create work tree");
        let wt = work.path();
        run_git(
            wt,
            &["clone", "--quiet", bare.to_str().expect("utf-8 path"), "."],
        );
        let start =
            if git_stdout(wt, &["rev-parse", "--verify", &format!("origin/{branch}")]).is_some() {
                format!("origin/{branch}")
            } else {
                "origin/main".to_owned()
            };
        run_git(wt, &["checkout", "--quiet", "-B", branch, &start]);
        for (path, contents) in files {
            let full = wt.join(path);
            std::fs::create_dir_all(full.parent().expect("a file has a parent")).expect("mkdir");
            // Never through a symbolic link the branch holds.
            let _ = std::fs::remove_file(&full);
            std::fs::write(&full, contents).expect("write repo file");
        }
        for (path, target) in links {
            let full = wt.join(path);
            std::fs::create_dir_all(full.parent().expect("a link has a parent")).expect("mkdir");
            let _ = std::fs::remove_file(&full);
            std::os::unix::fs::symlink(target, &full).expect("symlink");
        }
        run_git(wt, &["add", "--all"]);
        run_git(wt, &["commit", "--quiet", "-m", "A person's commit"]);
        run_git(
            wt,
            &[
                "push",
                "--quiet",
                "origin",
                &format!("HEAD:refs/heads/{branch}"),
            ],
        );
        git_stdout(wt, &["rev-parse", "HEAD"]).expect("the commit")
    }

    /// The commits reachable from `rev`, newest first.
    pub fn log(&self, owner: &str, repo: &str, rev: &str) -> Vec<String> {
        git_stdout(&self.git_dir(owner, repo), &["rev-list", rev])
            .map(|list| list.lines().map(str::to_owned).collect())
            .unwrap_or_default()
    }

    /// The commit `refs/heads/<branch>` points at in the bare repo.
    pub fn branch_sha(&self, owner: &str, repo: &str, branch: &str) -> Option<String> {
        let dir = self.git_dir(owner, repo);
        let refname = format!("refs/heads/{branch}");
        git_stdout(
            &dir,
            &[
                "rev-parse",
                "--verify",
                "--quiet",
                &format!("{refname}^{{commit}}"),
            ],
        )
    }

    /// `git show <rev>:<path>` in the bare repo.
    pub fn file_at(&self, owner: &str, repo: &str, rev: &str, path: &str) -> Option<String> {
        let dir = self.git_dir(owner, repo);
        let out = git_cmd(&dir, &["show", &format!("{rev}:{path}")])
            .output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        String::from_utf8(out.stdout).ok()
    }

    /// Path of the bare repository on disk.
    pub fn git_dir(&self, owner: &str, repo: &str) -> PathBuf {
        lock(&self.shared).git_dir(owner, repo)
    }

    /// Gives `login` the repository role `role` (`admin`, `maintain`, `write`, `triage` or
    /// `read`), replacing any it had; the account exists from now on.
    pub fn set_permission(&self, owner: &str, repo: &str, login: &str, role: &str) {
        assert!(
            ROLES.iter().any(|(r, _)| *r == role),
            "set_permission: unknown role {role:?}"
        );
        let mut inner = lock(&self.shared);
        let idx = inner.repo_index(owner, repo).expect("known repository");
        inner.know_user(login);
        inner.repos[idx].collaborators.insert(
            login.to_ascii_lowercase(),
            (login.to_owned(), role.to_owned()),
        );
    }
}

/// `GET /repos/{owner}/{repo}/collaborators/{username}/permission`: the user's role and its
/// legacy base permission. An account without access gets `none`; a login no account has,
/// 404.
pub(super) fn collaborator_permission(shared: &Shared, idx: usize, login: &str) -> Response {
    let inner = lock(shared);
    if !inner.users.contains(&login.to_ascii_lowercase()) {
        return not_found();
    }
    let r = &inner.repos[idx];
    let (login, role) = match r.collaborators.get(&login.to_ascii_lowercase()) {
        Some((login, role)) => (login.as_str(), role.as_str()),
        None => (login, "none"),
    };
    let permission = ROLES
        .iter()
        .find(|(r, _)| *r == role)
        .map_or("none", |(_, permission)| *permission);
    let rank = ROLES.iter().position(|(r, _)| *r == role);
    let holds = |at_least: &str| rank >= ROLES.iter().position(|(r, _)| *r == at_least);
    let mut user = account_json(&inner.base_url, login);
    user["permissions"] = json!({
        "admin": holds("admin"),
        "maintain": holds("maintain"),
        "push": holds("write"),
        "triage": holds("triage"),
        "pull": holds("read"),
    });
    user["role_name"] = role.into();
    json_response(
        StatusCode::OK,
        &json!({ "permission": permission, "role_name": role, "user": user }),
    )
}

/// `GET /repos/{owner}/{repo}/git/ref/{ref}`: only branches (`heads/…`) exist here, as in a
/// repository without tags; anything else is 404, as GitHub answers for a missing ref.
pub(super) async fn get_ref(
    shared: &Shared,
    idx: usize,
    git_dir: &std::path::Path,
    reference: &str,
) -> Response {
    let Some(branch) = reference.strip_prefix("heads/") else {
        return not_found();
    };
    let Some(sha) = super::git::branch_sha_async(git_dir, branch).await else {
        return not_found();
    };
    let (base, full) = {
        let inner = lock(shared);
        let repo = &inner.repos[idx];
        (
            inner.base_url.clone(),
            format!("{}/{}", repo.owner, repo.name),
        )
    };
    json_response(
        StatusCode::OK,
        &json!({
            "ref": format!("refs/{reference}"),
            "node_id": format!("REF_{}", sha),
            "url": format!("{base}/repos/{full}/git/refs/{reference}"),
            "object": {
                "type": "commit",
                "sha": sha,
                "url": format!("{base}/repos/{full}/git/commits/{sha}"),
            },
        }),
    )
}
