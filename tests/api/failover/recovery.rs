//! Failover edge cases (SPEC §1 tier 3, §3 errors).
//!
//! Proves invariant 3 after a Redis restart with an empty cache and while
//! Redis is down (every read shape returns exactly PostgreSQL's set, ordered;
//! new saves get createdAt above all older ones), invariant 5 across failover
//! (a retried or concurrently repeated clientMessageId returns the original,
//! and the reconcile step restores keys written to PostgreSQL), and the
//! STORAGE_UNAVAILABLE contract (neither tier: an error, nothing stored).

use std::time::Duration;

use serde_json::{json, Value};

use super::{api_rows, assert_reads_match_pg, pg_rows, wait_breaker_closed};
use crate::helpers::{drain, error_code, Options, TestApp};

const CONNECTION: &str = "query($t: ID!, $a: String) { thread(id: $t) { \
    messageConnection(first: 70, after: $a) { edges { cursor node { id createdAt } } \
    pageInfo { hasNextPage endCursor } } } }";

async fn save_n(app: &TestApp, thread: &str, from: usize, to: usize) -> Vec<Value> {
    let mut saved = Vec::new();
    for i in from..to {
        saved.push(app.save(thread, &format!("{thread} {i}")).await);
    }
    saved
}

/// The whole thread through `messageConnection(first:, after:)`.
async fn connection_pages(app: &TestApp, thread: &str) -> Vec<Value> {
    let (mut out, mut after) = (Vec::new(), Value::Null);
    loop {
        let r = app.gql(CONNECTION, json!({ "t": thread, "a": after })).await;
        let conn = &r["data"]["thread"]["messageConnection"];
        let edges = conn["edges"].as_array().unwrap_or_else(|| panic!("{r}"));
        out.extend(edges.iter().map(|e| e["node"].clone()));
        if conn["pageInfo"]["hasNextPage"] != json!(true) {
            return out;
        }
        after = conn["pageInfo"]["endCursor"].clone();
    }
}

async fn message_count(app: &TestApp, thread: &str) -> Value {
    let r = app.gql("query($t: ID!) { thread(id: $t) { messageCount } }", json!({ "t": thread }));
    r.await["data"]["thread"]["messageCount"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_with_an_empty_cache_reads_exactly_what_postgres_holds() {
    let mut app = TestApp::spawn_with(Options {
        persister: false,
        tweak: Box::new(|s| s.redis.thread_window = 100),
        ..Options::default()
    })
    .await;
    let t = "wiped";
    save_n(&app, t, 0, 300).await;
    let mut p = app.persister("p");
    assert_eq!(drain(&mut p, Duration::from_secs(60)).await.entries, 300);
    tokio::task::block_in_place(|| app.redis.wipe_and_restart());

    let pg = pg_rows(&app, t);
    assert_eq!(pg.len(), 300);
    assert_eq!(api_rows(&app.offset_pages(t, "OLDEST_FIRST", 200).await), pg);
    let mut newest = api_rows(&app.offset_pages(t, "NEWEST_FIRST", 200).await);
    newest.reverse();
    assert_eq!(newest, pg, "NEWEST_FIRST pages");
    assert_eq!(message_count(&app, t).await, json!(300));
    assert_eq!(api_rows(&connection_pages(&app, t).await), pg, "connection pages");

    // New saves land after everything older, and reads merge them in.
    let newest_old = pg.last().expect("rows").1.clone();
    let fresh = save_n(&app, t, 300, 320).await;
    let created: Vec<&str> = fresh.iter().map(|m| m["createdAt"].as_str().expect("ts")).collect();
    assert!(created[0] > newest_old.as_str(), "{} <= {newest_old}", created[0]);
    assert!(created.windows(2).all(|w| w[0] < w[1]), "{created:?}");
    let mut want = pg.clone();
    want.extend(api_rows(&fresh));
    assert_eq!(api_rows(&app.offset_pages(t, "OLDEST_FIRST", 200).await), want);
    assert_eq!(message_count(&app, t).await, json!(320));
    assert_eq!(drain(&mut p, Duration::from_secs(60)).await.entries, 20);
    assert_eq!(pg_rows(&app, t), want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_retries_return_the_original_across_failover() {
    let mut app = TestApp::spawn_with(Options {
        persister: false,
        tweak: Box::new(|s| s.redis.breaker_cooldown_ms = 500),
        ..Options::default()
    })
    .await;
    let t = "idem";
    let input =
        |k: &str| json!({ "threadId": t, "role": "USER", "content": format!("payload {k}"), "clientMessageId": k });
    let mut p = app.persister("p");

    // (a) accepted by Redis, persisted, retried while Redis is dead.
    let first = app.save_input(input("k1")).await;
    drain(&mut p, Duration::from_secs(30)).await;
    app.redis.kill();
    let retry = app.save_input(input("k1")).await;
    for field in ["id", "createdAt", "cursor"] {
        assert_eq!(retry[field], first[field], "retry of k1 while Redis is down: {field}");
    }

    // (b) written in failover, retried concurrently, then again once Redis is back.
    let tries = futures::future::join_all((0..5).map(|_| app.try_save(input("k2")))).await;
    let ids: Vec<&Value> = tries.iter().map(|r| &r["data"]["saveMessage"]["id"]).collect();
    assert!(ids.iter().all(|id| id.is_string() && *id == ids[0]), "{tries:?}");
    tokio::task::block_in_place(|| app.redis.restart());
    wait_breaker_closed(&app, t).await;
    // Reconcile runs before the next Redis call (paced after a failed
    // attempt): drive requests until it has restored the key.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let key = loop {
        let key = app.redis.get(&format!("ts:{{{t}}}:k:k2"));
        if key.is_some() || tokio::time::Instant::now() > deadline {
            break key;
        }
        app.all_messages(t).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(key.as_deref(), ids[0].as_str(), "reconcile restored the idempotency key");
    let again = app.save_input(input("k2")).await;
    assert_eq!(&again["id"], ids[0], "retry of k2 after Redis came back");

    drain(&mut p, Duration::from_secs(30)).await;
    let sql = format!("SELECT client_message_id, count(*) FROM messages WHERE thread_id = '{t}' GROUP BY 1 ORDER BY 1");
    assert_eq!(app.pg.server().psql(&app.db, &sql), "k1|1\nk2|1");
    assert_reads_match_pg(&app, t).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn neither_tier_returns_storage_unavailable_and_stores_nothing() {
    let mut app = TestApp::spawn_with(Options {
        persister: false,
        own_postgres: true,
        tweak: Box::new(|s| s.database.pg_timeout_ms = 1000),
        ..Options::default()
    })
    .await;
    let t = "neither";
    let before = app.save(t, "before the outage").await;
    let input = json!({ "threadId": t, "role": "USER", "content": "never stored", "clientMessageId": "lost" });

    app.redis.kill();
    tokio::task::block_in_place(|| app.pg.server_mut().expect("own cluster").stop_immediate());
    let r = tokio::time::timeout(Duration::from_secs(20), app.try_save(input.clone()))
        .await
        .expect("the save must fail in bounded time, not hang");
    assert_eq!(error_code(&r), "STORAGE_UNAVAILABLE", "{r}");
    assert!(r["data"].is_null() || r["data"]["saveMessage"].is_null(), "{r}");
    let message = r["errors"][0]["message"].as_str().unwrap_or_default().to_lowercase();
    for internal in ["postgres", "redis", "select", "insert", "connection", "sql", "panicked", ".rs:"] {
        assert!(!message.contains(internal), "internal text {internal:?} reached the client: {message}");
    }

    tokio::task::block_in_place(|| {
        app.redis.restart();
        app.pg.server_mut().expect("own cluster").start_again();
    });
    assert!(app.redis.get(&format!("ts:{{{t}}}:k:lost")).is_none(), "idempotency key stored");
    let stream = app.redis.cmd(&["XRANGE", "ts:persist", "-", "+"]).to_string();
    assert!(!stream.contains("never stored"), "queued for persistence: {stream}");
    let mut p = app.persister("p");
    drain(&mut p, Duration::from_secs(30)).await;
    assert_eq!(app.pg_ids(t), vec![before["id"].as_str().expect("id").to_owned()]);
    let read = app.all_messages(t).await;
    assert_eq!(read.len(), 1, "{read:?}");

    // The key was never taken: using it now stores exactly one message.
    let saved = app.save_input(input).await;
    drain(&mut p, Duration::from_secs(30)).await;
    assert_eq!(app.pg_count(Some(t)), 2);
    assert_eq!(app.all_messages(t).await[1]["id"], saved["id"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persisted_messages_stay_readable_while_redis_is_down() {
    let mut app = TestApp::spawn_with(Options { persister: false, ..Options::default() }).await;
    let t = "down-reads";
    let saved = save_n(&app, t, 0, 12).await;
    let mut p = app.persister("p");
    drain(&mut p, Duration::from_secs(30)).await;
    app.redis.kill();

    let want = api_rows(&saved);
    let read = app.all_messages(t).await;
    assert_eq!(api_rows(&read), want, "thread.messages while Redis is down");
    assert!(read.iter().all(|m| m["persisted"] == json!(true)), "{read:?}");
    let cursors: Vec<&Value> = read.iter().map(|m| &m["cursor"]).collect();
    assert_eq!(cursors, saved.iter().map(|m| &m["cursor"]).collect::<Vec<_>>(), "cursors stable");
    let mut newest = api_rows(&app.offset_pages(t, "NEWEST_FIRST", 200).await);
    newest.reverse();
    assert_eq!(newest, want);
    assert_eq!(api_rows(&connection_pages(&app, t).await), want);
    assert_eq!(message_count(&app, t).await, json!(12));
    let q = "query($id: ID!) { message(id: $id) { id createdAt persisted } }";
    for m in &saved {
        let r = app.gql(q, json!({ "id": m["id"] })).await;
        let got = &r["data"]["message"];
        assert_eq!((&got["id"], &got["createdAt"]), (&m["id"], &m["createdAt"]), "{r}");
        assert_eq!(got["persisted"], json!(true));
    }
}
