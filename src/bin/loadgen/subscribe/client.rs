//! One `subscribe` subscriber: connects, does the `graphql-transport-ws`
//! handshake, subscribes to its thread and feeds every event to the shared tallies.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{connect_async_with_config, MaybeTlsStream, WebSocketStream};

use super::{Shared, SETUP_TIMEOUT};
use crate::gql::SUBSCRIPTION;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub(super) struct SubCtx {
    pub(super) thread_idx: usize,
    pub(super) thread: String,
    pub(super) url: String,
    pub(super) shared: Arc<Shared>,
    pub(super) ready: mpsc::Sender<(usize, Result<()>)>,
    pub(super) stop: watch::Receiver<bool>,
    pub(super) sem: Arc<Semaphore>,
}

pub(super) async fn subscriber(mut c: SubCtx) {
    let permit = c.sem.acquire().await.ok();
    let setup = tokio::time::timeout(SETUP_TIMEOUT, setup(&c.url, &c.thread)).await;
    drop(permit);
    let mut ws = match setup {
        Ok(Ok(ws)) => {
            let _ = c.ready.send((c.thread_idx, Ok(()))).await;
            ws
        }
        Ok(Err(e)) => {
            let _ = c.ready.send((c.thread_idx, Err(e))).await;
            return;
        }
        Err(_) => {
            let err = anyhow!("timed out after {SETUP_TIMEOUT:?}");
            let _ = c.ready.send((c.thread_idx, Err(err))).await;
            return;
        }
    };
    loop {
        let msg = tokio::select! {
            _ = c.stop.changed() => break,
            msg = ws.next() => msg,
        };
        let received = Instant::now();
        let text = match msg {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Close(frame))) => {
                c.shared.error(format!("server closed the subscription: {frame:?}"));
                return;
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => {
                c.shared.error(format!("WebSocket read: {e}"));
                return;
            }
            None => {
                c.shared.error("WebSocket ended".to_string());
                return;
            }
        };
        let v: Value = match serde_json::from_str(text.as_str()) {
            Ok(v) => v,
            Err(e) => {
                c.shared.error(format!("bad frame: {e}"));
                continue;
            }
        };
        match v["type"].as_str() {
            Some("next") => {
                let m = v.pointer("/payload/data/messageSaved");
                match m.and_then(|m| m["id"].as_str()) {
                    Some(id) => c.shared.on_event(id, m.and_then(|m| m["content"].as_str()), received),
                    None => c.shared.error(format!("next without messageSaved.id: {}", v["payload"])),
                }
            }
            Some("ping") => {
                if let Err(e) = send_json(&mut ws, json!({ "type": "pong" })).await {
                    c.shared.error(format!("sending pong: {e:#}"));
                    return;
                }
            }
            Some("error") => c.shared.error(format!("subscription error: {}", v["payload"])),
            Some("complete") => {
                c.shared.error("server completed the subscription".to_string());
                break;
            }
            _ => {}
        }
    }
    let _ = ws.close(None).await;
}

/// Connects, does the graphql-transport-ws handshake and subscribes to `thread`.
async fn setup(url: &str, thread: &str) -> Result<Ws> {
    let mut req = url.into_client_request().context("bad WebSocket URL")?;
    req.headers_mut().insert("Sec-WebSocket-Protocol", HeaderValue::from_static("graphql-transport-ws"));
    // Nagle off, like the HTTP client: events are small and timed.
    let (mut ws, _) = connect_async_with_config(req, None, true).await.context("WebSocket connect")?;
    send_json(&mut ws, json!({ "type": "connection_init", "payload": {} })).await?;
    loop {
        let msg = ws
            .next()
            .await
            .ok_or_else(|| anyhow!("closed before connection_ack"))?
            .context("waiting for connection_ack")?;
        let text = match msg {
            Message::Text(t) => t,
            Message::Close(f) => bail!("closed before connection_ack: {f:?}"),
            _ => continue,
        };
        let v: Value = serde_json::from_str(text.as_str()).context("bad frame")?;
        match v["type"].as_str() {
            Some("connection_ack") => break,
            Some("ping") => send_json(&mut ws, json!({ "type": "pong" })).await?,
            _ => bail!("expected connection_ack, got {text}"),
        }
    }
    let sub = json!({
        "id": "1",
        "type": "subscribe",
        "payload": { "query": SUBSCRIPTION, "variables": { "t": thread } },
    });
    send_json(&mut ws, sub).await?;
    Ok(ws)
}

async fn send_json(ws: &mut Ws, v: Value) -> Result<()> {
    ws.send(Message::text(v.to_string())).await.context("WebSocket send")
}
