//! Service faults: kill -9 and restart, one of two instances killed, a
//! restart onto an empty cache with a backlog, SIGTERM under load.

use std::{path::PathBuf, time::Duration};

use tokio::task::block_in_place;

use crate::checker::Stored;
use crate::cluster::Layout;
use crate::ctx::{Ctx, Report};

/// 9. The service `kill -9`ed mid-load and restarted: the new process (same
///    consumer name) persists what the dead one had read but not acknowledged.
pub async fn kill9(seed: u64, dir: PathBuf) -> anyhow::Result<Report> {
    let mut ctx = Ctx::under_load(seed, &dir, Layout::default(), &[("a", vec![])], false, 3).await?;
    ctx.pause_ms(0, 500).await;
    ctx.fault("service kill -9");
    ctx.cluster.services[0].kill().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    ctx.cluster.services[0].start().await?;
    ctx.acked(300).await?;
    let persisted = ctx.metric(0, "threadstore_persisted_total").await?;
    ctx.expect(persisted > 0.0, format!("the restarted process persisted {persisted}"))?;
    ctx.finish().await
}

/// 13. Two instances share Redis and PostgreSQL; one is `kill -9`ed for good:
///     the other's subscribers carry on without a reconnect, its persister
///     claims what the dead one left pending, and writers move over to it.
pub async fn two_instances_one_killed(seed: u64, dir: PathBuf) -> anyhow::Result<Report> {
    let mut ctx = Ctx::start(seed, &dir, Layout::default(), &[("a", vec![]), ("b", vec![])]).await?;
    ctx.subscribe(3).await?;
    ctx.start_load(ctx.load_config());
    ctx.acked(400).await?;
    ctx.pause_ms(0, 500).await;
    ctx.fault("instance a kill -9");
    ctx.cluster.services[0].kill().await;
    ctx.acked(400).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while ctx.cluster.pending_of("a")? > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let left = ctx.cluster.pending_of("a")?;
    ctx.expect(left == 0, format!("b's persister took over ({left} entries left on a)"))?;
    let reconnects = ctx.reconnects_of(1);
    ctx.expect(reconnects == 0, format!("b's subscribers reconnected {reconnects} times"))?;
    let saves = ctx.metric(1, "threadstore_saves_total").await?;
    ctx.expect(saves > 0.0, format!("b acknowledged {saves} saves"))?;
    ctx.finish().await
}

/// 14. The service restarts while Redis holds a persistence backlog (PostgreSQL
///     was down) but no cache (thread indexes, meta and TTL'd keys deleted):
///     reads merge the unpersisted messages with PostgreSQL, complete and in order.
pub async fn empty_cache_with_backlog(seed: u64, dir: PathBuf) -> anyhow::Result<Report> {
    let mut ctx = Ctx::start(seed, &dir, Layout::default(), &[("a", vec![])]).await?;
    ctx.start_load(ctx.load_config());
    ctx.acked(300).await?;
    ctx.fault("postgres stop -m immediate: a backlog builds");
    block_in_place(|| ctx.cluster.pg.stop_immediate());
    ctx.acked(1000).await?;
    ctx.stop_load().await;
    ctx.fault("service kill -9, Redis cache emptied");
    ctx.cluster.services[0].kill().await;
    let deleted = ctx.cluster.redis_int(&[
        "EVAL",
        "local n = 0 for _, k in ipairs(redis.call('KEYS', 'ts:*')) do \
           if redis.call('TTL', k) > 0 or string.sub(k, -4) == ':idx' or string.sub(k, -5) == ':meta' then \
             redis.call('DEL', k) n = n + 1 end end return n",
        "0",
    ])?;
    let (backlog, _) = ctx.cluster.backlog()?;
    ctx.expect(backlog > 0 && deleted > 0, format!("{deleted} cache keys deleted, {backlog} entries queued"))?;
    block_in_place(|| ctx.cluster.pg.start_again());
    ctx.cluster.services[0].set_env("PERSISTER_ENABLED", Some("false".into()));
    ctx.cluster.services[0].restart().await?;
    let mut views = Vec::new();
    for t in ctx.threads.clone() {
        views.push((t.clone(), ctx.read_all(0, &t).await?));
    }
    ctx.cluster.services[0].set_env("PERSISTER_ENABLED", None);
    ctx.cluster.services[0].restart().await?;
    ctx.start_load(ctx.load_config());
    ctx.acked(200).await?;
    ctx.stop_load().await;
    ctx.cluster.drain(Duration::from_secs(30)).await?;
    let persisted = ctx.metric(0, "threadstore_persisted_total").await?;
    ctx.expect(
        persisted >= backlog as f64,
        format!("the restarted process persisted {persisted} (backlog {backlog})"),
    )?;
    let stored = Stored::load(&ctx.cluster)?;
    for (t, view) in &views {
        let all = stored.ids(t);
        let same = all.len() >= view.len() && all[..view.len()].iter().zip(view).all(|(a, b)| a == b);
        ctx.expect(same, format!("{t}: the cold read of {} messages is PostgreSQL's order", view.len()))?;
    }
    ctx.start_load(ctx.load_config());
    ctx.finish().await
}

/// 15. SIGTERM under load: the process stops accepting, completes its
///     subscriptions, finishes the batch in flight and exits 0, leaving no
///     delivered entry un-acknowledged; nothing acknowledged is lost.
pub async fn sigterm_under_load(seed: u64, dir: PathBuf) -> anyhow::Result<Report> {
    let mut ctx = Ctx::start(seed, &dir, Layout::default(), &[("a", vec![])]).await?;
    ctx.subscribe(3).await?;
    ctx.start_load(ctx.load_config());
    ctx.acked(400).await?;
    ctx.pause_ms(0, 500).await;
    ctx.fault("SIGTERM");
    ctx.cluster.services[0].signal(libc::SIGTERM);
    let status = ctx.cluster.services[0].wait_exit(Duration::from_secs(20)).await?;
    ctx.expect(status.success(), format!("exited with {status}"))?;
    let pending = ctx.cluster.pending_of("a")?;
    ctx.expect(pending == 0, format!("{pending} delivered entries left un-acknowledged"))?;
    ctx.cluster.services[0].start().await?;
    ctx.acked(300).await?;
    let subs = ctx.metric(0, "threadstore_active_subscriptions").await?;
    ctx.expect(subs == 3.0, format!("all 3 subscribers resumed on the new process ({subs})"))?;
    ctx.finish().await
}
