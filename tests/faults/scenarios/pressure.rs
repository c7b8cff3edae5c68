//! Backpressure: the persistence backlog has a bound.

use std::{path::PathBuf, time::Duration};

use tokio::task::block_in_place;

use crate::cluster::Layout;
use crate::ctx::{Ctx, Report};

const LIMIT: i64 = 400;

/// 16. PostgreSQL down until the backlog reaches `PERSIST_BACKLOG_LIMIT`:
///     saves then fail fast with `STORAGE_UNAVAILABLE` and store nothing (the
///     checker's `failed_but_stored`), `/readyz` is 503, a gauge, a counter
///     and a warning say why, the stream never passes the bound; once
///     PostgreSQL is back everything resumes by itself.
pub async fn backlog_bound(seed: u64, dir: PathBuf) -> anyhow::Result<Report> {
    let env = vec![("PERSIST_BACKLOG_LIMIT", LIMIT.to_string())];
    let mut ctx = Ctx::start(seed, &dir, Layout::default(), &[("a", env)]).await?;
    ctx.subscribe(2).await?;
    ctx.start_load(ctx.load_config());
    ctx.acked(200).await?;
    ctx.fault("postgres stop -m immediate until the backlog is full");
    block_in_place(|| ctx.cluster.pg.stop_immediate());
    let ready = ctx.wait_ready(0, false, Duration::from_secs(20)).await?;
    ctx.expect(!ready, "/readyz is 503 with the backlog at its bound".into())?;
    let mut longest = 0;
    for _ in 0..10 {
        longest = longest.max(ctx.cluster.backlog()?.0);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    ctx.expect(longest <= LIMIT, format!("stream length {longest} stays within the bound {LIMIT}"))?;
    let gauge = ctx.metric(0, "threadstore_backpressure").await?;
    let refused = ctx.metric(0, "threadstore_saves_refused_total").await?;
    ctx.expect(gauge == 1.0 && refused > 0.0, format!("backpressure gauge {gauge}, {refused} saves refused"))?;
    let warned = ctx.cluster.services[0].log_contains("persistence backlog at its limit");
    ctx.expect(warned, "a warning says why".into())?;
    block_in_place(|| ctx.cluster.pg.start_again());
    let ready = ctx.wait_ready(0, true, Duration::from_secs(30)).await?;
    ctx.expect(ready, "/readyz is 200 again once the backlog drained".into())?;
    ctx.acked(300).await?;
    let gauge = ctx.metric(0, "threadstore_backpressure").await?;
    ctx.expect(gauge == 0.0, format!("backpressure gauge back to {gauge}"))?;
    ctx.finish().await
}
