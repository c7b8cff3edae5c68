//! Per-request DataLoader for message bodies: every id a request needs is
//! fetched in one batch (one Redis `MGET`, one PostgreSQL query for misses).

use std::{collections::HashMap, time::Duration};

use async_graphql::dataloader::{DataLoader, Loader};

use crate::domain::{Message, MessageId, ThreadId};
use crate::error::Error;
use crate::store::MessageStore;

/// A body to load: bodies are keyed by thread in Redis (hash tag).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MessageKey(pub ThreadId, pub MessageId);

/// Loads bodies through the store's tiers.
pub struct MessageLoader {
    store: MessageStore,
}

impl Loader<MessageKey> for MessageLoader {
    type Value = Message;
    type Error = Error;

    async fn load(&self, keys: &[MessageKey]) -> Result<HashMap<MessageKey, Message>, Error> {
        let pairs: Vec<(ThreadId, MessageId)> = keys.iter().map(|k| (k.0.clone(), k.1)).collect();
        let mut found = self.store.load(&pairs).await?;
        Ok(keys.iter().filter_map(|k| found.remove(&k.1).map(|m| (k.clone(), m))).collect())
    }
}

/// A fresh loader for one request. No batching delay: resolvers ask for a
/// whole page at once, so waiting for more keys only adds latency.
pub fn per_request(store: MessageStore) -> DataLoader<MessageLoader> {
    DataLoader::new(MessageLoader { store }, tokio::spawn).delay(Duration::ZERO)
}
