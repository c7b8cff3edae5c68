//! WebSocket connections for subscriptions, tracked for shutdown.
//!
//! Outgoing frames go through a channel to a writer task, so that on
//! shutdown the writer can pass on the `complete` messages of the ending
//! subscriptions and then close the socket properly (1001 Going Away)
//! instead of dropping it.

use std::time::Duration;

use async_graphql::Data;
use async_graphql_axum::{GraphQLProtocol, GraphQLWebSocket};
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures::{SinkExt, StreamExt};
use tokio_util::sync::CancellationToken;

use crate::graphql::Api;

/// How long the writer forwards the last frames after shutdown starts.
const CLOSE_GRACE: Duration = Duration::from_millis(300);
/// How long a client gets to answer the close frame.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Serves one WebSocket until the client leaves or the server shuts down.
pub async fn serve(socket: WebSocket, api: Api, protocol: GraphQLProtocol, data: Data, stop: CancellationToken) {
    let (mut sink, stream) = socket.split();
    let (tx, mut rx) = futures::channel::mpsc::channel::<Message>(64);
    let protocol_task = GraphQLWebSocket::new_with_pair(tx, stream, api, protocol).with_data(data).serve();
    let writer_stop = stop.clone();
    let writer = async move {
        loop {
            tokio::select! {
                msg = rx.next() => match msg {
                    Some(m) => if sink.send(m).await.is_err() { return },
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
                msg = rx.next() => match msg {
                    Some(m) => if sink.send(m).await.is_err() { return },
                    None => break,
                },
                _ = &mut grace => break,
            }
        }
        let frame = CloseFrame { code: 1001, reason: "server shutting down".into() };
        let _ = sink.send(Message::Close(Some(frame))).await;
    };
    let bounded = async {
        stop.cancelled().await;
        tokio::time::sleep(CLOSE_GRACE + CLOSE_TIMEOUT).await;
    };
    tokio::select! {
        _ = async { tokio::join!(protocol_task, writer) } => {},
        _ = bounded => {},
    }
}
