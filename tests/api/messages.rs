//! Save → read → persisted, byte-exact content, stable cursors, the SPEC's
//! output formats, idempotent saves (invariant 5) and the committed SDL.

use std::{collections::HashSet, time::Duration};

use serde_json::{json, Value};

use crate::helpers::{error_code, TestApp};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn save_then_read_then_persisted() {
    let app = TestApp::spawn().await;
    let content = "  héllo\twörld\r\n🙂 e\u{301} — not trimmed, not normalised  ";
    let saved = app
        .save_input(json!({ "threadId": "room-1", "role": "ASSISTANT", "content": content, "metadata": { "model": "x", "n": [1, 2.5] } }))
        .await;
    assert_eq!(saved["content"], content);
    assert_eq!(saved["persisted"], false);
    assert_eq!(saved["role"], "ASSISTANT");
    assert_eq!(saved["metadata"], json!({ "model": "x", "n": [1, 2.5] }));

    // createdAt: RFC 3339, UTC, exactly six fractional digits.
    let created = saved["createdAt"].as_str().expect("createdAt");
    assert_eq!(created.len(), "2026-11-25T21:00:00.123456Z".len(), "{created}");
    assert!(created.ends_with('Z') && created.as_bytes()[19] == b'.', "{created}");

    // Becomes persisted in the background, and PostgreSQL holds it once.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let read = loop {
        let r = app
            .gql(
                "query($id: ID!) { message(id: $id) { id content createdAt cursor persisted metadata } }",
                json!({ "id": saved["id"] }),
            )
            .await;
        let m = r["data"]["message"].clone();
        if m["persisted"] == true {
            break m;
        }
        assert!(tokio::time::Instant::now() < deadline, "never persisted: {r}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(read["content"], content, "byte-exact after the round trip through PostgreSQL too");
    assert_eq!(read["cursor"], saved["cursor"], "cursor is a stable function of the message");
    assert_eq!(read["createdAt"], saved["createdAt"]);
    assert_eq!(app.pg_count(Some("room-1")), 1);
    let stored = app.pg.server().psql(&app.db, "SELECT content FROM messages");
    assert_eq!(stored.trim_end_matches('\n'), content.trim_end_matches('\n'));

    let page = app.all_messages("room-1").await;
    assert_eq!(page.len(), 1);
    assert_eq!(page[0]["cursor"], saved["cursor"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_thread_is_empty_and_unknown_message_is_null() {
    let app = TestApp::spawn().await;
    let r = app
        .gql(
            "{ thread(id: \"nobody-here\") { id messageCount messages { id } messageConnection(first: 5) { edges { cursor } pageInfo { hasNextPage } } } message(id: \"01890a5d-ac96-774b-bcce-b302099a8057\") { id } }",
            json!({}),
        )
        .await;
    assert!(r.get("errors").is_none(), "{r}");
    assert_eq!(r["data"]["thread"]["messageCount"], 0);
    assert_eq!(r["data"]["thread"]["messages"], json!([]));
    assert_eq!(r["data"]["thread"]["messageConnection"]["edges"], json!([]));
    assert_eq!(r["data"]["message"], Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_retry_returns_the_original_and_stores_nothing_new() {
    let app = TestApp::spawn().await;
    let input = json!({ "threadId": "t-idem", "role": "USER", "content": "once", "clientMessageId": "key-1" });
    let first = app.save_input(input.clone()).await;
    let again = app.save_input(input.clone()).await;
    assert_eq!(first["id"], again["id"]);
    assert_eq!(first["createdAt"], again["createdAt"]);

    // Same key, different payload: an error, nothing stored.
    let mut other = input.clone();
    other["content"] = json!("twice");
    let r = app.try_save(other).await;
    assert_eq!(error_code(&r), "IDEMPOTENCY_KEY_REUSED");

    // The key is per thread.
    let mut elsewhere = input.clone();
    elsewhere["threadId"] = json!("t-idem-2");
    let e = app.save_input(elsewhere).await;
    assert_ne!(e["id"], first["id"]);

    app.wait_for_pg_count(2, Duration::from_secs(10)).await;
    app.wait_drained(Duration::from_secs(10)).await;
    assert_eq!(app.pg_count(Some("t-idem")), 1);
    assert_eq!(app.all_messages("t-idem").await.len(), 1);

    // After persistence (and with the body evicted from the cache) the
    // retry still answers with the original.
    app.redis.cmd(&["FLUSHALL"]);
    let late = app.save_input(input).await;
    assert_eq!(late["id"], first["id"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_retries_store_one_message() {
    let app = TestApp::spawn().await;
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let http = app.http.clone();
        let url = app.url();
        tasks.push(tokio::spawn(async move {
            let body = json!({ "query": crate::helpers::SAVE, "variables": { "input": {
                "threadId": "t-race", "role": "USER", "content": "same", "clientMessageId": "race-key" } } });
            let r: Value = http.post(url).json(&body).send().await.expect("sent").json().await.expect("json");
            r["data"]["saveMessage"]["id"].as_str().expect("id").to_owned()
        }));
    }
    let mut ids = HashSet::new();
    for t in tasks {
        ids.insert(t.await.expect("task"));
    }
    assert_eq!(ids.len(), 1, "every retry got the same message");
    app.wait_drained(Duration::from_secs(10)).await;
    assert_eq!(app.pg_count(Some("t-race")), 1);
    assert_eq!(app.all_messages("t-race").await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_serves_queries_but_not_mutations() {
    let app = TestApp::spawn().await;
    let base = format!("http://{}", app.addr);
    let q = reqwest::Client::new()
        .get(format!("{base}/graphql"))
        .query(&[("query", "{ thread(id: \"g\") { messageCount } }")])
        .send()
        .await
        .expect("get");
    assert_eq!(q.status(), 200);
    let m = reqwest::Client::new()
        .get(format!("{base}/graphql"))
        .query(&[("query", "mutation { saveMessage(input: {threadId: \"g\", role: USER, content: \"x\"}) { id } }")])
        .send()
        .await
        .expect("get");
    assert_eq!(m.status(), 405);
    assert_eq!(app.pg_count(None), 0);
    assert_eq!(app.redis.cmd(&["XLEN", "ts:persist"]).as_int(), Some(0));

    for (path, want) in [("/healthz", 200), ("/readyz", 200), ("/", 200), ("/metrics", 200)] {
        let r = reqwest::get(format!("{base}{path}")).await.expect("get");
        assert_eq!(r.status(), want, "{path}");
    }
    let metrics = reqwest::get(format!("{base}/metrics")).await.expect("metrics").text().await.expect("text");
    assert!(metrics.contains("threadstore_"), "prometheus text exported");
}

#[test]
fn committed_schema_matches_the_binary() {
    let committed =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/schema.graphql")).expect("schema.graphql");
    assert_eq!(
        committed,
        threadstore::graphql::sdl(),
        "schema.graphql drifted: run `threadstore schema > schema.graphql`"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_save_accepted_after_its_key_expired_from_redis_is_kept() {
    let app = TestApp::spawn().await;
    let input = json!({ "threadId": "t-expired", "role": "USER", "content": "hello", "clientMessageId": "old-key" });
    let first = app.save_input(input.clone()).await;
    app.wait_drained(Duration::from_secs(10)).await;
    // The key's Redis copy expires (IDEMPOTENCY_TTL_SECS) while the thread stays warm.
    app.redis.cmd(&["DEL", "ts:{t-expired}:k:old-key"]);
    let second = app.save_input(input).await;
    assert_ne!(second["id"], first["id"], "past the key's lifetime in Redis the save is new");

    // Acknowledged, so it must reach PostgreSQL, even though PostgreSQL
    // holds the key for the first message (it is kept without the key).
    app.wait_for_pg_count(2, Duration::from_secs(10)).await;
    app.wait_drained(Duration::from_secs(10)).await;
    let ids = app.pg.server().psql(&app.db, "SELECT id, client_message_id FROM messages ORDER BY created_at");
    assert!(
        ids.contains(first["id"].as_str().expect("id")) && ids.contains(second["id"].as_str().expect("id")),
        "{ids}"
    );
    let read: Vec<Value> = app.all_messages("t-expired").await.iter().map(|m| m["id"].clone()).collect();
    assert_eq!(read, vec![first["id"].clone(), second["id"].clone()]);
}
