//! The connection engine behind [`super::ChaosProxy`]: the accept loop and the
//! per-connection pumps that apply the current [`Faults`] to every chunk.
//!
//! Kept apart from the public API so each file stays small. Each connection is
//! one task: two pumps (one per direction) and a reset watcher raced in a
//! `select!`, so the connection ends as soon as either side closes.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// The fault settings shared by all connections (see `ChaosProxy`'s setters).
#[derive(Clone, Debug, Default)]
pub struct Faults {
    pub latency: Duration,
    pub blackhole: bool,
    pub refuse: bool,
    pub cut_after: Option<usize>,
    /// Bumped by every `cut_after_bytes`/`heal`, so connections restart their budget.
    pub cut_gen: u64,
    /// Bumped by `reset_all`; connections started under an older value reset.
    pub reset_gen: u64,
    /// Cut a connection right after forwarding a client chunk that contains
    /// this pattern (e.g. `COMMIT`), a limited number of times.
    pub cut_on: Option<Arc<CutOn>>,
}

/// A pattern-triggered cut: the request reaches the server, its answer never
/// reaches the client (the outcome is unknown to it).
#[derive(Debug)]
pub struct CutOn {
    pub pattern: Vec<u8>,
    /// Cuts left.
    pub remaining: AtomicU64,
    /// Cuts made.
    pub done: AtomicU64,
}

impl CutOn {
    /// Whether `chunk` triggers a cut (and takes one from the budget).
    fn fires(&self, chunk: &[u8]) -> bool {
        let hit = !self.pattern.is_empty() && chunk.windows(self.pattern.len()).any(|w| w == self.pattern);
        if hit && self.remaining.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
            self.done.fetch_add(1, Ordering::SeqCst);
            return true;
        }
        false
    }
}

/// Connection and byte counters shared with the proxy handle.
#[derive(Default)]
pub struct Counters {
    pub open: AtomicUsize,
    pub to_server: AtomicU64,
    pub to_client: AtomicU64,
}

/// How one proxied connection ended.
#[derive(Clone, Copy, PartialEq, Eq)]
enum End {
    Eof,
    Error,
    Reset,
    Cut,
}

/// Accepts clients until the task is aborted, spawning one task per connection.
pub async fn accept_loop(
    listener: TcpListener,
    target: SocketAddr,
    rx: watch::Receiver<Faults>,
    counters: Arc<Counters>,
) {
    loop {
        let client = match listener.accept().await {
            Ok((client, _)) => client,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(10)).await; // e.g. EMFILE
                continue;
            }
        };
        if rx.borrow().refuse {
            let _ = client.set_zero_linger();
            continue;
        }
        counters.open.fetch_add(1, Ordering::SeqCst);
        tokio::spawn(connection(client, target, rx.clone(), counters.clone()));
    }
}

/// Decrements the open-connection count when a connection task ends (or is dropped).
struct OpenGuard(Arc<Counters>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn connection(client: TcpStream, target: SocketAddr, mut rx: watch::Receiver<Faults>, counters: Arc<Counters>) {
    let _open = OpenGuard(counters.clone());
    let reset_gen = rx.borrow_and_update().reset_gen;
    let upstream = tokio::select! {
        upstream = TcpStream::connect(target) => upstream,
        _ = reset_signal(&mut rx, reset_gen) => Err(std::io::ErrorKind::ConnectionReset.into()),
    };
    let Ok(upstream) = upstream else {
        let _ = client.set_zero_linger();
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let (mut client_rd, mut client_wr) = client.into_split();
    let (mut server_rd, mut server_wr) = upstream.into_split();
    let end = tokio::select! {
        end = pump(&mut client_rd, &mut server_wr, rx.clone(), &counters.to_server, true) => end,
        end = pump(&mut server_rd, &mut client_wr, rx.clone(), &counters.to_client, false) => end,
        _ = reset_signal(&mut rx, reset_gen) => End::Reset,
    };
    if matches!(end, End::Reset | End::Error) {
        // Reunite so that dropping sends RST instead of FIN (a dropped write half shuts down).
        for stream in [client_rd.reunite(client_wr), server_rd.reunite(server_wr)].into_iter().flatten() {
            let _ = stream.set_zero_linger();
        }
    }
}

/// Completes once `reset_all` was called after the connection started (or the proxy is gone).
async fn reset_signal(rx: &mut watch::Receiver<Faults>, reset_gen: u64) {
    while rx.borrow_and_update().reset_gen == reset_gen {
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// Forwards one direction chunk by chunk, applying the current faults to each.
async fn pump(
    src: &mut OwnedReadHalf,
    dst: &mut OwnedWriteHalf,
    mut rx: watch::Receiver<Faults>,
    forwarded: &AtomicU64,
    to_server: bool,
) -> End {
    let mut buf = vec![0u8; 16 * 1024];
    let (mut cut_gen, mut budget) = {
        let f = rx.borrow();
        (f.cut_gen, f.cut_after)
    };
    loop {
        let n = match src.read(&mut buf).await {
            Ok(0) => return End::Eof,
            Ok(n) => n,
            Err(_) => return End::Error,
        };
        let faults = loop {
            let f = rx.borrow_and_update().clone();
            if !f.blackhole {
                break f;
            }
            if rx.changed().await.is_err() {
                return End::Reset;
            }
        };
        if !faults.latency.is_zero() {
            tokio::time::sleep(faults.latency).await;
        }
        let mut len = n;
        let mut cut = false;
        if to_server {
            let f = rx.borrow();
            if f.cut_gen != cut_gen {
                (cut_gen, budget) = (f.cut_gen, f.cut_after);
            }
            if let Some(left) = budget {
                len = n.min(left);
                budget = Some(left - len);
                cut = left == len;
            }
            if f.cut_on.as_ref().is_some_and(|c| c.fires(&buf[..n])) {
                (len, cut) = (n, true);
            }
        }
        if len > 0 {
            if dst.write_all(&buf[..len]).await.is_err() {
                return End::Error;
            }
            forwarded.fetch_add(len as u64, Ordering::SeqCst);
        }
        if cut {
            return End::Cut;
        }
    }
}
