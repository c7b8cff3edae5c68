//! `subscribe` workload: many `graphql-transport-ws` subscribers, one fixed-rate
//! writer, delivery delay per event and expected-vs-received event counts.
//!
//! This file holds the configuration, the shared tallies and the run with its
//! report; the subscriber connections are in [`client`], the writer in [`writer`].

mod client;
mod writer;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use hdrhistogram::Histogram;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinSet;

use crate::gql::Gql;
use crate::report::{micros, new_histogram, Outcome};

use self::client::{subscriber, SubCtx};
use self::writer::write;

/// Limit on one subscriber's connect + connection_ack + subscribe.
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);
/// Concurrent WebSocket handshakes while connecting the subscribers.
const CONNECT_PARALLELISM: usize = 100;

pub struct SubConfig {
    pub subscribers: usize,
    pub threads: Vec<String>,
    pub rate: u32,
    pub duration: Duration,
    pub settle: Duration,
    pub drain: Duration,
    pub content_bytes: usize,
}

/// State shared by the writer and all subscribers.
struct Shared {
    /// Message id → instant the writer received its save response.
    sent: Mutex<HashMap<String, Instant>>,
    /// Writer sequence number (tagged in the content as `sub #<seq> `) → instant
    /// the save request was sent.
    sent_req: Mutex<HashMap<u64, Instant>>,
    /// Delivery delays in microseconds.
    delays: Mutex<Histogram<u64>>,
    /// Receive − save request sent, in microseconds: never negative, but it
    /// includes the save round trip (an upper bound of the delivery delay).
    from_send: Mutex<Histogram<u64>>,
    /// Events whose id was already in `sent` when they arrived.
    matched: AtomicU64,
    /// Events whose id was not (yet) in `sent`: id → count. Sorted out at the end.
    early: Mutex<HashMap<String, u64>>,
    errors: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl Shared {
    fn error(&self, msg: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        lock(&self.first_error).get_or_insert(msg);
    }

    fn on_event(&self, id: &str, content: Option<&str>, received: Instant) {
        let seq = content.and_then(|c| c.strip_prefix("sub #")?.split(' ').next()?.parse().ok());
        if let Some(sent) = seq.and_then(|s: u64| lock(&self.sent_req).get(&s).copied()) {
            let delay = micros(received.saturating_duration_since(sent));
            lock(&self.from_send).saturating_record(delay);
        }
        let sent_at = lock(&self.sent).get(id).copied();
        match sent_at {
            Some(t) => {
                let delay = micros(received.saturating_duration_since(t));
                lock(&self.delays).saturating_record(delay);
                self.matched.fetch_add(1, Ordering::Relaxed);
            }
            // The event beat the writer recording the save response (the server
            // publishes before or while answering). Keep it aside; at the end it
            // counts with a delay of 0 if the writer did send that id.
            None => *lock(&self.early).entry(id.to_string()).or_insert(0) += 1,
        }
    }
}

/// A poisoned lock only means another task panicked; the data is still usable.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

pub async fn run(gql: &Gql, cfg: &SubConfig) -> Result<Outcome> {
    let w = cfg.threads.len();
    if w == 0 || cfg.subscribers == 0 || cfg.rate == 0 {
        bail!("subscribe needs --subscribers, --sub-threads and --sub-rate > 0");
    }
    let shared = Arc::new(Shared {
        sent: Mutex::new(HashMap::new()),
        sent_req: Mutex::new(HashMap::new()),
        delays: Mutex::new(new_histogram()?),
        from_send: Mutex::new(new_histogram()?),
        matched: AtomicU64::new(0),
        early: Mutex::new(HashMap::new()),
        errors: AtomicU64::new(0),
        first_error: Mutex::new(None),
    });
    eprintln!("subscribe: connecting {} subscribers over {w} threads to {}", cfg.subscribers, gql.ws_endpoint());
    let (stop_tx, stop_rx) = watch::channel(false);
    let (ready_tx, mut ready_rx) = mpsc::channel(cfg.subscribers);
    let sem = Arc::new(Semaphore::new(CONNECT_PARALLELISM));
    let started = Instant::now();
    let mut subs = JoinSet::new();
    for i in 0..cfg.subscribers {
        let ctx = SubCtx {
            thread_idx: i % w,
            thread: cfg.threads[i % w].clone(),
            url: gql.ws_endpoint().to_string(),
            shared: shared.clone(),
            ready: ready_tx.clone(),
            stop: stop_rx.clone(),
            sem: sem.clone(),
        };
        subs.spawn(subscriber(ctx));
    }
    drop(ready_tx);

    // Wait until every subscriber has sent `subscribe` (or failed).
    let mut per_thread = vec![0u64; w];
    let (mut ready, mut failed) = (0usize, 0usize);
    let batches = cfg.subscribers.div_ceil(CONNECT_PARALLELISM) as u32;
    let deadline = tokio::time::Instant::now() + SETUP_TIMEOUT * (batches + 1);
    while ready + failed < cfg.subscribers {
        match tokio::time::timeout_at(deadline, ready_rx.recv()).await {
            Ok(Some((idx, Ok(())))) => {
                per_thread[idx] += 1;
                ready += 1;
            }
            Ok(Some((_, Err(e)))) => {
                failed += 1;
                shared.error(format!("subscriber setup: {e:#}"));
            }
            Ok(None) | Err(_) => break,
        }
    }
    let setup_secs = started.elapsed().as_secs_f64();
    let missing = cfg.subscribers - ready - failed;
    eprintln!("subscribe: {ready} ready, {failed} failed, {missing} missing in {setup_secs:.2} s");
    if ready == 0 {
        let _ = stop_tx.send(true);
        let err = lock(&shared.first_error).clone().unwrap_or_default();
        bail!("no subscriber could subscribe: {err}");
    }
    for _ in 0..missing {
        shared.error("subscriber setup timed out".to_string());
    }
    tokio::time::sleep(cfg.settle).await;

    let writer = write(gql, cfg, &shared).await?;
    tokio::time::sleep(cfg.drain).await;
    let _ = stop_tx.send(true);
    let closing = async { while subs.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_secs(10), closing).await.is_err() {
        subs.abort_all();
    }

    // Sort out the events that arrived before their save response was recorded.
    let (mut early, mut foreign) = (0u64, 0u64);
    {
        let sent = lock(&shared.sent);
        let mut delays = lock(&shared.delays);
        for (id, n) in lock(&shared.early).iter() {
            if sent.contains_key(id) {
                early += n;
                delays.saturating_record_n(0, *n);
            } else {
                foreign += n;
            }
        }
    }
    let received = shared.matched.load(Ordering::Relaxed) + early;
    let expected: u64 = writer.ok_per_thread.iter().zip(&per_thread).map(|(s, n)| s * n).sum();
    let lost = expected as i128 - received as i128;
    let lost_pct = if expected > 0 { lost as f64 * 100.0 / expected as f64 } else { 0.0 };
    let hist = std::mem::replace(&mut *lock(&shared.delays), new_histogram()?);
    let save_p = |q| writer.hist.value_at_quantile(q) as f64 / 1000.0;
    let from_send = {
        let fs = lock(&shared.from_send);
        let p = |q| fs.value_at_quantile(q) as f64 / 1000.0;
        if fs.is_empty() {
            "n/a (content too short to carry the `sub #<seq>` tag)".to_string()
        } else {
            format!(
                "p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms over {} events",
                p(0.5),
                p(0.99),
                p(0.999),
                fs.max() as f64 / 1000.0,
                fs.len()
            )
        }
    };
    let notes = vec![
        format!(
            "subscribe: {ready}/{} subscribers ready over {w} threads in {setup_secs:.2} s \
             ({failed} failed, {missing} timed out)",
            cfg.subscribers
        ),
        format!(
            "subscribe: writer {} saves ok, {} failed at {}/s; save p50 {:.2} ms, p99 {:.2} ms",
            writer.ok,
            writer.errors,
            cfg.rate,
            save_p(0.5),
            save_p(0.99)
        ),
        format!(
            "subscribe: events expected {expected}, received {received}, lost {lost} ({lost_pct:.2}%); \
             {early} arrived before the save response (delay 0), {foreign} for unknown ids"
        ),
        format!(
            "subscribe: delay from save request sent (upper bound, includes the save round trip): \
             {from_send}"
        ),
    ];
    let errors = shared.errors.load(Ordering::Relaxed) + writer.errors;
    let first_error = lock(&shared.first_error).clone().or(writer.first_error);
    Ok(Outcome { name: "subscribe".to_string(), ok: received, errors, elapsed: cfg.duration, hist, first_error, notes })
}
