//! WebSocket connections for subscriptions, tracked for shutdown.
//!
//! Three tasks per connection:
//! - the **reader** checks every client message against the protocol rules
//!   ([`guard`]), authenticates `connection_init` (its payload's `token`,
//!   or the upgrade request's `Authorization` header), and closes with the
//!   protocol's codes: 4408 when no init arrives in time, 4403 for a bad
//!   token, 1009 for an oversize message;
//! - the **engine** (async-graphql) runs the subscriptions it is handed;
//! - the **writer** sends what the engine and the reader produce. Its
//!   channel is bounded, so a client that stops reading stalls its own
//!   subscriptions, whose receivers then lag and re-read the gap from the
//!   store when they move again: memory stays bounded. On shutdown it
//!   passes on the subscriptions' `complete` messages, then closes with
//!   1001 Going Away instead of dropping the socket.

mod guard;

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use async_graphql::Data;
use async_graphql_axum::{GraphQLProtocol, GraphQLWebSocket};
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures::{channel::mpsc, SinkExt, StreamExt};
use serde_json::Value;
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;

use crate::auth::{Authenticator, Caller};
use crate::graphql::Api;
use guard::{Guard, Verdict};

/// How long the writer forwards the last frames after shutdown starts.
const CLOSE_GRACE: Duration = Duration::from_millis(300);
/// How long a client gets to answer the close frame.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// What one connection may do.
#[derive(Clone, Copy)]
pub struct WsLimits {
    /// Time to send `connection_init`.
    pub init_timeout: Duration,
    /// Subscriptions running at once.
    pub max_subscriptions: usize,
}

/// Everything a connection needs.
pub struct Connection {
    /// The schema.
    pub api: Api,
    /// Subprotocol.
    pub protocol: GraphQLProtocol,
    /// Whether it is the legacy `graphql-ws` one.
    pub legacy: bool,
    /// Per-connection data (the DataLoader).
    pub data: Data,
    /// Shutdown.
    pub stop: CancellationToken,
    /// Verifies the init token.
    pub auth: Authenticator,
    /// Who the upgrade request's `Authorization` header named, if it did.
    pub header_caller: Option<Caller>,
    /// Limits.
    pub limits: WsLimits,
    /// A slot of the connection cap, held while the socket is open.
    pub permit: OwnedSemaphorePermit,
}

fn close(code: u16, reason: &'static str) -> Message {
    Message::Close(Some(CloseFrame { code, reason: reason.into() }))
}

/// The bearer token of a `connection_init` payload: `token`, or an
/// `Authorization`/`authorization` value with or without `Bearer `.
fn init_token(payload: &Value) -> Option<&str> {
    let raw = payload
        .get("token")
        .or_else(|| payload.get("Authorization"))
        .or_else(|| payload.get("authorization"))?
        .as_str()?;
    Some(raw.strip_prefix("Bearer ").unwrap_or(raw))
}

/// Serves one WebSocket until the client leaves or the server shuts down.
pub async fn serve(socket: WebSocket, conn: Connection) {
    let Connection { api, protocol, legacy: conn_legacy, data, stop, auth, header_caller, limits, permit } = conn;
    let _permit = permit;
    let legacy = conn_legacy;
    let guard = Arc::new(Mutex::new(Guard::new(legacy, limits.max_subscriptions)));
    let caller: Arc<Mutex<Option<Caller>>> = Arc::default();

    let (mut sink, mut client) = socket.split();
    let (engine_in_tx, engine_in_rx) = mpsc::channel::<Result<Message, axum::Error>>(16);
    let (engine_out_tx, mut engine_out) = mpsc::channel::<Message>(64);
    let (mut control_tx, mut control) = mpsc::channel::<Message>(4);

    let init_caller = caller.clone();
    let engine = GraphQLWebSocket::new_with_pair(engine_out_tx, engine_in_rx, api, protocol)
        .with_data(data)
        .on_connection_init(move |_| async move {
            let mut data = Data::default();
            if let Some(c) = init_caller.lock().ok().and_then(|mut c| c.take()) {
                data.insert(c);
            }
            Ok(data)
        })
        .serve();

    let reader_guard = guard.clone();
    let reader = async move {
        let mut engine_in = engine_in_tx;
        let deadline = tokio::time::Instant::now() + limits.init_timeout;
        loop {
            let initialised = reader_guard.lock().is_ok_and(|g| g.initialised());
            let next = if initialised {
                client.next().await
            } else {
                match tokio::time::timeout_at(deadline, client.next()).await {
                    Ok(next) => next,
                    Err(_) => {
                        let _ = control_tx.send(close(4408, "Connection initialisation timeout")).await;
                        return;
                    }
                }
            };
            let text = match next {
                Some(Ok(Message::Text(t))) => t,
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Ok(Message::Binary(_))) => {
                    let _ = control_tx.send(close(4400, "Invalid message")).await;
                    return;
                }
                Some(Ok(Message::Close(_))) | None => return,
                // Oversize message or frame, or a broken connection.
                Some(Err(_)) => {
                    let _ = control_tx.send(close(1009, "Message too big or malformed")).await;
                    return;
                }
            };
            let verdict = match reader_guard.lock() {
                Ok(mut g) => g.client(&text),
                Err(_) => return,
            };
            match verdict {
                Verdict::Forward => {}
                Verdict::Init(payload) => {
                    let verified = match init_token(&payload) {
                        Some(token) => auth.authenticate_token(Some(token)),
                        None => header_caller.clone().ok_or(crate::auth::AuthError::Missing).or_else(|e| {
                            if auth.is_open() {
                                auth.authenticate_token(None)
                            } else {
                                Err(e)
                            }
                        }),
                    };
                    match verified {
                        Ok(c) => {
                            if let Ok(mut slot) = caller.lock() {
                                *slot = Some(c);
                            }
                            if let Ok(mut g) = reader_guard.lock() {
                                g.accept_init();
                            }
                        }
                        Err(e) => {
                            tracing::info!(error = %e, "websocket connection_init refused");
                            let _ = control_tx.send(close(4403, "Forbidden")).await;
                            return;
                        }
                    }
                }
                Verdict::Reply(reply) => {
                    let _ = control_tx.send(Message::Text(reply.into())).await;
                    continue;
                }
                Verdict::Close(code, reason) => {
                    let _ = control_tx.send(close(code, reason)).await;
                    return;
                }
            }
            if engine_in.send(Ok(Message::Text(text))).await.is_err() {
                return;
            }
        }
    };

    let writer_stop = stop.clone();
    let writer = async move {
        // The reader's frames first (a close frame must not lose the race
        // against the engine finishing), until the reader is gone.
        let mut control_open = true;
        loop {
            tokio::select! {
                biased;
                msg = control.next(), if control_open => match msg {
                    Some(m) => {
                        let closing = matches!(m, Message::Close(_));
                        if sink.send(m).await.is_err() || closing {
                            return;
                        }
                    }
                    None => control_open = false,
                },
                msg = engine_out.next() => match msg {
                    Some(m) => {
                        if let Message::Text(t) = &m {
                            if let Ok(mut g) = guard.lock() {
                                g.server(t);
                            }
                        }
                        if sink.send(m).await.is_err() {
                            return;
                        }
                    }
                    None if control_open => {
                        // The engine is done; the reader may still queue its close frame.
                        if let Ok(Some(m)) = tokio::time::timeout(CLOSE_GRACE, control.next()).await {
                            let _ = sink.send(m).await;
                        }
                        return;
                    }
                    None => return,
                },
                _ = writer_stop.cancelled() => break,
            }
        }
        // Subscriptions end on the same signal: forward their `complete`
        // messages for a moment, then say goodbye.
        let grace = tokio::time::sleep(CLOSE_GRACE);
        tokio::pin!(grace);
        loop {
            tokio::select! {
                msg = engine_out.next() => match msg {
                    Some(m) => if sink.send(m).await.is_err() { return },
                    None => break,
                },
                _ = &mut grace => break,
            }
        }
        let _ = sink.send(close(1001, "server shutting down")).await;
    };
    let bounded = async {
        stop.cancelled().await;
        tokio::time::sleep(CLOSE_GRACE + CLOSE_TIMEOUT).await;
    };
    tokio::pin!(writer);
    let session = async { tokio::join!(reader, engine) };
    tokio::pin!(session);
    tokio::select! {
        // The client side ended (it left, or the reader queued a close
        // frame): let the writer send what is queued.
        _ = &mut session => {
            let _ = tokio::time::timeout(CLOSE_GRACE, &mut writer).await;
        }
        // The writer sent a close frame (or the socket broke): give the
        // client a moment to answer it.
        _ = &mut writer => {
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, &mut session).await;
        }
        _ = bounded => {}
    }
}
