//! Files, OS user and command lines behind [`super::PostgresServer`].
//!
//! PostgreSQL refuses to run as root, so when the tests run as root its server
//! processes run as the `postgres` OS user (std switches uid/gid before exec) and
//! own their directories. `initdb` runs once per test binary into a template
//! that is then copied for each cluster (about 0.1 s instead of 0.8 s per cluster).

use std::fs::{self, OpenOptions};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// Directory of the PostgreSQL binaries; override with `PG_BIN_DIR`.
const DEFAULT_BIN_DIR: &str = "/usr/lib/postgresql/15/bin";
/// `initdb` flags: trust auth for superuser `postgres`, C locale, no fsync.
const INITDB_ARGS: &str = "-A trust -U postgres --no-sync -E UTF8 --locale=C --no-instructions";
/// `postgres -c` settings. `fsync=off` is fine: a killed process (unlike a
/// crashed OS) loses nothing that was written.
const SETTINGS: [&str; 5] =
    ["listen_addresses=127.0.0.1", "fsync=off", "full_page_writes=off", "max_connections=300", "shared_buffers=64MB"];
/// `psql` flags: no psqlrc, quiet, unaligned tuples only, stop on first error.
const PSQL_ARGS: &str = "-X -q -At -v ON_ERROR_STOP=1 -h 127.0.0.1 -U postgres";

/// The temp dir of one cluster: `data/`, `sock/` and `postgres.log`.
pub struct ClusterDir {
    pub data: PathBuf,
    pub sock: PathBuf,
    pub log: PathBuf,
    pub root: tempfile::TempDir,
}

impl ClusterDir {
    /// A fresh cluster directory, its data dir copied from the template.
    pub fn new() -> ClusterDir {
        let root = tempfile::Builder::new().prefix("pg-").tempdir().expect("postgres temp dir");
        chown_to_pg(root.path());
        let dir = ClusterDir {
            data: root.path().join("data"),
            sock: root.path().join("sock"),
            log: root.path().join("postgres.log"),
            root,
        };
        fs::create_dir(&dir.sock).expect("create postgres socket dir");
        chown_to_pg(&dir.sock);
        let mut cp = Command::new("cp");
        cp.arg("-a").arg(template().join("data")).arg(&dir.data);
        run(cp, "copy the template cluster");
        dir
    }

    /// The postmaster command line for `port`, logging to `postgres.log`.
    pub fn postgres_command(&self, port: u16) -> Command {
        let log = OpenOptions::new().create(true).append(true).open(&self.log);
        let log = log.expect("open postgres.log");
        let mut cmd = Command::new(pg_bin("postgres"));
        cmd.arg("-D").arg(&self.data).arg("-p").arg(port.to_string()).arg("-k").arg(&self.sock);
        for setting in SETTINGS {
            cmd.arg("-c").arg(setting);
        }
        cmd.current_dir(self.root.path()).stdin(Stdio::null());
        cmd.process_group(0); // keep terminal signals (Ctrl-C/Ctrl-Z) away from it
        cmd.stdout(log.try_clone().expect("clone log fd")).stderr(log);
        as_pg_user(&mut cmd);
        cmd
    }

    /// After a SIGKILL the postmaster leaves its SysV shared-memory segment
    /// behind; removes it (if detached) before the data dir is deleted.
    pub fn remove_stale_shm(&self) {
        let Ok(pidfile) = fs::read_to_string(self.data.join("postmaster.pid")) else {
            return;
        };
        // Line 7 is "<shm key> <shm id>".
        let line = pidfile.lines().nth(6).unwrap_or_default();
        let Some(Ok(shmid)) = line.split_whitespace().nth(1).map(str::parse::<libc::c_int>) else {
            return;
        };
        // SAFETY: IPC_STAT fills a zeroed shmid_ds; IPC_RMID takes no buffer.
        unsafe {
            let mut ds: libc::shmid_ds = std::mem::zeroed();
            if libc::shmctl(shmid, libc::IPC_STAT, &mut ds) == 0 && ds.shm_nattch == 0 {
                libc::shmctl(shmid, libc::IPC_RMID, std::ptr::null_mut());
            }
        }
    }
}

/// `psql` running `sql` on `db` via TCP (as the current OS user: trust auth).
pub fn psql_command(port: u16, db: &str, sql: &str) -> Command {
    let mut cmd = Command::new(pg_bin("psql"));
    cmd.args(PSQL_ARGS.split(' ')).arg("-p").arg(port.to_string());
    cmd.arg("-d").arg(db).arg("-c").arg(sql);
    cmd.env("PGCONNECT_TIMEOUT", "5").stdin(Stdio::null());
    cmd
}

/// Path of a PostgreSQL binary.
fn pg_bin(name: &str) -> PathBuf {
    let dir = std::env::var("PG_BIN_DIR").unwrap_or_else(|_| DEFAULT_BIN_DIR.to_owned());
    Path::new(&dir).join(name)
}

/// uid/gid of the `postgres` OS user when running as root, else `None` (run as
/// the current user).
fn pg_user() -> Option<(u32, u32)> {
    static IDS: OnceLock<Option<(u32, u32)>> = OnceLock::new();
    *IDS.get_or_init(|| {
        // SAFETY: geteuid has no preconditions; getpwnam gets a NUL-terminated
        // name and its static result is read at once (this runs once).
        unsafe {
            if libc::geteuid() != 0 {
                return None;
            }
            let pw = libc::getpwnam(c"postgres".as_ptr());
            assert!(!pw.is_null(), "running as root but there is no `postgres` OS user");
            Some(((*pw).pw_uid, (*pw).pw_gid))
        }
    })
}

fn as_pg_user(cmd: &mut Command) {
    if let Some((uid, gid)) = pg_user() {
        cmd.uid(uid).gid(gid);
    }
}

fn chown_to_pg(path: &Path) {
    if let Some((uid, gid)) = pg_user() {
        std::os::unix::fs::chown(path, Some(uid), Some(gid)).expect("chown to the postgres user");
    }
}

/// Runs `cmd` to completion, panicking with its stderr if it fails.
fn run(mut cmd: Command, what: &str) {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot {what}: {e}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "failed to {what} ({}):\n{stderr}", out.status);
}

/// The initdb'ed template (a kept temp dir holding `data/`), created on first
/// use and deleted at process exit.
fn template() -> &'static Path {
    static TEMPLATE: OnceLock<PathBuf> = OnceLock::new();
    extern "C" fn remove_template() {
        if let Some(dir) = TEMPLATE.get() {
            let _ = fs::remove_dir_all(dir);
        }
    }
    TEMPLATE.get_or_init(|| {
        let dir = tempfile::Builder::new().prefix("pg-template-").tempdir();
        let dir = dir.expect("postgres template dir").keep();
        // SAFETY: registers a plain `extern "C" fn` that never unwinds.
        unsafe { libc::atexit(remove_template) };
        chown_to_pg(&dir);
        let mut initdb = Command::new(pg_bin("initdb"));
        initdb.arg("-D").arg(dir.join("data")).args(INITDB_ARGS.split(' ')).current_dir(&dir);
        as_pg_user(&mut initdb);
        run(initdb, "initdb");
        dir
    })
}
