//! What every scenario does around its faults: start the world, seed the
//! threads, run subscribers, writers and readers, then heal, drain and check.

use std::{path::Path, time::Duration};

use anyhow::Context;
use rand::{rngs::StdRng, Rng, SeedableRng};
use tokio::time::Instant;

use crate::checker::{check_queue, check_reads, Stored, SubCheck};
use crate::cluster::{Cluster, Layout};
use crate::history::{History, Kind};
pub use crate::report::Report;
use crate::subscriber::Subscriber;
use crate::workload::{self, Load, LoadConfig, Outcome};

/// Client id of the harness's own saves (seed and closing messages).
const HARNESS: u32 = 9999;

/// A running scenario.
pub struct Ctx {
    pub cluster: Cluster,
    pub history: History,
    pub rng: StdRng,
    pub threads: Vec<String>,
    seed: u64,
    started: Instant,
    faults: u32,
    /// Reads while Redis is unreachable may not show what it holds (documented).
    outage_reads: bool,
    load: Option<Load>,
    reads: Vec<workload::Read>,
    subscribers: Vec<Subscriber>,
    harness_n: u64,
    load_generation: u32,
}

impl Ctx {
    /// Starts the servers and one service per name, and gives every thread a
    /// first message (subscribers start from the newest one).
    pub async fn start(
        seed: u64,
        dir: &Path,
        layout: Layout,
        services: &[(&str, Vec<(&str, String)>)],
    ) -> anyhow::Result<Ctx> {
        let mut cluster = Cluster::start(layout, dir).await?;
        for (name, env) in services {
            cluster.add_service(name, env).await?;
        }
        let history = History::create(&dir.join("history.jsonl"))?;
        let threads = (0..6).map(|i| format!("t{i}")).collect();
        let mut ctx = Ctx {
            cluster,
            history,
            rng: StdRng::seed_from_u64(seed),
            threads,
            seed,
            started: Instant::now(),
            faults: 0,
            outage_reads: false,
            load: None,
            reads: Vec::new(),
            subscribers: Vec::new(),
            harness_n: 0,
            load_generation: 0,
        };
        for t in ctx.threads.clone() {
            ctx.harness_save(0, &t).await.with_context(|| format!("seeding {t}"))?;
        }
        Ok(ctx)
    }

    /// One recorded save by the harness through service `via`; error unless acknowledged.
    pub async fn harness_save(&mut self, via: usize, thread: &str) -> anyhow::Result<String> {
        self.harness_n += 1;
        let token = format!("h-{}", self.harness_n);
        let addr = self.cluster.services[via].addr;
        self.history.record(HARNESS, Kind::Invoke, &token, thread, None, None);
        match workload::save(&workload::http_client(), addr, thread, &token, &token).await {
            Outcome::Ok { id } => {
                self.history.record(HARNESS, Kind::Ok, &token, thread, Some(id.clone()), None);
                Ok(id)
            }
            Outcome::Fail(e) => {
                self.history.record(HARNESS, Kind::Fail, &token, thread, None, Some(e.clone()));
                anyhow::bail!("harness save failed: {e}")
            }
            Outcome::Info(e) => {
                self.history.record(HARNESS, Kind::Info, &token, thread, None, Some(e.clone()));
                anyhow::bail!("harness save unknown: {e}")
            }
        }
    }

    /// The common preamble: the world started, `per_service` subscribers
    /// on each service, the default load running and its first 300 saves
    /// acknowledged, so the fault lands mid-load. `outage`: the scenario
    /// makes Redis unreachable (see [`Ctx::redis_outage`]).
    pub async fn under_load(
        seed: u64,
        dir: &Path,
        layout: Layout,
        services: &[(&str, Vec<(&str, String)>)],
        outage: bool,
        per_service: usize,
    ) -> anyhow::Result<Ctx> {
        let mut ctx = Ctx::start(seed, dir, layout, services).await?;
        if outage {
            ctx.redis_outage();
        }
        ctx.subscribe(per_service).await?;
        ctx.start_load(ctx.load_config());
        ctx.acked(300).await?;
        Ok(ctx)
    }
    /// Reads during Redis outages are allowed to miss what Redis holds.
    pub fn redis_outage(&mut self) {
        self.outage_reads = true;
    }

    /// Starts `per_service` subscribers on each running service, spread over the threads.
    pub async fn subscribe(&mut self, per_service: usize) -> anyhow::Result<()> {
        let addrs = self.cluster.addrs();
        for (s, _) in addrs.iter().enumerate() {
            for i in 0..per_service {
                let thread = self.threads[(s * per_service + i) % self.threads.len()].clone();
                self.subscribers.push(Subscriber::start(addrs.clone(), s, &thread).await?);
            }
        }
        Ok(())
    }

    /// The default client mix: 6 writers (~100 saves/s each at most), 2 readers.
    pub fn load_config(&self) -> LoadConfig {
        LoadConfig {
            writers: 6,
            pause: Duration::from_millis(5),
            threads: self.threads.clone(),
            invalid_every: 40,
            readers: 2,
        }
    }

    /// Starts writers and readers.
    pub fn start_load(&mut self, cfg: LoadConfig) {
        self.load_generation += 1;
        let load = Load::start(cfg, self.cluster.addrs(), self.history.clone(), self.seed, self.load_generation);
        self.load = Some(load);
    }

    /// The running load.
    pub fn load(&self) -> anyhow::Result<&Load> {
        self.load.as_ref().context("no load running")
    }

    /// Waits for `n` more acknowledged saves.
    pub async fn acked(&self, n: u64) -> anyhow::Result<()> {
        self.load()?.wait_acked(n, Duration::from_secs(30)).await
    }

    /// Stops writers and readers (keeps their reads for the check).
    pub async fn stop_load(&mut self) {
        if let Some(load) = self.load.take() {
            self.reads.extend(load.stop().await);
        }
    }

    /// Counts a fault and logs it with the time since start.
    pub fn fault(&mut self, what: &str) {
        self.faults += 1;
        println!("    {:>6.2}s fault: {what}", self.started.elapsed().as_secs_f64());
    }

    /// Records an observation; `ok` false fails the scenario with it.
    pub fn expect(&mut self, ok: bool, what: String) -> anyhow::Result<()> {
        println!("    {:>6.2}s {} {what}", self.started.elapsed().as_secs_f64(), if ok { "ok:" } else { "FAILED:" });
        anyhow::ensure!(ok, "{what}");
        Ok(())
    }

    /// `/metrics` value `name` of service `svc`.
    pub async fn metric(&self, svc: usize, name: &str) -> anyhow::Result<f64> {
        self.cluster.services[svc].metric(name).await
    }

    /// Expects service `svc`'s breaker to close again (within 15 s).
    pub async fn breaker_closes(&mut self, svc: usize) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut state = self.metric(svc, "threadstore_breaker_state").await?;
        while state != 0.0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
            state = self.metric(svc, "threadstore_breaker_state").await?;
        }
        self.expect(state == 0.0, format!("breaker closed again (state {state})"))
    }

    /// Waits until the PostgreSQL proxy made `n` pattern cuts (20 s at most).
    pub async fn wait_cuts(&self, n: u64) -> anyhow::Result<u64> {
        let proxy = self.cluster.pg_proxy()?;
        let deadline = Instant::now() + Duration::from_secs(20);
        while proxy.match_cuts() < n && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(proxy.match_cuts())
    }

    /// Reconnects of the subscribers that started on service `svc`.
    pub fn reconnects_of(&self, svc: usize) -> u32 {
        self.subscribers.iter().filter(|s| s.home == svc).map(Subscriber::reconnects).sum()
    }

    /// Every message id of `thread` through service `svc`, oldest first, in pages of 200.
    pub async fn read_all(&self, svc: usize, thread: &str) -> anyhow::Result<Vec<String>> {
        let http = workload::http_client();
        let addr = self.cluster.services[svc].addr;
        let q = "query($t: ID!, $o: Int!) { thread(id: $t) { messages(limit: 200, offset: $o) { id } } }";
        let mut ids = Vec::new();
        loop {
            let body = serde_json::json!({ "query": q, "variables": { "t": thread, "o": ids.len() } });
            let r: serde_json::Value =
                http.post(format!("http://{addr}/graphql")).json(&body).send().await?.json().await?;
            let page = r.pointer("/data/thread/messages").and_then(|p| p.as_array()).with_context(|| format!("{r}"))?;
            ids.extend(page.iter().filter_map(|m| m["id"].as_str().map(str::to_owned)));
            if page.len() < 200 {
                return Ok(ids);
            }
        }
    }

    /// Waits until `/readyz` of `svc` says `want` (200 = true); returns what it last said.
    pub async fn wait_ready(&self, svc: usize, want: bool, within: Duration) -> anyhow::Result<bool> {
        let deadline = Instant::now() + within;
        loop {
            let ready = self.cluster.services[svc].readyz().await? == 200;
            if ready == want || Instant::now() >= deadline {
                return Ok(ready);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Sleeps a seeded random time in `lo..=hi` milliseconds.
    pub async fn pause_ms(&mut self, lo: u64, hi: u64) {
        let ms = self.rng.random_range(lo..=hi);
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }

    /// Heals nothing itself: the scenario heals first. Then: stop clients,
    /// drain, send one closing message per thread through every live
    /// service (so subscribers have a last event to catch up on), wait for
    /// subscribers, and check everything against PostgreSQL.
    pub async fn finish(mut self) -> anyhow::Result<Report> {
        self.stop_load().await;
        self.cluster.drain(Duration::from_secs(60)).await?;
        let live: Vec<usize> =
            (0..self.cluster.services.len()).filter(|&i| !self.cluster.services[i].exited()).collect();
        for t in self.threads.clone() {
            for &s in &live {
                self.harness_save(s, &t).await.with_context(|| format!("closing message on {t}"))?;
            }
        }
        self.cluster.drain(Duration::from_secs(30)).await?;
        let stored = Stored::load(&self.cluster)?;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let behind = self.subscribers.iter().any(|s| {
                let ids = stored.ids(&s.thread);
                let start = ids.iter().position(|id| *id == s.start_id).map_or(0, |p| p + 1);
                s.count() < ids.len() - start
            });
            if !behind || Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut subs = SubCheck::default();
        for (i, s) in std::mem::take(&mut self.subscribers).into_iter().enumerate() {
            let (thread, start) = (s.thread.clone(), s.start_id.clone());
            let (received, reconnects) = s.finish().await;
            // Kept with the history for a failed run's post-mortem.
            let log = format!("thread {thread} from {start}\n{}\n", received.join("\n"));
            let _ = std::fs::write(self.cluster.dir.join(format!("subscriber-{i}.txt")), log);
            subs.add(&received, &start, &stored.ids(&thread), reconnects);
        }
        if let Ok(rows) = self.cluster.sql(
            "SELECT thread_id, id, created_at, persisted_at, content FROM messages ORDER BY thread_id, created_at, id",
        ) {
            let text: Vec<String> = rows.iter().map(|r| r.join(" ")).collect();
            let _ = std::fs::write(self.cluster.dir.join("postgres.txt"), text.join("\n"));
        }
        let history = self.history.load()?;
        let queue = check_queue(&history, &stored);
        let reads = check_reads(&self.reads, &stored);
        Ok(Report { queue, reads, subs, faults: self.faults, outage_reads: self.outage_reads })
    }
}
