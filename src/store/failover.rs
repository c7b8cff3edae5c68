//! Failover: when Redis is sick, PostgreSQL takes the writes and reads, and
//! Redis is brought up to date before it takes writes again.
//!
//! - [`breaker`]: the circuit breaker's state machine (closed, open,
//!   half-open), counting Redis faults.
//! - `gate`: the ONE way store code reaches Redis: routes by the breaker,
//!   probes, reconciles first, times the call out, records the outcome.
//! - `reconcile`: the hand-back of failover writes to Redis, exclusive
//!   against failover writes in flight.

pub mod breaker;
pub(super) mod gate;
pub(super) mod reconcile;
