//! The Redis cache of thread access (PostgreSQL holds the truth; see
//! `store/access.rs`), and the pub/sub message that ends a removed member's
//! subscriptions.

use std::sync::LazyLock;

use bb8_redis::redis::{self, Script, Value};

use super::{keys, RedisFault, RedisTier};
use crate::store::access::Access;

static FILL: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("../lua/acl_fill.lua")));
static CHANGED: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("../lua/acl_changed.lua")));

fn user_field(user: &str) -> String {
    format!("u:{user}")
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

impl RedisTier {
    /// The cached access of `user` (empty: only whether the thread is
    /// claimed), or `None` when the cache does not know.
    pub async fn acl_get(&self, thread: &str, user: &str) -> Result<Option<Access>, RedisFault> {
        let key = keys::acl(thread);
        let field = user_field(user);
        let got: Vec<Value> = self
            .call("acl_get", |mut c| async move {
                redis::cmd("HMGET").arg(key).arg("o").arg(field).query_async(&mut c).await
            })
            .await?;
        let Some(owner) = got.first().and_then(text) else {
            return Ok(None);
        };
        let owner = (!owner.is_empty()).then_some(owner);
        if user.is_empty() {
            return Ok(Some(Access::Claimed { owner, member: false }));
        }
        Ok(got.get(1).and_then(text).map(|m| Access::Claimed { owner, member: m == "1" }))
    }

    /// Caches a PostgreSQL answer read at `version` (see `lua/acl_fill.lua`).
    pub async fn acl_fill(
        &self,
        thread: &str,
        user: &str,
        owner: Option<&str>,
        member: bool,
        version: i64,
        ttl_s: u64,
    ) -> Result<(), RedisFault> {
        let mut inv = FILL.prepare_invoke();
        inv.key(keys::acl(thread))
            .arg(version)
            .arg(owner.unwrap_or(""))
            .arg(user_field(user))
            .arg(if member { "1" } else { "0" })
            .arg(ttl_s);
        self.call("acl_fill", |mut c| async move { inv.invoke_async::<i64>(&mut c).await }).await?;
        Ok(())
    }

    /// Drops the cached access after a change committed at `version`.
    pub async fn acl_changed(&self, thread: &str, version: i64, ttl_s: u64) -> Result<(), RedisFault> {
        let mut inv = CHANGED.prepare_invoke();
        inv.key(keys::acl(thread)).arg(version).arg(ttl_s);
        self.call("acl_changed", |mut c| async move { inv.invoke_async::<i64>(&mut c).await }).await?;
        Ok(())
    }

    /// Tells every instance to end `user`'s subscriptions to `thread`.
    pub async fn publish_revoke(&self, thread: &str, user: &str) -> Result<(), RedisFault> {
        let (channel, payload) = (keys::channel(thread), keys::revoke_payload(user));
        self.call("publish_revoke", |mut c| async move {
            redis::cmd("PUBLISH").arg(channel).arg(payload).query_async::<i64>(&mut c).await
        })
        .await?;
        Ok(())
    }
}
