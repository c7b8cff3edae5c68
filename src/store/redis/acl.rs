//! The Redis cache of thread access (PostgreSQL holds the truth; see
//! `store/access.rs`), and the pub/sub message that ends a removed member's
//! subscriptions.

use std::sync::LazyLock;

use bb8_redis::redis::{self, Script, Value};

use super::script::{script, Call};
use super::{keys, RedisFault, RedisTier};
use crate::store::{model::Access, wire};

static FILL: LazyLock<Script> = script!("acl_fill");
static CHANGED: LazyLock<Script> = script!("acl_changed");

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
    /// The cached access of `user` (`None`: only whether the thread is
    /// claimed), or `None` when the cache does not know.
    pub async fn acl_get(&self, thread: &str, user: Option<&str>) -> Result<Option<Access>, RedisFault> {
        let key = keys::acl(thread);
        // Without a user the second field asked is one no user has.
        let field = user.map_or_else(|| "o".to_owned(), user_field);
        let got: Vec<Value> = self
            .call("acl_get", |mut c| async move {
                redis::cmd("HMGET").arg(key).arg("o").arg(field).query_async(&mut c).await
            })
            .await?;
        let Some(owner) = got.first().and_then(text) else {
            return Ok(None);
        };
        let owner = (!owner.is_empty()).then_some(owner);
        if user.is_none() {
            return Ok(Some(Access::Claimed { owner, member: false }));
        }
        Ok(got.get(1).and_then(text).map(|m| Access::Claimed { owner, member: m == "1" }))
    }

    /// Caches a PostgreSQL answer read at `version` (see `lua/acl_fill.lua`).
    pub async fn acl_fill(
        &self,
        thread: &str,
        user: Option<&str>,
        owner: Option<&str>,
        member: bool,
        version: i64,
        ttl_s: u64,
    ) -> Result<(), RedisFault> {
        let mut call = Call::new(&FILL)
            .key(keys::acl(thread))
            .arg("version", version)
            .arg("owner", owner.unwrap_or(""))
            .arg("ttl", ttl_s);
        if let Some(user) = user {
            call = call.arg("field", user_field(user)).flag("member", member);
        }
        let inv = call.build();
        self.call("acl_fill", |mut c| async move { inv.invoke_async::<i64>(&mut c).await }).await?;
        Ok(())
    }

    /// Drops the cached access after a change committed at `version`.
    pub async fn acl_changed(&self, thread: &str, version: i64, ttl_s: u64) -> Result<(), RedisFault> {
        let inv = Call::new(&CHANGED).key(keys::acl(thread)).arg("version", version).arg("ttl", ttl_s).build();
        self.call("acl_changed", |mut c| async move { inv.invoke_async::<i64>(&mut c).await }).await?;
        Ok(())
    }

    /// Tells every instance to end `user`'s subscriptions to `thread`.
    pub async fn publish_revoke(&self, thread: &str, user: &str) -> Result<(), RedisFault> {
        let (channel, payload) = (keys::channel(thread), wire::encode_revoke(user));
        self.call("publish_revoke", |mut c| async move {
            redis::cmd("PUBLISH").arg(channel).arg(payload).query_async::<i64>(&mut c).await
        })
        .await?;
        Ok(())
    }
}
