//! The checks, run after the faults healed and persistence drained, against
//! what PostgreSQL (the system of record) holds.
//!
//! - **Queue** (Jepsen's total-queue): *lost* = acknowledged but not in
//!   PostgreSQL; *duplicated* = a token stored more than once; *unexpected* =
//!   stored but never attempted; *recovered* = `info` that turned out stored.
//!   Stricter than total-queue: a `fail` (the service said "not stored") that
//!   is stored, and an acknowledged id that differs from the stored one, are
//!   errors too.
//! - **Reads** (set-full): a message once read must be in the final thread,
//!   in the same order relative to the messages read with it; a later read
//!   whose range covers it must show it (*stale* otherwise); no message may
//!   end up between two messages that were read as neighbours (*gaps*).
//! - **Subscribers**: each saw every message after its start cursor, once,
//!   in the final order (in Redis-outage scenarios a message may come late,
//!   out of order, but never be missing).

use std::collections::{HashMap, HashSet};

use crate::cluster::Cluster;
use crate::history::{Kind, Op};
use crate::workload::Read;

/// PostgreSQL's final state: per thread, (id, token) in thread order.
pub struct Stored {
    pub threads: HashMap<String, Vec<(String, String)>>,
}

impl Stored {
    pub fn load(cluster: &Cluster) -> anyhow::Result<Stored> {
        let rows = cluster.sql(
            "SELECT thread_id, id, split_part(content, ' ', 1) FROM messages ORDER BY thread_id, created_at, id",
        )?;
        let mut threads: HashMap<String, Vec<(String, String)>> = HashMap::new();
        for r in rows {
            if let [thread, id, token] = &r[..] {
                threads.entry(thread.clone()).or_default().push((id.clone(), token.clone()));
            }
        }
        Ok(Stored { threads })
    }

    /// Ids of `thread` in order.
    pub fn ids(&self, thread: &str) -> Vec<&str> {
        self.threads.get(thread).map(|t| t.iter().map(|(id, _)| id.as_str()).collect()).unwrap_or_default()
    }
}

/// Counts of the queue check.
#[derive(Debug, Default)]
pub struct QueueCheck {
    pub attempted: usize,
    pub acked: usize,
    pub failed: usize,
    /// `fail` with STORAGE_UNAVAILABLE (the rest of `failed` is bad input on purpose).
    pub refused: usize,
    pub info: usize,
    pub lost: usize,
    pub duplicated: usize,
    pub unexpected: usize,
    pub recovered: usize,
    pub failed_but_stored: usize,
    pub wrong_id: usize,
    pub examples: Vec<String>,
}

impl QueueCheck {
    pub fn valid(&self) -> bool {
        self.lost + self.duplicated + self.unexpected + self.failed_but_stored + self.wrong_id == 0
    }
}

pub fn check_queue(history: &[Op], stored: &Stored) -> QueueCheck {
    let mut by_token: HashMap<&str, Vec<&str>> = HashMap::new();
    for rows in stored.threads.values() {
        for (id, token) in rows {
            by_token.entry(token.as_str()).or_default().push(id.as_str());
        }
    }
    let mut c = QueueCheck::default();
    let mut attempted = HashSet::new();
    for op in history {
        let stored_ids = by_token.get(op.token.as_str());
        match op.kind {
            Kind::Invoke => {
                attempted.insert(op.token.as_str());
            }
            Kind::Ok => {
                c.acked += 1;
                match stored_ids {
                    None => {
                        c.lost += 1;
                        c.examples.push(format!("lost {} ({:?})", op.token, op.id));
                    }
                    Some(ids) if Some(ids[0]) != op.id.as_deref() => {
                        c.wrong_id += 1;
                        c.examples.push(format!("{} acked as {:?}, stored as {}", op.token, op.id, ids[0]));
                    }
                    Some(_) => {}
                }
            }
            Kind::Fail => {
                c.failed += 1;
                c.refused += usize::from(op.error.as_deref() == Some("STORAGE_UNAVAILABLE"));
                if stored_ids.is_some() {
                    c.failed_but_stored += 1;
                    c.examples.push(format!("failed yet stored: {} ({:?})", op.token, op.error));
                }
            }
            Kind::Info => {
                c.info += 1;
                if stored_ids.is_some() {
                    c.recovered += 1;
                }
            }
        }
    }
    c.attempted = attempted.len();
    for (token, ids) in &by_token {
        if ids.len() > 1 {
            c.duplicated += 1;
            c.examples.push(format!("{token} stored {} times", ids.len()));
        }
        if !attempted.contains(token) {
            c.unexpected += 1;
            c.examples.push(format!("unexpected {token}"));
        }
    }
    c.examples.truncate(5);
    c
}

/// Counts of the set-full check over the reads.
#[derive(Debug, Default)]
pub struct ReadCheck {
    pub reads: usize,
    /// Read once, absent from the final state.
    pub vanished: usize,
    /// Read in an order the final state contradicts.
    pub reordered: usize,
    /// Missing from a later read whose range covers it.
    pub stale: usize,
    /// A message that ended up between two messages read as neighbours.
    pub gaps: usize,
}

impl ReadCheck {
    /// `outage_reads`: the scenario makes Redis unreachable, and while it is
    /// the messages it holds unpersisted are invisible (a documented limit),
    /// so stale reads and gaps are reported but allowed.
    pub fn valid(&self, outage_reads: bool) -> bool {
        self.vanished + self.reordered == 0 && (outage_reads || self.stale + self.gaps == 0)
    }
}

pub fn check_reads(reads: &[Read], stored: &Stored) -> ReadCheck {
    let mut c = ReadCheck { reads: reads.len(), ..ReadCheck::default() };
    let positions: HashMap<&str, HashMap<&str, usize>> = stored
        .threads
        .iter()
        .map(|(t, rows)| (t.as_str(), rows.iter().enumerate().map(|(i, (id, _))| (id.as_str(), i)).collect()))
        .collect();
    let empty = HashMap::new();
    let mut by_thread: HashMap<&str, Vec<&Read>> = HashMap::new();
    for r in reads {
        by_thread.entry(r.thread.as_str()).or_default().push(r);
    }
    for (thread, reads) in by_thread {
        let pos = positions.get(thread).unwrap_or(&empty);
        let placed: Vec<Vec<Option<usize>>> =
            reads.iter().map(|r| r.ids.iter().map(|id| pos.get(id.as_str()).copied()).collect()).collect();
        for p in &placed {
            c.vanished += p.iter().filter(|x| x.is_none()).count();
            for w in p.windows(2) {
                if let [Some(a), Some(b)] = w {
                    if b <= a {
                        c.reordered += 1;
                    } else if *b != a + 1 {
                        c.gaps += 1;
                    }
                }
            }
        }
        // Every later read (started after this one ended) whose range
        // covers a message this one saw must show it too. Counted once per
        // (read, message).
        let seen: Vec<HashSet<&str>> = reads.iter().map(|r| r.ids.iter().map(String::as_str).collect()).collect();
        for (i, earlier) in reads.iter().enumerate() {
            let later: Vec<usize> = (i + 1..reads.len())
                .filter(|&j| reads[j].started > earlier.ended && !reads[j].ids.is_empty())
                .collect();
            c.stale += placed[i]
                .iter()
                .zip(&earlier.ids)
                .filter(|(p, id)| {
                    let Some(p) = p else { return false };
                    later.iter().any(|&j| {
                        matches!(placed[j].first(), Some(Some(lo)) if p >= lo) && !seen[j].contains(id.as_str())
                    })
                })
                .count();
        }
    }
    c
}

/// Counts of the subscriber check.
#[derive(Debug, Default)]
pub struct SubCheck {
    pub subscribers: usize,
    pub delivered: usize,
    pub missing: usize,
    pub duplicated: usize,
    pub out_of_order: usize,
    pub reconnects: u32,
    pub examples: Vec<String>,
}

impl SubCheck {
    /// `outage`: Redis was unreachable, and a feed that re-read meanwhile
    /// delivers what Redis held unpersisted late, after Redis returns (out
    /// of order, never missing: see `src/live/feed.rs`).
    pub fn valid(&self, outage: bool) -> bool {
        self.missing + self.duplicated == 0 && (outage || self.out_of_order == 0)
    }

    /// Adds one subscriber's log: it must equal the thread's messages after `start_id`.
    pub fn add(&mut self, received: &[String], start_id: &str, thread_ids: &[&str], reconnects: u32) {
        self.subscribers += 1;
        self.reconnects += reconnects;
        self.delivered += received.len();
        let start = thread_ids.iter().position(|id| *id == start_id).map_or(0, |p| p + 1);
        let expected = &thread_ids[start..];
        let got: HashSet<&str> = received.iter().map(String::as_str).collect();
        self.duplicated += received.len() - got.len();
        let missing: Vec<&&str> = expected.iter().filter(|id| !got.contains(**id)).collect();
        self.missing += missing.len();
        if let Some(first) = missing.first() {
            let at = expected.iter().position(|id| id == *first).unwrap_or(0);
            self.examples.push(format!(
                "subscriber from {start_id} missed {} of {} (first: {first}, #{at}; received {})",
                missing.len(),
                expected.len(),
                received.len()
            ));
        }
        let order: HashMap<&str, usize> = expected.iter().enumerate().map(|(i, id)| (*id, i)).collect();
        let ranks: Vec<usize> = received.iter().filter_map(|id| order.get(id.as_str()).copied()).collect();
        self.out_of_order += ranks.windows(2).filter(|w| w[1] <= w[0]).count();
        // Delivered yet not in the thread after the start: also wrong.
        self.out_of_order += received.iter().filter(|id| !order.contains_key(id.as_str())).count();
    }
}
