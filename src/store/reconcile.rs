//! After a failover, PostgreSQL holds messages Redis never saw. Before Redis
//! takes writes again, each affected thread's Redis state is corrected:
//! idempotency keys restored (a retry must not store a second copy), `last`
//! createdAt raised (order stays total) and the index marked cold (reads
//! rebuild it including those messages). Rows carry `needs_reconcile` in
//! PostgreSQL, so this survives a crash of the instance that failed over.

use std::sync::atomic::Ordering;

use super::{MessageStore, StoreError};

impl MessageStore {
    /// Applies pending failover writes to Redis. Errors leave the work for
    /// the next attempt.
    pub async fn reconcile(&self) -> Result<(), StoreError> {
        let unavailable = |e: String| {
            tracing::warn!(error = %e, "reconcile after failover failed; will retry");
            StoreError::Unavailable
        };
        loop {
            let pending = self
                .pg
                .pending_reconcile()
                .await
                .map_err(|e| unavailable(e.to_string()))?;
            if pending.is_empty() {
                self.needs_reconcile.store(false, Ordering::Release);
                return Ok(());
            }
            for (thread, last, idem, ids) in pending {
                self.redis
                    .reconcile(&thread, last, &idem, self.config.idempotency_ttl_s)
                    .await
                    .map_err(|e| unavailable(e.to_string()))?;
                self.pg
                    .mark_reconciled(&thread, &ids)
                    .await
                    .map_err(|e| unavailable(e.to_string()))?;
                tracing::info!(thread_id = %thread, messages = ids.len(), "reconciled failover writes into redis");
            }
        }
    }
}
