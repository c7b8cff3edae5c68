//! `Query` and the `Thread` type.

use async_graphql::{
    connection::{Connection, Edge},
    dataloader::DataLoader,
    Context, Object, ID,
};

use super::guard::{check, operator};
use super::loader::{MessageKey, MessageLoader};
use super::types::{MessageNode, MessageOrder, StorageMetrics, TierLatency};
use crate::auth::access::Action;
use crate::domain::{Cursor, EventCursor, Message, MessageId, ThreadId, ValidationError};
use crate::error::Error;
use crate::metrics::{Metrics, Tier};
use crate::store::{BreakerState as State, MessageStore, Order, Page, PageQuery};

/// Page size when none is given.
pub const DEFAULT_LIMIT: i32 = 50;
/// Largest page.
pub const MAX_LIMIT: i32 = 200;
/// Deepest offset.
pub const MAX_OFFSET: i32 = 100_000;

fn bounded(field: &'static str, v: i32, lo: i32, hi: i32) -> Result<u32, Error> {
    if (lo..=hi).contains(&v) {
        Ok(v as u32)
    } else {
        Err(ValidationError { field, reason: format!("must be between {lo} and {hi}") }.into())
    }
}

/// Root queries.
pub struct Query;

#[Object]
impl Query {
    /// A thread; one with no messages is empty, not an error. Members only
    /// (`FORBIDDEN` otherwise, also when it does not exist).
    async fn thread(&self, ctx: &Context<'_>, id: ID) -> Result<ThreadNode, Error> {
        let thread = ThreadId::parse(&id)?;
        check(ctx, &thread, Action::Read).await.map_err(Error::on_read)?;
        Ok(ThreadNode(thread))
    }

    /// One message; null when unknown or not readable by the caller.
    async fn message(&self, ctx: &Context<'_>, id: ID) -> Result<Option<MessageNode>, Error> {
        let id = MessageId::parse(&id)?;
        let store = ctx.data::<MessageStore>()?;
        let Some(m) = store.message(id).await.map_err(|e| Error::from(e).on_read())? else { return Ok(None) };
        match check(ctx, &ThreadId::parse(&m.thread_id)?, Action::Read).await {
            Ok(_) => Ok(Some(MessageNode(m))),
            Err(Error::Forbidden) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Tier latencies, cache hit ratio, breaker state, persistence queue.
    /// Service principals only (or no authentication).
    async fn storage_metrics(&self, ctx: &Context<'_>) -> Result<StorageMetrics, Error> {
        operator(ctx)?;
        let metrics = ctx.data::<Metrics>()?;
        let store = ctx.data::<MessageStore>()?;
        let tier = |t| {
            let p = metrics.tier_latency(t);
            TierLatency { p50_ms: p.p50_ms, p99_ms: p.p99_ms, calls: p.count }
        };
        let queue = metrics.queue_snapshot();
        let (saves, reads) = metrics.rates();
        let breaker = match store.breaker_state() {
            State::Closed { .. } => "CLOSED",
            State::HalfOpen { .. } => "HALF_OPEN",
            State::Open { .. } => "OPEN",
        };
        Ok(StorageMetrics {
            redis: tier(Tier::Redis),
            postgres: tier(Tier::Postgres),
            cache_hit_ratio: metrics.cache_hit_ratio(),
            breaker_state: breaker.into(),
            failovers: metrics.failovers(),
            failover_writes: metrics.failover_writes(),
            persistence_queue_depth: queue.depth,
            persistence_pending: queue.pending,
            persistence_lag_ms: queue.lag_ms,
            dead_letters: queue.dead_letters,
            persisted: metrics.persisted(),
            saves_per_second: saves,
            reads_per_second: reads,
            active_subscriptions: metrics.active_subscriptions(),
        })
    }
}

/// A chat thread.
pub struct ThreadNode(ThreadId);

impl ThreadNode {
    async fn read(&self, ctx: &Context<'_>, q: PageQuery) -> Result<Vec<Message>, Error> {
        let store = ctx.data::<MessageStore>()?;
        match store.page(&self.0, q).await.map_err(|e| Error::from(e).on_read())? {
            Page::Messages(m) => Ok(m),
            Page::Keys(ids) => {
                let loader = ctx.data::<DataLoader<MessageLoader>>()?;
                let keys: Vec<MessageKey> = ids.iter().map(|id| MessageKey(self.0.clone(), *id)).collect();
                let mut found = loader.load_many(keys.iter().cloned()).await.map_err(Error::on_read)?;
                Ok(keys.iter().filter_map(|k| found.remove(k)).collect())
            }
        }
    }
}

#[Object(name = "Thread")]
impl ThreadNode {
    /// The thread id.
    async fn id(&self) -> ID {
        ID(self.0.as_str().to_owned())
    }

    /// A page by offset. `limit` 1..=200, `offset` 0..=100000. Each
    /// argument is optional: left out or `null`, it takes its default (what
    /// generated clients send for a declared, unset variable).
    async fn messages(
        &self,
        ctx: &Context<'_>,
        #[graphql(default_with = "Some(DEFAULT_LIMIT)")] limit: Option<i32>,
        #[graphql(default_with = "Some(0)")] offset: Option<i32>,
        #[graphql(default_with = "Some(MessageOrder::OldestFirst)")] order: Option<MessageOrder>,
    ) -> Result<Vec<MessageNode>, Error> {
        let q = PageQuery::Offset {
            order: order.unwrap_or(MessageOrder::OldestFirst).into(),
            offset: bounded("offset", offset.unwrap_or(0), 0, MAX_OFFSET)?,
            limit: bounded("limit", limit.unwrap_or(DEFAULT_LIMIT), 1, MAX_LIMIT)?,
        };
        Ok(self.read(ctx, q).await?.into_iter().map(MessageNode).collect())
    }

    /// Relay cursor connection, oldest first. `first`/`last` 1..=200.
    async fn message_connection(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        last: Option<i32>,
        before: Option<String>,
    ) -> Result<Connection<String, MessageNode>, Error> {
        let after = after.as_deref().map(Cursor::decode).transpose()?.map(|c| c.0);
        let before = before.as_deref().map(Cursor::decode).transpose()?.map(|c| c.0);
        let (order, n) = match (first, last) {
            (Some(_), Some(_)) => {
                return Err(ValidationError { field: "first", reason: "give first or last, not both".into() }.into())
            }
            (Some(f), None) => (Order::Asc, bounded("first", f, 1, MAX_LIMIT)?),
            (None, Some(l)) => (Order::Desc, bounded("last", l, 1, MAX_LIMIT)?),
            (None, None) => (Order::Asc, DEFAULT_LIMIT as u32),
        };
        let mut page = self.read(ctx, PageQuery::Range { order, after, before, limit: n + 1 }).await?;
        let more = page.len() > n as usize;
        page.truncate(n as usize);
        let mut conn = if order == Order::Asc {
            Connection::new(after.is_some(), more)
        } else {
            page.reverse();
            Connection::new(more, before.is_some())
        };
        conn.edges.extend(page.into_iter().map(|m| Edge::new(m.cursor().encode(), MessageNode(m))));
        Ok(conn)
    }

    /// Messages in the thread.
    async fn message_count(&self, ctx: &Context<'_>) -> Result<u64, Error> {
        ctx.data::<MessageStore>()?.count(&self.0).await.map_err(|e| Error::from(e).on_read())
    }

    /// The thread's latest change, as an opaque cursor: read it with a page
    /// in one query, then subscribe with `threadEvents(after:)` from it.
    async fn event_cursor(&self, ctx: &Context<'_>) -> Result<String, Error> {
        let seq = ctx.data::<MessageStore>()?.last_change(&self.0).await.map_err(|e| Error::from(e).on_read())?;
        Ok(EventCursor(seq).encode())
    }
}
