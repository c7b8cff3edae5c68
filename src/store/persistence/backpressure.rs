//! Backpressure: a bound on the persistence backlog.
//!
//! Unpersisted messages never expire, so while PostgreSQL is down (or slower
//! than the saves) the Stream and its bodies grow in Redis memory. Past
//! `PERSIST_BACKLOG_LIMIT` entries the save script refuses new messages in the
//! same atomic step that would have stored them, so a refused save stores
//! nothing; the API answers `STORAGE_UNAVAILABLE` at once, `/readyz` says not
//! ready (a load balancer sends traffic elsewhere) and a gauge and a warning
//! say why. Once the persister brings the backlog under the bound, saves are
//! taken again without anyone stepping in: the script checks on every save,
//! and the flag here follows the once-a-second queue sample.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::metrics::Metrics;

/// Whether saves are being refused for a full backlog.
pub struct Backpressure {
    limit: u64,
    active: AtomicBool,
    metrics: Metrics,
}

impl Backpressure {
    /// `limit` 0 means unbounded.
    pub fn new(limit: u64, metrics: Metrics) -> Self {
        metrics.backpressure(false);
        Self { limit, active: AtomicBool::new(false), metrics }
    }

    /// Whether the backlog is at its bound.
    pub fn is_active(&self) -> bool {
        self.active.load(Ordering::Relaxed)
    }

    /// The save script refused a message: the backlog is at its bound.
    pub fn refused(&self) {
        self.metrics.save_refused("backlog");
        self.set(true, None);
    }

    /// The periodic queue sample.
    pub fn observe(&self, depth: u64) {
        if self.limit > 0 {
            self.set(depth >= self.limit, Some(depth));
        }
    }

    fn set(&self, on: bool, depth: Option<u64>) {
        if self.active.swap(on, Ordering::Relaxed) == on {
            return;
        }
        self.metrics.backpressure(on);
        if on {
            tracing::warn!(
                limit = self.limit,
                ?depth,
                "persistence backlog at its limit: refusing saves until PostgreSQL catches up"
            );
        } else {
            tracing::info!(limit = self.limit, ?depth, "persistence backlog below its limit: taking saves again");
        }
    }
}
