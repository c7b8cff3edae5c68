//! A real, throw-away `redis-server` for one test.
//!
//! The service's correctness claims (acknowledged writes survive a Redis crash,
//! no eviction, reconnects after restarts) can only be checked against a real
//! Redis that the test can SIGKILL, restart on the same port with its AOF
//! replayed, wipe, or freeze. Each instance gets its own port and temp dir and is
//! configured with explicit flags only (no config file), so every setting that
//! matters is visible here.

use std::fs::{self, OpenOptions};
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::ports::with_free_port;
use super::process::{is_alive, log_tail, signal_group, spawn_tied_to_process};
use super::resp::{resp_command, RespValue};

/// The `redis-server` binary; override with `REDIS_SERVER_BIN`.
const DEFAULT_BIN: &str = "/usr/bin/redis-server";
/// How long a (re)start may take, AOF replay included.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Timeout for [`RedisServer::cmd`] (connect, write, each read).
const CMD_TIMEOUT: Duration = Duration::from_secs(10);
/// Fixed flags (besides `--port`, `--dir` and `--save ""`): AOF with an fsync
/// per write, never evict, loopback only, stay in the foreground.
const FLAGS: &str = "--bind 127.0.0.1 --appendonly yes --appendfsync always \
    --maxmemory-policy noeviction --daemonize no --protected-mode yes";

/// A `redis-server` child process with AOF (`appendfsync always`) and
/// `noeviction`, listening on 127.0.0.1. Killed (SIGKILL) on drop.
pub struct RedisServer {
    port: u16,
    extra_args: Vec<String>,
    data_dir: PathBuf,
    log_path: PathBuf,
    child: Option<Child>,
    _dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts a server with the standard flags and waits until it answers PING.
    pub fn start() -> RedisServer {
        RedisServer::start_with(&[])
    }

    /// Like [`RedisServer::start`], appending `extra_args` to the command line,
    /// e.g. `&["--maxmemory", "2mb"]`. They are reused by every restart.
    pub fn start_with(extra_args: &[&str]) -> RedisServer {
        let dir = tempfile::Builder::new().prefix("redis-").tempdir();
        let dir = dir.expect("create redis temp dir");
        let data_dir = dir.path().join("data");
        fs::create_dir(&data_dir).expect("create redis data dir");
        let mut server = RedisServer {
            port: 0,
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            data_dir,
            log_path: dir.path().join("redis.log"),
            child: None,
            _dir: dir,
        };
        let started = with_free_port("redis-server", |port| {
            server.port = port;
            server.spawn_and_wait().inspect_err(|_| server.kill())
        });
        if let Err(e) = started {
            panic!("redis-server failed to start: {e}\n--- log ---\n{}", server.log());
        }
        server
    }

    /// `redis://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The TCP port (stable across restarts).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:PORT`, e.g. as a [`super::ChaosProxy`] target.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// The `--dir` holding the AOF (`appendonlydir/`).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The tail of the server's stdout/stderr log (all restarts appended).
    pub fn log(&self) -> String {
        log_tail(&self.log_path, 8 * 1024)
    }

    /// True while the process exists (a paused server counts as running).
    pub fn is_running(&self) -> bool {
        self.child.as_ref().is_some_and(|c| is_alive(c.id()))
    }

    /// SIGKILLs the server (and any AOF-rewrite child) and reaps it. No-op if not running.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal_group(child.id(), libc::SIGKILL);
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the server if needed and starts it again on the same port and dir,
    /// so the AOF is replayed; returns once PING answers `PONG` (not `-LOADING`).
    pub fn restart(&mut self) {
        self.kill();
        if let Err(e) = self.spawn_and_wait() {
            panic!("redis-server restart on port {} failed: {e}\n--- log ---\n{}", self.port, self.log());
        }
    }

    /// Kills the server, deletes all its data (AOF included) and restarts it empty.
    pub fn wipe_and_restart(&mut self) {
        self.kill();
        fs::remove_dir_all(&self.data_dir).expect("wipe redis data dir");
        fs::create_dir(&self.data_dir).expect("recreate redis data dir");
        self.restart();
    }

    /// Freezes the server with SIGSTOP: connections stay open, nothing is answered.
    pub fn pause(&self) {
        signal_group(self.pid(), libc::SIGSTOP);
    }

    /// Undoes [`RedisServer::pause`] with SIGCONT.
    pub fn resume(&self) {
        signal_group(self.pid(), libc::SIGCONT);
    }

    /// Runs one command over a fresh connection and returns the reply; an error
    /// reply is returned as [`RespValue::Error`]. Panics on I/O failure or after
    /// 10 s without an answer (e.g. while paused).
    pub fn cmd(&self, args: &[&str]) -> RespValue {
        self.try_cmd(args, CMD_TIMEOUT)
            .unwrap_or_else(|e| panic!("redis command {args:?} on port {} failed: {e}", self.port))
    }

    /// Like [`RedisServer::cmd`] but returns I/O errors and uses `timeout`.
    pub fn try_cmd(&self, args: &[&str], timeout: Duration) -> io::Result<RespValue> {
        resp_command(self.addr(), args, timeout)
    }

    /// [`RedisServer::cmd`] rendered as text like `redis-cli` (see [`RespValue`]'s
    /// `Display`), e.g. `cli(&["DBSIZE"]) == "3"`, `cli(&["GET", "nope"]) == "(nil)"`.
    pub fn cli(&self, args: &[&str]) -> String {
        self.cmd(args).to_string()
    }

    /// `GET key` as an optional string.
    pub fn get(&self, key: &str) -> Option<String> {
        let reply = self.cmd(&["GET", key]);
        let text = reply.as_str().map(str::to_owned);
        assert!(text.is_some() || reply.is_nil(), "GET {key}: {reply:?}");
        text
    }

    /// `DBSIZE`
    pub fn dbsize(&self) -> i64 {
        let reply = self.cmd(&["DBSIZE"]);
        reply.as_int().expect("DBSIZE returns an integer")
    }

    fn pid(&self) -> u32 {
        let child = self.child.as_ref().expect("redis-server is not running");
        child.id()
    }

    fn spawn_and_wait(&mut self) -> Result<(), String> {
        let log = OpenOptions::new().create(true).append(true).open(&self.log_path);
        let log = log.map_err(|e| format!("open redis.log: {e}"))?;
        let bin = std::env::var("REDIS_SERVER_BIN").unwrap_or_else(|_| DEFAULT_BIN.to_owned());
        let mut cmd = Command::new(bin);
        cmd.arg("--port").arg(self.port.to_string()).arg("--dir").arg(&self.data_dir);
        cmd.args(FLAGS.split_whitespace()).args(["--save", ""]).args(&self.extra_args);
        cmd.stdin(Stdio::null()).stdout(log.try_clone().map_err(|e| e.to_string())?).stderr(log);
        cmd.process_group(0); // so that kill/pause also reach an AOF-rewrite child
        let child = spawn_tied_to_process(cmd).map_err(|e| format!("spawn redis-server: {e}"))?;
        self.child = Some(child);
        self.wait_ready()
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let child = self.child.as_mut().expect("child was just spawned");
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Err(format!("redis-server exited early with {status}"));
            }
            match resp_command(self.addr(), &["PING"], Duration::from_secs(2)) {
                Ok(RespValue::Simple(s)) if s == "PONG" => return self.check_identity(),
                Ok(RespValue::Error(e)) if e.starts_with("LOADING") => {}
                Ok(other) => return Err(format!("unexpected PING reply {other:?}")),
                Err(_) => {}
            }
            if Instant::now() >= deadline {
                return Err(format!("not ready after {READY_TIMEOUT:?}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Guards against a port race with another process's Redis: the server
    /// answering on our port must be using our data dir.
    fn check_identity(&self) -> Result<(), String> {
        let reply = resp_command(self.addr(), &["CONFIG", "GET", "dir"], CMD_TIMEOUT).map_err(|e| e.to_string())?;
        let ours = fs::canonicalize(&self.data_dir).map_err(|e| e.to_string())?;
        match reply.as_array() {
            Some([_, dir]) if dir.as_str().map(Path::new) == Some(ours.as_path()) => Ok(()),
            _ => Err(format!("port {} is served by another redis (dir {reply:?})", self.port)),
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
