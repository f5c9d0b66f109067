//! The App's installations and their repositories, kept current from installation events.

use sqlx::{PgConnection, PgExecutor};

use crate::webhook::event::{InstallationAction, RepositoryRef};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Active,
    Suspended,
    Deleted,
}

/// What an installation event changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Installation {
        action: InstallationAction,
        repositories: Vec<RepositoryRef>,
    },
    Repositories {
        added: Vec<RepositoryRef>,
        removed: Vec<RepositoryRef>,
    },
}

/// How many installations of the App are active (neither suspended nor deleted).
pub async fn active_count(db: impl PgExecutor<'_>) -> sqlx::Result<i64> {
    sqlx::query_scalar(
        "SELECT count(*) FROM installations WHERE suspended_at IS NULL AND deleted_at IS NULL",
    )
    .fetch_one(db)
    .await
}

/// The recorded status of an installation; `None` for one never seen in an installation event
/// (installed before Conveyor recorded installations), which counts as active.
pub async fn status(db: impl PgExecutor<'_>, id: i64) -> sqlx::Result<Option<Status>> {
    let row: Option<(bool, bool)> = sqlx::query_as(
        "SELECT deleted_at IS NOT NULL, suspended_at IS NOT NULL FROM installations WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(db)
    .await?;
    Ok(row.map(|flags| match flags {
        (true, _) => Status::Deleted,
        (false, true) => Status::Suspended,
        (false, false) => Status::Active,
    }))
}

pub async fn apply(
    conn: &mut PgConnection,
    id: i64,
    account: &str,
    change: &Change,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO installations (id, account) VALUES ($1, $2)
         ON CONFLICT (id) DO UPDATE SET
             account = CASE WHEN EXCLUDED.account = '' THEN installations.account ELSE EXCLUDED.account END,
             updated_at = now()",
    )
    .bind(id)
    .bind(account)
    .execute(&mut *conn)
    .await?;
    match change {
        Change::Installation {
            action,
            repositories,
        } => {
            let set = match action {
                InstallationAction::Created | InstallationAction::NewPermissionsAccepted => {
                    "deleted_at = NULL"
                }
                InstallationAction::Deleted => "deleted_at = now()",
                InstallationAction::Suspend => "suspended_at = now()",
                InstallationAction::Unsuspend => "suspended_at = NULL",
            };
            sqlx::query(&format!("UPDATE installations SET {set} WHERE id = $1"))
                .bind(id)
                .execute(&mut *conn)
                .await?;
            if *action == InstallationAction::Created {
                add_repositories(conn, id, repositories).await?;
            }
        }
        Change::Repositories { added, removed } => {
            add_repositories(conn, id, added).await?;
            let ids: Vec<i64> = removed.iter().map(|r| r.id).collect();
            sqlx::query(
                "DELETE FROM installation_repositories
                 WHERE installation_id = $1 AND repository_id = ANY($2)",
            )
            .bind(id)
            .bind(&ids)
            .execute(&mut *conn)
            .await?;
        }
    }
    Ok(())
}

async fn add_repositories(
    conn: &mut PgConnection,
    id: i64,
    repositories: &[RepositoryRef],
) -> sqlx::Result<()> {
    let ids: Vec<i64> = repositories.iter().map(|r| r.id).collect();
    let names: Vec<&str> = repositories.iter().map(|r| r.full_name.as_str()).collect();
    sqlx::query(
        "INSERT INTO installation_repositories (installation_id, repository_id, full_name)
         SELECT $1, * FROM UNNEST($2::BIGINT[], $3::TEXT[])
         ON CONFLICT (installation_id, repository_id) DO UPDATE SET full_name = EXCLUDED.full_name",
    )
    .bind(id)
    .bind(&ids)
    .bind(&names)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn repositories(db: impl PgExecutor<'_>, id: i64) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar(
        "SELECT full_name FROM installation_repositories WHERE installation_id = $1 ORDER BY full_name",
    )
    .bind(id)
    .fetch_all(db)
    .await
}
