//! `Subscription`: the gap-free feed of [`crate::live::feed()`], ended cleanly when
//! the server shuts down.

use async_graphql::{Context, Subscription, ID};
use futures::{Stream, StreamExt};
use tokio_util::sync::CancellationToken;

use std::sync::Arc;

use super::guard::check;
use super::types::MessageNode;
use std::time::Duration;

use crate::auth::{
    access::{authorize, Action},
    Caller,
};
use crate::domain::{Cursor, ThreadId};
use crate::error::Error;
use crate::live::Events;
use crate::metrics::Metrics;
use crate::rate::RateLimits;
use crate::store::MessageStore;

/// Counts a live subscription for as long as its stream exists.
struct Active(Metrics);

impl Drop for Active {
    fn drop(&mut self) {
        self.0.subscriptions(-1);
    }
}

/// Root subscriptions.
pub struct SubscriptionRoot;

#[Subscription(name = "Subscription")]
impl SubscriptionRoot {
    /// Every message saved on the thread after subscribing (or after the
    /// `after` cursor: replayed first, then live), once each, in order.
    /// Members only; ends when the subscriber is removed from the thread.
    async fn message_saved(
        &self,
        ctx: &Context<'_>,
        thread_id: ID,
        after: Option<String>,
    ) -> Result<impl Stream<Item = MessageNode>, Error> {
        let thread = ThreadId::parse(&thread_id)?;
        let after = after.as_deref().map(Cursor::decode).transpose()?.map(|c| c.0);
        let caller = check(ctx, &thread, Action::Read).await?;
        let slot = ctx.data::<Arc<RateLimits>>()?.subscription(caller)?;
        let watcher = caller.principal().map(|p| p.id.clone());
        let store = ctx.data::<MessageStore>()?.clone();
        let events = ctx.data::<Events>()?;
        let stop = ctx.data::<CancellationToken>()?.clone();
        let metrics = ctx.data::<Metrics>()?.clone();
        metrics.subscriptions(1);
        let active = Active(metrics);
        let recheck = recheck(store.clone(), caller.clone(), thread.clone());
        let feed = crate::live::feed(store, events, thread, after, watcher);
        Ok(feed.take_until(stop.cancelled_owned()).take_until(recheck).map(move |m| {
            let _ = (&active, &slot);
            MessageNode(m)
        }))
    }
}

/// How often a live subscription re-checks its subscriber's membership.
const RECHECK: Duration = Duration::from_secs(30);

/// Completes when the caller is no longer a member of `thread`: the
/// backstop for a removal whose pub/sub notice this instance missed (Redis
/// was down, or the removal happened on another instance meanwhile).
async fn recheck(store: MessageStore, caller: Caller, thread: ThreadId) {
    if caller.principal().is_none_or(|p| p.service) {
        return std::future::pending().await;
    }
    loop {
        tokio::time::sleep(RECHECK).await;
        if let Err(Error::Forbidden) = authorize(&store, &caller, &thread, Action::Read).await {
            return;
        }
    }
}
