//! The message itself, as stored and as returned.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::{ClientMessageId, Content, Cursor, Metadata, OrderKey, ThreadId, Timestamp, ValidationError};

/// A message id: a UUIDv7 assigned by the service before storage is touched,
/// so a retry or a fallback after an ambiguous timeout names the same message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct MessageId(Uuid);

impl MessageId {
    /// A fresh time-ordered id.
    pub fn generate() -> Self {
        Self(Uuid::now_v7())
    }

    /// Wraps a UUID.
    pub fn from_uuid(u: Uuid) -> Self {
        Self(u)
    }

    /// Parses a client-supplied id.
    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        Uuid::try_parse(s).map(Self).map_err(|_| ValidationError { field: "id", reason: "is not a message id".into() })
    }

    /// The UUID.
    pub fn as_uuid(&self) -> Uuid {
        self.0
    }
}

impl std::fmt::Display for MessageId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A person.
    User,
    /// An AI assistant.
    Assistant,
    /// System prompt or notice.
    System,
    /// A tool's output.
    Tool,
}

impl Role {
    /// Storage spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::System => "system",
            Role::Tool => "tool",
        }
    }

    /// Parses the storage spelling.
    pub fn from_db(s: &str) -> Option<Self> {
        Some(match s {
            "user" => Role::User,
            "assistant" => Role::Assistant,
            "system" => Role::System,
            "tool" => Role::Tool,
            _ => return None,
        })
    }
}

/// A validated save request, with its server-assigned id.
#[derive(Debug, Clone)]
pub struct NewMessage {
    /// Assigned before storage is touched.
    pub id: MessageId,
    /// Target thread.
    pub thread_id: ThreadId,
    /// Author role.
    pub role: Role,
    /// Text.
    pub content: Content,
    /// Optional JSON object.
    pub metadata: Option<Metadata>,
    /// Optional idempotency key.
    pub client_message_id: Option<ClientMessageId>,
    /// The authenticated principal saving it (`None` without authentication).
    pub author_id: Option<String>,
}

impl NewMessage {
    /// The message as stored with `created_at` and change sequence
    /// `change_seq`, not yet persisted.
    pub fn to_message(&self, created_at: Timestamp, change_seq: i64) -> Message {
        Message {
            id: self.id,
            thread_id: self.thread_id.as_str().to_owned(),
            role: self.role,
            content: self.content.as_str().to_owned(),
            metadata: self.metadata.as_ref().map(|m| m.as_value().clone()),
            client_message_id: self.client_message_id.as_ref().map(|k| k.as_str().to_owned()),
            author_id: self.author_id.clone(),
            created_at,
            change_seq,
            version: 1,
            edited_at: None,
            deleted_at: None,
            persisted: false,
        }
    }

    /// Whether `existing` carries the same payload (for idempotent retries).
    pub fn same_payload(&self, existing: &Message) -> bool {
        self.role == existing.role
            && self.author_id == existing.author_id
            && self.content.as_str() == existing.content
            && self.metadata.as_ref().map(Metadata::as_value) == existing.metadata.as_ref()
    }
}

/// A stored message, from whichever tier answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// UUIDv7.
    pub id: MessageId,
    /// Thread.
    pub thread_id: String,
    /// Role.
    pub role: Role,
    /// Byte-exact text.
    pub content: String,
    /// JSON object, if any.
    pub metadata: Option<Value>,
    /// Idempotency key, if any.
    pub client_message_id: Option<String>,
    /// Who saved it (the token's `sub`), if authenticated.
    pub author_id: Option<String>,
    /// Position in the thread.
    pub created_at: Timestamp,
    /// The thread's change sequence number of this message's latest change:
    /// a per-thread logical clock in microseconds, strictly increasing over
    /// the thread's changes, with gaps (see `migrations/V3__change_seq.sql`).
    pub change_seq: i64,
    /// 1 when created, +1 per edit.
    pub version: i32,
    /// When it was last edited.
    pub edited_at: Option<Timestamp>,
    /// When it was deleted: a tombstone (content empty, metadata none).
    pub deleted_at: Option<Timestamp>,
    /// True once PostgreSQL holds it.
    pub persisted: bool,
}

impl Message {
    /// The message's place in its thread.
    pub fn order_key(&self) -> OrderKey {
        OrderKey { created_at: self.created_at, id: self.id }
    }

    /// Its opaque cursor.
    pub fn cursor(&self) -> Cursor {
        Cursor(self.order_key())
    }
}

impl Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i64(self.micros())
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        i64::deserialize(d).map(Timestamp::from_micros)
    }
}
