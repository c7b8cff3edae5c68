//! Reads: pages in thread order, thread heads for priming the Redis
//! index, and lookups by id or idempotency key.

use bb8_postgres::tokio_postgres;
use tokio_postgres::types::Type;
use uuid::Uuid;

use super::{bound, row_to_message, rows, PgFault, PgTier, COLUMNS};
use crate::domain::{Message, MessageId, OrderKey, ThreadId, Timestamp};
use crate::store::model::{Order, PageQuery};

impl PgTier {
    /// A page of a thread, in the requested order.
    #[tracing::instrument(level = "debug", skip_all, fields(thread_id = %thread))]
    pub async fn page(&self, thread: &ThreadId, q: &PageQuery) -> Result<Vec<Message>, PgFault> {
        let t = thread.as_str();
        self.with_client("page", || {
            async |c| {
                let rs = match *q {
                    PageQuery::Offset { order, offset, limit } => {
                        let dir = if order == Order::Asc { "ASC" } else { "DESC" };
                        let (offset, limit) = (i64::from(offset), i64::from(limit));
                        c.query_typed(
                            &format!(
                                "SELECT {COLUMNS} FROM messages WHERE thread_id = $1
                             ORDER BY created_at {dir}, id {dir} OFFSET $2 LIMIT $3"
                            ),
                            &[(&t, Type::TEXT), (&offset, Type::INT8), (&limit, Type::INT8)],
                        )
                        .await?
                    }
                    PageQuery::Range { order, after, before, limit } => {
                        let dir = if order == Order::Asc { "ASC" } else { "DESC" };
                        let (lo_t, lo_id) = bound(after, false);
                        let (hi_t, hi_id) = bound(before, true);
                        let limit = i64::from(limit);
                        c.query_typed(
                            &format!(
                                "SELECT {COLUMNS} FROM messages WHERE thread_id = $1
                               AND (created_at, id) > ($2, $3) AND (created_at, id) < ($4, $5)
                             ORDER BY created_at {dir}, id {dir} LIMIT $6"
                            ),
                            &[
                                (&t, Type::TEXT),
                                (&lo_t, Type::TIMESTAMPTZ),
                                (&lo_id, Type::UUID),
                                (&hi_t, Type::TIMESTAMPTZ),
                                (&hi_id, Type::UUID),
                                (&limit, Type::INT8),
                            ],
                        )
                        .await?
                    }
                    PageQuery::Count => Vec::new(),
                };
                rows(rs)
            }
        })
        .await
    }

    /// One consistent snapshot of a thread for priming the Redis index:
    /// its message count, the order keys of its newest `window` (newest
    /// first), and which of `also` PostgreSQL already holds. One
    /// REPEATABLE READ transaction, so a commit landing between the queries
    /// can't make the count and the keys disagree.
    pub async fn head(
        &self,
        thread: &ThreadId,
        window: u32,
        also: &[MessageId],
    ) -> Result<(u64, Vec<OrderKey>, Vec<MessageId>), PgFault> {
        let t = thread.as_str();
        let window = i64::from(window);
        let also: Vec<Uuid> = also.iter().map(MessageId::as_uuid).collect();
        self.with_client("head", || async |c| {
            let tx = c
                .build_transaction()
                .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .await?;
            let count = tx
                .query_typed("SELECT count(*) FROM messages WHERE thread_id = $1", &[(&t, Type::TEXT)])
                .await?
                .first()
                .map(|r| r.try_get::<_, i64>(0))
                .transpose()?
                .unwrap_or(0);
            let keys = tx
                .query_typed(
                    "SELECT created_at, id FROM messages WHERE thread_id = $1 ORDER BY created_at DESC, id DESC LIMIT $2",
                    &[(&t, Type::TEXT), (&window, Type::INT8)],
                )
                .await?
                .iter()
                .map(|r| {
                    Ok(OrderKey {
                        created_at: Timestamp::from_datetime(r.try_get(0)?),
                        id: MessageId::from_uuid(r.try_get(1)?),
                    })
                })
                .collect::<Result<Vec<_>, tokio_postgres::Error>>()?;
            let held = if also.is_empty() {
                Vec::new()
            } else {
                tx.query_typed(
                    "SELECT id FROM messages WHERE thread_id = $1 AND id = ANY($2)",
                    &[(&t, Type::TEXT), (&also, Type::UUID_ARRAY)],
                )
                .await?
                .iter()
                .map(|r| r.try_get(0).map(MessageId::from_uuid))
                .collect::<Result<Vec<_>, tokio_postgres::Error>>()?
            };
            tx.commit().await?;
            Ok((count.max(0) as u64, keys, held))
        })
        .await
    }

    /// Messages by id (any thread): the DataLoader's miss path.
    pub async fn by_ids(&self, ids: &[MessageId]) -> Result<Vec<Message>, PgFault> {
        let ids: Vec<Uuid> = ids.iter().map(MessageId::as_uuid).collect();
        self.with_client("by_ids", || {
            async |c| {
                rows(
                    c.query_typed(
                        &format!("SELECT {COLUMNS} FROM messages WHERE id = ANY($1)"),
                        &[(&ids, Type::UUID_ARRAY)],
                    )
                    .await?,
                )
            }
        })
        .await
    }

    /// The thread's highest change sequence, if it has messages.
    pub async fn last_change(&self, thread: &ThreadId) -> Result<Option<i64>, PgFault> {
        let t = thread.as_str();
        self.with_client("last_change", || {
            async |c| {
                let r = c
                    .query_typed("SELECT max(change_seq) FROM messages WHERE thread_id = $1", &[(&t, Type::TEXT)])
                    .await?;
                Ok(r.first().map(|r| r.try_get::<_, Option<i64>>(0)).transpose()?.flatten())
            }
        })
        .await
    }

    /// The message saved with an idempotency key, if any.
    pub async fn by_client_id(&self, thread: &ThreadId, key: &str) -> Result<Option<Message>, PgFault> {
        let t = thread.as_str();
        self.with_client("by_client_id", || {
            async |c| {
                let rs = c
                    .query_typed(
                        &format!("SELECT {COLUMNS} FROM messages WHERE thread_id = $1 AND client_message_id = $2"),
                        &[(&t, Type::TEXT), (&key, Type::TEXT)],
                    )
                    .await?;
                rs.first().map(row_to_message).transpose()
            }
        })
        .await
    }
}
