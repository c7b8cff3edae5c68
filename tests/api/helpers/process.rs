//! The service as a separate OS process (`threadstore serve`), for tests
//! that signal it, kill it or must see it from the outside.

use std::{fs::OpenOptions, net::SocketAddr, process::ExitStatus, process::Stdio, time::Duration};

use tokio::{
    process::{Child, Command},
    time::Instant,
};

use support::{free_port, PostgresServer, RedisServer};

/// Generous bound on start-up and exit.
const BOUND: Duration = Duration::from_secs(30);

/// One `threadstore serve` set-up (Redis, database, port, consumer name), so
/// a restarted process runs with exactly the same settings.
pub struct Service {
    pub redis: RedisServer,
    pub db: String,
    pub env: Vec<(&'static str, String)>,
    pub addr: SocketAddr,
    pub http: reqwest::Client,
    pub log: tempfile::NamedTempFile,
    pub child: Option<Child>,
}

impl Service {
    /// Adds (or overrides) a setting for the next start.
    pub fn set(&mut self, key: &'static str, value: impl Into<String>) {
        self.env.retain(|(k, _)| *k != key);
        self.env.push((key, value.into()));
    }

    pub fn new(consumer: &str) -> Service {
        let redis = RedisServer::start();
        let db_url = PostgresServer::shared().create_database();
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let http = reqwest::Client::builder().timeout(BOUND).build();
        Service {
            db: db_url.rsplit('/').next().unwrap_or_default().to_owned(),
            env: vec![
                ("REDIS_URL", redis.url()),
                ("DATABASE_URL", db_url),
                ("LISTEN_ADDR", addr.to_string()),
                ("CONSUMER_NAME", consumer.to_owned()),
                ("AUTH_MODE", "none".to_owned()),
                ("PERSIST_CLAIM_IDLE_MS", "2000".to_owned()),
                ("RUST_LOG", "info".to_owned()),
            ],
            redis,
            addr,
            http: http.expect("http client"),
            log: tempfile::NamedTempFile::new().expect("log file"),
            child: None,
        }
    }

    /// Starts the process (killed on drop) and waits until `/readyz` is 200.
    pub async fn start(&mut self) {
        let log = OpenOptions::new().append(true).open(self.log.path());
        let log = log.expect("open log");
        let child = Command::new(env!("CARGO_BIN_EXE_threadstore"))
            .arg("serve")
            .envs(self.env.iter().cloned())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .kill_on_drop(true)
            .spawn();
        let child = self.child.insert(child.expect("spawn threadstore serve"));
        let deadline = Instant::now() + BOUND;
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                panic!("exited during start-up with {status}\n{}", self.log());
            }
            let ready = self.http.get(format!("http://{}/readyz", self.addr)).send().await;
            if ready.is_ok_and(|r| r.status() == reqwest::StatusCode::OK) {
                return;
            }
            assert!(Instant::now() < deadline, "not ready\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn signal(&self, sig: libc::c_int) {
        let child = self.child.as_ref().expect("started");
        let pid = child.id().expect("still running") as libc::pid_t;
        // SAFETY: kill(2) has no memory-safety preconditions.
        assert_eq!(unsafe { libc::kill(pid, sig) }, 0, "kill({pid}, {sig})");
    }

    /// Waits (bounded) for the process to exit.
    pub async fn exit_status(&mut self) -> ExitStatus {
        let child = self.child.as_mut().expect("started");
        let status = tokio::time::timeout(Duration::from_secs(20), child.wait()).await;
        let status = status.unwrap_or_else(|_| panic!("still running after 20 s\n{}", self.log()));
        status.expect("wait for the process")
    }

    /// The tail of the processes' logs (for failure messages).
    pub fn log(&self) -> String {
        let text = std::fs::read_to_string(self.log.path()).unwrap_or_default();
        // The last lines, each cut short: a request log line can hold a
        // whole (hostile) query string.
        let lines: Vec<&str> = text.lines().collect();
        let last = &lines[lines.len().saturating_sub(40)..];
        let tail = last.iter().map(|l| l.get(..400).unwrap_or(l)).collect::<Vec<_>>().join("\n");
        format!("--- threadstore log ---\n{tail}")
    }
}
