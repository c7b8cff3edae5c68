//! Live delivery, above the store: what GraphQL subscriptions read.
//!
//! - [`events`]: ONE Redis pub/sub connection per process, fanned out
//!   in-process per thread (pub/sub is a wake-up signal, not the record).
//! - [`mod@feed`]: one subscriber's gap-free, exactly-once stream, re-reading
//!   from the store whenever an event may be missing.

pub mod events;
pub mod feed;

pub use events::{Event, Events, ThreadReceiver};
pub use feed::feed;

use crate::domain::Message;
use crate::store::Announce;

/// Failover writes reach this instance's subscribers straight from the
/// store: pub/sub cannot carry them.
impl Announce for Events {
    fn saved_without_redis(&self, m: &Message) {
        self.publish_local(m);
    }

    fn revoked_here(&self, thread: &str, user: &str) {
        self.revoke_local(thread, user);
    }
}
