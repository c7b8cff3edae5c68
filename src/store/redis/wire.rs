//! The JSON form of a message in Redis bodies, the Stream and pub/sub events.

use serde::{Deserialize, Serialize};

use crate::domain::{Message, MessageId, NewMessage, Role, Timestamp};

/// The JSON form of a message in Redis bodies, the Stream and events. Short
/// names keep the hot path small; `c` is spliced in by the save script.
#[derive(Serialize, Deserialize)]
pub struct Wire {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    c: Option<i64>,
    id: MessageId,
    t: String,
    r: Role,
    b: String,
    #[serde(default)]
    m: Option<serde_json::Value>,
    #[serde(default)]
    k: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    a: Option<String>,
}

impl Wire {
    pub(super) fn from_new(m: &NewMessage) -> Self {
        Wire {
            c: None,
            id: m.id,
            t: m.thread_id.as_str().to_owned(),
            r: m.role,
            b: m.content.as_str().to_owned(),
            m: m.metadata.as_ref().map(|v| v.as_value().clone()),
            k: m.client_message_id.as_ref().map(|k| k.as_str().to_owned()),
            a: m.author_id.clone(),
        }
    }

    pub(super) fn from_message(m: &Message) -> Self {
        Wire {
            c: Some(m.created_at.micros()),
            id: m.id,
            t: m.thread_id.clone(),
            r: m.role,
            b: m.content.clone(),
            m: m.metadata.clone(),
            k: m.client_message_id.clone(),
            a: m.author_id.clone(),
        }
    }

    /// Into a message with the given persisted flag.
    pub fn into_message(self, persisted: bool) -> Option<Message> {
        Some(Message {
            id: self.id,
            thread_id: self.t,
            role: self.r,
            content: self.b,
            metadata: self.m,
            client_message_id: self.k,
            author_id: self.a,
            created_at: Timestamp::from_micros(self.c?),
            persisted,
        })
    }
}

/// Parses a stored body: a `'0'`/`'1'` persisted flag followed by JSON.
pub fn parse_body(raw: &[u8]) -> Option<Message> {
    let (flag, json) = raw.split_first()?;
    serde_json::from_slice::<Wire>(json).ok()?.into_message(*flag == b'1')
}
