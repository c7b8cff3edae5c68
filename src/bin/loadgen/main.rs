//! Load generator for the threadstore GraphQL chat service.
//!
//! It drives the service over its public API only (`POST /graphql` and the
//! `graphql-transport-ws` WebSocket at `/graphql`) and measures:
//!
//! * `save` — closed-loop `saveMessage` mutations: `--concurrency` clients share
//!   one keep-alive HTTP pool and write ~`--content-bytes` USER messages (unique
//!   `clientMessageId` each) to random threads among `--threads` threads named
//!   `bench-<run_id>-<n>`, for `--duration-secs` after a `--warmup-secs` warm-up
//!   that is not recorded. Latency is per request (send → body parsed). The peak
//!   `storageMetrics.persistenceQueueDepth` / `persistenceLagMs` polled every
//!   250 ms is reported too ("n/a" when the server does not expose it).
//! * `read` — tops up `--seed-threads` threads to `--seed-messages` messages each
//!   (64 concurrent saves, the seed time is printed), then closed-loop reads of
//!   the newest 50 messages of a random seeded thread.
//! * `subscribe` — `--subscribers` WebSockets spread evenly over `--sub-threads`
//!   threads; once all are subscribed (plus a short settle delay) one writer
//!   saves `--sub-rate` messages per second to random ones of those threads.
//!   Latency is the delivery delay: instant a subscriber received the event −
//!   instant the writer received the save response (clamped at 0: events can
//!   beat the response; how many did is reported). A second, never-negative
//!   figure measured from the save request's send instant (so including the
//!   save round trip) is printed as a note. Events expected (successful saves ×
//!   subscribers on the thread) vs received shows losses.
//! * `save-failover` — the `save` workload against `--failover-url` (a second
//!   server with its Redis circuit breaker forced open, i.e. PostgreSQL only),
//!   and the failover/primary ratio of save throughput and p99.
//!
//! GraphQL errors (HTTP 200 with a non-empty `errors` array) count as errors.
//! With `--server-pid` (repeatable or comma separated) the server's VmRSS from
//! `/proc/PID/status` is printed after each workload. Progress goes to stderr;
//! the final Markdown report (table + notes) goes to stdout.
//!
//! Run (server listening on 127.0.0.1:8080; default runs save, read,
//! subscribe, then save-failover when `--failover-url` is given):
//!
//! ```text
//! cargo run --release --bin loadgen -- --url http://127.0.0.1:8080 \
//!     --server-pid "$(pgrep -n threadstore)" > loadgen-report.md
//! cargo run --release --bin loadgen -- --workloads save,read \
//!     --seed-threads 100 --duration-secs 5
//! cargo run --release --bin loadgen -- --workloads save,save-failover \
//!     --failover-url http://127.0.0.1:8081
//! ```
//!
//! The load generator competes with the server for CPU when both run on the
//! same machine; on a small box keep that in mind when reading the numbers.

mod gql;
mod report;
mod subscribe;
mod workload;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, ValueEnum};

use crate::gql::Gql;
use crate::report::Outcome;
use crate::workload::{LoopConfig, Op, ThreadCounts};

/// One selectable workload.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum Workload {
    Save,
    Read,
    Subscribe,
    SaveFailover,
    /// `editMessage`, each client editing its own message.
    Edit,
}

impl Workload {
    fn label(self) -> &'static str {
        match self {
            Workload::Save => "save",
            Workload::Read => "read",
            Workload::Subscribe => "subscribe",
            Workload::SaveFailover => "save-failover",
            Workload::Edit => "edit",
        }
    }
}

/// Load generator for the threadstore GraphQL chat service.
#[derive(Parser, Debug)]
#[command(name = "loadgen", version, about, long_about = None)]
struct Args {
    /// Base URL of the server; `/graphql` is appended unless already present.
    #[arg(long, env = "LOADGEN_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Second server (PostgreSQL only, Redis breaker forced open) for `save-failover`.
    #[arg(long, env = "LOADGEN_FAILOVER_URL")]
    failover_url: Option<String>,
    /// Concurrent HTTP clients for save/read.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Number of threads (`bench-<run_id>-<n>`) written by save and read.
    #[arg(long, default_value_t = 1000)]
    threads: usize,
    /// Measured duration of each workload, in seconds.
    #[arg(long, default_value_t = 10)]
    duration_secs: u64,
    /// Unrecorded warm-up before save/read measurements, in seconds.
    #[arg(long, default_value_t = 1)]
    warmup_secs: u64,
    /// Threads seeded (and then read) by `read`; default = `--threads`.
    #[arg(long)]
    seed_threads: Option<usize>,
    /// Messages each seeded thread must hold before `read` runs.
    #[arg(long, default_value_t = 200)]
    seed_messages: u32,
    /// WebSocket subscribers for `subscribe`.
    #[arg(long, default_value_t = 1000)]
    subscribers: usize,
    /// Threads the subscribers are spread over.
    #[arg(long, default_value_t = 100)]
    sub_threads: usize,
    /// Saves per second issued by the writer during `subscribe`.
    #[arg(long, default_value_t = 200)]
    sub_rate: u32,
    /// Wait after the last subscribe before writing, in milliseconds.
    #[arg(long, default_value_t = 500)]
    sub_settle_ms: u64,
    /// Wait for in-flight events after the writer stops, in milliseconds.
    #[arg(long, default_value_t = 2000)]
    sub_drain_ms: u64,
    /// Workloads to run, comma separated [default: save,read,subscribe(,save-failover),edit].
    #[arg(long, value_enum, value_delimiter = ',')]
    workloads: Vec<Workload>,
    /// Size of each message's content, in bytes.
    #[arg(long, default_value_t = 200)]
    content_bytes: usize,
    /// Server PID(s) whose VmRSS is printed after each workload (repeatable, comma separated).
    #[arg(long, value_delimiter = ',')]
    server_pid: Vec<u32>,
    /// Per-request timeout, in seconds.
    #[arg(long, default_value_t = 10)]
    request_timeout_secs: u64,
    /// Run id used in thread ids; random by default.
    #[arg(long)]
    run_id: Option<String>,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let workloads = selected_workloads(&args)?;
    if args.concurrency == 0 || args.threads == 0 || args.duration_secs == 0 {
        bail!("--concurrency, --threads and --duration-secs must be > 0");
    }
    match raise_nofile_limit() {
        Ok(n) => eprintln!("open-file limit: {n}"),
        Err(e) => eprintln!("warning: could not raise the open-file limit: {e:#}"),
    }
    let run_id = args.run_id.clone().unwrap_or_else(|| {
        let id = uuid::Uuid::now_v7().simple().to_string();
        id[id.len() - 10..].to_string()
    });
    let timeout = Duration::from_secs(args.request_timeout_secs.max(1));
    let primary = Gql::new(&args.url, args.concurrency, timeout)?;
    let failover = match &args.failover_url {
        Some(url) => Some(Gql::new(url, args.concurrency, timeout)?),
        None => None,
    };
    if workloads.iter().any(|w| *w != Workload::SaveFailover) {
        primary.preflight().await?;
    }
    if let (Some(f), true) = (&failover, workloads.contains(&Workload::SaveFailover)) {
        f.preflight().await?;
    }

    let threads = Arc::new(gql::thread_ids(&run_id, args.threads));
    let counts = Arc::new(ThreadCounts::new(args.threads));
    let loop_cfg = LoopConfig {
        concurrency: args.concurrency,
        warmup: Duration::from_secs(args.warmup_secs),
        duration: Duration::from_secs(args.duration_secs),
        content_bytes: args.content_bytes,
    };
    let mut rep = report::Report::new(&run_id, &args.url, args.failover_url.as_deref());
    rep.config_line(format!(
        "concurrency {}, threads {}, duration {} s (+{} s warm-up), content {} B, \
         subscribers {} over {} threads at {} saves/s",
        args.concurrency,
        args.threads,
        args.duration_secs,
        args.warmup_secs,
        args.content_bytes,
        args.subscribers,
        args.sub_threads,
        args.sub_rate
    ));
    rep.rss(&args.server_pid, "start");

    for w in workloads {
        eprintln!("== {} ==", w.label());
        let started = Instant::now();
        let res = match w {
            Workload::Save => {
                workload::closed_loop("save", &primary, Op::Save, &loop_cfg, &threads, Some(&counts)).await
            }
            Workload::Read => run_read(&args, &primary, &loop_cfg, &threads, &counts).await,
            Workload::Edit => workload::closed_loop("edit", &primary, Op::Edit, &loop_cfg, &threads, None).await,
            Workload::Subscribe => {
                let cfg = subscribe::SubConfig {
                    subscribers: args.subscribers,
                    threads: gql::thread_ids(&run_id, args.sub_threads),
                    rate: args.sub_rate,
                    duration: Duration::from_secs(args.duration_secs),
                    settle: Duration::from_millis(args.sub_settle_ms),
                    drain: Duration::from_millis(args.sub_drain_ms),
                    content_bytes: args.content_bytes,
                };
                subscribe::run(&primary, &cfg).await
            }
            Workload::SaveFailover => match &failover {
                Some(f) => {
                    let fthreads = Arc::new(gql::thread_ids(&run_id, args.threads));
                    workload::closed_loop("save-failover", f, Op::Save, &loop_cfg, &fthreads, None).await
                }
                None => Err(anyhow::anyhow!("save-failover needs --failover-url")),
            },
        };
        match res {
            Ok(outcome) => {
                eprintln!("{}", outcome.summary());
                rep.push(outcome);
            }
            Err(e) => {
                eprintln!("{} failed: {e:#}", w.label());
                rep.note(format!("{}: FAILED after {:.1} s: {e:#}", w.label(), secs(started)));
            }
        }
        rep.rss(&args.server_pid, w.label());
    }
    print!("{}", rep.render());
    Ok(())
}

/// Seeds the read threads up to `--seed-messages` each, then runs the reads.
async fn run_read(
    args: &Args,
    gql: &Gql,
    cfg: &LoopConfig,
    threads: &Arc<Vec<String>>,
    counts: &Arc<ThreadCounts>,
) -> Result<Outcome> {
    let n = args.seed_threads.unwrap_or(args.threads).clamp(1, threads.len());
    let seed = workload::seed(gql, &threads[..n], counts, args.seed_messages, 64, cfg).await?;
    let read_threads = Arc::new(threads[..n].to_vec());
    let mut outcome = workload::closed_loop("read", gql, Op::Read, cfg, &read_threads, None).await?;
    outcome.notes.insert(0, seed);
    Ok(outcome)
}

fn selected_workloads(args: &Args) -> Result<Vec<Workload>> {
    if args.workloads.is_empty() {
        let mut all = vec![Workload::Save, Workload::Read, Workload::Subscribe];
        if args.failover_url.is_some() {
            all.push(Workload::SaveFailover);
        }
        // Last: the persister is still applying its backlog of changes
        // after it, which would slow whatever ran next.
        all.push(Workload::Edit);
        return Ok(all);
    }
    if args.workloads.contains(&Workload::SaveFailover) && args.failover_url.is_none() {
        bail!("workload save-failover needs --failover-url");
    }
    Ok(args.workloads.clone())
}

/// Raises RLIMIT_NOFILE's soft limit to the hard limit (1000 sockets need it).
fn raise_nofile_limit() -> Result<libc::rlim_t> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit only writes into the struct we pass, which we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error()).context("getrlimit(RLIMIT_NOFILE)");
    }
    if lim.rlim_cur < lim.rlim_max {
        let wanted = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
        // SAFETY: setrlimit only reads the struct we pass.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) } != 0 {
            return Err(std::io::Error::last_os_error()).context("setrlimit(RLIMIT_NOFILE)");
        }
        lim = wanted;
    }
    Ok(lim.rlim_cur)
}

fn secs(since: Instant) -> f64 {
    since.elapsed().as_secs_f64()
}
