//! Read seeding: tops threads up to a message count with parallel saves, then
//! waits (bounded) for the persistence backlog the seed created.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tokio::task::JoinSet;

use super::{LoopConfig, ThreadCounts, CONNECT_BACKOFF};
use crate::gql::{is_connect_error, make_content, Gql};

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
