//! The persistence Stream: consumer-group reads, claims, acks and the
//! dead-letter stream. Entries are never trimmed with MAXLEN (that drops
//! un-acked entries); they are deleted one by one after COMMIT + XACK.

use std::time::Duration;

use bb8_redis::redis::{self, aio::MultiplexedConnection, Value};

use super::{keys, RedisFault, RedisTier};
use crate::store::wire;

/// One stream entry.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Stream entry id.
    pub id: String,
    /// Message JSON; `None` when the entry was deleted while still pending.
    pub body: Option<Vec<u8>>,
    /// The version an edit replaced (`store/wire.rs`), for history.
    pub replaced: Option<Vec<u8>>,
}

pub use crate::metrics::QueueStats as StreamStats;

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

fn parse_entries(v: &Value) -> Vec<Entry> {
    let Value::Array(items) = v else {
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|item| {
            let Value::Array(pair) = item else {
                return None;
            };
            let id = text(pair.first()?)?;
            let field = |name: &str| match pair.get(1) {
                Some(Value::Array(fields)) => fields
                    .chunks(2)
                    .find(|kv| kv.first().and_then(text).as_deref() == Some(name))
                    .and_then(|kv| match kv.get(1) {
                        Some(Value::BulkString(b)) => Some(b.clone()),
                        _ => None,
                    }),
                _ => None,
            };
            Some(Entry { id, body: field(wire::ENTRY_FIELD), replaced: field(wire::REPLACED_FIELD) })
        })
        .collect()
}

fn fault(e: redis::RedisError) -> RedisFault {
    RedisFault::from_error(e)
}

/// Milliseconds part of a stream id (`<ms>-<seq>`).
pub fn entry_millis(id: &str) -> Option<u64> {
    id.split('-').next()?.parse().ok()
}

impl RedisTier {
    /// Creates the consumer group at `0` if it is missing (first start, or a
    /// Redis that restarted empty), so no entry is ever skipped.
    pub async fn ensure_group(&self) -> Result<(), RedisFault> {
        let r = self
            .call("xgroup_create", |mut c| async move {
                redis::cmd("XGROUP")
                    .arg("CREATE")
                    .arg(keys::STREAM)
                    .arg(keys::GROUP)
                    .arg("0")
                    .arg("MKSTREAM")
                    .query_async::<()>(&mut c)
                    .await
            })
            .await;
        match r {
            Err(RedisFault::Reply(m)) if m.contains("BUSYGROUP") => Ok(()),
            other => other,
        }
    }

    /// A dedicated connection for blocking reads.
    pub async fn dedicated(&self) -> Result<MultiplexedConnection, RedisFault> {
        tokio::time::timeout(
            self.timeout().max(Duration::from_millis(500)),
            self.client().get_multiplexed_async_connection(),
        )
        .await
        .map_err(|_| RedisFault::Timeout)?
        .map_err(fault)
    }

    /// `XREADGROUP`: `start` is `>` for new entries or `0` for this
    /// consumer's own pending ones (after a restart).
    pub async fn read_group(
        &self,
        conn: &mut MultiplexedConnection,
        consumer: &str,
        count: usize,
        block: Duration,
        start: &str,
    ) -> Result<Vec<Entry>, RedisFault> {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP").arg(keys::GROUP).arg(consumer).arg("COUNT").arg(count);
        if start == ">" {
            cmd.arg("BLOCK").arg(block.as_millis() as u64);
        }
        cmd.arg("STREAMS").arg(keys::STREAM).arg(start);
        let reply: Value =
            tokio::time::timeout(block + self.timeout() + Duration::from_millis(500), cmd.query_async(conn))
                .await
                .map_err(|_| RedisFault::Timeout)?
                .map_err(fault)?;
        let Value::Array(streams) = reply else {
            return Ok(Vec::new());
        };
        Ok(streams
            .iter()
            .filter_map(|s| match s {
                Value::Array(kv) => kv.get(1).map(parse_entries),
                _ => None,
            })
            .flatten()
            .collect())
    }

    /// `XAUTOCLAIM`: takes over entries another consumer left pending longer
    /// than `min_idle` (it crashed or hung). Returns the next start id.
    pub async fn autoclaim(
        &self,
        consumer: &str,
        min_idle: Duration,
        start: &str,
        count: usize,
    ) -> Result<(String, Vec<Entry>), RedisFault> {
        let (consumer, start) = (consumer.to_owned(), start.to_owned());
        let reply: Value = self
            .call("xautoclaim", |mut c| async move {
                redis::cmd("XAUTOCLAIM")
                    .arg(keys::STREAM)
                    .arg(keys::GROUP)
                    .arg(consumer)
                    .arg(min_idle.as_millis() as u64)
                    .arg(start)
                    .arg("COUNT")
                    .arg(count)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        let Value::Array(parts) = reply else {
            return Err(RedisFault::Protocol("xautoclaim".into()));
        };
        let next = parts.first().and_then(text).unwrap_or_else(|| "0-0".into());
        Ok((next, parts.get(1).map(parse_entries).unwrap_or_default()))
    }

    /// Acknowledges and deletes entries, atomically. Only ever called after
    /// the PostgreSQL transaction holding them has committed.
    pub async fn ack_delete(&self, ids: &[String]) -> Result<(), RedisFault> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        pipe.atomic();
        pipe.cmd("XACK").arg(keys::STREAM).arg(keys::GROUP).arg(ids).ignore();
        pipe.cmd("XDEL").arg(keys::STREAM).arg(ids).ignore();
        self.call("xack_xdel", |mut c| async move { pipe.query_async::<()>(&mut c).await }).await
    }

    /// Moves a poison entry to the dead-letter stream (kept, never dropped),
    /// then acknowledges it, in one transaction.
    pub async fn dead_letter(&self, entry: &Entry, reason: &str) -> Result<(), RedisFault> {
        let mut pipe = redis::pipe();
        pipe.atomic();
        pipe.cmd("XADD")
            .arg(keys::DEAD_LETTER)
            .arg("*")
            .arg("source_id")
            .arg(&entry.id)
            .arg("reason")
            .arg(reason)
            .arg(wire::ENTRY_FIELD)
            .arg(entry.body.clone().unwrap_or_default());
        if let Some(replaced) = &entry.replaced {
            pipe.arg(wire::REPLACED_FIELD).arg(replaced);
        }
        pipe.ignore();
        pipe.cmd("XACK").arg(keys::STREAM).arg(keys::GROUP).arg(&entry.id).ignore();
        pipe.cmd("XDEL").arg(keys::STREAM).arg(&entry.id).ignore();
        self.call("dead_letter", |mut c| async move { pipe.query_async::<()>(&mut c).await }).await
    }

    /// Depth, pending count and lag of the persistence queue.
    pub async fn stream_stats(&self) -> Result<StreamStats, RedisFault> {
        let mut pipe = redis::pipe();
        pipe.cmd("XLEN").arg(keys::STREAM);
        pipe.cmd("XRANGE").arg(keys::STREAM).arg("-").arg("+").arg("COUNT").arg(1);
        pipe.cmd("XLEN").arg(keys::DEAD_LETTER);
        let (depth, first, dead): (u64, Value, u64) =
            self.call("stream_stats", |mut c| async move { pipe.query_async(&mut c).await }).await?;
        // Separate call: it fails while the group does not exist yet (before
        // the first read, or after Redis restarted empty).
        let pending: Value = self
            .call("xpending", |mut c| async move {
                redis::cmd("XPENDING").arg(keys::STREAM).arg(keys::GROUP).query_async(&mut c).await
            })
            .await
            .unwrap_or(Value::Nil);
        let oldest = parse_entries(&first).first().and_then(|e| entry_millis(&e.id));
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let pending = match pending {
            Value::Array(v) => match v.first() {
                Some(Value::Int(n)) => *n as u64,
                _ => 0,
            },
            _ => 0,
        };
        Ok(StreamStats {
            depth,
            pending,
            lag_ms: oldest.map(|o| now_ms.saturating_sub(o)).unwrap_or(0),
            dead_letters: dead,
        })
    }
}
