//! The scenarios, in the order of the issue that asked for them. Each one is
//! an `async fn(seed, dir) -> Report`: it builds its world through
//! [`Ctx::start`], injects its faults while the clients run, asserts the
//! metrics that should have moved, heals, and lets [`Ctx::finish`] check.

mod network;
mod persister;
mod postgres;
mod pressure;
mod redis;
mod service;

use std::{path::PathBuf, time::Duration};

use futures::future::BoxFuture;

use crate::ctx::Report;

/// One named scenario.
pub struct Scenario {
    pub name: &'static str,
    pub about: &'static str,
    /// The whole scenario (set-up and checks included) must end within this.
    pub bound: Duration,
    pub run: fn(u64, PathBuf) -> BoxFuture<'static, anyhow::Result<Report>>,
}

macro_rules! scenario {
    ($name:literal, $secs:literal, $f:path, $about:literal) => {
        Scenario {
            name: $name,
            about: $about,
            bound: Duration::from_secs($secs),
            run: |seed, dir| Box::pin($f(seed, dir)),
        }
    };
}

/// Every scenario.
pub fn all() -> Vec<Scenario> {
    vec![
        scenario!("01-redis-kill9", 60, redis::kill9, "Redis kill -9 mid-load, restarted after 2 s (AOF always)"),
        scenario!("02-redis-pause", 60, redis::pause, "Redis SIGSTOPped 5 s: breaker opens, saves go to PostgreSQL"),
        scenario!(
            "03-pg-crash-mid-batch",
            60,
            postgres::crash_mid_batch,
            "PostgreSQL -m immediate mid-batch, restarted: no ack for an uncommitted batch"
        ),
        scenario!(
            "04-pg-down-60s",
            120,
            postgres::down_60s,
            "PostgreSQL down 60 s under load: nothing trimmed, depth and lag exported"
        ),
        scenario!(
            "05-pg-cut-after-commit",
            60,
            postgres::cut_after_commit,
            "connection to PostgreSQL cut right after COMMIT was sent"
        ),
        scenario!(
            "06-persister-crash-after-commit",
            60,
            persister::crash_after_commit,
            "process aborts after COMMIT, before XACK (failpoint)"
        ),
        scenario!(
            "07-consumer-paused-past-claim",
            60,
            persister::paused_consumer_claimed,
            "a consumer SIGSTOPped past the claim timeout while a second instance runs"
        ),
        scenario!(
            "08-poison-row",
            60,
            persister::poison_row,
            "poison entries injected into the Stream go to the dead-letter stream"
        ),
        scenario!("09-service-kill9", 60, service::kill9, "the service kill -9ed mid-load and restarted"),
        scenario!(
            "10-redis-maxmemory",
            60,
            redis::maxmemory,
            "Redis at maxmemory with noeviction: saves fail over, nothing evicted"
        ),
        scenario!(
            "11-pubsub-kill",
            60,
            redis::pubsub_kill,
            "pub/sub connection killed (CLIENT KILL TYPE pubsub) during load"
        ),
        scenario!(
            "12-redis-slow-recovery",
            60,
            redis::slow_recovery,
            "Redis answering in 200 ms: at most K probes in flight, no stampede"
        ),
        scenario!(
            "13-two-instances-one-killed",
            60,
            service::two_instances_one_killed,
            "two instances, one kill -9ed: the other's subscribers and persister carry on"
        ),
        scenario!(
            "14-empty-cache-with-backlog",
            60,
            service::empty_cache_with_backlog,
            "restart with an empty Redis cache and a backlog: reads complete and ordered"
        ),
        scenario!(
            "15-sigterm-under-load",
            60,
            service::sigterm_under_load,
            "SIGTERM under load: exit 0, nothing lost, nothing left un-acked"
        ),
        scenario!(
            "16-backlog-bound",
            60,
            pressure::backlog_bound,
            "backpressure: past the backlog bound saves fail fast, then resume by themselves"
        ),
        scenario!(
            "17-pg-frozen",
            60,
            postgres::frozen,
            "PostgreSQL SIGSTOPped 6 s, Redis too for 3 s of it: answers, no hang, no phantom"
        ),
        scenario!(
            "18-resets-and-cuts",
            60,
            network::resets_and_cuts,
            "Redis connections reset, PostgreSQL connections cut after N bytes"
        ),
    ]
}
