//! Closed-loop HTTP workloads (`save`, `read`, `edit`, `save-failover`).
//!
//! This file holds the closed loop and its workers; read seeding is in
//! [`seeding`], the `storageMetrics` poller in [`poller`].

mod poller;
mod seeding;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hdrhistogram::Histogram;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::gql::{is_connect_error, make_content, Gql, Rng};
use crate::report::{micros, new_histogram, Outcome};

use self::poller::poll_metrics;
pub use self::seeding::seed;

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
    /// Each client saves one message, then edits it back to back.
    Edit,
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
    // The message an `edit` client changes (saved before measuring).
    let mut target = None;
    if c.op == Op::Edit {
        let thread = &c.threads[rng.below(c.threads.len())];
        let content = make_content(&format!("lg edit w{} ", c.w), c.content_bytes);
        target = Some(c.gql.save_message(thread, &content).await.context("saving the message to edit")?);
    }
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
            Op::Edit => {
                let content = make_content(&format!("lg edit w{} v{seq} ", c.w), c.content_bytes);
                c.gql.edit_message(target.as_deref().unwrap_or_default(), &content).await.map(|_| 50)
            }
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
