//! Tier 1: Redis. Connection handling, per-call timeouts and fault
//! classification live here; the key layout is in [`keys`], the byte
//! formats in [`super::wire`], script calls in `script`, saves and reads in [`messages`], thread-state upkeep
//! in [`maintenance`], the persistence Stream in [`stream`].
//!
//! Every call goes through [`RedisTier::call`], which bounds it with the
//! configured timeout (default 100 ms) so a paused or blackholed Redis turns
//! into a fast [`RedisFault`] the circuit breaker can count, never a hang.

mod acl;
pub mod changes;
pub mod keys;
pub mod maintenance;
pub mod messages;
mod script;
pub mod stream;

use std::{
    future::Future,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use bb8_redis::{bb8, redis, RedisConnectionManager};
use redis::aio::MultiplexedConnection;

use crate::metrics::{Metrics, Tier};

/// Why a Redis call failed. All of them count against the breaker.
#[derive(Debug, thiserror::Error)]
pub enum RedisFault {
    /// No answer within the timeout.
    #[error("redis call timed out")]
    Timeout,
    /// Connection reset or dropped (a command may have been sent).
    #[error("redis connection failed: {0}")]
    Connection(String),
    /// No connection could be made: nothing was sent.
    #[error("redis unreachable: {0}")]
    Unreachable(String),
    /// Redis answered with an error (`OOM`, `MISCONF`, `LOADING`, ...).
    #[error("redis replied with an error: {0}")]
    Reply(String),
    /// Redis answered something this code does not understand.
    #[error("unexpected redis reply: {0}")]
    Protocol(String),
}

impl RedisFault {
    fn from_error(e: redis::RedisError) -> Self {
        if e.is_timeout() {
            RedisFault::Timeout
        } else if e.is_connection_refusal() {
            RedisFault::Unreachable(e.to_string())
        } else if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() {
            RedisFault::Connection(e.to_string())
        } else {
            RedisFault::Reply(e.to_string())
        }
    }

    /// Whether a write that failed this way may still have been applied:
    /// the command may have reached Redis before the timeout or the cut.
    /// An error reply (`OOM`, ...) means the script did not run.
    pub fn maybe_applied(&self) -> bool {
        matches!(self, RedisFault::Timeout | RedisFault::Connection(_))
    }

    /// Whether the reply says the consumer group or stream is gone (Redis
    /// restarted empty): the persister recreates it.
    pub fn is_nogroup(&self) -> bool {
        matches!(self, RedisFault::Reply(m) if m.contains("NOGROUP"))
    }
}

/// A pooled multiplexed connection that remembers it failed, so the pool
/// drops it instead of handing a dead socket out again.
pub struct TrackedConnection {
    conn: MultiplexedConnection,
    broken: Arc<AtomicBool>,
}

/// bb8 manager around bb8-redis's, adding the broken flag. Checking the flag
/// on checkout costs nothing, unlike the PING bb8-redis would send.
#[derive(Clone)]
pub struct Manager(RedisConnectionManager);

impl bb8::ManageConnection for Manager {
    type Connection = TrackedConnection;
    type Error = redis::RedisError;

    async fn connect(&self) -> Result<Self::Connection, Self::Error> {
        let conn = self.0.connect().await?;
        Ok(TrackedConnection { conn, broken: Arc::new(AtomicBool::new(false)) })
    }

    async fn is_valid(&self, conn: &mut Self::Connection) -> Result<(), Self::Error> {
        if conn.broken.load(Ordering::Relaxed) {
            return Err(redis::RedisError::from((redis::ErrorKind::Io, "connection marked broken")));
        }
        Ok(())
    }

    fn has_broken(&self, conn: &mut Self::Connection) -> bool {
        conn.broken.load(Ordering::Relaxed)
    }
}

/// Handle to the Redis tier. Cheap to clone.
#[derive(Clone)]
pub struct RedisTier {
    pool: bb8::Pool<Manager>,
    client: redis::Client,
    timeout: Duration,
    metrics: Metrics,
}

impl RedisTier {
    /// Builds the pool without connecting: the service must start (and fail
    /// over) even when Redis is down.
    pub fn new(url: &str, pool_size: u32, timeout: Duration, metrics: Metrics) -> anyhow::Result<Self> {
        let manager = Manager(RedisConnectionManager::new(url)?);
        let pool = bb8::Pool::builder()
            .max_size(pool_size)
            .min_idle(Some(1))
            .connection_timeout(timeout.max(Duration::from_millis(250)))
            .retry_connection(false)
            .build_unchecked(manager);
        let client = redis::Client::open(url)?;
        Ok(Self { pool, client, timeout, metrics })
    }

    /// The per-call timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// A fresh dedicated connection (for blocking reads and pub/sub, which
    /// must not stall the shared multiplexed connections).
    pub fn client(&self) -> &redis::Client {
        &self.client
    }

    /// Runs one Redis operation on a pooled connection with the timeout,
    /// recording latency and marking the connection broken on failure.
    pub async fn call<T, F, Fut>(&self, op: &'static str, f: F) -> Result<T, RedisFault>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let started = Instant::now();
        let mut used: Option<Arc<AtomicBool>> = None;
        let result = tokio::time::timeout(self.timeout, async {
            let pooled = self.pool.get().await.map_err(|e| match e {
                bb8::RunError::User(e) => RedisFault::from_error(e),
                bb8::RunError::TimedOut => RedisFault::Timeout,
            })?;
            let conn = pooled.conn.clone();
            used = Some(pooled.broken.clone());
            drop(pooled);
            f(conn).await.map_err(RedisFault::from_error)
        })
        .await
        .unwrap_or(Err(RedisFault::Timeout));
        self.metrics.tier_call(Tier::Redis, op, started.elapsed(), result.is_ok());
        if let Err(fault) = &result {
            tracing::debug!(op, %fault, "redis call failed");
            // A connection that timed out or broke may be dead (paused or
            // killed server): the pool must open a new one, not reuse it.
            if !matches!(fault, RedisFault::Reply(_)) {
                if let Some(flag) = used {
                    flag.store(true, Ordering::Relaxed);
                }
            }
        }
        result
    }

    /// `CONFIG GET` one parameter (start-up checks).
    pub async fn config_get(&self, name: &'static str) -> Result<Option<String>, RedisFault> {
        let pairs: Vec<String> =
            self.call("config_get", |mut c| async move {
                redis::cmd("CONFIG").arg("GET").arg(name).query_async(&mut c).await
            })
            .await?;
        Ok(pairs.get(1).cloned())
    }

    /// `PING` (readiness and breaker probes).
    pub async fn ping(&self) -> Result<(), RedisFault> {
        self.call("ping", |mut c| async move { redis::cmd("PING").query_async::<String>(&mut c).await }).await?;
        Ok(())
    }
}
