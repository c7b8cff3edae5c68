//! The fault-injection suite: real faults in real processes while clients
//! write, read and subscribe; then a checker proves from the recorded
//! history that every acknowledged message is in PostgreSQL exactly once,
//! that reads stayed complete and ordered, and that subscribers missed
//! nothing (see `checker.rs`).
//!
//! A custom harness (`harness = false`), so it can print one summary line
//! per scenario and take its own flags:
//!
//! ```text
//! cargo test --features failpoints --test faults                  # every scenario, one random seed each
//! cargo test --features failpoints --test faults -- --seed 42     # reproduce a run
//! cargo test --features failpoints --test faults -- --soak 20     # 20 seeds per scenario
//! cargo test --features failpoints --test faults -- redis         # scenarios whose name contains "redis"
//! ```
//!
//! Each scenario starts its own `redis-server`, PostgreSQL cluster and
//! `threadstore serve` processes on free loopback ports; a failed scenario
//! keeps its directory (service logs, `history.jsonl`) and prints its path.

mod checker;
mod cluster;
mod ctx;
mod history;
mod report;
mod scenarios;
mod service;
mod subscriber;
mod workload;

use std::{
    path::PathBuf,
    process::ExitCode,
    time::{Duration, Instant},
};

use scenarios::Scenario;

struct Opts {
    seed: Option<u64>,
    soak: u64,
    filters: Vec<String>,
    list: bool,
}

impl Opts {
    fn parse() -> Opts {
        let mut o = Opts { seed: None, soak: 1, filters: Vec::new(), list: false };
        let mut args = std::env::args().skip(1).peekable();
        while let Some(a) = args.next() {
            let mut value = |inline: Option<&str>| inline.map(str::to_owned).or_else(|| args.next());
            match a.split_once('=').map_or((a.as_str(), None), |(k, v)| (k, Some(v))) {
                ("--seed", v) => o.seed = value(v).and_then(|s| s.parse().ok()),
                ("--soak", Some(v)) => o.soak = v.parse().unwrap_or(10),
                ("--soak", None) => match args.peek().and_then(|n| n.parse().ok()) {
                    Some(n) => {
                        o.soak = n;
                        args.next();
                    }
                    None => o.soak = 10,
                },
                ("--list", _) => o.list = true,
                // libtest flags that cargo passes to every test binary.
                (flag, _) if flag.starts_with('-') => {}
                (filter, _) => o.filters.push(filter.to_owned()),
            }
        }
        if let Some(n) = std::env::var("FAULTS_SOAK").ok().and_then(|s| s.parse().ok()) {
            o.soak = n;
        }
        o
    }

    fn selected(&self, s: &Scenario) -> bool {
        self.filters.is_empty() || self.filters.iter().any(|f| s.name.contains(f.as_str()))
    }
}

fn main() -> ExitCode {
    let opts = Opts::parse();
    if opts.list {
        for s in scenarios::all().iter().filter(|s| opts.selected(s)) {
            println!("{}: test", s.name);
        }
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(4).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start a runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let base_seed = opts.seed.unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_micros() as u64)
    });
    println!("fault suite: seed {base_seed}, {} seed(s) per scenario", opts.soak);
    let (mut passed, mut failed) = (0, 0);
    for s in scenarios::all().iter().filter(|s| opts.selected(s)) {
        for round in 0..opts.soak {
            let seed = base_seed.wrapping_add(round);
            if run_one(&runtime, s, seed) {
                passed += 1;
            } else {
                failed += 1;
            }
        }
    }
    println!("\n{passed} passed, {failed} failed");
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Runs one scenario with one seed within its bound and prints its line.
fn run_one(runtime: &tokio::runtime::Runtime, s: &Scenario, seed: u64) -> bool {
    let dir = std::env::temp_dir().join(format!("threadstore-faults-{}-{}-{seed}", s.name, std::process::id()));
    if let Err(e) = std::fs::create_dir_all(&dir) {
        println!("{} seed={seed}: FAIL cannot create {}: {e}", s.name, dir.display());
        return false;
    }
    println!("\n{} (seed {seed}): {}", s.name, s.about);
    let started = Instant::now();
    let bound = s.bound;
    let run = s.run;
    let task_dir: PathBuf = dir.clone();
    let result = runtime.block_on(async move {
        let task = tokio::spawn(run(seed, task_dir));
        let abort = task.abort_handle();
        match tokio::time::timeout(bound, task).await {
            Ok(Ok(result)) => result,
            Ok(Err(join)) => Err(anyhow::anyhow!("scenario panicked: {join}")),
            Err(_) => {
                abort.abort();
                tokio::time::sleep(Duration::from_millis(500)).await; // let its processes be killed
                Err(anyhow::anyhow!("scenario exceeded its bound of {bound:?}"))
            }
        }
    });
    let secs = started.elapsed().as_secs_f64();
    let ok = match &result {
        Ok(report) if report.valid() => {
            println!("{} seed={seed}: PASS {} ({secs:.1}s)", s.name, report.counts());
            true
        }
        Ok(report) => {
            println!("{} seed={seed}: FAIL {} ({secs:.1}s)", s.name, report.counts());
            for e in report.queue.examples.iter().chain(&report.subs.examples) {
                println!("    {e}");
            }
            false
        }
        Err(e) => {
            println!("{} seed={seed}: FAIL {e:#} ({secs:.1}s)", s.name);
            false
        }
    };
    if ok {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        println!("    logs and history kept in {}", dir.display());
    }
    ok
}
