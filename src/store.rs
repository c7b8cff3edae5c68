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
pub mod persister;
pub mod postgres;
mod reads;
pub mod redis;

pub use reads::Page;
pub mod reconcile;

use std::sync::Arc;

use crate::domain::{Message, NewMessage, OrderKey};
use crate::events::Events;
use crate::metrics::Metrics;
use backpressure::Backpressure;
use breaker::{Breaker, Route};
use postgres::{FailoverOutcome, PgFault, PgTier};
use redis::{messages::SaveOutcome, RedisFault, RedisTier};

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

    /// The backlog bound's state (readiness, the queue sampler).
    pub fn backpressure(&self) -> &Arc<Backpressure> {
        &self.backpressure
    }

    /// The Redis tier (persister, readiness).
    pub fn redis(&self) -> &RedisTier {
        &self.redis
    }

    /// The PostgreSQL tier (persister, readiness).
    pub fn pg(&self) -> &PgTier {
        &self.pg
    }

    /// The per-instance metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The breaker.
    pub fn breaker(&self) -> &Breaker {
        &self.breaker
    }

    /// Where the next Redis call goes. Any Redis call first brings Redis up
    /// to date with failover writes (see [`reconcile`]), so a message written
    /// to PostgreSQL can't be missed, duplicated or reordered once Redis is back.
    ///
    /// A half-open probe is a `PING` made here, not the caller's operation:
    /// the caller uses Redis only once the breaker has closed (see [`breaker`]).
    async fn route(&self) -> Route {
        let mut route = self.breaker.route();
        if route == Route::Probe {
            let ok = self.redis.ping().await.is_ok();
            self.breaker.record(Route::Probe, ok);
            route = self.breaker.peek_route();
        }
        self.reconcile_before(route).await
    }

    /// Saves a message (see the module docs for the tiers).
    #[tracing::instrument(level = "debug", skip_all, fields(thread_id = %new.thread_id, message_id = %new.id))]
    pub async fn save(&self, new: NewMessage) -> Result<Message, StoreError> {
        let mut route = self.route().await;
        if route == Route::Fallback {
            let gate = self.reconcile.failover_gate().await;
            if !self.breaker.is_closed() {
                return self.save_failover(new, false).await;
            }
            // Redis came back while this request waited at the gate: a
            // failover write now would race Redis saves on the same thread.
            drop(gate);
            route = self.route().await;
        }
        // Whether Redis may have applied this save although the call failed.
        let mut maybe_in_redis = false;
        if route != Route::Fallback {
            let c = &self.config;
            let mut outcome = self.redis.save(&new, true, c).await;
            if route == Route::Redis && matches!(outcome, Err(RedisFault::Timeout)) {
                // One timeout on a Redis the breaker trusts is most often this
                // process being descheduled (or frozen) past the deadline:
                // ask once more before writing to PostgreSQL, where a copy
                // would carry another clock's createdAt while other instances
                // go on writing to Redis. The script is idempotent by id.
                outcome = self.redis.save(&new, true, c).await;
            }
            if let Ok(SaveOutcome::Cold) = outcome {
                if let Some(found) = self.known_key(&new).await {
                    // Redis answered; this request ends here.
                    self.breaker.record(route, true);
                    return same_or_conflict(&new, found);
                }
                outcome = self.redis.save(&new, false, c).await;
            }
            match outcome {
                Ok(SaveOutcome::Saved(m)) => {
                    self.breaker.record(route, true);
                    self.metrics.save();
                    return Ok(m);
                }
                Ok(SaveOutcome::Cold) => {
                    self.breaker.record(route, true);
                    return Err(StoreError::Internal("save script answered cold twice".into()));
                }
                Ok(SaveOutcome::BacklogFull) => {
                    // Not a Redis fault, and no failover either: the backlog
                    // means PostgreSQL is down or behind, so fail fast.
                    self.breaker.record(route, true);
                    self.backpressure.refused();
                    return Err(StoreError::UNAVAILABLE);
                }
                Ok(SaveOutcome::Duplicate(id, cached)) => {
                    self.breaker.record(route, true);
                    let original = match cached {
                        Some(m) => Some(m),
                        // The original is stored either way: a retry finds it.
                        None => self.pg.by_ids(&[id]).await.map_err(|_| StoreError::UNAVAILABLE)?.into_iter().next(),
                    };
                    let original =
                        original.ok_or_else(|| StoreError::Internal(format!("idempotent original {id} not found")))?;
                    return same_or_conflict(&new, original);
                }
                Err(fault) => {
                    // Fall back for this request too: the id was fixed
                    // before the call, so if Redis did apply it (ambiguous
                    // timeout) both copies are the same message and the
                    // idempotent insert keeps one.
                    tracing::warn!(%fault, "redis save failed; writing to postgres");
                    self.breaker.record(route, false);
                    maybe_in_redis = fault.maybe_applied();
                }
            }
        }
        let _gate = self.reconcile.failover_gate().await;
        self.save_failover(new, maybe_in_redis).await
    }

    /// A keyed save on a cold thread: PostgreSQL may know the key (its
    /// unique index keeps every key for good). Remembered in Redis again.
    async fn known_key(&self, new: &NewMessage) -> Option<Message> {
        let key = new.client_message_id.as_ref()?;
        match self.pg.by_client_id(&new.thread_id, key.as_str()).await {
            Ok(found) => {
                if let Some(m) = &found {
                    let _ = self
                        .redis
                        .remember_key(&new.thread_id, key.as_str(), &m.id, self.config.idempotency_ttl_s)
                        .await;
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

    /// Writes to PostgreSQL; the caller holds the failover gate.
    async fn save_failover(&self, new: NewMessage, maybe_in_redis: bool) -> Result<Message, StoreError> {
        match self.pg.save(&new).await {
            Ok(FailoverOutcome::Saved(m)) => {
                self.metrics.failover_write();
                self.metrics.save();
                self.events.publish_local(&m);
                Ok(m)
            }
            Ok(FailoverOutcome::Existing(m)) => same_or_conflict(&new, m),
            Err(fault) => {
                tracing::error!(%fault, "failover save failed: neither tier can take the write");
                let maybe_stored = maybe_in_redis || matches!(fault, PgFault::CommitUnknown(_));
                Err(StoreError::Unavailable { maybe_stored })
            }
        }
    }
}

fn same_or_conflict(new: &NewMessage, original: Message) -> Result<Message, StoreError> {
    if new.same_payload(&original) {
        Ok(original)
    } else {
        Err(StoreError::IdempotencyKeyReused)
    }
}
