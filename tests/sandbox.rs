//! Steps are untrusted code: a hostile pipeline tries every way out of its sandbox, through
//! the real router, workers and the fake GitHub, and finds nothing but its own workspace.

mod support;

use std::path::Path;

use conveyor::engine::{TaskState, runs};
use sqlx::PgPool;
use support::{Captured, Harness, OWNER, REPO, fake_github};

/// The test database's own URL with a password added (trust authentication ignores it).
const DATABASE_URL: &str = "postgres://postgres:db-password-7f3a@127.0.0.1:5432/postgres";

/// Conveyor's secrets, set the way production sets them: the environment and a key file.
fn set_production_secrets() {
    // SAFETY: this test binary sets these before it starts any thread that reads them.
    unsafe {
        std::env::set_var("DATABASE_URL", DATABASE_URL);
        std::env::set_var("GITHUB_WEBHOOK_SECRET", support::WEBHOOK_SECRET);
        std::env::set_var("CONVEYOR_API_TOKEN", support::API_TOKEN);
    }
}

/// A line from the middle of the App's private key: in the key file, never anywhere else.
fn key_fingerprint() -> &'static str {
    fake_github::private_key_pem().lines().nth(5).unwrap()
}

/// Every text of the run that a person or a log could read, and the secrets none may hold.
fn assert_no_secret(harness: &Harness, what: &str, text: &str) {
    let mut secrets = vec![
        support::WEBHOOK_SECRET.to_owned(),
        support::API_TOKEN.to_owned(),
        "db-password-7f3a".to_owned(),
        key_fingerprint().to_owned(),
    ];
    secrets.extend(harness.github.issued_tokens());
    for secret in secrets {
        assert!(
            !text.contains(&secret),
            "{what} holds a secret ({secret:.12}…)"
        );
    }
}

/// `port` is the fake GitHub's and `conveyor` Conveyor's own, both on the host's loopback.
fn hostile_pipeline(
    key: &Path,
    data_dir: &Path,
    marker: &Path,
    evil: &Path,
    (port, conveyor): (u16, u16),
    sleep: &str,
) -> String {
    let (key, data_dir, marker, evil) = (
        key.display(),
        data_dir.display(),
        marker.display(),
        evil.display(),
    );
    format!(
        r#"pipelines:
  default:
    steps:
      - name: environment
        run: |
          mkdir -p findings
          env > findings/env.txt
          for f in /proc/[0-9]*/environ; do echo "== $f"; tr '\0' '\n' < "$f"; echo; done > findings/proc-environ.txt 2>&1
          ls -la /proc/$PPID/root/ > findings/ppid-root.txt 2>&1
          tr '\0' ' ' < /proc/1/cmdline > findings/pid1.txt
          id > findings/id.txt
      - name: files
        run: |
          cat {key} > findings/key.txt 2>&1
          ls -laR {data_dir} > findings/data-dir.txt 2>&1
          ls -la / > findings/root.txt
          cat /etc/shadow > findings/shadow.txt 2>&1
          true
      - name: git
        run: |
          for hook in pre-commit post-commit pre-push reference-transaction post-index-change; do
            printf '#!/bin/sh\ntouch {marker}\n' > .git/hooks/$hook; chmod +x .git/hooks/$hook
          done
          git config core.fsmonitor "touch {marker}"
          git config remote.origin.pushurl {evil}
          git config filter.evil.clean "touch {marker}; cat"
          echo '* filter=evil' > .gitattributes
          echo 'work the task asked for' > NOTES.md
      - name: escape
        run: setsid sleep {sleep} > /dev/null 2>&1 & sleep 0.1; echo detached
      - name: network
        run: |
          for target in 127.0.0.1:5432 10.0.2.2:5432 127.0.0.1:{port} 10.0.2.2:{port} 10.0.2.2:{conveyor}; do
            if bash -c "exec 3<>/dev/tcp/${{target%:*}}/${{target#*:}}" 2>/dev/null; then echo "open $target"; else echo "closed $target"; fi
          done > findings/network.txt
          psql -h 10.0.2.2 -U postgres -d postgres -c 'select title from tasks' > findings/psql.txt 2>&1
          true
      - name: noise
        run: |
          head -c 100000 /dev/zero | tr '\0' x; echo
          printf 'nul\0byte\n'
"#
    )
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn a_hostile_pipeline_reaches_nothing_but_its_workspace(pool: PgPool) {
    set_production_secrets();
    let (captured, _guard) = Captured::logs();

    let secrets = tempfile::tempdir().unwrap();
    let key = secrets.path().join("app.pem");
    std::fs::write(&key, fake_github::private_key_pem()).unwrap();
    let marker = secrets.path().join("pwned");
    let evil = secrets.path().join("evil.git");
    assert!(
        std::process::Command::new("git")
            .args(["init", "-q", "--bare"])
            .arg(&evil)
            .status()
            .unwrap()
            .success()
    );
    let harness = Harness::start_configured(pool, |config| {
        config.github.private_key = None;
        config.github.private_key_path = Some(key.clone());
    })
    .await;
    let port_of = |url: &str| -> u16 { url.rsplit(':').next().unwrap().parse().unwrap() };
    let port = port_of(&harness.github.url);
    let conveyor = port_of(&harness.listen().await);
    let sleep = format!("{}.{}", 5000 + fastrand::u32(..1000), fastrand::u32(..1000));
    let pipeline = hostile_pipeline(
        &key,
        harness.data_dir.path(),
        &marker,
        &evil,
        (port, conveyor),
        &sleep,
    );
    harness.add_repo(&[
        (".github/conveyor.yml", &pipeline),
        ("README.md", "# widgets\n"),
    ]);

    let (task_id, state) = harness.label_and_finish("d-hostile", 7, "Hostile").await;
    let comment = harness.final_comment(7).await;
    assert_eq!(state, TaskState::Succeeded, "{}", comment.body);

    // What the steps found, as they pushed it.
    let branch = "conveyor/7-hostile";
    let found = |name: &str| {
        harness
            .github
            .file_at(OWNER, REPO, branch, &format!("findings/{name}"))
            .unwrap_or_else(|| panic!("findings/{name} was pushed"))
    };
    let env = found("env.txt");
    assert!(env.contains("CONVEYOR_TASK_TITLE=Hostile"), "{env}");
    assert!(
        !env.contains("DATABASE_URL") && !env.contains("GITHUB_"),
        "{env}"
    );
    let proc_environ = found("proc-environ.txt");
    assert!(
        proc_environ.contains("== /proc/1/environ"),
        "{proc_environ}"
    );
    assert!(!proc_environ.contains("DATABASE_URL"), "{proc_environ}");
    assert!(found("pid1.txt").contains("bwrap"));
    assert!(found("id.txt").starts_with("uid=1000"));
    assert!(
        found("key.txt").contains("No such file"),
        "{}",
        found("key.txt")
    );
    assert!(
        found("data-dir.txt").contains("No such file"),
        "{}",
        found("data-dir.txt")
    );
    assert!(
        found("shadow.txt").contains("Permission denied"),
        "{}",
        found("shadow.txt")
    );
    let network = found("network.txt");
    assert_eq!(
        network,
        format!(
            "closed 127.0.0.1:5432\nclosed 10.0.2.2:5432\nclosed 127.0.0.1:{port}\nclosed 10.0.2.2:{port}\nclosed 10.0.2.2:{conveyor}\n"
        )
    );
    assert!(
        !found("psql.txt").contains("Hostile"),
        "{}",
        found("psql.txt")
    );

    // Conveyor's git ran none of the steps' hooks, fsmonitor or filter, and ignored their push URL.
    assert!(
        !marker.exists(),
        "a step's hook, fsmonitor or filter ran in Conveyor's git"
    );
    let evil_refs = std::process::Command::new("git")
        .args(["for-each-ref"])
        .current_dir(&evil)
        .output()
        .unwrap();
    assert!(evil_refs.stdout.is_empty(), "pushed to the steps' push URL");
    assert_eq!(
        harness
            .github
            .file_at(OWNER, REPO, branch, "NOTES.md")
            .as_deref(),
        Some("work the task asked for\n")
    );

    // The detached child is gone with its step.
    support::wait_until("the setsid child to be gone", || async {
        support::processes_with(&sleep).is_empty().then_some(())
    })
    .await;

    // No secret anywhere a person or a log could read.
    let tree = std::process::Command::new("git")
        .args(["grep", "-a", "-h", "-e", "", branch, "--"])
        .current_dir(harness.github.git_dir(OWNER, REPO))
        .output()
        .unwrap();
    assert_no_secret(
        &harness,
        "the pushed branch",
        &String::from_utf8_lossy(&tree.stdout),
    );
    for comment in harness.github.comments(OWNER, REPO, 7) {
        assert_no_secret(&harness, "a comment", &comment.body);
        comment
            .edits
            .iter()
            .for_each(|edit| assert_no_secret(&harness, "a comment edit", edit));
    }
    for check in harness.github.check_runs(OWNER, REPO) {
        assert_no_secret(
            &harness,
            "a check run",
            &format!("{:?}", check.output_summary),
        );
    }
    let run = &runs::for_task(&harness.pool, task_id).await.unwrap()[0];
    let steps = runs::steps(&harness.pool, run.id).await.unwrap();
    assert_eq!(steps.len(), 6);
    for step in &steps {
        assert_no_secret(&harness, "stored step output", &step.output);
    }
    let noise = &steps[5].output;
    assert!(
        noise.contains(&"x".repeat(100_000)) && noise.contains("nulbyte"),
        "{:.200}",
        noise
    );
    assert_no_secret(&harness, "the logs", &captured.text());

    // A readable report all the same.
    assert!(
        comment.body.contains("finished pipeline `default`"),
        "{}",
        comment.body
    );
    assert!(
        comment.body.contains("| `network` | ✅ passed |"),
        "{}",
        comment.body
    );
    assert!(
        harness.workspaces_left().is_empty(),
        "{:?}",
        harness.workspaces_left()
    );
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn a_pipeline_file_that_is_a_symlink_or_too_large_is_refused_without_quoting_anything(
    pool: PgPool,
) {
    let harness = Harness::start(pool).await;
    let secret = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(secret.path(), "pipelines: [SECRET-FROM-OUTSIDE\n").unwrap();
    harness.add_repo(&[("README.md", "# widgets\n")]);
    let target = secret.path().to_str().unwrap();
    harness.github.push_files(
        OWNER,
        REPO,
        "main",
        &[],
        &[(".github/conveyor.yml", target)],
    );

    let (_, state) = harness.label_and_finish("d-link", 3, "Linked").await;
    assert_eq!(state, TaskState::Failed);
    let body = harness.final_comment(3).await.body;
    assert!(
        body.contains("must be a regular file in the repository, but it is a symbolic link"),
        "{body}"
    );
    assert!(!body.contains("SECRET-FROM-OUTSIDE"), "{body}");

    let huge = format!("# {}\n", "x".repeat(300 * 1024));
    harness
        .github
        .push_files(OWNER, REPO, "main", &[(".github/conveyor.yml", &huge)], &[]);
    let (_, state) = harness.label_and_finish("d-huge", 4, "Huge").await;
    assert_eq!(state, TaskState::Failed);
    let body = harness.final_comment(4).await.body;
    assert!(body.contains("the limit is 262144 bytes"), "{body}");
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn a_run_that_changes_a_protected_path_pushes_nothing(pool: PgPool) {
    let harness = Harness::start(pool).await;
    let pipeline = "pipelines:
  default:
    steps:
      - name: rewrite-ci
        run: mkdir -p .github/workflows && echo on-push > .github/workflows/ci.yml && echo ok > NOTES.md
";
    harness.add_repo(&[(".github/conveyor.yml", pipeline)]);
    let (task_id, state) = harness.label_and_finish("d-ci", 5, "Touch CI").await;
    assert_eq!(state, TaskState::Failed);
    let body = harness.final_comment(5).await.body;
    assert!(body.contains("changed protected files"), "{body}");
    assert!(body.contains("- `.github/workflows/ci.yml`"), "{body}");
    assert!(!body.contains("NOTES.md"), "{body}");
    assert_eq!(
        harness
            .github
            .branch_sha(OWNER, REPO, "conveyor/5-touch-ci"),
        None
    );
    assert!(harness.github.pull_requests(OWNER, REPO).is_empty());
    let run = &runs::for_task(&harness.pool, task_id).await.unwrap()[0];
    assert_eq!(
        run.failure.as_deref(),
        Some("changed protected paths: .github/workflows/ci.yml")
    );
    assert_eq!(
        runs::for_task(&harness.pool, task_id).await.unwrap().len(),
        1,
        "not retried: it needs a change to the pipeline"
    );

    // A pipeline may say what it protects instead.
    let narrowed = "pipelines:
  default:
    protected_paths: ['docs/**']
    steps:
      - name: rewrite-ci
        run: mkdir -p .github/workflows && echo on-push > .github/workflows/ci.yml
";
    harness.github.push_files(
        OWNER,
        REPO,
        "main",
        &[(".github/conveyor.yml", narrowed)],
        &[],
    );
    let (_, state) = harness
        .label_and_finish("d-ci-2", 6, "Touch CI again")
        .await;
    assert_eq!(state, TaskState::Succeeded);
    assert!(
        harness
            .github
            .file_at(
                OWNER,
                REPO,
                "conveyor/6-touch-ci-again",
                ".github/workflows/ci.yml"
            )
            .is_some()
    );
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn a_branch_someone_else_pushed_to_is_built_on_never_overwritten(pool: PgPool) {
    let harness = Harness::start(pool).await;
    harness.add_repo_with_pipeline();
    let branch = "conveyor/7-add-release-notes";
    let (_, state) = harness
        .label_and_finish("d-first", 7, "Add release notes")
        .await;
    assert_eq!(state, TaskState::Succeeded);
    let ours = harness.github.branch_sha(OWNER, REPO, branch).unwrap();

    // A maintainer adds a commit to Conveyor's branch; the issue is labelled again.
    let theirs = harness.github.push_files(
        OWNER,
        REPO,
        branch,
        &[
            ("HUMAN.md", "a maintainer's fix\n"),
            ("NOTES.md", "rewritten by a maintainer\n"),
        ],
        &[],
    );
    let (_, state) = harness
        .label_and_finish("d-second", 7, "Add release notes")
        .await;
    assert_eq!(
        state,
        TaskState::Succeeded,
        "{}",
        harness.final_comment(7).await.body
    );

    let head = harness.github.branch_sha(OWNER, REPO, branch).unwrap();
    assert_ne!(head, theirs);
    let history = harness.github.log(OWNER, REPO, branch);
    assert!(
        history.contains(&theirs) && history.contains(&ours),
        "{history:?}"
    );
    assert_eq!(
        harness
            .github
            .file_at(OWNER, REPO, branch, "HUMAN.md")
            .as_deref(),
        Some("a maintainer's fix\n")
    );
    let comment = support::wait_until("the second run's report", || async {
        harness
            .github
            .comments(OWNER, REPO, 7)
            .into_iter()
            .find(|c| c.body.contains("built on"))
    })
    .await;
    assert!(
        comment
            .body
            .contains(&format!("built on their commit {theirs}")),
        "{}",
        comment.body
    );
}

#[sqlx::test(migrator = "conveyor::db::MIGRATOR")]
async fn where_the_sandbox_cannot_start_steps_do_not_run_unless_it_is_turned_off(pool: PgPool) {
    // A data dir the sandbox's user cannot reach: its parent is private to root.
    let private = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        private.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    let data_dir = private.path().join("data");
    let marker = private.path().join("ran");
    let harness = Harness::start_configured(pool.clone(), |config| {
        config.data_dir = data_dir.clone();
    })
    .await;
    let pipeline = format!(
        "pipelines:\n  default:\n    steps:\n      - name: work\n        run: touch {} NOTES.md\n",
        marker.display()
    );
    harness.add_repo(&[(".github/conveyor.yml", &pipeline)]);
    let task_id = harness.label("d-nosandbox", 8, "Boxed").await;
    harness.reach(task_id, TaskState::Scheduled).await;
    let body = harness.final_comment(8).await.body;
    assert!(
        body.contains("steps did not run: the sandbox could not start"),
        "{body}"
    );
    assert!(body.contains("CONVEYOR_SANDBOX=off"), "{body}");
    assert!(!marker.exists());
    drop(harness);

    let unconfined = Harness::start_configured(pool, |config| {
        config.data_dir = data_dir.clone();
        config.sandbox = conveyor::pipeline::sandbox::SandboxMode::Off;
    })
    .await;
    unconfined.add_repo(&[(".github/conveyor.yml", &pipeline)]);
    let (_, state) = unconfined.label_and_finish("d-off", 9, "Unboxed").await;
    assert_eq!(state, TaskState::Succeeded);
    assert!(
        marker.exists(),
        "with the sandbox off the step ran on the host"
    );
}

#[tokio::test]
async fn conveyor_run_uses_the_same_sandbox() {
    set_production_secrets();
    let root = tempfile::tempdir().unwrap();
    // Any repository on disk will do: the fake's bare one, say.
    let github = support::FakeGitHub::start().await;
    github.add_installation(support::INSTALLATION_ID, OWNER);
    let pipeline = "pipelines:\n  default:\n    steps:\n      - name: look\n        run: (id -u; tr '\\0' '\\n' < /proc/1/environ) > seen.txt\n";
    github.add_repo(
        support::INSTALLATION_ID,
        OWNER,
        REPO,
        &[(".github/conveyor.yml", pipeline)],
    );
    let repo = github.git_dir(OWNER, REPO);

    let (out, result) =
        support::conveyor_run(root.path(), &repo, "default", "Look around", "").await;
    result.unwrap();
    assert!(
        out.contains("branch: conveyor/local-look-around (pushed to"),
        "{out}"
    );
    assert!(
        out.contains("+1000"),
        "the step ran as the sandbox's user: {out}"
    );
    assert!(out.contains("+CONVEYOR_TASK_TITLE=Look around"), "{out}");
    assert!(
        !out.contains("DATABASE_URL") && !out.contains("db-password"),
        "{out}"
    );
}
