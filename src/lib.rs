//! # threadstore
//!
//! Stores chat messages and serves them through GraphQL, built so a chat UI
//! feels instant and nothing acknowledged is ever lost.
//!
//! **Write path.** `saveMessage` parses its input into [`domain`] types,
//! fixes the message id (UUIDv7), and makes ONE atomic Redis call
//! (`store/redis`, `store/lua/save.lua`): idempotency check, createdAt
//! from Redis `TIME`, body, thread index, persistence Stream entry and a
//! pub/sub wake-up. The message is acknowledged with `persisted: false`.
//!
//! **Persistence.** `store/persistence` is a consumer in a Redis Stream
//! group: it batches entries into one idempotent PostgreSQL insert and
//! acknowledges them only after COMMIT, then flags the cached bodies
//! persisted and starts their TTL. Unpersisted data never expires.
//!
//! **Read path.** [`store::MessageStore::page`] answers from the Redis thread
//! index when it is warm and covers the range; bodies come through a
//! per-request DataLoader ([`graphql::loader`]): one `MGET`, one PostgreSQL
//! query for misses, which are cached again. Cold or deep pages read
//! PostgreSQL merged with the unpersisted messages still in Redis.
//!
//! **Failover.** `store/failover` opens on repeated Redis faults; then
//! saves go straight to PostgreSQL (one transaction under the thread's row
//! lock) and reads are served by PostgreSQL. Before Redis takes writes again
//! the failover writes are reconciled into it.
//!
//! **Subscriptions.** [`live`]: `events` holds one pub/sub connection per
//! process and fans out per thread; `feed` turns that into a gap-free, exactly-once
//! stream by re-reading from the store whenever an event may be missing.
//!
//! **Security.** [`auth`] verifies bearer JWTs and decides per-thread
//! access (members only; the first writer owns a thread); [`rate`] limits
//! saves and subscriptions per principal; [`http`] bounds bodies, content
//! types, timeouts and the WebSocket protocol; [`graphql`] bounds query
//! depth, complexity, aliases, directives and length.
//!
//! **Process.** [`startup::Application`] wires it all; [`shutdown`] drains
//! it; [`http`] is the router; [`config`] the settings; [`metrics`] and
//! [`telemetry`] the observability.

pub mod auth;
pub mod config;
pub mod domain;
pub mod error;
pub mod graphql;
pub mod http;
pub mod live;
pub mod metrics;
pub mod rate;
pub mod shutdown;
pub mod startup;
pub mod store;
pub mod telemetry;

pub use error::Error;
