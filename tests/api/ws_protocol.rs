//! The `graphql-transport-ws` edges the server enforces itself: close codes
//! for protocol violations, the init deadline, message size, the per
//! connection subscription cap, the process connection cap and
//! authentication in `connection_init`. A raw client, so the test sees
//! exactly what the server sends.

use std::{net::SocketAddr, time::Duration};

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::{
    tungstenite::{client::IntoClientRequest, http::HeaderValue, Error as WsError, Message},
    MaybeTlsStream, WebSocketStream,
};

use crate::helpers::{Options, TestApp};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

const WITHIN: Duration = Duration::from_secs(5);
const SUBSCRIPTION: &str = "subscription { messageSaved(threadId: \"t1\") { id } }";

/// Upgrades `ws://{addr}/graphql` with the `graphql-transport-ws` subprotocol.
async fn try_open(addr: SocketAddr) -> Result<Ws, WsError> {
    let mut req = format!("ws://{addr}/graphql").into_client_request().expect("valid ws request");
    req.headers_mut().insert("Sec-WebSocket-Protocol", HeaderValue::from_static("graphql-transport-ws"));
    tokio_tungstenite::connect_async(req).await.map(|(ws, _)| ws)
}

async fn open(addr: SocketAddr) -> Ws {
    try_open(addr).await.expect("websocket handshake")
}

async fn send(ws: &mut Ws, v: Value) {
    send_text(ws, &v.to_string()).await;
}

async fn send_text(ws: &mut Ws, text: &str) {
    ws.send(Message::text(text)).await.expect("websocket send");
}

/// The next JSON text message; panics on a close, the end or a timeout.
async fn recv(ws: &mut Ws) -> Value {
    loop {
        let frame = tokio::time::timeout(WITHIN, ws.next()).await.expect("a message within 5 s");
        match frame {
            Some(Ok(Message::Text(t))) => return serde_json::from_str(&t).expect("JSON message"),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("expected a text message, got {other:?}"),
        }
    }
}

/// The next message of type `ty` (others are skipped).
async fn recv_type(ws: &mut Ws, ty: &str) -> Value {
    loop {
        let v = recv(ws).await;
        if v["type"] == ty {
            return v;
        }
    }
}

/// Sends `connection_init` (with `payload` if given) and expects `connection_ack`.
async fn init(ws: &mut Ws, payload: Option<Value>) {
    let mut msg = json!({ "type": "connection_init" });
    if let Some(p) = payload {
        msg["payload"] = p;
    }
    send(ws, msg).await;
    let v = recv(ws).await;
    assert_eq!(v["type"], "connection_ack", "{v}");
}

async fn subscribe(ws: &mut Ws, id: &str) {
    send(ws, json!({ "id": id, "type": "subscribe", "payload": { "query": SUBSCRIPTION } })).await;
}

/// How a connection ended.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// A close frame with this code.
    Close(u16),
    /// The stream ended or broke without a close frame.
    Gone(String),
}

/// Reads (and skips text messages) until the connection ends; panics when
/// it is still open after 5 s.
async fn ending(ws: &mut Ws) -> End {
    let deadline = tokio::time::Instant::now() + WITHIN;
    loop {
        let frame = tokio::time::timeout_at(deadline, ws.next()).await.expect("the server closes within 5 s");
        match frame {
            Some(Ok(Message::Close(Some(f)))) => return End::Close(f.code.into()),
            Some(Ok(Message::Close(None))) => return End::Gone("close frame without a code".into()),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return End::Gone(format!("transport error: {e}")),
            None => return End::Gone("end of stream".into()),
        }
    }
}

/// The code of the close frame the server sends (`what`: the case, for the message).
async fn close_code(ws: &mut Ws, what: &str) -> u16 {
    match ending(ws).await {
        End::Close(code) => code,
        other => panic!("{what}: expected a close frame, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_init_in_time_is_4408() {
    let app =
        TestApp::spawn_with(Options { tweak: Box::new(|s| s.limits.ws_init_timeout_ms = 300), ..Default::default() })
            .await;
    let mut ws = open(app.addr).await;
    assert_eq!(close_code(&mut ws, "no connection_init").await, 4408);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_violations_get_their_close_codes() {
    let app = TestApp::spawn().await;

    // AUTH_MODE=none: an init without payload is acked; a second one is 4429.
    let mut ws = open(app.addr).await;
    init(&mut ws, None).await;
    send(&mut ws, json!({ "type": "connection_init", "payload": {} })).await;
    assert_eq!(close_code(&mut ws, "second connection_init").await, 4429);

    let mut ws = open(app.addr).await;
    subscribe(&mut ws, "1").await;
    assert_eq!(close_code(&mut ws, "subscribe before connection_init").await, 4401);

    let mut ws = open(app.addr).await;
    init(&mut ws, Some(json!({}))).await;
    subscribe(&mut ws, "dup").await;
    subscribe(&mut ws, "dup").await;
    assert_eq!(close_code(&mut ws, "the same id twice").await, 4409);

    let mut ws = open(app.addr).await;
    init(&mut ws, None).await;
    send_text(&mut ws, "this is not json").await;
    assert_eq!(close_code(&mut ws, "not JSON").await, 4400);

    let mut ws = open(app.addr).await;
    init(&mut ws, None).await;
    send(&mut ws, json!({ "type": "bogus", "id": "1" })).await;
    assert_eq!(close_code(&mut ws, "unknown type").await, 4400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversize_message_closes_the_connection() {
    let app = TestApp::spawn_with(Options {
        tweak: Box::new(|s| s.limits.max_ws_message_bytes = 1024),
        ..Default::default()
    })
    .await;
    let mut ws = open(app.addr).await;
    init(&mut ws, None).await;
    // A valid ping, padded to 4096 bytes: without the limit it gets a pong.
    let head = r#"{"type":"ping","payload":{"pad":""#;
    let tail = r#""}}"#;
    let big = format!("{head}{}{tail}", "x".repeat(4096 - head.len() - tail.len()));
    assert_eq!(big.len(), 4096);
    send_text(&mut ws, &big).await;
    match ending(&mut ws).await {
        End::Close(code) => assert_eq!(code, 1009, "close code"),
        End::Gone(how) => eprintln!("connection ended without a close frame: {how}"),
    }
    // Whatever the client still tries, nothing comes back.
    let _ = ws.send(Message::text(json!({ "type": "ping" }).to_string())).await;
    let after = tokio::time::timeout(Duration::from_secs(1), ws.next()).await;
    assert!(!matches!(after, Ok(Some(Ok(Message::Text(_))))), "the connection still answers: {after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_past_the_cap_get_an_error_and_the_connection_stays() {
    let app = TestApp::spawn_with(Options {
        tweak: Box::new(|s| s.limits.max_subscriptions_per_connection = 2),
        ..Default::default()
    })
    .await;
    // Subscribing after a first message: the save below can't race the
    // subscriptions going live.
    let first = app.save("t1", "first").await;
    let after = first["cursor"].clone();
    let mut ws = open(app.addr).await;
    init(&mut ws, None).await;
    let query = "subscription($a: String) { messageSaved(threadId: \"t1\", after: $a) { id } }";
    for id in ["1", "2", "3"] {
        let payload = json!({ "query": query, "variables": { "a": after } });
        send(&mut ws, json!({ "id": id, "type": "subscribe", "payload": payload })).await;
    }
    let v = recv(&mut ws).await;
    assert_eq!(v["type"], "error", "{v}");
    assert_eq!(v["id"], "3", "{v}");
    assert_eq!(v["payload"][0]["extensions"]["code"], "RATE_LIMITED", "{v}");

    send(&mut ws, json!({ "type": "ping" })).await;
    recv_type(&mut ws, "pong").await;

    // The two admitted subscriptions are live.
    app.save("t1", "hello").await;
    for _ in 0..2 {
        let v = recv_type(&mut ws, "next").await;
        assert!(v["id"] == "1" || v["id"] == "2", "{v}");
        assert!(v["payload"]["data"]["messageSaved"]["id"].is_string(), "{v}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_cap_are_503() {
    let app =
        TestApp::spawn_with(Options { tweak: Box::new(|s| s.limits.max_ws_connections = 1), ..Default::default() })
            .await;
    let mut first = open(app.addr).await;
    init(&mut first, None).await;
    match try_open(app.addr).await {
        Err(WsError::Http(resp)) => assert_eq!(resp.status().as_u16(), 503),
        Err(e) => panic!("expected an HTTP 503, got {e}"),
        Ok(_) => panic!("a second connection was accepted over MAX_WS_CONNECTIONS=1"),
    }
    // The first one still works.
    send(&mut first, json!({ "type": "ping" })).await;
    recv_type(&mut first, "pong").await;

    // Its slot is freed once it closes.
    first.close(None).await.expect("close");
    drop(first);
    let deadline = tokio::time::Instant::now() + WITHIN;
    loop {
        match try_open(app.addr).await {
            Ok(mut ws) => {
                init(&mut ws, None).await;
                break;
            }
            Err(e) => assert!(tokio::time::Instant::now() < deadline, "slot never freed: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

const SECRET: &str = "0123456789abcdef0123456789abcdef-test";

fn token(sub: &str) -> String {
    let exp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs() + 600;
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({ "sub": sub, "exp": exp }),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("token")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_init_is_authenticated_in_jwt_mode() {
    let app = TestApp::spawn_with(Options {
        tweak: Box::new(|s| {
            s.auth.auth_mode = threadstore::config::AuthMode::Jwt;
            s.auth.jwt_secret = Some(SECRET.to_string().into());
        }),
        ..Default::default()
    })
    .await;

    for (what, init_msg) in [
        ("no payload", json!({ "type": "connection_init" })),
        ("empty payload", json!({ "type": "connection_init", "payload": {} })),
        ("garbage token", json!({ "type": "connection_init", "payload": { "token": "garbage" } })),
    ] {
        let mut ws = open(app.addr).await;
        send(&mut ws, init_msg).await;
        assert_eq!(close_code(&mut ws, what).await, 4403);
    }

    let mut ws = open(app.addr).await;
    init(&mut ws, Some(json!({ "token": token("alice") }))).await;
    send(&mut ws, json!({ "type": "ping" })).await;
    recv_type(&mut ws, "pong").await;
}
