//! Changes of stored messages (SPEC §7): the persister applies them by
//! change sequence; while the breaker is open an edit is one transaction
//! here under the thread's row lock.

use bb8_postgres::tokio_postgres;
use time::OffsetDateTime;
use tokio_postgres::types::Type;
use uuid::Uuid;

use super::{row_to_message, PgFault, PgTier, COLUMNS};
use crate::domain::{ChangeRequest, EditOutcome, Message, MessageVersion, Refusal, Timestamp};
use crate::store::model::Change;

/// What a failover edit came to.
#[derive(Debug)]
pub enum EditResult {
    /// Applied (committed): the message now.
    Edited(Message),
    /// Already applied, or refused: nothing written.
    Unchanged(Result<Message, Refusal>),
}

impl PgTier {
    /// Applies changes of stored messages by change sequence, never blindly:
    /// a row moves only to a higher `change_seq`, so batches committing in
    /// any order end at the last change. The versions they replaced go to
    /// history once each, in the same statement. A change whose message is
    /// not in PostgreSQL yet (its creation is in a batch still on its way)
    /// inserts the row without its idempotency key: the key could belong to
    /// another row already (see README, idempotency).
    #[tracing::instrument(level = "debug", skip_all, fields(rows = changes.len()))]
    pub async fn apply_changes(&self, changes: &[Change]) -> Result<(), PgFault> {
        // One row per message: the latest change wins within the batch too
        // (ON CONFLICT may not touch a row twice in one statement).
        let mut latest: Vec<&Message> = Vec::with_capacity(changes.len());
        for c in changes {
            match latest.iter_mut().find(|m| m.id == c.message.id) {
                Some(m) if m.change_seq < c.message.change_seq => *m = &c.message,
                Some(_) => {}
                None => latest.push(&c.message),
            }
        }
        let threads: Vec<&str> = latest.iter().map(|m| m.thread_id.as_str()).collect();
        let ids: Vec<Uuid> = latest.iter().map(|m| m.id.as_uuid()).collect();
        let roles: Vec<&str> = latest.iter().map(|m| m.role.as_str()).collect();
        let contents: Vec<&str> = latest.iter().map(|m| m.content.as_str()).collect();
        let metas: Vec<Option<&serde_json::Value>> = latest.iter().map(|m| m.metadata.as_ref()).collect();
        let created: Vec<OffsetDateTime> = latest.iter().map(|m| m.created_at.to_datetime()).collect();
        let authors: Vec<Option<&str>> = latest.iter().map(|m| m.author_id.as_deref()).collect();
        let seqs: Vec<i64> = latest.iter().map(|m| m.change_seq).collect();
        let versions: Vec<i32> = latest.iter().map(|m| m.version).collect();
        let edited: Vec<Option<OffsetDateTime>> =
            latest.iter().map(|m| m.edited_at.map(Timestamp::to_datetime)).collect();
        let deleted: Vec<Option<OffsetDateTime>> =
            latest.iter().map(|m| m.deleted_at.map(Timestamp::to_datetime)).collect();
        let old: Vec<(&Message, &MessageVersion)> =
            changes.iter().filter_map(|c| c.replaced.as_ref().map(|r| (&c.message, r))).collect();
        let h_threads: Vec<&str> = old.iter().map(|(m, _)| m.thread_id.as_str()).collect();
        let h_ids: Vec<Uuid> = old.iter().map(|(m, _)| m.id.as_uuid()).collect();
        let h_versions: Vec<i32> = old.iter().map(|(_, v)| v.version).collect();
        let h_contents: Vec<&str> = old.iter().map(|(_, v)| v.content.as_str()).collect();
        let h_metas: Vec<Option<&serde_json::Value>> = old.iter().map(|(_, v)| v.metadata.as_ref()).collect();
        let h_written: Vec<OffsetDateTime> = old.iter().map(|(_, v)| v.written_at.to_datetime()).collect();
        self.with_client("apply_changes", || async |c| {
            c.query_typed(
                "WITH history AS (
                     INSERT INTO message_versions (thread_id, message_id, version, content, metadata, written_at)
                     SELECT * FROM unnest($11::text[], $12::uuid[], $13::int4[], $14::text[], $15::jsonb[], $16::timestamptz[])
                     ON CONFLICT DO NOTHING)
                 INSERT INTO messages (thread_id, id, role, content, metadata, created_at, author_id, change_seq, version, edited_at, deleted_at)
                 SELECT * FROM unnest($1::text[], $2::uuid[], $3::text[], $4::text[], $5::jsonb[], $6::timestamptz[], $7::text[], $8::int8[], $9::int4[], $10::timestamptz[], $17::timestamptz[])
                 ON CONFLICT (thread_id, id) DO UPDATE SET
                     content = EXCLUDED.content, metadata = EXCLUDED.metadata, version = EXCLUDED.version,
                     edited_at = EXCLUDED.edited_at, deleted_at = EXCLUDED.deleted_at, change_seq = EXCLUDED.change_seq
                 WHERE messages.change_seq < EXCLUDED.change_seq",
                &[
                    (&threads, Type::TEXT_ARRAY),
                    (&ids, Type::UUID_ARRAY),
                    (&roles, Type::TEXT_ARRAY),
                    (&contents, Type::TEXT_ARRAY),
                    (&metas, Type::JSONB_ARRAY),
                    (&created, Type::TIMESTAMPTZ_ARRAY),
                    (&authors, Type::TEXT_ARRAY),
                    (&seqs, Type::INT8_ARRAY),
                    (&versions, Type::INT4_ARRAY),
                    (&edited, Type::TIMESTAMPTZ_ARRAY),
                    (&h_threads, Type::TEXT_ARRAY),
                    (&h_ids, Type::UUID_ARRAY),
                    (&h_versions, Type::INT4_ARRAY),
                    (&h_contents, Type::TEXT_ARRAY),
                    (&h_metas, Type::JSONB_ARRAY),
                    (&h_written, Type::TIMESTAMPTZ_ARRAY),
                    (&deleted, Type::TIMESTAMPTZ_ARRAY),
                ],
            )
            .await?;
            Ok(())
        })
        .await
    }

    /// Failover change: one transaction that takes the thread's row lock
    /// (for the change sequence) and the message's, decides the change on
    /// PostgreSQL's copy, keeps the replaced version in history and flags
    /// the row for reconcile (Redis's cached copy is stale now).
    /// `thread`: the message's thread, as the caller found it.
    #[tracing::instrument(level = "debug", skip_all, fields(thread_id = %thread))]
    pub async fn change(&self, thread: &str, req: &impl ChangeRequest) -> Result<EditResult, PgFault> {
        let id = req.id().as_uuid();
        // A second run after COMMIT was sent could apply the edit twice.
        let commit_sent = std::sync::atomic::AtomicBool::new(false);
        let result = self
            .with_client("failover_change", || {
                async |c| {
                    if commit_sent.load(std::sync::atomic::Ordering::SeqCst) {
                        return Err(PgFault::CommitUnknown("connection closed after COMMIT was sent".into()));
                    }
                    let tx = c.transaction().await?;
                    tx.query_typed(
                        "INSERT INTO threads (id) VALUES ($1) ON CONFLICT (id) DO UPDATE SET id = EXCLUDED.id",
                        &[(&thread, Type::TEXT)],
                    )
                    .await?;
                    let rows = tx
                        .query_typed(
                            &format!("SELECT {COLUMNS} FROM messages WHERE thread_id = $1 AND id = $2 FOR UPDATE"),
                            &[(&thread, Type::TEXT), (&id, Type::UUID)],
                        )
                        .await?;
                    let Some(current) = rows.first().map(row_to_message).transpose()? else {
                        tx.commit().await?;
                        return Ok(EditResult::Unchanged(Err(Refusal::NotFound)));
                    };
                    let (next, old) = match req.decide(&current) {
                        Ok(EditOutcome::Apply(next, old)) => (next, old),
                        Ok(EditOutcome::AlreadyApplied(m)) => return Ok(EditResult::Unchanged(Ok(m))),
                        Err(refusal) => return Ok(EditResult::Unchanged(Err(refusal))),
                    };
                    let written = old.written_at.to_datetime();
                    tx.query_typed(
                        "INSERT INTO message_versions (thread_id, message_id, version, content, metadata, written_at)
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
                        &[
                            (&thread, Type::TEXT),
                            (&id, Type::UUID),
                            (&old.version, Type::INT4),
                            (&old.content.as_str(), Type::TEXT),
                            (&old.metadata.as_ref(), Type::JSONB),
                            (&written, Type::TIMESTAMPTZ),
                        ],
                    )
                    .await?;
                    let edited = next.edited_at.map(Timestamp::to_datetime);
                    let deleted = next.deleted_at.map(Timestamp::to_datetime);
                    let updated = tx
                        .query_typed(
                            &format!(
                                "UPDATE messages SET content = $3, metadata = $4, version = $5, edited_at = $6, deleted_at = $7,
                                 needs_reconcile = true,
                                 change_seq = GREATEST(
                                     (extract(epoch FROM clock_timestamp()) * 1000000)::bigint,
                                     (SELECT max(change_seq) FROM messages WHERE thread_id = $1) + 1)
                             WHERE thread_id = $1 AND id = $2 RETURNING {COLUMNS}"
                            ),
                            &[
                                (&thread, Type::TEXT),
                                (&id, Type::UUID),
                                (&next.content.as_str(), Type::TEXT),
                                (&next.metadata.as_ref(), Type::JSONB),
                                (&next.version, Type::INT4),
                                (&edited, Type::TIMESTAMPTZ),
                                (&deleted, Type::TIMESTAMPTZ),
                            ],
                        )
                        .await?;
                    let m = updated.first().map(row_to_message).transpose()?;
                    commit_sent.store(true, std::sync::atomic::Ordering::SeqCst);
                    tx.commit().await?;
                    m.map(EditResult::Edited).ok_or_else(|| PgFault::Unavailable("update returned nothing".into()))
                }
            })
            .await;
        match result {
            Err(PgFault::Unavailable(e)) if commit_sent.load(std::sync::atomic::Ordering::SeqCst) => {
                Err(PgFault::CommitUnknown(e))
            }
            other => other,
        }
    }
}
