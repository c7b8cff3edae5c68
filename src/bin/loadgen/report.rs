//! Per-workload results, server RSS sampling and the final Markdown report.

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use hdrhistogram::Histogram;

/// Latency histogram in microseconds, 1 µs .. 10 min, 3 significant digits.
pub fn new_histogram() -> Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, 600_000_000, 3).context("creating a histogram")
}

pub fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Result of one workload: one row of the table plus free-form notes.
pub struct Outcome {
    pub name: String,
    /// Successful operations inside the measured window.
    pub ok: u64,
    pub errors: u64,
    /// Length of the measured window.
    pub elapsed: Duration,
    /// Latencies in microseconds.
    pub hist: Histogram<u64>,
    pub first_error: Option<String>,
    pub notes: Vec<String>,
}

impl Outcome {
    pub fn ops_per_sec(&self) -> f64 {
        let s = self.elapsed.as_secs_f64();
        if s > 0.0 {
            self.ok as f64 / s
        } else {
            0.0
        }
    }

    /// Quantile in milliseconds, `None` when nothing was recorded.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        (!self.hist.is_empty()).then(|| self.hist.value_at_quantile(q) as f64 / 1000.0)
    }

    fn max_ms(&self) -> Option<f64> {
        (!self.hist.is_empty()).then(|| self.hist.max() as f64 / 1000.0)
    }

    pub fn row(&self) -> String {
        format!(
            "| {} | {} | {:.1} | {} | {} | {} | {} | {} |",
            self.name,
            self.ok,
            self.ops_per_sec(),
            ms(self.quantile_ms(0.50)),
            ms(self.quantile_ms(0.99)),
            ms(self.quantile_ms(0.999)),
            ms(self.max_ms()),
            self.errors
        )
    }

    /// One progress line for stderr.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "{}: {} ok in {:.1} s = {:.1}/s, p50 {} ms, p99 {} ms, p99.9 {} ms, max {} ms, {} errors",
            self.name,
            self.ok,
            self.elapsed.as_secs_f64(),
            self.ops_per_sec(),
            ms(self.quantile_ms(0.50)),
            ms(self.quantile_ms(0.99)),
            ms(self.quantile_ms(0.999)),
            ms(self.max_ms()),
            self.errors
        );
        if let Some(e) = &self.first_error {
            let _ = write!(s, " (first error: {e})");
        }
        for n in &self.notes {
            let _ = write!(s, "\n  {n}");
        }
        s
    }
}

fn ms(v: Option<f64>) -> String {
    v.map_or_else(|| "n/a".to_string(), |v| format!("{v:.2}"))
}

/// Reads VmRSS (KiB) from /proc/PID/status.
pub fn read_rss_kib(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).ok_or_else(|| anyhow!("no VmRSS in {path}"))?;
    line.split_whitespace()
        .nth(1)
        .ok_or_else(|| anyhow!("malformed VmRSS line: {line}"))?
        .parse()
        .with_context(|| format!("malformed VmRSS line: {line}"))
}

pub struct Report {
    header: Vec<String>,
    outcomes: Vec<Outcome>,
    notes: Vec<String>,
    rss: Vec<String>,
}

impl Report {
    pub fn new(run_id: &str, url: &str, failover: Option<&str>) -> Self {
        let mut header = vec![format!("run `{run_id}` against {url}")];
        if let Some(f) = failover {
            header.push(format!("failover server: {f}"));
        }
        Report { header, outcomes: Vec::new(), notes: Vec::new(), rss: Vec::new() }
    }

    pub fn config_line(&mut self, line: String) {
        self.header.push(line);
    }

    pub fn push(&mut self, o: Outcome) {
        self.outcomes.push(o);
    }

    pub fn note(&mut self, n: String) {
        self.notes.push(n);
    }

    /// Samples VmRSS of every PID now, prints it and keeps it for the report.
    pub fn rss(&mut self, pids: &[u32], when: &str) {
        for &pid in pids {
            let line = match read_rss_kib(pid) {
                Ok(kib) => format!("server RSS after {when}: pid {pid} VmRSS {:.1} MiB", kib as f64 / 1024.0),
                Err(e) => format!("server RSS after {when}: pid {pid} n/a ({e:#})"),
            };
            eprintln!("{line}");
            self.rss.push(line);
        }
    }

    fn find(&self, name: &str) -> Option<&Outcome> {
        self.outcomes.iter().find(|o| o.name == name)
    }

    fn failover_line(&self) -> Option<String> {
        let (p, f) = (self.find("save")?, self.find("save-failover")?);
        let tput = ratio(f.ops_per_sec(), p.ops_per_sec());
        let p99 = match (f.quantile_ms(0.99), p.quantile_ms(0.99)) {
            (Some(fq), Some(pq)) => format!("{} ({fq:.2} vs {pq:.2} ms)", ratio(fq, pq)),
            _ => "n/a".to_string(),
        };
        Some(format!(
            "failover (PostgreSQL only) / primary save: throughput {tput} ({:.1} vs {:.1} ops/s), p99 {p99}",
            f.ops_per_sec(),
            p.ops_per_sec()
        ))
    }

    pub fn render(&self) -> String {
        let mut s = String::from("\n## loadgen results\n\n");
        for h in &self.header {
            let _ = writeln!(s, "- {h}");
        }
        s.push_str("\n| workload | ops | ops/s | p50 ms | p99 ms | p99.9 ms | max ms | errors |\n");
        s.push_str("|---|---:|---:|---:|---:|---:|---:|---:|\n");
        for o in &self.outcomes {
            let _ = writeln!(s, "{}", o.row());
        }
        if self.find("subscribe").is_some() {
            s.push_str(
                "\nsubscribe: ops = events delivered, latency = delivery delay \
                 (subscriber receive − writer's save response).\n",
            );
        }
        s.push('\n');
        for o in &self.outcomes {
            for n in &o.notes {
                let _ = writeln!(s, "- {n}");
            }
            if let Some(e) = &o.first_error {
                let _ = writeln!(s, "- {}: first error: {e}", o.name);
            }
        }
        for n in self.notes.iter().chain(&self.rss) {
            let _ = writeln!(s, "- {n}");
        }
        if let Some(line) = self.failover_line() {
            let _ = writeln!(s, "- {line}");
        }
        s
    }
}

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 {
        format!("{:.2}x", a / b)
    } else {
        "n/a".to_string()
    }
}
