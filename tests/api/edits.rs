//! `editMessage` (SPEC §7) through both tiers, checked by what PostgreSQL
//! ends up holding: the last acknowledged version, every earlier version
//! once in history, nothing stored for a refused edit, and the last change
//! winning whatever order the persister applies changes in.

use std::time::Duration;

use serde_json::{json, Value};

use crate::failover::wait_breaker_closed;
use crate::helpers::{drain, error_code, Options, TestApp};

const EDIT: &str = "mutation($id: ID!, $c: String, $m: JSON, $v: Int) { \
    editMessage(id: $id, content: $c, metadata: $m, expectedVersion: $v) { \
    id content metadata version editedAt createdAt } }";

const READ: &str =
    "query($t: ID!) { thread(id: $t) { messages(limit: 200) { id content metadata version editedAt } } }";

async fn edit(app: &TestApp, vars: Value) -> Value {
    app.gql(EDIT, vars).await
}

/// The edited message, or a panic with the response.
fn edited(r: &Value) -> &Value {
    let m = &r["data"]["editMessage"];
    assert!(m.is_object(), "edit failed: {r}");
    m
}

async fn saved_id(app: &TestApp, thread: &str, content: &str) -> String {
    app.save(thread, content).await["id"].as_str().expect("id").to_owned()
}

async fn read_one(app: &TestApp, thread: &str) -> Value {
    let r = app.gql(READ, json!({ "t": thread })).await;
    let messages = r["data"]["thread"]["messages"].as_array().unwrap_or_else(|| panic!("{r}")).clone();
    assert_eq!(messages.len(), 1, "{r}");
    messages[0].clone()
}

/// (content, version) of the row.
fn pg_row(app: &TestApp, id: &str) -> (String, i64) {
    let out = app.pg.server().psql(&app.db, &format!("SELECT content, version FROM messages WHERE id = '{id}'"));
    let (c, v) = out.trim().split_once('|').unwrap_or_else(|| panic!("row of {id}: {out:?}"));
    (c.to_owned(), v.parse().expect("version"))
}

/// (version, content) of the history rows, oldest first.
fn pg_history(app: &TestApp, id: &str) -> Vec<(i64, String)> {
    let sql = format!("SELECT version, content FROM message_versions WHERE message_id = '{id}' ORDER BY version");
    let out = app.pg.server().psql(&app.db, &sql);
    out.lines()
        .filter_map(|l| l.split_once('|'))
        .map(|(v, c)| (v.trim().parse().expect("version"), c.to_owned()))
        .collect()
}

fn history(pairs: &[(i64, &str)]) -> Vec<(i64, String)> {
    pairs.iter().map(|(v, c)| (*v, (*c).to_owned())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_apply_through_redis_and_reach_postgres_with_history() {
    let app = TestApp::spawn().await;
    let t = "edit-redis";
    let id = saved_id(&app, t, "one").await;
    let r = edit(&app, json!({ "id": id, "c": "two", "v": 1 })).await;
    let m = edited(&r);
    assert_eq!((&m["content"], &m["version"]), (&json!("two"), &json!(2)), "{r}");
    assert!(m["editedAt"].is_string(), "{r}");
    assert_eq!(m["id"], json!(id));
    let read = read_one(&app, t).await;
    assert_eq!((&read["content"], &read["version"]), (&json!("two"), &json!(2)), "read after the edit");

    let r = edit(&app, json!({ "id": id, "m": { "score": 5 } })).await;
    let m = edited(&r);
    assert_eq!((&m["content"], &m["metadata"], &m["version"]), (&json!("two"), &json!({"score": 5}), &json!(3)));

    app.wait_drained(Duration::from_secs(30)).await;
    assert_eq!(pg_row(&app, &id), ("two".into(), 3));
    assert_eq!(pg_history(&app, &id), history(&[(1, "one"), (2, "two")]));
    let read = read_one(&app, t).await;
    assert_eq!((&read["metadata"], &read["version"]), (&json!({"score": 5}), &json!(3)), "read after persisting");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_edits_get_their_codes_and_store_nothing() {
    let app = TestApp::spawn().await;
    let t = "edit-refused";
    let id = saved_id(&app, t, "one").await;
    edited(&edit(&app, json!({ "id": id, "c": "two", "v": 1 })).await);

    let r = edit(&app, json!({ "id": id, "c": "other", "v": 1 })).await;
    assert_eq!(error_code(&r), "VERSION_CONFLICT", "{r}");
    assert_eq!(r["errors"][0]["extensions"]["currentVersion"], json!(2), "{r}");
    // A retry of the edit that made version 2 returns it as it is.
    let r = edit(&app, json!({ "id": id, "c": "two", "v": 1 })).await;
    assert_eq!((&edited(&r)["version"], &edited(&r)["content"]), (&json!(2), &json!("two")));

    for (vars, code) in [
        (json!({ "id": id }), "BAD_USER_INPUT"),
        (json!({ "id": id, "c": "" }), "BAD_USER_INPUT"),
        (json!({ "id": id, "c": "x\u{0}y" }), "BAD_USER_INPUT"),
        (json!({ "id": id, "m": [1, 2] }), "BAD_USER_INPUT"),
        (json!({ "id": id, "c": "x", "v": 0 }), "BAD_USER_INPUT"),
        (json!({ "id": "not-a-uuid", "c": "x" }), "BAD_USER_INPUT"),
        (json!({ "id": "0190b3a0-0000-7000-8000-000000000000", "c": "x" }), "NOT_FOUND"),
    ] {
        let r = edit(&app, vars.clone()).await;
        assert_eq!(error_code(&r), code, "{vars} -> {r}");
        assert!(r["data"].is_null() || r["data"]["editMessage"].is_null(), "{r}");
    }
    app.wait_drained(Duration::from_secs(30)).await;
    assert_eq!(pg_row(&app, &id), ("two".into(), 2));
    assert_eq!(pg_history(&app, &id), history(&[(1, "one")]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_go_to_postgres_when_the_breaker_is_forced_open() {
    let app =
        TestApp::spawn_with(Options { tweak: Box::new(|s| s.redis.force_failover = true), ..Options::default() }).await;
    let t = "edit-failover";
    let id = saved_id(&app, t, "one").await;
    let m = edit(&app, json!({ "id": id, "c": "two", "v": 1 })).await;
    assert_eq!(edited(&m)["version"], json!(2));
    let r = edit(&app, json!({ "id": id, "c": "other", "v": 1 })).await;
    assert_eq!(error_code(&r), "VERSION_CONFLICT", "{r}");
    assert_eq!(r["errors"][0]["extensions"]["currentVersion"], json!(2), "{r}");
    let r = edit(&app, json!({ "id": id, "c": "two", "v": 1 })).await;
    assert_eq!(edited(&r)["version"], json!(2), "retry through PostgreSQL");
    // Committed before the answer: PostgreSQL holds it now.
    assert_eq!(pg_row(&app, &id), ("two".into(), 2));
    assert_eq!(pg_history(&app, &id), history(&[(1, "one")]));
    assert_eq!(read_one(&app, t).await["content"], json!("two"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_made_while_redis_is_down_replaces_its_cached_copy() {
    let mut app = TestApp::spawn().await;
    let t = "edit-outage";
    let id = saved_id(&app, t, "one").await;
    app.wait_drained(Duration::from_secs(30)).await;
    assert_eq!(read_one(&app, t).await["content"], json!("one"), "cached in Redis");

    app.redis.kill();
    let m = edit(&app, json!({ "id": id, "c": "two" })).await;
    assert_eq!(edited(&m)["version"], json!(2));
    tokio::task::block_in_place(|| app.redis.restart());
    wait_breaker_closed(&app, t).await;
    // Redis came back holding the old body (AOF): the hand-back drops it.
    for _ in 0..10 {
        let read = read_one(&app, t).await;
        assert_eq!((&read["content"], &read["version"]), (&json!("two"), &json!(2)), "read after Redis returned");
    }
    let m = edit(&app, json!({ "id": id, "c": "three", "v": 2 })).await;
    assert_eq!(edited(&m)["version"], json!(3), "an edit through Redis after the hand-back");
    app.wait_drained(Duration::from_secs(30)).await;
    assert_eq!(pg_row(&app, &id), ("three".into(), 3));
    assert_eq!(pg_history(&app, &id), history(&[(1, "one"), (2, "two")]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_are_accepted_while_postgres_is_down_and_persisted_later() {
    let mut app = TestApp::spawn_with(Options {
        own_postgres: true,
        tweak: Box::new(|s| s.database.pg_timeout_ms = 1000),
        ..Options::default()
    })
    .await;
    let t = "edit-pg-down";
    let id = saved_id(&app, t, "one").await;
    app.wait_drained(Duration::from_secs(30)).await;
    // A read primes the thread index, so Redis alone can answer reads.
    assert_eq!(read_one(&app, t).await["content"], json!("one"));
    tokio::task::block_in_place(|| app.pg.server_mut().expect("own cluster").stop_immediate());
    let m = edit(&app, json!({ "id": id, "c": "two", "v": 1 })).await;
    assert_eq!(edited(&m)["version"], json!(2));
    assert_eq!(read_one(&app, t).await["content"], json!("two"));
    tokio::task::block_in_place(|| app.pg.server_mut().expect("own cluster").start_again());
    app.wait_drained(Duration::from_secs(60)).await;
    assert_eq!(pg_row(&app, &id), ("two".into(), 2));
    assert_eq!(pg_history(&app, &id), history(&[(1, "one")]));
}

/// The persistence stream, re-queued in reverse: the persister meets the
/// changes newest first, one per batch. PostgreSQL must still end at the
/// last change, with every earlier version in history once, and Redis must
/// end with nothing marked unpersisted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_applied_newest_first_end_at_the_last_change() {
    let app = TestApp::spawn_with(Options {
        persister: false,
        tweak: Box::new(|s| s.persist.persist_batch_size = 1),
        ..Options::default()
    })
    .await;
    let t = "edit-order";
    let id = saved_id(&app, t, "one").await;
    edited(&edit(&app, json!({ "id": id, "c": "two" })).await);
    edited(&edit(&app, json!({ "id": id, "c": "three" })).await);

    let entries = app.redis.cmd(&["XRANGE", "ts:persist", "-", "+"]).to_string();
    let fields = stream_fields(&app);
    assert_eq!(fields.len(), 3, "{entries}");
    app.redis.cmd(&["DEL", "ts:persist"]);
    for f in fields.iter().rev() {
        let mut args = vec!["XADD", "ts:persist", "*"];
        args.extend(f.iter().map(String::as_str));
        app.redis.cmd(&args);
    }
    let mut p = app.persister("p");
    drain(&mut p, Duration::from_secs(30)).await;
    assert_eq!(pg_row(&app, &id), ("three".into(), 3));
    assert_eq!(pg_history(&app, &id), history(&[(1, "one"), (2, "two")]));
    assert_eq!(app.redis.cli(&["ZCARD", &format!("ts:{{{t}}}:unp")]), "0", "unpersisted set after persisting");
    let read = read_one(&app, t).await;
    assert_eq!((&read["content"], &read["version"]), (&json!("three"), &json!(3)));
}

/// Each stream entry's field/value list, oldest first.
fn stream_fields(app: &TestApp) -> Vec<Vec<String>> {
    use support::RespValue;
    let RespValue::Array(entries) = app.redis.cmd(&["XRANGE", "ts:persist", "-", "+"]) else { panic!("XRANGE") };
    entries
        .into_iter()
        .map(|e| {
            let RespValue::Array(mut pair) = e else { panic!("entry") };
            let RespValue::Array(fields) = pair.remove(1) else { panic!("fields") };
            fields.into_iter().map(|f| f.to_string()).collect()
        })
        .collect()
}

const DELETE: &str =
    "mutation($id: ID!) { deleteMessage(id: $id) { id content metadata version deletedAt createdAt } }";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_soft_delete_leaves_a_tombstone_in_place_through_both_tiers() {
    for failover in [false, true] {
        let app = TestApp::spawn_with(Options {
            tweak: Box::new(move |s| s.redis.force_failover = failover),
            ..Options::default()
        })
        .await;
        let t = "delete-soft";
        let first = saved_id(&app, t, "first").await;
        let id = saved_id(&app, t, "secret").await;
        let last = saved_id(&app, t, "last").await;
        edited(&edit(&app, json!({ "id": id, "m": { "k": 1 } })).await);
        let r = app.gql(DELETE, json!({ "id": id })).await;
        let tomb = &r["data"]["deleteMessage"];
        assert_eq!(
            (&tomb["content"], &tomb["metadata"], &tomb["version"]),
            (&json!(""), &Value::Null, &json!(3)),
            "{r}"
        );
        assert!(tomb["deletedAt"].is_string(), "{r}");
        // Deleting twice returns the tombstone; editing it is refused.
        let again = app.gql(DELETE, json!({ "id": id })).await;
        assert_eq!(again["data"]["deleteMessage"], *tomb, "failover={failover}");
        let r = edit(&app, json!({ "id": id, "c": "back" })).await;
        assert_eq!(error_code(&r), "MESSAGE_DELETED", "{r}");
        // The tombstone keeps its place.
        let r = app.gql(READ, json!({ "t": t })).await;
        let ids: Vec<&Value> =
            r["data"]["thread"]["messages"].as_array().expect("messages").iter().map(|m| &m["id"]).collect();
        assert_eq!(ids, vec![&json!(first), &json!(id), &json!(last)], "failover={failover}");

        app.wait_drained(Duration::from_secs(30)).await;
        assert_eq!(pg_row(&app, &id), (String::new(), 3), "failover={failover}");
        let out = app
            .pg
            .server()
            .psql(&app.db, &format!("SELECT metadata IS NULL, deleted_at IS NOT NULL FROM messages WHERE id = '{id}'"));
        assert_eq!(out.trim(), "t|t", "failover={failover}");
        assert_eq!(pg_history(&app, &id), history(&[(1, "secret"), (2, "secret")]), "failover={failover}");
    }
}
