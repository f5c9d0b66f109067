//! The mirror cache against the fake GitHub's git server: what the server sees across runs
//! and processes, concurrent workspaces, broken mirrors, eviction, and what the steps see.

mod support;

use std::collections::HashSet;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use conveyor::engine::TaskState;
use conveyor::pipeline::Checkout;
use conveyor::pipeline::git::Git;
use conveyor::pipeline::mirror::{MirrorError, Mirrors, Origin, Refresh};
use conveyor::pipeline::sandbox::{Sandbox, SandboxMode};
use conveyor::pipeline::workspace::Workspaces;
use sqlx::PgPool;
use support::{FakeGitHub, Harness, INSTALLATION_ID, OWNER, REPO};

/// A fake GitHub holding `repos` of the installation, and git authenticated for it.
async fn github_with(repos: &[&str]) -> (FakeGitHub, Git) {
    let github = FakeGitHub::start().await;
    github.add_installation(INSTALLATION_ID, OWNER);
    for repo in repos {
        github.add_repo(
            INSTALLATION_ID,
            OWNER,
            repo,
            &[("README.md", &format!("# {repo}\n")), ("src/lib.rs", "x\n")],
        );
    }
    let token = github.mint_token(INSTALLATION_ID);
    (github, Git::with_token(&token.into()))
}

fn origin(github: &FakeGitHub, repo: &str) -> Origin {
    let url = format!("{}/{OWNER}/{repo}.git", github.url);
    Origin::installation(INSTALLATION_ID, OWNER, repo, &url)
}

/// The fetch negotiations the server saw for `repo` (ref advertisements), and the
/// upload-pack requests of all of them: a clone, and a fetch with something new, ask for a
/// pack after listing refs; a fetch that finds nothing new does not.
fn upload_pack(github: &FakeGitHub, repo: &str) -> (usize, usize) {
    let base = format!("/{OWNER}/{repo}.git/");
    let requests = github.requests();
    let adverts = requests
        .iter()
        .filter(|r| {
            r.method == "GET" && r.path == format!("{base}info/refs?service=git-upload-pack")
        })
        .count();
    let posts = requests
        .iter()
        .filter(|r| r.method == "POST" && r.path == format!("{base}git-upload-pack"))
        .count();
    (adverts, posts)
}

/// Every file under `dir`, by device and inode.
fn inodes(dir: &Path) -> HashSet<(u64, u64)> {
    let mut found = HashSet::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let meta = entry.metadata().unwrap();
        if meta.is_dir() {
            found.extend(inodes(&entry.path()));
        } else {
            found.insert((meta.dev(), meta.ino()));
        }
    }
    found
}

fn packs(git_dir: &Path) -> Vec<PathBuf> {
    let mut packs: Vec<PathBuf> = std::fs::read_dir(git_dir.join("objects/pack"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "pack"))
        .collect();
    packs.sort();
    packs
}

fn disk_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| {
            let entry = entry.unwrap();
            let meta = entry.metadata().unwrap();
            if meta.is_dir() {
                disk_bytes(&entry.path())
            } else {
                meta.len()
            }
        })
        .sum()
}

/// The mirror's lock file, held the way another process would hold it.
fn hold_lock(mirror: &Path) -> File {
    let name = mirror.file_name().unwrap().to_string_lossy();
    let lock = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(mirror.with_file_name(format!("{name}.lock")))
        .unwrap();
    // SAFETY: flock only acts on the descriptor passed.
    assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) }, 0);
    lock
}

fn sh_git(dir: &Path, args: &[&str]) -> String {
    let output = std::process::Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@t")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@t")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

#[tokio::test]
async fn a_second_workspace_fetches_into_the_mirror_instead_of_cloning() {
    let (github, git) = github_with(&[REPO]).await;
    let data = tempfile::tempdir().unwrap();
    let mirrors = Mirrors::open(data.path(), u64::MAX);
    let workspaces = Workspaces::open(data.path());
    let origin = origin(&github, REPO);

    let first = Checkout::clone(&git, &origin, &mirrors, &workspaces)
        .await
        .unwrap();
    let (adverts, clone_posts) = upload_pack(&github, REPO);
    assert_eq!(adverts, 1);
    let mirror = mirrors.mirror_dir(&origin);
    let cloned_pack = packs(&mirror);
    assert_eq!(cloned_pack.len(), 1, "{cloned_pack:?}");

    let second = Checkout::clone(&git, &origin, &mirrors, &workspaces)
        .await
        .unwrap();
    assert_eq!(second.default_head, first.default_head);
    assert_eq!(
        upload_pack(&github, REPO),
        (2, clone_posts + clone_posts - 1),
        "the second workspace listed the refs and asked for no pack"
    );

    let pushed = github.push_files(OWNER, REPO, "main", &[("new.txt", "new\n")], &[]);
    let third = Checkout::clone(&git, &origin, &mirrors, &workspaces)
        .await
        .unwrap();
    assert_eq!(third.default_head, pushed);
    let after = packs(&mirror);
    assert_eq!(after.len(), 2, "the fetch added a pack: {after:?}");
    assert!(
        after.contains(&cloned_pack[0]),
        "the cloned pack was kept, not cloned again"
    );
    assert_eq!(upload_pack(&github, REPO).0, 3);
}

#[tokio::test]
async fn two_processes_share_the_mirror_and_take_turns_on_a_real_flock() {
    let (github, git) = github_with(&[REPO]).await;
    let data = tempfile::tempdir().unwrap();
    let origin = origin(&github, REPO);
    let (one, two) = (
        Mirrors::open(data.path(), u64::MAX),
        Mirrors::open(data.path(), u64::MAX),
    );
    let scratch = tempfile::tempdir().unwrap();
    let made = one
        .workspace(&git, &origin, &scratch.path().join("a"))
        .await
        .unwrap();
    assert_eq!(made.refresh, Refresh::Cloned);

    // Another process holds the lock: the other instance waits for it, then fetches.
    let held = hold_lock(&two.mirror_dir(&origin));
    let target = scratch.path().join("b");
    let waiting = two.workspace(&git, &origin, &target);
    tokio::pin!(waiting);
    assert!(
        tokio::time::timeout(Duration::from_millis(500), &mut waiting)
            .await
            .is_err(),
        "went on while another process held the mirror's lock"
    );
    drop(held);
    let made = waiting.await.unwrap();
    assert_eq!(made.refresh, Refresh::Fetched, "the second process cloned");
    assert_eq!(upload_pack(&github, REPO).0, 2);
}

#[tokio::test]
async fn workspaces_that_start_together_share_one_fetch() {
    let (github, git) = github_with(&[REPO]).await;
    let data = tempfile::tempdir().unwrap();
    let origin = origin(&github, REPO);
    let mirrors = Mirrors::open(data.path(), u64::MAX);
    let other_process = Mirrors::open(data.path(), u64::MAX);
    let scratch = tempfile::tempdir().unwrap();
    mirrors
        .workspace(&git, &origin, &scratch.path().join("first"))
        .await
        .unwrap();
    github.push_files(OWNER, REPO, "main", &[("new.txt", "new\n")], &[]);
    let before = upload_pack(&github, REPO).0;

    // Three ask while a fetch by someone else is under way (the lock held), as runs that
    // start together do; when it ends, one of them fetches and the others use its fetch.
    let held = hold_lock(&mirrors.mirror_dir(&origin));
    let (a, b, c) = (
        scratch.path().join("a"),
        scratch.path().join("b"),
        scratch.path().join("c"),
    );
    let release = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        drop(held);
    };
    let (a, b, c, ()) = tokio::join!(
        mirrors.workspace(&git, &origin, &a),
        mirrors.workspace(&git, &origin, &b),
        other_process.workspace(&git, &origin, &c),
        release,
    );
    let mut refreshes: Vec<Refresh> = [a, b, c].into_iter().map(|m| m.unwrap().refresh).collect();
    refreshes.sort_by_key(|r| format!("{r:?}"));
    assert_eq!(
        refreshes,
        [Refresh::Fetched, Refresh::Shared, Refresh::Shared]
    );
    assert_eq!(
        upload_pack(&github, REPO).0,
        before + 1,
        "one fetch for three workspaces"
    );
}

/// A way to damage a mirror on disk, and its name.
type Corruption = (&'static str, fn(&Path));

/// Damage done to a mirror on disk between runs.
fn corruptions() -> Vec<Corruption> {
    vec![
        ("objects deleted", |mirror| {
            for pack in packs(mirror) {
                std::fs::remove_file(&pack).unwrap();
                std::fs::remove_file(pack.with_extension("idx")).unwrap();
            }
        }),
        ("a pack truncated", |mirror| {
            let pack = &packs(mirror)[0];
            let len = std::fs::metadata(pack).unwrap().len();
            let file = File::options().write(true).open(pack).unwrap();
            file.set_len(len / 2).unwrap();
        }),
        ("garbage in HEAD", |mirror| {
            std::fs::write(mirror.join("HEAD"), "\0\0not a ref\n").unwrap();
        }),
        ("half a directory", |mirror| {
            std::fs::remove_dir_all(mirror.join("refs")).unwrap();
            std::fs::remove_file(mirror.join("config")).unwrap();
        }),
    ]
}

#[tokio::test]
async fn a_corrupt_mirror_is_cloned_again_and_the_workspace_works() {
    let (github, git) = github_with(&[REPO]).await;
    let data = tempfile::tempdir().unwrap();
    let mirrors = Mirrors::open(data.path(), u64::MAX);
    let workspaces = Workspaces::open(data.path());
    let origin = origin(&github, REPO);
    let sandbox = Sandbox::new(SandboxMode::Off, Vec::new());
    let mirror = mirrors.mirror_dir(&origin);
    let head = Checkout::clone(&git, &origin, &mirrors, &workspaces)
        .await
        .unwrap()
        .default_head;

    for (damage, corrupt) in corruptions() {
        corrupt(&mirror);
        let clones_before = upload_pack(&github, REPO).0;
        let checkout = Checkout::clone(&git, &origin, &mirrors, &workspaces)
            .await
            .unwrap_or_else(|err| panic!("{damage}: {err}"));
        assert_eq!(checkout.default_head, head, "{damage}");
        checkout
            .check_out(&git, &head, None, "https://example.test/r.git", &sandbox)
            .await
            .unwrap_or_else(|err| panic!("{damage}: {err}"));
        assert_eq!(
            std::fs::read_to_string(checkout.workspace.repo_dir().join("README.md")).unwrap(),
            format!("# {REPO}\n"),
            "{damage}"
        );
        assert!(
            upload_pack(&github, REPO).0 > clones_before,
            "{damage}: nothing was fetched"
        );
        sh_git(&mirror, &["fsck", "--no-dangling"]);
    }
}

#[tokio::test]
async fn a_remote_that_is_down_is_a_clone_failure_and_the_mirror_is_kept() {
    let (github, git) = github_with(&[REPO]).await;
    let data = tempfile::tempdir().unwrap();
    let mirrors = Mirrors::open(data.path(), u64::MAX);
    let scratch = tempfile::tempdir().unwrap();
    let good = origin(&github, REPO);
    mirrors
        .workspace(&git, &good, &scratch.path().join("a"))
        .await
        .unwrap();
    let kept = packs(&mirrors.mirror_dir(&good));

    // The same repository, its remote not answering.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let down_url = format!("http://{}/{OWNER}/{REPO}.git", closed.local_addr().unwrap());
    drop(closed);
    let down = Origin::installation(INSTALLATION_ID, OWNER, REPO, &down_url);
    let err = mirrors
        .workspace(&git, &down, &scratch.path().join("b"))
        .await
        .unwrap_err();
    assert!(matches!(err, MirrorError::Remote(_)), "{err}");
    assert_eq!(packs(&mirrors.mirror_dir(&good)), kept, "the mirror went");

    let made = mirrors
        .workspace(&git, &good, &scratch.path().join("c"))
        .await
        .unwrap();
    assert_eq!(made.refresh, Refresh::Fetched);

    let missing = origin(&github, "no-such-repo");
    let err = mirrors
        .workspace(&git, &missing, &scratch.path().join("d"))
        .await
        .unwrap_err();
    assert!(matches!(err, MirrorError::Remote(_)), "{err}");
    assert!(!mirrors.mirror_dir(&missing).exists());
}

#[tokio::test]
async fn over_the_budget_the_least_recently_used_mirrors_go_but_not_one_in_use() {
    let (github, git) = github_with(&["a", "b", "c", "d"]).await;
    let data = tempfile::tempdir().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let unbounded = Mirrors::open(data.path(), u64::MAX);
    let mut n = 0;
    let mut use_repo = async |mirrors: &Mirrors, repo: &str| {
        n += 1;
        let target = scratch.path().join(n.to_string());
        mirrors
            .workspace(&git, &origin(&github, repo), &target)
            .await
            .unwrap();
    };
    for repo in ["a", "b", "a"] {
        use_repo(&unbounded, repo).await;
        // Use times a file system can tell apart.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let dir = |repo: &str| unbounded.mirror_dir(&origin(&github, repo));
    let (a, b) = (disk_bytes(&dir("a")), disk_bytes(&dir("b")));

    // Room for two: `b`, used before `a` last was, goes when `c` comes.
    let two = Mirrors::open(data.path(), a + b + b / 2);
    use_repo(&two, "c").await;
    assert!(dir("a").exists(), "the more recently used mirror went");
    assert!(!dir("b").exists(), "the least recently used mirror stayed");
    assert!(dir("c").exists(), "the mirror just used went");

    // Room for none: the one just used stays, and so does one another process holds.
    let held = hold_lock(&dir("a"));
    let none = Mirrors::open(data.path(), 0);
    use_repo(&none, "d").await;
    assert!(dir("a").exists(), "a mirror another process held went");
    assert!(!dir("c").exists());
    assert!(dir("d").exists(), "the mirror just used went");
    drop(held);
}

#[tokio::test]
async fn the_recorded_base_is_checked_out_after_the_branch_moved_and_lost_it() {
    let (github, git) = github_with(&[REPO]).await;
    let data = tempfile::tempdir().unwrap();
    let mirrors = Mirrors::open(data.path(), u64::MAX);
    let workspaces = Workspaces::open(data.path());
    let origin = origin(&github, REPO);
    let sandbox = Sandbox::new(SandboxMode::Off, Vec::new());
    let base = Checkout::clone(&git, &origin, &mirrors, &workspaces)
        .await
        .unwrap()
        .default_head;

    // The default branch moves on, then is rewritten so that the base is on no branch.
    let moved = github.push_files(OWNER, REPO, "main", &[("README.md", "moved\n")], &[]);
    let remote = github.git_dir(OWNER, REPO);
    let tree = sh_git(&remote, &["rev-parse", &format!("{moved}^{{tree}}")]);
    let rewritten = sh_git(&remote, &["commit-tree", &tree, "-m", "rewritten"]);
    sh_git(&remote, &["update-ref", "refs/heads/main", &rewritten]);

    let checkout = Checkout::clone(&git, &origin, &mirrors, &workspaces)
        .await
        .unwrap();
    assert_eq!(checkout.default_head, rewritten);
    checkout
        .check_out(&git, &base, None, "https://example.test/r.git", &sandbox)
        .await
        .unwrap();
    let work = checkout.workspace.repo_dir();
    assert_eq!(
        std::fs::read_to_string(work.join("README.md")).unwrap(),
        format!("# {REPO}\n")
    );
    assert_eq!(sh_git(&work, &["rev-parse", "HEAD"]), base);

    // The steps' repository holds every object itself and shares no file with the mirror.
    assert!(!work.join(".git/objects/info/alternates").exists());
    sh_git(&work, &["fsck", "--no-dangling"]);
    let mirror = inodes(&mirrors.mirror_dir(&origin));
    let steps = inodes(&work.join(".git"));
    assert!(
        mirror.is_disjoint(&steps),
        "the steps' .git shares a file with the mirror"
    );
}

#[sqlx::test]
async fn runs_reuse_the_mirror_and_a_step_cannot_reach_it(pool: PgPool) {
    let harness = Harness::start(pool).await;
    let data_dir = harness.data_dir.path().to_owned();
    let mirror = Mirrors::open(&data_dir, u64::MAX).mirror_dir(&Origin::installation(
        INSTALLATION_ID,
        OWNER,
        REPO,
        "",
    ));
    let pipeline = format!(
        r#"pipelines:
  default:
    steps:
      - name: look
        run: |
          if ls {mirrors} >/dev/null 2>&1 || ls {mirror}/objects >/dev/null 2>&1; then echo SAW-THE-MIRROR; exit 1; fi
          test ! -e .git/objects/info/alternates
          git -c safe.directory='*' fsck --no-dangling
          printf '%s\n' "$CONVEYOR_TASK_TITLE" > NOTES.md
"#,
        mirrors = data_dir.join("mirrors").display(),
        mirror = mirror.display(),
    );
    harness.add_repo(&[(".github/conveyor.yml", &pipeline), ("README.md", "x\n")]);

    let (_, state) = harness.label_and_finish("d-1", 1, "First").await;
    let output: Vec<String> = sqlx::query_scalar("SELECT output FROM run_steps")
        .fetch_all(&harness.pool)
        .await
        .unwrap_or_default();
    assert_eq!(state, TaskState::Succeeded, "{output:?}");
    assert!(mirror.join("objects").is_dir(), "the run made no mirror");
    let cloned = packs(&mirror);

    let (_, state) = harness.label_and_finish("d-2", 2, "Second").await;
    assert_eq!(state, TaskState::Succeeded);
    let fetched = packs(&mirror);
    assert!(
        fetched.contains(&cloned[0]) && fetched.len() > cloned.len(),
        "the second run did not fetch into the first one's mirror: {cloned:?} then {fetched:?}"
    );
    assert_eq!(upload_pack(&harness.github, REPO).0, 2);
    assert!(harness.workspaces_left().is_empty());
}
