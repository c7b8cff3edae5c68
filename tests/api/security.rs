//! Authentication and per-thread authorization: tokens (HS256, RS256,
//! ES256; exp, nbf, iss, aud), members only, the owner and service
//! principals, authorId from the token, subscriptions ended on removal,
//! membership correct through a Redis outage, and rate limits.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{encode, EncodingKey, Header};
use serde_json::{json, Value};
use threadstore::config::AuthMode;

use crate::helpers::{error_code, Options, TestApp, WsClient, WsEvent, WsProtocol, MESSAGE_SAVED};

const SAVE: &str = "mutation($input: MessageCreate!) { saveMessage(input: $input) { id content authorId cursor } }";

const SECRET: &str = "0123456789abcdef0123456789abcdef-test";
const ISSUER: &str = "https://issuer.test";
const AUDIENCE: &str = "threadstore";

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// An HS256 token for `sub` with the right issuer and audience, plus `extra` claims.
fn token(sub: &str, extra: Value) -> String {
    let mut claims = json!({ "sub": sub, "exp": now() + 600, "iss": ISSUER, "aud": AUDIENCE });
    if let (Some(c), Some(e)) = (claims.as_object_mut(), extra.as_object()) {
        c.extend(e.clone());
    }
    encode(&Header::default(), &claims, &EncodingKey::from_secret(SECRET.as_bytes())).expect("token")
}

fn service(sub: &str) -> String {
    token(sub, json!({ "role": "service" }))
}

async fn spawn_jwt() -> TestApp {
    spawn_with_auth(|_| {}).await
}

async fn spawn_with_auth(more: fn(&mut threadstore::config::Settings)) -> TestApp {
    TestApp::spawn_with(Options {
        tweak: Box::new(move |s| {
            s.auth.auth_mode = AuthMode::Jwt;
            s.auth.jwt_secret = Some(SECRET.to_string().into());
            s.auth.jwt_issuer = Some(ISSUER.into());
            s.auth.jwt_audience = Some(AUDIENCE.into());
            more(s);
        }),
        ..Options::default()
    })
    .await
}

/// POSTs a GraphQL request with `token` as bearer; (status, body).
async fn gql_as(app: &TestApp, token: Option<&str>, query: &str, variables: Value) -> (u16, Value) {
    let mut req =
        app.http.post(format!("http://{}/graphql", app.addr)).json(&json!({ "query": query, "variables": variables }));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn save_as(app: &TestApp, token: &str, thread: &str, content: &str) -> Value {
    let input = json!({ "threadId": thread, "role": "USER", "content": content });
    gql_as(app, Some(token), SAVE, json!({ "input": input })).await.1
}

const READ: &str = "query($t: ID!) { thread(id: $t) { messages { id content authorId } } }";
const ADD: &str = "mutation($t: ID!, $u: ID!) { addThreadMember(threadId: $t, userId: $u) }";
const REMOVE: &str = "mutation($t: ID!, $u: ID!) { removeThreadMember(threadId: $t, userId: $u) }";

async fn read_as(app: &TestApp, token: &str, thread: &str) -> Value {
    gql_as(app, Some(token), READ, json!({ "t": thread })).await.1
}

#[tokio::test]
async fn missing_or_bad_tokens_are_401_and_store_nothing() {
    let app = spawn_jwt().await;
    let input = json!({ "input": { "threadId": "t1", "role": "USER", "content": "hi" } });
    let cases: Vec<(&str, Option<String>)> = vec![
        ("no token", None),
        ("garbage", Some("not.a.jwt".into())),
        ("expired", Some(token("alice", json!({ "exp": now() - 3600 })))),
        ("not yet valid", Some(token("alice", json!({ "nbf": now() + 3600 })))),
        ("wrong issuer", Some(token("alice", json!({ "iss": "https://evil.test" })))),
        ("wrong audience", Some(token("alice", json!({ "aud": "someone-else" })))),
        ("no sub", Some(token("", json!({})))),
        ("other key", {
            let claims = json!({ "sub": "alice", "exp": now() + 600, "iss": ISSUER, "aud": AUDIENCE });
            Some(
                encode(&Header::default(), &claims, &EncodingKey::from_secret(b"another-secret-another-secret-xx"))
                    .expect("t"),
            )
        }),
    ];
    for (what, t) in cases {
        let (status, body) = gql_as(&app, t.as_deref(), SAVE, input.clone()).await;
        assert_eq!(status, 401, "{what}: {body}");
        assert_eq!(error_code(&body), "UNAUTHENTICATED", "{what}: {body}");
    }
    assert_eq!(app.pg_count(None), 0);
    assert_eq!(app.redis.cli(&["KEYS", "ts:{t1}*"]), "(empty array)", "nothing reached Redis");
    let ok = save_as(&app, &token("alice", json!({})), "t1", "hi").await;
    assert_eq!(ok["data"]["saveMessage"]["content"], "hi", "{ok}");
}

#[tokio::test]
async fn threads_are_for_members_only_and_authors_come_from_the_token() {
    let app = spawn_jwt().await;
    let (alice, bob) = (token("alice", json!({})), token("bob", json!({})));
    let saved = save_as(&app, &alice, "room", "alice's").await;
    assert_eq!(saved["data"]["saveMessage"]["content"], "alice's", "{saved}");
    // Bob: no read, no write, no watch; a thread that does not exist says the same.
    assert_eq!(error_code(&read_as(&app, &bob, "room").await), "FORBIDDEN");
    assert_eq!(error_code(&read_as(&app, &bob, "no-such-thread").await), "FORBIDDEN");
    assert_eq!(error_code(&save_as(&app, &bob, "room", "bob's").await), "FORBIDDEN");
    let id = saved["data"]["saveMessage"]["id"].as_str().expect("id").to_owned();
    let (_, by_id) = gql_as(&app, Some(&bob), "query($i: ID!) { message(id: $i) { id } }", json!({ "i": id })).await;
    assert!(by_id["data"]["message"].is_null(), "message(id) hides it: {by_id}");
    // Bob may not add himself; Alice (the owner) may.
    let (_, r) = gql_as(&app, Some(&bob), ADD, json!({ "t": "room", "u": "bob" })).await;
    assert_eq!(error_code(&r), "FORBIDDEN");
    let (_, r) = gql_as(&app, Some(&alice), ADD, json!({ "t": "room", "u": "bob" })).await;
    assert_eq!(r["data"]["addThreadMember"], true, "{r}");
    let r = save_as(&app, &bob, "room", "bob's").await;
    assert_eq!(r["data"]["saveMessage"]["content"], "bob's", "{r}");
    let page = read_as(&app, &bob, "room").await;
    let authors: Vec<&str> = page["data"]["thread"]["messages"]
        .as_array()
        .expect("page")
        .iter()
        .filter_map(|m| m["authorId"].as_str())
        .collect();
    assert_eq!(authors, ["alice", "bob"]);
    // A member who is not the owner manages nothing; the owner can't be removed.
    let (_, r) = gql_as(&app, Some(&bob), REMOVE, json!({ "t": "room", "u": "alice" })).await;
    assert_eq!(error_code(&r), "FORBIDDEN");
    // The client cannot choose the author.
    let input = json!({ "threadId": "room", "role": "USER", "content": "x", "authorId": "alice" });
    let (_, r) = gql_as(&app, Some(&bob), SAVE, json!({ "input": input })).await;
    assert!(r["errors"].is_array() && r["data"].is_null(), "authorId is not an input: {r}");
    // Removed: forbidden again.
    let (_, r) = gql_as(&app, Some(&alice), REMOVE, json!({ "t": "room", "u": "bob" })).await;
    assert_eq!(r["data"]["removeThreadMember"], true, "{r}");
    assert_eq!(error_code(&read_as(&app, &bob, "room").await), "FORBIDDEN");
    assert_eq!(error_code(&save_as(&app, &bob, "room", "again").await), "FORBIDDEN");
}

#[tokio::test]
async fn service_principals_act_anywhere_and_their_threads_have_no_owner() {
    let app = spawn_jwt().await;
    let (bot, alice) = (service("assistant-backend"), token("alice", json!({})));
    let r = save_as(&app, &bot, "bot-room", "hello from the bot").await;
    assert_eq!(r["data"]["saveMessage"]["authorId"], "assistant-backend", "{r}");
    assert_eq!(error_code(&save_as(&app, &alice, "bot-room", "mine now?").await), "FORBIDDEN", "no one to claim it");
    let (_, r) = gql_as(&app, Some(&bot), ADD, json!({ "t": "bot-room", "u": "alice" })).await;
    assert_eq!(r["data"]["addThreadMember"], true, "{r}");
    let page = read_as(&app, &alice, "bot-room").await;
    assert_eq!(page["data"]["thread"]["messages"][0]["content"], "hello from the bot", "{page}");
    let (_, r) = gql_as(&app, Some(&alice), ADD, json!({ "t": "bot-room", "u": "mallory" })).await;
    assert_eq!(error_code(&r), "FORBIDDEN", "only service principals manage an ownerless thread");
    // A service principal also writes into users' threads.
    save_as(&app, &alice, "alice-room", "question").await;
    let r = save_as(&app, &bot, "alice-room", "answer").await;
    assert_eq!(r["data"]["saveMessage"]["content"], "answer", "{r}");
    // storageMetrics is operational data: service principals only.
    let q = "{ storageMetrics { breakerState } }";
    assert_eq!(error_code(&gql_as(&app, Some(&alice), q, json!({})).await.1), "FORBIDDEN");
    assert_eq!(gql_as(&app, Some(&bot), q, json!({})).await.1["data"]["storageMetrics"]["breakerState"], "CLOSED");
}

async fn ws_as(app: &TestApp, token: &str) -> WsClient {
    WsClient::connect_with_payload(app.addr, WsProtocol::TransportWs, json!({ "token": token })).await
}

#[tokio::test]
async fn removing_a_member_ends_their_subscription_only() {
    let app = spawn_jwt().await;
    let (alice, bob) = (token("alice", json!({})), token("bob", json!({})));
    let first = save_as(&app, &alice, "room", "first").await;
    // Subscribing after the first message: no race with the saves below.
    let after = first["data"]["saveMessage"]["cursor"].clone();
    gql_as(&app, Some(&alice), ADD, json!({ "t": "room", "u": "bob" })).await;
    let mut bob_ws = ws_as(&app, &bob).await;
    bob_ws.subscribe("b", MESSAGE_SAVED, json!({ "t": "room", "after": after })).await;
    let mut alice_ws = ws_as(&app, &alice).await;
    alice_ws.subscribe("a", MESSAGE_SAVED, json!({ "t": "room", "after": after })).await;
    // Both live: a save reaches both.
    save_as(&app, &alice, "room", "to both").await;
    assert_eq!(bob_ws.next_message(Duration::from_secs(10)).await["messageSaved"]["content"], "to both");
    assert_eq!(alice_ws.next_message(Duration::from_secs(10)).await["messageSaved"]["content"], "to both");
    gql_as(&app, Some(&alice), REMOVE, json!({ "t": "room", "u": "bob" })).await;
    match bob_ws.next_event(Duration::from_secs(10)).await {
        WsEvent::Complete(id) => assert_eq!(id, "b"),
        other => panic!("bob's subscription should end, got {other:?}"),
    }
    save_as(&app, &alice, "room", "after").await;
    assert_eq!(alice_ws.next_message(Duration::from_secs(10)).await["messageSaved"]["content"], "after");
    // And he cannot subscribe again.
    let mut again = ws_as(&app, &bob).await;
    again.subscribe("c", MESSAGE_SAVED, json!({ "t": "room" })).await;
    match again.next_event(Duration::from_secs(10)).await {
        WsEvent::Data(v) => panic!("a removed member got {v}"),
        other => {
            assert!(format!("{other:?}").contains("FORBIDDEN") || matches!(other, WsEvent::Complete(_)), "{other:?}")
        }
    }
}

#[tokio::test]
async fn membership_stays_correct_through_a_redis_outage() {
    let mut app = spawn_jwt().await;
    let (alice, bob) = (token("alice", json!({})), token("bob", json!({})));
    save_as(&app, &alice, "room", "first").await;
    gql_as(&app, Some(&alice), ADD, json!({ "t": "room", "u": "bob" })).await;
    // Bob's access is now cached in Redis (and the AOF keeps it).
    assert!(read_as(&app, &bob, "room").await["data"]["thread"].is_object());
    assert!(app.redis.cli(&["HGET", "ts:{room}:acl", "u:bob"]).contains('1'), "cached");
    // Redis dies; the removal happens while it is gone.
    app.redis.kill();
    for _ in 0..10 {
        let _ = read_as(&app, &alice, "room").await; // opens the breaker
    }
    let (_, r) = gql_as(&app, Some(&alice), REMOVE, json!({ "t": "room", "u": "bob" })).await;
    assert_eq!(r["data"]["removeThreadMember"], true, "{r}");
    assert_eq!(error_code(&read_as(&app, &bob, "room").await), "FORBIDDEN", "PostgreSQL answers in failover");
    // Redis is back with its old cache entry: it must not let Bob in.
    app.redis.restart();
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let r = read_as(&app, &bob, "room").await;
        assert_eq!(error_code(&r), "FORBIDDEN", "a stale cache entry let a removed member in: {r}");
        if !app.redis.cli(&["HGET", "ts:{room}:acl", "u:bob"]).contains('1') && app.store.breaker_state().is_closed() {
            break;
        }
    }
    assert!(app.store.breaker_state().is_closed(), "Redis is used again");
    assert_eq!(error_code(&read_as(&app, &bob, "room").await), "FORBIDDEN");
    assert!(read_as(&app, &alice, "room").await["data"]["thread"].is_object());
}

#[tokio::test]
async fn saves_over_the_burst_are_rate_limited_per_principal() {
    let app = spawn_with_auth(|s| {
        s.rate.save_rate_per_sec = 1;
        s.rate.save_burst = 3;
        s.rate.max_subscriptions_per_principal = 1;
    })
    .await;
    let (alice, bot) = (token("alice", json!({})), service("bot"));
    for i in 0..3 {
        assert!(save_as(&app, &alice, "room", &format!("m{i}")).await["data"]["saveMessage"].is_object());
    }
    let input = json!({ "input": { "threadId": "room", "role": "USER", "content": "one too many" } });
    let resp = app
        .http
        .post(format!("http://{}/graphql", app.addr))
        .bearer_auth(&alice)
        .json(&json!({ "query": SAVE, "variables": input }))
        .send()
        .await
        .expect("request");
    let retry_after = resp.headers().get("retry-after").and_then(|h| h.to_str().ok()).map(str::to_owned);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(error_code(&body), "RATE_LIMITED", "{body}");
    assert!(body["errors"][0]["extensions"]["retryAfter"].as_u64() >= Some(1), "{body}");
    assert!(retry_after.is_some_and(|s| s.parse::<u64>().is_ok_and(|n| n >= 1)), "Retry-After header");
    // The refused save stored nothing; service principals are not limited.
    for i in 0..10 {
        assert!(save_as(&app, &bot, "room", &format!("bot {i}")).await["data"]["saveMessage"].is_object());
    }
    let page = gql_as(&app, Some(&bot), "{ thread(id: \"room\") { messageCount } }", json!({})).await.1;
    assert_eq!(page["data"]["thread"]["messageCount"], 13, "{page}");
    // One live subscription per principal here.
    let mut ws = ws_as(&app, &alice).await;
    ws.subscribe("1", MESSAGE_SAVED, json!({ "t": "room" })).await;
    ws.subscribe("2", MESSAGE_SAVED, json!({ "t": "room" })).await;
    let event = ws.next_event(Duration::from_secs(10)).await;
    assert!(format!("{event:?}").contains("RATE_LIMITED"), "second subscription refused: {event:?}");
}

/// A key pair made by `openssl`: (private PEM, public key file).
fn keypair(dir: &std::path::Path, name: &str, genpkey_args: &[&str]) -> (Vec<u8>, std::path::PathBuf) {
    let private = dir.join(format!("{name}.key"));
    let public = dir.join(format!("{name}.pub"));
    let ok = std::process::Command::new("openssl")
        .arg("genpkey")
        .args(genpkey_args)
        .arg("-out")
        .arg(&private)
        .status()
        .expect("openssl genpkey")
        .success();
    assert!(ok, "openssl genpkey {genpkey_args:?}");
    let ok = std::process::Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(&private)
        .arg("-out")
        .arg(&public)
        .status()
        .expect("openssl pkey")
        .success();
    assert!(ok, "openssl pkey -pubout");
    (std::fs::read(&private).expect("private key"), public)
}

#[tokio::test]
async fn rs256_and_es256_tokens_verify_with_a_public_key_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rsa = keypair(dir.path(), "rsa", &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"]);
    let ec = keypair(dir.path(), "ec", &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"]);
    type KeyOf = fn(&[u8]) -> Result<EncodingKey, jsonwebtoken::errors::Error>;
    let cases: [(_, _, KeyOf); 2] = [
        (rsa, jsonwebtoken::Algorithm::RS256, EncodingKey::from_rsa_pem),
        (ec, jsonwebtoken::Algorithm::ES256, EncodingKey::from_ec_pem),
    ];
    for ((private, public), alg, key_of) in cases {
        let app = TestApp::spawn_with(Options {
            tweak: Box::new(move |s| {
                s.auth.auth_mode = AuthMode::Jwt;
                s.auth.jwt_public_key_file = Some(public.clone());
            }),
            ..Options::default()
        })
        .await;
        let claims = json!({ "sub": "alice", "exp": now() + 600 });
        let key = key_of(&private).expect("encoding key");
        let good = encode(&Header::new(alg), &claims, &key).expect("token");
        let r = save_as(&app, &good, "t", "signed").await;
        assert_eq!(r["data"]["saveMessage"]["authorId"], "alice", "{alg:?}: {r}");
        // An HS256 token "signed" with the public key itself is refused
        // (no algorithm confusion).
        let public_bytes = std::fs::read(app.settings.auth.jwt_public_key_file.as_ref().expect("set")).expect("pem");
        let forged = encode(&Header::default(), &claims, &EncodingKey::from_secret(&public_bytes)).expect("token");
        let (status, _) =
            gql_as(&app, Some(&forged), SAVE, json!({ "input": { "threadId": "t", "role": "USER", "content": "x" } }))
                .await;
        assert_eq!(status, 401, "{alg:?}: HS256 with the public key must not verify");
    }
}

/// SPEC §7: the author or a service principal edits; another member is
/// refused, a non-member learns nothing (not found), and nothing is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_author_or_a_service_principal_edits() {
    const EDIT: &str = "mutation($id: ID!, $c: String) { editMessage(id: $id, content: $c) { content version } }";
    let app = spawn_jwt().await;
    let (alice, bob, eve) = (token("alice", json!({})), token("bob", json!({})), token("eve", json!({})));
    let t = "edit-acl";
    let saved = save_as(&app, &alice, t, "alice's").await;
    let id = saved["data"]["saveMessage"]["id"].clone();
    assert!(
        gql_as(&app, Some(&alice), ADD, json!({ "t": t, "u": "bob" })).await.1["data"]["addThreadMember"]
            == json!(true)
    );

    let (_, r) = gql_as(&app, Some(&bob), EDIT, json!({ "id": id, "c": "bob's" })).await;
    assert_eq!(error_code(&r), "FORBIDDEN", "another member: {r}");
    let (_, r) = gql_as(&app, Some(&eve), EDIT, json!({ "id": id, "c": "eve's" })).await;
    assert_eq!(error_code(&r), "NOT_FOUND", "a non-member: {r}");
    let (status, r) = gql_as(&app, None, EDIT, json!({ "id": id, "c": "anyone's" })).await;
    assert_eq!((status, error_code(&r).as_str()), (401, "UNAUTHENTICATED"), "{r}");

    let (_, r) = gql_as(&app, Some(&alice), EDIT, json!({ "id": id, "c": "alice's, edited" })).await;
    assert_eq!(r["data"]["editMessage"], json!({ "content": "alice's, edited", "version": 2 }), "the author: {r}");
    let (_, r) = gql_as(&app, Some(&service("bot")), EDIT, json!({ "id": id, "c": "moderated" })).await;
    assert_eq!(r["data"]["editMessage"], json!({ "content": "moderated", "version": 3 }), "a service principal: {r}");

    app.wait_drained(Duration::from_secs(30)).await;
    let out = app
        .pg
        .server()
        .psql(&app.db, &format!("SELECT content, version FROM messages WHERE id = '{}'", id.as_str().expect("id")));
    assert_eq!(out.trim(), "moderated|3");
}

/// SPEC §7: the author, the thread's owner or a service principal deletes;
/// another member may not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_author_the_owner_or_a_service_principal_deletes() {
    const DELETE: &str = "mutation($id: ID!) { deleteMessage(id: $id) { content version } }";
    let app = spawn_jwt().await;
    let (alice, bob, carol) = (token("alice", json!({})), token("bob", json!({})), token("carol", json!({})));
    let t = "delete-acl";
    save_as(&app, &alice, t, "alice opens").await;
    for u in ["bob", "carol"] {
        gql_as(&app, Some(&alice), ADD, json!({ "t": t, "u": u })).await;
    }
    let id = |r: Value| r["data"]["saveMessage"]["id"].clone();
    let bobs = id(save_as(&app, &bob, t, "bob's").await);
    let (_, r) = gql_as(&app, Some(&carol), DELETE, json!({ "id": bobs })).await;
    assert_eq!(error_code(&r), "FORBIDDEN", "another member: {r}");
    let (_, r) = gql_as(&app, Some(&alice), DELETE, json!({ "id": bobs })).await;
    assert_eq!(r["data"]["deleteMessage"], json!({ "content": "", "version": 2 }), "the owner: {r}");
    let carols = id(save_as(&app, &carol, t, "carol's").await);
    let (_, r) = gql_as(&app, Some(&carol), DELETE, json!({ "id": carols })).await;
    assert_eq!(r["data"]["deleteMessage"]["version"], json!(2), "the author: {r}");
    let bobs2 = id(save_as(&app, &bob, t, "bob again").await);
    let (_, r) = gql_as(&app, Some(&service("bot")), DELETE, json!({ "id": bobs2 })).await;
    assert_eq!(r["data"]["deleteMessage"]["version"], json!(2), "a service principal: {r}");
}
