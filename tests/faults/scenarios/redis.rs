//! Redis faults: crash, freeze, out of memory, pub/sub loss, slow recovery.

use std::{path::PathBuf, time::Duration};

use tokio::task::block_in_place;

use crate::cluster::Layout;
use crate::ctx::{Ctx, Report};

/// 1. Redis `kill -9` mid-load, restarted after 2 s: with AOF `always` every
///    acknowledged save survives; meanwhile saves go to PostgreSQL.
pub async fn kill9(seed: u64, dir: PathBuf) -> anyhow::Result<Report> {
    let mut ctx = Ctx::under_load(seed, &dir, Layout::default(), &[("a", vec![])], true, 3).await?;
    ctx.pause_ms(0, 500).await;
    let before = ctx.metric(0, "threadstore_failover_writes_total").await?;
    ctx.fault("redis kill -9");
    block_in_place(|| ctx.cluster.redis.kill());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let during = ctx.metric(0, "threadstore_failover_writes_total").await?;
    block_in_place(|| ctx.cluster.redis.restart());
    ctx.expect(during > before, format!("failover writes {before} -> {during} while Redis was dead"))?;
    ctx.acked(300).await?;
    ctx.breaker_closes(0).await?;
    ctx.finish().await
}

/// 2. Redis frozen (`SIGSTOP`) 5 s: timeouts open the breaker, saves go to
///    PostgreSQL, and after `SIGCONT` nothing is stored twice.
pub async fn pause(seed: u64, dir: PathBuf) -> anyhow::Result<Report> {
    let mut ctx = Ctx::under_load(seed, &dir, Layout::default(), &[("a", vec![])], true, 3).await?;
    ctx.pause_ms(0, 500).await;
    let before = ctx.metric(0, "threadstore_failover_writes_total").await?;
    ctx.fault("redis SIGSTOP for 5 s");
    ctx.cluster.redis.pause();
    let acked = ctx.acked(100).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let during = ctx.metric(0, "threadstore_failover_writes_total").await?;
    ctx.cluster.redis.resume();
    ctx.expect(acked.is_ok(), "saves kept being acknowledged while Redis was frozen".into())?;
    ctx.expect(during > before, format!("failover writes {before} -> {during} while Redis was frozen"))?;
    let opened = ctx.metric(0, "threadstore_breaker_transitions_total").await?;
    ctx.expect(opened >= 2.0, format!("{opened} breaker transitions"))?;
    ctx.acked(300).await?;
    ctx.breaker_closes(0).await?;
    ctx.finish().await
}

/// 10. Redis at `maxmemory` with `noeviction`: its writes fail with `OOM`,
///     saves fail over to PostgreSQL, and no key is evicted.
pub async fn maxmemory(seed: u64, dir: PathBuf) -> anyhow::Result<Report> {
    let mut ctx = Ctx::under_load(seed, &dir, Layout::default(), &[("a", vec![])], true, 2).await?;
    let used = ctx.cluster.redis_info("used_memory")?;
    let before = ctx.metric(0, "threadstore_failover_writes_total").await?;
    ctx.fault("redis maxmemory set just above its use");
    ctx.cluster.redis_cmd(&["CONFIG", "SET", "maxmemory", &(used + 32 * 1024).to_string()])?;
    ctx.acked(200).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let during = ctx.metric(0, "threadstore_failover_writes_total").await?;
    let evicted = ctx.cluster.redis_info("evicted_keys")?;
    ctx.cluster.redis_cmd(&["CONFIG", "SET", "maxmemory", "0"])?;
    ctx.expect(during > before, format!("failover writes {before} -> {during} while Redis was full"))?;
    ctx.expect(evicted == 0, format!("{evicted} keys evicted"))?;
    ctx.acked(300).await?;
    ctx.breaker_closes(0).await?;
    ctx.finish().await
}

/// 11. The pub/sub connection killed three times during load: subscribers
///     miss nothing, and the service subscribes again.
pub async fn pubsub_kill(seed: u64, dir: PathBuf) -> anyhow::Result<Report> {
    let mut ctx = Ctx::start(seed, &dir, Layout::default(), &[("a", vec![])]).await?;
    ctx.subscribe(6).await?;
    ctx.start_load(ctx.load_config());
    ctx.acked(200).await?;
    for _ in 0..3 {
        ctx.pause_ms(300, 1500).await;
        ctx.fault("CLIENT KILL TYPE pubsub");
        let killed = ctx.cluster.redis_int(&["CLIENT", "KILL", "TYPE", "pubsub"])?;
        ctx.expect(killed >= 1, format!("{killed} pub/sub connection(s) killed"))?;
    }
    ctx.acked(200).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut patterns = 0;
    while tokio::time::Instant::now() < deadline {
        patterns = ctx.cluster.redis_int(&["PUBSUB", "NUMPAT"])?;
        if patterns >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ctx.expect(patterns >= 1, format!("the service subscribed again ({patterns} pattern subscription)"))?;
    let reconnects = ctx.metric(0, "threadstore_pubsub_reconnects_total").await?;
    ctx.expect(reconnects >= 3.0, format!("threadstore_pubsub_reconnects_total = {reconnects}"))?;
    ctx.finish().await
}

/// 12. Redis answering in 200 ms (over the 100 ms call timeout) for 8 s: the
///     breaker opens and, while half-open, lets at most K probes through at
///     a time; the saves go to PostgreSQL instead of piling onto Redis.
pub async fn slow_recovery(seed: u64, dir: PathBuf) -> anyhow::Result<Report> {
    const K: f64 = 3.0;
    let layout = Layout { redis_proxy: true, ..Layout::default() };
    let mut ctx =
        Ctx::under_load(seed, &dir, layout, &[("a", vec![("BREAKER_HALF_OPEN_PROBES", "3".into())])], true, 2).await?;
    let probes_before = ctx.metric(0, "threadstore_breaker_probes_total").await?;
    let acked_before = ctx.load()?.acked();
    ctx.fault("redis latency 200 ms for 8 s");
    ctx.cluster.redis_proxy()?.set_latency(Duration::from_millis(200));
    tokio::time::sleep(Duration::from_secs(8)).await;
    let probes = ctx.metric(0, "threadstore_breaker_probes_total").await? - probes_before;
    let peak = ctx.metric(0, "threadstore_breaker_probes_in_flight_max").await?;
    let saves = ctx.load()?.acked() - acked_before;
    ctx.cluster.redis_proxy()?.heal();
    // Half-open every cool-down (1 s) at most: K probes per cycle.
    ctx.expect(peak <= K, format!("at most {peak} probes in flight (K = {K})"))?;
    ctx.expect(probes <= K * 10.0, format!("{probes} probes in 8 s"))?;
    ctx.expect(saves as f64 > 10.0 * probes.max(1.0), format!("{saves} saves acknowledged meanwhile"))?;
    ctx.acked(300).await?;
    ctx.breaker_closes(0).await?;
    ctx.finish().await
}
