//! The client-side history, Jepsen style: every `saveMessage` is an
//! `invoke` followed by exactly one of `ok` (acknowledged), `fail` (the
//! service said it certainly did not store it) or `info` (unknown: a timeout,
//! a transport error, or `STORAGE_UNAVAILABLE` with `maybeStored`). One JSON
//! object per line, written as it happens, so the checker works from the
//! record and a failed run leaves it behind for inspection.

use std::{
    fs::File,
    io::{BufRead, BufReader, BufWriter, Write},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Instant,
};

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// The kind of a history entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Invoke,
    Ok,
    Fail,
    Info,
}

/// One history entry. `token` is the unique `clientMessageId` of the
/// attempt, and also the first word of the content it saves.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Op {
    /// Milliseconds since the history started.
    pub t: u64,
    /// The client (writer) that issued it.
    pub client: u32,
    pub kind: Kind,
    pub token: String,
    pub thread: String,
    /// `ok`: the acknowledged message id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// `fail`/`info`: why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// An append-only JSONL history shared by all clients.
#[derive(Clone)]
pub struct History {
    out: Arc<Mutex<BufWriter<File>>>,
    started: Instant,
    path: PathBuf,
}

impl History {
    pub fn create(path: &Path) -> anyhow::Result<History> {
        let file = File::create(path).with_context(|| format!("create {}", path.display()))?;
        Ok(History { out: Arc::new(Mutex::new(BufWriter::new(file))), started: Instant::now(), path: path.to_owned() })
    }

    /// Appends one entry.
    pub fn record(
        &self,
        client: u32,
        kind: Kind,
        token: &str,
        thread: &str,
        id: Option<String>,
        error: Option<String>,
    ) {
        let op = Op {
            t: self.started.elapsed().as_millis() as u64,
            client,
            kind,
            token: token.to_owned(),
            thread: thread.to_owned(),
            id,
            error,
        };
        if let Ok(mut out) = self.out.lock() {
            let _ = serde_json::to_writer(&mut *out, &op);
            let _ = out.write_all(b"\n");
        }
    }

    /// Flushes and reads the whole history back.
    pub fn load(&self) -> anyhow::Result<Vec<Op>> {
        if let Ok(mut out) = self.out.lock() {
            out.flush()?;
        }
        let file = File::open(&self.path)?;
        BufReader::new(file)
            .lines()
            .map(|l| Ok(serde_json::from_str(&l?)?))
            .collect::<anyhow::Result<Vec<Op>>>()
            .context("parse history")
    }
}
