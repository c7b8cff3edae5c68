//! Thread access, as storage: PostgreSQL is the system of record, Redis
//! caches each (thread, user) answer.
//!
//! The cache stays correct across changes and failover:
//! - every change bumps the thread's ACL version in the same transaction,
//!   and then drops the cache entry in favour of that version, so a fill
//!   that read PostgreSQL before the change can't bring the old answer back
//!   (`lua/acl_fill.lua`, `lua/acl_changed.lua`);
//! - a change made while Redis is unreachable flags the thread
//!   (`cache_dirty`), and the reconcile that runs before Redis is used
//!   again drops those entries first (see [`super::failover`]);
//! - while the breaker is open, PostgreSQL answers directly.
//!
//! Claiming a thread needs PostgreSQL: while it is down, existing threads
//! keep working from the cache, but a new thread's first save answers
//! `STORAGE_UNAVAILABLE` when authentication is on.

use super::{Access, MessageStore, StoreError};
use crate::domain::ThreadId;

impl MessageStore {
    /// `user`'s access to `thread` (`None`: only whether it is claimed).
    #[tracing::instrument(level = "debug", skip_all, fields(thread_id = %thread))]
    pub async fn access(&self, thread: &ThreadId, user: Option<&str>) -> Result<Access, StoreError> {
        if let Ok(Some(access)) = self.via_redis(async |r| r.acl_get(thread.as_str(), user).await).await {
            return Ok(access);
        }
        let (access, version) = self.pg.access(thread.as_str(), user).await.map_err(|_| StoreError::UNAVAILABLE)?;
        if let Access::Claimed { owner, member } = &access {
            let ttl = self.config.cache_ttl_s;
            let filled = self
                .via_redis(async |r| r.acl_fill(thread.as_str(), user, owner.as_deref(), *member, version, ttl).await);
            if let Err(missed) = filled.await {
                tracing::debug!(%missed, "could not cache the access answer in redis");
            }
        }
        Ok(access)
    }

    /// Claims `thread` for `owner` if nobody has (see [`Access`]).
    pub async fn claim(&self, thread: &ThreadId, owner: Option<&str>) -> Result<(), StoreError> {
        if matches!(self.access(thread, None).await?, Access::Claimed { .. }) {
            return Ok(());
        }
        self.pg.claim(thread.as_str(), owner).await.map_err(|_| StoreError::UNAVAILABLE)
    }

    /// Adds (`member` true) or removes a member. False when the thread is
    /// unclaimed. A removed member's subscriptions to the thread end, on
    /// every instance when Redis is up, on this one when it is not.
    pub async fn set_member(&self, thread: &ThreadId, user: &str, member: bool) -> Result<bool, StoreError> {
        let t = thread.as_str();
        let Some(version) = self.pg.set_member(t, user, member).await.map_err(|_| StoreError::UNAVAILABLE)? else {
            return Ok(false);
        };
        let ttl = self.config.cache_ttl_s;
        let told = self.via_redis(async |r| r.acl_changed(t, version, ttl).await).await.is_ok();
        if !told {
            tracing::warn!(thread_id = %t, "membership change not in the redis cache yet; reconciled before redis is used");
            let _ = self.pg.mark_acl_dirty(t).await;
            self.reconcile.missed_change();
        }
        if !member {
            self.announce.revoked_here(t, user);
            if told {
                if let Err(missed) = self.via_redis(async |r| r.publish_revoke(t, user).await).await {
                    // Other instances' feeds re-check membership every 30 s.
                    tracing::warn!(%missed, "could not announce a removal to other instances");
                }
            }
        }
        Ok(true)
    }
}
