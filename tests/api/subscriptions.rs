//! SPEC invariant 6, end to end over a real WebSocket: a subscriber receives
//! every message saved on its thread after it subscribed, exactly once, in
//! thread order — with both subprotocols, with concurrent writers, on resume
//! (`after:`), across pub/sub connection kills, after its in-process channel
//! lagged, and while Redis is down (failover saves through the same instance).

use std::{
    collections::HashSet,
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

use serde_json::{json, Value};

use crate::helpers::{Options, TestApp, WsClient, WsProtocol, MESSAGE_SAVED};

/// Bound on the wait for any one delivery.
const WAIT: Duration = Duration::from_secs(10);
/// Content of the messages that only check the subscription is live.
const PROBE: &str = "probe";

/// Subscribes ("1") to `thread` and waits until the subscription delivers,
/// so every message saved afterwards is owed to it.
async fn subscribe_live(app: &TestApp, protocol: WsProtocol, thread: &str, rcvbuf: Option<u32>) -> WsClient {
    let mut ws = WsClient::connect_with(app.addr, protocol, rcvbuf).await;
    ws.subscribe("1", MESSAGE_SAVED, json!({ "t": thread })).await;
    ws.wait_live(|| async {
        app.save(thread, PROBE).await;
    })
    .await;
    ws
}

/// Cuts the service's pub/sub connection.
fn kill_pubsub(app: &TestApp) {
    let killed = app.redis.cmd(&["CLIENT", "KILL", "TYPE", "pubsub"]).as_int();
    assert!(killed.is_some_and(|n| n >= 1), "no pub/sub connection: {killed:?}");
}

/// Reads `messageSaved` events until the message `last_id` arrives.
async fn collect_until(ws: &mut WsClient, last_id: &Value) -> Vec<Value> {
    let mut got = Vec::new();
    loop {
        let m = ws.next_message(WAIT).await["messageSaved"].clone();
        let done = m["id"] == *last_id;
        got.push(m);
        if done {
            return got;
        }
    }
}

/// Saves a fence message and reads everything up to it: whatever was owed
/// before the fence has arrived by then, duplicates included.
async fn fence_and_collect(app: &TestApp, ws: &mut WsClient, thread: &str, saved: &mut Vec<Value>) -> Vec<Value> {
    let fence = app.save(thread, "fence").await;
    saved.push(fence.clone());
    collect_until(ws, &fence["id"]).await
}

/// `got` (probes aside) is exactly `saved` in thread order, each once, and
/// createdAt strictly increases along the whole delivery.
fn assert_delivered_exactly(got: &[Value], saved: &[Value]) {
    let mut expected: Vec<&Value> = saved.iter().collect();
    expected.sort_by(|a, b| a["createdAt"].as_str().cmp(&b["createdAt"].as_str()));
    let expected: Vec<&str> = expected.iter().map(|m| m["id"].as_str().expect("saved id")).collect();
    let unique: HashSet<&str> = expected.iter().copied().collect();
    assert_eq!(unique.len(), saved.len(), "the saves returned duplicate ids");
    let delivered: Vec<&str> =
        got.iter().filter(|m| m["content"] != PROBE).map(|m| m["id"].as_str().expect("delivered id")).collect();
    if delivered != expected {
        let seen: HashSet<&str> = delivered.iter().copied().collect();
        let at = delivered.iter().zip(&expected).take_while(|(d, e)| d == e).count();
        panic!(
            "delivery differs from the saves in thread order: {} delivered, {} saved, {} missing, {} unknown, {} duplicates; \
             first difference at #{at}: delivered {:?}, expected {:?}",
            delivered.len(),
            expected.len(),
            unique.difference(&seen).count(),
            seen.difference(&unique).count(),
            delivered.len() - seen.len(),
            delivered.get(at),
            expected.get(at),
        );
    }
    let created: Vec<&str> = got.iter().map(|m| m["createdAt"].as_str().expect("createdAt")).collect();
    for w in created.windows(2) {
        assert!(w[0] < w[1], "createdAt not strictly increasing: {} then {}", w[0], w[1]);
    }
}

async fn live_delivery(protocol: WsProtocol, writers: usize, per_writer: usize) {
    let app = TestApp::spawn().await;
    let thread = "sub-live";
    let mut ws = subscribe_live(&app, protocol, thread, None).await;
    let writer = |w: usize| {
        let app = &app;
        async move {
            let mut out = Vec::new();
            for i in 0..per_writer {
                out.push(app.save(thread, &format!("w{w}-{i}")).await);
            }
            out
        }
    };
    let saved = futures::future::join_all((0..writers).map(writer)).await;
    let mut saved: Vec<Value> = saved.into_iter().flatten().collect();
    let got = fence_and_collect(&app, &mut ws, thread, &mut saved).await;
    assert_delivered_exactly(&got, &saved);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transport_ws_delivers_concurrent_saves_once_in_order() {
    live_delivery(WsProtocol::TransportWs, 2, 25).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_graphql_ws_delivers_saves_once_in_order() {
    live_delivery(WsProtocol::LegacyWs, 1, 15).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_after_cursor_replays_then_goes_live() {
    let app = TestApp::spawn().await;
    let thread = "sub-resume";
    let mut before = Vec::new();
    for i in 1..=10 {
        before.push(app.save(thread, &format!("m{i}")).await);
    }
    let cursor = before[3]["cursor"].as_str().expect("cursor");
    let mut ws = WsClient::connect(app.addr, WsProtocol::TransportWs).await;
    let vars = json!({ "t": thread, "after": cursor });
    ws.subscribe("1", MESSAGE_SAVED, vars).await;

    // Replay: exactly messages 5..=10, before anything live is saved.
    let mut replayed = Vec::new();
    for _ in 4..10 {
        replayed.push(ws.next_message(WAIT).await["messageSaved"].clone());
    }
    assert_delivered_exactly(&replayed, &before[4..]);

    // Then live, with no duplicate of the replay.
    let mut live = Vec::new();
    for i in 11..=15 {
        live.push(app.save(thread, &format!("m{i}")).await);
    }
    let got = fence_and_collect(&app, &mut ws, thread, &mut live).await;
    assert_delivered_exactly(&got, &live);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pubsub_connection_kills_lose_nothing() {
    let app = TestApp::spawn().await;
    let thread = "sub-pubsub";
    let mut ws = subscribe_live(&app, WsProtocol::TransportWs, thread, None).await;
    const TOTAL: usize = 150;
    let progress = AtomicUsize::new(0);
    let writer = async {
        let mut out = Vec::new();
        for i in 0..TOTAL {
            out.push(app.save(thread, &format!("m{i}")).await);
            progress.store(i + 1, Ordering::SeqCst);
        }
        out
    };
    let killer = async {
        for at in [30, 70, 110] {
            // Wait for the writer to get there and for the service to be
            // (re)subscribed, then cut its pub/sub connection.
            let deadline = tokio::time::Instant::now() + WAIT;
            let subscribed = || !app.redis.cli(&["CLIENT", "LIST", "TYPE", "pubsub"]).is_empty();
            while progress.load(Ordering::SeqCst) < at || !subscribed() {
                assert!(tokio::time::Instant::now() < deadline, "writer or reconnect stalled");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            kill_pubsub(&app);
        }
    };
    let (mut saved, ()) = tokio::join!(writer, killer);

    // A slow reconnect: while the service may not PSUBSCRIBE, saves publish to
    // nobody and no later save follows them, so only the resync after the
    // reconnect can deliver them.
    let acl = |rule| app.redis.cli(&["ACL", "SETUSER", "default", rule]);
    assert_eq!(acl("-psubscribe"), "OK");
    kill_pubsub(&app);
    for i in 0..5 {
        saved.push(app.save(thread, &format!("unheard-{i}")).await);
    }
    assert_eq!(acl("+psubscribe"), "OK");
    let mut got = collect_until(&mut ws, &saved[saved.len() - 1]["id"]).await;
    got.extend(fence_and_collect(&app, &mut ws, thread, &mut saved).await);
    assert_delivered_exactly(&got, &saved);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lagging_receiver_gets_the_gap_re_read() {
    let app = TestApp::spawn().await;
    let thread = "sub-lag";
    // A tiny receive window: once the service's socket buffer (≤ 4 MiB) is
    // full, its feed stops polling and the 256-event channel overflows.
    let mut ws = subscribe_live(&app, WsProtocol::TransportWs, thread, Some(4096)).await;
    // Enough 32 kB messages to fill that buffer, then overflow the channel.
    let wmem_max = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_wmem")
        .ok()
        .and_then(|s| s.split_whitespace().nth(2)?.parse().ok());
    let total = wmem_max.unwrap_or(4 << 20) / 32_000 + 256 + 64;
    let filler = "x".repeat(32_000);
    let mut saved = Vec::with_capacity(total);
    for i in 0..total {
        let mut m = app.save(thread, &format!("{i:04} {filler}")).await;
        m["content"] = Value::Null; // keep only what the checks need
        saved.push(m);
    }
    let got = fence_and_collect(&app, &mut ws, thread, &mut saved).await;
    assert_delivered_exactly(&got, &saved);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_get_failover_saves_while_redis_is_down() {
    let app = TestApp::spawn_with(Options {
        redis_proxy: true,
        tweak: Box::new(|s| {
            s.redis.breaker_failure_threshold = 1;
            s.redis.breaker_cooldown_ms = 500;
        }),
        ..Default::default()
    })
    .await;
    let thread = "sub-failover";
    let mut ws = subscribe_live(&app, WsProtocol::TransportWs, thread, None).await;
    app.wait_drained(WAIT).await;

    let proxy = app.redis_proxy.as_ref().expect("redis proxy");
    proxy.blackhole(true);
    let mut saved = Vec::new();
    for i in 0..10 {
        let m = app.save(thread, &format!("down-{i}")).await;
        assert_eq!(m["persisted"], true, "not a failover save: {m}");
        saved.push(m);
    }
    let got = fence_and_collect(&app, &mut ws, thread, &mut saved).await;
    assert_delivered_exactly(&got, &saved);
}
