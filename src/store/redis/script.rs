//! Calling the Lua scripts with named inputs. Every script starts with the
//! prelude `lua/args.lua`, which turns `ARGV` into a table of named values
//! `A` and a list `L`, so a script reads `A.ttl` instead of `ARGV[6]` and
//! an argument added later cannot shift the others; then the byte-format
//! constants `W` (owned by `store/wire.rs`), loaded once with the script. Keys stay in `KEYS`
//! (Redis Cluster routes by them), each script naming its keys up front.

use bb8_redis::redis::{Script, ScriptInvocation, ToRedisArgs};

/// A script from `store/lua/<name>.lua`, after the prelude and the format
/// constants `W` of [`crate::store::wire::lua_constants`].
macro_rules! script {
    ($name:literal) => {
        std::sync::LazyLock::new(|| {
            bb8_redis::redis::Script::new(&format!(
                "{}{}{}",
                include_str!("../lua/args.lua"),
                $crate::store::wire::lua_constants(),
                include_str!(concat!("../lua/", $name, ".lua"))
            ))
        })
    };
}
pub(super) use script;

/// One call of a script: keys, named inputs, then a list.
pub(super) struct Call<'a> {
    invocation: ScriptInvocation<'a>,
    named: Vec<(&'static str, Vec<Vec<u8>>)>,
    list: Vec<Vec<Vec<u8>>>,
}

impl<'a> Call<'a> {
    pub(super) fn new(script: &'a Script) -> Self {
        Call { invocation: script.prepare_invoke(), named: Vec::new(), list: Vec::new() }
    }

    /// Appends a key to `KEYS`.
    pub(super) fn key(mut self, key: impl ToRedisArgs) -> Self {
        self.invocation.key(key);
        self
    }

    /// Sets `A[name]`.
    pub(super) fn arg(mut self, name: &'static str, value: impl ToRedisArgs) -> Self {
        self.named.push((name, value.to_redis_args()));
        self
    }

    /// Sets `A[name]` to `'1'` or `'0'`.
    pub(super) fn flag(self, name: &'static str, on: bool) -> Self {
        self.arg(name, if on { "1" } else { "0" })
    }

    /// Appends to the list `L`.
    pub(super) fn item(mut self, value: impl ToRedisArgs) -> Self {
        self.list.push(value.to_redis_args());
        self
    }

    /// The invocation, ready to send (as `EVALSHA`, loading on a miss).
    pub(super) fn build(self) -> ScriptInvocation<'a> {
        let mut inv = self.invocation;
        inv.arg(self.named.len());
        for (name, value) in self.named {
            inv.arg(name).arg(value);
        }
        for value in self.list {
            inv.arg(value);
        }
        inv
    }
}
