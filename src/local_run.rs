//! `conveyor run`: one pipeline on a local path or URL, no GitHub App, printed to the terminal.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use crate::pipeline::git::{self, Git};
use crate::pipeline::{self, StepResult, TaskContext};
use crate::report::comment::TAIL_LINES;

pub struct LocalRun {
    pub repo: String,
    pub title: String,
    pub body: String,
    pub pipeline: String,
    pub data_dir: PathBuf,
}

/// Runs the pipeline and prints the timeline, the branch and the diff. A local repository
/// receives the branch; a remote one is left untouched. Fails when a step fails.
pub async fn run(args: LocalRun, out: &mut impl Write) -> anyhow::Result<()> {
    let local = Path::new(&args.repo).exists();
    let url = if local {
        std::fs::canonicalize(&args.repo)
            .with_context(|| format!("--repo {}", args.repo))?
            .to_string_lossy()
            .into_owned()
    } else {
        args.repo.clone()
    };
    let context = TaskContext {
        repository: url.clone(),
        title: args.title.clone(),
        body: args.body.clone(),
        pipeline: args.pipeline.clone(),
        ..TaskContext::default()
    };
    writeln!(
        out,
        "conveyor: running pipeline `{}` on {url}",
        args.pipeline
    )?;
    let git = Git::default();
    let print = |step: StepResult| {
        // The timeline is best effort: a closed stdout must not fail the run.
        let _ = print_step(&step, out);
        std::future::ready(())
    };
    let execution =
        pipeline::clone_and_execute(&git, &url, &args.data_dir, &context, print).await?;
    if let Some(step) = execution.failed_step() {
        writeln!(
            out,
            "\n--- last lines of `{}` ---\n{}",
            step.name,
            step.tail(TAIL_LINES)
        )?;
        bail!("step `{}` failed; nothing was committed", step.name);
    }
    let dir = execution.workspace.repo_dir();
    if !git.has_changes(&dir).await? {
        writeln!(out, "\nThe steps changed no files: no branch was made.")?;
        return Ok(());
    }
    let branch = git::branch_name("local", &args.title);
    let head = git.commit_all(&dir, &branch, args.title.trim()).await?;
    if local {
        git.push(&dir, "origin", &branch).await?;
        writeln!(out, "\nbranch: {branch} (pushed to {url})")?;
    } else {
        writeln!(
            out,
            "\nbranch: {branch} (not pushed: the repository is remote)"
        )?;
    }
    writeln!(out, "commit: {head}\n")?;
    write!(out, "{}", git.diff(&dir, &execution.base_sha, &head).await?)?;
    Ok(())
}

fn print_step(step: &StepResult, out: &mut impl Write) -> std::io::Result<()> {
    let mark = if step.succeeded() { "✓" } else { "✗" };
    let code = step
        .exit_code
        .map_or("killed".to_owned(), |c| format!("exit {c}"));
    writeln!(
        out,
        "  {mark} {:<24} {code:<8} {:>8.2}s",
        step.name,
        step.duration.as_secs_f64()
    )
}
