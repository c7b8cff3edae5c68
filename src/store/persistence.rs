//! Persistence: the background path from the Redis Stream to PostgreSQL.
//!
//! - [`persister`]: the consumer-group loop (read, insert, acknowledge after
//!   COMMIT, claim what dead consumers left, retry with backoff).
//! - `persister/batch.rs`: one batch's insert, bisecting a rejected batch to isolate a bad
//!   row, and dead-lettering rows that keep failing.
//! - `backpressure`: the bound on the backlog that makes saves refuse
//!   rather than grow Redis memory without limit.

pub(super) mod backpressure;
pub mod persister;
