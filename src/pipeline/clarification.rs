//! The files of a clarification round in a workspace's exchange directory: the questions a
//! step writes (then exits with [`super::step::ASKS_EXIT_CODE`]) and the answers Conveyor
//! hands the step when it runs again.

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;

use super::sandbox::Sandbox;
use super::workspace::Workspace;
use crate::text_bounds;

const QUESTIONS_FILE: &str = "questions.md";
const ANSWERS_FILE: &str = "answers.md";

/// What every step is told: where to write questions, and where the latest answer is (the
/// file exists once the requester answered).
pub fn env(sandbox: &Sandbox, workspace: &Workspace) -> Vec<(String, String)> {
    let io = workspace.io_dir();
    vec![
        (
            "CONVEYOR_QUESTIONS_FILE".to_owned(),
            sandbox.step_path(&io, QUESTIONS_FILE),
        ),
        (
            "CONVEYOR_ANSWERS_FILE".to_owned(),
            sandbox.step_path(&io, ANSWERS_FILE),
        ),
    ]
}

/// The questions the steps left, at most `max_bytes` of them (head and tail kept); `None`
/// when there are none. The file is the steps' to plant: anything but a regular file (a
/// symbolic link to a secret, a FIFO that never ends) is refused, never followed.
pub fn read_questions(workspace: &Workspace, max_bytes: usize) -> std::io::Result<Option<String>> {
    let path = workspace.io_dir().join(QUESTIONS_FILE);
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(&path)
    {
        Ok(file) => file,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) if err.raw_os_error() == Some(libc::ELOOP) => {
            return Err(std::io::Error::other(format!(
                "{QUESTIONS_FILE} is a symbolic link"
            )));
        }
        Err(err) => return Err(err),
    };
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::other(format!(
            "{QUESTIONS_FILE} is not a regular file"
        )));
    }
    // Read a little past the bound, so the cut says that something was cut.
    let mut bytes = Vec::new();
    file.take(max_bytes as u64 * 2).read_to_end(&mut bytes)?;
    let text = String::from_utf8_lossy(&bytes);
    let text = text_bounds::remove_nul(&text);
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    Ok(Some(text_bounds::head_and_tail(text, max_bytes)))
}

/// Hands the step the requester's answers, oldest first: the latest as `answers.md`, every
/// round as `answers-N.md`. Written before any step of this workspace ran, into files that
/// must not exist yet.
pub fn write_answers(workspace: &Workspace, answers: &[String]) -> std::io::Result<()> {
    let io = workspace.io_dir();
    let write = |name: String, text: &str| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(io.join(name))?;
        std::io::Write::write_all(&mut file, text.as_bytes())
    };
    for (round, answer) in answers.iter().enumerate() {
        write(format!("answers-{}.md", round + 1), answer)?;
    }
    if let Some(latest) = answers.last() {
        write(ANSWERS_FILE.to_owned(), latest)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::workspace::Workspaces;

    fn workspace() -> (tempfile::TempDir, Workspace) {
        let data = tempfile::tempdir().unwrap();
        let workspace = Workspaces::open(data.path()).create().unwrap();
        (data, workspace)
    }

    #[test]
    fn questions_are_read_trimmed_and_bounded() {
        let (_data, workspace) = workspace();
        assert_eq!(read_questions(&workspace, 100).unwrap(), None);
        let path = workspace.io_dir().join(QUESTIONS_FILE);
        std::fs::write(&path, "  \n\n").unwrap();
        assert_eq!(read_questions(&workspace, 100).unwrap(), None);
        std::fs::write(&path, "Which colour?\n").unwrap();
        assert_eq!(
            read_questions(&workspace, 100).unwrap().as_deref(),
            Some("Which colour?")
        );
        std::fs::write(&path, "q\n".repeat(10_000)).unwrap();
        let cut = read_questions(&workspace, 1000).unwrap().unwrap();
        assert!(cut.len() <= 1000, "{}", cut.len());
        assert!(cut.starts_with("q\n") && cut.ends_with('q'), "{cut}");
    }

    #[test]
    fn planted_links_and_special_files_are_refused() {
        let (_data, workspace) = workspace();
        let secret = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(secret.path(), "BEGIN PRIVATE KEY").unwrap();
        let path = workspace.io_dir().join(QUESTIONS_FILE);
        std::os::unix::fs::symlink(secret.path(), &path).unwrap();
        let err = read_questions(&workspace, 100).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        std::fs::remove_file(&path).unwrap();
        let made = std::process::Command::new("mkfifo")
            .arg(&path)
            .status()
            .unwrap();
        assert!(made.success());
        let err = read_questions(&workspace, 100).unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
    }

    #[test]
    fn answers_are_written_latest_and_by_round() {
        let (_data, workspace) = workspace();
        write_answers(&workspace, &[]).unwrap();
        assert!(!workspace.io_dir().join(ANSWERS_FILE).exists());
        write_answers(&workspace, &["red".to_owned(), "blue".to_owned()]).unwrap();
        let read = |name: &str| std::fs::read_to_string(workspace.io_dir().join(name)).unwrap();
        assert_eq!(read(ANSWERS_FILE), "blue");
        assert_eq!(read("answers-1.md"), "red");
        assert_eq!(read("answers-2.md"), "blue");
        assert!(write_answers(&workspace, &["again".to_owned()]).is_err());
    }
}
