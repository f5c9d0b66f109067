//! What deciding a request needs from GitHub, cached briefly: a repository's pipeline file
//! from its default branch (its settings, its pipelines' names), and a person's permission
//! on it. GitHub is asked at most once a minute for each, so a burst of commands costs one
//! lookup.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::authz::Permission;
use crate::github::client::Repo;
use crate::github::{GitHubError, InstallationClient};
use crate::pipeline::definition::{DefinitionError, MAX_PIPELINE_FILE_BYTES, PIPELINE_FILE};

/// How long an answer is trusted: a permission taken away, or settings changed, apply
/// within this.
pub const TTL: Duration = Duration::from_secs(60);
/// Entries kept at most per cache; the oldest half goes when it is full.
const MAX_ENTRIES: usize = 10_000;

/// The pipeline file of a default branch as GitHub gave it: its text, `None` when there is
/// none, or why it cannot be read.
pub type PipelineText = Result<Option<Arc<str>>, DefinitionError>;

#[derive(Default)]
pub struct Lookups {
    files: Cache<String, PipelineText>,
    permissions: Cache<(String, String), Permission>,
}

impl Lookups {
    /// `.github/conveyor.yml` on the repository's default branch.
    pub async fn pipeline_file(
        &self,
        client: &InstallationClient,
        repo: Repo<'_>,
        default_branch: &str,
    ) -> Result<PipelineText, GitHubError> {
        let key = format!("{}/{}", repo.owner, repo.name);
        if let Some(file) = self.files.get(&key) {
            return Ok(file);
        }
        let file = match client
            .file_contents(repo, PIPELINE_FILE, default_branch)
            .await
        {
            Ok(None) => Ok(None),
            Ok(Some(bytes)) if bytes.len() as u64 > MAX_PIPELINE_FILE_BYTES => {
                Err(DefinitionError::TooLarge(bytes.len() as u64))
            }
            Ok(Some(bytes)) => match String::from_utf8(bytes) {
                Ok(text) => Ok(Some(Arc::from(text))),
                Err(_) => Err(DefinitionError::Unreadable(
                    "it is not UTF-8 text".to_owned(),
                )),
            },
            Err(GitHubError::NotAFile { kind, .. }) => {
                Err(DefinitionError::NotAFile(format!("it is a {kind}")))
            }
            Err(err) => return Err(err),
        };
        self.files.put(key, file.clone());
        Ok(file)
    }

    /// `login`'s permission on the repository.
    pub async fn permission(
        &self,
        client: &InstallationClient,
        repo: Repo<'_>,
        login: &str,
    ) -> Result<Permission, GitHubError> {
        let key = (
            format!("{}/{}", repo.owner, repo.name),
            login.to_lowercase(),
        );
        if let Some(permission) = self.permissions.get(&key) {
            return Ok(permission);
        }
        let answer = client.collaborator_permission(repo, login).await?;
        let permission = Permission::from_github(&answer.permission, answer.role_name.as_deref());
        self.permissions.put(key, permission);
        Ok(permission)
    }
}

struct Cache<K, V> {
    entries: Mutex<HashMap<K, (Instant, V)>>,
}

impl<K, V> Default for Cache<K, V> {
    fn default() -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: std::hash::Hash + Eq + Clone, V: Clone> Cache<K, V> {
    fn get(&self, key: &K) -> Option<V> {
        let entries = self.entries.lock().expect("lookup cache");
        entries
            .get(key)
            .filter(|(at, _)| at.elapsed() < TTL)
            .map(|(_, value)| value.clone())
    }

    fn put(&self, key: K, value: V) {
        let mut entries = self.entries.lock().expect("lookup cache");
        if entries.len() >= MAX_ENTRIES {
            entries.retain(|_, (at, _)| at.elapsed() < TTL);
            if entries.len() >= MAX_ENTRIES {
                let mut ages: Vec<Instant> = entries.values().map(|(at, _)| *at).collect();
                ages.sort();
                let cut = ages[ages.len() / 2];
                entries.retain(|_, (at, _)| *at > cut);
            }
        }
        entries.insert(key, (Instant::now(), value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_kept_for_a_minute_and_the_cache_stays_bounded() {
        let cache: Cache<usize, usize> = Cache::default();
        cache.put(1, 10);
        assert_eq!(cache.get(&1), Some(10));
        cache.entries.lock().unwrap().get_mut(&1).unwrap().0 -= TTL;
        assert_eq!(cache.get(&1), None, "a stale answer is asked again");
        for key in 0..MAX_ENTRIES + 10 {
            cache.put(key, key);
        }
        assert!(cache.entries.lock().unwrap().len() <= MAX_ENTRIES);
        assert_eq!(cache.get(&(MAX_ENTRIES + 9)), Some(MAX_ENTRIES + 9));
    }
}
