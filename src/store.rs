//! `MessageStore`: the single storage facade resolvers use.
//!
//! - **Write path.** A save is one atomic Redis script (idempotency check,
//!   createdAt from Redis `TIME`, body, thread index, persistence Stream,
//!   pub/sub wake-up). It is acknowledged after that one round trip;
//!   durability in PostgreSQL follows through the [`persister`].
//! - **Failover.** When the [`breaker`] is open, or a Redis call fails, the
//!   save is written straight to PostgreSQL in one transaction under the
//!   thread's row lock, acknowledged after COMMIT, and announced to this
//!   instance's subscribers directly. If neither tier takes it:
//!   `STORAGE_UNAVAILABLE`, nothing stored.
//! - **Read path.** Pages come from the Redis thread index when it is warm
//!   and covers the range; otherwise from PostgreSQL merged with the messages
//!   Redis still holds unpersisted (read first, so a message persisted in
//!   between is seen by one side or the other), and the index is re-primed.
//!   While Redis is out, PostgreSQL alone answers: unpersisted messages
//!   stranded in Redis are invisible until it returns (README, guarantees).

pub mod access;
pub mod backpressure;
pub mod breaker;
mod gate;
pub mod persister;
pub mod postgres;
mod reads;
pub mod redis;

pub use reads::Page;
pub mod reconcile;

use std::sync::Arc;

use crate::config::PersistSettings;
use crate::domain::{Message, MessageId, NewMessage, OrderKey};
use crate::events::Events;
use crate::metrics::Metrics;
use backpressure::Backpressure;
use breaker::Breaker;
use gate::Missed;
use postgres::{FailoverOutcome, PgFault, PgTier};
use redis::{messages::SaveOutcome, RedisTier};

/// Sort direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Oldest first.
    Asc,
    /// Newest first.
    Desc,
}

/// What part of a thread to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageQuery {
    /// `limit` messages after skipping `offset`, in `order`.
    Offset {
        /// Direction.
        order: Order,
        /// Skipped messages.
        offset: u32,
        /// Page size.
        limit: u32,
    },
    /// Up to `limit` messages strictly between the cursors, in `order`
    /// (the first ones in that order).
    Range {
        /// Direction.
        order: Order,
        /// Exclusive lower bound.
        after: Option<OrderKey>,
        /// Exclusive upper bound.
        before: Option<OrderKey>,
        /// Page size.
        limit: u32,
    },
    /// Only the message count.
    Count,
}

/// Storage failures as the API sees them.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// Neither tier can serve. `maybe_stored`: a tier may have applied the
    /// write before failing (a Redis timeout or cut connection, a COMMIT
    /// whose answer was lost), so the client should retry with the same
    /// `clientMessageId`; false means nothing was stored.
    #[error("storage unavailable")]
    Unavailable {
        /// Whether the write may have been applied after all.
        maybe_stored: bool,
    },
    /// Idempotency key reused with another payload.
    #[error("idempotency key reused")]
    IdempotencyKeyReused,
    /// Unexpected failure (the text is for logs).
    #[error("internal: {0}")]
    Internal(String),
}

/// What `/readyz` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Readiness {
    /// Redis answered a ping.
    pub redis: bool,
    /// PostgreSQL answered a ping.
    pub postgres: bool,
    /// Saves are refused: the persistence backlog is at its bound.
    pub backpressure: bool,
}

impl Readiness {
    /// Ready when at least one tier can take writes and saves are not
    /// refused for the backlog.
    pub fn ready(&self) -> bool {
        (self.redis || self.postgres) && !self.backpressure
    }
}

/// Tunables of the store.
#[derive(Debug, Clone, Copy)]
pub struct StoreConfig {
    /// TTL of persisted cache entries, seconds.
    pub cache_ttl_s: u64,
    /// Idempotency key retention, seconds.
    pub idempotency_ttl_s: u64,
    /// Thread index window.
    pub window: u32,
    /// Most unacknowledged persistence entries before saves are refused (0: no bound).
    pub backlog_limit: u64,
    /// How long a request keeps asking a slow Redis while PostgreSQL is
    /// known to be down (failing over would only fail).
    pub patience: std::time::Duration,
}

impl StoreError {
    /// Unavailable, and certainly not stored.
    pub const UNAVAILABLE: StoreError = StoreError::Unavailable { maybe_stored: false };
}

/// The storage facade. Cheap to clone.
#[derive(Clone)]
pub struct MessageStore {
    redis: RedisTier,
    pg: PgTier,
    breaker: Arc<Breaker>,
    events: Events,
    config: StoreConfig,
    metrics: Metrics,
    /// Whether PostgreSQL may hold failover writes Redis has not seen.
    reconcile: Arc<reconcile::ReconcileState>,
    /// Whether the persistence backlog is at its bound.
    backpressure: Arc<Backpressure>,
}

impl MessageStore {
    /// Assembles the facade.
    pub fn new(
        redis: RedisTier,
        pg: PgTier,
        breaker: Arc<Breaker>,
        events: Events,
        config: StoreConfig,
        metrics: Metrics,
    ) -> Self {
        let backpressure = Arc::new(Backpressure::new(config.backlog_limit, metrics.clone()));
        Self { redis, pg, breaker, events, config, metrics, reconcile: Arc::default(), backpressure }
    }

    /// Whether each tier answers a ping now, and whether saves are refused
    /// for the persistence backlog (`/readyz`).
    pub async fn readiness(&self) -> Readiness {
        let (redis, postgres) = tokio::join!(self.redis.ping(), self.pg.ping());
        Readiness { redis: redis.is_ok(), postgres: postgres.is_ok(), backpressure: self.backpressure.is_active() }
    }

    /// A persister over this store's tiers: one runs per instance; tests
    /// drive one by hand. `metrics` receives its numbers.
    pub fn persister(&self, settings: PersistSettings, consumer: String, metrics: Metrics) -> persister::Persister {
        persister::Persister::new(
            self.redis.clone(),
            self.pg.clone(),
            settings,
            consumer,
            self.config.cache_ttl_s,
            metrics,
        )
    }

    /// The per-instance metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The breaker's state (storage metrics, tests): read-only, as only
    /// the gate ([`gate`]) reports to it.
    pub fn breaker_state(&self) -> breaker::State {
        self.breaker.state()
    }

    /// The shape of every write: one Redis attempt (its script), else one
    /// PostgreSQL transaction under the failover gate. `attempt` builds the
    /// Redis attempt; it runs a second time only when Redis came back while
    /// this write waited at the gate (a failover write then would race
    /// Redis writes on the same thread).
    async fn write<T, M, A>(
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
                    return failover(false).await;
                }
                drop(gate);
                match attempt()().await {
                    Attempt::Done(result) => return result,
                    Attempt::FailOver { maybe_applied } => maybe_applied,
                    Attempt::Skipped => false,
                }
            }
        };
        let _gate = self.reconcile.failover_gate().await;
        failover(maybe_in_redis).await
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
                self.events.publish_local(&m);
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
enum Attempt<T> {
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
