//! `ChaosProxy`: a TCP proxy that injects network faults between the service and
//! Redis or PostgreSQL.
//!
//! Killing a server only tests one failure mode. Real networks also get slow,
//! silently drop traffic, reset connections and cut them at the worst moment
//! (right after `COMMIT` left the client). Point the service at [`ChaosProxy::addr`]
//! instead of the server and flip faults at any time: every setting is shared by
//! all connections through a `watch` channel and takes effect immediately for
//! existing and new connections. The proxy runs on the test's tokio runtime; it
//! never blocks it (state is only read in short, non-`await`ing borrows).
//! The connection engine lives in `proxy_conn.rs`.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::proxy_conn::{accept_loop, Counters, CutOn, Faults};

/// A fault-injecting TCP proxy listening on a free 127.0.0.1 port.
/// Dropping it stops accepting and resets all its connections.
pub struct ChaosProxy {
    addr: SocketAddr,
    target: SocketAddr,
    faults: watch::Sender<Faults>,
    counters: Arc<Counters>,
    accept_task: JoinHandle<()>,
}

impl ChaosProxy {
    /// Starts proxying to `target`. Must be called inside a tokio runtime (the
    /// accept loop is spawned on it).
    pub fn start(target: SocketAddr) -> ChaosProxy {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind chaos proxy");
        listener.set_nonblocking(true).expect("set proxy listener non-blocking");
        let addr = listener.local_addr().expect("proxy local_addr");
        let listener = TcpListener::from_std(listener).expect("ChaosProxy::start needs a tokio runtime");
        let (faults, rx) = watch::channel(Faults::default());
        let counters = Arc::new(Counters::default());
        let accept_task = tokio::spawn(accept_loop(listener, target, rx, counters.clone()));
        ChaosProxy { addr, target, faults, counters, accept_task }
    }

    /// Starts proxying to `127.0.0.1:port`.
    pub fn to_port(port: u16) -> ChaosProxy {
        ChaosProxy::start(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
    }

    /// Where clients should connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The proxy's own port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The proxied server.
    pub fn target(&self) -> SocketAddr {
        self.target
    }

    /// Delays every chunk, in both directions, by `latency` before forwarding it.
    pub fn set_latency(&self, latency: Duration) {
        self.faults.send_modify(|f| f.latency = latency);
    }

    /// While on, bytes are read but not forwarded, in both directions, so the
    /// connections hang. Held bytes are delivered once it is turned off, like
    /// TCP after a healed partition (use [`ChaosProxy::reset_all`] to lose them).
    pub fn blackhole(&self, on: bool) {
        self.faults.send_modify(|f| f.blackhole = on);
    }

    /// While on, new connections are accepted and immediately reset.
    pub fn refuse(&self, on: bool) {
        self.faults.send_modify(|f| f.refuse = on);
    }

    /// Resets (RST, via `SO_LINGER` 0) every currently open connection. New
    /// connections are unaffected. Connections close asynchronously; see
    /// [`ChaosProxy::wait_for_connections`].
    pub fn reset_all(&self) {
        self.faults.send_modify(|f| f.reset_gen += 1);
    }

    /// `Some(n)`: every connection, open or new, may forward `n` more bytes
    /// client→server (counted from this call or from its start), then both sides
    /// are closed (FIN, after the `n`th byte was written; the rest of that chunk
    /// is dropped). Stays armed for reconnects until `None` or [`ChaosProxy::heal`].
    pub fn cut_after_bytes(&self, n: Option<usize>) {
        self.faults.send_modify(|f| {
            f.cut_after = n;
            f.cut_gen += 1;
        });
    }

    /// The next `times` client chunks containing `pattern` are forwarded and
    /// then their connection is closed at once: the server runs the request
    /// (e.g. `COMMIT`), the client never learns its outcome.
    pub fn cut_after_match(&self, pattern: &[u8], times: u64) {
        let cut = CutOn { pattern: pattern.to_vec(), remaining: times.into(), done: 0.into() };
        self.faults.send_modify(|f| f.cut_on = Some(Arc::new(cut)));
    }

    /// Cuts made by [`ChaosProxy::cut_after_match`] since it was last set.
    pub fn match_cuts(&self) -> u64 {
        self.faults.borrow().cut_on.as_ref().map_or(0, |c| c.done.load(Ordering::SeqCst))
    }

    /// Clears every fault (latency, blackhole, refuse, cut); open connections stay open.
    pub fn heal(&self) {
        self.faults.send_modify(|f| {
            *f = Faults { cut_gen: f.cut_gen + 1, reset_gen: f.reset_gen, ..Faults::default() };
        });
    }

    /// Number of currently open client connections.
    pub fn connections(&self) -> usize {
        self.counters.open.load(Ordering::SeqCst)
    }

    /// Total bytes forwarded so far as (client→server, server→client).
    pub fn bytes_forwarded(&self) -> (u64, u64) {
        (self.counters.to_server.load(Ordering::SeqCst), self.counters.to_client.load(Ordering::SeqCst))
    }

    /// Waits until exactly `n` connections are open; false after `timeout`.
    pub async fn wait_for_connections(&self, n: usize, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.connections() != n {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        true
    }
}

impl Drop for ChaosProxy {
    fn drop(&mut self) {
        self.accept_task.abort();
        self.reset_all(); // tasks also end when they see the sender gone
    }
}
