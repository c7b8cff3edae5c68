//! Persistence and failover helpers: driving a `Persister` until idle
//! ([`drain`]) and `TestApp` checks of `storageMetrics`, the rows in
//! PostgreSQL and the persistence stream's pending entries.

use std::time::Duration;

use serde_json::{json, Value};
use threadstore::store::Persister;

use super::TestApp;

/// Sum of the entries and new rows a persister reported.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Drained {
    pub entries: usize,
    pub inserted: u64,
}

/// Steps `p` until it reports `Idle` (bounded); `RetryLater` steps are retried.
pub async fn drain(p: &mut Persister, within: Duration) -> Drained {
    use threadstore::store::PersistOutcome;
    let deadline = tokio::time::Instant::now() + within;
    let mut done = Drained::default();
    loop {
        match p.persist_batch().await {
            PersistOutcome::Idle => return done,
            PersistOutcome::Persisted { entries, inserted } => {
                done.entries += entries;
                done.inserted += inserted;
            }
            PersistOutcome::RetryLater => tokio::time::sleep(Duration::from_millis(50)).await,
        }
        assert!(tokio::time::Instant::now() < deadline, "persister not idle after {within:?} ({done:?})");
    }
}

impl TestApp {
    /// `storageMetrics` of this instance.
    pub async fn storage_metrics(&self) -> Value {
        let r = self
            .gql(
                "{ storageMetrics { breakerState failovers failoverWrites persistenceQueueDepth \
                 persistencePending persistenceLagMs deadLetters persisted } }",
                json!({}),
            )
            .await;
        r["data"]["storageMetrics"].clone()
    }

    /// Ids PostgreSQL holds for a thread, in thread order.
    pub fn pg_ids(&self, thread: &str) -> Vec<String> {
        let sql = format!("SELECT id FROM messages WHERE thread_id = '{thread}' ORDER BY created_at, id");
        let out = self.pg.server().psql(&self.db, &sql);
        out.lines().map(str::to_owned).collect()
    }

    /// `XPENDING ts:persist persisters` summary count.
    pub fn stream_pending(&self) -> i64 {
        let r = self.redis.cmd(&["XPENDING", "ts:persist", "persisters"]);
        r.as_array().and_then(|a| a.first()).and_then(|v| v.as_int()).unwrap_or(0)
    }

    /// Asserts PostgreSQL holds exactly the messages `ids` (all threads), each once.
    pub fn assert_pg_holds_exactly<'a>(&self, ids: impl IntoIterator<Item = &'a String>) {
        use std::collections::BTreeSet;
        let want: BTreeSet<&str> = ids.into_iter().map(String::as_str).collect();
        let out = self.pg.server().psql(&self.db, "SELECT id FROM messages");
        let rows: Vec<&str> = out.lines().collect();
        let got: BTreeSet<&str> = rows.iter().copied().collect();
        assert_eq!(rows.len(), got.len(), "PostgreSQL holds a message twice");
        let missing: Vec<_> = want.difference(&got).collect();
        let extra: Vec<_> = got.difference(&want).collect();
        assert!(missing.is_empty(), "acknowledged but not in PostgreSQL: {missing:?}");
        assert!(extra.is_empty(), "in PostgreSQL but never acknowledged: {extra:?}");
    }
}
