//! What an approver reads at a gate: who may approve, what in the change deserves a look,
//! and the summary of the run so far.

use super::steps_table;
use crate::authz::Permission;
use crate::pipeline::StepResult;
use crate::pipeline::changes::{ChangedFile, FileStatus};
use crate::text_bounds::{github_body, head_and_tail, title};

/// Files listed one by one in the summary; the rest are counted. With paths bounded as
/// below, the list stays well within GitHub's limit beside the rest of the summary.
const FILES_LISTED: usize = 30;
/// Paths named in one risk note; the rest are counted.
const PATHS_PER_NOTE: usize = 5;
/// A path as shown: deep paths stay recognisable by their start.
const PATH_MAX_CHARS: usize = 120;
/// Bytes of the pipeline's approval message quoted.
const MESSAGE_MAX_BYTES: usize = 4_000;
/// Bytes of the steps table: a long pipeline keeps its first and last steps.
const STEPS_MAX_BYTES: usize = 12_000;
/// Lines deleted in all past which a deletion is worth a second look.
const LARGE_DELETION_LINES: u64 = 500;

/// Files that pin what a build installs: a change to one changes code nobody in the
/// repository wrote.
const LOCKFILES: &[&str] = &[
    "Cargo.lock",
    "package-lock.json",
    "npm-shrinkwrap.json",
    "yarn.lock",
    "pnpm-lock.yaml",
    "bun.lock",
    "bun.lockb",
    "deno.lock",
    "go.sum",
    "poetry.lock",
    "Pipfile.lock",
    "pdm.lock",
    "uv.lock",
    "Gemfile.lock",
    "composer.lock",
    "mix.lock",
    "pubspec.lock",
    "Podfile.lock",
    "Package.resolved",
    "packages.lock.json",
    "gradle.lockfile",
    "flake.lock",
    "conan.lock",
];

/// Who may approve a gate.
#[derive(Debug, Clone, Copy)]
pub struct Approvers<'a> {
    pub permission: Permission,
    pub allow_self_approval: bool,
    /// The login that started the run.
    pub requester: Option<&'a str>,
}

/// Who may approve, in a phrase: "anyone with write permission or more, except @alice who
/// started the run".
pub fn who_may_approve(approvers: &Approvers) -> String {
    let who = match approvers.permission {
        Permission::Admin => "anyone with admin permission".to_owned(),
        permission => format!("anyone with {permission} permission or more"),
    };
    match approvers.requester {
        Some(login) if !approvers.allow_self_approval => {
            format!("{who}, except @{login} who started the run")
        }
        _ => who,
    }
}

/// What in `files` an approver should look at twice, one sentence each: changes to CI,
/// to Conveyor's own file or code ownership, to dependencies, deletions, binaries and links.
pub fn risk_notes(files: &[ChangedFile]) -> Vec<String> {
    let touching = |test: fn(&str) -> bool| -> Vec<&ChangedFile> {
        files.iter().filter(|file| file.paths().any(test)).collect()
    };
    let with_status = |status: FileStatus| -> Vec<&ChangedFile> {
        files.iter().filter(|file| file.status == status).collect()
    };
    let mut notes = Vec::new();
    let mut note = |found: Vec<&ChangedFile>, what: &str| {
        if !found.is_empty() {
            notes.push(format!("{what}: {}.", listed(&found)));
        }
    };
    note(
        touching(|path| path.starts_with(".github/workflows/")),
        "Changes GitHub Actions workflows, which run with the repository's secrets",
    );
    note(
        touching(|path| path == ".github/conveyor.yml"),
        "Changes Conveyor's own pipeline file, which decides what runs and who approves",
    );
    note(
        touching(|path| ["CODEOWNERS", ".github/CODEOWNERS", "docs/CODEOWNERS"].contains(&path)),
        "Changes code ownership, which decides who must review",
    );
    note(
        touching(|path| LOCKFILES.contains(&file_name(path))),
        "Changes lockfiles, which pin the dependencies a build installs",
    );
    note(with_status(FileStatus::Deleted), "Deletes files");
    note(
        files.iter().filter(|file| file.is_binary()).collect(),
        "Changes binary files, whose content no diff shows",
    );
    note(
        with_status(FileStatus::TypeChanged),
        "Turns files into symbolic links or back, which can point outside the repository",
    );
    let lines_deleted: u64 = files.iter().filter_map(|file| file.lines_deleted).sum();
    if lines_deleted > LARGE_DELETION_LINES {
        notes.push(format!("Deletes {lines_deleted} lines in all."));
    }
    notes
}

/// A run waiting at an approval step, as its approvers see it.
#[derive(Debug, Clone, Copy)]
pub struct ApprovalContext<'a> {
    pub step: &'a str,
    pub message: Option<&'a str>,
    /// The commit the approval is for; it holds only while the branch is there.
    pub head_sha: &'a str,
    pub files: &'a [ChangedFile],
    pub steps: &'a [StepResult],
    pub approvers: Approvers<'a>,
}

/// The markdown an approver reads: the message, a diff stat, the files, the steps so far,
/// the risk notes, and how to approve and by whom. Always within GitHub's limits.
pub fn summary(context: &ApprovalContext) -> String {
    let mut body = format!("### ⏸️ Step {} waits for approval\n\n", code(context.step));
    if let Some(message) = context.message {
        for line in head_and_tail(message.trim_end(), MESSAGE_MAX_BYTES).lines() {
            body.push_str(&format!("> {line}\n"));
        }
        body.push('\n');
    }
    body.push_str(&format!(
        "Commit {}: {}.\n\n",
        code(context.head_sha),
        diff_stat(context.files)
    ));
    let notes = risk_notes(context.files);
    body.push_str("#### Worth a look\n\n");
    if notes.is_empty() {
        body.push_str(
            "Nothing stood out: no workflow, pipeline file, code ownership, lockfile, binary or link changes, and no deletions.\n\n",
        );
    }
    for note in &notes {
        body.push_str(&format!("- ⚠️ {note}\n"));
    }
    if !notes.is_empty() {
        body.push('\n');
    }
    if !context.files.is_empty() {
        body.push_str("#### Files changed\n\n");
        for file in context.files.iter().take(FILES_LISTED) {
            body.push_str(&format!("- {}\n", file_line(file)));
        }
        if let Some(more) = context
            .files
            .len()
            .checked_sub(FILES_LISTED)
            .filter(|n| *n > 0)
        {
            body.push_str(&format!("- … and {more} more\n"));
        }
        body.push('\n');
    }
    if !context.steps.is_empty() {
        body.push_str("#### Steps so far\n\n");
        body.push_str(&head_and_tail(&steps_table(context.steps), STEPS_MAX_BYTES));
        body.push('\n');
    }
    body.push_str(&format!(
        "#### To approve or reject\n\nPress **Approve** or **Reject** on the `conveyor` check run, or comment `/conveyor approve` or `/conveyor reject <reason>`. An approval may come from {}. It holds for commit {} only: once the branch moves, approve the new commit instead.\n",
        who_may_approve(&context.approvers),
        code(context.head_sha)
    ));
    github_body(&body)
}

/// "3 files changed, +10 −2", with binary files counted apart (they have no lines).
fn diff_stat(files: &[ChangedFile]) -> String {
    let added: u64 = files.iter().filter_map(|file| file.lines_added).sum();
    let deleted: u64 = files.iter().filter_map(|file| file.lines_deleted).sum();
    let binary = files.iter().filter(|file| file.is_binary()).count();
    let mut stat = match files.len() {
        0 => return "no files changed".to_owned(),
        1 => "1 file changed".to_owned(),
        count => format!("{count} files changed"),
    };
    stat.push_str(&format!(", +{added} −{deleted}"));
    if binary > 0 {
        stat.push_str(&format!(" ({binary} binary)"));
    }
    stat
}

fn file_line(file: &ChangedFile) -> String {
    let path = code(&file.path);
    let what = match &file.status {
        FileStatus::Added => format!("{path} added"),
        FileStatus::Modified => format!("{path} modified"),
        FileStatus::Deleted => format!("{path} deleted"),
        FileStatus::Renamed { from } => format!("{path} renamed from {}", code(from)),
        FileStatus::TypeChanged => format!("{path} changed type"),
    };
    match (file.lines_added, file.lines_deleted) {
        (Some(added), Some(deleted)) => format!("{what} (+{added} −{deleted})"),
        _ => format!("{what} (binary)"),
    }
}

/// The first paths of `files` as code, and how many more there are.
fn listed(files: &[&ChangedFile]) -> String {
    let mut list: Vec<String> = files
        .iter()
        .take(PATHS_PER_NOTE)
        .map(|file| code(&file.path))
        .collect();
    if files.len() > PATHS_PER_NOTE {
        list.push(format!("and {} more", files.len() - PATHS_PER_NOTE));
    }
    list.join(", ")
}

fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// `text` as inline code on one line, bounded, whatever backticks or line breaks it holds:
/// paths and names come from the repository and must not break the markdown around them.
pub(super) fn code(text: &str) -> String {
    let text = title(text, PATH_MAX_CHARS);
    let longest_run = text
        .split(|c| c != '`')
        .map(str::len)
        .max()
        .unwrap_or_default();
    let fence = "`".repeat(longest_run + 1);
    // A code span that starts or ends with a backtick needs a space to tell it from the fence.
    let pad = if text.starts_with('`') || text.ends_with('`') {
        " "
    } else {
        ""
    };
    format!("{fence}{pad}{text}{pad}{fence}")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::text_bounds::GITHUB_BODY_MAX;

    fn file(path: &str, status: FileStatus, lines: Option<(u64, u64)>) -> ChangedFile {
        ChangedFile {
            path: path.to_owned(),
            status,
            lines_added: lines.map(|(added, _)| added),
            lines_deleted: lines.map(|(_, deleted)| deleted),
        }
    }

    fn modified(path: &str) -> ChangedFile {
        file(path, FileStatus::Modified, Some((1, 1)))
    }

    fn step(name: &str) -> StepResult {
        StepResult {
            position: 0,
            name: name.into(),
            command: "x".into(),
            exit_code: Some(0),
            duration: Duration::from_secs(2),
            output: String::new(),
            timed_out: false,
            out_of_budget: false,
            attempts: 1,
        }
    }

    fn approvers(requester: Option<&str>) -> Approvers<'_> {
        Approvers {
            permission: Permission::Write,
            allow_self_approval: false,
            requester,
        }
    }

    #[test]
    fn says_who_may_approve() {
        let cases = [
            (
                approvers(Some("alice")),
                "anyone with write permission or more, except @alice who started the run",
            ),
            (approvers(None), "anyone with write permission or more"),
            (
                Approvers {
                    allow_self_approval: true,
                    ..approvers(Some("alice"))
                },
                "anyone with write permission or more",
            ),
            (
                Approvers {
                    permission: Permission::Maintain,
                    ..approvers(None)
                },
                "anyone with maintain permission or more",
            ),
            (
                Approvers {
                    permission: Permission::Admin,
                    ..approvers(Some("bob"))
                },
                "anyone with admin permission, except @bob who started the run",
            ),
        ];
        for (approvers, expected) in cases {
            assert_eq!(who_may_approve(&approvers), expected);
        }
    }

    #[test]
    fn notes_each_kind_of_risky_change_once() {
        let cases: Vec<(Vec<ChangedFile>, Vec<&str>)> = vec![
            (vec![modified("src/main.rs"), modified("README.md")], vec![]),
            (
                vec![modified(".github/workflows/ci.yml")],
                vec![
                    "Changes GitHub Actions workflows, which run with the repository's secrets: `.github/workflows/ci.yml`.",
                ],
            ),
            (
                vec![file(
                    "ci-old.yml",
                    FileStatus::Renamed {
                        from: ".github/workflows/ci.yml".into(),
                    },
                    Some((0, 0)),
                )],
                vec![
                    "Changes GitHub Actions workflows, which run with the repository's secrets: `ci-old.yml`.",
                ],
            ),
            (
                vec![
                    modified(".github/conveyor.yml"),
                    modified("docs/CODEOWNERS"),
                ],
                vec![
                    "Changes Conveyor's own pipeline file, which decides what runs and who approves: `.github/conveyor.yml`.",
                    "Changes code ownership, which decides who must review: `docs/CODEOWNERS`.",
                ],
            ),
            (
                vec![
                    modified("Cargo.lock"),
                    modified("web/package-lock.json"),
                    modified("go.sum"),
                    modified("Cargo.toml"),
                ],
                vec![
                    "Changes lockfiles, which pin the dependencies a build installs: `Cargo.lock`, `web/package-lock.json`, `go.sum`.",
                ],
            ),
            (
                vec![file("old.rs", FileStatus::Deleted, Some((0, 12)))],
                vec!["Deletes files: `old.rs`."],
            ),
            (
                vec![
                    modified("a.rs"),
                    file("b.rs", FileStatus::Modified, Some((3, 501))),
                ],
                vec!["Deletes 502 lines in all."],
            ),
            (
                vec![file("logo.png", FileStatus::Added, None)],
                vec!["Changes binary files, whose content no diff shows: `logo.png`."],
            ),
            (
                vec![file("link", FileStatus::TypeChanged, Some((1, 1)))],
                vec![
                    "Turns files into symbolic links or back, which can point outside the repository: `link`.",
                ],
            ),
            (
                (0..7)
                    .map(|i| file(&format!("d{i}"), FileStatus::Deleted, Some((0, 1))))
                    .collect(),
                vec!["Deletes files: `d0`, `d1`, `d2`, `d3`, `d4`, and 2 more."],
            ),
        ];
        for (files, expected) in cases {
            assert_eq!(risk_notes(&files), expected, "{files:?}");
        }
    }

    #[test]
    fn the_summary_shows_the_change_the_steps_the_risks_and_how_to_approve() {
        let files = [
            modified("src/lib.rs"),
            file("assets/logo.png", FileStatus::Added, None),
            file(
                "lib/new.rs",
                FileStatus::Renamed {
                    from: "src/old.rs".into(),
                },
                Some((2, 0)),
            ),
        ];
        let steps = [step("implement"), step("test")];
        let context = ApprovalContext {
            step: "review",
            message: Some("Check the API change.\nThen approve."),
            head_sha: "0123456789abcdef",
            files: &files,
            steps: &steps,
            approvers: approvers(Some("alice")),
        };
        let summary = summary(&context);
        let expected_parts = [
            "### ⏸️ Step `review` waits for approval\n\n> Check the API change.\n> Then approve.\n\n",
            "Commit `0123456789abcdef`: 3 files changed, +3 −1 (1 binary).\n",
            "- ⚠️ Changes binary files, whose content no diff shows: `assets/logo.png`.\n",
            "- `src/lib.rs` modified (+1 −1)\n- `assets/logo.png` added (binary)\n- `lib/new.rs` renamed from `src/old.rs` (+2 −0)\n",
            "| `implement` | ✅ passed | 2.0s |\n| `test` | ✅ passed |",
            "`/conveyor approve` or `/conveyor reject <reason>`",
            "An approval may come from anyone with write permission or more, except @alice who started the run. It holds for commit `0123456789abcdef` only",
        ];
        for part in expected_parts {
            assert!(summary.contains(part), "{part:?} missing from:\n{summary}");
        }

        let quiet = summary_of(&[], &[], None);
        assert!(quiet.contains("Commit `abc`: no files changed."), "{quiet}");
        assert!(quiet.contains("Nothing stood out"), "{quiet}");
        assert!(!quiet.contains("Files changed") && !quiet.contains("Steps so far"));
        assert!(!quiet.contains("> "), "{quiet}");
    }

    fn summary_of(files: &[ChangedFile], steps: &[StepResult], message: Option<&str>) -> String {
        summary(&ApprovalContext {
            step: "review",
            message,
            head_sha: "abc",
            files,
            steps,
            approvers: approvers(None),
        })
    }

    #[test]
    fn the_summary_fits_github_however_large_the_run() {
        let long = "ü`\n".repeat(500);
        let files: Vec<ChangedFile> = (0..5_000)
            .map(|i| {
                file(
                    &format!("{i}{long}"),
                    FileStatus::Renamed { from: long.clone() },
                    None,
                )
            })
            .collect();
        let steps: Vec<StepResult> = (0..2_000).map(|_| step(&long)).collect();
        let summary = summary_of(&files, &steps, Some(&long.repeat(200)));
        assert!(summary.len() <= GITHUB_BODY_MAX, "{}", summary.len());
        assert!(summary.contains("- … and 4970 more\n"));
        assert!(summary.contains("#### To approve or reject"));
        assert!(summary.contains("`/conveyor approve`"));
    }

    #[test]
    fn code_spans_hold_any_path_on_one_line() {
        let cases = [
            ("src/a.rs", "`src/a.rs`"),
            ("a`b", "``a`b``"),
            ("`x``", "``` `x`` ```"),
            ("new\nline.txt", "`new line.txt`"),
        ];
        for (text, expected) in cases {
            assert_eq!(code(text), expected);
        }
        let long = code(&"ü".repeat(500));
        assert_eq!(long.chars().count(), PATH_MAX_CHARS + 2);
    }
}
