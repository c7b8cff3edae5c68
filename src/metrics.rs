//! Metric names and recording helpers. Every number goes two ways: into the
//! `metrics` facade (Prometheus text at `/metrics`) and into per-instance
//! state that `storageMetrics` reads, so tests with several app instances in
//! one process still see their own numbers.

use std::{
    collections::{HashMap, VecDeque},
    sync::{
        atomic::{AtomicI64, AtomicU64, Ordering},
        Arc, Mutex, OnceLock,
    },
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// A storage tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    /// Redis.
    Redis,
    /// PostgreSQL.
    Postgres,
}

impl Tier {
    fn label(self) -> &'static str {
        match self {
            Tier::Redis => "redis",
            Tier::Postgres => "postgres",
        }
    }
}

/// Persistence queue health: a sample of the stream, exported as metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Entries in the stream (saved, not yet persisted).
    pub depth: u64,
    /// Entries delivered to a consumer and not yet acknowledged.
    pub pending: u64,
    /// Age of the oldest entry, milliseconds (0 when empty).
    pub lag_ms: u64,
    /// Entries in the dead-letter stream.
    pub dead_letters: u64,
}

/// Latency percentiles of one tier, milliseconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Percentiles {
    /// Median.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Calls recorded.
    pub count: u64,
}

/// Events per second over the last few seconds.
#[derive(Default)]
struct Rate(Mutex<VecDeque<(u64, u64)>>);

const RATE_WINDOW_S: u64 = 10;

impl Rate {
    fn hit(&self, now_s: u64) {
        if let Ok(mut q) = self.0.lock() {
            match q.back_mut() {
                Some((s, n)) if *s == now_s => *n += 1,
                _ => q.push_back((now_s, 1)),
            }
            while q.front().is_some_and(|(s, _)| *s + RATE_WINDOW_S < now_s) {
                q.pop_front();
            }
        }
    }

    fn per_second(&self, now_s: u64) -> f64 {
        let Ok(q) = self.0.lock() else { return 0.0 };
        let n: u64 = q.iter().filter(|(s, _)| *s + RATE_WINDOW_S > now_s && *s < now_s).map(|(_, n)| n).sum();
        n as f64 / (RATE_WINDOW_S - 1) as f64
    }
}

/// Prometheus handles per (tier, operation), registered once: the facade's
/// registry lookup with labels costs an allocation per call otherwise.
type Handles = (metrics::Histogram, metrics::Counter);

#[derive(Default)]
struct TierHandles(Mutex<HashMap<(&'static str, &'static str), Handles>>);

impl TierHandles {
    fn get(&self, tier: &'static str, op: &'static str) -> Option<Handles> {
        let mut map = self.0.lock().ok()?;
        Some(
            map.entry((tier, op))
                .or_insert_with(|| {
                    (
                        metrics::histogram!("threadstore_tier_call_seconds", "tier" => tier, "op" => op),
                        metrics::counter!("threadstore_tier_errors_total", "tier" => tier, "op" => op),
                    )
                })
                .clone(),
        )
    }
}

#[derive(Default)]
struct Inner {
    handles: TierHandles,
    redis: Mutex<Option<Histogram<u64>>>,
    postgres: Mutex<Option<Histogram<u64>>>,
    cache_hits: AtomicU64,
    cache_misses: AtomicU64,
    failovers: AtomicU64,
    failover_writes: AtomicU64,
    probes_max: AtomicU64,
    queue_depth: AtomicU64,
    pending: AtomicU64,
    lag_ms: AtomicU64,
    dead_letters: AtomicU64,
    persisted: AtomicU64,
    subscriptions: AtomicI64,
    saves: Rate,
    reads: Rate,
}

/// Per-instance metrics handle. Cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
    started: Instant,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// The process-wide Prometheus recorder. The `metrics` facade is global by
/// design, so it is installed once per process and shared by instances.
pub fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

fn histogram() -> Option<Histogram<u64>> {
    Histogram::new_with_bounds(1, 60_000_000, 3).ok()
}

fn percentiles(h: &Mutex<Option<Histogram<u64>>>) -> Percentiles {
    let Ok(guard) = h.lock() else {
        return Percentiles::default();
    };
    guard
        .as_ref()
        .map(|h| Percentiles {
            p50_ms: h.value_at_quantile(0.5) as f64 / 1000.0,
            p99_ms: h.value_at_quantile(0.99) as f64 / 1000.0,
            count: h.len(),
        })
        .unwrap_or_default()
}

impl Metrics {
    /// Fresh per-instance state (and the process recorder, once).
    pub fn new() -> Self {
        prometheus();
        let inner = Inner { redis: Mutex::new(histogram()), postgres: Mutex::new(histogram()), ..Inner::default() };
        Self { inner: Arc::new(inner), started: Instant::now() }
    }

    fn now_s(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    /// One call to a tier.
    pub fn tier_call(&self, tier: Tier, op: &'static str, took: Duration, ok: bool) {
        if let Some((histogram, errors)) = self.inner.handles.get(tier.label(), op) {
            histogram.record(took.as_secs_f64());
            if !ok {
                errors.increment(1);
            }
        }
        let h = match tier {
            Tier::Redis => &self.inner.redis,
            Tier::Postgres => &self.inner.postgres,
        };
        if let Ok(mut h) = h.lock() {
            if let Some(h) = h.as_mut() {
                let _ = h.record((took.as_micros() as u64).max(1));
            }
        }
    }

    /// Latency percentiles of a tier since start.
    pub fn tier_latency(&self, tier: Tier) -> Percentiles {
        match tier {
            Tier::Redis => percentiles(&self.inner.redis),
            Tier::Postgres => percentiles(&self.inner.postgres),
        }
    }

    /// Message bodies found in / missing from Redis.
    pub fn cache(&self, hits: u64, misses: u64) {
        self.inner.cache_hits.fetch_add(hits, Ordering::Relaxed);
        self.inner.cache_misses.fetch_add(misses, Ordering::Relaxed);
        metrics::counter!("threadstore_cache_hits_total").increment(hits);
        metrics::counter!("threadstore_cache_misses_total").increment(misses);
    }

    /// Hit ratio of the body cache (0 when nothing was read).
    pub fn cache_hit_ratio(&self) -> f64 {
        let h = self.inner.cache_hits.load(Ordering::Relaxed) as f64;
        let m = self.inner.cache_misses.load(Ordering::Relaxed) as f64;
        if h + m == 0.0 {
            0.0
        } else {
            h / (h + m)
        }
    }

    /// Breaker state: 0 closed, 1 half-open, 2 open.
    pub fn breaker_state(&self, state: i64, label: &'static str, opened: bool) {
        metrics::gauge!("threadstore_breaker_state").set(state as f64);
        metrics::counter!("threadstore_breaker_transitions_total", "to" => label).increment(1);
        if opened {
            self.inner.failovers.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A half-open probe was let through; `in_flight` probes now run.
    pub fn breaker_probe(&self, in_flight: u32) {
        metrics::counter!("threadstore_breaker_probes_total").increment(1);
        let max = self.inner.probes_max.fetch_max(u64::from(in_flight), Ordering::Relaxed).max(u64::from(in_flight));
        // The high-water mark shows whether a recovering Redis ever got more
        // than BREAKER_HALF_OPEN_PROBES requests at once.
        metrics::gauge!("threadstore_breaker_probes_in_flight_max").set(max as f64);
    }

    /// Times the breaker opened.
    pub fn failovers(&self) -> u64 {
        self.inner.failovers.load(Ordering::Relaxed)
    }

    /// A save written straight to PostgreSQL.
    pub fn failover_write(&self) {
        self.inner.failover_writes.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("threadstore_failover_writes_total").increment(1);
    }

    /// Saves written straight to PostgreSQL since start.
    pub fn failover_writes(&self) -> u64 {
        self.inner.failover_writes.load(Ordering::Relaxed)
    }

    /// An acknowledged save.
    pub fn save(&self) {
        self.inner.saves.hit(self.now_s());
        metrics::counter!("threadstore_saves_total").increment(1);
    }

    /// An acknowledged change of a stored message (an edit).
    pub fn change(&self) {
        metrics::counter!("threadstore_changes_total").increment(1);
    }

    /// A thread read.
    pub fn read(&self) {
        self.inner.reads.hit(self.now_s());
        metrics::counter!("threadstore_reads_total").increment(1);
    }

    /// Saves and reads per second over the last 10 s.
    pub fn rates(&self) -> (f64, f64) {
        let now = self.now_s();
        (self.inner.saves.per_second(now), self.inner.reads.per_second(now))
    }

    /// Persistence queue health, as last polled.
    pub fn queue(&self, q: QueueStats) {
        self.inner.queue_depth.store(q.depth, Ordering::Relaxed);
        self.inner.pending.store(q.pending, Ordering::Relaxed);
        self.inner.lag_ms.store(q.lag_ms, Ordering::Relaxed);
        self.inner.dead_letters.store(q.dead_letters, Ordering::Relaxed);
        metrics::gauge!("threadstore_persist_queue_depth").set(q.depth as f64);
        metrics::gauge!("threadstore_persist_pending").set(q.pending as f64);
        metrics::gauge!("threadstore_persist_lag_seconds").set(q.lag_ms as f64 / 1000.0);
        metrics::gauge!("threadstore_dead_letters").set(q.dead_letters as f64);
    }

    /// The last queue sample.
    pub fn queue_snapshot(&self) -> QueueStats {
        let i = &self.inner;
        QueueStats {
            depth: i.queue_depth.load(Ordering::Relaxed),
            pending: i.pending.load(Ordering::Relaxed),
            lag_ms: i.lag_ms.load(Ordering::Relaxed),
            dead_letters: i.dead_letters.load(Ordering::Relaxed),
        }
    }

    /// A batch committed to PostgreSQL.
    pub fn persisted_batch(&self, size: usize) {
        self.inner.persisted.fetch_add(size as u64, Ordering::Relaxed);
        metrics::histogram!("threadstore_persist_batch_size").record(size as f64);
        metrics::counter!("threadstore_persisted_total").increment(size as u64);
    }

    /// Messages persisted since start.
    pub fn persisted(&self) -> u64 {
        self.inner.persisted.load(Ordering::Relaxed)
    }

    /// An entry moved to the dead-letter stream.
    pub fn dead_lettered(&self) {
        metrics::counter!("threadstore_dead_lettered_total").increment(1);
    }

    /// Entries claimed from a consumer that went silent.
    pub fn claimed(&self, entries: usize) {
        metrics::counter!("threadstore_persist_claimed_total").increment(entries as u64);
    }

    /// A save refused before storing anything (`reason`: `backlog`).
    pub fn save_refused(&self, reason: &'static str) {
        metrics::counter!("threadstore_saves_refused_total", "reason" => reason).increment(1);
    }

    /// Backpressure switched on (1) or off (0).
    pub fn backpressure(&self, on: bool) {
        metrics::gauge!("threadstore_backpressure").set(if on { 1.0 } else { 0.0 });
    }

    /// A request refused before it ran (`code`: `QUERY_TOO_COMPLEX`,
    /// `SERVICE_OVERLOADED`); process-wide.
    pub fn query_refused(code: &'static str) {
        metrics::counter!("threadstore_requests_refused_total", "code" => code).increment(1);
    }

    /// The pub/sub connection was lost and is being made again (process-wide,
    /// so no instance handle is needed).
    pub fn pubsub_reconnected() {
        metrics::counter!("threadstore_pubsub_reconnects_total").increment(1);
    }

    /// A subscription started (+1) or ended (-1).
    pub fn subscriptions(&self, delta: i64) {
        let now = self.inner.subscriptions.fetch_add(delta, Ordering::Relaxed) + delta;
        metrics::gauge!("threadstore_active_subscriptions").set(now as f64);
    }

    /// Active subscriptions.
    pub fn active_subscriptions(&self) -> i64 {
        self.inner.subscriptions.load(Ordering::Relaxed)
    }
}
