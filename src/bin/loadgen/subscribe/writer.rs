//! The `subscribe` workload's writer: fixed-rate saves (open loop) to random
//! subscribed threads, recording when each save was sent and answered.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use hdrhistogram::Histogram;
use tokio::task::JoinSet;

use super::{lock, Shared, SubConfig};
use crate::gql::{make_content, Gql, Rng};
use crate::report::{micros, new_histogram};

pub(super) struct WriterOut {
    pub(super) ok: u64,
    pub(super) errors: u64,
    pub(super) ok_per_thread: Vec<u64>,
    pub(super) hist: Histogram<u64>,
    pub(super) first_error: Option<String>,
}

/// Saves `cfg.rate` messages per second (open loop: one task per tick) for
/// `cfg.duration`, recording each response instant in `shared.sent`.
pub(super) async fn write(gql: &Gql, cfg: &SubConfig, shared: &Arc<Shared>) -> Result<WriterOut> {
    eprintln!("subscribe: writing {}/s for {:?}", cfg.rate, cfg.duration);
    let mut out = WriterOut {
        ok: 0,
        errors: 0,
        ok_per_thread: vec![0; cfg.threads.len()],
        hist: new_histogram()?,
        first_error: None,
    };
    let mut account = |r: (usize, Duration, Result<()>)| match r.2 {
        Ok(()) => {
            out.ok += 1;
            out.ok_per_thread[r.0] += 1;
            out.hist.saturating_record(micros(r.1));
        }
        Err(e) => {
            out.errors += 1;
            out.first_error.get_or_insert_with(|| format!("writer save: {e:#}"));
        }
    };
    let mut rng = Rng::new(u64::MAX);
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(cfg.rate)));
    let end = Instant::now() + cfg.duration;
    let mut tasks = JoinSet::new();
    let mut seq = 0u64;
    loop {
        tick.tick().await;
        if Instant::now() >= end {
            break;
        }
        seq += 1;
        let idx = rng.below(cfg.threads.len());
        let thread = cfg.threads[idx].clone();
        let content = make_content(&format!("sub #{seq} "), cfg.content_bytes);
        let (gql, shared) = (gql.clone(), shared.clone());
        tasks.spawn(async move {
            let t0 = Instant::now();
            lock(&shared.sent_req).insert(seq, t0);
            let res = gql.save_message(&thread, &content).await;
            let responded = Instant::now();
            let res = res.map(|id| {
                lock(&shared.sent).insert(id, responded);
            });
            (idx, responded - t0, res)
        });
        while let Some(done) = tasks.try_join_next() {
            account(done.context("writer task panicked")?);
        }
    }
    while let Some(done) = tasks.join_next().await {
        account(done.context("writer task panicked")?);
    }
    Ok(out)
}
