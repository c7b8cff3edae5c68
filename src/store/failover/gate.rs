//! The one way store code reaches Redis. [`MessageStore::via_redis`]
//! routes the call (a half-open probe is a `PING` made here, never the
//! caller's own operation), brings Redis up to date with failover writes
//! first ([`super::reconcile`]), runs the call (the tier times out every
//! call), records the outcome with the breaker, and says what became of
//! it. Nothing else in the store touches the breaker: a Redis failure that
//! a caller chooses to survive (a cache fill, a prime) is still counted.

use std::time::{Duration, Instant};

use super::breaker::Route;
use crate::store::redis::{RedisFault, RedisTier};
use crate::store::MessageStore;

tokio::task_local! {
    /// Set while a write makes its last-chance Redis attempt.
    static ONE_TRY: ();
}

/// Runs `attempt` with one try per Redis call and no patience: for the
/// attempt a write makes after a failover that found PostgreSQL down, when
/// the request has waited out one tier already and must answer soon.
pub(in crate::store) async fn one_try<F: std::future::Future>(attempt: F) -> F::Output {
    ONE_TRY.scope((), attempt).await
}

/// Why a Redis call gave no answer.
#[derive(Debug)]
pub(in crate::store) enum Missed {
    /// Not attempted: the breaker is open (or Redis is not yet reconciled).
    Skipped,
    /// Attempted and failed; [`RedisFault::maybe_applied`] says whether a
    /// write may have been applied all the same.
    Failed(RedisFault),
}

impl Missed {
    /// Whether a write may have been applied although no answer came.
    pub(in crate::store) fn maybe_applied(&self) -> bool {
        matches!(self, Missed::Failed(f) if f.maybe_applied())
    }
}

impl std::fmt::Display for Missed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Missed::Skipped => f.write_str("redis skipped: breaker open"),
            Missed::Failed(fault) => fault.fmt(f),
        }
    }
}

impl MessageStore {
    /// Runs `call` on Redis if the breaker lets it, and records the outcome.
    pub(in crate::store) async fn via_redis<T>(
        &self,
        call: impl AsyncFnOnce(&RedisTier) -> Result<T, RedisFault>,
    ) -> Result<T, Missed> {
        let route = self.route().await;
        if route == Route::Fallback {
            return Err(Missed::Skipped);
        }
        let outcome = call(&self.redis).await;
        self.breaker.record(route, outcome.is_ok());
        outcome.map_err(Missed::Failed)
    }

    /// Like [`MessageStore::via_redis`], for calls that should not fail
    /// over lightly. A timeout on a Redis the breaker trusts is most often
    /// this process descheduled past the deadline: it is asked twice more.
    /// And while PostgreSQL is known to be down, failing over would only
    /// fail: timeouts are asked again for as long as the store's patience
    /// allows (half the request deadline, at most 1 s). `call` builds each
    /// attempt.
    pub(in crate::store) async fn via_redis_patiently<T, M, F>(&self, call: M) -> Result<T, Missed>
    where
        M: Fn() -> F,
        F: AsyncFnOnce(&RedisTier) -> Result<T, RedisFault>,
    {
        let started = Instant::now();
        // Two re-asks: a Redis the breaker trusts that misses one deadline
        // is most often this process descheduled or an fsync stall on a
        // loaded machine, and a failover costs more than 200 ms. A write's
        // last chance (see [`one_try`]) has spent its patience already.
        let last_chance = ONE_TRY.try_with(|_| ()).is_ok();
        let mut again = if last_chance { 0 } else { 2 };
        let patience = if last_chance { Duration::ZERO } else { self.config.patience };
        let mut timed_out = false;
        loop {
            // Routed before every try: the breaker may have opened, and
            // failover writes made meanwhile must reach Redis first.
            let route = self.route().await;
            if route == Route::Fallback {
                // A try that timed out may have been applied: say so.
                return Err(if timed_out { Missed::Failed(RedisFault::Timeout) } else { Missed::Skipped });
            }
            let outcome = call()(&self.redis).await;
            let patient = again > 0 || (self.pg.known_down() && started.elapsed() < patience);
            match outcome {
                // Asked again, and counted once: what the breaker weighs is
                // the operation's outcome, not each try of it.
                // With PostgreSQL known down Redis is asked again even when
                // the breaker is open: it is the only tier left.
                Err(RedisFault::Timeout) if patient && (self.redis_in_use() || self.pg.known_down()) => {
                    again -= 1;
                    timed_out = true;
                }
                other => {
                    self.breaker.record(route, other.is_ok());
                    return other.map_err(Missed::Failed);
                }
            }
        }
    }

    /// Whether Redis takes every call (closed, not just probing): a read
    /// answered by PostgreSQL alone now may have missed messages that Redis
    /// holds unpersisted.
    pub(in crate::store) fn redis_in_use(&self) -> bool {
        self.breaker.is_closed()
    }

    /// Where the next Redis call goes. Any Redis call first brings Redis up
    /// to date with failover writes (see [`super::reconcile`]), so a message
    /// written to PostgreSQL can't be missed, duplicated or reordered once
    /// Redis is back.
    ///
    /// A half-open probe is a `PING` made here, not the caller's operation:
    /// the caller uses Redis only once the breaker has closed (see
    /// [`super::breaker`]).
    async fn route(&self) -> Route {
        let mut route = self.breaker.route();
        if route == Route::Probe {
            let ok = self.redis.ping().await.is_ok();
            self.breaker.record(Route::Probe, ok);
            route = self.breaker.peek_route();
        }
        if route == Route::Fallback && self.pg.known_down() && !self.breaker.is_forced_open() {
            // The breaker keeps calls off a sick Redis because PostgreSQL
            // serves better; with PostgreSQL known down, Redis is the only
            // tier that can answer (a loaded machine makes Redis calls time
            // out and open the breaker exactly when it is needed most). The
            // call goes there as a last resort; its outcome cannot move an
            // open breaker (see `Breaker::record`), so only probes close it.
            route = Route::Redis;
        }
        match self.reconcile_before(route).await {
            Reconciled::Ready => route,
            Reconciled::NotYet => Route::Fallback,
            Reconciled::RedisFailed => {
                self.breaker.record(route, false);
                Route::Fallback
            }
        }
    }
}

/// What bringing Redis up to date before a call came to.
pub(in crate::store) enum Reconciled {
    /// Nothing was pending, or it is done (or only PostgreSQL failed, which
    /// makes Redis the better tier to serve from).
    Ready,
    /// Someone else is reconciling: keep off Redis for this call.
    NotYet,
    /// Redis failed while being brought up to date.
    RedisFailed,
}
