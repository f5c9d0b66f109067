//! `conveyor run`: one pipeline on a local path or URL, no GitHub App, printed to the terminal.
//! Steps run in the same sandbox as the service's.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};

use crate::pipeline::clarification;
use crate::pipeline::git::{self, Git};
use crate::pipeline::mirror::{Mirrors, Origin};
use crate::pipeline::prompt;
use crate::pipeline::protected::Protected;
use crate::pipeline::sandbox::Sandbox;
use crate::pipeline::workspace::Workspaces;
use crate::pipeline::{self, Checkout, StepResult, TaskContext};
use crate::report::comment::TAIL_LINES;

pub struct LocalRun {
    pub repo: String,
    pub title: String,
    pub body: String,
    pub pipeline: String,
    pub data_dir: PathBuf,
    pub mirror_budget_bytes: u64,
    pub sandbox: Sandbox,
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
    writeln!(
        out,
        "conveyor: running pipeline `{}` on {url}",
        args.pipeline
    )?;
    let git = Git::default();
    let workspaces = Workspaces::open(&args.data_dir);
    let mirrors = Mirrors::open(&args.data_dir, args.mirror_budget_bytes);
    let checkout = Checkout::clone(&git, &Origin::local(&url), &mirrors, &workspaces).await?;
    let pipeline = checkout.pipeline(&git, &args.pipeline).await?;
    let branch = git::branch_name("local", &args.title);
    // A branch an earlier local run left is replaced, but only as it was when cloned.
    let remote = checkout.branch_head(&git, &branch).await?;
    let base = checkout.default_head.clone();
    let sources =
        prompt::Sources::load(&pipeline, &git, &checkout.workspace.git_dir(), &base).await?;
    let context = TaskContext {
        repository: url.clone(),
        title: args.title.clone(),
        body: args.body.clone(),
        pipeline: args.pipeline.clone(),
        branch: branch.clone(),
        base_sha: base.clone(),
        ..TaskContext::default()
    };
    let mut prompts = prompt::Prompts::new(&sources, &context);
    checkout
        .check_out(&git, &base, None, &url, &args.sandbox)
        .await?;
    // A step may ask questions, but nobody is there to answer: asking fails the run.
    let mut env = context.env();
    env.extend(clarification::env(&args.sandbox, &checkout.workspace));
    let mut steps = Vec::new();
    let mut from = 0;
    loop {
        let print = |step: StepResult| {
            // The timeline is best effort: a closed stdout must not fail the run.
            let _ = print_step(&step, out);
            std::future::ready(())
        };
        let spent: Duration = steps.iter().map(|step: &StepResult| step.duration).sum();
        let budget = Duration::from_secs(pipeline.timeout_minutes * 60).saturating_sub(spent);
        let ran = checkout
            .run_steps(
                &pipeline,
                from,
                &env,
                &mut prompts,
                &args.sandbox,
                budget,
                |_, _, _| None,
                print,
            )
            .await?;
        steps.extend(ran.results);
        // Whoever runs a pipeline on their own machine is its approver: a gate is passed and
        // shown in the timeline.
        match ran.gate {
            Some(at) if pipeline::failed_step(&steps).is_none() => {
                writeln!(
                    out,
                    "  ✋ {:<24} approval given by you (`conveyor run` has no other approver)",
                    pipeline.steps[at].name
                )?;
                from = at + 1;
            }
            _ => break,
        }
    }
    if let Some(step) = pipeline::failed_step(&steps) {
        writeln!(
            out,
            "\n--- last lines of `{}` ---\n{}",
            step.name,
            step.tail(TAIL_LINES)
        )?;
        bail!("step `{}` failed; nothing was committed", step.name);
    }
    let changed = checkout.changes(&git, &base).await?;
    if changed.is_empty() {
        writeln!(out, "\nThe steps changed no files: no branch was made.")?;
        return Ok(());
    }
    let touched = Protected::new(&pipeline.protected_paths)?.touched(&changed);
    if !touched.is_empty() {
        bail!(
            "the steps changed protected paths ({}); nothing was committed. A pipeline may list what it may change in `protected_paths:`",
            touched.join(", ")
        );
    }
    let head = checkout.commit(&git, &base, args.title.trim()).await?;
    if local {
        let git_dir = checkout.workspace.git_dir();
        git.push(&git_dir, &url, &head, &branch, remote.as_deref())
            .await?;
        writeln!(out, "\nbranch: {branch} (pushed to {url})")?;
    } else {
        writeln!(
            out,
            "\nbranch: {branch} (not pushed: the repository is remote)"
        )?;
    }
    writeln!(out, "commit: {head}\n")?;
    write!(
        out,
        "{}",
        git.diff(&checkout.workspace.git_dir(), &base, &head)
            .await?
    )?;
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
