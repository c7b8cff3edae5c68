//! The types every layer of the store shares: what to read, in what order,
//! the store's tunables and a thread's access. They sit below the tiers, so
//! the tiers and the facade both import them and neither imports the other.

use crate::domain::{Message, MessageVersion, OrderKey};

/// Sort direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Oldest first.
    Asc,
    /// Newest first.
    Desc,
}

/// What part of a thread to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageQuery {
    /// `limit` messages after skipping `offset`, in `order`.
    Offset {
        /// Direction.
        order: Order,
        /// Skipped messages.
        offset: u32,
        /// Page size.
        limit: u32,
    },
    /// Up to `limit` messages strictly between the cursors, in `order`
    /// (the first ones in that order).
    Range {
        /// Direction.
        order: Order,
        /// Exclusive lower bound.
        after: Option<OrderKey>,
        /// Exclusive upper bound.
        before: Option<OrderKey>,
        /// Page size.
        limit: u32,
    },
    /// Only the message count.
    Count,
}

/// Tunables of the store.
#[derive(Debug, Clone, Copy)]
pub struct StoreConfig {
    /// TTL of persisted cache entries, seconds.
    pub cache_ttl_s: u64,
    /// Idempotency key retention, seconds.
    pub idempotency_ttl_s: u64,
    /// Thread index window.
    pub window: u32,
    /// Most unacknowledged persistence entries before saves are refused (0: no bound).
    pub backlog_limit: u64,
    /// How long a request keeps asking a slow Redis while PostgreSQL is
    /// known to be down (failing over would only fail).
    pub patience: std::time::Duration,
}

/// A change of a stored message as the persister applies it: the state
/// after it, and the version it replaced (history keeps that).
#[derive(Debug, Clone)]
pub struct Change {
    /// The message after the change (its `change_seq` orders it).
    pub message: Message,
    /// The version it replaced; `None` for entries written without one.
    pub replaced: Option<MessageVersion>,
}

/// What a user may do on a thread, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// Nobody has written to it yet (or it predates authentication).
    Unclaimed,
    /// Claimed by its first writer.
    Claimed {
        /// The owner; `None` when a service principal wrote first.
        owner: Option<String>,
        /// Whether the asking user is a member (the owner is one).
        member: bool,
    },
}
