//! Test-support fixtures shared by the `api` and `faults` test binaries.
//!
//! The service is tested against *real* infrastructure rather than mocks, because
//! the behaviour under test (Redis-first writes, PostgreSQL durability, recovery
//! after crashes and network faults) only shows up with real servers:
//!
//! * [`RedisServer`]: a throw-away `redis-server` (AOF on) that a test may kill,
//!   restart, wipe or freeze; [`RedisServer::cmd`]/[`RedisServer::cli`] talk RESP
//!   directly so tests need no `redis-cli`.
//! * [`PostgresServer`]: a throw-away PostgreSQL 15 cluster;
//!   [`PostgresServer::shared`] is one cluster per test binary, from which each
//!   test takes a fresh database with [`PostgresServer::create_database`].
//! * [`ChaosProxy`]: a TCP proxy placed between the service and a server to
//!   inject latency, blackholes, resets, refusals and mid-stream cuts.
//!
//! The server fixtures are synchronous: their calls block the calling thread
//! (starts take ~20 ms for Redis, ~0.1-0.8 s for PostgreSQL). That is fine inside
//! `#[tokio::test]`, but on a current-thread runtime never make a *blocking*
//! call through a [`ChaosProxy`] (it runs on that same runtime): use
//! [`resp_command_async`] or the service's own async clients for that.
//!
//! Server processes die with the test binary (see `process.rs`). Submodules are
//! private and everything useful is re-exported here, so that the module names
//! `redis`/`postgres` never clash with the crates of the same name (e.g. via
//! `use support::*`).
#![allow(dead_code)]

mod pg_cluster;
mod ports;
mod postgres;
mod process;
mod proxy;
mod proxy_conn;
mod redis;
mod resp;

// Allowed because a test binary need not use every fixture.
#[allow(unused_imports)]
pub use self::{
    ports::free_port,
    postgres::PostgresServer,
    proxy::ChaosProxy,
    redis::RedisServer,
    resp::{resp_command, resp_command_async, RespValue},
};
