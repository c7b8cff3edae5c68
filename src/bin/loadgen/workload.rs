//! Closed-loop HTTP workloads (`save`, `read`, `save-failover`), read seeding
//! and the `storageMetrics` poller.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hdrhistogram::Histogram;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::gql::{is_connect_error, make_content, Gql, Rng};
use crate::report::{micros, new_histogram, Outcome};

/// Pause after a refused/unreachable connection so a dead server is not spun on.
const CONNECT_BACKOFF: Duration = Duration::from_millis(50);

pub struct LoopConfig {
    pub concurrency: usize,
    pub warmup: Duration,
    pub duration: Duration,
    pub content_bytes: usize,
}

#[derive(Copy, Clone, PartialEq, Eq)]
pub enum Op {
    Save,
    Read,
}

/// Successful saves per thread index on the primary server, so that seeding
/// only tops threads up to the wanted message count.
pub struct ThreadCounts(Vec<AtomicU32>);

impl ThreadCounts {
    pub fn new(n: usize) -> Self {
        ThreadCounts((0..n).map(|_| AtomicU32::new(0)).collect())
    }

    fn incr(&self, i: usize) {
        if let Some(c) = self.0.get(i) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn get(&self, i: usize) -> u32 {
        self.0.get(i).map_or(0, |c| c.load(Ordering::Relaxed))
    }
}

struct WorkerOut {
    hist: Histogram<u64>,
    ok: u64,
    errors: u64,
    short_reads: u64,
    first_error: Option<String>,
}

/// Runs `cfg.concurrency` clients, each sending `op` back to back to a random
/// thread; only requests started after the warm-up are recorded.
pub async fn closed_loop(
    name: &str,
    gql: &Gql,
    op: Op,
    cfg: &LoopConfig,
    threads: &Arc<Vec<String>>,
    counts: Option<&Arc<ThreadCounts>>,
) -> Result<Outcome> {
    if threads.is_empty() {
        bail!("{name}: no threads to target");
    }
    eprintln!(
        "{name}: {} clients, {} threads, warm-up {:?}, measuring {:?} ({})",
        cfg.concurrency,
        threads.len(),
        cfg.warmup,
        cfg.duration,
        gql.endpoint()
    );
    let (stop_tx, stop_rx) = watch::channel(false);
    let poller = (op == Op::Save).then(|| tokio::spawn(poll_metrics(gql.clone(), stop_rx)));
    let measure_from = Instant::now() + cfg.warmup;
    let end = measure_from + cfg.duration;
    let mut set = JoinSet::new();
    for w in 0..cfg.concurrency {
        let ctx = WorkerCtx {
            w,
            gql: gql.clone(),
            op,
            threads: Arc::clone(threads),
            counts: counts.cloned(),
            measure_from,
            end,
            content_bytes: cfg.content_bytes,
        };
        set.spawn(worker(ctx));
    }
    let mut outcome = Outcome {
        name: name.to_string(),
        ok: 0,
        errors: 0,
        elapsed: cfg.duration,
        hist: new_histogram()?,
        first_error: None,
        notes: Vec::new(),
    };
    let mut short_reads = 0;
    while let Some(joined) = set.join_next().await {
        let w = joined.context("worker task panicked")??;
        outcome.hist.add(&w.hist).context("merging histograms")?;
        outcome.ok += w.ok;
        outcome.errors += w.errors;
        short_reads += w.short_reads;
        if outcome.first_error.is_none() {
            outcome.first_error = w.first_error;
        }
    }
    let _ = stop_tx.send(true);
    if let Some(p) = poller {
        let peak = p.await.context("metrics poller panicked")?;
        outcome.notes.push(format!("{name}: {}", peak.describe()));
    }
    if op == Op::Read && short_reads > 0 {
        outcome.notes.push(format!("{name}: {short_reads} reads returned fewer than 50 messages"));
    }
    Ok(outcome)
}

struct WorkerCtx {
    w: usize,
    gql: Gql,
    op: Op,
    threads: Arc<Vec<String>>,
    counts: Option<Arc<ThreadCounts>>,
    measure_from: Instant,
    end: Instant,
    content_bytes: usize,
}

async fn worker(c: WorkerCtx) -> Result<WorkerOut> {
    let mut out = WorkerOut { hist: new_histogram()?, ok: 0, errors: 0, short_reads: 0, first_error: None };
    let mut rng = Rng::new(c.w as u64);
    let mut seq = 0u64;
    loop {
        let t0 = Instant::now();
        if t0 >= c.end {
            break;
        }
        seq += 1;
        let idx = rng.below(c.threads.len());
        let thread = &c.threads[idx];
        let res = match c.op {
            Op::Save => {
                let content = make_content(&format!("lg w{} #{seq} ", c.w), c.content_bytes);
                c.gql.save_message(thread, &content).await.map(|_| 50)
            }
            Op::Read => c.gql.read_newest(thread).await,
        };
        let latency = t0.elapsed();
        let recorded = t0 >= c.measure_from;
        match res {
            Ok(n) => {
                if let (Op::Save, Some(counts)) = (c.op, &c.counts) {
                    counts.incr(idx);
                }
                if recorded {
                    out.hist.saturating_record(micros(latency).max(1));
                    out.ok += 1;
                    out.short_reads += u64::from(n < 50);
                }
            }
            Err(e) => {
                if recorded {
                    out.errors += 1;
                    if out.first_error.is_none() {
                        out.first_error = Some(format!("{e:#}"));
                    }
                }
                if is_connect_error(&e) {
                    tokio::time::sleep(CONNECT_BACKOFF).await;
                }
            }
        }
    }
    Ok(out)
}

/// Tops the given threads up to `per_thread` messages each with `concurrency`
/// parallel saves; returns a note with the seed time.
pub async fn seed(
    gql: &Gql,
    threads: &[String],
    counts: &Arc<ThreadCounts>,
    per_thread: u32,
    concurrency: usize,
    cfg: &LoopConfig,
) -> Result<String> {
    // Interleave threads so that concurrent saves hit different threads.
    let mut jobs: Vec<u32> = Vec::new();
    for round in 0..per_thread {
        for i in 0..threads.len() {
            if counts.get(i) + round < per_thread {
                jobs.push(u32::try_from(i).context("too many threads")?);
            }
        }
    }
    let total = jobs.len();
    eprintln!("read: seeding {total} messages to reach {per_thread} in each of {} threads", threads.len());
    let started = Instant::now();
    let jobs = Arc::new(jobs);
    let threads = Arc::new(threads.to_vec());
    let cursor = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let mut set = JoinSet::new();
    for w in 0..concurrency.max(1) {
        let (gql, jobs, threads, counts) = (gql.clone(), jobs.clone(), threads.clone(), counts.clone());
        let (cursor, failed, len) = (cursor.clone(), failed.clone(), cfg.content_bytes);
        set.spawn(async move {
            let mut first_error = None;
            loop {
                let i = cursor.fetch_add(1, Ordering::Relaxed);
                let Some(&t) = jobs.get(i) else { break };
                if total >= 10 && i % (total / 10) == 0 && i > 0 {
                    eprintln!("read: seeded {i}/{total}");
                }
                let content = make_content(&format!("seed w{w} #{i} "), len);
                let mut attempt = 0;
                loop {
                    attempt += 1;
                    match gql.save_message(&threads[t as usize], &content).await {
                        Ok(_) => {
                            counts.incr(t as usize);
                            break;
                        }
                        Err(e) => {
                            if is_connect_error(&e) {
                                tokio::time::sleep(CONNECT_BACKOFF).await;
                            }
                            if attempt >= 3 {
                                failed.fetch_add(1, Ordering::Relaxed);
                                first_error.get_or_insert_with(|| format!("{e:#}"));
                                break;
                            }
                        }
                    }
                }
            }
            first_error
        });
    }
    let mut first_error = None;
    while let Some(joined) = set.join_next().await {
        let e = joined.context("seed task panicked")?;
        first_error = first_error.or(e);
    }
    let took = started.elapsed().as_secs_f64();
    let failed = failed.load(Ordering::Relaxed);
    if total > 0 && failed as usize == total {
        bail!("seeding failed for every message: {}", first_error.unwrap_or_default());
    }
    let mut note = format!(
        "read seed: {total} messages into {} threads ({per_thread} each) in {took:.1} s ({:.0} msg/s), {failed} failed",
        threads.len(),
        if took > 0.0 { total as f64 / took } else { 0.0 }
    );
    if let Some(e) = first_error {
        note.push_str(&format!(" (first error: {e})"));
    }
    // Measure reads on a quiet server: wait (bounded) for the persistence
    // backlog the seed created, so the read numbers don't include it.
    let drain_started = Instant::now();
    while drain_started.elapsed() < Duration::from_secs(120) {
        match gql.storage_metrics().await {
            Ok((depth, _)) if depth > 0.0 => tokio::time::sleep(Duration::from_millis(250)).await,
            _ => break,
        }
    }
    note.push_str(&format!("; persistence backlog drained in {:.1} s", drain_started.elapsed().as_secs_f64()));
    eprintln!("{note}");
    Ok(note)
}

#[derive(Default)]
struct MetricsPeak {
    samples: u64,
    failures: u64,
    depth: f64,
    lag_ms: Option<f64>,
    first_error: Option<String>,
}

impl MetricsPeak {
    fn describe(&self) -> String {
        if self.samples == 0 {
            return format!(
                "peak persistence queue depth n/a ({})",
                self.first_error.as_deref().unwrap_or("no sample")
            );
        }
        let lag = self.lag_ms.map_or_else(|| "n/a".to_string(), |l| format!("{l:.1} ms"));
        format!(
            "peak persistence queue depth {}, peak persistence lag {lag} ({} samples every 250 ms, {} failed)",
            self.depth, self.samples, self.failures
        )
    }
}

/// Polls `storageMetrics` every 250 ms until told to stop; keeps the peaks.
async fn poll_metrics(gql: Gql, mut stop: watch::Receiver<bool>) -> MetricsPeak {
    let mut peak = MetricsPeak::default();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            _ = tick.tick() => {}
        }
        match gql.storage_metrics().await {
            Ok((depth, lag)) => {
                peak.samples += 1;
                peak.depth = peak.depth.max(depth);
                if let Some(l) = lag {
                    peak.lag_ms = Some(peak.lag_ms.map_or(l, |p| p.max(l)));
                }
            }
            Err(e) => {
                peak.failures += 1;
                peak.first_error.get_or_insert_with(|| format!("{e:#}"));
            }
        }
    }
    peak
}
