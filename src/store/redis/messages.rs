//! Message operations on Redis: the atomic save, index reads, body loads,
//! marking persisted, priming and reconciling thread state.

use std::sync::LazyLock;

use bb8_redis::redis::{self, Script, Value};

use super::script::{script, Call};
use super::{keys, RedisFault, RedisTier};
use crate::domain::{Message, MessageId, NewMessage, OrderKey, ThreadId, Timestamp};
use crate::store::model::{Order, PageQuery, StoreConfig};
use crate::store::wire::{self, EntryParts};

static SAVE: LazyLock<Script> = script!("save");
static READ: LazyLock<Script> = script!("read_index");

/// What the save script did.
pub enum SaveOutcome {
    /// Stored; the message as it now is.
    Saved(Message),
    /// The idempotency key was used before: the original id, and its body if
    /// still cached (otherwise PostgreSQL has it).
    Duplicate(MessageId, Option<Message>),
    /// Keyed save on a thread Redis knows nothing about: PostgreSQL may
    /// hold the key; check there, then save with `check_cold` false.
    Cold,
    /// The persistence backlog is at its bound: nothing stored.
    BacklogFull,
}

pub(super) fn protocol(what: &str) -> RedisFault {
    RedisFault::Protocol(what.to_owned())
}

pub(super) fn bytes(v: &Value) -> Option<&[u8]> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}

/// When a call made now stops being waited for, in microseconds since the
/// epoch (compared with Redis `TIME`: assumes clocks in sync to well under
/// the call timeout, as NTP keeps them).
pub(super) fn deadline_micros(timeout: std::time::Duration) -> u64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    (now + timeout).as_micros() as u64
}

impl RedisTier {
    /// The whole write path in one atomic round trip (see `lua/save.lua`).
    #[tracing::instrument(level = "debug", skip_all, fields(thread_id = %m.thread_id, message_id = %m.id))]
    pub async fn save(&self, m: &NewMessage, check_cold: bool, c: &StoreConfig) -> Result<SaveOutcome, RedisFault> {
        let t = m.thread_id.as_str();
        let parts = EntryParts::of_new(m).map_err(|e| protocol(&e.to_string()))?;
        // Without a key the script leaves its idempotency slot alone; the
        // slot still names a key of the thread, as Cluster requires.
        let idem = keys::idempotency(&m.thread_id, m.client_message_id.as_ref().map_or("", |k| k.as_str()));
        let inv = Call::new(&SAVE)
            .key(keys::meta(t))
            .key(keys::index(t))
            .key(keys::unpersisted(t))
            .key(keys::body(t, &m.id))
            .key(idem)
            .key(keys::STREAM)
            .key(keys::locator(&m.id))
            .arg("id", m.id.to_string())
            .arg("thread", t)
            .arg("channel", keys::channel(t))
            .arg("tail", parts.tail)
            .flag("keyed", m.client_message_id.is_some())
            .arg("key_ttl", c.idempotency_ttl_s)
            .arg("window", c.window)
            .arg("ttl", c.cache_ttl_s)
            .flag("refuse_cold", check_cold)
            .arg("backlog", c.backlog_limit)
            .arg("deadline", deadline_micros(self.timeout()))
            .build();
        let reply: Vec<Value> = self.call("save", |mut c| async move { inv.invoke_async(&mut c).await }).await?;
        match reply.first().and_then(bytes) {
            Some(b"ok") => {
                // The script answers with the createdAt and change sequence
                // it assigned; the rest of the message is what was sent (no
                // need to parse it back).
                let number = |i: usize, what: &str| match reply.get(i) {
                    Some(Value::Int(n)) => Ok(*n),
                    other => other
                        .and_then(bytes)
                        .and_then(|b| std::str::from_utf8(b).ok()?.parse().ok())
                        .ok_or_else(|| protocol(what)),
                };
                let (created, seq) = (number(1, "save createdAt")?, number(2, "save change sequence")?);
                Ok(SaveOutcome::Saved(m.to_message(Timestamp::from_micros(created), seq)))
            }
            // A retry of a save that was applied: the stored body says when.
            Some(b"stored") => {
                let stored =
                    reply.get(1).and_then(bytes).and_then(wire::decode_body).ok_or_else(|| protocol("stored body"))?;
                Ok(SaveOutcome::Saved(m.to_message(stored.created_at, stored.change_seq)))
            }
            Some(b"dup") => {
                let id = reply
                    .get(1)
                    .and_then(bytes)
                    .and_then(|b| std::str::from_utf8(b).ok())
                    .and_then(|s| MessageId::parse(s).ok())
                    .ok_or_else(|| protocol("dup id"))?;
                // A second round trip, on the rare retry path only: the
                // script may touch only the keys it was given.
                let cached = self.bodies(&[(m.thread_id.clone(), id)]).await?.pop().flatten();
                Ok(SaveOutcome::Duplicate(id, cached))
            }
            Some(b"cold") => Ok(SaveOutcome::Cold),
            Some(b"full") => Ok(SaveOutcome::BacklogFull),
            // Not applied; the caller has long failed over.
            Some(b"late") => Err(RedisFault::Reply("save reached redis after its deadline".into())),
            _ => Err(protocol("save reply")),
        }
    }

    /// Ids of a page from the thread index, with the thread's total count, or
    /// `None` when the index cannot answer (cold or out of window).
    pub async fn read_index(
        &self,
        thread: &ThreadId,
        q: &PageQuery,
    ) -> Result<Option<(u64, Vec<MessageId>)>, RedisFault> {
        let t = thread.as_str();
        let call = Call::new(&READ).key(keys::meta(t)).key(keys::index(t));
        let order = |o: Order| if o == Order::Asc { "asc" } else { "desc" };
        let inv = match q {
            PageQuery::Offset { order: o, offset, limit } => {
                call.arg("mode", "offset").arg("order", order(*o)).arg("limit", *limit).arg("offset", *offset)
            }
            PageQuery::Range { order: o, after, before, limit } => {
                let score = |k: &Option<OrderKey>| k.map(|k| k.created_at.micros().to_string()).unwrap_or_default();
                call.arg("mode", "range")
                    .arg("order", order(*o))
                    .arg("limit", *limit)
                    .arg("after", score(after))
                    .arg("before", score(before))
            }
            PageQuery::Count => call.arg("mode", "count"),
        }
        .build();
        let reply: Vec<Value> = self.call("read_index", |mut c| async move { inv.invoke_async(&mut c).await }).await?;
        if reply.first().and_then(bytes) != Some(b"hit") {
            return Ok(None);
        }
        let n = match reply.get(1) {
            Some(Value::Int(n)) => u64::try_from(*n).unwrap_or(0),
            _ => return Err(protocol("read_index count")),
        };
        let ids = reply[2..]
            .iter()
            .filter_map(bytes)
            .filter_map(|b| std::str::from_utf8(b).ok())
            .filter_map(|s| MessageId::parse(s).ok())
            .collect();
        Ok(Some((n, ids)))
    }

    /// Bodies for the given messages, in order; `None` where not cached.
    pub async fn bodies(&self, keys_: &[(ThreadId, MessageId)]) -> Result<Vec<Option<Message>>, RedisFault> {
        if keys_.is_empty() {
            return Ok(Vec::new());
        }
        let ks: Vec<String> = keys_.iter().map(|(t, id)| keys::body(t.as_str(), id)).collect();
        let raw: Vec<Option<Vec<u8>>> =
            self.call("mget", |mut c| async move { redis::cmd("MGET").arg(&ks).query_async(&mut c).await }).await?;
        Ok(raw.into_iter().map(|b| b.as_deref().and_then(wire::decode_body)).collect())
    }

    /// Caches bodies read from PostgreSQL (persisted), with the cache TTL.
    /// `NX` so a newer state written meanwhile is never overwritten.
    pub async fn cache_bodies(&self, messages: &[Message], ttl_s: u64) -> Result<(), RedisFault> {
        if messages.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for m in messages {
            let body = wire::encode_body(m, true);
            pipe.cmd("SET").arg(keys::body(&m.thread_id, &m.id)).arg(body).arg("NX").arg("EX").arg(ttl_s).ignore();
        }
        self.call("cache_bodies", |mut c| async move { pipe.query_async::<()>(&mut c).await }).await
    }

    /// The thread's unpersisted messages, oldest first, and the generation
    /// of its Redis state (read atomically; see `lua/prime.lua`).
    pub async fn unpersisted(&self, thread: &ThreadId) -> Result<(Vec<Message>, i64), RedisFault> {
        let t = thread.as_str();
        let mut pipe = redis::pipe();
        pipe.atomic();
        pipe.cmd("ZRANGE").arg(keys::unpersisted(t)).arg(0).arg(-1);
        pipe.cmd("HGET").arg(keys::meta(t)).arg("gen");
        let (ids, gen): (Vec<String>, Option<i64>) =
            self.call("unpersisted", |mut c| async move { pipe.query_async(&mut c).await }).await?;
        let keys_: Vec<(ThreadId, MessageId)> =
            ids.iter().filter_map(|s| MessageId::parse(s).ok()).map(|id| (thread.clone(), id)).collect();
        Ok((self.bodies(&keys_).await?.into_iter().flatten().collect(), gen.unwrap_or(0)))
    }

    /// The thread's last change sequence, while its Redis state is warm
    /// (the save script keeps it; reconcile only raises it).
    pub async fn last_change(&self, thread: &ThreadId) -> Result<Option<i64>, RedisFault> {
        let key = keys::meta(thread.as_str());
        self.call(
            "last_change",
            |mut c| async move { redis::cmd("HGET").arg(key).arg("seq").query_async(&mut c).await },
        )
        .await
    }

    /// The thread a message belongs to, while Redis knows it.
    pub async fn locate(&self, id: &MessageId) -> Result<Option<ThreadId>, RedisFault> {
        let key = keys::locator(id);
        let t: Option<String> =
            self.call("locate", |mut c| async move { redis::cmd("GET").arg(key).query_async(&mut c).await }).await?;
        Ok(t.and_then(|t| ThreadId::parse(&t).ok()))
    }
}
