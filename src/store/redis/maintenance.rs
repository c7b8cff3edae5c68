//! Keeping Redis's view of threads right: marking messages persisted,
//! rebuilding cold indexes, reconciling failover writes, and correcting
//! entries PostgreSQL decided differently about.

use std::sync::LazyLock;

use bb8_redis::redis::{self, Script};

use super::script::{script, Call};
use super::{keys, RedisFault, RedisTier};
use crate::domain::{Message, MessageId, OrderKey, ThreadId, Timestamp};
use crate::store::wire;

static MARK: LazyLock<Script> = script!("mark_persisted");
static PRIME: LazyLock<Script> = script!("prime");
static RECONCILE: LazyLock<Script> = script!("reconcile");

fn protocol(what: &str) -> RedisFault {
    RedisFault::Protocol(what.to_owned())
}

/// A change PostgreSQL now holds: its message and the exact stream entry.
pub struct Persisted {
    /// The thread.
    pub thread: String,
    /// The message.
    pub id: MessageId,
    /// The entry as it was in the stream.
    pub entry: Vec<u8>,
}

/// What a cold read saw of a thread, for [`RedisTier::prime`].
pub struct IndexSnapshot<'a> {
    /// Messages in the thread.
    pub count: u64,
    /// Newest createdAt seen (µs), or 0.
    pub seen_last: i64,
    /// The meta generation read together with the unpersisted set.
    pub gen: i64,
    /// Order keys of the newest messages, oldest first.
    pub head: &'a [OrderKey],
}

impl RedisTier {
    /// Flags messages persisted, starts their cache TTL, drops them from the
    /// unpersisted sets, where the body is still the persisted change (see
    /// `lua/mark_persisted.lua`). Called only after PostgreSQL COMMIT.
    pub async fn mark_persisted(&self, done: &[Persisted], ttl_s: u64) -> Result<(), RedisFault> {
        if done.is_empty() {
            return Ok(());
        }
        let mut call = Call::new(&MARK).arg("ttl", ttl_s);
        for p in done {
            let t = p.thread.as_str();
            call = call
                .key(keys::body(t, &p.id))
                .key(keys::unpersisted(t))
                .key(keys::locator(&p.id))
                .item(p.id.to_string())
                .item(p.entry.as_slice());
        }
        let inv = call.build();
        self.call("mark_persisted", |mut c| async move { inv.invoke_async::<i64>(&mut c).await }).await?;
        Ok(())
    }

    /// Rebuilds a cold thread index (see `lua/prime.lua`), unless its
    /// state changed generation since `gen` was read.
    pub async fn prime(
        &self,
        thread: &ThreadId,
        snap: &IndexSnapshot<'_>,
        window: u32,
        ttl_s: u64,
    ) -> Result<(), RedisFault> {
        let t = thread.as_str();
        let mut call = Call::new(&PRIME)
            .key(keys::meta(t))
            .key(keys::index(t))
            .arg("window", window)
            .arg("ttl", ttl_s)
            .arg("count", snap.count)
            .arg("seen", snap.seen_last)
            .arg("gen", snap.gen);
        for k in snap.head {
            call = call.item(k.created_at.micros()).item(k.id.to_string());
        }
        let inv = call.build();
        self.call("prime", |mut c| async move { inv.invoke_async::<i64>(&mut c).await }).await?;
        Ok(())
    }

    /// Brings a thread's Redis state in line with messages written to
    /// PostgreSQL during failover (see `lua/reconcile.lua`).
    pub async fn reconcile(
        &self,
        thread: &str,
        last: Timestamp,
        seq: i64,
        idem: &[(String, MessageId)],
        written: &[MessageId],
        idem_ttl_s: u64,
    ) -> Result<(), RedisFault> {
        let mut call = Call::new(&RECONCILE)
            .key(keys::meta(thread))
            .arg("last", last.micros())
            .arg("seq", seq)
            .arg("key_ttl", idem_ttl_s);
        for (k, id) in idem {
            let tid = ThreadId::parse(thread).map_err(|e| protocol(&e.to_string()))?;
            call = call.key(keys::idempotency(&tid, k)).item(id.to_string());
        }
        // A failover edit left Redis's cached copy stale: drop it (reads
        // load PostgreSQL's).
        for id in written {
            call = call.key(keys::body(thread, id));
        }
        let inv = call.build();
        self.call("reconcile", |mut c| async move { inv.invoke_async::<i64>(&mut c).await }).await?;
        Ok(())
    }

    /// Replaces a cached body with PostgreSQL's copy of the same message
    /// (PostgreSQL wins) and marks the thread index cold, so reads rebuild it
    /// from PostgreSQL.
    pub async fn replace_cached(&self, m: &Message, ttl_s: u64) -> Result<(), RedisFault> {
        let t = m.thread_id.as_str();
        let body = wire::encode_body(m, true);
        let mut pipe = redis::pipe();
        pipe.atomic();
        pipe.cmd("SET").arg(keys::body(t, &m.id)).arg(body).arg("EX").arg(ttl_s).ignore();
        pipe.cmd("ZADD").arg(keys::index(t)).arg("XX").arg(m.created_at.micros()).arg(m.id.to_string()).ignore();
        pipe.cmd("HSET").arg(keys::meta(t)).arg("win").arg("0").ignore();
        pipe.cmd("HINCRBY").arg(keys::meta(t)).arg("gen").arg(1).ignore();
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
}
