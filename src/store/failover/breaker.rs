//! The Redis circuit breaker, as an explicit state machine.
//!
//! Closed: every call goes to Redis; consecutive failures (timeouts, dropped
//! connections, `OOM`, `MISCONF`, ...) reaching the threshold open it.
//! Open: every save goes straight to PostgreSQL and every read is served by
//! PostgreSQL, so a sick Redis costs one fast failure, not one timeout per
//! request. After the cool-down it half-opens: at most `probes` requests at a
//! time probe Redis (no stampede on a recovering server); that many successes
//! close it, one failure re-opens it. A probe is a `PING` made on behalf of
//! the request (see `MessageStore::route`), never the request's own write:
//! while half-open every save still goes to PostgreSQL, so one thread never
//! takes writes from both tiers (two clocks) at the same time.

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

use crate::metrics::Metrics;

/// Breaker state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Redis is healthy.
    Closed {
        /// Consecutive failures so far.
        failures: u32,
    },
    /// Redis is out until `until`.
    Open {
        /// End of the cool-down.
        until: Instant,
    },
    /// Probing.
    HalfOpen {
        /// Probes running now.
        in_flight: u32,
        /// Probes that succeeded.
        successes: u32,
        /// When the last probe slot was handed out.
        granted: Instant,
    },
}

/// How long a half-open probe may take before its slot is reclaimed.
const PROBE_LEASE: Duration = Duration::from_secs(5);

impl State {
    /// Whether Redis takes all calls.
    pub fn is_closed(&self) -> bool {
        matches!(self, State::Closed { .. })
    }
}

/// Where a call should go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Use Redis.
    Redis,
    /// Use Redis as a half-open probe (report the result!).
    Probe,
    /// Skip Redis.
    Fallback,
}

/// The breaker. Its lock is never held across an await.
pub struct Breaker {
    state: Mutex<State>,
    threshold: u32,
    cooldown: Duration,
    probes: u32,
    forced_open: bool,
    metrics: Metrics,
}

impl Breaker {
    /// A closed breaker (or a permanently open one when `forced_open`).
    pub fn new(threshold: u32, cooldown: Duration, probes: u32, forced_open: bool, metrics: Metrics) -> Self {
        let state = if forced_open { State::Open { until: Instant::now() } } else { State::Closed { failures: 0 } };
        if forced_open {
            metrics.breaker_state(2, "open", false);
            tracing::warn!("Redis circuit breaker forced open: PostgreSQL-only mode");
        }
        Self {
            state: Mutex::new(state),
            threshold: threshold.max(1),
            cooldown,
            probes: probes.max(1),
            forced_open,
            metrics,
        }
    }

    /// Current state.
    pub fn state(&self) -> State {
        self.state.lock().map(|s| *s).unwrap_or(State::Open { until: Instant::now() })
    }

    /// Whether it was forced open by configuration (Redis never used).
    pub fn is_forced_open(&self) -> bool {
        self.forced_open
    }

    /// Whether Redis takes all calls.
    pub fn is_closed(&self) -> bool {
        matches!(self.state(), State::Closed { .. })
    }

    /// Where a call goes without taking a probe slot: Redis only when closed.
    pub fn peek_route(&self) -> Route {
        if !self.forced_open && self.is_closed() {
            Route::Redis
        } else {
            Route::Fallback
        }
    }

    /// Decides where the next call goes.
    pub fn route(&self) -> Route {
        if self.forced_open {
            return Route::Fallback;
        }
        let Ok(mut s) = self.state.lock() else {
            return Route::Fallback;
        };
        match *s {
            State::Closed { .. } => Route::Redis,
            State::Open { until } if Instant::now() >= until => {
                *s = State::HalfOpen { in_flight: 1, successes: 0, granted: Instant::now() };
                self.transition("half_open", 1, false);
                self.metrics.breaker_probe(1);
                Route::Probe
            }
            State::Open { .. } => Route::Fallback,
            State::HalfOpen { in_flight, successes, granted }
                if in_flight < self.probes || granted.elapsed() > PROBE_LEASE =>
            {
                // A probe that never reported (its request was cancelled)
                // gives its slot back after the lease, so half-open can't
                // stall for good.
                let in_flight = if in_flight < self.probes { in_flight + 1 } else { 1 };
                *s = State::HalfOpen { in_flight, successes, granted: Instant::now() };
                self.metrics.breaker_probe(in_flight);
                Route::Probe
            }
            State::HalfOpen { .. } => Route::Fallback,
        }
    }

    /// Reports a call's outcome.
    pub fn record(&self, route: Route, ok: bool) {
        if self.forced_open || route == Route::Fallback {
            return;
        }
        let Ok(mut s) = self.state.lock() else { return };
        let next = match (*s, route, ok) {
            (State::Closed { .. }, _, true) => State::Closed { failures: 0 },
            (State::Closed { failures }, _, false) if failures + 1 >= self.threshold => self.open(),
            (State::Closed { failures }, _, false) => State::Closed { failures: failures + 1 },
            (State::HalfOpen { in_flight, successes, granted }, Route::Probe, true) => {
                if successes + 1 >= self.probes {
                    self.transition("closed", 0, false);
                    State::Closed { failures: 0 }
                } else {
                    State::HalfOpen { in_flight: in_flight.saturating_sub(1), successes: successes + 1, granted }
                }
            }
            (State::HalfOpen { .. }, Route::Probe, false) => self.open(),
            // A call routed before the state changed: its result says
            // nothing about the current state.
            (other, _, _) => other,
        };
        *s = next;
    }

    fn open(&self) -> State {
        self.transition("open", 2, true);
        State::Open { until: Instant::now() + self.cooldown }
    }

    fn transition(&self, to: &'static str, code: i64, opened: bool) {
        // Logged once per transition, not per request.
        tracing::warn!(to, "redis circuit breaker changed state");
        self.metrics.breaker_state(code, to, opened);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> Breaker {
        Breaker::new(3, Duration::from_millis(0), 2, false, Metrics::new())
    }

    #[test]
    fn opens_after_threshold_and_closes_after_probes() {
        let b = breaker();
        for _ in 0..2 {
            b.record(Route::Redis, false);
        }
        assert_eq!(b.route(), Route::Redis);
        b.record(Route::Redis, false);
        assert!(matches!(b.state(), State::Open { .. }));
        // cool-down of 0: next two calls probe, third falls back
        assert_eq!(b.route(), Route::Probe);
        assert_eq!(b.route(), Route::Probe);
        assert_eq!(b.route(), Route::Fallback);
        b.record(Route::Probe, true);
        b.record(Route::Probe, true);
        assert_eq!(b.state(), State::Closed { failures: 0 });
    }

    #[test]
    fn failed_probe_reopens() {
        let b = breaker();
        for _ in 0..3 {
            b.record(Route::Redis, false);
        }
        assert_eq!(b.route(), Route::Probe);
        b.record(Route::Probe, false);
        assert!(matches!(b.state(), State::Open { .. }));
    }

    #[test]
    fn success_resets_failures() {
        let b = breaker();
        b.record(Route::Redis, false);
        b.record(Route::Redis, false);
        b.record(Route::Redis, true);
        b.record(Route::Redis, false);
        assert_eq!(b.state(), State::Closed { failures: 1 });
    }
}
