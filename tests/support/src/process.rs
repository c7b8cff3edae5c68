//! Process plumbing shared by the server fixtures: spawning, signals, `/proc`.
//!
//! Server processes must never outlive the test binary, even when it panics,
//! aborts or is SIGKILLed. Every server is therefore started with
//! `PR_SET_PDEATHSIG = SIGKILL`. Linux fires that signal when the *thread* that
//! forked the child exits — and test threads exit at the end of every test while
//! [`super::PostgresServer::shared`] must live for the whole binary. So all
//! servers are forked from one dedicated spawner thread that never exits; per-test
//! servers are still stopped explicitly by their `Drop`.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::sync::{mpsc, OnceLock};
use std::time::{Duration, Instant};

type SpawnJob = (Command, mpsc::Sender<io::Result<Child>>);

/// Spawns `cmd` from the long-lived spawner thread, so that it gets SIGKILLed
/// when (and only when) the test process dies.
///
/// The death signal is armed in `pre_exec`, which std runs *after* the optional
/// `uid`/`gid` switch (a credential change would otherwise clear it).
pub fn spawn_tied_to_process(mut cmd: Command) -> io::Result<Child> {
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the closure only calls async-signal-safe functions (prctl, getppid, _exit).
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::getppid() != parent {
                libc::_exit(1); // the test process died before the signal was armed
            }
            Ok(())
        });
    }
    let (reply_tx, reply_rx) = mpsc::channel();
    spawner().send((cmd, reply_tx)).expect("fixture spawner thread is gone");
    reply_rx.recv().expect("fixture spawner thread dropped the request")
}

/// The channel to the spawner thread; the thread is started on first use and
/// lives until the process exits (its sender is held in a static).
fn spawner() -> &'static mpsc::Sender<SpawnJob> {
    static SPAWNER: OnceLock<mpsc::Sender<SpawnJob>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnJob>();
        std::thread::Builder::new()
            .name("fixture-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("start fixture spawner thread");
        tx
    })
}

/// Sends `sig` to process `pid`; returns false if that failed (e.g. no such process).
pub fn signal(pid: u32, sig: libc::c_int) -> bool {
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe { libc::kill(pid as libc::pid_t, sig) == 0 }
}

/// Sends `sig` to every process of process group `pgid`.
pub fn signal_group(pgid: u32, sig: libc::c_int) -> bool {
    // SAFETY: killpg(3) has no memory-safety preconditions.
    unsafe { libc::killpg(pgid as libc::pid_t, sig) == 0 }
}

/// SIGSTOPs `pid` and waits (up to 1 s) until it is actually stopped, so that it
/// can no longer fork when the caller scans its children.
pub fn stop_and_wait(pid: u32) {
    signal(pid, libc::SIGSTOP);
    wait_until(Duration::from_secs(1), || !matches!(stat(pid), Some((state, _)) if state != 'T'));
}

/// Ends the process tree rooted at `pid` (a child of ours, or an orphaned server):
/// sends `sig` to `pid` (SIGKILL: to every descendant too), then waits until all
/// of them are gone, escalating to SIGKILL after 15 s. The caller still reaps
/// `pid` if it is its child. Never panics (used from an `atexit` hook).
pub fn terminate_tree(pid: u32, sig: libc::c_int) {
    stop_and_wait(pid); // it can no longer fork, so the scan below is complete
    let all: Vec<u32> = descendants(pid).into_iter().chain([pid]).collect();
    let gone = || all.iter().all(|&p| !is_alive(p));
    if sig == libc::SIGKILL {
        all.iter().for_each(|&p| _ = signal(p, libc::SIGKILL));
    } else {
        signal(pid, sig);
        all.iter().for_each(|&p| _ = signal(p, libc::SIGCONT)); // in case it was paused
    }
    if !wait_until(Duration::from_secs(15), gone) {
        all.iter().for_each(|&p| _ = signal(p, libc::SIGKILL));
        wait_until(Duration::from_secs(5), gone);
    }
}

/// State letter and parent pid of `pid`, from `/proc/<pid>/stat`.
fn stat(pid: u32) -> Option<(char, u32)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid ...": comm may contain spaces and parentheses.
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

/// True if `pid` exists and is not a zombie (orphaned zombies may never be
/// reaped inside a container, so they count as dead).
pub fn is_alive(pid: u32) -> bool {
    matches!(stat(pid), Some((state, _)) if state != 'Z' && state != 'X')
}

/// All live descendants of `pid` (children, grandchildren, ...), found by
/// scanning the parent pids in `/proc/*/stat`.
pub fn descendants(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let procs: Vec<(u32, u32)> = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|p| match stat(p) {
            Some((state, ppid)) if state != 'Z' && state != 'X' => Some((p, ppid)),
            _ => None,
        })
        .collect();
    let mut found = vec![pid];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(procs.iter().filter(|(_, ppid)| *ppid == parent).map(|(p, _)| *p));
        i += 1;
    }
    found.remove(0);
    found
}

/// Polls `done` every 10 ms until it returns true (→ true) or `timeout` passes (→ false).
pub fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The last `max` bytes of a log file (for panic messages).
pub fn log_tail(path: &std::path::Path, max: usize) -> String {
    let bytes = std::fs::read(path).unwrap_or_default();
    String::from_utf8_lossy(&bytes[bytes.len().saturating_sub(max)..]).into_owned()
}
