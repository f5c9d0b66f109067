//! Ephemeral workspaces under `CONVEYOR_DATA_DIR/workspaces`, removed when dropped.

use std::path::{Path, PathBuf};

use tempfile::TempDir;

pub struct Workspace {
    dir: TempDir,
}

impl Workspace {
    pub fn create(data_dir: &Path) -> std::io::Result<Self> {
        let root = workspaces_dir(data_dir);
        std::fs::create_dir_all(&root)?;
        let dir = tempfile::Builder::new().prefix("run-").tempdir_in(root)?;
        Ok(Self { dir })
    }

    /// Where the repository is cloned.
    pub fn repo_dir(&self) -> PathBuf {
        self.dir.path().join("repo")
    }
}

pub fn workspaces_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("workspaces")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_removed_when_dropped() {
        let data = tempfile::tempdir().unwrap();
        let workspace = Workspace::create(data.path()).unwrap();
        std::fs::create_dir_all(workspace.repo_dir().join("src")).unwrap();
        drop(workspace);
        let left: Vec<_> = std::fs::read_dir(workspaces_dir(data.path()))
            .unwrap()
            .collect();
        assert!(left.is_empty());
    }
}
