//! Assembling the store from settings: both tiers, the breaker, the
//! tunables, and the start-up checks that refuse a Redis able to lose
//! acknowledged writes. The composition root (`startup.rs`) asks for a
//! store; it never builds a tier itself.

use std::{sync::Arc, time::Duration};

use anyhow::{bail, Context};
use bb8_redis::redis;

use super::{failover::breaker::Breaker, postgres::PgTier, redis::RedisTier, Announce, MessageStore, StoreConfig};
use crate::config::{RedisSettings, Settings};
use crate::metrics::Metrics;

/// Brings the PostgreSQL schema up to date (safe with many instances).
pub async fn migrate(database_url: &str) -> anyhow::Result<()> {
    PgTier::migrate(database_url).await
}

/// Where live events come from: a client for dedicated pub/sub
/// connections, and how long to wait on one.
pub struct PubSubSource {
    /// Opens pub/sub connections (never the shared multiplexed ones).
    pub client: redis::Client,
    /// The Redis call timeout.
    pub timeout: Duration,
}

impl MessageStore {
    /// The store `settings` describe. Migrates PostgreSQL, checks Redis's
    /// durability settings (an unreachable Redis is not fatal: the store
    /// fails over) and brings Redis up to date with failover writes a
    /// previous process may have left.
    pub async fn connect(settings: &Settings, metrics: &Metrics, announce: Arc<dyn Announce>) -> anyhow::Result<Self> {
        let db = &settings.database;
        migrate(db.database_url.expose()).await.context("migrating PostgreSQL")?;
        let pg = PgTier::new(db.database_url.expose(), db.pg_pool_size, db.timeout(), metrics.clone())?;
        let r = &settings.redis;
        let redis = RedisTier::new(r.redis_url.expose(), r.redis_pool_size, r.timeout(), metrics.clone())?;
        check_redis(&redis, r).await?;
        let breaker = Arc::new(Breaker::new(
            r.breaker_failure_threshold,
            r.breaker_cooldown(),
            r.breaker_half_open_probes,
            r.force_failover,
            metrics.clone(),
        ));
        let config = StoreConfig {
            cache_ttl_s: r.cache_ttl().as_secs(),
            idempotency_ttl_s: r.idempotency_ttl().as_secs(),
            window: r.thread_window.max(1),
            backlog_limit: settings.persist.persist_backlog_limit,
            // Long enough to ride out a loaded machine's stalls, short
            // enough that a frozen Redis is reported (and counted by the
            // breaker) well within the request deadline.
            patience: (settings.limits.request_timeout() / 2).min(std::time::Duration::from_secs(1)),
        };
        let store = MessageStore::new(redis, pg, breaker, announce, config, metrics.clone());
        if !r.force_failover {
            // A previous process may have failed over and died before Redis
            // came back: bring Redis up to date before taking saves.
            if let Err(e) = store.reconcile().await {
                // Not fatal: the first Redis call reconciles again (and
                // keeps off Redis until it has).
                tracing::warn!(error = ?e, "start-up reconcile of failover writes failed; retried before Redis is used");
            }
        }
        Ok(store)
    }

    /// Where live delivery opens its pub/sub connection.
    pub fn pubsub_source(&self) -> PubSubSource {
        PubSubSource { client: self.redis.client().clone(), timeout: self.redis.timeout() }
    }
}

/// Refuses a Redis that can lose acknowledged writes, unless explicitly
/// accepted. An unreachable Redis is not fatal: the service fails over.
async fn check_redis(redis: &RedisTier, s: &RedisSettings) -> anyhow::Result<()> {
    let (aof, policy, fsync) = match tokio::try_join!(
        redis.config_get("appendonly"),
        redis.config_get("maxmemory-policy"),
        redis.config_get("appendfsync")
    ) {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!(error = %e, "Redis unreachable at start; serving from PostgreSQL until it answers");
            return Ok(());
        }
    };
    let mut risks = Vec::new();
    if aof.as_deref() != Some("yes") {
        risks.push("appendonly is not 'yes': a Redis crash loses acknowledged saves".to_string());
    }
    if let Some(p) = policy.as_deref().filter(|p| p.starts_with("allkeys-")) {
        risks.push(format!("maxmemory-policy {p} can evict unpersisted messages"));
    }
    if !risks.is_empty() {
        if s.allow_unsafe_redis {
            for r in &risks {
                tracing::warn!(risk = %r, "ALLOW_UNSAFE_REDIS is set: starting anyway");
            }
        } else {
            bail!("refusing to start: {} (set ALLOW_UNSAFE_REDIS=true to accept the risk)", risks.join("; "));
        }
    }
    if fsync.as_deref() != Some("always") {
        tracing::warn!(appendfsync = ?fsync, "appendfsync is not 'always': a host crash can lose up to ~1 s of acknowledged saves");
    }
    Ok(())
}
