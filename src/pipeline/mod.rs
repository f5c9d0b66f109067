//! Pipelines: their definition in `.github/conveyor.yml`, the workspace they run in, git,
//! and step execution.

pub mod definition;
pub mod git;
pub mod step;
pub mod workspace;

use std::path::Path;

pub use definition::{DefinitionError, Pipeline};
pub use step::StepResult;

/// Runs the steps of `pipeline` in order inside `dir`, stopping at the first that fails.
/// `on_step` sees each result as soon as the step ends.
pub async fn execute<F, Fut>(
    dir: &Path,
    pipeline: &Pipeline,
    env: &[(String, String)],
    mut on_step: F,
) -> Vec<StepResult>
where
    F: FnMut(StepResult) -> Fut,
    Fut: Future<Output = ()>,
{
    let mut results = Vec::with_capacity(pipeline.steps.len());
    for (position, step) in pipeline.steps.iter().enumerate() {
        let result = step::run(position, step, dir, env).await;
        on_step(result.clone()).await;
        let failed = !result.succeeded();
        results.push(result);
        if failed {
            break;
        }
    }
    results
}

/// What a task tells its steps, as `CONVEYOR_*` environment variables.
#[derive(Debug, Clone, Default)]
pub struct TaskContext {
    pub task_id: Option<i64>,
    pub issue_number: Option<i64>,
    pub repository: String,
    pub title: String,
    pub body: String,
    pub pipeline: String,
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
    Clone(#[from] git::GitError),
    #[error(transparent)]
    Definition(#[from] DefinitionError),
}

/// A clone in its workspace and the steps that ran in it; the workspace goes when this does.
pub struct Execution {
    pub workspace: workspace::Workspace,
    pub base_sha: String,
    pub steps: Vec<StepResult>,
    /// The pipeline's policy for a failed step.
    pub retry: definition::RetryPolicy,
}

impl Execution {
    pub fn failed_step(&self) -> Option<&StepResult> {
        self.steps.last().filter(|step| !step.succeeded())
    }
}

/// Clones `url` into a fresh workspace, loads the pipeline from the clone and runs it.
pub async fn clone_and_execute<F, Fut>(
    git: &git::Git,
    url: &str,
    data_dir: &Path,
    context: &TaskContext,
    on_step: F,
) -> Result<Execution, PrepareError>
where
    F: FnMut(StepResult) -> Fut,
    Fut: Future<Output = ()>,
{
    let workspace = workspace::Workspace::create(data_dir)?;
    let dir = workspace.repo_dir();
    git.clone(url, &dir).await?;
    let base_sha = git.head(&dir).await?;
    let pipeline = definition::load(&dir, &context.pipeline)?;
    let steps = execute(&dir, &pipeline, &context.env(), on_step).await;
    Ok(Execution {
        workspace,
        base_sha,
        steps,
        retry: pipeline.retry,
    })
}
