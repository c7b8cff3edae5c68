//! Tier 3, PostgreSQL failover while Redis is killed or frozen (SPEC §1).
//!
//! Proves invariant 1 (every acknowledged save ends up in PostgreSQL exactly
//! once after a Redis kill -9 or SIGSTOP under load; every save succeeds while
//! PostgreSQL is up, none hangs) and invariant 3 (reads keep working during the
//! outage and, once the breaker closed again, `thread.messages` returns exactly
//! what PostgreSQL holds, createdAt strictly increasing and equal to
//! PostgreSQL's). Recovery cases (empty cache, idempotency across failover,
//! neither tier, reads while down) are in [`recovery`].

mod gate;
mod pg_restart;
mod recovery;

use std::sync::{
    atomic::{AtomicBool, Ordering},
    Arc,
};
use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::{Options, TestApp, Writers};

/// (id, createdAt) PostgreSQL holds for a thread, in thread order, createdAt
/// formatted like the API's.
pub(crate) fn pg_rows(app: &TestApp, thread: &str) -> Vec<(String, String)> {
    let sql = format!(
        "SELECT id, to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') \
         FROM messages WHERE thread_id = '{thread}' ORDER BY created_at, id"
    );
    let out = app.pg.server().psql(&app.db, &sql);
    let row = |l: &str| l.split_once('|').map(|(a, b)| (a.to_owned(), b.to_owned()));
    out.lines().map(|l| row(l).expect("id|createdAt")).collect()
}

/// (id, createdAt) of messages as the API returned them.
pub(crate) fn api_rows(messages: &[Value]) -> Vec<(String, String)> {
    let s = |v: &Value| v.as_str().expect("string").to_owned();
    messages.iter().map(|m| (s(&m["id"]), s(&m["createdAt"]))).collect()
}

/// Asserts `thread.messages` returns exactly PostgreSQL's rows, in order,
/// with PostgreSQL's createdAt, strictly increasing.
pub(crate) async fn assert_reads_match_pg(app: &TestApp, thread: &str) {
    let read = api_rows(&app.all_messages(thread).await);
    let pg = pg_rows(app, thread);
    let created: Vec<&String> = read.iter().map(|(_, c)| c).collect();
    let bad = created.windows(2).position(|w| w[0] >= w[1]);
    if read != pg || bad.is_some() {
        let at = read.iter().zip(&pg).position(|(a, b)| a != b);
        let show = |rows: &[(String, String)], i: usize| rows[i.saturating_sub(1)..(i + 2).min(rows.len())].to_vec();
        let i = at.or(bad).unwrap_or(read.len().min(pg.len()));
        panic!(
            "reads of {thread} differ from PostgreSQL: {} read, {} in PostgreSQL, first difference at {at:?}, \
             createdAt not increasing at {bad:?}\n read: {:?}\n   pg: {:?}",
            read.len(),
            pg.len(),
            show(&read, i),
            show(&pg, i),
        );
    }
}

/// Drives requests (reads) until the breaker is CLOSED again; returns the metrics.
pub(crate) async fn wait_breaker_closed(app: &TestApp, thread: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        app.gql("query($t: ID!) { thread(id: $t) { messageCount } }", json!({ "t": thread })).await;
        let m = app.storage_metrics().await;
        if m["breakerState"] == json!("CLOSED") {
            return m;
        }
        assert!(tokio::time::Instant::now() < deadline, "breaker never closed: {m}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Reads `thread` in a loop until stopped; returns the failed responses.
fn spawn_reader(app: &TestApp, thread: &str, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<Vec<Value>> {
    let (http, url) = (app.http.clone(), app.url());
    let body = json!({
        "query": "query($t: ID!) { thread(id: $t) { messageCount messages(limit: 20, order: NEWEST_FIRST) { id createdAt } } }",
        "variables": { "t": thread },
    });
    tokio::spawn(async move {
        let mut failed = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            let sent = tokio::time::timeout(Duration::from_secs(15), http.post(&url).json(&body).send());
            let r: Value = match sent.await {
                Ok(Ok(resp)) => resp.json().await.unwrap_or_else(|e| json!(e.to_string())),
                Ok(Err(e)) => json!(e.to_string()),
                Err(_) => json!("timed out"),
            };
            if r.get("errors").is_some() || r["data"]["thread"]["messages"].as_array().is_none() {
                failed.push(r);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        failed
    })
}

async fn wait_acked(writers: &Writers, n: usize, what: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while writers.acked() < n {
        assert!(tokio::time::Instant::now() < deadline, "{what}: {} of {n} saves", writers.acked());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn fast_breaker() -> Options {
    Options {
        tweak: Box::new(|s| {
            s.redis.breaker_failure_threshold = 3;
            s.redis.breaker_cooldown_ms = 500;
        }),
        ..Options::default()
    }
}

/// After the fault: breaker closed, failover visible in metrics, PostgreSQL
/// holds every acknowledged message once, reads agree with PostgreSQL.
async fn assert_recovered(app: &TestApp, threads: &[&str], acked: &[(String, String)]) {
    let m = wait_breaker_closed(app, threads[0]).await;
    assert!(m["failovers"].as_u64() >= Some(1), "{m}");
    assert!(m["failoverWrites"].as_u64() > Some(0), "{m}");
    app.wait_for_pg_count(acked.len() as i64, Duration::from_secs(60)).await;
    app.wait_drained(Duration::from_secs(30)).await;
    app.assert_pg_holds_exactly(acked.iter().map(|(_, id)| id));
    for t in threads {
        assert_reads_match_pg(app, t).await;
        let mine = acked.iter().filter(|(at, _)| at == t).count();
        assert_eq!(app.pg_count(Some(t)), mine as i64, "{t}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_under_load_loses_nothing_and_reads_stay_complete() {
    let mut app = TestApp::spawn_with(fast_breaker()).await;
    let threads = ["kill-a", "kill-b", "kill-c"];
    let writers = Writers::start(&app, &threads, Duration::from_millis(5));
    let stop = Arc::new(AtomicBool::new(false));
    let reader = spawn_reader(&app, "kill-a", stop.clone());
    wait_acked(&writers, 200, "before the kill").await;

    app.redis.kill();
    let at_kill = writers.acked();
    wait_acked(&writers, at_kill + 200, "while Redis is dead").await;
    tokio::task::block_in_place(|| app.redis.restart());
    let at_restart = writers.acked();
    wait_acked(&writers, at_restart + 200, "after the restart").await;

    let (acked, failed) = writers.finish().await;
    stop.store(true, Ordering::Relaxed);
    let read_failures = reader.await.expect("reader");
    assert!(failed.is_empty(), "{} saves failed, first: {}", failed.len(), failed[0]);
    assert!(read_failures.is_empty(), "{} reads failed: {}", read_failures.len(), read_failures[0]);
    assert_recovered(&app, &threads, &acked).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_paused_fails_over_without_hanging() {
    let app = TestApp::spawn_with(fast_breaker()).await;
    let threads = ["pause-a", "pause-b", "pause-c"];
    let writers = Writers::start(&app, &threads, Duration::from_millis(5));
    wait_acked(&writers, 100, "before the pause").await;

    app.redis.pause();
    let at_pause = writers.acked();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let during = writers.acked() - at_pause;
    app.redis.resume();
    assert!(during >= 20, "only {during} saves while Redis was frozen");
    wait_acked(&writers, writers.acked() + 100, "after the resume").await;

    // Every save finished within the writers' 15 s bound: none hung.
    let (acked, failed) = writers.finish().await;
    assert!(failed.is_empty(), "{} saves failed, first: {}", failed.len(), failed[0]);
    assert_recovered(&app, &threads, &acked).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_write_the_breaker_never_saw_is_reconciled() {
    // Default threshold (5): one failed save falls back, the breaker stays closed.
    let mut app = TestApp::spawn().await;
    let t = "one-fault";
    let input = |k: &str| json!({ "threadId": t, "role": "USER", "content": k, "clientMessageId": k });
    let first = app.save_input(input("k1")).await;
    assert_eq!(app.all_messages(t).await.len(), 1, "index warm");

    app.redis.kill();
    let written = app.save_input(input("k2")).await;
    tokio::task::block_in_place(|| app.redis.restart());
    let m = app.storage_metrics().await;
    assert_eq!((&m["breakerState"], &m["failoverWrites"]), (&json!("CLOSED"), &json!(1)), "{m}");

    // Once Redis serves again, every read is complete and a retry of k2
    // returns the message written to PostgreSQL.
    for _ in 0..10 {
        let ids: Vec<Value> = app.all_messages(t).await.iter().map(|m| m["id"].clone()).collect();
        assert_eq!(ids, vec![first["id"].clone(), written["id"].clone()], "reads of {t}");
    }
    let retry = app.save_input(input("k2")).await;
    assert_eq!(retry["id"], written["id"], "retry of k2 after Redis came back");
    app.wait_drained(Duration::from_secs(30)).await;
    assert_eq!(app.pg_count(Some(t)), 2);
    assert_reads_match_pg(&app, t).await;
}
