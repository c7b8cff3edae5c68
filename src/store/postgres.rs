//! Tier 3: PostgreSQL, the system of record. One short instrumented
//! function per query, SQL inline. Queries use `query_typed` (parameter
//! types given, no separate prepare round trip).

use std::time::{Duration, Instant};

use bb8_postgres::{bb8, tokio_postgres, PostgresConnectionManager};
use time::OffsetDateTime;
use tokio_postgres::{error::SqlState, types::Type, NoTls, Row};
use uuid::Uuid;

use crate::domain::{Message, MessageId, NewMessage, OrderKey, Role, ThreadId, Timestamp};
use crate::metrics::{Metrics, Tier};
use crate::store::{Order, PageQuery};

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
}

const COLUMNS: &str = "id, thread_id, role, content, metadata, client_message_id, created_at";

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
        created_at: Timestamp::from_datetime(created),
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
        Ok(Self { pool, timeout, metrics })
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

    async fn with_client<T, F>(&self, op: &'static str, f: F) -> Result<T, PgFault>
    where
        F: AsyncFnOnce(&mut tokio_postgres::Client) -> Result<T, PgFault>,
    {
        let started = Instant::now();
        let result = tokio::time::timeout(self.timeout, async {
            let mut conn = self.pool.get().await.map_err(|e| PgFault::Unavailable(e.to_string()))?;
            f(&mut conn).await
        })
        .await
        .unwrap_or_else(|_| Err(PgFault::Unavailable("timed out".into())));
        self.metrics.tier_call(Tier::Postgres, op, started.elapsed(), result.is_ok());
        result
    }

    /// `SELECT 1` (readiness).
    pub async fn ping(&self) -> Result<(), PgFault> {
        self.with_client("ping", async |c| {
            c.simple_query("SELECT 1").await?;
            Ok(())
        })
        .await
    }

    /// Persists a batch in ONE statement. Idempotent: rows already present
    /// (same id, or same idempotency key) are skipped. Returns the ids that
    /// were new.
    #[tracing::instrument(level = "debug", skip_all, fields(rows = batch.len()))]
    pub async fn insert_batch(&self, batch: &[Message]) -> Result<Vec<Uuid>, PgFault> {
        let threads: Vec<&str> = batch.iter().map(|m| m.thread_id.as_str()).collect();
        let ids: Vec<Uuid> = batch.iter().map(|m| m.id.as_uuid()).collect();
        let roles: Vec<&str> = batch.iter().map(|m| m.role.as_str()).collect();
        let contents: Vec<&str> = batch.iter().map(|m| m.content.as_str()).collect();
        let metas: Vec<Option<&serde_json::Value>> = batch.iter().map(|m| m.metadata.as_ref()).collect();
        let keys: Vec<Option<&str>> = batch.iter().map(|m| m.client_message_id.as_deref()).collect();
        let created: Vec<OffsetDateTime> = batch.iter().map(|m| m.created_at.to_datetime()).collect();
        self.with_client("insert_batch", async |c| {
            let n = c
                .query_typed(
                    "INSERT INTO messages (thread_id, id, role, content, metadata, client_message_id, created_at)
                     SELECT * FROM unnest($1::text[], $2::uuid[], $3::text[], $4::text[], $5::jsonb[], $6::text[], $7::timestamptz[])
                     ON CONFLICT DO NOTHING RETURNING id",
                    &[
                        (&threads, Type::TEXT_ARRAY),
                        (&ids, Type::UUID_ARRAY),
                        (&roles, Type::TEXT_ARRAY),
                        (&contents, Type::TEXT_ARRAY),
                        (&metas, Type::JSONB_ARRAY),
                        (&keys, Type::TEXT_ARRAY),
                        (&created, Type::TIMESTAMPTZ_ARRAY),
                    ],
                )
                .await?;
            n.iter().map(|r| r.try_get(0).map_err(PgFault::from)).collect()
        })
        .await
    }

    /// Failover write: one transaction that takes the thread's row lock,
    /// checks idempotency, assigns createdAt above the thread's newest and
    /// inserts. Acknowledged only after COMMIT.
    #[tracing::instrument(level = "debug", skip_all, fields(thread_id = %m.thread_id))]
    pub async fn save(&self, m: &NewMessage) -> Result<FailoverOutcome, PgFault> {
        let thread = m.thread_id.as_str();
        let id = m.id.as_uuid();
        let key = m.client_message_id.as_ref().map(|k| k.as_str());
        let meta = m.metadata.as_ref().map(|v| v.as_value());
        self.with_client("failover_save", async |c| {
            let tx = c.transaction().await?;
            tx.query_typed(
                "INSERT INTO threads (id) VALUES ($1) ON CONFLICT (id) DO UPDATE SET id = EXCLUDED.id",
                &[(&thread, Type::TEXT)],
            )
            .await?;
            let existing = tx
                .query_typed(
                    &format!(
                        "SELECT {COLUMNS} FROM messages WHERE thread_id = $1 AND (id = $2 OR client_message_id = $3) LIMIT 1"
                    ),
                    &[(&thread, Type::TEXT), (&id, Type::UUID), (&key, Type::TEXT)],
                )
                .await?;
            if let Some(r) = existing.first() {
                let original = row_to_message(r)?;
                tx.commit().await?;
                return Ok(FailoverOutcome::Existing(original));
            }
            let inserted = tx
                .query_typed(
                    &format!(
                        "INSERT INTO messages (thread_id, id, role, content, metadata, client_message_id, created_at, needs_reconcile)
                         SELECT $1, $2, $3, $4, $5, $6, GREATEST(
                             date_trunc('microseconds', clock_timestamp()),
                             (SELECT max(created_at) FROM messages WHERE thread_id = $1) + interval '1 microsecond'), true
                         RETURNING {COLUMNS}"
                    ),
                    &[
                        (&thread, Type::TEXT),
                        (&id, Type::UUID),
                        (&m.role.as_str(), Type::TEXT),
                        (&m.content.as_str(), Type::TEXT),
                        (&meta, Type::JSONB),
                        (&key, Type::TEXT),
                    ],
                )
                .await?;
            let msg = inserted.first().map(row_to_message).transpose()?;
            tx.commit().await?;
            msg.map(FailoverOutcome::Saved).ok_or_else(|| PgFault::Unavailable("insert returned nothing".into()))
        })
        .await
    }

    /// A page of a thread, in the requested order.
    #[tracing::instrument(level = "debug", skip_all, fields(thread_id = %thread))]
    pub async fn page(&self, thread: &ThreadId, q: &PageQuery) -> Result<Vec<Message>, PgFault> {
        let t = thread.as_str();
        self.with_client("page", async |c| {
            let rs = match *q {
                PageQuery::Offset { order, offset, limit } => {
                    let dir = if order == Order::Asc { "ASC" } else { "DESC" };
                    let (offset, limit) = (i64::from(offset), i64::from(limit));
                    c.query_typed(
                        &format!(
                            "SELECT {COLUMNS} FROM messages WHERE thread_id = $1
                             ORDER BY created_at {dir}, id {dir} OFFSET $2 LIMIT $3"
                        ),
                        &[(&t, Type::TEXT), (&offset, Type::INT8), (&limit, Type::INT8)],
                    )
                    .await?
                }
                PageQuery::Range { order, after, before, limit } => {
                    let dir = if order == Order::Asc { "ASC" } else { "DESC" };
                    let (lo_t, lo_id) = bound(after, false);
                    let (hi_t, hi_id) = bound(before, true);
                    let limit = i64::from(limit);
                    c.query_typed(
                        &format!(
                            "SELECT {COLUMNS} FROM messages WHERE thread_id = $1
                               AND (created_at, id) > ($2, $3) AND (created_at, id) < ($4, $5)
                             ORDER BY created_at {dir}, id {dir} LIMIT $6"
                        ),
                        &[
                            (&t, Type::TEXT),
                            (&lo_t, Type::TIMESTAMPTZ),
                            (&lo_id, Type::UUID),
                            (&hi_t, Type::TIMESTAMPTZ),
                            (&hi_id, Type::UUID),
                            (&limit, Type::INT8),
                        ],
                    )
                    .await?
                }
                PageQuery::Count => Vec::new(),
            };
            rows(rs)
        })
        .await
    }

    /// Number of messages of a thread, and the order keys of its newest
    /// `window` (newest first), for priming the Redis index.
    pub async fn head(&self, thread: &ThreadId, window: u32) -> Result<(u64, Vec<OrderKey>), PgFault> {
        let t = thread.as_str();
        let window = i64::from(window);
        self.with_client("head", async |c| {
            let count = c
                .query_typed("SELECT count(*) FROM messages WHERE thread_id = $1", &[(&t, Type::TEXT)])
                .await?
                .first()
                .map(|r| r.try_get::<_, i64>(0))
                .transpose()?
                .unwrap_or(0);
            let keys = c
                .query_typed(
                    "SELECT created_at, id FROM messages WHERE thread_id = $1 ORDER BY created_at DESC, id DESC LIMIT $2",
                    &[(&t, Type::TEXT), (&window, Type::INT8)],
                )
                .await?
                .iter()
                .map(|r| {
                    Ok(OrderKey {
                        created_at: Timestamp::from_datetime(r.try_get(0)?),
                        id: MessageId::from_uuid(r.try_get(1)?),
                    })
                })
                .collect::<Result<Vec<_>, tokio_postgres::Error>>()?;
            Ok((count.max(0) as u64, keys))
        })
        .await
    }

    /// Messages by id (any thread): the DataLoader's miss path.
    pub async fn by_ids(&self, ids: &[MessageId]) -> Result<Vec<Message>, PgFault> {
        let ids: Vec<Uuid> = ids.iter().map(MessageId::as_uuid).collect();
        self.with_client("by_ids", async |c| {
            rows(
                c.query_typed(
                    &format!("SELECT {COLUMNS} FROM messages WHERE id = ANY($1)"),
                    &[(&ids, Type::UUID_ARRAY)],
                )
                .await?,
            )
        })
        .await
    }

    /// The message saved with an idempotency key, if any.
    pub async fn by_client_id(&self, thread: &ThreadId, key: &str) -> Result<Option<Message>, PgFault> {
        let t = thread.as_str();
        self.with_client("by_client_id", async |c| {
            let rs = c
                .query_typed(
                    &format!("SELECT {COLUMNS} FROM messages WHERE thread_id = $1 AND client_message_id = $2"),
                    &[(&t, Type::TEXT), (&key, Type::TEXT)],
                )
                .await?;
            rs.first().map(row_to_message).transpose()
        })
        .await
    }

    /// Threads with failover writes Redis has not seen: (thread, newest
    /// createdAt, idempotency keys with ids, all ids).
    pub async fn pending_reconcile(
        &self,
    ) -> Result<Vec<(String, Timestamp, Vec<(String, MessageId)>, Vec<Uuid>)>, PgFault> {
        self.with_client("pending_reconcile", async |c| {
            let rs = c
                .query_typed(
                    "SELECT thread_id, max(created_at), array_agg(id), array_agg(client_message_id)
                     FROM messages WHERE needs_reconcile GROUP BY thread_id LIMIT 1000",
                    &[],
                )
                .await?;
            rs.iter()
                .map(|r| {
                    let ids: Vec<Uuid> = r.try_get(2)?;
                    let keys: Vec<Option<String>> = r.try_get(3)?;
                    let idem =
                        ids.iter().zip(keys).filter_map(|(id, k)| k.map(|k| (k, MessageId::from_uuid(*id)))).collect();
                    Ok((r.try_get(0)?, Timestamp::from_datetime(r.try_get(1)?), idem, ids))
                })
                .collect::<Result<Vec<_>, tokio_postgres::Error>>()
                .map_err(PgFault::from)
        })
        .await
    }

    /// Clears the reconcile flag once Redis reflects those rows.
    pub async fn mark_reconciled(&self, thread: &str, ids: &[Uuid]) -> Result<(), PgFault> {
        self.with_client("mark_reconciled", async |c| {
            c.query_typed(
                "UPDATE messages SET needs_reconcile = false WHERE thread_id = $1 AND id = ANY($2)",
                &[(&thread, Type::TEXT), (&ids, Type::UUID_ARRAY)],
            )
            .await?;
            Ok(())
        })
        .await
    }
}
