//! The engine's questions to GitHub ([`Forge`]), answered for one repository through its
//! installation's client: by the request workers and by the API alike.

use anyhow::Context;

use crate::engine::forge::Forge;
use crate::engine::tasks::PullRequestTarget;
use crate::github::InstallationClient;
use crate::github::client::Repo;

pub struct OnGitHub<'a> {
    pub client: &'a InstallationClient,
    pub owner: &'a str,
    pub name: &'a str,
}

impl OnGitHub<'_> {
    fn repo(&self) -> Repo<'_> {
        Repo {
            owner: self.owner,
            name: self.name,
        }
    }
}

impl Forge for OnGitHub<'_> {
    async fn pull_request(&self, number: i64) -> anyhow::Result<Result<PullRequestTarget, String>> {
        let pull = self
            .client
            .pull_request(self.repo(), number)
            .await
            .context("reading the pull request")?;
        let here = format!("{}/{}", self.owner, self.name);
        if pull.state != "open" {
            return Ok(Err(format!("pull request #{number} is {}", pull.state)));
        }
        match pull.head.repo.as_ref().map(|repo| repo.full_name.as_str()) {
            Some(head) if head.eq_ignore_ascii_case(&here) => Ok(Ok(PullRequestTarget {
                number,
                head_branch: pull.head.ref_name,
                head_sha: pull.head.sha,
            })),
            Some(fork) => Ok(Err(format!(
                "pull request #{number} comes from the fork `{fork}`; Conveyor runs pipelines only on branches of this repository, because a fork's code must not run with this repository's access"
            ))),
            None => Ok(Err(format!(
                "pull request #{number} comes from a deleted fork; Conveyor runs pipelines only on branches of this repository"
            ))),
        }
    }

    async fn branch_head(&self, branch: &str) -> anyhow::Result<Option<String>> {
        self.client
            .branch_sha(self.repo(), branch)
            .await
            .context("reading the branch")
    }
}
