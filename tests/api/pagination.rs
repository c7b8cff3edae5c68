//! Invariants 3 and 4: reads are complete and ordered whichever tier
//! answers, and thread order is total and stable — over 1,000+ messages
//! written by concurrent writers, with offset pages in both orders and
//! cursors in both directions, hot (Redis index), deep (beyond the index
//! window: PostgreSQL merged with unpersisted messages) and cold.

use std::collections::HashSet;

use serde_json::{json, Value};

use crate::helpers::{Options, TestApp};

const WRITERS: usize = 4;
const PER_WRITER: usize = 300;

async fn write_concurrently(app: &TestApp, thread: &str) -> Vec<Value> {
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let (http, url, thread) = (app.http.clone(), app.url(), thread.to_owned());
        tasks.push(tokio::spawn(async move {
            let mut saved = Vec::new();
            for i in 0..PER_WRITER {
                let body = json!({ "query": crate::helpers::SAVE, "variables": { "input": {
                    "threadId": thread, "role": "USER", "content": format!("w{w}-{i}") } } });
                let r: Value = http.post(&url).json(&body).send().await.expect("sent").json().await.expect("json");
                saved.push(r["data"]["saveMessage"].clone());
            }
            saved
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("writer"));
    }
    all
}

/// Ids in order; asserts createdAt strictly increases and nothing repeats.
fn check_order(page: &[Value]) -> Vec<String> {
    let mut seen = HashSet::new();
    for pair in page.windows(2) {
        assert!(
            pair[0]["createdAt"].as_str() < pair[1]["createdAt"].as_str(),
            "createdAt must strictly increase: {pair:?}"
        );
    }
    page.iter()
        .map(|m| {
            let id = m["id"].as_str().expect("id").to_owned();
            assert!(seen.insert(id.clone()), "duplicate {id}");
            id
        })
        .collect()
}

async fn cursor_pages(app: &TestApp, thread: &str, forward: bool, size: usize) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::new();
    let mut cursor: Option<String> = None;
    let q = if forward {
        "query($t: ID!, $n: Int!, $c: String) { thread(id: $t) { messageConnection(first: $n, after: $c) { edges { cursor node { id createdAt cursor } } pageInfo { hasNextPage hasPreviousPage } } } }"
    } else {
        "query($t: ID!, $n: Int!, $c: String) { thread(id: $t) { messageConnection(last: $n, before: $c) { edges { cursor node { id createdAt cursor } } pageInfo { hasNextPage hasPreviousPage } } } }"
    };
    loop {
        let r = app.gql(q, json!({ "t": thread, "n": size, "c": cursor })).await;
        let conn = &r["data"]["thread"]["messageConnection"];
        let edges = conn["edges"].as_array().unwrap_or_else(|| panic!("{r}")).clone();
        for e in &edges {
            assert_eq!(e["cursor"], e["node"]["cursor"], "edge cursor is the message cursor");
        }
        let nodes: Vec<Value> = edges.iter().map(|e| e["node"].clone()).collect();
        let more =
            if forward { conn["pageInfo"]["hasNextPage"] == true } else { conn["pageInfo"]["hasPreviousPage"] == true };
        if forward {
            cursor = nodes.last().map(|n| n["cursor"].as_str().expect("cursor").to_owned());
            out.extend(nodes);
        } else {
            cursor = nodes.first().map(|n| n["cursor"].as_str().expect("cursor").to_owned());
            out.splice(0..0, nodes);
        }
        if !more {
            return out;
        }
    }
}

async fn check_every_view(app: &TestApp, thread: &str, expected: &HashSet<String>) {
    let oldest = app.offset_pages(thread, "OLDEST_FIRST", 200).await;
    let ids = check_order(&oldest);
    assert_eq!(ids.iter().cloned().collect::<HashSet<_>>(), *expected, "complete: exactly the saved messages");

    let mut newest = app.offset_pages(thread, "NEWEST_FIRST", 170).await;
    newest.reverse();
    assert_eq!(check_order(&newest), ids, "newest-first is the exact reverse");

    let fwd = cursor_pages(app, thread, true, 150).await;
    assert_eq!(check_order(&fwd), ids, "forward cursors walk the same order");
    let back = cursor_pages(app, thread, false, 130).await;
    assert_eq!(check_order(&back), ids, "backward cursors walk the same order");

    let r = app.gql("query($t: ID!) { thread(id: $t) { messageCount } }", json!({ "t": thread })).await;
    assert_eq!(r["data"]["thread"]["messageCount"], json!(expected.len()), "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_then_every_view_agrees_hot_deep_and_cold() {
    // A small window so most of the thread lives beyond the Redis index.
    let app = TestApp::spawn_with(Options {
        persister: false,
        tweak: Box::new(|s| s.redis.thread_window = 100),
        ..Default::default()
    })
    .await;
    let thread = "busy-room";
    let saved = write_concurrently(&app, thread).await;
    let expected: HashSet<String> = saved.iter().map(|m| m["id"].as_str().expect("saved").to_owned()).collect();
    assert_eq!(expected.len(), WRITERS * PER_WRITER);

    // Nothing persisted yet: deep pages merge PostgreSQL (empty) with the
    // unpersisted set.
    check_every_view(&app, thread, &expected).await;

    // Persist part of it: a mix of both tiers.
    let mut persister = app.persister("pager");
    persister.persist_batch().await;
    check_every_view(&app, thread, &expected).await;

    // Everything persisted.
    while persister.persist_batch().await != threadstore::store::PersistOutcome::Idle {}
    assert_eq!(app.pg_count(Some(thread)), expected.len() as i64);
    check_every_view(&app, thread, &expected).await;

    // Cold: the cache is gone (Redis restarted empty); PostgreSQL answers
    // and the index is rebuilt.
    app.redis.cmd(&["FLUSHALL"]);
    check_every_view(&app, thread, &expected).await;

    // Order stays total after the cold start: new messages sort after all.
    let last_before = saved.iter().map(|m| m["createdAt"].as_str().expect("t").to_owned()).max().expect("some");
    let newer = app.save(thread, "after the flush").await;
    assert!(newer["createdAt"].as_str().expect("t") > last_before.as_str());

    // Cursors are stable: the same message has the same cursor everywhere.
    let by_id = app.gql("query($id: ID!) { message(id: $id) { cursor } }", json!({ "id": saved[7]["id"] })).await;
    assert_eq!(by_id["data"]["message"]["cursor"], saved[7]["cursor"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_never_sees_an_older_message_appear_before_it() {
    let app = TestApp::spawn().await;
    let first = app.save("c-room", "one").await;
    let mut after = first["cursor"].as_str().expect("cursor").to_owned();
    let mut seen = vec![first["createdAt"].as_str().expect("t").to_owned()];
    for i in 0..20 {
        app.save("c-room", &format!("m{i}")).await;
        let r = app
            .gql(
                "query($c: String) { thread(id: \"c-room\") { messageConnection(first: 200, after: $c) { edges { cursor node { createdAt } } } } }",
                json!({ "c": after }),
            )
            .await;
        let edges = r["data"]["thread"]["messageConnection"]["edges"].as_array().expect("edges").clone();
        assert_eq!(edges.len(), 1, "exactly the one new message follows the cursor: {r}");
        let t = edges[0]["node"]["createdAt"].as_str().expect("t").to_owned();
        assert!(t > *seen.last().expect("last"));
        seen.push(t);
        after = edges[0]["cursor"].as_str().expect("cursor").to_owned();
    }
}
