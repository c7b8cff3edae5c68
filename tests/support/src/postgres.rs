//! A real, throw-away PostgreSQL 15 cluster.
//!
//! PostgreSQL is the service's durable store, so tests need the real thing:
//! real transactions, real constraint errors, real crash recovery. Most tests
//! share one cluster per test binary ([`PostgresServer::shared`]) and isolate
//! themselves with a fresh database each ([`PostgresServer::create_database`]);
//! tests that crash, freeze or restart PostgreSQL start a dedicated cluster.
//! Directory layout, OS user and command lines live in `pg_cluster.rs`.

use std::path::Path;
use std::process::Child;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::pg_cluster::{psql_command, ClusterDir};
use super::ports::with_free_port;
use super::process::{descendants, is_alive, log_tail, signal, spawn_tied_to_process};
use super::process::{stop_and_wait, terminate_tree};

/// How long a start (crash recovery included) may take.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// The cluster behind [`PostgresServer::shared`].
static SHARED: OnceLock<PostgresServer> = OnceLock::new();

/// A PostgreSQL postmaster child process with its own data dir, port and
/// socket dir; trust auth for user `postgres`. Shut down (immediate mode) on drop.
pub struct PostgresServer {
    port: u16,
    child: Option<Child>,
    dir: ClusterDir,
}

impl PostgresServer {
    /// Starts a dedicated cluster (one the test may kill, freeze or restart).
    pub fn start() -> PostgresServer {
        let mut server = PostgresServer { port: 0, child: None, dir: ClusterDir::new() };
        let started = with_free_port("postgres", |port| {
            server.port = port;
            server.spawn_and_wait().inspect_err(|_| server.kill())
        });
        if let Err(e) = started {
            panic!("postgres failed to start: {e}\n--- log ---\n{}", server.log());
        }
        server
    }

    /// The cluster shared by all tests of this binary, started on first use and
    /// stopped at process exit. Never kill, pause or restart it: start a
    /// dedicated one with [`PostgresServer::start`] for that.
    pub fn shared() -> &'static PostgresServer {
        SHARED.get_or_init(|| {
            // SAFETY: registers a plain `extern "C" fn` that never unwinds.
            unsafe { libc::atexit(stop_shared_at_exit) };
            PostgresServer::start()
        })
    }

    /// Creates a fresh, uniquely named database (`t_<n>_<pid>`) and returns its URL.
    pub fn create_database(&self) -> String {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("t_{n}_{}", std::process::id());
        self.psql("postgres", &format!("CREATE DATABASE {name}"));
        self.url(&name)
    }

    /// `postgres://postgres@127.0.0.1:PORT/DB`
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// The TCP port (stable across restarts).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The tail of the server log (all restarts appended).
    pub fn log(&self) -> String {
        log_tail(&self.dir.log, 8 * 1024)
    }

    /// True while the postmaster exists (a paused one counts as running).
    pub fn is_running(&self) -> bool {
        self.child.as_ref().is_some_and(|c| is_alive(c.id()))
    }

    /// Immediate shutdown, as `pg_ctl stop -m immediate` does it (SIGQUIT to the
    /// postmaster): no checkpoint, crash recovery on the next start. Waits
    /// until all its processes are gone. No-op if not running.
    pub fn stop_immediate(&mut self) {
        self.terminate(libc::SIGQUIT);
    }

    /// Fast shutdown, as `pg_ctl stop -m fast` does it (SIGINT to the
    /// postmaster): sessions are ended, a checkpoint is written. Waits until
    /// all its processes are gone. No-op if not running.
    pub fn stop_fast(&mut self) {
        self.terminate(libc::SIGINT);
    }

    /// SIGKILLs the postmaster and all its backends at once, like a crash of
    /// the database processes (what was written survives). No-op if not running.
    pub fn kill(&mut self) {
        self.terminate(libc::SIGKILL);
    }

    /// Starts the stopped or killed cluster again on the same port and data dir
    /// and waits until it accepts queries (crash recovery included).
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "start_again: postgres is still running");
        if let Err(e) = self.spawn_and_wait() {
            panic!("postgres restart on port {} failed: {e}\n--- log ---\n{}", self.port, self.log());
        }
    }

    /// Freezes the postmaster and every backend with SIGSTOP: TCP connects still
    /// succeed (kernel backlog) but nothing is ever answered.
    pub fn pause(&self) {
        let pid = self.pid();
        stop_and_wait(pid); // first, so that it forks no new backends
        descendants(pid).into_iter().for_each(|p| _ = signal(p, libc::SIGSTOP));
    }

    /// Undoes [`PostgresServer::pause`] with SIGCONT.
    pub fn resume(&self) {
        let pid = self.pid();
        descendants(pid).into_iter().for_each(|p| _ = signal(p, libc::SIGCONT));
        signal(pid, libc::SIGCONT);
    }

    /// Runs `sql` (may be several statements) with `psql -At` on database `db`
    /// and returns stdout without the final newline; panics with psql's stderr
    /// on failure. Blocks forever on a paused server.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let result = self.try_psql(db, sql);
        result.unwrap_or_else(|e| panic!("psql on {db} failed for {sql:?}:\n{e}"))
    }

    /// Like [`PostgresServer::psql`] but returns psql's stderr as the error.
    pub fn try_psql(&self, db: &str, sql: &str) -> Result<String, String> {
        let output = psql_command(self.port, db, sql).output();
        let output = output.map_err(|e| format!("cannot run psql: {e}"))?;
        if !output.status.success() {
            return Err(String::from_utf8_lossy(&output.stderr).into_owned());
        }
        let mut out = String::from_utf8_lossy(&output.stdout).into_owned();
        if out.ends_with('\n') {
            out.pop();
        }
        Ok(out)
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("postgres is not running").id()
    }

    fn spawn_and_wait(&mut self) -> Result<(), String> {
        let cmd = self.dir.postgres_command(self.port);
        let child = spawn_tied_to_process(cmd).map_err(|e| format!("spawn postgres: {e}"))?;
        self.child = Some(child);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.child.as_mut().expect("just spawned").try_wait() {
                self.child = None;
                return Err(format!("postgres exited early with {status}"));
            }
            // Also guards against a port race: the answering server must be ours.
            match self.try_psql("postgres", "SHOW data_directory") {
                Ok(dir) if Path::new(&dir) == self.dir.data => return Ok(()),
                Ok(dir) => return Err(format!("port {} is served by {dir}", self.port)),
                Err(e) if Instant::now() >= deadline => return Err(format!("not ready after {READY_TIMEOUT:?}: {e}")),
                Err(_) => std::thread::sleep(Duration::from_millis(25)),
            }
        }
    }

    fn terminate(&mut self, sig: libc::c_int) {
        if let Some(mut child) = self.child.take() {
            terminate_tree(child.id(), sig);
            let _ = child.wait();
        }
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        self.stop_immediate();
        self.dir.remove_stale_shm();
    }
}

/// `atexit` hook: statics are never dropped, so stop the shared cluster and
/// delete its directory here. Must not panic.
extern "C" fn stop_shared_at_exit() {
    if let Some(server) = SHARED.get() {
        if let Some(child) = &server.child {
            terminate_tree(child.id(), libc::SIGQUIT);
        }
        server.dir.remove_stale_shm();
        let _ = std::fs::remove_dir_all(server.dir.root.path());
    }
}
