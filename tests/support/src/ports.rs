//! Free loopback TCP ports for the server fixtures.
//!
//! Servers are started on a port chosen by the test (so a restarted server comes
//! back on the *same* port and clients can reconnect). The usual trick — bind
//! `127.0.0.1:0`, read the port, drop the listener — has two weaknesses that this
//! module avoids:
//!
//! * the kernel may hand the same port to two threads in a row, so ports already
//!   handed out by this process are never handed out again;
//! * a port from the ephemeral range can be grabbed by some *outgoing*
//!   connection while a server is down for a restart. Ports are therefore picked
//!   below `net.ipv4.ip_local_port_range` whenever there is room for it.

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

/// Lowest port considered when picking below the ephemeral range.
const LOW_PORT_FLOOR: u16 = 10_000;

/// Ports already returned by [`free_port`] in this process.
static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// Returns a 127.0.0.1 TCP port that is free right now and was not returned
/// before by this process.
///
/// Nothing reserves the port after the call returns, so a server start can still
/// (rarely) lose a race with another process; the fixtures retry with a new port
/// when a server fails to start.
pub fn free_port() -> u16 {
    let mut handed_out = HANDED_OUT.lock().expect("free_port mutex poisoned");
    let port = below_ephemeral_range(&handed_out).unwrap_or_else(|| kernel_assigned(&handed_out));
    handed_out.insert(port);
    port
}

/// Calls `start` with a fresh [`free_port`] until it succeeds, at most 5 times
/// (a start can lose a race for its port with another process). `start` must
/// clean up after a failure. Returns the last error.
pub fn with_free_port(what: &str, mut start: impl FnMut(u16) -> Result<(), String>) -> Result<(), String> {
    let mut result = Err(String::new());
    for attempt in 1..=5 {
        let port = free_port();
        result = start(port);
        match &result {
            Ok(()) => break,
            Err(e) => eprintln!("{what} on port {port} failed to start (attempt {attempt}/5): {e}"),
        }
    }
    result
}

/// Probes ports between [`LOW_PORT_FLOOR`] and the start of the ephemeral range,
/// starting at a pseudo-random offset (different per process and per call).
fn below_ephemeral_range(taken: &BTreeSet<u16>) -> Option<u16> {
    let ephemeral_low = ephemeral_range_start()?;
    let span = u32::from(ephemeral_low.checked_sub(LOW_PORT_FLOOR)?);
    if span < 1_000 {
        return None;
    }
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    let seed = nanos ^ std::process::id().wrapping_mul(2_654_435_761);
    (0..span)
        .map(|i| LOW_PORT_FLOOR + ((seed.wrapping_add(i.wrapping_mul(7_919))) % span) as u16)
        .filter(|port| !taken.contains(port))
        .find(|&port| TcpListener::bind(("127.0.0.1", port)).is_ok())
}

/// Fallback: let the kernel choose, skipping ports already handed out.
fn kernel_assigned(taken: &BTreeSet<u16>) -> u16 {
    for _ in 0..1_000 {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0 to find a free port");
        let port = listener.local_addr().expect("local_addr of probe listener").port();
        if !taken.contains(&port) {
            return port;
        }
    }
    panic!("could not find a free loopback port");
}

/// First port of the kernel's ephemeral range, if it can be read.
fn ephemeral_range_start() -> Option<u16> {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    text.split_whitespace().next()?.parse().ok()
}
