//! `threadstore serve` as a separate OS process that a scenario can kill -9,
//! freeze (SIGSTOP), terminate or restart with the same settings.

use std::{
    fs::OpenOptions,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{ExitStatus, Stdio},
    time::Duration,
};

use anyhow::{bail, Context};
use serde_json::{json, Value};
use tokio::process::{Child, Command};

use support::free_port;

/// Longest a start (migrations included) may take.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// One service instance.
pub struct Service {
    pub name: String,
    pub addr: SocketAddr,
    env: Vec<(String, String)>,
    log: PathBuf,
    child: Option<Child>,
    http: reqwest::Client,
}

impl Service {
    pub fn new(name: &str, mut env: Vec<(String, String)>, log: &Path) -> Service {
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        env.push(("LISTEN_ADDR".to_owned(), addr.to_string()));
        let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap_or_default();
        Service { name: name.to_owned(), addr, env, log: log.to_owned(), child: None, http }
    }

    /// Spawns the process (killed if the suite dies) and waits for `/readyz`.
    pub async fn start(&mut self) -> anyhow::Result<()> {
        let log = OpenOptions::new().create(true).append(true).open(&self.log).context("service log")?;
        let child = Command::new(env!("CARGO_BIN_EXE_threadstore"))
            .arg("serve")
            .envs(self.env.iter().cloned())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("spawn threadstore serve")?;
        let child = self.child.insert(child);
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait()? {
                bail!("service {} exited during start-up with {status}\n{}", self.name, self.log_tail());
            }
            let ready = self.http.get(format!("http://{}/readyz", self.addr)).send().await;
            if ready.is_ok_and(|r| r.status().is_success()) {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                bail!("service {} not ready after {START_TIMEOUT:?}\n{}", self.name, self.log_tail());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn pid(&self) -> Option<libc::pid_t> {
        self.child.as_ref()?.id().map(|p| p as libc::pid_t)
    }

    /// Sends `sig`; false if the process is not running.
    pub fn signal(&self, sig: libc::c_int) -> bool {
        // SAFETY: kill(2) has no memory-safety preconditions.
        self.pid().is_some_and(|pid| unsafe { libc::kill(pid, sig) } == 0)
    }

    /// `kill -9` and reap.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// Waits (bounded) for the process to exit by itself.
    pub async fn wait_exit(&mut self, within: Duration) -> anyhow::Result<ExitStatus> {
        let child = self.child.as_mut().context("not running")?;
        let status = tokio::time::timeout(within, child.wait()).await;
        let status = status.with_context(|| format!("service {} still running after {within:?}", self.name))??;
        self.child = None;
        Ok(status)
    }

    /// Whether the process exited (e.g. a failpoint crashed it).
    pub fn exited(&mut self) -> bool {
        self.child.as_mut().is_none_or(|c| c.try_wait().ok().flatten().is_some())
    }

    /// The process's status once it has exited.
    pub fn reap(&mut self) -> Option<ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok().flatten();
        if status.is_some() {
            self.child = None;
        }
        status
    }

    /// Sets (or, with `None`, removes) an environment variable for the next start.
    pub fn set_env(&mut self, key: &str, value: Option<String>) {
        self.env.retain(|(k, _)| k != key);
        if let Some(v) = value {
            self.env.push((key.to_owned(), v));
        }
    }

    /// Whether this instance's log (all of it) contains `text`.
    pub fn log_contains(&self, text: &str) -> bool {
        std::fs::read_to_string(&self.log).is_ok_and(|l| l.contains(text))
    }

    /// Starts it again with the same settings (same port, same consumer name).
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill().await;
        self.start().await
    }

    /// The `/metrics` value of `name`, summed over its label sets (0 when absent).
    pub async fn metric(&self, name: &str) -> anyhow::Result<f64> {
        let text = self.http.get(format!("http://{}/metrics", self.addr)).send().await?.text().await?;
        Ok(metric_sum(&text, name))
    }

    /// The `storageMetrics` query.
    pub async fn storage_metrics(&self) -> anyhow::Result<Value> {
        let q = "{ storageMetrics { breakerState failovers failoverWrites persistenceQueueDepth persistencePending persistenceLagMs } }";
        let body = json!({ "query": q });
        let r: Value = self.http.post(format!("http://{}/graphql", self.addr)).json(&body).send().await?.json().await?;
        r.pointer("/data/storageMetrics").cloned().with_context(|| format!("storageMetrics: {r}"))
    }

    /// `/readyz`: status code.
    pub async fn readyz(&self) -> anyhow::Result<u16> {
        Ok(self.http.get(format!("http://{}/readyz", self.addr)).send().await?.status().as_u16())
    }

    /// The end of this instance's log (for failure reports).
    pub fn log_tail(&self) -> String {
        let bytes = std::fs::read(&self.log).unwrap_or_default();
        String::from_utf8_lossy(&bytes[bytes.len().saturating_sub(4096)..]).into_owned()
    }
}

/// Sum of the samples of `name` in Prometheus text (any labels).
pub fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            let metric = key.split('{').next()?;
            (metric == name).then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum()
}
