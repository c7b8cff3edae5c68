//! Network faults through the proxies: connection resets, mid-stream cuts.

use std::{path::PathBuf, time::Duration};

use rand::Rng;

use crate::cluster::Layout;
use crate::ctx::{Ctx, Report};

/// 18. Every Redis connection reset three times, then every PostgreSQL
///     connection cut after a few hundred bytes for 2 s: pools reconnect,
///     the persister retries, nothing is lost or doubled.
pub async fn resets_and_cuts(seed: u64, dir: PathBuf) -> anyhow::Result<Report> {
    let layout = Layout { redis_proxy: true, pg_proxy: true, ..Layout::default() };
    let mut ctx = Ctx::under_load(seed, &dir, layout, &[("a", vec![])], true, 3).await?;
    let errors_before = ctx.metric(0, "threadstore_tier_errors_total").await?;
    for _ in 0..3 {
        ctx.pause_ms(200, 1000).await;
        ctx.fault("reset every Redis connection");
        ctx.cluster.redis_proxy()?.reset_all();
    }
    ctx.acked(200).await?;
    let budget = ctx.rng.random_range(300..3000);
    ctx.fault(&format!("PostgreSQL connections cut after {budget} bytes, for 2 s"));
    ctx.cluster.pg_proxy()?.cut_after_bytes(Some(budget));
    tokio::time::sleep(Duration::from_secs(2)).await;
    ctx.cluster.pg_proxy()?.heal();
    ctx.acked(300).await?;
    let errors = ctx.metric(0, "threadstore_tier_errors_total").await? - errors_before;
    ctx.expect(errors > 0.0, format!("{errors} tier call errors counted"))?;
    ctx.breaker_closes(0).await?;
    ctx.finish().await
}
