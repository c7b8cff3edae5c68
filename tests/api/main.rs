//! One integration crate: every test runs the real service against real
//! `redis-server` and `postgres` processes started by [`support`].

mod helpers;

mod bad_input;
mod change_seq;
mod edges;
mod edits;
mod failover;
mod messages;
mod optional_args;
mod pagination;
mod persistence;
mod query_cost;
mod security;
mod shutdown;
mod startup;
mod subscriptions;
mod ws_protocol;
