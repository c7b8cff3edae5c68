//! Message operations on Redis: the atomic save, index reads, body loads,
//! marking persisted, priming and reconciling thread state.

use std::sync::LazyLock;

use bb8_redis::redis::{self, Script, Value};
use serde::{Deserialize, Serialize};

use super::{keys, RedisFault, RedisTier};
use crate::domain::{Message, MessageId, NewMessage, OrderKey, Role, ThreadId, Timestamp};
use crate::store::{Order, PageQuery};

static SAVE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("../lua/save.lua")));
static MARK: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("../lua/mark_persisted.lua")));
static READ: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("../lua/read_index.lua")));
static PRIME: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("../lua/prime.lua")));
static RECONCILE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("../lua/reconcile.lua")));

/// The JSON form of a message in Redis bodies, the Stream and events. Short
/// names keep the hot path small; `c` is spliced in by the save script.
#[derive(Serialize, Deserialize)]
pub struct Wire {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    c: Option<i64>,
    id: MessageId,
    t: String,
    r: Role,
    b: String,
    #[serde(default)]
    m: Option<serde_json::Value>,
    #[serde(default)]
    k: Option<String>,
}

impl Wire {
    fn from_new(m: &NewMessage) -> Self {
        Wire {
            c: None,
            id: m.id,
            t: m.thread_id.as_str().to_owned(),
            r: m.role,
            b: m.content.as_str().to_owned(),
            m: m.metadata.as_ref().map(|v| v.as_value().clone()),
            k: m.client_message_id.as_ref().map(|k| k.as_str().to_owned()),
        }
    }

    fn from_message(m: &Message) -> Self {
        Wire {
            c: Some(m.created_at.micros()),
            id: m.id,
            t: m.thread_id.clone(),
            r: m.role,
            b: m.content.clone(),
            m: m.metadata.clone(),
            k: m.client_message_id.clone(),
        }
    }

    /// Into a message with the given persisted flag.
    pub fn into_message(self, persisted: bool) -> Option<Message> {
        Some(Message {
            id: self.id,
            thread_id: self.t,
            role: self.r,
            content: self.b,
            metadata: self.m,
            client_message_id: self.k,
            created_at: Timestamp::from_micros(self.c?),
            persisted,
        })
    }
}

/// Parses a stored body: a `'0'`/`'1'` persisted flag followed by JSON.
pub fn parse_body(raw: &[u8]) -> Option<Message> {
    let (flag, json) = raw.split_first()?;
    serde_json::from_slice::<Wire>(json).ok()?.into_message(*flag == b'1')
}

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
}

fn protocol(what: &str) -> RedisFault {
    RedisFault::Protocol(what.to_owned())
}

fn bytes(v: &Value) -> Option<&[u8]> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}

impl RedisTier {
    /// The whole write path in one atomic round trip (see `lua/save.lua`).
    #[tracing::instrument(level = "debug", skip_all, fields(thread_id = %m.thread_id, message_id = %m.id))]
    pub async fn save(
        &self,
        m: &NewMessage,
        check_cold: bool,
        idem_ttl_s: u64,
        window: u32,
        cache_ttl_s: u64,
    ) -> Result<SaveOutcome, RedisFault> {
        let t = m.thread_id.as_str();
        let json = serde_json::to_string(&Wire::from_new(m)).map_err(|e| protocol(&e.to_string()))?;
        let idem = match &m.client_message_id {
            Some(k) => keys::idempotency(&m.thread_id, k.as_str()),
            None => keys::idempotency(&m.thread_id, ""),
        };
        let mut inv = SAVE.prepare_invoke();
        inv.key(keys::meta(t))
            .key(keys::index(t))
            .key(keys::unpersisted(t))
            .key(keys::body(t, &m.id))
            .key(idem)
            .key(keys::STREAM)
            .key(keys::locator(&m.id))
            .arg(m.id.to_string())
            .arg(json)
            .arg(if m.client_message_id.is_some() { "1" } else { "0" })
            .arg(idem_ttl_s)
            .arg(window)
            .arg(cache_ttl_s)
            .arg(keys::channel(t))
            .arg(t)
            .arg(keys::body_prefix(t))
            .arg(if check_cold { "1" } else { "0" });
        let reply: Vec<Value> = self.call("save", |mut c| async move { inv.invoke_async(&mut c).await }).await?;
        match reply.first().and_then(bytes) {
            Some(b"ok") => {
                let body = reply.get(1).and_then(bytes).and_then(parse_body).ok_or_else(|| protocol("save body"))?;
                Ok(SaveOutcome::Saved(body))
            }
            Some(b"dup") => {
                let id = reply
                    .get(1)
                    .and_then(bytes)
                    .and_then(|b| std::str::from_utf8(b).ok())
                    .and_then(|s| MessageId::parse(s).ok())
                    .ok_or_else(|| protocol("dup id"))?;
                Ok(SaveOutcome::Duplicate(id, reply.get(2).and_then(bytes).and_then(parse_body)))
            }
            Some(b"cold") => Ok(SaveOutcome::Cold),
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
        let mut inv = READ.prepare_invoke();
        inv.key(keys::meta(t)).key(keys::index(t));
        let order = |o: Order| if o == Order::Asc { "asc" } else { "desc" };
        match q {
            PageQuery::Offset { order: o, offset, limit } => {
                inv.arg("offset").arg(order(*o)).arg(*limit).arg(*offset);
            }
            PageQuery::Range { order: o, after, before, limit } => {
                let score = |k: &Option<OrderKey>| k.map(|k| k.created_at.micros().to_string()).unwrap_or_default();
                inv.arg("range").arg(order(*o)).arg(*limit).arg(score(after)).arg(score(before));
            }
            PageQuery::Count => {
                inv.arg("count").arg("asc").arg(0);
            }
        }
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
        Ok(raw.into_iter().map(|b| b.as_deref().and_then(parse_body)).collect())
    }

    /// Caches bodies read from PostgreSQL (persisted), with the cache TTL.
    /// `NX` so a newer state written meanwhile is never overwritten.
    pub async fn cache_bodies(&self, messages: &[Message], ttl_s: u64) -> Result<(), RedisFault> {
        if messages.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for m in messages {
            let mut body = b"1".to_vec();
            body.extend(serde_json::to_vec(&Wire::from_message(m)).unwrap_or_default());
            pipe.cmd("SET").arg(keys::body(&m.thread_id, &m.id)).arg(body).arg("NX").arg("EX").arg(ttl_s).ignore();
        }
        self.call("cache_bodies", |mut c| async move { pipe.query_async::<()>(&mut c).await }).await
    }

    /// The thread's unpersisted messages, oldest first.
    pub async fn unpersisted(&self, thread: &ThreadId) -> Result<Vec<Message>, RedisFault> {
        let key = keys::unpersisted(thread.as_str());
        let ids: Vec<String> = self
            .call("unpersisted", |mut c| async move {
                redis::cmd("ZRANGE").arg(key).arg(0).arg(-1).query_async(&mut c).await
            })
            .await?;
        let keys_: Vec<(ThreadId, MessageId)> =
            ids.iter().filter_map(|s| MessageId::parse(s).ok()).map(|id| (thread.clone(), id)).collect();
        Ok(self.bodies(&keys_).await?.into_iter().flatten().collect())
    }

    /// Flags messages persisted, starts their cache TTL, drops them from the
    /// unpersisted sets. Called only after PostgreSQL COMMIT.
    pub async fn mark_persisted(&self, done: &[(String, MessageId)], ttl_s: u64) -> Result<(), RedisFault> {
        if done.is_empty() {
            return Ok(());
        }
        let mut inv = MARK.prepare_invoke();
        inv.arg(ttl_s);
        for (t, id) in done {
            inv.key(keys::body(t, id)).key(keys::unpersisted(t)).key(keys::locator(id)).arg(id.to_string());
        }
        self.call("mark_persisted", |mut c| async move { inv.invoke_async::<i64>(&mut c).await }).await?;
        Ok(())
    }

    /// Rebuilds a cold thread index (see `lua/prime.lua`).
    pub async fn prime(
        &self,
        thread: &ThreadId,
        count: u64,
        seen_last: i64,
        head: &[OrderKey],
        window: u32,
        ttl_s: u64,
    ) -> Result<(), RedisFault> {
        let t = thread.as_str();
        let mut inv = PRIME.prepare_invoke();
        inv.key(keys::meta(t)).key(keys::index(t)).arg(window).arg(ttl_s).arg(count).arg(seen_last);
        for k in head {
            inv.arg(k.created_at.micros()).arg(k.id.to_string());
        }
        self.call("prime", |mut c| async move { inv.invoke_async::<i64>(&mut c).await }).await?;
        Ok(())
    }

    /// Brings a thread's Redis state in line with messages written to
    /// PostgreSQL during failover (see `lua/reconcile.lua`).
    pub async fn reconcile(
        &self,
        thread: &str,
        last: Timestamp,
        idem: &[(String, MessageId)],
        idem_ttl_s: u64,
    ) -> Result<(), RedisFault> {
        let mut inv = RECONCILE.prepare_invoke();
        inv.key(keys::meta(thread)).arg(last.micros()).arg(idem_ttl_s);
        for (k, id) in idem {
            let tid = ThreadId::parse(thread).map_err(|e| protocol(&e.to_string()))?;
            inv.key(keys::idempotency(&tid, k)).arg(id.to_string());
        }
        self.call("reconcile", |mut c| async move { inv.invoke_async::<i64>(&mut c).await }).await?;
        Ok(())
    }

    /// Removes a message Redis accepted but PostgreSQL refused as a
    /// duplicate of an earlier message with the same idempotency key.
    pub async fn drop_orphan(&self, thread: &str, id: &MessageId) -> Result<(), RedisFault> {
        let mut pipe = redis::pipe();
        pipe.atomic();
        pipe.cmd("DEL").arg(keys::body(thread, id)).arg(keys::locator(id)).ignore();
        pipe.cmd("ZREM").arg(keys::index(thread)).arg(id.to_string()).ignore();
        pipe.cmd("ZREM").arg(keys::unpersisted(thread)).arg(id.to_string()).ignore();
        pipe.cmd("HSET").arg(keys::meta(thread)).arg("win").arg("0").ignore();
        self.call("drop_orphan", |mut c| async move { pipe.query_async::<()>(&mut c).await }).await
    }

    /// Replaces a cached body with PostgreSQL's copy of the same message
    /// (PostgreSQL wins) and marks the thread index cold, so reads rebuild it
    /// from PostgreSQL.
    pub async fn replace_cached(&self, m: &Message, ttl_s: u64) -> Result<(), RedisFault> {
        let t = m.thread_id.as_str();
        let mut body = b"1".to_vec();
        body.extend(serde_json::to_vec(&Wire::from_message(m)).map_err(|e| protocol(&e.to_string()))?);
        let mut pipe = redis::pipe();
        pipe.atomic();
        pipe.cmd("SET").arg(keys::body(t, &m.id)).arg(body).arg("EX").arg(ttl_s).ignore();
        pipe.cmd("ZADD").arg(keys::index(t)).arg("XX").arg(m.created_at.micros()).arg(m.id.to_string()).ignore();
        pipe.cmd("HSET").arg(keys::meta(t)).arg("win").arg("0").ignore();
        self.call("replace_cached", |mut c| async move { pipe.query_async::<()>(&mut c).await }).await
    }

    /// Remembers an idempotency key found in PostgreSQL.
    pub async fn remember_key(
        &self,
        thread: &ThreadId,
        key: &str,
        id: &MessageId,
        ttl_s: u64,
    ) -> Result<(), RedisFault> {
        let (k, v) = (keys::idempotency(thread, key), id.to_string());
        self.call("remember_key", |mut c| async move {
            redis::cmd("SET").arg(k).arg(v).arg("NX").arg("EX").arg(ttl_s).query_async::<()>(&mut c).await
        })
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
