//! The shape of every write: one Redis attempt (its script), else one
//! PostgreSQL transaction under the failover gate. A save is the first kind
//! of write; later kinds plug into [`MessageStore::write`] with their own
//! attempt and failover transaction.

use super::failover::gate::{one_try, Missed};
use super::postgres::{FailoverOutcome, PgFault};
use super::redis::{messages::SaveOutcome, RedisTier};
use super::{MessageStore, StoreError};
use crate::domain::{Message, MessageId, NewMessage};

impl MessageStore {
    /// The shape of every write: one Redis attempt (its script), else one
    /// PostgreSQL transaction under the failover gate. `attempt` builds the
    /// Redis attempt; it runs again only when Redis came back while this
    /// write waited at the gate (a failover write then would race Redis
    /// writes on the same thread), or when the failover found PostgreSQL
    /// down (see `after_failover`).
    pub(super) async fn write<T, M, A>(
        &self,
        attempt: M,
        failover: impl AsyncFnOnce(bool) -> Result<T, StoreError>,
    ) -> Result<T, StoreError>
    where
        M: Fn() -> A,
        A: AsyncFnOnce() -> Attempt<T>,
    {
        let maybe_in_redis = match attempt()().await {
            Attempt::Done(result) => return result,
            Attempt::FailOver { maybe_applied } => maybe_applied,
            Attempt::Skipped => {
                let gate = self.reconcile.failover_gate().await;
                if !self.redis_in_use() {
                    let result = failover(false).await;
                    drop(gate);
                    return self.after_failover(result, &attempt).await;
                }
                drop(gate);
                match attempt()().await {
                    Attempt::Done(result) => return result,
                    Attempt::FailOver { maybe_applied } => maybe_applied,
                    Attempt::Skipped => false,
                }
            }
        };
        if self.pg.known_down() {
            // Redis just failed and PostgreSQL's last call failed too:
            // answer now rather than wait out PostgreSQL's timeout (the
            // client retries with the same clientMessageId).
            return Err(StoreError::Unavailable { maybe_stored: maybe_in_redis });
        }
        let gate = self.reconcile.failover_gate().await;
        let result = failover(maybe_in_redis).await;
        drop(gate);
        self.after_failover(result, &attempt).await
    }

    /// A failover that found PostgreSQL down (a crash not yet noticed when
    /// Redis timed out) gets one more Redis attempt: a write must not fail
    /// while Redis may be healthy, and with PostgreSQL known down the gate
    /// now routes to Redis patiently. Safe to repeat: every attempt is
    /// idempotent by its id, fixed before the first one.
    async fn after_failover<T, M, A>(&self, result: Result<T, StoreError>, attempt: &M) -> Result<T, StoreError>
    where
        M: Fn() -> A,
        A: AsyncFnOnce() -> Attempt<T>,
    {
        match result {
            Err(StoreError::Unavailable { maybe_stored }) if self.pg.known_down() => match one_try(attempt()()).await {
                Attempt::Done(result) => result,
                Attempt::FailOver { maybe_applied } => {
                    Err(StoreError::Unavailable { maybe_stored: maybe_stored || maybe_applied })
                }
                Attempt::Skipped => Err(StoreError::Unavailable { maybe_stored }),
            },
            other => other,
        }
    }

    /// Saves a message (see the module docs for the tiers).
    #[tracing::instrument(level = "debug", skip_all, fields(thread_id = %new.thread_id, message_id = %new.id))]
    pub async fn save(&self, new: NewMessage) -> Result<Message, StoreError> {
        let new = &new;
        self.write(|| async || self.save_in_redis(new).await, async |maybe| self.save_in_postgres(new, maybe).await)
            .await
    }

    /// The Redis attempt of a save: `save.lua`, asked again once on a cold
    /// thread (after checking PostgreSQL for the idempotency key).
    async fn save_in_redis(&self, new: &NewMessage) -> Attempt<Message> {
        let c = &self.config;
        let mut outcome = self.via_redis_patiently(|| async |r: &RedisTier| r.save(new, true, c).await).await;
        if let Ok(SaveOutcome::Cold) = outcome {
            if let Some(found) = self.known_key(new).await {
                return Attempt::Done(same_or_conflict(new, found));
            }
            outcome = self.via_redis_patiently(|| async |r: &RedisTier| r.save(new, false, c).await).await;
        }
        match outcome {
            Ok(SaveOutcome::Saved(m)) => {
                self.metrics.save();
                Attempt::Done(Ok(m))
            }
            Ok(SaveOutcome::Cold) => Attempt::Done(Err(StoreError::Internal("save script answered cold twice".into()))),
            Ok(SaveOutcome::BacklogFull) => {
                // No failover: the backlog means PostgreSQL is down or
                // behind, so fail fast.
                self.backpressure.refused();
                Attempt::Done(Err(StoreError::UNAVAILABLE))
            }
            Ok(SaveOutcome::Duplicate(id, cached)) => Attempt::Done(self.resolve_duplicate(new, id, cached).await),
            Err(Missed::Skipped) => Attempt::Skipped,
            Err(missed) => {
                // The id was fixed before the call, so if Redis did apply it
                // (an ambiguous timeout) both copies are the same message and
                // the idempotent insert keeps one.
                tracing::warn!(fault = %missed, "redis save failed; writing to postgres");
                Attempt::FailOver { maybe_applied: missed.maybe_applied() }
            }
        }
    }

    /// The original of a duplicate save (same idempotency key): the same
    /// payload is the original, another payload a conflict.
    async fn resolve_duplicate(
        &self,
        new: &NewMessage,
        id: MessageId,
        cached: Option<Message>,
    ) -> Result<Message, StoreError> {
        let original = match cached {
            Some(m) => Some(m),
            // The original is stored either way: a retry finds it.
            None => self.pg.by_ids(&[id]).await.map_err(|_| StoreError::UNAVAILABLE)?.into_iter().next(),
        };
        let original = original.ok_or_else(|| StoreError::Internal(format!("idempotent original {id} not found")))?;
        same_or_conflict(new, original)
    }

    /// A keyed save on a cold thread: PostgreSQL may know the key (its
    /// unique index keeps every key for good). Remembered in Redis again.
    async fn known_key(&self, new: &NewMessage) -> Option<Message> {
        let key = new.client_message_id.as_ref()?;
        match self.pg.by_client_id(&new.thread_id, key.as_str()).await {
            Ok(found) => {
                if let Some(m) = &found {
                    let ttl = self.config.idempotency_ttl_s;
                    let remembered =
                        self.via_redis(async |r| r.remember_key(&new.thread_id, key.as_str(), &m.id, ttl).await).await;
                    if let Err(missed) = remembered {
                        tracing::debug!(%missed, "could not remember the idempotency key in redis");
                    }
                }
                found
            }
            // PostgreSQL down: saves must keep being accepted. If the key
            // was in fact used, the persister keeps this message without it.
            Err(fault) => {
                tracing::warn!(%fault, "idempotency check in postgres failed; saving to redis");
                None
            }
        }
    }

    /// The failover transaction of a save; the caller holds the failover
    /// gate.
    async fn save_in_postgres(&self, new: &NewMessage, maybe_in_redis: bool) -> Result<Message, StoreError> {
        match self.pg.save(new).await {
            Ok(FailoverOutcome::Saved(m)) => {
                self.metrics.failover_write();
                self.metrics.save();
                self.announce.saved_without_redis(&m);
                Ok(m)
            }
            Ok(FailoverOutcome::Existing(m)) => same_or_conflict(new, m),
            Err(fault) => {
                tracing::error!(%fault, "failover save failed: neither tier can take the write");
                let maybe_stored = maybe_in_redis || matches!(fault, PgFault::CommitUnknown(_));
                Err(StoreError::Unavailable { maybe_stored })
            }
        }
    }
}

/// What one Redis attempt at a write came to.
pub(super) enum Attempt<T> {
    /// Redis answered: the write's result, whatever it is.
    Done(Result<T, StoreError>),
    /// Redis failed: write to PostgreSQL. `maybe_applied`: Redis may hold
    /// the write too (a timeout, a cut connection).
    FailOver {
        /// Whether the write may be in Redis all the same.
        maybe_applied: bool,
    },
    /// Redis was not tried (the breaker is open): PostgreSQL, unless Redis
    /// is back by the time the failover gate is taken.
    Skipped,
}

fn same_or_conflict(new: &NewMessage, original: Message) -> Result<Message, StoreError> {
    if new.same_payload(&original) {
        Ok(original)
    } else {
        Err(StoreError::IdempotencyKeyReused)
    }
}
