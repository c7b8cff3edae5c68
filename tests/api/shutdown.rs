//! The service as a separate OS process: SPEC invariant 1 when the service
//! itself is SIGKILLed mid-load (a restart with the same consumer name
//! persists what the dead process left: every acknowledged save exactly
//! once), and graceful shutdown on SIGTERM (exit 0, nothing acknowledged lost,
//! the rest persisted by the next process, subscriptions completed).

use std::{
    collections::HashSet,
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use serde_json::{json, Value};
use tokio::{task::JoinHandle, time::Instant};

use crate::helpers::{Service, WsClient, WsEvent, WsProtocol, MESSAGE_SAVED, SAVE};
use support::PostgresServer;

/// Generous bound on every wait (start, load, drain, exit).
const BOUND: Duration = Duration::from_secs(30);
/// Acknowledged saves before the process is stopped (mid-load).
const ACKED_BEFORE_STOP: usize = 300;

/// Saves through the API of the process at `addr`; `Err` on a transport error.
async fn save(http: &reqwest::Client, addr: SocketAddr, input: Value) -> reqwest::Result<Value> {
    let body = json!({ "query": SAVE, "variables": { "input": input } });
    let req = http.post(format!("http://{addr}/graphql")).json(&body);
    req.send().await?.json().await
}

/// What these tests read of a process's Redis and PostgreSQL.
impl Service {
    /// Waits (bounded) until the persistence stream is empty and nothing is pending.
    async fn wait_drained(&self) {
        let deadline = Instant::now() + BOUND;
        loop {
            let len = self.redis.cmd(&["XLEN", "ts:persist"]).as_int();
            let pending = self.pending();
            if len == Some(0) && pending == Some(0) {
                return;
            }
            let left = format!("{len:?} entries, {pending:?} pending");
            assert!(Instant::now() < deadline, "stream: {left}\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Entries read by a persister and not yet acknowledged.
    fn pending(&self) -> Option<i64> {
        let reply = self.redis.cmd(&["XPENDING", "ts:persist", "persisters"]);
        reply.as_array().and_then(|a| a.first()?.as_int())
    }

    /// clientMessageIds PostgreSQL holds, one per row.
    fn stored_keys(&self) -> Vec<String> {
        let sql = "SELECT coalesce(client_message_id, '<none>') FROM messages";
        let out = PostgresServer::shared().psql(&self.db, sql);
        out.lines().map(str::to_owned).collect()
    }

    /// clientMessageIds still queued in the persistence stream.
    fn queued_keys(&self) -> HashSet<String> {
        // One reply element per line: entry ids, field names, message JSON.
        let out = self.redis.cli(&["XRANGE", "ts:persist", "-", "+"]);
        let bodies = out.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok());
        bodies.filter_map(|b| Some(b["k"].as_str()?.to_owned())).collect()
    }
}

/// Saves attempted (outcome unknown) and acknowledged (success response).
#[derive(Default)]
struct Ledger {
    attempted: HashSet<String>,
    acked: HashSet<String>,
}

/// Client tasks saving messages with unique clientMessageIds until stopped
/// or their first transport error (the process is gone or shutting down).
struct Load {
    ledger: Arc<Mutex<Ledger>>,
    stop: Arc<AtomicBool>,
    clients: Vec<JoinHandle<()>>,
}

impl Load {
    fn start(svc: &Service, clients: usize) -> Load {
        let ledger = Arc::<Mutex<Ledger>>::default();
        let stop = Arc::<AtomicBool>::default();
        let client = |c: usize| {
            let (ledger, stop) = (ledger.clone(), stop.clone());
            let (http, addr) = (svc.http.clone(), svc.addr);
            tokio::spawn(async move {
                for seq in 0.. {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let key = format!("c{c}-{seq}");
                    ledger.lock().expect("ledger").attempted.insert(key.clone());
                    let input = json!({
                        "threadId": format!("sd-{}", c % 2), "role": "USER", "content": key, "clientMessageId": key
                    });
                    let Ok(r) = save(&http, addr, input).await else {
                        return;
                    };
                    if r["data"]["saveMessage"]["id"].is_string() {
                        ledger.lock().expect("ledger").acked.insert(key);
                    }
                }
            })
        };
        let clients = (0..clients).map(client).collect();
        Load { ledger, stop, clients }
    }

    async fn wait_acked(&self, n: usize, svc: &Service) {
        let deadline = Instant::now() + BOUND;
        while self.ledger.lock().expect("ledger").acked.len() < n {
            assert!(Instant::now() < deadline, "stalled\n{}", svc.log());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn finish(self) -> Ledger {
        self.stop.store(true, Ordering::Relaxed);
        for c in self.clients {
            let done = tokio::time::timeout(BOUND, c).await;
            done.expect("client stops").expect("client task");
        }
        std::mem::take(&mut *self.ledger.lock().expect("ledger"))
    }
}

/// PostgreSQL holds every acknowledged save exactly once, and nothing that
/// was never attempted.
fn assert_exactly_once(svc: &Service, ledger: &Ledger) {
    let sql = "SELECT client_message_id, count(*) FROM messages GROUP BY 1 HAVING count(*) > 1";
    let dups = PostgresServer::shared().psql(&svc.db, sql);
    assert!(dups.is_empty(), "stored more than once:\n{dups}");
    let rows = svc.stored_keys();
    let stored: HashSet<String> = rows.iter().cloned().collect();
    assert_eq!(stored.len(), rows.len(), "stored twice");
    let lost: Vec<_> = ledger.acked.difference(&stored).collect();
    assert!(lost.is_empty(), "acknowledged, not in PostgreSQL: {lost:?}");
    let invented: Vec<_> = stored.difference(&ledger.attempted).collect();
    assert!(invented.is_empty(), "stored, never attempted: {invented:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_load_then_restart_persists_every_acknowledged_save_once() {
    let mut svc = Service::new("shutdown-kill");
    svc.start().await;
    let load = Load::start(&svc, 4);
    load.wait_acked(ACKED_BEFORE_STOP, &svc).await;
    // Best effort to kill mid-batch: while entries are read but not acked.
    let deadline = Instant::now() + Duration::from_secs(5);
    while svc.pending() == Some(0) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    svc.signal(libc::SIGKILL);
    svc.exit_status().await;
    let ledger = load.finish().await;

    // Same settings, same consumer name: it takes over its own pending entries.
    svc.start().await;
    svc.wait_drained().await;
    assert_exactly_once(&svc, &ledger);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_exits_zero_and_loses_nothing() {
    let mut svc = Service::new("shutdown-term");
    svc.start().await;
    let load = Load::start(&svc, 4);
    load.wait_acked(ACKED_BEFORE_STOP, &svc).await;
    svc.signal(libc::SIGTERM);
    let status = svc.exit_status().await;
    assert_eq!(status.code(), Some(0), "{status}\n{}", svc.log());
    let ledger = load.finish().await;

    // Nothing lost: each acknowledged save is in PostgreSQL or still queued.
    let mut held: HashSet<String> = svc.stored_keys().into_iter().collect();
    held.extend(svc.queued_keys());
    let lost: Vec<_> = ledger.acked.difference(&held).collect();
    assert!(lost.is_empty(), "acked, not stored or queued: {lost:?}");

    // The next process persists what was left, exactly once.
    svc.start().await;
    svc.wait_drained().await;
    assert_exactly_once(&svc, &ledger);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_completes_open_subscriptions_and_exits_zero() {
    let mut svc = Service::new("shutdown-sub");
    svc.start().await;
    let mut ws = WsClient::connect(svc.addr, WsProtocol::TransportWs).await;
    let vars = json!({ "t": "sd-sub" });
    ws.subscribe("1", MESSAGE_SAVED, vars).await;
    let probe = json!({ "threadId": "sd-sub", "role": "USER", "content": "probe" });
    ws.wait_live(|| async {
        let r = save(&svc.http, svc.addr, probe.clone()).await;
        let r = r.expect("probe saved");
        assert!(r.get("errors").is_none(), "probe save failed: {r}");
    })
    .await;

    svc.signal(libc::SIGTERM);
    let ended = loop {
        match ws.next_event(Duration::from_secs(20)).await {
            WsEvent::Data(_) => continue, // a late probe
            other => break other,
        }
    };
    let completed = matches!(&ended, WsEvent::Complete(id) if id == "1");
    assert!(completed, "not completed: {ended:?}\n{}", svc.log());
    let status = svc.exit_status().await;
    assert_eq!(status.code(), Some(0), "{status}\n{}", svc.log());
}
