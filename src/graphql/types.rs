//! GraphQL object, input and scalar types. Inputs are raw here and parsed
//! into domain types by the resolvers; outputs wrap domain types.

use async_graphql::{
    Enum, InputObject, InputValueError, InputValueResult, Json, Object, Scalar, ScalarType, SimpleObject, Value, ID,
};

use crate::domain::{Message, Role, Timestamp};
use crate::store::Order;

/// RFC 3339 in UTC with exactly six fractional digits.
pub struct DateTime(pub Timestamp);

#[Scalar(name = "DateTime")]
impl ScalarType for DateTime {
    fn parse(value: Value) -> InputValueResult<Self> {
        match &value {
            Value::String(s) => Timestamp::parse_rfc3339(s)
                .map(DateTime)
                .ok_or_else(|| InputValueError::custom("not an RFC 3339 timestamp")),
            _ => Err(InputValueError::expected_type(value)),
        }
    }

    fn to_value(&self) -> Value {
        Value::String(self.0.to_rfc3339())
    }
}

/// Who wrote a message.
#[derive(Enum, Clone, Copy, PartialEq, Eq)]
#[graphql(name = "MessageRole")]
pub enum MessageRole {
    /// A person.
    User,
    /// An AI assistant.
    Assistant,
    /// System prompt or notice.
    System,
    /// A tool's output.
    Tool,
}

impl From<MessageRole> for Role {
    fn from(r: MessageRole) -> Self {
        match r {
            MessageRole::User => Role::User,
            MessageRole::Assistant => Role::Assistant,
            MessageRole::System => Role::System,
            MessageRole::Tool => Role::Tool,
        }
    }
}

impl From<Role> for MessageRole {
    fn from(r: Role) -> Self {
        match r {
            Role::User => MessageRole::User,
            Role::Assistant => MessageRole::Assistant,
            Role::System => MessageRole::System,
            Role::Tool => MessageRole::Tool,
        }
    }
}

/// Page order.
#[derive(Enum, Clone, Copy, PartialEq, Eq)]
pub enum MessageOrder {
    /// Oldest first.
    OldestFirst,
    /// Newest first.
    NewestFirst,
}

impl From<MessageOrder> for Order {
    fn from(o: MessageOrder) -> Self {
        match o {
            MessageOrder::OldestFirst => Order::Asc,
            MessageOrder::NewestFirst => Order::Desc,
        }
    }
}

/// A message to save.
#[derive(InputObject)]
pub struct MessageCreate {
    /// Client-chosen thread id: 1-128 chars of `[A-Za-z0-9._:-]`.
    pub thread_id: ID,
    /// Author role.
    pub role: MessageRole,
    /// 1..=32768 bytes of UTF-8; no control characters except tab, LF, CR.
    pub content: String,
    /// A JSON object: at most 16 KiB serialised, nesting depth at most 8.
    pub metadata: Option<Json<serde_json::Value>>,
    /// Idempotency key: 1-128 printable ASCII characters.
    pub client_message_id: Option<String>,
}

/// A stored message.
pub struct MessageNode(pub Message);

#[Object(name = "Message")]
impl MessageNode {
    /// UUIDv7, assigned by the server.
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }
    /// The thread.
    async fn thread_id(&self) -> ID {
        ID(self.0.thread_id.clone())
    }
    /// Author role.
    async fn role(&self) -> MessageRole {
        self.0.role.into()
    }
    /// Text, byte-exact as saved.
    async fn content(&self) -> &str {
        &self.0.content
    }
    /// JSON object, if any.
    async fn metadata(&self) -> Option<Json<serde_json::Value>> {
        self.0.metadata.clone().map(Json)
    }
    /// Idempotency key, if any.
    async fn client_message_id(&self) -> Option<&str> {
        self.0.client_message_id.as_deref()
    }
    /// Who saved it: the `sub` of the token it was saved with (null
    /// without authentication). Never taken from the client.
    async fn author_id(&self) -> Option<&str> {
        self.0.author_id.as_deref()
    }
    /// Position in the thread; unique and increasing within it.
    async fn created_at(&self) -> DateTime {
        DateTime(self.0.created_at)
    }
    /// Opaque cursor, usable as `after`/`before`.
    async fn cursor(&self) -> String {
        self.0.cursor().encode()
    }
    /// True once PostgreSQL holds the message.
    async fn persisted(&self) -> bool {
        self.0.persisted
    }
    /// 1 when created, +1 per edit.
    async fn version(&self) -> i32 {
        self.0.version
    }
    /// When it was last edited.
    async fn edited_at(&self) -> Option<DateTime> {
        self.0.edited_at.map(DateTime)
    }
    /// When it was deleted: a tombstone (content "", metadata null) that
    /// keeps its place in the thread.
    async fn deleted_at(&self) -> Option<DateTime> {
        self.0.deleted_at.map(DateTime)
    }
}

/// How `deleteMessage` deletes. (`PURGE`, erasing every copy, is not
/// offered yet.)
#[derive(Enum, Copy, Clone, Debug, Eq, PartialEq)]
pub enum DeleteMode {
    /// Leave a tombstone; history is kept.
    Soft,
}

/// Latency of one tier.
#[derive(SimpleObject)]
pub struct TierLatency {
    /// Median, milliseconds.
    pub p50_ms: f64,
    /// 99th percentile, milliseconds.
    pub p99_ms: f64,
    /// Calls measured.
    pub calls: u64,
}

/// Storage health of this instance.
#[derive(SimpleObject)]
pub struct StorageMetrics {
    /// Redis call latency.
    pub redis: TierLatency,
    /// PostgreSQL call latency.
    pub postgres: TierLatency,
    /// Share of message bodies served from Redis.
    pub cache_hit_ratio: f64,
    /// `CLOSED`, `HALF_OPEN` or `OPEN`.
    pub breaker_state: String,
    /// Times the breaker opened since start.
    pub failovers: u64,
    /// Saves written straight to PostgreSQL since start.
    pub failover_writes: u64,
    /// Saved messages not yet in PostgreSQL.
    pub persistence_queue_depth: u64,
    /// Entries delivered to a persister and not yet acknowledged.
    pub persistence_pending: u64,
    /// Age of the oldest unpersisted message, milliseconds.
    pub persistence_lag_ms: u64,
    /// Entries in the dead-letter stream.
    pub dead_letters: u64,
    /// Messages persisted by this instance since start.
    pub persisted: u64,
    /// Saves per second (last 10 s).
    pub saves_per_second: f64,
    /// Thread reads per second (last 10 s).
    pub reads_per_second: f64,
    /// Live subscriptions on this instance.
    pub active_subscriptions: i64,
}
