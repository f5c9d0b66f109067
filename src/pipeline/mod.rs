//! Pipelines: their definition in `.github/conveyor.yml`, the workspace they run in, git,
//! the sandbox, and step execution.

pub mod changes;
pub mod check;
pub mod clarification;
pub mod definition;
pub mod git;
mod linked;
pub mod mirror;
pub mod prompt;
pub mod protected;
pub mod sandbox;
pub mod schema;
pub mod step;
pub mod workspace;

pub use definition::{DefinitionError, Pipeline};
pub use step::{Line, LineSink, StepResult};

use std::time::{Duration, Instant};

use definition::{MAX_PIPELINE_FILE_BYTES, PIPELINE_FILE};
use git::{Git, GitError, TreeEntry};
use mirror::{MirrorError, Mirrors, Origin};
use prompt::Prompts;
use sandbox::{Sandbox, SandboxError};
use workspace::{Workspace, Workspaces};

/// What a task tells its steps, as `CONVEYOR_*` environment variables.
#[derive(Debug, Clone, Default)]
pub struct TaskContext {
    pub task_id: Option<i64>,
    pub issue_number: Option<i64>,
    pub repository: String,
    pub title: String,
    pub body: String,
    pub pipeline: String,
    /// The branch the run works on; a prompt's `task.branch`.
    pub branch: String,
    /// The commit the run started from; a prompt's `task.base_sha`.
    pub base_sha: String,
}

impl TaskContext {
    pub fn env(&self) -> Vec<(String, String)> {
        let mut env = vec![
            ("CONVEYOR_REPOSITORY".to_owned(), self.repository.clone()),
            ("CONVEYOR_TASK_TITLE".to_owned(), self.title.clone()),
            ("CONVEYOR_TASK_BODY".to_owned(), self.body.clone()),
            ("CONVEYOR_PIPELINE".to_owned(), self.pipeline.clone()),
        ];
        if let Some(id) = self.task_id {
            env.push(("CONVEYOR_TASK_ID".to_owned(), id.to_string()));
        }
        if let Some(number) = self.issue_number {
            env.push(("CONVEYOR_ISSUE_NUMBER".to_owned(), number.to_string()));
        }
        env
    }
}

/// Why a pipeline could not run to the end of its steps.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    #[error("could not create a workspace: {0}")]
    Workspace(#[from] std::io::Error),
    #[error(transparent)]
    Git(#[from] GitError),
    #[error(transparent)]
    Definition(#[from] DefinitionError),
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
}

/// A run's workspace: Conveyor's own clone of the repository, out of the steps' reach, and
/// the work tree they get. Both go when this does.
pub struct Checkout {
    pub workspace: Workspace,
    /// The default branch's head when the clone was made: where the pipeline is read from.
    pub default_head: String,
}

impl Checkout {
    /// Makes a new workspace's git directory from the mirror of `origin`, brought up to date.
    pub async fn clone(
        git: &Git,
        origin: &Origin,
        mirrors: &Mirrors,
        workspaces: &Workspaces,
    ) -> Result<Self, PrepareError> {
        let workspace = workspaces.create()?;
        let made = mirrors
            .workspace(git, origin, &workspace.git_dir())
            .await
            .map_err(|err| match err {
                MirrorError::Remote(err) => PrepareError::Git(err),
                MirrorError::Local(err) => PrepareError::Workspace(err),
            })?;
        tracing::info!(refresh = ?made.refresh, default_head = %made.default_head, "workspace made from the mirror");
        Ok(Self {
            workspace,
            default_head: made.default_head,
        })
    }

    /// Where `branch` of the repository stood when it was cloned.
    pub async fn branch_head(&self, git: &Git, branch: &str) -> Result<Option<String>, GitError> {
        git.resolve(&self.workspace.git_dir(), &format!("refs/heads/{branch}"))
            .await
    }

    /// Reads pipeline `name` from the default branch; see [`Checkout::pipeline_text`].
    pub async fn pipeline(&self, git: &Git, name: &str) -> Result<Pipeline, PrepareError> {
        Ok(definition::parse(&self.pipeline_text(git).await?, name)?)
    }

    /// The pipeline file of the default branch, as git holds it: it must be a regular file
    /// of the repository, and nothing outside it is ever read.
    pub async fn pipeline_text(&self, git: &Git) -> Result<String, PrepareError> {
        let git_dir = self.workspace.git_dir();
        let not_a_file = |what: String| Err(DefinitionError::NotAFile(what).into());
        match git.entry(&git_dir, &self.default_head, ".github").await? {
            TreeEntry::Directory => {}
            TreeEntry::Missing => return Err(DefinitionError::Missing.into()),
            TreeEntry::File { .. } => return not_a_file("`.github` is a file".to_owned()),
            TreeEntry::Other(what) => return not_a_file(format!("`.github` is {what}")),
        }
        let blob = match git
            .entry(&git_dir, &self.default_head, PIPELINE_FILE)
            .await?
        {
            TreeEntry::Missing => return Err(DefinitionError::Missing.into()),
            TreeEntry::Directory => return not_a_file("it is a directory".to_owned()),
            TreeEntry::Other(what) => return not_a_file(format!("it is {what}")),
            TreeEntry::File { size, .. } if size > MAX_PIPELINE_FILE_BYTES => {
                return Err(DefinitionError::TooLarge(size).into());
            }
            TreeEntry::File { blob, .. } => blob,
        };
        Ok(String::from_utf8(git.blob(&git_dir, &blob).await?)
            .map_err(|_| DefinitionError::Unreadable("it is not UTF-8 text".to_owned()))?)
    }

    /// Fills the work tree with `base` and the `work` of an earlier run on top of it (a patch
    /// of [`Checkout::work_patch`]), gives the steps a git repository of their own whose
    /// `origin` is `public_url`, and hands the work tree to the sandbox's user.
    pub async fn check_out(
        &self,
        git: &Git,
        base: &str,
        work: Option<&[u8]>,
        public_url: &str,
        sandbox: &Sandbox,
    ) -> Result<(), PrepareError> {
        let (git_dir, work_tree) = (self.workspace.git_dir(), self.workspace.repo_dir());
        git.check_out(&git_dir, &work_tree, base).await?;
        if let Some(work) = work.filter(|work| !work.is_empty()) {
            // In Conveyor's git dir, out of the steps' reach.
            let file = git_dir.join("conveyor-work.patch");
            std::fs::write(&file, work)?;
            git.apply(&git_dir, &work_tree, &file).await?;
            std::fs::remove_file(&file)?;
        }
        git.copy_for_steps(&git_dir, &work_tree, base, public_url)
            .await?;
        sandbox.hand_over(&self.workspace)?;
        Ok(())
    }

    /// Runs the steps of `pipeline` from position `from` in order in the work tree, stopping
    /// at the first that fails for good or asks questions, or before the first approval step. A failed step runs
    /// again alone up to its `retries`; all of them together stop when `budget` is spent.
    /// `lines` gives where each attempt's output goes as it runs; `on_step` sees the result
    /// of each attempt as soon as it ends (and its lines are stored). `prompts` renders the
    /// prompt steps and gives the steps after one the prompt's file.
    #[allow(clippy::too_many_arguments)]
    pub async fn run_steps<L, F, Fut>(
        &self,
        pipeline: &Pipeline,
        from: usize,
        env: &[(String, String)],
        prompts: &mut Prompts<'_>,
        sandbox: &Sandbox,
        budget: Duration,
        mut lines: L,
        mut on_step: F,
    ) -> Result<Steps, SandboxError>
    where
        L: FnMut(usize, &str, u32) -> Option<LineSink>,
        F: FnMut(StepResult) -> Fut,
        Fut: Future<Output = ()>,
    {
        let started = Instant::now();
        let mut results = Vec::with_capacity(pipeline.steps.len());
        for (position, step) in pipeline.steps.iter().enumerate().skip(from) {
            if let definition::Action::Approval(_) = step.action {
                return Ok(Steps {
                    results,
                    gate: Some(position),
                });
            }
            // Only a command is worth running again; a prompt renders the same each time.
            let attempts = match step.script() {
                Some(_) => step.retries.saturating_add(1),
                None => 1,
            };
            let mut attempt = 0;
            let result = loop {
                attempt += 1;
                let sink = lines(position, &step.name, attempt);
                let left = budget.saturating_sub(started.elapsed());
                let ran = match step.action {
                    definition::Action::Prompt(_) => Ok(prompts
                        .run(position, step, &self.workspace, sandbox, sink.as_ref())
                        .await),
                    _ => {
                        let env = prompts.env(env);
                        step::run(
                            position,
                            step,
                            &self.workspace,
                            &env,
                            sandbox,
                            left,
                            sink.as_ref(),
                        )
                        .await
                    }
                };
                if let Some(sink) = sink {
                    sink.close().await;
                }
                let result = StepResult {
                    attempts: attempt,
                    ..ran?
                };
                on_step(result.clone()).await;
                // Asking is no failure to run again: the same questions would come back.
                if result.succeeded()
                    || result.asks()
                    || result.out_of_budget
                    || attempt >= attempts
                {
                    break result;
                }
                tracing::info!(step = %step.name, attempt, attempts, "step failed; running it again");
            };
            prompts.ran(&result);
            let failed = !result.succeeded();
            results.push(result);
            if failed {
                break;
            }
        }
        Ok(Steps {
            results,
            gate: None,
        })
    }

    /// Stages what the steps left in the work tree; the paths that differ from `base`.
    pub async fn changes(&self, git: &Git, base: &str) -> Result<Vec<String>, GitError> {
        git.stage_changes(&self.workspace.git_dir(), &self.workspace.repo_dir(), base)
            .await
    }

    /// The work from commit `from` to commit `to` as a patch that [`Checkout::check_out`]
    /// puts back on `from`, when it is at most `max_bytes`.
    pub async fn work_patch(
        &self,
        git: &Git,
        from: &str,
        to: &str,
        max_bytes: usize,
    ) -> Result<Option<Vec<u8>>, GitError> {
        git.binary_patch(&self.workspace.git_dir(), from, to, max_bytes)
            .await
    }

    /// What changed from commit `from` to commit `to`, file by file.
    pub async fn changed_files(
        &self,
        git: &Git,
        from: &str,
        to: &str,
    ) -> Result<Vec<changes::ChangedFile>, GitError> {
        git.changed_files(&self.workspace.git_dir(), from, to).await
    }

    /// Commits the staged changes on top of `base`.
    pub async fn commit(&self, git: &Git, base: &str, message: &str) -> Result<String, GitError> {
        git.commit(&self.workspace.git_dir(), base, message).await
    }
}

/// What a stretch of a pipeline's steps did.
pub struct Steps {
    pub results: Vec<StepResult>,
    /// The approval step the steps stopped before, by position.
    pub gate: Option<usize>,
}

impl Steps {
    /// Whether the steps stopped because the run's time budget ran out.
    pub fn out_of_budget(&self) -> bool {
        self.results.last().is_some_and(|step| step.out_of_budget)
    }
}

/// The failed step, if the steps stopped at one.
pub fn failed_step(steps: &[StepResult]) -> Option<&StepResult> {
    steps.last().filter(|step| !step.succeeded())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A checkout, made under `root`, of a repository whose default branch holds `files`
    /// (and the symbolic links `links`).
    pub(super) async fn checkout_of(
        root: &std::path::Path,
        files: &[(&str, &str)],
        links: &[(&str, &str)],
    ) -> Checkout {
        let url = git::tests::origin(root, files, links);
        let data = root.join("data");
        let (workspaces, mirrors) = (Workspaces::open(&data), Mirrors::open(&data, u64::MAX));
        Checkout::clone(&Git::default(), &Origin::local(&url), &mirrors, &workspaces)
            .await
            .unwrap()
    }

    async fn pipeline_of(files: &[(&str, &str)], links: &[(&str, &str)]) -> PrepareError {
        let root = tempfile::tempdir().unwrap();
        let checkout = checkout_of(root.path(), files, links).await;
        checkout
            .pipeline(&Git::default(), "default")
            .await
            .unwrap_err()
    }

    #[tokio::test]
    async fn the_pipeline_file_must_be_a_regular_file_of_the_repository() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("conveyor.yml"), "pipelines: [SECRET\n").unwrap();
        let target = outside.path().to_str().unwrap();
        let linked_dir = pipeline_of(&[("README.md", "x\n")], &[(".github", target)]).await;
        assert_eq!(
            linked_dir.to_string(),
            DefinitionError::NotAFile("`.github` is a symbolic link".into()).to_string()
        );
        let file = outside.path().join("conveyor.yml");
        let linked_file = pipeline_of(
            &[("README.md", "x\n")],
            &[(".github/conveyor.yml", file.to_str().unwrap())],
        )
        .await;
        assert!(
            linked_file
                .to_string()
                .contains("but it is a symbolic link"),
            "{linked_file}"
        );
        let directory = pipeline_of(&[(".github/conveyor.yml/x", "y")], &[]).await;
        assert!(
            directory.to_string().contains("it is a directory"),
            "{directory}"
        );
        let missing = pipeline_of(&[("README.md", "x\n")], &[]).await;
        assert!(matches!(
            missing,
            PrepareError::Definition(DefinitionError::Missing)
        ));
    }
}
