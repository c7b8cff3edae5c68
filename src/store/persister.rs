//! Tier 2: moves saved messages from the Redis Stream to PostgreSQL.
//!
//! At-least-once from a consumer group, made exactly-once by an idempotent
//! insert (`ON CONFLICT DO NOTHING` on the message id and idempotency key):
//! 1. read a batch: this consumer's own pending entries first (after a
//!    restart), entries other consumers left pending past the claim timeout
//!    (`XAUTOCLAIM`), else new ones (`XREADGROUP ... BLOCK`);
//! 2. insert the batch in ONE statement;
//! 3. only after COMMIT: `XACK` + `XDEL`, then mark the bodies persisted and
//!    start their cache TTL.
//!
//! PostgreSQL down: the same batch is retried with exponential backoff and
//! nothing is acknowledged. A batch PostgreSQL rejects is split to isolate
//! the bad row; a row failing `max_attempts` times goes to the dead-letter
//! stream (kept, with a metric and an error log), never dropped, never
//! blocking the rest.

use std::{
    collections::{HashMap, HashSet},
    time::{Duration, Instant},
};

use bb8_redis::redis::aio::MultiplexedConnection;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::postgres::{PgFault, PgTier};
use super::redis::{messages::parse_body, stream::Entry, RedisFault, RedisTier};
use crate::config::PersistSettings;
use crate::domain::{Message, MessageId};
use crate::metrics::Metrics;

/// Longest the persister keeps draining after shutdown starts.
const DRAIN_LIMIT: Duration = Duration::from_secs(5);

/// What one step did.
#[derive(Debug, PartialEq, Eq)]
pub enum PersistOutcome {
    /// Nothing to do.
    Idle,
    /// Entries committed (and acknowledged, unless `ack_pending`).
    Persisted {
        /// Entries handled in this step.
        entries: usize,
        /// Rows PostgreSQL did not hold before.
        inserted: u64,
    },
    /// A tier is unavailable; the batch is kept and retried.
    RetryLater,
}

/// The persistence worker of one process (one consumer in the group).
pub struct Persister {
    redis: RedisTier,
    pg: PgTier,
    settings: PersistSettings,
    consumer: String,
    cache_ttl_s: u64,
    metrics: Metrics,
    conn: Option<MultiplexedConnection>,
    own_pending_done: bool,
    last_claim: Instant,
    claim_cursor: String,
    /// A batch read but not yet committed: retried before reading more.
    retry: Vec<Entry>,
    /// Committed but not yet acknowledged in Redis.
    unacked: Vec<String>,
    unmarked: Vec<(String, MessageId)>,
    failures: HashMap<String, u32>,
}

enum Insert {
    /// New rows, and rows refused as duplicates of another message's
    /// idempotency key (orphans: Redis accepted them after losing the key),
    /// and PostgreSQL's copies of rows it already held with another
    /// createdAt (stale: Redis ran a save after the service had given up on
    /// it and written the message to PostgreSQL itself).
    Committed(u64, Vec<Message>, Vec<Message>),
    Unavailable,
    Rejected(String),
}

impl Persister {
    /// A worker named `consumer` in the group.
    pub fn new(
        redis: RedisTier,
        pg: PgTier,
        settings: PersistSettings,
        consumer: String,
        cache_ttl_s: u64,
        metrics: Metrics,
    ) -> Self {
        Self {
            redis,
            pg,
            settings,
            consumer,
            cache_ttl_s,
            metrics,
            conn: None,
            own_pending_done: false,
            last_claim: Instant::now(),
            claim_cursor: "0-0".into(),
            retry: Vec::new(),
            unacked: Vec::new(),
            unmarked: Vec::new(),
            failures: HashMap::new(),
        }
    }

    /// Runs until `stop` is cancelled; the batch in flight is always
    /// finished (committed and acknowledged, or left pending) first.
    pub async fn run(mut self, stop: CancellationToken) {
        let mut backoff = Duration::from_millis(50);
        while !stop.is_cancelled() {
            match self.persist_batch().await {
                PersistOutcome::RetryLater => {
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
                _ => backoff = Duration::from_millis(50),
            }
        }
        // Shutdown: the server no longer accepts saves; finish the batch in
        // flight and drain what is queued, within a bound.
        let deadline = Instant::now() + DRAIN_LIMIT;
        let mut drained = 0;
        while Instant::now() < deadline {
            match self.persist_batch().await {
                PersistOutcome::Persisted { entries, .. } => drained += entries,
                _ => break,
            }
        }
        tracing::info!(consumer = %self.consumer, drained, "persister stopped");
    }

    /// One step: finish earlier work, read a batch, persist it, acknowledge.
    /// Tests call this directly instead of sleeping.
    pub async fn persist_batch(&mut self) -> PersistOutcome {
        if !self.flush_acks().await {
            return PersistOutcome::RetryLater;
        }
        let entries = if self.retry.is_empty() {
            match self.read().await {
                Ok(e) => e,
                Err(fault) => {
                    if fault.is_nogroup() {
                        let _ = self.redis.ensure_group().await;
                    }
                    tracing::debug!(%fault, "persister read failed");
                    self.conn = None;
                    // Redis may still have run the read (reply lost): those
                    // entries now wait on this consumer, so re-read them.
                    self.own_pending_done = false;
                    return PersistOutcome::RetryLater;
                }
            }
        } else {
            std::mem::take(&mut self.retry)
        };
        if entries.is_empty() {
            return PersistOutcome::Idle;
        }
        let count = entries.len();
        match self.persist(entries).await {
            Ok(inserted) => {
                if !self.flush_acks().await {
                    return PersistOutcome::RetryLater;
                }
                PersistOutcome::Persisted { entries: count, inserted }
            }
            Err(entries) => {
                self.retry = entries;
                PersistOutcome::RetryLater
            }
        }
    }

    async fn read(&mut self) -> Result<Vec<Entry>, RedisFault> {
        let conn = match &mut self.conn {
            Some(c) => c,
            None => {
                let c = self.redis.dedicated().await?;
                self.redis.ensure_group().await?;
                self.conn.insert(c)
            }
        };
        let batch = self.settings.persist_batch_size;
        if !self.own_pending_done {
            let mine = self.redis.read_group(conn, &self.consumer, batch, self.settings.block(), "0").await?;
            let mine: Vec<Entry> = mine.into_iter().filter(|e| !self.unacked.contains(&e.id)).collect();
            if !mine.is_empty() {
                return Ok(mine);
            }
            self.own_pending_done = true;
        }
        if self.last_claim.elapsed() >= self.settings.claim_idle() / 2 {
            let (next, claimed) =
                self.redis.autoclaim(&self.consumer, self.settings.claim_idle(), &self.claim_cursor, batch).await?;
            self.claim_cursor = next;
            if self.claim_cursor == "0-0" {
                self.last_claim = Instant::now();
            }
            if !claimed.is_empty() {
                tracing::info!(entries = claimed.len(), "claimed entries a silent consumer left pending");
                return Ok(claimed);
            }
        }
        self.redis.read_group(conn, &self.consumer, batch, self.settings.block(), ">").await
    }

    /// Inserts the batch; on success the entries are queued for ack. On a
    /// tier outage the entries come back for a retry.
    async fn persist(&mut self, entries: Vec<Entry>) -> Result<u64, Vec<Entry>> {
        let mut rows = Vec::with_capacity(entries.len());
        let mut good = Vec::with_capacity(entries.len());
        for e in entries {
            match e.body.as_deref().map(parse_body_json) {
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
            match self.insert(&rows).await {
                Insert::Committed(n, orphans, stale) => {
                    inserted += n;
                    self.metrics.persisted_batch(rows.len());
                    for o in &orphans {
                        tracing::warn!(thread_id = %o.thread_id, message_id = %o.id, "duplicate of an earlier idempotent save; removed from redis");
                        let _ = self.redis.drop_orphan(&o.thread_id, &o.id).await;
                    }
                    for s in &stale {
                        tracing::warn!(thread_id = %s.thread_id, message_id = %s.id, "redis applied a save postgres already held; postgres's copy wins");
                        let _ = self.redis.replace_cached(s, self.cache_ttl_s).await;
                    }
                    self.unmarked.extend(
                        rows.iter()
                            .filter(|m| !orphans.iter().any(|o| o.id == m.id))
                            .map(|m| (m.thread_id.clone(), m.id)),
                    );
                    self.unacked.extend(entries.into_iter().map(|e| e.id));
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

    async fn insert(&self, rows: &[Message]) -> Insert {
        if rows.is_empty() {
            return Insert::Committed(0, Vec::new(), Vec::new());
        }
        match self.pg.insert_batch(rows).await {
            Ok(new) => {
                let new: HashSet<Uuid> = new.into_iter().collect();
                let skipped: Vec<Uuid> = rows.iter().map(|m| m.id.as_uuid()).filter(|id| !new.contains(id)).collect();
                // A skipped row is either already stored (redelivery: fine,
                // unless PostgreSQL's copy has another createdAt: stale) or
                // refused for its idempotency key (an orphan).
                let skipped: Vec<MessageId> = skipped.into_iter().map(MessageId::from_uuid).collect();
                let (orphans, stale) = match skipped.is_empty() {
                    true => (Vec::new(), Vec::new()),
                    false => match self.pg.by_ids(&skipped).await {
                        Ok(present) => {
                            let orphans = rows
                                .iter()
                                .filter(|m| skipped.contains(&m.id) && !present.iter().any(|p| p.id == m.id))
                                .cloned()
                                .collect();
                            let stale = present
                                .into_iter()
                                .filter(|p| rows.iter().any(|m| m.id == p.id && m.created_at != p.created_at))
                                .collect();
                            (orphans, stale)
                        }
                        Err(_) => (Vec::new(), Vec::new()),
                    },
                };
                Insert::Committed(new.len() as u64, orphans, stale)
            }
            Err(PgFault::Unavailable(e)) => {
                tracing::warn!(error = %e, "postgres unavailable; batch kept for retry");
                Insert::Unavailable
            }
            Err(PgFault::Rejected(e)) => Insert::Rejected(e),
        }
    }

    async fn dead_letter(&mut self, e: &Entry, reason: &str) {
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
    async fn flush_acks(&mut self) -> bool {
        // Mark first: marking twice is harmless, but an entry acked and
        // deleted before its body is marked would leave the body without a
        // TTL and in the unpersisted set for good if the process died between.
        if !self.unmarked.is_empty() {
            if self.redis.mark_persisted(&self.unmarked, self.cache_ttl_s).await.is_err() {
                return false;
            }
            self.unmarked.clear();
        }
        if !self.unacked.is_empty() {
            if self.redis.ack_delete(&self.unacked).await.is_err() {
                return false;
            }
            self.unacked.clear();
        }
        true
    }
}

fn parse_body_json(json: &[u8]) -> Option<Message> {
    // Stream entries hold the JSON without the persisted flag.
    let mut flagged = Vec::with_capacity(json.len() + 1);
    flagged.push(b'0');
    flagged.extend_from_slice(json);
    parse_body(&flagged)
}

/// Polls queue depth, pending count and lag into metrics once a second.
pub async fn stats_loop(redis: RedisTier, metrics: Metrics, stop: CancellationToken) {
    loop {
        if let Ok(s) = redis.stream_stats().await {
            metrics.queue(s.depth, s.pending, s.lag_ms, s.dead_letters);
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}
