//! Redis key layout. Every key of a thread carries the hash tag `{<thread>}`
//! so a thread's keys share one Cluster slot and the save script stays
//! single-slot per thread.
//!
//! | key | type | TTL | holds |
//! | --- | --- | --- | --- |
//! | `ts:{T}:m:<id>` | string | none until persisted, then cache TTL | body (`store/wire.rs`) |
//! | `ts:{T}:idx` | zset | cache TTL, refreshed by saves | newest ≤ window message ids, score = createdAt µs |
//! | `ts:{T}:unp` | zset | none | ids PostgreSQL does not hold yet |
//! | `ts:{T}:meta` | hash | cache TTL | `last` createdAt, `win` = 1 when idx is the thread's newest messages, `n` count |
//! | `ts:{T}:k:<clientMessageId>` | string | idempotency TTL (24 h) | message id |
//! | `ts:loc:<id>` | string | none until persisted | thread id, for `message(id)` |
//! | `ts:persist` | stream | entries deleted after COMMIT + XACK | entry (`store/wire.rs`), consumer group `persisters` |
//! | `ts:{T}:acl` | hash | cache TTL | `v` version, `o` owner, `u:<user>` membership (cache of PostgreSQL's `thread_acl`/`thread_members`) |
//! | `ts:deadletter` | stream | none | entries that failed persistence N times |
//! | channel `ts:ev:<T>` | pub/sub | - | events (`store/wire.rs`) |
//!
//! The Stream and the locator are global keys; on Redis Cluster the stream
//! would be split per slot (see README, scale-out).

use crate::domain::{MessageId, ThreadId};

/// The persistence stream.
pub const STREAM: &str = "ts:persist";
/// The dead-letter stream.
pub const DEAD_LETTER: &str = "ts:deadletter";
/// The persistence consumer group.
pub const GROUP: &str = "persisters";
/// Pattern matching every thread's event channel.
pub const EVENT_PATTERN: &str = "ts:ev:*";
/// Prefix of event channels.
pub const EVENT_PREFIX: &str = "ts:ev:";

/// Thread meta hash.
pub fn meta(t: &str) -> String {
    format!("ts:{{{t}}}:meta")
}
/// Thread index zset.
pub fn index(t: &str) -> String {
    format!("ts:{{{t}}}:idx")
}
/// Unpersisted-ids zset.
pub fn unpersisted(t: &str) -> String {
    format!("ts:{{{t}}}:unp")
}
/// One message body.
pub fn body(t: &str, id: &MessageId) -> String {
    format!("ts:{{{t}}}:m:{id}")
}
/// Idempotency key.
pub fn idempotency(t: &ThreadId, client_id: &str) -> String {
    format!("ts:{{{t}}}:k:{client_id}")
}
/// Locator of a message's thread.
pub fn locator(id: &MessageId) -> String {
    format!("ts:loc:{id}")
}
/// Event channel of a thread.
pub fn channel(t: &str) -> String {
    format!("{EVENT_PREFIX}{t}")
}
/// Cached access of a thread: `v` version, `o` owner (`""`: none),
/// `u:<user>` `1`/`0` membership (see `store/access.rs`).
pub fn acl(t: &str) -> String {
    format!("ts:{{{t}}}:acl")
}
