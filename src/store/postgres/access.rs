//! Thread access in PostgreSQL, the system of record (`thread_acl`,
//! `thread_members`; see `migrations/V2__access.sql`).

use std::sync::atomic::{AtomicBool, Ordering};

use bb8_postgres::tokio_postgres::types::Type;

use super::{PgFault, PgTier};
use crate::store::model::Access;

impl PgTier {
    /// `user`'s access to `thread` and the ACL version it was read at (0:
    /// unclaimed).
    pub async fn access(&self, thread: &str, user: Option<&str>) -> Result<(Access, i64), PgFault> {
        self.with_client("access", || {
            async |c| {
                let rows = c
                    .query_typed(
                        "SELECT a.owner, a.version,
                            EXISTS (SELECT 1 FROM thread_members m WHERE m.thread_id = a.thread_id AND m.user_id = $2)
                     FROM thread_acl a WHERE a.thread_id = $1",
                        &[(&thread, Type::TEXT), (&user, Type::TEXT)],
                    )
                    .await?;
                Ok(match rows.first() {
                    None => (Access::Unclaimed, 0),
                    Some(r) => (Access::Claimed { owner: r.try_get(0)?, member: r.try_get(2)? }, r.try_get(1)?),
                })
            }
        })
        .await
    }

    /// Claims an unclaimed thread for `owner` (a member from then on), or
    /// for no one (a service principal wrote first). A claimed thread is
    /// left as it is.
    pub async fn claim(&self, thread: &str, owner: Option<&str>) -> Result<(), PgFault> {
        self.with_client("claim", || {
            async |c| {
                c.query_typed(
                    "WITH claimed AS (
                     INSERT INTO thread_acl (thread_id, owner) VALUES ($1, $2)
                     ON CONFLICT (thread_id) DO NOTHING RETURNING thread_id, owner)
                 INSERT INTO thread_members (thread_id, user_id)
                 SELECT thread_id, owner FROM claimed WHERE owner IS NOT NULL
                 ON CONFLICT DO NOTHING",
                    &[(&thread, Type::TEXT), (&owner, Type::TEXT)],
                )
                .await?;
                Ok(())
            }
        })
        .await
    }

    /// Adds or removes a member in one transaction that bumps the ACL
    /// version; returns the new version, or `None` if the thread is
    /// unclaimed. The owner is never removed.
    pub async fn set_member(&self, thread: &str, user: &str, member: bool) -> Result<Option<i64>, PgFault> {
        // Not idempotent (it bumps the version, and another change may
        // commit in between): never run a second time on a fresh connection.
        let ran = AtomicBool::new(false);
        self.with_client("set_member", || {
            async |c| {
                if ran.swap(true, Ordering::SeqCst) {
                    return Err(PgFault::CommitUnknown("connection closed during a membership change".into()));
                }
                let tx = c.transaction().await?;
                let rows = tx
                    .query_typed(
                        "UPDATE thread_acl SET version = version + 1 WHERE thread_id = $1 RETURNING version",
                        &[(&thread, Type::TEXT)],
                    )
                    .await?;
                let Some(version) = rows.first().map(|r| r.try_get::<_, i64>(0)).transpose()? else {
                    return Ok(None);
                };
                let sql = if member {
                    "INSERT INTO thread_members (thread_id, user_id) VALUES ($1, $2) ON CONFLICT DO NOTHING"
                } else {
                    "DELETE FROM thread_members m USING thread_acl a
                 WHERE m.thread_id = $1 AND m.user_id = $2 AND a.thread_id = m.thread_id
                   AND a.owner IS DISTINCT FROM m.user_id"
                };
                tx.query_typed(sql, &[(&thread, Type::TEXT), (&user, Type::TEXT)]).await?;
                tx.commit().await?;
                Ok(Some(version))
            }
        })
        .await
    }

    /// Flags a change Redis could not be told about.
    pub async fn mark_acl_dirty(&self, thread: &str) -> Result<(), PgFault> {
        self.with_client("mark_acl_dirty", || {
            async |c| {
                c.query_typed(
                    "UPDATE thread_acl SET cache_dirty = true WHERE thread_id = $1",
                    &[(&thread, Type::TEXT)],
                )
                .await?;
                Ok(())
            }
        })
        .await
    }

    /// Threads whose cached access Redis must drop, with their versions.
    pub async fn dirty_acls(&self) -> Result<Vec<(String, i64)>, PgFault> {
        self.with_client("dirty_acls", || {
            async |c| {
                let rows = c
                    .query_typed("SELECT thread_id, version FROM thread_acl WHERE cache_dirty LIMIT 1000", &[])
                    .await?;
                rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect()
            }
        })
        .await
    }

    /// Clears the flag, unless another change came in since `version`.
    pub async fn acl_cleaned(&self, thread: &str, version: i64) -> Result<(), PgFault> {
        self.with_client("acl_cleaned", || {
            async |c| {
                c.query_typed(
                    "UPDATE thread_acl SET cache_dirty = false WHERE thread_id = $1 AND version = $2",
                    &[(&thread, Type::TEXT), (&version, Type::INT8)],
                )
                .await?;
                Ok(())
            }
        })
        .await
    }
}
