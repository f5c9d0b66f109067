//! What the engine's rules need to know from GitHub at the moment they decide: the caller
//! (a request worker, the API) answers through its installation's client, so a rule asks
//! the same question whichever entry point it was reached from.

use std::future::Future;

use super::tasks::PullRequestTarget;

pub trait Forge: Sync {
    /// Pull request `number` of the repository as a place to run: open, and from a branch
    /// of the repository itself; why not otherwise.
    fn pull_request(
        &self,
        number: i64,
    ) -> impl Future<Output = anyhow::Result<Result<PullRequestTarget, String>>> + Send;

    /// The commit `branch` points at now, or `None` when there is no such branch.
    fn branch_head(
        &self,
        branch: &str,
    ) -> impl Future<Output = anyhow::Result<Option<String>>> + Send;
}
