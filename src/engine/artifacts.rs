//! What a run changed against its base: the diff (bounded, with its full size) and the
//! files it modified with their line counts. Stored when the run parks at a gate or
//! publishes, and for a failed run what its work tree held; the last store wins.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;
use sqlx::types::Json;

use crate::pipeline::changes::ChangedFile;

/// Bytes of a diff kept; its full size is stored with it.
pub const MAX_DIFF_BYTES: usize = 1024 * 1024;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Artifacts {
    pub run_id: i64,
    pub base_sha: String,
    pub head_sha: String,
    pub diff: String,
    /// The whole diff's size in bytes, kept or not.
    pub diff_bytes: i64,
    /// Whether `diff` holds only the first [`MAX_DIFF_BYTES`] of it.
    pub truncated: bool,
    pub files: Json<Vec<ChangedFile>>,
    pub created_at: DateTime<Utc>,
}

/// A diff as git wrote it, fit for storing: at most [`MAX_DIFF_BYTES`] were read, the cut
/// (if any) falls at a line end, NUL bytes are dropped and invalid UTF-8 replaced.
pub fn stored_diff(bytes: &[u8], truncated: bool) -> String {
    let kept = match (truncated, bytes.iter().rposition(|&b| b == b'\n')) {
        (true, Some(end)) => &bytes[..=end],
        _ => bytes,
    };
    let text = String::from_utf8_lossy(kept);
    crate::text_bounds::remove_nul(&text).into_owned()
}

#[allow(clippy::too_many_arguments)]
pub async fn store(
    db: impl PgExecutor<'_>,
    run_id: i64,
    base_sha: &str,
    head_sha: &str,
    diff: &str,
    diff_bytes: u64,
    truncated: bool,
    files: &[ChangedFile],
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO run_artifacts (run_id, base_sha, head_sha, diff, diff_bytes, truncated, files)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (run_id) DO UPDATE SET base_sha = $2, head_sha = $3, diff = $4,
             diff_bytes = $5, truncated = $6, files = $7, created_at = now()",
    )
    .bind(run_id)
    .bind(base_sha)
    .bind(head_sha)
    .bind(diff)
    .bind(diff_bytes as i64)
    .bind(truncated)
    .bind(Json(files))
    .execute(db)
    .await?;
    Ok(())
}

pub async fn get(db: impl PgExecutor<'_>, run_id: i64) -> sqlx::Result<Option<Artifacts>> {
    sqlx::query_as(
        "SELECT run_id, base_sha, head_sha, diff, diff_bytes, truncated, files, created_at
         FROM run_artifacts WHERE run_id = $1",
    )
    .bind(run_id)
    .fetch_optional(db)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cut_diff_ends_at_a_line_and_holds_no_nul() {
        assert_eq!(stored_diff(b"+a\n+b\n+c", true), "+a\n+b\n");
        assert_eq!(stored_diff(b"+a\n+b\n+c", false), "+a\n+b\n+c");
        assert_eq!(stored_diff(b"+a\0\xff\n", false), "+a\u{fffd}\n");
    }
}
