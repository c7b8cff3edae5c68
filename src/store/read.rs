//! The read path: Redis index first, PostgreSQL merged with unpersisted
//! messages on a cold or out-of-window read, PostgreSQL alone in failover.

use std::collections::{HashMap, HashSet};

use super::redis::maintenance::IndexSnapshot;
use super::{redis::RedisTier, MessageStore, Order, PageQuery, StoreError};
use crate::domain::{Message, MessageId, OrderKey, ThreadId};

/// A page as the facade returns it: ids whose bodies the caller loads in
/// one batch (DataLoader), or messages already complete (cold/failover).
pub enum Page {
    /// Message ids in page order.
    Keys(Vec<MessageId>),
    /// Complete messages in page order.
    Messages(Vec<Message>),
}

fn in_range(q: &PageQuery, k: OrderKey) -> bool {
    match q {
        PageQuery::Range { after, before, .. } => after.is_none_or(|a| k > a) && before.is_none_or(|b| k < b),
        _ => true,
    }
}

/// Merges PostgreSQL rows with unpersisted Redis messages into the page `q`
/// asks for: union by id (the later version wins: an edit not yet
/// persisted; at the same version PostgreSQL's copy), thread order, then cut.
fn merge(q: &PageQuery, pg: Vec<Message>, unpersisted: Vec<Message>) -> Vec<Message> {
    let mut best: HashMap<MessageId, Message> = HashMap::new();
    for m in pg.into_iter().chain(unpersisted).filter(|m| in_range(q, m.order_key())) {
        match best.get(&m.id) {
            Some(kept) if kept.version >= m.version => {}
            _ => {
                best.insert(m.id, m);
            }
        }
    }
    let mut all: Vec<Message> = best.into_values().collect();
    all.sort_by_key(Message::order_key);
    let (order, skip, take) = match *q {
        PageQuery::Offset { order, offset, limit } => (order, offset as usize, limit as usize),
        PageQuery::Range { order, limit, .. } => (order, 0, limit as usize),
        PageQuery::Count => (Order::Asc, 0, 0),
    };
    if order == Order::Desc {
        all.reverse();
    }
    all.into_iter().skip(skip).take(take).collect()
}

impl MessageStore {
    /// A page of a thread.
    #[tracing::instrument(level = "debug", skip_all, fields(thread_id = %thread))]
    pub async fn page(&self, thread: &ThreadId, q: PageQuery) -> Result<Page, StoreError> {
        self.page_and_source(thread, q).await.map(|(page, _)| page)
    }

    /// A page, and whether Redis's view was part of it (false: PostgreSQL
    /// alone answered, so messages Redis holds unpersisted may be missing).
    async fn page_and_source(&self, thread: &ThreadId, q: PageQuery) -> Result<(Page, bool), StoreError> {
        self.metrics.read();
        match self.via_redis_patiently(|| async |r: &RedisTier| r.read_index(thread, &q).await).await {
            Ok(Some((_, ids))) => return Ok((Page::Keys(ids), true)),
            Ok(None) => {
                if let Ok((unpersisted, gen)) = self.via_redis(async |r| r.unpersisted(thread).await).await {
                    let page = self.cold_page(thread, q, unpersisted, gen).await?;
                    return Ok((Page::Messages(page), true));
                }
            }
            Err(_) => {}
        }
        let rows = self.pg.page(thread, &q).await.map_err(|_| StoreError::UNAVAILABLE)?;
        Ok((Page::Messages(rows), false))
    }

    /// A page for a live feed, which must never skip a message: an answer
    /// PostgreSQL gave alone while Redis is in use (a passing fault: the
    /// breaker is closed) may miss messages Redis holds unpersisted, and a
    /// feed that moved past them would never deliver them. That is an error
    /// here, so the feed retries. While the breaker is open, PostgreSQL's
    /// answer is all there is (README: guarantees, limits).
    /// The flag says whether Redis's view was part of the answer.
    pub async fn feed_page(&self, thread: &ThreadId, q: PageQuery) -> Result<(Vec<Message>, bool), StoreError> {
        let (page, with_redis) = self.page_and_source(thread, q).await?;
        if !with_redis && self.redis_in_use() {
            return Err(StoreError::UNAVAILABLE);
        }
        Ok((self.with_bodies(thread, page).await?, with_redis))
    }

    async fn with_bodies(&self, thread: &ThreadId, page: Page) -> Result<Vec<Message>, StoreError> {
        match page {
            Page::Messages(m) => Ok(m),
            Page::Keys(ids) => {
                let keys: Vec<_> = ids.iter().map(|id| (thread.clone(), *id)).collect();
                let mut found = self.load(&keys).await?;
                Ok(ids.iter().filter_map(|id| found.remove(id)).collect())
            }
        }
    }

    async fn cold_page(
        &self,
        thread: &ThreadId,
        q: PageQuery,
        unpersisted: Vec<Message>,
        gen: i64,
    ) -> Result<Vec<Message>, StoreError> {
        let pg_query = match q {
            // Unpersisted messages may sit anywhere in the order: read enough
            // from PostgreSQL to cut the merged page correctly.
            PageQuery::Offset { order, offset, limit } if !unpersisted.is_empty() => {
                PageQuery::Offset { order, offset: 0, limit: offset + limit }
            }
            other => other,
        };
        let rows = self.pg.page(thread, &pg_query).await.map_err(|_| StoreError::UNAVAILABLE)?;
        let page = if unpersisted.is_empty() { rows } else { merge(&q, rows, unpersisted.clone()) };
        if let Err(e) = self.prime(thread, unpersisted, gen).await {
            tracing::debug!(error = %e, "could not prime thread index");
        }
        Ok(page)
    }

    /// Rebuilds the Redis index of a cold thread so later reads are hot
    /// (best effort), and returns the thread's message count.
    async fn prime(&self, thread: &ThreadId, unpersisted: Vec<Message>, gen: i64) -> Result<u64, StoreError> {
        let unp_ids: Vec<MessageId> = unpersisted.iter().map(|m| m.id).collect();
        let (pg_count, mut head, held) =
            self.pg.head(thread, self.config.window, &unp_ids).await.map_err(|_| StoreError::UNAVAILABLE)?;
        let in_pg: HashSet<MessageId> = held.into_iter().collect();
        let count = pg_count + unpersisted.iter().filter(|m| !in_pg.contains(&m.id)).count() as u64;
        head.extend(unpersisted.iter().filter(|m| !in_pg.contains(&m.id)).map(Message::order_key));
        head.sort();
        head.dedup();
        let keep = head.len().saturating_sub(self.config.window as usize);
        let head = &head[keep..];
        let seen_last = head.last().map(|k| k.created_at.micros()).unwrap_or(0);
        let c = self.config;
        let snap = IndexSnapshot { count, seen_last, gen, head };
        if let Err(missed) = self.via_redis(async |r| r.prime(thread, &snap, c.window, c.cache_ttl_s).await).await {
            tracing::debug!(%missed, "could not prime thread index");
        }
        Ok(count)
    }

    /// Number of messages in a thread.
    pub async fn count(&self, thread: &ThreadId) -> Result<u64, StoreError> {
        match self.via_redis_patiently(|| async |r: &RedisTier| r.read_index(thread, &PageQuery::Count).await).await {
            Ok(Some((n, _))) => return Ok(n),
            Ok(None) => {
                if let Ok((unpersisted, gen)) = self.via_redis(async |r| r.unpersisted(thread).await).await {
                    return self.prime(thread, unpersisted, gen).await;
                }
            }
            Err(_) => {}
        }
        let (n, _, _) = self.pg.head(thread, 0, &[]).await.map_err(|_| StoreError::UNAVAILABLE)?;
        Ok(n)
    }

    /// The thread's latest change sequence (0 before its first message):
    /// `Thread.eventCursor`. Redis's when its state is warm; else the
    /// highest of PostgreSQL's and the unpersisted messages' (both read, as
    /// a change may be in either). While Redis is out PostgreSQL alone
    /// answers, which can be behind what Redis holds unpersisted: a
    /// subscriber starting there replays those changes (never misses them).
    pub async fn last_change(&self, thread: &ThreadId) -> Result<i64, StoreError> {
        let unpersisted = match self.via_redis_patiently(|| async |r: &RedisTier| r.last_change(thread).await).await {
            Ok(Some(seq)) => return Ok(seq),
            Ok(None) => self.via_redis(async |r| r.unpersisted(thread).await).await.ok().map(|(m, _)| m),
            Err(_) => None,
        };
        let newest_unpersisted = unpersisted.iter().flatten().map(|m| m.change_seq).max();
        let persisted = self.pg.last_change(thread).await.map_err(|_| StoreError::UNAVAILABLE)?;
        Ok(persisted.max(newest_unpersisted).unwrap_or(0))
    }

    /// Bodies by (thread, id): one Redis `MGET`, one PostgreSQL
    /// `id = ANY(..)` for the misses, which are then cached with the TTL.
    pub async fn load(&self, keys: &[(ThreadId, MessageId)]) -> Result<HashMap<MessageId, Message>, StoreError> {
        let mut found = HashMap::with_capacity(keys.len());
        let mut misses: Vec<MessageId> = keys.iter().map(|(_, id)| *id).collect();
        let cached = self.via_redis_patiently(|| async |r: &RedisTier| r.bodies(keys).await).await;
        let redis_answered = cached.is_ok();
        if let Ok(bodies) = cached {
            misses.clear();
            for ((_, id), body) in keys.iter().zip(bodies) {
                match body {
                    Some(m) => {
                        found.insert(*id, m);
                    }
                    None => misses.push(*id),
                }
            }
            self.metrics.cache(found.len() as u64, misses.len() as u64);
        }
        if misses.is_empty() {
            return Ok(found);
        }
        let rows = self.pg.by_ids(&misses).await.map_err(|_| StoreError::UNAVAILABLE)?;
        if redis_answered {
            let ttl = self.config.cache_ttl_s;
            if let Err(missed) = self.via_redis(async |r| r.cache_bodies(&rows, ttl).await).await {
                tracing::debug!(%missed, "could not repopulate cache");
            }
        }
        found.extend(rows.into_iter().map(|m| (m.id, m)));
        Ok(found)
    }

    /// One message by id, from whichever tier has it.
    pub async fn message(&self, id: MessageId) -> Result<Option<Message>, StoreError> {
        if let Ok(Some(thread)) = self.via_redis(async |r| r.locate(&id).await).await {
            return Ok(self.load(&[(thread, id)]).await?.remove(&id));
        }
        let rows = self.pg.by_ids(&[id]).await.map_err(|_| StoreError::UNAVAILABLE)?;
        Ok(rows.into_iter().next())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Role, Timestamp};

    fn msg(us: i64, persisted: bool) -> Message {
        Message {
            id: MessageId::from_uuid(uuid::Uuid::from_u128(us as u128)),
            thread_id: "t".into(),
            role: Role::User,
            content: format!("m{us}"),
            metadata: None,
            client_message_id: None,
            author_id: None,
            created_at: Timestamp::from_micros(us),
            change_seq: us,
            version: 1,
            edited_at: None,
            deleted_at: None,
            persisted,
        }
    }

    #[test]
    fn merge_dedupes_orders_and_cuts() {
        let pg = vec![msg(1, true), msg(2, true), msg(3, true)];
        let unp = vec![msg(3, false), msg(4, false), msg(5, false)];
        let q = PageQuery::Offset { order: Order::Desc, offset: 1, limit: 3 };
        let page = merge(&q, pg.clone(), unp.clone());
        let ts: Vec<i64> = page.iter().map(|m| m.created_at.micros()).collect();
        assert_eq!(ts, vec![4, 3, 2]);
        assert!(page[1].persisted, "PostgreSQL's copy wins");
        let q = PageQuery::Range { order: Order::Asc, after: Some(msg(2, true).order_key()), before: None, limit: 10 };
        let ts: Vec<i64> = merge(&q, pg, unp).iter().map(|m| m.created_at.micros()).collect();
        assert_eq!(ts, vec![3, 4, 5]);
    }
}
