//! After a failover, PostgreSQL holds messages Redis never saw (and maybe
//! membership changes its access cache missed: those entries are dropped). Before Redis
//! takes writes again, each affected thread's Redis state is corrected:
//! idempotency keys restored (a retry must not store a second copy), `last`
//! createdAt raised (order stays total) and the index marked cold (reads
//! rebuild it including those messages). Rows carry `needs_reconcile` in
//! PostgreSQL, so this survives a crash of the instance that failed over.
//!
//! The hand-back is exclusive: failover writes hold a shared gate while they
//! run, a reconcile holds it exclusively. So a reconcile sees every failover
//! write that started before it (none is still uncommitted), and Redis takes
//! no save while a failover write of this instance is in flight, which would
//! interleave two clocks in one thread.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Mutex,
    },
    time::{Duration, Instant},
};

use tokio::sync::{RwLock, RwLockReadGuard};

use super::{breaker::Route, gate::Reconciled};
use crate::domain::MessageId;
use crate::store::MessageStore;

/// Retry pace while reconciling fails (e.g. PostgreSQL is down): requests
/// must not each wait on a doomed attempt.
const RETRY_EVERY: Duration = Duration::from_millis(250);

/// Which tier stopped a reconcile.
#[derive(Debug)]
pub enum ReconcileError {
    /// Redis failed: counts against the breaker.
    Redis(String),
    /// PostgreSQL failed: Redis stays usable, retry later.
    Postgres(String),
}

/// Whether failover writes may be missing from Redis. A counter, not a
/// flag: a failover write that lands while a reconcile runs is not lost.
pub struct ReconcileState {
    written: AtomicU64,
    done: AtomicU64,
    running: AtomicBool,
    last_attempt: Mutex<Option<Instant>>,
    /// The last attempt failed on PostgreSQL (Redis itself is fine).
    postgres_failed: AtomicBool,
    /// Shared by failover writes in flight, exclusive for a reconcile.
    gate: RwLock<()>,
}

impl Default for ReconcileState {
    fn default() -> Self {
        // Start-up assumes a previous process may have failed over.
        Self {
            written: AtomicU64::new(1),
            done: AtomicU64::new(0),
            running: AtomicBool::new(false),
            postgres_failed: AtomicBool::new(false),
            last_attempt: Mutex::new(None),
            gate: RwLock::new(()),
        }
    }
}

impl ReconcileState {
    /// A membership change Redis could not be told about.
    pub fn missed_change(&self) {
        self.written.fetch_add(1, Ordering::AcqRel);
    }

    /// A failover write is about to start: hold the guard until it is
    /// done. Counted now, not after COMMIT, so that a request routed to
    /// Redis meanwhile waits for it and reconciles it first.
    pub async fn failover_gate(&self) -> RwLockReadGuard<'_, ()> {
        let guard = self.gate.read().await;
        self.written.fetch_add(1, Ordering::AcqRel);
        guard
    }

    fn needed(&self) -> bool {
        self.written.load(Ordering::Acquire) > self.done.load(Ordering::Acquire)
    }

    /// Claims the right to attempt now (one at a time, paced).
    fn begin(&self) -> bool {
        let Ok(mut last) = self.last_attempt.lock() else {
            return false;
        };
        if last.is_some_and(|t| t.elapsed() < RETRY_EVERY) || self.running.swap(true, Ordering::AcqRel) {
            return false;
        }
        *last = Some(Instant::now());
        true
    }
}

/// Clears the "running" mark when dropped.
struct Running<'a>(&'a AtomicBool);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

impl MessageStore {
    /// Called by the gate before a Redis call: brings Redis up to date
    /// with failover writes first.
    pub(in crate::store) async fn reconcile_before(&self, route: Route) -> Reconciled {
        if route == Route::Fallback || !self.reconcile.needed() {
            return Reconciled::Ready;
        }
        // PostgreSQL known down: a reconcile could only wait out its pool
        // timeout while holding every Redis call back (the exclusive gate),
        // so the service would stall; Redis is the better tier meanwhile,
        // as after a reconcile that failed on PostgreSQL. It runs once
        // PostgreSQL answers again.
        if self.pg.known_down() {
            return Reconciled::Ready;
        }
        // Waits for failover writes in flight; new ones wait for this.
        let _exclusive = self.reconcile.gate.write().await;
        if !self.reconcile.needed() {
            return Reconciled::Ready; // reconciled while this request waited
        }
        if !self.reconcile.begin() {
            // Someone else is reconciling, or the last attempt just failed.
            // Redis is not up to date: keep off it, unless only PostgreSQL
            // is the problem (then Redis is the better tier to serve from).
            if self.reconcile.postgres_failed.load(Ordering::Acquire) {
                return Reconciled::Ready;
            }
            return Reconciled::NotYet;
        }
        // Released on drop: a request cancelled mid-reconcile (a client
        // gone, a subscription ended) must not leave it marked running.
        let _running = Running(&self.reconcile.running);
        let result = self.reconcile().await;
        self.reconcile.postgres_failed.store(matches!(result, Err(ReconcileError::Postgres(_))), Ordering::Release);
        match result {
            Ok(()) => Reconciled::Ready,
            Err(ReconcileError::Redis(e)) => {
                tracing::warn!(error = %e, "reconcile after failover failed on redis");
                Reconciled::RedisFailed
            }
            Err(ReconcileError::Postgres(e)) => {
                tracing::warn!(error = %e, "reconcile after failover waits for postgres");
                Reconciled::Ready
            }
        }
    }

    /// Applies pending failover writes to Redis.
    pub async fn reconcile(&self) -> Result<(), ReconcileError> {
        let target = self.reconcile.written.load(Ordering::Acquire);
        let pg = |e: crate::store::postgres::PgFault| ReconcileError::Postgres(e.to_string());
        loop {
            for (thread, version) in self.pg.dirty_acls().await.map_err(pg)? {
                self.redis
                    .acl_changed(&thread, version, self.config.cache_ttl_s)
                    .await
                    .map_err(|e| ReconcileError::Redis(e.to_string()))?;
                self.pg.acl_cleaned(&thread, version).await.map_err(pg)?;
            }
            let pending = self.pg.pending_reconcile().await.map_err(pg)?;
            if pending.is_empty() {
                self.reconcile.done.fetch_max(target, Ordering::AcqRel);
                return Ok(());
            }
            for p in pending {
                let written: Vec<MessageId> = p.ids.iter().copied().map(MessageId::from_uuid).collect();
                self.redis
                    .reconcile(&p.thread, p.newest, p.newest_seq, &p.keys, &written, self.config.idempotency_ttl_s)
                    .await
                    .map_err(|e| ReconcileError::Redis(e.to_string()))?;
                self.pg.mark_reconciled(&p.thread, &p.ids).await.map_err(pg)?;
                tracing::info!(thread_id = %p.thread, messages = p.ids.len(), "reconciled failover writes into redis");
            }
        }
    }
}
