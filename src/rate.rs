//! Per-principal limits: saves per second (a token bucket with a burst,
//! `governor`) and live subscriptions at once. Service principals and
//! `AUTH_MODE=none` callers are not limited unless `RATE_LIMIT_ALL` is set,
//! so an AI backend and the benchmarks measure the service, not the limiter.

use std::{
    collections::HashMap,
    num::NonZeroU32,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
};

use governor::{clock::Clock, DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::auth::Caller;
use crate::config::RateSettings;
use crate::error::Error;

/// Forget idle principals' buckets every this many checks (bounded memory).
const SWEEP_EVERY: u64 = 10_000;
/// Key for callers without a principal when `RATE_LIMIT_ALL` is set.
const OPEN_KEY: &str = "";

/// The limits of one process. Cheap to share (`Arc`).
pub struct RateLimits {
    saves: Option<DefaultKeyedRateLimiter<String>>,
    max_subscriptions: u32,
    subscriptions: Mutex<HashMap<String, u32>>,
    all: bool,
    checks: AtomicU64,
}

/// A live subscription's slot; frees itself when dropped.
pub struct SubscriptionSlot {
    limits: Arc<RateLimits>,
    key: Option<String>,
}

impl Drop for SubscriptionSlot {
    fn drop(&mut self) {
        let Some(key) = self.key.take() else { return };
        if let Ok(mut subs) = self.limits.subscriptions.lock() {
            if let Some(n) = subs.get_mut(&key) {
                *n -= 1;
                if *n == 0 {
                    subs.remove(&key);
                }
            }
        }
    }
}

impl RateLimits {
    /// From the settings.
    pub fn new(s: &RateSettings) -> Arc<Self> {
        let saves = NonZeroU32::new(s.save_rate_per_sec).map(|rate| {
            let burst = NonZeroU32::new(s.save_burst.max(s.save_rate_per_sec)).unwrap_or(rate);
            RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst))
        });
        Arc::new(Self {
            saves,
            max_subscriptions: s.max_subscriptions_per_principal,
            subscriptions: Mutex::default(),
            all: s.rate_limit_all,
            checks: AtomicU64::new(0),
        })
    }

    /// The key `caller` is limited under, or `None` when it is not limited.
    fn key(&self, caller: &Caller) -> Option<String> {
        match caller {
            Caller::Principal(p) if !p.service || self.all => Some(p.id.clone()),
            Caller::Open if self.all => Some(OPEN_KEY.to_owned()),
            _ => None,
        }
    }

    /// Takes one save from the caller's bucket.
    pub fn check_save(&self, caller: &Caller) -> Result<(), Error> {
        let (Some(limiter), Some(key)) = (&self.saves, self.key(caller)) else {
            return Ok(());
        };
        if self.checks.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == 0 {
            limiter.retain_recent();
        }
        limiter.check_key(&key).map_err(|not_until| {
            let wait = not_until.wait_time_from(governor::clock::DefaultClock::default().now());
            Error::RateLimited { retry_after_secs: wait.as_secs_f64().ceil().max(1.0) as u64 }
        })
    }

    /// A slot for one more live subscription of the caller.
    pub fn subscription(self: &Arc<Self>, caller: &Caller) -> Result<SubscriptionSlot, Error> {
        let key = self.key(caller).filter(|_| self.max_subscriptions > 0);
        if let Some(k) = &key {
            let mut subs = self.subscriptions.lock().map_err(|_| Error::Internal("rate lock".into()))?;
            let n = subs.entry(k.clone()).or_insert(0);
            if *n >= self.max_subscriptions {
                return Err(Error::RateLimited { retry_after_secs: 1 });
            }
            *n += 1;
        }
        Ok(SubscriptionSlot { limits: self.clone(), key })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Principal;

    fn settings(rate: u32, burst: u32, subs: u32) -> RateSettings {
        RateSettings {
            save_rate_per_sec: rate,
            save_burst: burst,
            max_subscriptions_per_principal: subs,
            rate_limit_all: false,
        }
    }

    fn user(id: &str, service: bool) -> Caller {
        Caller::Principal(Principal { id: id.into(), service })
    }

    #[test]
    fn saves_have_a_burst_then_a_rate_per_principal() {
        let limits = RateLimits::new(&settings(1, 3, 0));
        let alice = user("alice", false);
        for _ in 0..3 {
            assert!(limits.check_save(&alice).is_ok());
        }
        assert!(matches!(limits.check_save(&alice), Err(Error::RateLimited { retry_after_secs: 1 })));
        assert!(limits.check_save(&user("bob", false)).is_ok(), "buckets are per principal");
        for _ in 0..10 {
            assert!(limits.check_save(&user("bot", true)).is_ok(), "service principals are not limited");
            assert!(limits.check_save(&Caller::Open).is_ok(), "AUTH_MODE=none is not limited");
        }
    }

    #[test]
    fn subscriptions_are_capped_and_freed() {
        let limits = RateLimits::new(&settings(0, 0, 2));
        let alice = user("alice", false);
        let a = limits.subscription(&alice).expect("1st");
        let _b = limits.subscription(&alice).expect("2nd");
        assert!(limits.subscription(&alice).is_err());
        drop(a);
        assert!(limits.subscription(&alice).is_ok(), "a dropped slot is free again");
    }
}
