//! The gap-free live feed of one subscriber (SPEC invariant 6).
//!
//! The subscriber remembers the last message it delivered. An event whose
//! `prev` is exactly that message is delivered straight away (the fast path:
//! no store read). Anything else — an unknown `prev`, a lagging receiver, a
//! pub/sub reconnect, a resume with `after:` — re-reads everything after the
//! last delivered message from the store, in thread order. Delivery is
//! therefore exactly once and ordered whatever pub/sub loses or repeats.
//!
//! One exception, during a Redis outage: PostgreSQL alone answers the
//! re-reads, and it can't show the messages Redis still holds unpersisted,
//! which may be older than a failover write the feed delivers meanwhile.
//! The feed notes where it went "blind", and once Redis answers again it
//! re-reads that stretch and delivers what it missed: late, out of order,
//! but never lost.

use std::{
    collections::{HashSet, VecDeque},
    time::Duration,
};

use futures::Stream;
use tokio::sync::broadcast::error::RecvError;

use super::events::{Event, Events, ThreadReceiver};
use crate::domain::{Message, MessageId, OrderKey, ThreadId};
use crate::store::{MessageStore, Order, PageQuery};

const GAP_PAGE: u32 = 200;

struct State {
    /// The subscribing principal: its removal from the thread ends the feed.
    watcher: Option<String>,
    store: MessageStore,
    thread: ThreadId,
    rx: ThreadReceiver,
    last: Option<OrderKey>,
    started: bool,
    resume: bool,
    needs_fill: bool,
    buffer: VecDeque<Message>,
    /// Set while re-reads are answered without Redis (see the module docs).
    blind: Option<Blind>,
    /// Ids delivered lately. Across a failover transition one message can
    /// carry two createdAt values (Redis ran a save the service had already
    /// written to PostgreSQL after a timeout): never deliver an id twice.
    recent: VecDeque<MessageId>,
}

/// Where a feed went blind, and what it delivered since.
struct Blind {
    from: Option<OrderKey>,
    delivered: HashSet<MessageId>,
}

/// Most ids remembered while blind (an outage of hours at full speed).
const BLIND_IDS: usize = 100_000;

/// How many delivered ids a subscriber remembers.
const RECENT_IDS: usize = 1024;

/// Messages saved on `thread` after `after` (or after now when `None`).
pub fn feed(
    store: MessageStore,
    events: &Events,
    thread: ThreadId,
    after: Option<OrderKey>,
    watcher: Option<String>,
) -> impl Stream<Item = Message> {
    // Subscribe before reading the tail, so nothing saved in between is missed.
    let rx = events.subscribe(thread.as_str());
    let state = State {
        watcher,
        store,
        thread,
        rx,
        last: after,
        started: false,
        resume: after.is_some(),
        needs_fill: false,
        blind: None,
        buffer: VecDeque::new(),
        recent: VecDeque::with_capacity(RECENT_IDS),
    };
    futures::stream::unfold(state, |mut s| async move {
        loop {
            if let Some(m) = s.buffer.pop_front() {
                if s.recent.contains(&m.id) {
                    continue;
                }
                if let Some(b) = s.blind.as_mut().filter(|b| b.delivered.len() < BLIND_IDS) {
                    b.delivered.insert(m.id);
                }
                // A late message (caught up after an outage) leaves `last` as it is.
                s.last = s.last.max(Some(m.order_key()));
                if s.recent.len() == RECENT_IDS {
                    s.recent.pop_front();
                }
                s.recent.push_back(m.id);
                return Some((m, s));
            }
            if !s.started {
                s.started = true;
                if !s.resume {
                    s.last = s.tail().await;
                }
                s.needs_fill = true;
                continue;
            }
            if s.needs_fill {
                s.fill().await;
                continue;
            }
            match s.rx.recv().await {
                Ok(Event::Saved { prev, message }) => {
                    let key = message.order_key();
                    if s.last.is_some_and(|l| key <= l) {
                        continue; // already delivered
                    }
                    let expected = s.last.map(|l| l.created_at.micros()).unwrap_or(0);
                    if prev == Some(expected) && s.blind.is_none() {
                        s.buffer.push_back((*message).clone());
                    } else {
                        s.needs_fill = true;
                    }
                }
                Ok(Event::Resync) | Err(RecvError::Lagged(_)) => s.needs_fill = true,
                Ok(Event::Revoked(user)) if s.watcher.as_deref() == Some(&*user) => return None,
                Ok(Event::Revoked(_)) => {}
                Err(RecvError::Closed) => return None,
            }
        }
    })
}

impl State {
    /// The thread's newest message now; retried until a tier answers.
    async fn tail(&mut self) -> Option<OrderKey> {
        let q = PageQuery::Range { order: Order::Desc, after: None, before: None, limit: 1 };
        let mut backoff = Duration::from_millis(50);
        loop {
            match self.store.feed_page(&self.thread, q).await {
                Ok((page, _)) => return page.first().map(Message::order_key),
                Err(e) => {
                    tracing::debug!(error = %e, "subscription tail read failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
    }

    /// Reads the next page after `last`; a store outage is retried (the
    /// subscription stays open and catches up when a tier is back).
    async fn fill(&mut self) {
        let q = PageQuery::Range { order: Order::Asc, after: self.last, before: None, limit: GAP_PAGE };
        match self.store.feed_page(&self.thread, q).await {
            Ok((page, with_redis)) => {
                if !with_redis && self.blind.is_none() {
                    self.blind = Some(Blind { from: self.last, delivered: HashSet::new() });
                }
                self.needs_fill = page.len() as u32 == GAP_PAGE;
                let last = self.last;
                self.buffer.extend(page.into_iter().filter(|m| last.is_none_or(|l| m.order_key() > l)));
                if with_redis && self.blind.is_some() {
                    self.catch_up().await;
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "subscription gap read failed; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }

    /// Redis answers again: re-reads what was delivered while blind and
    /// queues, first, the messages that were missing then (late).
    async fn catch_up(&mut self) {
        let Some(blind) = &self.blind else { return };
        let mut after = blind.from;
        let mut late = Vec::new();
        loop {
            let q = PageQuery::Range { order: Order::Asc, after, before: None, limit: GAP_PAGE };
            let page = match self.store.feed_page(&self.thread, q).await {
                Ok((page, true)) => page,
                _ => return, // still blind: try again at the next re-read
            };
            let full = page.len() as u32 == GAP_PAGE;
            let mut past_last = false;
            for m in page {
                after = Some(m.order_key());
                if self.last.is_some_and(|l| m.order_key() > l) {
                    past_last = true;
                    break;
                }
                if !blind.delivered.contains(&m.id) && !self.recent.contains(&m.id) {
                    late.push(m);
                }
            }
            if past_last || !full {
                break;
            }
        }
        if !late.is_empty() {
            tracing::info!(thread_id = %self.thread, late = late.len(), "delivering messages missed during a redis outage");
        }
        for m in late.into_iter().rev() {
            self.buffer.push_front(m);
        }
        self.blind = None;
    }
}
