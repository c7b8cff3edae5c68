//! Live events: ONE Redis pub/sub connection per process, fanned out
//! in-process to the subscribers of each thread.
//!
//! Pub/sub is only a wake-up signal. It can drop messages (a reconnect, a
//! lagging receiver), so every event carries the createdAt of the message
//! before it; a subscriber that finds a mismatch, or gets [`Event::Resync`],
//! re-reads the gap from the store (see [`mod@crate::live::feed`]).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use bb8_redis::redis;
use futures::StreamExt;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::domain::Message;
use crate::store::wire::{decode_event, WireEvent};
use crate::store::{PubSubSource, EVENT_CHANNELS};

/// Buffered events per thread before a slow receiver lags (and re-reads).
const CHANNEL_CAPACITY: usize = 256;

/// How often the pub/sub connection is checked.
const PING_EVERY: Duration = Duration::from_secs(5);

/// A subscriber's receiver for one thread; frees the thread's channel when
/// the last one goes.
pub struct ThreadReceiver {
    rx: Option<broadcast::Receiver<Event>>,
    events: Events,
    thread: String,
}

impl ThreadReceiver {
    /// The next event (see `broadcast::Receiver::recv`).
    pub async fn recv(&mut self) -> Result<Event, broadcast::error::RecvError> {
        match &mut self.rx {
            Some(rx) => rx.recv().await,
            None => Err(broadcast::error::RecvError::Closed),
        }
    }
}

impl Drop for ThreadReceiver {
    fn drop(&mut self) {
        drop(self.rx.take());
        self.events.release(&self.thread);
    }
}

/// One event on a thread.
#[derive(Debug, Clone)]
pub enum Event {
    /// A message was saved.
    Saved {
        /// createdAt (µs) of the thread's previous message, when known.
        prev: Option<i64>,
        /// The message.
        message: Arc<Message>,
    },
    /// Events may have been missed: re-read from the store.
    Resync,
    /// This user was removed from the thread: end their subscriptions.
    Revoked(Arc<str>),
}

/// The in-process fan-out. Cheap to clone.
#[derive(Clone, Default)]
pub struct Events {
    threads: Arc<Mutex<HashMap<String, broadcast::Sender<Event>>>>,
}

impl Events {
    /// A receiver for one thread's events.
    pub fn subscribe(&self, thread: &str) -> ThreadReceiver {
        // std Mutex: held for a map lookup only, never across an await.
        let mut threads = self.threads.lock().unwrap_or_else(|p| p.into_inner());
        let rx = threads.entry(thread.to_owned()).or_insert_with(|| broadcast::channel(CHANNEL_CAPACITY).0).subscribe();
        ThreadReceiver { rx: Some(rx), events: self.clone(), thread: thread.to_owned() }
    }

    /// Drops a thread's channel once nobody listens (quiet threads would
    /// otherwise keep theirs forever).
    fn release(&self, thread: &str) {
        let mut threads = self.threads.lock().unwrap_or_else(|p| p.into_inner());
        if threads.get(thread).is_some_and(|tx| tx.receiver_count() == 0) {
            threads.remove(thread);
        }
    }

    fn dispatch(&self, thread: &str, event: Event) {
        // A thread nobody listens to has no channel (see `release`).
        let threads = self.threads.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = threads.get(thread) {
            let _ = tx.send(event);
        }
    }

    /// Tells every subscriber to re-read (after a pub/sub reconnect).
    pub fn resync_all(&self) {
        let threads = self.threads.lock().unwrap_or_else(|p| p.into_inner());
        for tx in threads.values() {
            let _ = tx.send(Event::Resync);
        }
    }

    /// Announces a message saved through this instance while Redis was out
    /// (pub/sub can't carry it). `prev` unknown: subscribers re-read.
    pub fn publish_local(&self, m: &Message) {
        self.dispatch(&m.thread_id, Event::Saved { prev: None, message: Arc::new(m.clone()) });
    }

    /// Ends `user`'s subscriptions to `thread` on this instance.
    pub fn revoke_local(&self, thread: &str, user: &str) {
        self.dispatch(thread, Event::Revoked(user.into()));
    }

    fn on_pubsub(&self, channel: &str, payload: &[u8]) {
        let Some(thread) = channel.strip_prefix(EVENT_CHANNELS.prefix) else {
            return;
        };
        let event = match decode_event(payload) {
            WireEvent::Saved { prev, message } => Event::Saved { prev, message: Arc::new(message) },
            WireEvent::Revoked(user) => Event::Revoked(user.into()),
            WireEvent::Unreadable => Event::Resync,
        };
        self.dispatch(thread, event);
    }

    /// Keeps the pub/sub connection up until `stop`; after every (re)connect
    /// all subscribers re-read, since events may have been missed meanwhile.
    pub async fn run(self, source: PubSubSource, stop: CancellationToken) {
        let PubSubSource { client, timeout } = source;
        let mut backoff = Duration::from_millis(100);
        while !stop.is_cancelled() {
            let connected = tokio::time::timeout(timeout.max(Duration::from_millis(500)), async {
                let mut pubsub = client.get_async_pubsub().await?;
                pubsub.psubscribe(EVENT_CHANNELS.pattern).await?;
                Ok::<_, redis::RedisError>(pubsub)
            })
            .await;
            let pubsub = match connected {
                Ok(Ok(p)) => p,
                _ => {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                    continue;
                }
            };
            backoff = Duration::from_millis(100);
            tracing::info!("pub/sub connected");
            self.resync_all();
            let (mut sink, mut messages) = pubsub.split();
            // A connection that died silently (a partition, an idle
            // timeout somewhere) never ends the stream: ping it.
            let mut liveness = tokio::time::interval(PING_EVERY);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    msg = messages.next() => match msg {
                        Some(msg) => self.on_pubsub(msg.get_channel_name(), msg.get_payload_bytes()),
                        None => break,
                    },
                    _ = liveness.tick() => {
                        let pong = tokio::time::timeout(timeout.max(Duration::from_millis(500)), sink.ping::<redis::Value>()).await;
                        if !matches!(pong, Ok(Ok(_))) {
                            break;
                        }
                    }
                }
            }
            tracing::warn!("pub/sub connection lost; reconnecting");
            crate::metrics::Metrics::pubsub_reconnected();
        }
    }
}
