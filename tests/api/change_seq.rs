//! The per-thread change sequence (SPEC §7) and `Thread.eventCursor`.
//!
//! Every change takes the thread's next number where the thread's writes
//! are serialised: the save script, or the failover transaction under the
//! thread's row lock. These tests check the outcome in PostgreSQL: numbers
//! strictly increasing in thread order through Redis saves, failover saves,
//! the hand-back and an expired thread state, and `eventCursor` naming the
//! thread's latest change.

use std::time::Duration;

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use serde_json::json;

use crate::failover::wait_breaker_closed;
use crate::helpers::TestApp;

/// (change_seq, createdAt µs) of a thread's rows, in thread order.
fn pg_sequence(app: &TestApp, thread: &str) -> Vec<(i64, i64)> {
    let sql = format!(
        "SELECT change_seq, (extract(epoch FROM created_at) * 1000000)::bigint \
         FROM messages WHERE thread_id = '{thread}' ORDER BY created_at, id"
    );
    let out = app.pg.server().psql(&app.db, &sql);
    let num = |s: &str| s.trim().parse::<i64>().unwrap_or_else(|e| panic!("{s:?}: {e}"));
    out.lines().filter_map(|l| l.split_once('|')).map(|(q, c)| (num(q), num(c))).collect()
}

/// Asserts the numbers rise strictly along thread order and never lag
/// their message's createdAt (both come from the same clock).
fn assert_rising(rows: &[(i64, i64)], what: &str) {
    for w in rows.windows(2) {
        assert!(w[0].0 < w[1].0, "{what}: change_seq {} then {} in thread order: {rows:?}", w[0].0, w[1].0);
    }
    for (seq, created) in rows {
        assert!(seq >= created, "{what}: change_seq {seq} below createdAt {created}");
    }
}

/// The change sequence an event cursor names (the test knows the format;
/// clients must treat it as opaque).
fn seq_of(cursor: &serde_json::Value) -> i64 {
    let raw = URL_SAFE_NO_PAD.decode(cursor.as_str().expect("cursor string")).expect("base64");
    let raw = String::from_utf8(raw).expect("utf8");
    raw.strip_prefix("e1:").and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("event cursor {raw}"))
}

/// A page and the event cursor in ONE query, as a client starting a feed
/// reads them.
async fn page_and_cursor(app: &TestApp, thread: &str) -> (usize, i64) {
    let r = app
        .gql(
            "query($t: ID!) { thread(id: $t) { messages(limit: 200, order: NEWEST_FIRST) { id } eventCursor } }",
            json!({ "t": thread }),
        )
        .await;
    let t = &r["data"]["thread"];
    let n = t["messages"].as_array().unwrap_or_else(|| panic!("{r}")).len();
    (n, seq_of(&t["eventCursor"]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_change_sequence_rises_through_redis_failover_and_hand_back() {
    let mut app = TestApp::spawn().await;
    let t = "seq-tiers";
    assert_eq!(page_and_cursor(&app, t).await, (0, 0), "an empty thread's cursor");
    for i in 0..5 {
        app.save(t, &format!("redis {i}")).await;
    }
    let (_, before_outage) = page_and_cursor(&app, t).await;

    app.redis.kill();
    for i in 0..4 {
        app.save(t, &format!("failover {i}")).await;
    }
    // PostgreSQL alone answers: its newest change is a failover write.
    let (n, during) = page_and_cursor(&app, t).await;
    assert!(
        n >= 4 && during > before_outage,
        "cursor {before_outage} -> {during} with {n} messages while Redis is down"
    );
    tokio::task::block_in_place(|| app.redis.restart());
    wait_breaker_closed(&app, t).await;
    // Until the failover writes are reconciled into Redis (the breaker may
    // never have opened, and a failed reconcile is retried 250 ms later),
    // PostgreSQL alone answers and "redis 4", unpersisted in Redis, is not
    // in the page yet (README, invariant 3's limit).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while page_and_cursor(&app, t).await.0 < 9 {
        assert!(tokio::time::Instant::now() < deadline, "the hand-back never completed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for i in 0..3 {
        app.save(t, &format!("after {i}")).await;
    }
    let (n, after) = page_and_cursor(&app, t).await;
    assert_eq!(n, 12, "every message in the page after the hand-back");
    assert!(after > during, "cursor {during} -> {after} after the hand-back");

    app.wait_drained(Duration::from_secs(30)).await;
    let rows = pg_sequence(&app, t);
    assert_eq!(rows.len(), 12);
    assert_rising(&rows, "redis, failover, hand-back");
    assert_eq!(after, rows.last().expect("rows").0, "eventCursor names the thread's latest change");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_thread_state_keeps_the_sequence_rising() {
    let app = TestApp::spawn().await;
    let t = "seq-cold";
    for i in 0..3 {
        app.save(t, &format!("warm {i}")).await;
    }
    app.wait_drained(Duration::from_secs(30)).await;
    let newest = pg_sequence(&app, t).last().expect("rows").0;
    // The thread's Redis state is cache: when it expires, the cursor comes
    // from PostgreSQL and the next number from the clock.
    app.redis.cmd(&["DEL", &format!("ts:{{{t}}}:meta"), &format!("ts:{{{t}}}:idx")]);
    assert_eq!(page_and_cursor(&app, t).await.1, newest, "cursor of a cold thread");
    app.redis.cmd(&["DEL", &format!("ts:{{{t}}}:meta"), &format!("ts:{{{t}}}:idx")]);
    app.save(t, "cold").await;
    app.wait_drained(Duration::from_secs(30)).await;
    let rows = pg_sequence(&app, t);
    assert_eq!(rows.len(), 4);
    assert_rising(&rows, "after the thread state expired");
}

/// A generated workload: concurrent writers on one thread. Every save gets
/// its own number, in the thread's order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_get_distinct_numbers_in_thread_order() {
    let app = std::sync::Arc::new(TestApp::spawn().await);
    let t = "seq-concurrent";
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let app = app.clone();
            tokio::spawn(async move {
                for i in 0..25 {
                    app.save(t, &format!("w{w} {i}")).await;
                }
            })
        })
        .collect();
    for w in writers {
        w.await.expect("writer");
    }
    let (_, cursor) = page_and_cursor(&app, t).await;
    app.wait_drained(Duration::from_secs(30)).await;
    let rows = pg_sequence(&app, t);
    assert_eq!(rows.len(), 200);
    assert_rising(&rows, "8 concurrent writers");
    assert_eq!(cursor, rows.last().expect("rows").0);
}
