//! What a run changed, file by file: read from git's machine-readable diff output, so that
//! approvers see the diff stat and risks, and approval gates see the paths.
//!
//! Both outputs come with `-z`: paths are then written as they are (spaces, newlines,
//! non-ASCII) instead of quoted, and records end in NUL.

#[derive(
    Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FileStatus {
    Added,
    Modified,
    Deleted,
    Renamed {
        from: String,
    },
    /// A regular file became a symbolic link or the other way round.
    TypeChanged,
}

#[derive(
    Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
pub struct ChangedFile {
    pub path: String,
    pub status: FileStatus,
    /// None: binary
    pub lines_added: Option<u64>,
    pub lines_deleted: Option<u64>,
}

impl ChangedFile {
    /// Whether git saw the file as binary (and so counted no lines).
    pub fn is_binary(&self) -> bool {
        self.lines_added.is_none()
    }

    /// The paths the change touches: a renamed file's old path as well as its new one, so a
    /// file moved out of a guarded directory still counts as a change there.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        let from = match &self.status {
            FileStatus::Renamed { from } => Some(from.as_str()),
            _ => None,
        };
        std::iter::once(self.path.as_str()).chain(from)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChangesError {
    #[error("`git diff --numstat -z` gave output Conveyor cannot read: {0}")]
    Numstat(String),
    #[error("`git diff --name-status -z` gave output Conveyor cannot read: {0}")]
    NameStatus(String),
    #[error(
        "`git diff --numstat` and `git diff --name-status` disagree on file {position}: `{numstat}` against `{name_status}`"
    )]
    Disagree {
        position: usize,
        numstat: String,
        name_status: String,
    },
}

/// From the outputs of `git diff --numstat -z -M <a> <b>` and `git diff --name-status -z -M <a> <b>`.
pub fn parse(numstat_z: &[u8], name_status_z: &[u8]) -> Result<Vec<ChangedFile>, ChangesError> {
    let counts = parse_numstat(numstat_z)?;
    let statuses = parse_name_status(name_status_z)?;
    if counts.len() != statuses.len() {
        return Err(ChangesError::Disagree {
            position: counts.len().min(statuses.len()) + 1,
            numstat: format!("{} files", counts.len()),
            name_status: format!("{} files", statuses.len()),
        });
    }
    // git writes both from one list of file pairs, in one order.
    counts
        .into_iter()
        .zip(statuses)
        .enumerate()
        .map(|(index, (count, listed))| {
            let Listed {
                path,
                source,
                status,
            } = listed;
            if count.path != path || count.source != source {
                return Err(ChangesError::Disagree {
                    position: index + 1,
                    numstat: count.path,
                    name_status: path,
                });
            }
            Ok(ChangedFile {
                path,
                status,
                lines_added: count.added,
                lines_deleted: count.deleted,
            })
        })
        .collect()
}

/// One `--numstat` record.
struct Count {
    path: String,
    /// The old path of a rename, the original of a copy.
    source: Option<String>,
    added: Option<u64>,
    deleted: Option<u64>,
}

/// Records are `added TAB deleted TAB path NUL`, or for a rename
/// `added TAB deleted TAB NUL old NUL new NUL`; a binary file counts `-` for both.
fn parse_numstat(output: &[u8]) -> Result<Vec<Count>, ChangesError> {
    let bad = |what: String| ChangesError::Numstat(what);
    let mut rest = output;
    let mut counts = Vec::new();
    while !rest.is_empty() {
        let number = counts.len() + 1;
        let (added, after) = split_at_byte(rest, b'\t')
            .ok_or_else(|| bad(format!("record {number} has no line counts")))?;
        let (deleted, after) = split_at_byte(after, b'\t')
            .ok_or_else(|| bad(format!("record {number} has one line count")))?;
        let (added, deleted) = match (line_count(added), line_count(deleted)) {
            (Some(added), Some(deleted)) => (added, deleted),
            _ => {
                return Err(bad(format!(
                    "record {number} has counts that are not numbers"
                )));
            }
        };
        let (source, path, after) = match after.strip_prefix(b"\0") {
            Some(renamed) => {
                let (source, after) = split_at_byte(renamed, b'\0')
                    .ok_or_else(|| bad(format!("rename {number} has no old path")))?;
                let (path, after) = split_at_byte(after, b'\0')
                    .ok_or_else(|| bad(format!("rename {number} has no new path")))?;
                (Some(text(source)), path, after)
            }
            None => {
                let (path, after) = split_at_byte(after, b'\0')
                    .ok_or_else(|| bad(format!("record {number} does not end")))?;
                (None, path, after)
            }
        };
        counts.push(Count {
            path: text(path),
            source,
            added,
            deleted,
        });
        rest = after;
    }
    Ok(counts)
}

/// One `--name-status` record.
struct Listed {
    path: String,
    /// The old path of a rename, the original of a copy.
    source: Option<String>,
    status: FileStatus,
}

/// Records are `status NUL path NUL`, or for a rename or copy `R<score> NUL old NUL new NUL`.
fn parse_name_status(output: &[u8]) -> Result<Vec<Listed>, ChangesError> {
    let bad = |what: String| ChangesError::NameStatus(what);
    let Some(fields) = output.strip_suffix(b"\0") else {
        return match output {
            b"" => Ok(Vec::new()),
            _ => Err(bad("it does not end in NUL".to_owned())),
        };
    };
    let mut fields = fields.split(|&byte| byte == b'\0');
    let mut files = Vec::new();
    while let Some(status) = fields.next() {
        let mut path = || {
            fields
                .next()
                .map(text)
                .ok_or_else(|| bad(format!("status `{}` has no path", text(status))))
        };
        let (source, status) = match status.first() {
            Some(b'A') => (None, FileStatus::Added),
            Some(b'M') => (None, FileStatus::Modified),
            Some(b'D') => (None, FileStatus::Deleted),
            Some(b'T') => (None, FileStatus::TypeChanged),
            Some(b'R') => {
                let from = path()?;
                (Some(from.clone()), FileStatus::Renamed { from })
            }
            // A copy (when git's config asks it to find them) leaves its original as it was:
            // for the run's diff it is a new file.
            Some(b'C') => (Some(path()?), FileStatus::Added),
            _ => return Err(bad(format!("unknown status `{}`", text(status)))),
        };
        files.push(Listed {
            path: path()?,
            source,
            status,
        });
    }
    Ok(files)
}

/// `-` (binary) is `Some(None)`; anything but digits is `None`.
fn line_count(field: &[u8]) -> Option<Option<u64>> {
    if field == b"-" {
        return Some(None);
    }
    std::str::from_utf8(field).ok()?.parse().ok().map(Some)
}

fn split_at_byte(bytes: &[u8], separator: u8) -> Option<(&[u8], &[u8])> {
    let at = bytes.iter().position(|&byte| byte == separator)?;
    Some((&bytes[..at], &bytes[at + 1..]))
}

/// A path as text: git stores paths as bytes, and a name that is not UTF-8 keeps its
/// readable part.
fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::process::Command;

    use super::*;

    fn git(dir: &Path, args: &[&str]) -> Vec<u8> {
        let output = Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@t"])
            .args(args)
            .current_dir(dir)
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        output.stdout
    }

    fn write(dir: &Path, path: &str, content: &[u8]) {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }

    fn lines(count: usize, word: &str) -> Vec<u8> {
        (0..count)
            .map(|i| format!("{word} line {i}\n"))
            .collect::<String>()
            .into_bytes()
    }

    fn changed(path: &str, status: FileStatus, lines: Option<(u64, u64)>) -> ChangedFile {
        ChangedFile {
            path: path.to_owned(),
            status,
            lines_added: lines.map(|(added, _)| added),
            lines_deleted: lines.map(|(_, deleted)| deleted),
        }
    }

    #[test]
    fn reads_what_real_git_reports_for_every_kind_of_change() {
        let repo = tempfile::tempdir().unwrap();
        let dir = repo.path();
        git(dir, &["init", "-q"]);
        write(dir, "src/lib.rs", &lines(10, "lib"));
        write(dir, "old name.txt", &lines(40, "moved"));
        write(dir, "gone.txt", &lines(7, "gone"));
        write(dir, "image.bin", b"\x89PNG\0\0\x01binary");
        write(dir, "link", b"a regular file\n");
        git(dir, &["add", "-A"]);
        git(dir, &["commit", "-qm", "base"]);

        write(
            dir,
            "src/lib.rs",
            &[&lines(9, "lib")[..], b"changed\n", b"more\n"].concat(),
        );
        std::fs::create_dir(dir.join("renamed")).unwrap();
        git(dir, &["mv", "old name.txt", "renamed/new name.txt"]);
        std::fs::remove_file(dir.join("gone.txt")).unwrap();
        write(dir, "image.bin", b"\x89PNG\0\0\x02binary!");
        std::fs::remove_file(dir.join("link")).unwrap();
        std::os::unix::fs::symlink("src/lib.rs", dir.join("link")).unwrap();
        write(dir, "with space.txt", b"a\nb\n");
        write(dir, "new\nline.txt", b"one\n");
        write(dir, "ünïcödé/файл.txt", b"x\ny\nz\n");
        git(dir, &["add", "-A"]);
        git(dir, &["commit", "-qm", "change"]);

        let numstat = git(dir, &["diff", "--numstat", "-z", "-M", "HEAD~1", "HEAD"]);
        let name_status = git(
            dir,
            &["diff", "--name-status", "-z", "-M", "HEAD~1", "HEAD"],
        );
        let mut files = parse(&numstat, &name_status).unwrap();
        files.sort_by(|a, b| a.path.cmp(&b.path));
        let renamed = FileStatus::Renamed {
            from: "old name.txt".to_owned(),
        };
        assert_eq!(
            files,
            [
                changed("gone.txt", FileStatus::Deleted, Some((0, 7))),
                changed("image.bin", FileStatus::Modified, None),
                changed("link", FileStatus::TypeChanged, Some((1, 1))),
                changed("new\nline.txt", FileStatus::Added, Some((1, 0))),
                changed("renamed/new name.txt", renamed, Some((0, 0))),
                changed("src/lib.rs", FileStatus::Modified, Some((2, 1))),
                changed("with space.txt", FileStatus::Added, Some((2, 0))),
                changed("ünïcödé/файл.txt", FileStatus::Added, Some((3, 0))),
            ]
        );
        let binary: Vec<&str> = files
            .iter()
            .filter(|file| file.is_binary())
            .map(|file| file.path.as_str())
            .collect();
        assert_eq!(binary, ["image.bin"]);
    }

    #[test]
    fn a_rename_touches_both_its_paths() {
        let moved = changed(
            "lib/a.rs",
            FileStatus::Renamed {
                from: "src/a.rs".into(),
            },
            Some((1, 1)),
        );
        assert_eq!(moved.paths().collect::<Vec<_>>(), ["lib/a.rs", "src/a.rs"]);
        let added = changed("b.rs", FileStatus::Added, Some((1, 0)));
        assert_eq!(added.paths().collect::<Vec<_>>(), ["b.rs"]);
    }

    #[test]
    fn no_change_is_no_files() {
        assert_eq!(parse(b"", b""), Ok(Vec::new()));
    }

    #[test]
    fn copies_are_new_files() {
        let files = parse(b"3\t0\t\0a.txt\0b.txt\0", b"C100\0a.txt\0b.txt\0");
        assert_eq!(
            files,
            Ok(vec![changed("b.txt", FileStatus::Added, Some((3, 0)))])
        );
    }

    #[test]
    fn output_that_is_cut_short_or_disagrees_is_an_error() {
        let cases: &[(&[u8], &[u8], &str)] = &[
            (b"1\t2", b"M\0a\0", "record 1 has one line count"),
            (b"1\t2\ta", b"M\0a\0", "record 1 does not end"),
            (b"x\t2\ta\0", b"M\0a\0", "counts that are not numbers"),
            (b"1\t2\t\0a\0", b"R100\0a\0b\0", "rename 1 has no new path"),
            (b"1\t2\ta\0", b"M\0a", "does not end in NUL"),
            (b"1\t2\ta\0", b"M\0", "status `M` has no path"),
            (b"1\t2\ta\0", b"U\0a\0", "unknown status `U`"),
            (
                b"1\t2\ta\0",
                b"M\0b\0",
                "disagree on file 1: `a` against `b`",
            ),
            (
                b"1\t2\ta\0",
                b"",
                "disagree on file 1: `1 files` against `0 files`",
            ),
        ];
        for (numstat, name_status, expected) in cases {
            let err = parse(numstat, name_status).unwrap_err().to_string();
            assert!(err.contains(expected), "{expected}: {err}");
        }
    }
}
