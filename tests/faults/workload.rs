//! The clients: writers that record every save in the [`History`], and
//! readers that keep reading the newest page of each thread (the set-full
//! check works from those reads).

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use rand::{rngs::StdRng, Rng, SeedableRng};
use serde_json::{json, Value};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::history::{History, Kind};

const SAVE: &str = "mutation($input: MessageCreate!) { saveMessage(input: $input) { id } }";
const NEWEST: &str = "query($t: ID!) { thread(id: $t) { messages(limit: 50, order: NEWEST_FIRST) { id } } }";

/// An HTTP client with a bound on every request: a hung service becomes an
/// `info` entry, never a hung suite.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(8)).pool_max_idle_per_host(4).build().unwrap_or_default()
}

/// What one save attempt came to.
pub enum Outcome {
    Ok { id: String },
    Fail(String),
    Info(String),
}

/// One `saveMessage` with `token` as the idempotency key, classified.
pub async fn save(http: &reqwest::Client, addr: SocketAddr, thread: &str, token: &str, content: &str) -> Outcome {
    let input = json!({ "threadId": thread, "role": "USER", "content": content, "clientMessageId": token });
    let req =
        http.post(format!("http://{addr}/graphql")).json(&json!({ "query": SAVE, "variables": { "input": input } }));
    let body: Value = match req.send().await {
        Ok(r) => match r.json().await {
            Ok(v) => v,
            Err(e) => return Outcome::Info(format!("body: {e}")),
        },
        Err(e) => return Outcome::Info(format!("transport: {e}")),
    };
    if let Some(m) = body.pointer("/data/saveMessage") {
        let id = m["id"].as_str().unwrap_or_default().to_owned();
        return Outcome::Ok { id };
    }
    let ext = &body["errors"][0]["extensions"];
    let code = ext["code"].as_str().unwrap_or("NO_CODE").to_owned();
    if ext["maybeStored"].as_bool() == Some(true) {
        Outcome::Info(format!("{code} (maybe stored)"))
    } else if code == "INTERNAL_SERVER_ERROR" || code == "NO_CODE" {
        Outcome::Info(code)
    } else {
        Outcome::Fail(code)
    }
}

/// Writer settings.
#[derive(Clone)]
pub struct LoadConfig {
    pub writers: u32,
    /// Pause between one writer's saves.
    pub pause: Duration,
    pub threads: Vec<String>,
    /// One save in this many is invalid on purpose (over the content limit):
    /// it must fail and never be stored.
    pub invalid_every: u32,
    pub readers: u32,
}

/// A newest-first page as read during the run (ids oldest first).
#[derive(Debug, Clone)]
pub struct Read {
    pub thread: String,
    pub ids: Vec<String>,
    /// When the request was sent and when its answer arrived.
    pub started: Instant,
    pub ended: Instant,
}

/// Running writers and readers.
pub struct Load {
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    acked: Arc<AtomicU64>,
    completed: Arc<AtomicU64>,
    reads: Arc<Mutex<Vec<Read>>>,
}

impl Load {
    /// Starts the clients against `targets` (writer `i` prefers target `i % n`
    /// and moves to the next one when a request gets no answer).
    /// `generation` keeps tokens unique when a scenario starts clients again.
    pub fn start(cfg: LoadConfig, targets: Vec<SocketAddr>, history: History, seed: u64, generation: u32) -> Load {
        let stop = CancellationToken::new();
        let acked = Arc::new(AtomicU64::new(0));
        let completed = Arc::new(AtomicU64::new(0));
        let reads = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for w in 0..cfg.writers {
            let (cfg, targets, history, stop, acked, completed) =
                (cfg.clone(), targets.clone(), history.clone(), stop.clone(), acked.clone(), completed.clone());
            let mut rng = StdRng::seed_from_u64(seed ^ (u64::from(w) << 32) ^ (u64::from(generation) << 48));
            tasks.push(tokio::spawn(async move {
                let http = http_client();
                let mut target = w as usize % targets.len();
                let mut n = 0u64;
                while !stop.is_cancelled() {
                    n += 1;
                    let thread = &cfg.threads[rng.random_range(0..cfg.threads.len())];
                    let token = format!("g{generation}w{w}-{n}");
                    let invalid = cfg.invalid_every > 0 && rng.random_ratio(1, cfg.invalid_every);
                    let content = if invalid { format!("{token} {}", "x".repeat(32_768)) } else { token.clone() };
                    history.record(w, Kind::Invoke, &token, thread, None, None);
                    let outcome = save(&http, targets[target], thread, &token, &content).await;
                    completed.fetch_add(1, Ordering::Relaxed);
                    match outcome {
                        Outcome::Ok { id } => {
                            acked.fetch_add(1, Ordering::Relaxed);
                            history.record(w, Kind::Ok, &token, thread, Some(id), None);
                        }
                        Outcome::Fail(e) => history.record(w, Kind::Fail, &token, thread, None, Some(e)),
                        Outcome::Info(e) => {
                            history.record(w, Kind::Info, &token, thread, None, Some(e));
                            target = (target + 1) % targets.len();
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                    tokio::time::sleep(cfg.pause).await;
                }
            }));
        }
        for r in 0..cfg.readers {
            let (cfg, targets, stop, reads) = (cfg.clone(), targets.clone(), stop.clone(), reads.clone());
            tasks.push(tokio::spawn(async move {
                let http = http_client();
                let mut i = r as usize;
                while !stop.is_cancelled() {
                    i += 1;
                    let thread = &cfg.threads[i % cfg.threads.len()];
                    let addr = targets[i % targets.len()];
                    let started = Instant::now();
                    if let Some(ids) = newest_ids(&http, addr, thread).await {
                        let read = Read { thread: thread.clone(), ids, started, ended: Instant::now() };
                        if let Ok(mut reads) = reads.lock() {
                            reads.push(read);
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }));
        }
        Load { stop, tasks, acked, completed, reads }
    }

    /// Saves acknowledged so far.
    pub fn acked(&self) -> u64 {
        self.acked.load(Ordering::Relaxed)
    }

    /// Saves answered so far, whatever the answer.
    pub fn completed(&self) -> u64 {
        self.completed.load(Ordering::Relaxed)
    }

    /// Waits until `n` more saves than now were acknowledged (bounded).
    pub async fn wait_acked(&self, more: u64, within: Duration) -> anyhow::Result<()> {
        let target = self.acked() + more;
        let deadline = Instant::now() + within;
        while self.acked() < target {
            anyhow::ensure!(
                Instant::now() < deadline,
                "only {} of {target} saves acknowledged in {within:?}",
                self.acked()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// Stops the clients (each finishes its request in flight) and returns the reads.
    pub async fn stop(self) -> Vec<Read> {
        self.stop.cancel();
        for t in self.tasks {
            let _ = t.await;
        }
        let reads = self.reads.lock().map(|r| r.clone()).unwrap_or_default();
        reads
    }
}

/// Ids of the newest 50 messages of `thread`, oldest first; `None` on any error.
pub async fn newest_ids(http: &reqwest::Client, addr: SocketAddr, thread: &str) -> Option<Vec<String>> {
    let body = json!({ "query": NEWEST, "variables": { "t": thread } });
    let r: Value = http.post(format!("http://{addr}/graphql")).json(&body).send().await.ok()?.json().await.ok()?;
    let page = r.pointer("/data/thread/messages")?.as_array()?;
    let mut ids: Vec<String> = page.iter().filter_map(|m| m["id"].as_str().map(str::to_owned)).collect();
    ids.reverse();
    Some(ids)
}
