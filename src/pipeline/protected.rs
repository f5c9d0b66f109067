//! Protected paths: files a run may not change (CI definitions, Conveyor's own file, code
//! ownership), checked against the run's diff before anything is pushed.

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("has `protected_paths` entry `{glob}` that is not a valid glob: {reason}")]
pub struct BadGlob {
    pub glob: String,
    pub reason: String,
}

pub struct Protected {
    globs: GlobSet,
}

impl Protected {
    /// `*` stays within one path segment and `**` crosses them, as in `.gitignore`.
    pub fn new(globs: &[String]) -> Result<Self, BadGlob> {
        let mut set = GlobSetBuilder::new();
        for glob in globs {
            let compiled = GlobBuilder::new(glob)
                .literal_separator(true)
                .build()
                .map_err(|err| BadGlob {
                    glob: glob.clone(),
                    reason: err.kind().to_string(),
                })?;
            set.add(compiled);
        }
        let globs = set.build().map_err(|err| BadGlob {
            glob: globs.join(", "),
            reason: err.to_string(),
        })?;
        Ok(Self { globs })
    }

    /// The paths of `changed` that are protected, in their order.
    pub fn touched<'a>(&self, changed: &'a [String]) -> Vec<&'a str> {
        changed
            .iter()
            .filter(|path| self.globs.is_match(path.as_str()))
            .map(String::as_str)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::definition::DEFAULT_PROTECTED_PATHS;

    #[test]
    fn the_defaults_cover_workflows_the_pipeline_file_and_codeowners_only() {
        let defaults: Vec<String> = DEFAULT_PROTECTED_PATHS
            .iter()
            .map(|g| (*g).to_owned())
            .collect();
        let protected = Protected::new(&defaults).unwrap();
        let changed: Vec<String> = [
            ".github/workflows/ci.yml",
            ".github/workflows/nested/deploy.yaml",
            ".github/conveyor.yml",
            "CODEOWNERS",
            ".github/CODEOWNERS",
            "src/main.rs",
            ".github/ISSUE_TEMPLATE/bug.md",
            "docs/workflows/ci.yml",
            "src/CODEOWNERS.md",
        ]
        .map(str::to_owned)
        .to_vec();
        assert_eq!(
            protected.touched(&changed),
            [
                ".github/workflows/ci.yml",
                ".github/workflows/nested/deploy.yaml",
                ".github/conveyor.yml",
                "CODEOWNERS",
                ".github/CODEOWNERS",
            ]
        );
    }

    #[test]
    fn a_star_stays_in_its_segment() {
        let protected = Protected::new(&["migrations/*.sql".to_owned()]).unwrap();
        let changed = ["migrations/1.sql", "migrations/old/2.sql"].map(str::to_owned);
        assert_eq!(protected.touched(&changed), ["migrations/1.sql"]);
        assert!(Protected::new(&["a/[".to_owned()]).is_err());
    }
}
