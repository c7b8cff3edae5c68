//! One batch: insert it in one statement (splitting around rows PostgreSQL
//! refuses), dead-letter what can never be stored, and acknowledge only what
//! PostgreSQL committed.

use std::collections::HashSet;

use uuid::Uuid;

use super::Persister;
use crate::domain::{Message, MessageId};
use crate::store::model::Change;
use crate::store::postgres::PgFault;
use crate::store::redis::{maintenance::Persisted, stream::Entry};
use crate::store::wire;

enum Insert {
    /// The batch is in PostgreSQL.
    Committed(Committed),
    /// PostgreSQL is unreachable (or a COMMIT's answer was lost): retry.
    Unavailable,
    /// PostgreSQL refused the batch: bisect to find the row.
    Rejected(String),
}

/// What a committed batch insert found.
#[derive(Default)]
struct Committed {
    /// Rows new to PostgreSQL.
    inserted: u64,
    /// Rows refused for another message's idempotency key, stored again
    /// without the key.
    orphans: Vec<Message>,
    /// PostgreSQL's copies of rows it already held with another createdAt
    /// (Redis ran a save after the service had given up on it and written
    /// the message to PostgreSQL itself).
    stale: Vec<Message>,
}

impl Persister {
    /// Inserts the batch; on success the entries are queued for ack. On a
    /// tier outage the entries come back for a retry.
    pub(super) async fn persist(&mut self, entries: Vec<Entry>) -> Result<u64, Vec<Entry>> {
        let mut rows = Vec::with_capacity(entries.len());
        let mut good = Vec::with_capacity(entries.len());
        for e in entries {
            match e.body.as_deref().map(wire::decode_entry) {
                // Deleted while pending (acked by another consumer): nothing to store.
                None => self.unacked.push(e.id),
                Some(Some(m)) => {
                    rows.push(m);
                    good.push(e);
                }
                Some(None) => self.dead_letter(&e, "unparseable entry").await,
            }
        }
        let mut inserted = 0;
        let mut stack = vec![(rows, good)];
        let mut retry = Vec::new();
        while let Some((rows, entries)) = stack.pop() {
            match self.insert(&rows, &entries).await {
                Insert::Committed(Committed { inserted: n, orphans, stale }) => {
                    inserted += n;
                    self.metrics.persisted_batch(rows.len());
                    for o in &orphans {
                        tracing::warn!(thread_id = %o.thread_id, message_id = %o.id, "idempotency key already used in postgres; message kept without it");
                    }
                    for s in &stale {
                        tracing::warn!(thread_id = %s.thread_id, message_id = %s.id, "redis applied a save postgres already held; postgres's copy wins");
                        let _ = self.redis.replace_cached(s, self.cache_ttl_s).await;
                    }
                    for (m, e) in rows.iter().zip(entries) {
                        let entry = e.body.unwrap_or_default();
                        self.unmarked.push(Persisted { thread: m.thread_id.clone(), id: m.id, entry });
                        self.unacked.push(e.id);
                    }
                }
                Insert::Unavailable => retry.extend(entries),
                Insert::Rejected(reason) if rows.len() == 1 => {
                    let e = &entries[0];
                    let n = self.failures.entry(e.id.clone()).or_insert(0);
                    *n += 1;
                    if *n >= self.settings.persist_max_attempts {
                        self.failures.remove(&e.id);
                        self.dead_letter(e, &reason).await;
                    } else {
                        retry.extend(entries);
                    }
                }
                Insert::Rejected(_) => {
                    // Split to isolate the bad row; the good halves commit.
                    let mid = rows.len() / 2;
                    let (r1, r2) = rows.split_at(mid);
                    let (e1, e2) = entries.split_at(mid);
                    stack.push((r2.to_vec(), e2.to_vec()));
                    stack.push((r1.to_vec(), e1.to_vec()));
                }
            }
        }
        if retry.is_empty() {
            Ok(inserted)
        } else {
            Err(retry)
        }
    }

    /// New messages are inserted (idempotently); changes of stored ones
    /// are applied by change sequence, in one statement with the versions
    /// they replaced (see `PgTier::apply_changes`).
    async fn insert(&self, rows: &[Message], entries: &[Entry]) -> Insert {
        let (mut creates, mut changes) = (Vec::with_capacity(rows.len()), Vec::new());
        for (m, e) in rows.iter().zip(entries) {
            match e.replaced.as_deref().map(wire::decode_version) {
                None if m.version == 1 => creates.push(m.clone()),
                replaced => changes.push(Change { message: m.clone(), replaced: replaced.flatten() }),
            }
        }
        if !changes.is_empty() {
            match self.pg.apply_changes(&changes).await {
                Ok(()) => {}
                Err(PgFault::Unavailable(e) | PgFault::CommitUnknown(e)) => {
                    tracing::warn!(error = %e, "postgres unavailable; batch kept for retry");
                    return Insert::Unavailable;
                }
                Err(PgFault::Rejected(e)) => return Insert::Rejected(e),
            }
        }
        self.insert_new(&creates).await
    }

    async fn insert_new(&self, rows: &[Message]) -> Insert {
        if rows.is_empty() {
            return Insert::Committed(Committed::default());
        }
        match self.pg.insert_batch(rows).await {
            Ok(new) => {
                let new: HashSet<Uuid> = new.into_iter().collect();
                let skipped: Vec<Uuid> = rows.iter().map(|m| m.id.as_uuid()).filter(|id| !new.contains(id)).collect();
                // A skipped row is either already stored (redelivery: fine,
                // unless PostgreSQL's copy has another createdAt: stale) or
                // refused for its idempotency key (an orphan).
                let skipped: Vec<MessageId> = skipped.into_iter().map(MessageId::from_uuid).collect();
                if skipped.is_empty() {
                    return Insert::Committed(Committed { inserted: new.len() as u64, ..Committed::default() });
                }
                let present = match self.pg.by_ids(&skipped).await {
                    Ok(p) => p,
                    // Unknown whether the skipped rows are stored: no ack.
                    Err(_) => return Insert::Unavailable,
                };
                let orphans: Vec<Message> = rows
                    .iter()
                    .filter(|m| skipped.contains(&m.id) && !present.iter().any(|p| p.id == m.id))
                    .cloned()
                    .collect();
                let stale: Vec<Message> = present
                    .into_iter()
                    .filter(|p| rows.iter().any(|m| m.id == p.id && m.created_at != p.created_at))
                    .collect();
                if !orphans.is_empty() {
                    // Acknowledged messages whose idempotency key PostgreSQL
                    // already holds for another message (the key had expired
                    // from Redis, or a failover write took it first). The
                    // client was told they are saved: keep them, without the key.
                    let keyless: Vec<Message> =
                        orphans.iter().cloned().map(|m| Message { client_message_id: None, ..m }).collect();
                    match self.pg.insert_batch(&keyless).await {
                        Ok(_) => {}
                        Err(PgFault::Unavailable(_) | PgFault::CommitUnknown(_)) => return Insert::Unavailable,
                        Err(PgFault::Rejected(e)) => return Insert::Rejected(e),
                    }
                }
                Insert::Committed(Committed { inserted: new.len() as u64, orphans, stale })
            }
            Err(PgFault::Unavailable(e) | PgFault::CommitUnknown(e)) => {
                tracing::warn!(error = %e, "postgres unavailable; batch kept for retry");
                Insert::Unavailable
            }
            Err(PgFault::Rejected(e)) => Insert::Rejected(e),
        }
    }

    pub(super) async fn dead_letter(&mut self, e: &Entry, reason: &str) {
        match self.redis.dead_letter(e, reason).await {
            Ok(()) => {
                self.metrics.dead_lettered();
                tracing::error!(entry = %e.id, reason, "entry moved to the dead-letter stream");
            }
            // Stays pending; a later claim or restart retries it.
            Err(fault) => tracing::warn!(%fault, entry = %e.id, "could not dead-letter entry"),
        }
    }

    /// Acknowledges committed entries and marks their bodies persisted.
    /// Returns false while Redis can't take it (retried next step).
    pub(super) async fn flush_acks(&mut self) -> bool {
        // Mark first: marking twice is harmless, but an entry acked and
        // deleted before its body is marked would leave the body without a
        // TTL and in the unpersisted set for good if the process died between.
        // A failure is retried with backoff; logged at warn so that a
        // lasting one (a Redis ACL without a needed command) is visible.
        if !self.unmarked.is_empty() {
            if let Err(e) = self.redis.mark_persisted(&self.unmarked, self.cache_ttl_s).await {
                tracing::warn!(error = %e, entries = self.unmarked.len(), "marking persisted messages failed; retrying");
                return false;
            }
            self.unmarked.clear();
        }
        if !self.unacked.is_empty() {
            if let Err(e) = self.redis.ack_delete(&self.unacked).await {
                tracing::warn!(error = %e, entries = self.unacked.len(), "acknowledging persisted entries failed; retrying");
                return false;
            }
            self.unacked.clear();
        }
        true
    }
}
