//! Where the CPU-heavy phases of a request run: parsing a long text and
//! async-graphql's validation. On this service's runtime every worker
//! thread also carries WebSocket pings, `/healthz`, `/metrics` and the
//! shutdown signal, so a phase that computes for milliseconds there delays
//! all of them. Heavy phases run on tokio's blocking threads instead, at
//! most `workers` at a time, with at most `queue` more waiting; a request
//! past that is refused at once (`SERVICE_OVERLOADED`) rather than queued
//! without bound.
//!
//! Validation has no entry point of its own in async-graphql: it runs
//! synchronously inside the first poll of `Schema::execute` (and of a
//! subscription stream). [`ComputePool::first_poll`] makes that first poll
//! on a blocking thread and every later one (resolvers waiting on Redis or
//! PostgreSQL) back on the runtime as usual.

use std::{
    future::Future,
    pin::Pin,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    task::{Context, Poll},
};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The pool is full: the request was not run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overloaded;

/// Bounded admission to the blocking threads. Cheap to clone.
#[derive(Clone)]
pub struct ComputePool {
    permits: Arc<Semaphore>,
    waiting: Arc<AtomicUsize>,
    queue: usize,
}

/// Counts a waiter while it waits, also when its request is dropped (a
/// deadline) mid-wait.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl ComputePool {
    /// At most `workers` heavy phases at once, `queue` more waiting.
    pub fn new(workers: usize, queue: usize) -> Self {
        Self { permits: Arc::new(Semaphore::new(workers.max(1))), waiting: Arc::default(), queue }
    }

    async fn admit(&self) -> Result<OwnedSemaphorePermit, Overloaded> {
        if let Ok(p) = self.permits.clone().try_acquire_owned() {
            return Ok(p);
        }
        let waiting = Waiting(&self.waiting);
        if waiting.0.fetch_add(1, Ordering::Relaxed) >= self.queue {
            return Err(Overloaded);
        }
        self.permits.clone().acquire_owned().await.map_err(|_| Overloaded)
    }

    /// Runs `f` on a blocking thread once admitted.
    pub async fn run<T, F>(&self, f: F) -> Result<T, Overloaded>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let permit = self.admit().await?;
        let out = tokio::task::spawn_blocking(move || {
            let out = f();
            drop(permit);
            out
        })
        .await;
        joined(out)
    }

    /// Awaits `fut`, making its first poll on a blocking thread once
    /// admitted.
    pub async fn first_poll<F>(&self, fut: F) -> Result<F::Output, Overloaded>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let permit = self.admit().await?;
        // The first poll registers this task's waker with whatever the
        // future waits on, so a wake-up while it is away re-polls this task.
        let waker = std::future::poll_fn(|cx| Poll::Ready(cx.waker().clone())).await;
        let mut fut: Pin<Box<F>> = Box::pin(fut);
        let polled = tokio::task::spawn_blocking(move || {
            let first = fut.as_mut().poll(&mut Context::from_waker(&waker));
            drop(permit);
            (fut, first)
        })
        .await;
        match joined(polled)? {
            (_, Poll::Ready(out)) => Ok(out),
            // Polled again here at once: a wake-up that came before the
            // future was handed back is not lost.
            (fut, Poll::Pending) => Ok(fut.await),
        }
    }
}

/// A panic on the blocking thread carries on here, as it would have had the
/// phase run on this task; a blocking task the runtime cancelled (it is
/// shutting down) is a refusal.
fn joined<T>(r: Result<T, tokio::task::JoinError>) -> Result<T, Overloaded> {
    match r {
        Ok(v) => Ok(v),
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => Err(Overloaded),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Waits (bounded) until `cond` holds.
    async fn until(what: &str, cond: impl Fn() -> bool) {
        for _ in 0..2_000 {
            if cond() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("{what}: not within 10 s");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn refuses_past_the_queue_and_runs_the_rest() {
        let pool = ComputePool::new(1, 1);
        let (hold_tx, hold_rx) = std::sync::mpsc::channel::<()>();
        let busy = tokio::spawn({
            let pool = pool.clone();
            async move { pool.run(move || hold_rx.recv().is_ok()).await }
        });
        until("the worker is taken", || pool.permits.available_permits() == 0).await;
        let queued = tokio::spawn({
            let pool = pool.clone();
            async move { pool.run(|| 7).await }
        });
        until("one request waits", || pool.waiting.load(Ordering::Relaxed) == 1).await;
        assert_eq!(pool.run(|| 8).await, Err(Overloaded), "one running, one waiting: the third is refused");
        hold_tx.send(()).expect("release");
        let bound = Duration::from_secs(10);
        assert_eq!(tokio::time::timeout(bound, busy).await.expect("in time").expect("joins"), Ok(true));
        assert_eq!(tokio::time::timeout(bound, queued).await.expect("in time").expect("joins"), Ok(7));
        assert_eq!(pool.run(|| 9).await, Ok(9), "free again");
        assert_eq!(pool.waiting.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn a_wake_up_while_the_first_poll_is_away_is_not_lost() {
        let pool = ComputePool::new(1, 0);
        let (tx, mut rx) = tokio::sync::oneshot::channel::<u32>();
        let fut = async move {
            // Registers this task's waker, then the value arrives (and the
            // waker fires) while the poll is still on the blocking thread.
            assert!(futures::poll!(&mut rx).is_pending());
            tx.send(41).expect("send");
            std::thread::sleep(Duration::from_millis(20));
            futures::pending!();
            rx.await.unwrap_or(0) + 1
        };
        let out = tokio::time::timeout(Duration::from_secs(10), pool.first_poll(fut)).await;
        assert_eq!(out.expect("not lost"), Ok(42));
    }
}
