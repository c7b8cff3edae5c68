//! Tier 3: PostgreSQL, the system of record. One short instrumented
//! function per query, SQL inline. Queries use `query_typed` (parameter
//! types given, no separate prepare round trip).

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use bb8_postgres::{bb8, tokio_postgres, PostgresConnectionManager};
use time::OffsetDateTime;
use tokio_postgres::{error::SqlState, NoTls, Row};
use uuid::Uuid;

use crate::domain::{Message, MessageId, OrderKey, Role, Timestamp};
use crate::metrics::{Metrics, Tier};

mod access;
mod changes;
mod reads;
mod writes;

pub use changes::EditResult;

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// Why a PostgreSQL call failed.
#[derive(Debug, thiserror::Error)]
pub enum PgFault {
    /// Down, unreachable, timed out or shutting down: retry later.
    #[error("postgres unavailable: {0}")]
    Unavailable(String),
    /// The data itself was refused (bad row): retrying the same row fails again.
    #[error("postgres rejected the data: {0}")]
    Rejected(String),
    /// `COMMIT` was sent but its answer never came (connection cut, timeout):
    /// the transaction may or may not have committed.
    #[error("postgres commit outcome unknown: {0}")]
    CommitUnknown(String),
}

impl From<tokio_postgres::Error> for PgFault {
    fn from(e: tokio_postgres::Error) -> Self {
        let data_error = e.code().map(|c| {
            let class = &c.code()[..2];
            class == "22" || class == "23" || class == "54" || *c == SqlState::INVALID_TEXT_REPRESENTATION
        });
        if data_error == Some(true) {
            PgFault::Rejected(e.to_string())
        } else {
            PgFault::Unavailable(e.to_string())
        }
    }
}

/// Result of a failover save.
pub enum FailoverOutcome {
    /// Stored by this call.
    Saved(Message),
    /// Already stored (same idempotency key, or same id after an ambiguous
    /// Redis timeout): the original.
    Existing(Message),
}

/// Handle to the PostgreSQL tier. Cheap to clone.
#[derive(Clone)]
pub struct PgTier {
    pool: bb8::Pool<PostgresConnectionManager<NoTls>>,
    timeout: Duration,
    metrics: Metrics,
    /// Whether the last call found PostgreSQL unavailable (set by every
    /// call, so the persister's retries keep it current during an outage).
    down: Arc<AtomicBool>,
}

const COLUMNS: &str =
    "id, thread_id, role, content, metadata, client_message_id, created_at, author_id, change_seq, version, edited_at, \
     deleted_at";

fn row_to_message(r: &Row) -> Result<Message, PgFault> {
    let role: String = r.try_get(2).map_err(PgFault::from)?;
    let created: OffsetDateTime = r.try_get(6).map_err(PgFault::from)?;
    Ok(Message {
        id: MessageId::from_uuid(r.try_get(0).map_err(PgFault::from)?),
        thread_id: r.try_get(1).map_err(PgFault::from)?,
        role: Role::from_db(&role).ok_or_else(|| PgFault::Rejected(format!("unknown role {role}")))?,
        content: r.try_get(3).map_err(PgFault::from)?,
        metadata: r.try_get(4).map_err(PgFault::from)?,
        client_message_id: r.try_get(5).map_err(PgFault::from)?,
        author_id: r.try_get(7).map_err(PgFault::from)?,
        created_at: Timestamp::from_datetime(created),
        change_seq: r.try_get(8).map_err(PgFault::from)?,
        version: r.try_get(9).map_err(PgFault::from)?,
        edited_at: r.try_get::<_, Option<OffsetDateTime>>(10).map_err(PgFault::from)?.map(Timestamp::from_datetime),
        deleted_at: r.try_get::<_, Option<OffsetDateTime>>(11).map_err(PgFault::from)?.map(Timestamp::from_datetime),
        persisted: true,
    })
}

fn rows(rs: Vec<Row>) -> Result<Vec<Message>, PgFault> {
    rs.iter().map(row_to_message).collect()
}

/// Bounds for `(created_at, id)` row comparisons when a cursor is absent.
fn bound(k: Option<OrderKey>, high: bool) -> (OffsetDateTime, Uuid) {
    match k {
        Some(k) => (k.created_at.to_datetime(), k.id.as_uuid()),
        None if high => (OffsetDateTime::UNIX_EPOCH + time::Duration::days(365 * 8000), Uuid::max()),
        None => (OffsetDateTime::UNIX_EPOCH - time::Duration::days(1), Uuid::nil()),
    }
}

impl PgTier {
    /// Builds the pool without connecting (PostgreSQL may be down at start).
    pub fn new(url: &str, pool_size: u32, timeout: Duration, metrics: Metrics) -> anyhow::Result<Self> {
        let mut config: tokio_postgres::Config = url.parse()?;
        // Acknowledged means on disk, whatever the server default says.
        config.options("-c synchronous_commit=on");
        config.connect_timeout(timeout);
        let manager = PostgresConnectionManager::new(config, NoTls);
        let pool = bb8::Pool::builder()
            .max_size(pool_size)
            .connection_timeout(timeout)
            .test_on_check_out(false)
            .build_unchecked(manager);
        Ok(Self { pool, timeout, metrics, down: Arc::default() })
    }

    /// Applies the SQL files in `migrations/` (idempotent).
    pub async fn migrate(url: &str) -> anyhow::Result<()> {
        let (mut client, conn) = tokio_postgres::connect(url, NoTls).await?;
        let driver = tokio::spawn(conn);
        // Instances starting together must not race to create the schema.
        client.simple_query("SELECT pg_advisory_lock(7261535921)").await?;
        let report = embedded::migrations::runner().run_async(&mut client).await?;
        for m in report.applied_migrations() {
            tracing::info!(migration = %m, "applied migration");
        }
        drop(client);
        let _ = driver.await;
        Ok(())
    }

    /// Runs the operation `make` builds on a pooled connection, under the
    /// call timeout, recorded.
    ///
    /// A connection PostgreSQL closed while it sat in the pool (a restart,
    /// `pg_ctl stop -m fast` or `-m immediate`) is retired at checkout, and
    /// one found closed when the operation fails is retired and a second
    /// operation from `make` runs on a fresh connection: without this, every stale connection in the pool
    /// failed one caller after PostgreSQL came back, for up to a minute.
    /// A second run is safe for reads and idempotent writes (by id, or `ON
    /// CONFLICT`); an operation that is not (a membership change, a
    /// failover save whose COMMIT was sent) refuses its second run itself.
    async fn with_client<T, M, F>(&self, op: &'static str, make: M) -> Result<T, PgFault>
    where
        M: Fn() -> F,
        F: AsyncFnOnce(&mut tokio_postgres::Client) -> Result<T, PgFault>,
    {
        let started = Instant::now();
        let result = tokio::time::timeout(self.timeout, async {
            let mut conn = self.live_connection().await?;
            match make()(&mut conn).await {
                Err(PgFault::Unavailable(e)) if conn.is_closed() => {
                    tracing::debug!(op, error = %e, "pooled PostgreSQL connection was closed; once more on a fresh one");
                    drop(conn); // broken: the pool discards it
                    make()(&mut *self.live_connection().await?).await
                }
                other => other,
            }
        })
        .await
        .unwrap_or_else(|_| Err(PgFault::Unavailable("timed out".into())));
        self.metrics.tier_call(Tier::Postgres, op, started.elapsed(), result.is_ok());
        let unavailable = matches!(result, Err(PgFault::Unavailable(_) | PgFault::CommitUnknown(_)));
        self.down.store(unavailable, Ordering::Relaxed);
        result
    }

    /// Whether the last call found PostgreSQL unavailable.
    pub fn known_down(&self) -> bool {
        self.down.load(Ordering::Relaxed)
    }

    /// A pooled connection whose driver has not seen it closed. Closed ones
    /// are dropped, which makes the pool discard them (bb8 asks
    /// `is_closed` when a connection comes back) and open new ones.
    async fn live_connection(&self) -> Result<bb8::PooledConnection<'_, PostgresConnectionManager<NoTls>>, PgFault> {
        loop {
            let conn = self.pool.get().await.map_err(|e| PgFault::Unavailable(e.to_string()))?;
            if !conn.is_closed() {
                return Ok(conn);
            }
        }
    }

    /// `SELECT 1` (readiness).
    pub async fn ping(&self) -> Result<(), PgFault> {
        self.with_client("ping", || {
            async |c| {
                c.simple_query("SELECT 1").await?;
                Ok(())
            }
        })
        .await
    }
}
