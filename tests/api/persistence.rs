//! Tier 2, the background persister (SPEC §1 "background persistence").
//!
//! Proves invariant 2 (an unpersisted message carries no TTL and lives in a
//! Redis that never evicts; the cache TTL starts only after COMMIT) and
//! invariant 1 for the persistence pipeline: at-least-once delivery made
//! exactly-once by the idempotent insert (redelivery after a crash between
//! COMMIT and XACK) and entries of a dead consumer reclaimed. Poison entries
//! and a PostgreSQL outage under load are in [`faults`].

mod faults;

use std::time::Duration;

use serde_json::{json, Value};
use threadstore::store::PersistOutcome;

use crate::helpers::{drain, Drained, Options, TestApp};

pub(crate) fn body_key(t: &str, id: &str) -> String {
    format!("ts:{{{t}}}:m:{id}")
}

pub(crate) fn unp_key(t: &str) -> String {
    format!("ts:{{{t}}}:unp")
}

pub(crate) async fn save_n(app: &TestApp, thread: &str, n: usize) -> Vec<String> {
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let m = app.save(thread, &format!("{thread} {i}")).await;
        ids.push(m["id"].as_str().expect("saved id").to_owned());
    }
    ids
}

async fn persisted_flag(app: &TestApp, id: &str) -> Value {
    let q = "query($id: ID!) { message(id: $id) { persisted } }";
    app.gql(q, json!({ "id": id })).await["data"]["message"]["persisted"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unpersisted_messages_never_expire_until_postgres_holds_them() {
    let app = TestApp::spawn_with(Options {
        persister: false,
        tweak: Box::new(|s| s.redis.cache_ttl_secs = 600),
        ..Options::default()
    })
    .await;
    let policy = app.redis.cmd(&["CONFIG", "GET", "maxmemory-policy"]);
    let policy = policy.as_array().and_then(|a| a.get(1)).and_then(|v| v.as_str());
    assert_eq!(policy, Some("noeviction"), "the test Redis must never evict");

    let t = "ttl";
    let ids = save_n(&app, t, 5).await;
    for id in &ids {
        let ttl = app.redis.cmd(&["TTL", &body_key(t, id)]).as_int();
        assert_eq!(ttl, Some(-1), "unpersisted body {id} has a TTL");
        let loc_ttl = app.redis.cmd(&["TTL", &format!("ts:loc:{id}")]).as_int();
        assert_eq!(loc_ttl, Some(-1), "unpersisted locator {id} has a TTL");
        let body = app.redis.get(&body_key(t, id)).expect("body cached");
        assert!(body.starts_with('0'), "fresh body flagged persisted: {body}");
        assert!(!app.redis.cmd(&["ZSCORE", &unp_key(t), id]).is_nil(), "{id} not in unp");
    }
    assert_eq!(app.pg_count(Some(t)), 0);

    let mut p = app.persister("ttl");
    let done = drain(&mut p, Duration::from_secs(30)).await;
    assert_eq!(done, Drained { entries: 5, inserted: 5 });

    for id in &ids {
        let ttl = app.redis.cmd(&["TTL", &body_key(t, id)]).as_int().expect("TTL");
        assert!((1..=600).contains(&ttl), "persisted body {id} has TTL {ttl}, not the cache TTL");
        let body = app.redis.get(&body_key(t, id)).expect("body still cached");
        assert!(body.starts_with('1'), "persisted body not flagged: {body}");
        assert_eq!(persisted_flag(&app, id).await, json!(true));
    }
    assert_eq!(app.redis.cmd(&["ZCARD", &unp_key(t)]).as_int(), Some(0));
    assert_eq!(app.pg_ids(t), ids, "PostgreSQL holds each message once, in order");
    let read = app.all_messages(t).await;
    assert!(read.iter().all(|m| m["persisted"] == json!(true)), "{read:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_redelivered_after_commit_without_ack_is_stored_once() {
    let app = TestApp::spawn_with(Options { persister: false, ..Options::default() }).await;
    let mut ids = save_n(&app, "redeliver-a", 12).await;
    ids.extend(save_n(&app, "redeliver-b", 8).await);

    // The process "crashes" between COMMIT and XACK: Redis refuses the ack.
    let acl = app.redis.cmd(&["ACL", "SETUSER", "default", "-xack"]);
    assert_eq!(acl.as_str(), Some("OK"), "{acl:?}");
    let mut first = app.persister("crashy");
    assert_eq!(first.persist_batch().await, PersistOutcome::RetryLater);
    assert_eq!(app.pg_count(None), 20, "the batch was committed");
    assert_eq!(app.stream_pending(), 20, "committed entries are still pending");
    drop(first);
    app.redis.cmd(&["ACL", "SETUSER", "default", "+xack"]);

    // The restarted consumer gets its pending entries again.
    let mut again = app.persister("crashy");
    let done = drain(&mut again, Duration::from_secs(30)).await;
    assert_eq!(done, Drained { entries: 20, inserted: 0 }, "redelivered; nothing new stored");
    app.assert_pg_holds_exactly(&ids);
    assert_eq!(app.stream_pending(), 0);
    assert_eq!(app.redis.cmd(&["XLEN", "ts:persist"]).as_int(), Some(0));
    for id in &ids {
        assert_eq!(persisted_flag(&app, id).await, json!(true), "{id}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_of_a_dead_consumer_are_claimed_and_stored_once() {
    let app = TestApp::spawn_with(Options {
        persister: false,
        pg_proxy: true,
        tweak: Box::new(|s| {
            s.persist.persist_claim_idle_ms = 500;
            s.database.pg_timeout_ms = 1000;
        }),
        ..Options::default()
    })
    .await;
    let ids = save_n(&app, "claim", 30).await;
    let proxy = app.pg_proxy.as_ref().expect("pg proxy");
    proxy.refuse(true);
    proxy.reset_all();

    // Consumer A reads the batch, cannot commit, and dies.
    let mut doomed = app.persister("doomed");
    assert_eq!(doomed.persist_batch().await, PersistOutcome::RetryLater);
    drop(doomed);
    assert_eq!(app.pg_count(None), 0);
    let pending = app.redis.cmd(&["XPENDING", "ts:persist", "persisters"]);
    assert_eq!(pending.to_string().lines().last(), Some("30"), "A holds the batch: {pending}");
    assert!(pending.to_string().contains("doomed"), "{pending}");
    proxy.heal();

    // Consumer B claims it once it has been idle long enough.
    let mut rescuer = app.persister("rescuer");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut done = Drained::default();
    while app.stream_pending() > 0 || app.pg_count(None) < 30 {
        assert!(tokio::time::Instant::now() < deadline, "not claimed: {done:?}");
        match rescuer.persist_batch().await {
            PersistOutcome::Persisted { entries, inserted } => {
                done.entries += entries;
                done.inserted += inserted;
            }
            PersistOutcome::RetryLater => tokio::time::sleep(Duration::from_millis(50)).await,
            PersistOutcome::Idle => {}
        }
    }
    assert_eq!(done, Drained { entries: 30, inserted: 30 });
    app.assert_pg_holds_exactly(&ids);
    assert_eq!(app.redis.cmd(&["XLEN", "ts:persist"]).as_int(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_delivered_to_a_lost_read_are_persisted_without_waiting_for_a_claim() {
    let app = TestApp::spawn_with(Options { persister: false, redis_proxy: true, ..Options::default() }).await;
    let mut p = app.persister("p");
    assert_eq!(drain(&mut p, Duration::from_secs(30)).await, Drained::default());
    let ids = save_n(&app, "lost-read", 5).await;

    // The read times out, but Redis still runs it once the partition heals:
    // the entries are delivered to this consumer and the reply is lost.
    let proxy = app.redis_proxy.as_ref().expect("redis proxy");
    proxy.blackhole(true);
    assert_eq!(p.persist_batch().await, PersistOutcome::RetryLater);
    proxy.heal();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while app.stream_pending() < 5 {
        assert!(tokio::time::Instant::now() < deadline, "the held read never ran");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Well before the claim timeout (30 s) the persister picks them up again.
    let done = drain(&mut p, Duration::from_secs(10)).await;
    assert_eq!(done, Drained { entries: 5, inserted: 5 });
    app.assert_pg_holds_exactly(&ids);
    assert_eq!(app.stream_pending(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_saves_to_new_threads_are_accepted_while_postgres_is_down() {
    // A keyed save on a thread Redis has no state for normally asks
    // PostgreSQL about the key first; with PostgreSQL down it must still be
    // accepted (Redis takes it and the persister catches up).
    let mut app = TestApp::spawn_with(Options {
        own_postgres: true,
        tweak: Box::new(|s| s.database.pg_timeout_ms = 1000),
        ..Options::default()
    })
    .await;
    tokio::task::block_in_place(|| app.pg.server_mut().expect("own cluster").stop_immediate());
    let saved = app
        .save_input(json!({ "threadId": "brand-new", "role": "USER", "content": "hi", "clientMessageId": "k-1" }))
        .await;
    tokio::task::block_in_place(|| app.pg.server_mut().expect("own cluster").start_again());
    app.wait_for_pg_count(1, Duration::from_secs(60)).await;
    assert_eq!(app.pg_ids("brand-new"), vec![saved["id"].as_str().expect("id").to_owned()]);
}
