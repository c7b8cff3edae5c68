//! `MessageStore`: the single storage facade resolvers use. It offers
//! intentions (save, page, access, readiness, a persister); the tiers stay
//! inside.
//!
//! - **Write path** (`write.rs`). A save is one atomic Redis script
//!   (idempotency check, createdAt from Redis `TIME`, body, thread index,
//!   persistence Stream, pub/sub wake-up), acknowledged after that one
//!   round trip; durability in PostgreSQL follows through `persistence/`.
//! - **Failover** (`failover/`). When the breaker is open, or a Redis call
//!   fails, the save is written straight to PostgreSQL in one transaction
//!   under the thread's row lock, acknowledged after COMMIT, and announced
//!   to this instance's subscribers through [`Announce`]. If neither tier
//!   takes it: `STORAGE_UNAVAILABLE`, nothing stored.
//! - **Read path** (`read.rs`). Pages come from the Redis thread index when
//!   it is warm and covers the range; otherwise from PostgreSQL merged with
//!   the messages Redis still holds unpersisted (read first, so a message
//!   persisted in between is seen by one side or the other), and the index
//!   is re-primed. While Redis is out, PostgreSQL alone answers: unpersisted
//!   messages stranded in Redis are invisible until it returns (README,
//!   guarantees).
//!
//! Layers, each importing only downward: [`model`] types and [`wire`]
//! formats at the bottom; the tiers `redis/` and `postgres/` on them; the
//! facade and its concerns (`write`, `read`, `access`, `failover/`,
//! `persistence/`, `connect`) on top. Live delivery (`crate::live`) sits
//! above the store.

mod access;
mod change;
mod connect;
mod failover;
pub mod model;
mod persistence;
mod postgres;
mod read;
mod redis;
pub mod wire;
mod write;

pub use connect::{migrate, PubSubSource};
pub use failover::breaker::State as BreakerState;
pub use model::{Access, Order, PageQuery, StoreConfig};
pub use persistence::persister::{stats_loop as queue_stats_loop, PersistOutcome, Persister};
pub use read::Page;

use std::sync::Arc;

use crate::config::PersistSettings;
use crate::domain::{Message, Refusal};
use crate::metrics::Metrics;
use failover::{breaker::Breaker, reconcile::ReconcileState};
use persistence::backpressure::Backpressure;
use postgres::PgTier;
use redis::{keys, RedisTier};

/// How the store tells this instance's live subscribers what pub/sub
/// cannot or need not carry. Live delivery, above the store, implements
/// it; the store depends only on this.
pub trait Announce: Send + Sync {
    /// `m` was saved through PostgreSQL alone (failover writes cannot ride
    /// pub/sub).
    fn saved_without_redis(&self, m: &Message);
    /// `user` lost access to `thread`: end their subscriptions here at once
    /// (other instances hear it through pub/sub).
    fn revoked_here(&self, thread: &str, user: &str);
}

/// The pub/sub channels live events arrive on (`redis/keys.rs`).
pub struct EventChannels {
    /// Pattern matching every thread's channel.
    pub pattern: &'static str,
    /// A channel's name is this prefix and the thread id.
    pub prefix: &'static str,
}

/// Every thread's event channel.
pub const EVENT_CHANNELS: EventChannels = EventChannels { pattern: keys::EVENT_PATTERN, prefix: keys::EVENT_PREFIX };

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
    /// A change did not apply to the message as it is (nothing stored).
    #[error("change refused: {0:?}")]
    Refused(Refusal),
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
    announce: Arc<dyn Announce>,
    config: StoreConfig,
    metrics: Metrics,
    /// Whether PostgreSQL may hold failover writes Redis has not seen.
    reconcile: Arc<ReconcileState>,
    /// Whether the persistence backlog is at its bound.
    backpressure: Arc<Backpressure>,
}

impl MessageStore {
    /// Assembles the facade.
    pub fn new(
        redis: RedisTier,
        pg: PgTier,
        breaker: Arc<Breaker>,
        announce: Arc<dyn Announce>,
        config: StoreConfig,
        metrics: Metrics,
    ) -> Self {
        let backpressure = Arc::new(Backpressure::new(config.backlog_limit, metrics.clone()));
        Self { redis, pg, breaker, announce, config, metrics, reconcile: Arc::default(), backpressure }
    }

    /// Whether each tier answers a ping now, and whether saves are refused
    /// for the persistence backlog (`/readyz`).
    pub async fn readiness(&self) -> Readiness {
        let (redis, postgres) = tokio::join!(self.redis.ping(), self.pg.ping());
        Readiness { redis: redis.is_ok(), postgres: postgres.is_ok(), backpressure: self.backpressure.is_active() }
    }

    /// A persister over this store's tiers: one runs per instance; tests
    /// drive one by hand. `metrics` receives its numbers.
    pub fn persister(&self, settings: PersistSettings, consumer: String, metrics: Metrics) -> Persister {
        Persister::new(self.redis.clone(), self.pg.clone(), settings, consumer, self.config.cache_ttl_s, metrics)
    }

    /// The per-instance metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The breaker's state (storage metrics, tests): read-only, as only
    /// the gate (`failover/gate.rs`) reports to it.
    pub fn breaker_state(&self) -> BreakerState {
        self.breaker.state()
    }
}
