//! Persister faults: a crash between COMMIT and XACK, a frozen consumer whose
//! entries are claimed, poison entries.

use std::{path::PathBuf, time::Duration};

use rand::{rngs::StdRng, Rng, SeedableRng};

use crate::cluster::Layout;
use crate::ctx::{Ctx, Report};

/// 6. The process aborts right after a batch's COMMIT and before its XACK
///    (the `persister-after-commit` failpoint): restarted with the same
///    consumer name, it gets the batch again and stores nothing twice.
pub async fn crash_after_commit(seed: u64, dir: PathBuf) -> anyhow::Result<Report> {
    anyhow::ensure!(
        cfg!(feature = "failpoints"),
        "needs the failpoints feature (cargo test --features failpoints), as scripts/test.sh runs it"
    );
    let after = StdRng::seed_from_u64(seed).random_range(20..60);
    let failpoint = format!("persister-after-commit={after}*off->return");
    let mut ctx = Ctx::start(seed, &dir, Layout::default(), &[("a", vec![("FAILPOINTS", failpoint)])]).await?;
    ctx.subscribe(2).await?;
    ctx.start_load(ctx.load_config());
    ctx.fault(&format!("abort after the commit of persistence batch {}", after + 1));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !ctx.cluster.services[0].exited() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let status = ctx.cluster.services[0].reap();
    ctx.expect(status.is_some(), format!("the process crashed at the failpoint ({status:?})"))?;
    let pending = ctx.cluster.pending_of("a")?;
    ctx.expect(pending > 0, format!("{pending} committed entries left un-acknowledged"))?;
    ctx.cluster.services[0].set_env("FAILPOINTS", None);
    ctx.cluster.services[0].restart().await?;
    ctx.acked(300).await?;
    let left = ctx.cluster.pending_of("a")?;
    let persisted = ctx.metric(0, "threadstore_persisted_total").await?;
    ctx.expect(persisted > 0.0, format!("{persisted} persisted after the restart, {left} still pending"))?;
    ctx.finish().await
}

/// 7. A consumer frozen (`SIGSTOP`) with entries pending, past the claim
///    timeout, while a second instance runs: the second claims and persists
///    them; the first's late XACK after `SIGCONT` is harmless.
pub async fn paused_consumer_claimed(seed: u64, dir: PathBuf) -> anyhow::Result<Report> {
    let mut ctx = Ctx::under_load(seed, &dir, Layout::default(), &[("a", vec![]), ("b", vec![])], false, 2).await?;
    // Freeze `a` at a moment it holds delivered, un-acknowledged entries.
    let mut pending = 0;
    for _ in 0..300 {
        ctx.cluster.services[0].signal(libc::SIGSTOP);
        tokio::time::sleep(Duration::from_millis(10)).await;
        pending = ctx.cluster.pending_of("a")?;
        if pending > 0 {
            break;
        }
        ctx.cluster.services[0].signal(libc::SIGCONT);
        ctx.pause_ms(1, 30).await;
    }
    ctx.fault(&format!("consumer a SIGSTOPped holding {pending} entries"));
    ctx.expect(pending > 0, format!("a froze with {pending} pending entries"))?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while ctx.cluster.pending_of("a")? > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let left = ctx.cluster.pending_of("a")?;
    let claimed = ctx.metric(1, "threadstore_persist_claimed_total").await?;
    ctx.cluster.services[0].signal(libc::SIGCONT);
    ctx.expect(left == 0, format!("b took over a's entries ({left} left on a)"))?;
    ctx.expect(claimed >= pending as f64, format!("b claimed {claimed} entries"))?;
    ctx.acked(300).await?;
    ctx.finish().await
}

/// 8. Poison entries injected straight into the Stream (one unparseable, one
///    PostgreSQL refuses): the other rows commit, the poison goes to the
///    dead-letter stream after its attempts, and persistence keeps flowing.
pub async fn poison_row(seed: u64, dir: PathBuf) -> anyhow::Result<Report> {
    let mut ctx = Ctx::start(seed, &dir, Layout::default(), &[("a", vec![])]).await?;
    ctx.subscribe(2).await?;
    ctx.start_load(ctx.load_config());
    ctx.acked(200).await?;
    let id = uuid::Uuid::now_v7().to_string();
    let micros = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_micros();
    let refused = format!(r#"{{"c":{micros},"id":"{id}","t":"t0","r":"user","b":"poison\u0000","m":null,"k":null}}"#);
    ctx.fault("XADD an unparseable entry and one PostgreSQL refuses (U+0000)");
    ctx.cluster.redis_cmd(&["XADD", "ts:persist", "*", "b", "not json"])?;
    ctx.cluster.redis_cmd(&["XADD", "ts:persist", "*", "b", &refused])?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut dead = 0;
    while dead < 2 && tokio::time::Instant::now() < deadline {
        dead = ctx.cluster.redis_int(&["XLEN", "ts:deadletter"])?;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ctx.expect(dead == 2, format!("{dead} entries in the dead-letter stream"))?;
    let metric = ctx.metric(0, "threadstore_dead_lettered_total").await?;
    ctx.expect(metric == 2.0, format!("threadstore_dead_lettered_total = {metric}"))?;
    ctx.acked(300).await?;
    let stored = ctx.cluster.sql(&format!("SELECT count(*) FROM messages WHERE id = '{id}'"))?;
    ctx.expect(stored == vec![vec!["0".to_owned()]], format!("poison row not stored ({stored:?})"))?;
    ctx.finish().await
}
