//! Writes: the persister's batch insert, the failover save, and the
//! bookkeeping of failover writes Redis has yet to see.

use std::sync::atomic::{AtomicBool, Ordering};

use bb8_postgres::tokio_postgres;
use time::OffsetDateTime;
use tokio_postgres::types::Type;
use uuid::Uuid;

use super::{row_to_message, FailoverOutcome, PgFault, PgTier, COLUMNS};
use crate::domain::{Message, MessageId, NewMessage, Timestamp};

/// One thread's failover writes that Redis has not seen.
#[derive(Debug, Clone)]
pub struct PendingReconcile {
    /// The thread.
    pub thread: String,
    /// The newest `createdAt` among them (Redis's clock must pass it).
    pub newest: Timestamp,
    /// Their highest change sequence (Redis's must pass it too).
    pub newest_seq: i64,
    /// Their idempotency keys, with the ids they name.
    pub keys: Vec<(String, MessageId)>,
    /// All their ids.
    pub ids: Vec<Uuid>,
}

impl PgTier {
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
        let authors: Vec<Option<&str>> = batch.iter().map(|m| m.author_id.as_deref()).collect();
        let seqs: Vec<i64> = batch.iter().map(|m| m.change_seq).collect();
        self.with_client("insert_batch", || async |c| {
            let n = c
                .query_typed(
                    "INSERT INTO messages (thread_id, id, role, content, metadata, client_message_id, created_at, author_id, change_seq)
                     SELECT * FROM unnest($1::text[], $2::uuid[], $3::text[], $4::text[], $5::jsonb[], $6::text[], $7::timestamptz[], $8::text[], $9::bigint[])
                     ON CONFLICT DO NOTHING RETURNING id",
                    &[
                        (&threads, Type::TEXT_ARRAY),
                        (&ids, Type::UUID_ARRAY),
                        (&roles, Type::TEXT_ARRAY),
                        (&contents, Type::TEXT_ARRAY),
                        (&metas, Type::JSONB_ARRAY),
                        (&keys, Type::TEXT_ARRAY),
                        (&created, Type::TIMESTAMPTZ_ARRAY),
                        (&authors, Type::TEXT_ARRAY),
                        (&seqs, Type::INT8_ARRAY),
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
        // Set once COMMIT is on its way: a failure after that point (a cut
        // connection, the call timeout) leaves the outcome unknown.
        let commit_sent = AtomicBool::new(false);
        let result = self.with_client("failover_save", || async |c| {
            // The connection closed after COMMIT was sent: whether it
            // committed is unknown, and a second run would report a
            // committed save as an old one (unannounced). Say so instead.
            if commit_sent.load(Ordering::SeqCst) {
                return Err(PgFault::CommitUnknown("connection closed after COMMIT was sent".into()));
            }
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
                        "WITH at AS (SELECT GREATEST(
                             date_trunc('microseconds', clock_timestamp()),
                             (SELECT max(created_at) FROM messages WHERE thread_id = $1) + interval '1 microsecond') AS t)
                         INSERT INTO messages (thread_id, id, role, content, metadata, client_message_id, author_id, created_at, change_seq, needs_reconcile)
                         SELECT $1, $2, $3, $4, $5, $6, $7, at.t, GREATEST(
                             (extract(epoch FROM at.t) * 1000000)::bigint,
                             (SELECT max(change_seq) FROM messages WHERE thread_id = $1) + 1), true
                         FROM at
                         RETURNING {COLUMNS}"
                    ),
                    &[
                        (&thread, Type::TEXT),
                        (&id, Type::UUID),
                        (&m.role.as_str(), Type::TEXT),
                        (&m.content.as_str(), Type::TEXT),
                        (&meta, Type::JSONB),
                        (&key, Type::TEXT),
                        (&m.author_id.as_deref(), Type::TEXT),
                    ],
                )
                .await?;
            let msg = inserted.first().map(row_to_message).transpose()?;
            commit_sent.store(true, Ordering::SeqCst);
            tx.commit().await?;
            msg.map(FailoverOutcome::Saved).ok_or_else(|| PgFault::Unavailable("insert returned nothing".into()))
        })
        .await;
        match result {
            Err(PgFault::Unavailable(e)) if commit_sent.load(Ordering::SeqCst) => Err(PgFault::CommitUnknown(e)),
            other => other,
        }
    }

    /// Threads with failover writes Redis has not seen (at most 1000).
    pub async fn pending_reconcile(&self) -> Result<Vec<PendingReconcile>, PgFault> {
        self.with_client("pending_reconcile", || {
            async |c| {
                let rs = c
                    .query_typed(
                        "SELECT thread_id, max(created_at), array_agg(id), array_agg(client_message_id), max(change_seq)
                     FROM messages WHERE needs_reconcile GROUP BY thread_id LIMIT 1000",
                        &[],
                    )
                    .await?;
                rs.iter()
                    .map(|r| {
                        let ids: Vec<Uuid> = r.try_get(2)?;
                        let keys: Vec<Option<String>> = r.try_get(3)?;
                        let idem = ids
                            .iter()
                            .zip(keys)
                            .filter_map(|(id, k)| k.map(|k| (k, MessageId::from_uuid(*id))))
                            .collect();
                        Ok(PendingReconcile {
                            thread: r.try_get(0)?,
                            newest: Timestamp::from_datetime(r.try_get(1)?),
                            newest_seq: r.try_get(4)?,
                            keys: idem,
                            ids,
                        })
                    })
                    .collect::<Result<Vec<_>, tokio_postgres::Error>>()
                    .map_err(PgFault::from)
            }
        })
        .await
    }

    /// Clears the reconcile flag once Redis reflects those rows.
    pub async fn mark_reconciled(&self, thread: &str, ids: &[Uuid]) -> Result<(), PgFault> {
        self.with_client("mark_reconciled", || {
            async |c| {
                c.query_typed(
                    "UPDATE messages SET needs_reconcile = false WHERE thread_id = $1 AND id = ANY($2)",
                    &[(&thread, Type::TEXT), (&ids, Type::UUID_ARRAY)],
                )
                .await?;
                Ok(())
            }
        })
        .await
    }
}
