//! Changes of stored messages on Redis: reading the exact body a change is
//! decided on, and the atomic compare-and-set of `lua/edit.lua`.

use std::sync::LazyLock;

use bb8_redis::redis::{self, Script, Value};

use super::messages::{bytes, deadline_micros, protocol};
use super::script::{script, Call};
use super::{keys, RedisFault, RedisTier};
use crate::domain::{Message, MessageId, MessageVersion, ThreadId};
use crate::store::model::StoreConfig;
use crate::store::wire::{self, EntryParts};

static EDIT: LazyLock<Script> = script!("edit");

/// What the edit script did.
pub enum ChangeReply {
    /// Applied with this change sequence.
    Applied(i64),
    /// The body is no longer the one the change was decided on.
    Changed,
    /// The persistence backlog is at its bound: nothing stored.
    BacklogFull,
}

impl RedisTier {
    /// The stored body, byte for byte (the base of a compare-and-set).
    pub async fn raw_body(&self, thread: &ThreadId, id: &MessageId) -> Result<Option<Vec<u8>>, RedisFault> {
        let key = keys::body(thread.as_str(), id);
        self.call("get_body", |mut c| async move { redis::cmd("GET").arg(key).query_async(&mut c).await }).await
    }

    /// Stores `next` (a change of the message whose body was `base`, empty
    /// when Redis held none) in one atomic round trip (see `lua/edit.lua`).
    pub async fn change(
        &self,
        next: &Message,
        replaced: &MessageVersion,
        base: &[u8],
        c: &StoreConfig,
    ) -> Result<ChangeReply, RedisFault> {
        let t = next.thread_id.as_str();
        let parts = EntryParts::of_change(next).map_err(|e| protocol(&e.to_string()))?;
        let inv = Call::new(&EDIT)
            .key(keys::meta(t))
            .key(keys::body(t, &next.id))
            .key(keys::unpersisted(t))
            .key(keys::STREAM)
            .key(keys::locator(&next.id))
            .arg("id", next.id.to_string())
            .arg("thread", t)
            .arg("created", next.created_at.micros())
            .arg("tail", parts.tail)
            .arg("replaced", wire::encode_version(replaced))
            .arg("base", base)
            .arg("backlog", c.backlog_limit)
            .arg("deadline", deadline_micros(self.timeout()))
            .build();
        let reply: Vec<Value> = self.call("edit", |mut c| async move { inv.invoke_async(&mut c).await }).await?;
        match reply.first().and_then(bytes) {
            Some(b"ok") => {
                let seq = reply
                    .get(1)
                    .and_then(bytes)
                    .and_then(|b| std::str::from_utf8(b).ok()?.parse().ok())
                    .ok_or_else(|| protocol("edit change sequence"))?;
                Ok(ChangeReply::Applied(seq))
            }
            Some(b"changed") => Ok(ChangeReply::Changed),
            Some(b"full") => Ok(ChangeReply::BacklogFull),
            Some(b"late") => Err(RedisFault::Reply("edit reached redis after its deadline".into())),
            _ => Err(protocol("edit reply")),
        }
    }
}
