//! Live subscribers speaking `graphql-transport-ws` over real WebSockets.
//! Each starts from the cursor of its thread's newest message and records
//! every delivered id; when its connection drops (an instance was killed)
//! it reconnects, to the next instance if need be, and resumes `after` the
//! last cursor it saw, as a real chat client would.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicU32, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use anyhow::{bail, Context};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::{client::IntoClientRequest, http::HeaderValue, Message};
use tokio_util::sync::CancellationToken;

const SUBSCRIBE: &str =
    "subscription($t: ID!, $after: String) { messageSaved(threadId: $t, after: $after) { id cursor } }";
const NEWEST: &str = "query($t: ID!) { thread(id: $t) { messages(limit: 1, order: NEWEST_FIRST) { id cursor } } }";

/// One subscriber and what it received.
pub struct Subscriber {
    pub thread: String,
    /// The newest message when it subscribed: it must see everything after it.
    pub start_id: String,
    /// The service it first subscribed through.
    pub home: usize,
    received: Arc<Mutex<Vec<String>>>,
    reconnects: Arc<AtomicU32>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Subscriber {
    /// Subscribes to `thread` through `targets[first]`; the thread must have a message.
    pub async fn start(targets: Vec<SocketAddr>, first: usize, thread: &str) -> anyhow::Result<Subscriber> {
        let http = crate::workload::http_client();
        let body = json!({ "query": NEWEST, "variables": { "t": thread } });
        let r: Value = http.post(format!("http://{}/graphql", targets[first])).json(&body).send().await?.json().await?;
        let newest = r.pointer("/data/thread/messages/0").with_context(|| format!("no newest message: {r}"))?;
        let start_id = newest["id"].as_str().context("id")?.to_owned();
        let cursor = newest["cursor"].as_str().context("cursor")?.to_owned();
        let received = Arc::new(Mutex::new(Vec::new()));
        let reconnects = Arc::new(AtomicU32::new(0));
        let stop = CancellationToken::new();
        // The first connection is made here, so that the subscription is
        // live before the caller goes on.
        let conn = connect(targets[first], thread, &cursor).await?;
        let task = tokio::spawn(run(
            targets,
            first,
            thread.to_owned(),
            cursor,
            conn,
            received.clone(),
            reconnects.clone(),
            stop.clone(),
        ));
        Ok(Subscriber { thread: thread.to_owned(), start_id, home: first, received, reconnects, stop, task })
    }

    /// How many messages it has received.
    pub fn count(&self) -> usize {
        self.received.lock().map(|r| r.len()).unwrap_or(0)
    }

    /// Times it had to connect again.
    pub fn reconnects(&self) -> u32 {
        self.reconnects.load(Ordering::Relaxed)
    }

    /// Stops it and returns what it received, in order, and its reconnects.
    pub async fn finish(self) -> (Vec<String>, u32) {
        self.stop.cancel();
        let _ = self.task.await;
        let received = self.received.lock().map(|r| r.clone()).unwrap_or_default();
        (received, self.reconnects.load(Ordering::Relaxed))
    }
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

#[allow(clippy::too_many_arguments)]
async fn run(
    targets: Vec<SocketAddr>,
    mut target: usize,
    thread: String,
    mut cursor: String,
    conn: Ws,
    received: Arc<Mutex<Vec<String>>>,
    reconnects: Arc<AtomicU32>,
    stop: CancellationToken,
) {
    let mut conn = Some(conn);
    while !stop.is_cancelled() {
        let mut ws = match conn.take() {
            Some(ws) => ws,
            None => match tokio::select! {
                _ = stop.cancelled() => return,
                c = connect(targets[target], &thread, &cursor) => c,
            } {
                Ok(ws) => {
                    reconnects.fetch_add(1, Ordering::Relaxed);
                    ws
                }
                Err(_) => {
                    target = (target + 1) % targets.len();
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        loop {
            let frame = tokio::select! {
                _ = stop.cancelled() => {
                    let _ = ws.close(None).await;
                    return;
                }
                f = ws.next() => f,
            };
            let Some(Ok(frame)) = frame else { break };
            let Message::Text(text) = frame else {
                continue;
            };
            let Ok(msg) = serde_json::from_str::<Value>(&text) else { continue };
            match msg["type"].as_str() {
                Some("next") => {
                    let m = &msg["payload"]["data"]["messageSaved"];
                    if let (Some(id), Some(c)) = (m["id"].as_str(), m["cursor"].as_str()) {
                        cursor = c.to_owned();
                        if let Ok(mut r) = received.lock() {
                            r.push(id.to_owned());
                        }
                    }
                }
                Some("ping") => {
                    let _ = ws.send(Message::text(json!({ "type": "pong" }).to_string())).await;
                }
                Some("error") | Some("complete") => break,
                _ => {}
            }
        }
        // Dropped or completed (shutdown): resume from the last cursor.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Connects, initialises and subscribes after `cursor`.
async fn connect(addr: SocketAddr, thread: &str, cursor: &str) -> anyhow::Result<Ws> {
    let mut req = format!("ws://{addr}/graphql").into_client_request()?;
    req.headers_mut().insert("sec-websocket-protocol", HeaderValue::from_static("graphql-transport-ws"));
    let (mut ws, _) = tokio::time::timeout(Duration::from_secs(5), tokio_tungstenite::connect_async(req)).await??;
    ws.send(Message::text(json!({ "type": "connection_init" }).to_string())).await?;
    let ack = tokio::time::timeout(Duration::from_secs(5), ws.next()).await?;
    match ack {
        Some(Ok(Message::Text(t))) if t.contains("connection_ack") => {}
        other => bail!("no connection_ack: {other:?}"),
    }
    let sub = json!({ "id": "1", "type": "subscribe", "payload": { "query": SUBSCRIBE, "variables": { "t": thread, "after": cursor } } });
    ws.send(Message::text(sub.to_string())).await?;
    Ok(ws)
}
