//! A small GraphQL-over-WebSocket client for subscription tests (both
//! subprotocols), shared by `subscriptions.rs` and `shutdown.rs`.

use std::{future::Future, net::SocketAddr, time::Duration};

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::{
    tungstenite::{client::IntoClientRequest, http::HeaderValue, Message},
    WebSocketStream,
};

/// The subscription the live-delivery tests use.
pub const MESSAGE_SAVED: &str =
    "subscription($t: ID!, $after: String) { messageSaved(threadId: $t, after: $after) { id content createdAt cursor } }";

/// The two subprotocols the server speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WsProtocol {
    /// `graphql-transport-ws`: subscribe / next / complete, ping / pong.
    TransportWs,
    /// Legacy `graphql-ws`: start / data / complete, `ka` keep-alives.
    LegacyWs,
}

impl WsProtocol {
    fn name(self) -> &'static str {
        match self {
            WsProtocol::TransportWs => "graphql-transport-ws",
            WsProtocol::LegacyWs => "graphql-ws",
        }
    }
}

/// What the server sent (keep-alives, pings and acks are skipped).
#[derive(Debug)]
pub enum WsEvent {
    /// `next` / `data`: the payload's `data`.
    Data(Value),
    /// `complete` for the subscription with this id.
    Complete(String),
    /// A close frame, the end of the stream or a transport error.
    Closed(String),
    /// An `error` message, or a `next` carrying errors: the whole message.
    Error(Value),
}

/// One WebSocket connection, initialised (`connection_ack` received).
pub struct WsClient {
    ws: WebSocketStream<TcpStream>,
    protocol: WsProtocol,
}

impl WsClient {
    /// Connects to `ws://{addr}/graphql` with `protocol` and initialises.
    pub async fn connect(addr: SocketAddr, protocol: WsProtocol) -> WsClient {
        Self::connect_with(addr, protocol, None).await
    }

    /// Like [`WsClient::connect`]; a small `recv_buffer` (SO_RCVBUF) makes the
    /// server's writes block soon after the client stops reading.
    pub async fn connect_with(addr: SocketAddr, protocol: WsProtocol, recv_buffer: Option<u32>) -> WsClient {
        Self::open(addr, protocol, recv_buffer, json!({})).await
    }

    /// Like [`WsClient::connect`], with `payload` in `connection_init` (a token).
    pub async fn connect_with_payload(addr: SocketAddr, protocol: WsProtocol, payload: Value) -> WsClient {
        Self::open(addr, protocol, None, payload).await
    }

    async fn open(addr: SocketAddr, protocol: WsProtocol, recv_buffer: Option<u32>, payload: Value) -> WsClient {
        let mut req = format!("ws://{addr}/graphql").into_client_request().expect("valid ws request");
        req.headers_mut().insert("Sec-WebSocket-Protocol", HeaderValue::from_static(protocol.name()));
        let socket = TcpSocket::new_v4().expect("tcp socket");
        if let Some(n) = recv_buffer {
            socket.set_recv_buffer_size(n).expect("set SO_RCVBUF");
        }
        let tcp = socket.connect(addr).await.expect("tcp connect to the service");
        let (ws, _) = tokio_tungstenite::client_async(req, tcp).await.expect("websocket handshake");
        let mut client = WsClient { ws, protocol };
        client.send(json!({ "type": "connection_init", "payload": payload })).await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let frame = tokio::time::timeout_at(deadline, client.ws.next()).await.expect("connection_ack within 10 s");
            let text = match frame {
                Some(Ok(Message::Text(t))) => t,
                Some(Ok(_)) => continue,
                other => panic!("connection closed before connection_ack: {other:?}"),
            };
            let v: Value = serde_json::from_str(&text).expect("JSON message");
            match v["type"].as_str() {
                Some("connection_ack") => return client,
                Some("ka" | "ping" | "pong") => continue,
                _ => panic!("expected connection_ack, got {v}"),
            }
        }
    }

    async fn send(&mut self, v: Value) {
        self.ws.send(Message::text(v.to_string())).await.expect("websocket send");
    }

    /// Starts subscription `id`.
    pub async fn subscribe(&mut self, id: &str, query: &str, variables: Value) {
        let ty = match self.protocol {
            WsProtocol::TransportWs => "subscribe",
            WsProtocol::LegacyWs => "start",
        };
        self.send(json!({ "id": id, "type": ty, "payload": { "query": query, "variables": variables } })).await;
    }

    /// The next event within `within`, or `None` on timeout. Panics on a
    /// GraphQL error.
    pub async fn try_next_event(&mut self, within: Duration) -> Option<WsEvent> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let frame = tokio::time::timeout_at(deadline, self.ws.next()).await.ok()?;
            let text = match frame {
                Some(Ok(Message::Text(t))) => t,
                Some(Ok(Message::Close(f))) => return Some(WsEvent::Closed(format!("close frame {f:?}"))),
                Some(Ok(_)) => continue, // websocket ping/pong: tungstenite answers pings
                Some(Err(e)) => return Some(WsEvent::Closed(format!("transport error: {e}"))),
                None => return Some(WsEvent::Closed("end of stream".into())),
            };
            let v: Value = serde_json::from_str(&text).expect("JSON message");
            match v["type"].as_str().unwrap_or_default() {
                "ping" => self.send(json!({ "type": "pong" })).await,
                "pong" | "ka" | "connection_ack" => {}
                "next" | "data" => {
                    let payload = &v["payload"];
                    if payload.get("errors").is_some_and(|e| !e.is_null()) {
                        return Some(WsEvent::Error(v));
                    }
                    return Some(WsEvent::Data(payload["data"].clone()));
                }
                "error" => return Some(WsEvent::Error(v)),
                "complete" => return Some(WsEvent::Complete(v["id"].as_str().unwrap_or_default().to_owned())),
                _ => panic!("unexpected server message: {v}"),
            }
        }
    }

    /// The next event; panics when nothing arrives within `within`.
    pub async fn next_event(&mut self, within: Duration) -> WsEvent {
        self.try_next_event(within).await.unwrap_or_else(|| panic!("nothing received within {within:?}"))
    }

    /// The next `next`/`data` payload's data; panics on anything else.
    pub async fn next_message(&mut self, within: Duration) -> Value {
        match self.next_event(within).await {
            WsEvent::Data(v) => v,
            other => panic!("expected a message, got {other:?}"),
        }
    }

    /// Makes sure the subscription is live: saves probes (`save_probe`)
    /// until one is delivered; every message saved from then on must be
    /// delivered. Returns the probe delivered.
    pub async fn wait_live<F, Fut>(&mut self, mut save_probe: F) -> Value
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = ()>,
    {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            assert!(tokio::time::Instant::now() < deadline, "subscription never delivered a probe");
            save_probe().await;
            match self.try_next_event(Duration::from_millis(500)).await {
                None => continue,
                Some(WsEvent::Data(v)) => return v,
                Some(other) => panic!("subscription ended before going live: {other:?}"),
            }
        }
    }
}
