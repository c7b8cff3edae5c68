//! PostgreSQL faults: crash mid-batch, a long outage, a COMMIT whose answer is lost.

use std::{path::PathBuf, time::Duration};

use tokio::task::block_in_place;

use crate::cluster::Layout;
use crate::ctx::{Ctx, Report};

/// Samples the stream length for `secs` seconds; true if it ever shrank
/// (an entry was acknowledged and deleted while PostgreSQL was down).
async fn stream_shrinks(ctx: &Ctx, secs: u64) -> anyhow::Result<(bool, i64)> {
    let mut last = 0;
    let mut shrank = false;
    for _ in 0..secs * 5 {
        let (len, _) = ctx.cluster.backlog()?;
        shrank |= len < last;
        last = len;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok((shrank, last))
}

/// 3. PostgreSQL crashed (`-m immediate`) while batches are in flight, then
///    restarted: a batch whose COMMIT never happened is never acknowledged.
pub async fn crash_mid_batch(seed: u64, dir: PathBuf) -> anyhow::Result<Report> {
    let mut ctx = Ctx::start(seed, &dir, Layout::default(), &[("a", vec![])]).await?;
    ctx.subscribe(2).await?;
    ctx.start_load(ctx.load_config());
    ctx.acked(500).await?;
    ctx.pause_ms(0, 300).await;
    ctx.fault("postgres stop -m immediate");
    block_in_place(|| ctx.cluster.pg.stop_immediate());
    // A batch committed just before the crash may still be acknowledged.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (shrank, len) = stream_shrinks(&ctx, 3).await?;
    ctx.expect(!shrank && len > 0, format!("stream only grew while PostgreSQL was down ({len} entries)"))?;
    block_in_place(|| ctx.cluster.pg.start_again());
    ctx.acked(300).await?;
    let persisted = ctx.metric(0, "threadstore_persisted_total").await?;
    ctx.expect(persisted > 0.0, format!("{persisted} messages persisted"))?;
    ctx.finish().await
}

/// 4. PostgreSQL down for 60 s under load: the stream keeps every entry,
///    queue depth and lag are exported, and all of it is persisted after.
pub async fn down_60s(seed: u64, dir: PathBuf) -> anyhow::Result<Report> {
    let mut ctx = Ctx::start(seed, &dir, Layout::default(), &[("a", vec![])]).await?;
    ctx.subscribe(2).await?;
    let mut cfg = ctx.load_config();
    (cfg.writers, cfg.pause) = (4, Duration::from_millis(15));
    ctx.start_load(cfg);
    ctx.acked(200).await?;
    ctx.fault("postgres stop -m immediate for 60 s");
    block_in_place(|| ctx.cluster.pg.stop_immediate());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (shrank, len) = stream_shrinks(&ctx, 58).await?;
    let depth = ctx.metric(0, "threadstore_persist_queue_depth").await?;
    let lag = ctx.metric(0, "threadstore_persist_lag_seconds").await?;
    let api = ctx.cluster.services[0].storage_metrics().await?;
    block_in_place(|| ctx.cluster.pg.start_again());
    ctx.expect(!shrank, format!("nothing trimmed while un-acked ({len} entries after 60 s)"))?;
    ctx.expect(depth > 1000.0, format!("queue depth exported: {depth}"))?;
    ctx.expect(lag > 30.0, format!("lag exported: {lag:.1} s"))?;
    let api_depth = api["persistenceQueueDepth"].as_f64().unwrap_or(0.0);
    ctx.expect(api_depth > 1000.0, format!("storageMetrics: {api}"))?;
    ctx.acked(200).await?;
    ctx.finish().await
}

/// 5. The connection to PostgreSQL cut right after the request that
///    commits was sent (the persister's single-statement INSERT, then a
///    failover save's COMMIT): the outcome is unknown to the service, which
///    retries (persister) or says "maybe stored" (failover); nothing doubles.
pub async fn cut_after_commit(seed: u64, dir: PathBuf) -> anyhow::Result<Report> {
    let layout = Layout { redis_proxy: true, pg_proxy: true, ..Layout::default() };
    let mut ctx = Ctx::under_load(seed, &dir, layout, &[("a", vec![])], true, 2).await?;
    ctx.fault("cut after the next 5 persister INSERTs");
    ctx.cluster.pg_proxy()?.cut_after_match(b"FROM unnest(", 5);
    let cuts = ctx.wait_cuts(5).await?;
    ctx.expect(cuts == 5, format!("{cuts} persister commits cut"))?;
    ctx.acked(200).await?;

    ctx.fault("redis blackholed: saves fail over; cut after the next 5 COMMITs");
    let before = ctx.metric(0, "threadstore_failover_writes_total").await?;
    ctx.cluster.pg_proxy()?.cut_after_match(b"COMMIT", 5);
    ctx.cluster.redis_proxy()?.blackhole(true);
    let cuts = ctx.wait_cuts(5).await;
    ctx.acked(100).await?;
    let after = ctx.metric(0, "threadstore_failover_writes_total").await?;
    ctx.cluster.redis_proxy()?.blackhole(false);
    ctx.expect(cuts.as_ref().is_ok_and(|c| *c == 5), format!("failover commits cut: {cuts:?}"))?;
    ctx.expect(after > before, format!("failover writes {before} -> {after}"))?;
    ctx.cluster.pg_proxy()?.heal();
    ctx.acked(300).await?;
    ctx.breaker_closes(0).await?;
    ctx.finish().await
}

/// 17. PostgreSQL frozen (`SIGSTOP` on the postmaster and its backends) for
///     6 s; for 3 s of it Redis is frozen too, so neither tier answers: saves
///     are answered with `STORAGE_UNAVAILABLE` within the timeouts (never a
///     hang) and what the service called "not stored" never shows up later.
pub async fn frozen(seed: u64, dir: PathBuf) -> anyhow::Result<Report> {
    let mut ctx = Ctx::under_load(seed, &dir, Layout::default(), &[("a", vec![])], true, 2).await?;
    ctx.fault("postgres SIGSTOP (postmaster and backends) for 6 s");
    block_in_place(|| ctx.cluster.pg.pause());
    let redis_alone = ctx.acked(100).await;
    ctx.fault("redis SIGSTOP for 3 s: neither tier answers");
    let answered_before = ctx.load()?.completed();
    ctx.cluster.redis.pause();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let answered = ctx.load()?.completed() - answered_before;
    ctx.cluster.redis.resume();
    tokio::time::sleep(Duration::from_secs(2)).await;
    ctx.cluster.pg.resume();
    ctx.expect(redis_alone.is_ok(), "saves went on through Redis while PostgreSQL was frozen".into())?;
    ctx.expect(answered > 0, format!("{answered} saves answered while neither tier could take them"))?;
    let opened = ctx.metric(0, "threadstore_breaker_transitions_total").await?;
    ctx.expect(opened >= 1.0, format!("{opened} breaker transitions"))?;
    ctx.acked(300).await?;
    ctx.breaker_closes(0).await?;
    ctx.finish().await
}
