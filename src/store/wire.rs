//! The one owner of every byte format threadstore keeps in Redis: message
//! bodies, persistence-stream entries and pub/sub events. Encoding and
//! decoding both live here; the save script only concatenates the pieces
//! [`SaveParts`] hands it (createdAt comes from Redis `TIME` inside the
//! script, so the script must splice it in), and never parses a body.
//!
//! | format | bytes |
//! | --- | --- |
//! | entry | message JSON (`Wire`), `c` = createdAt µs first |
//! | body | [`UNPERSISTED`] or [`PERSISTED`], then the entry |
//! | saved event | previous createdAt µs or [`PREV_UNKNOWN`], [`EVENT_SEP`], the body |
//! | revoke event | [`REVOKE`], then the user id |
//!
//! A saved event starts with a digit or `?`, a revoke event with `!`, so the
//! two never collide.

use serde::{Deserialize, Serialize};

use crate::domain::{Message, MessageId, MessageVersion, NewMessage, Role, Timestamp};

/// First byte of a body PostgreSQL does not hold yet.
pub const UNPERSISTED: &str = "0";
/// First byte of a body PostgreSQL holds (the cache TTL applies).
pub const PERSISTED: &str = "1";
/// The stream entry field holding the entry.
pub const ENTRY_FIELD: &str = "b";
/// The stream entry field holding the version an edit replaced (for
/// history), beside the entry so a body stays the flag + the entry.
pub const REPLACED_FIELD: &str = "p";
/// Separates `prev` from the body in a saved event.
pub const EVENT_SEP: &str = "|";
/// `prev` of a saved event when the thread's previous message is unknown
/// (cold thread state): subscribers re-read instead of trusting order.
pub const PREV_UNKNOWN: &str = "?";
/// Prefix of a revoke event.
pub const REVOKE: &str = "!revoke|";
/// How an entry starts: createdAt goes right after it.
const ENTRY_HEAD: &str = "{\"c\":";
/// Between createdAt and the change sequence.
const ENTRY_MID: &str = ",\"q\":";

/// The format pieces every script may use, as a Lua table `W` that
/// `store/redis/script.rs` puts in front of each script when it is loaded:
/// constants travel once, not with every call.
pub fn lua_constants() -> String {
    let pieces = [
        ("head", ENTRY_HEAD),
        ("mid", ENTRY_MID),
        ("field", ENTRY_FIELD),
        ("replaced", REPLACED_FIELD),
        ("unpersisted", UNPERSISTED),
        ("persisted", PERSISTED),
        ("sep", EVENT_SEP),
        ("prev_unknown", PREV_UNKNOWN),
    ];
    // Long brackets: no piece contains `]]`.
    let fields: Vec<String> = pieces.iter().map(|(k, v)| format!("{k} = [[{v}]]")).collect();
    format!("local W = {{ {} }}\n", fields.join(", "))
}

/// The JSON form of a message. Short names keep the hot path small.
#[derive(Serialize, Deserialize)]
struct Wire {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    c: Option<i64>,
    /// Change sequence; entries written before it existed use `c` (the
    /// same clock).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    q: Option<i64>,
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
    /// Version; absent means 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    v: Option<i32>,
    /// editedAt µs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    e: Option<i64>,
    /// deletedAt µs (a tombstone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    d: Option<i64>,
}

/// The JSON form of a replaced version.
#[derive(Serialize, Deserialize)]
struct WireVersion {
    v: i32,
    b: String,
    #[serde(default)]
    m: Option<serde_json::Value>,
    w: i64,
}

impl Wire {
    fn from_owned(m: Message) -> Self {
        Wire {
            c: Some(m.created_at.micros()),
            q: Some(m.change_seq),
            id: m.id,
            t: m.thread_id,
            r: m.role,
            b: m.content,
            m: m.metadata,
            k: m.client_message_id,
            a: m.author_id,
            v: (m.version != 1).then_some(m.version),
            e: m.edited_at.map(Timestamp::micros),
            d: m.deleted_at.map(Timestamp::micros),
        }
    }

    fn into_message(self, persisted: bool) -> Option<Message> {
        let created = self.c?;
        Some(Message {
            id: self.id,
            thread_id: self.t,
            role: self.r,
            content: self.b,
            metadata: self.m,
            client_message_id: self.k,
            author_id: self.a,
            created_at: Timestamp::from_micros(created),
            change_seq: self.q.unwrap_or(created),
            version: self.v.unwrap_or(1),
            edited_at: self.e.map(Timestamp::from_micros),
            deleted_at: self.d.map(Timestamp::from_micros),
            persisted,
        })
    }
}

/// A message cut where a script puts what it assigns: the entry is
/// `W.head` + createdAt + `W.mid` + change sequence + `tail`, the body the
/// unpersisted flag + entry. A save assigns createdAt too; a change keeps
/// the message's.
pub struct EntryParts {
    /// Everything after the change sequence (`W.head` and `W.mid` of
    /// [`lua_constants`] come before).
    pub tail: String,
}

impl EntryParts {
    /// The pieces of a new message's entry.
    pub fn of_new(m: &NewMessage) -> Result<Self, serde_json::Error> {
        Self::of(m.to_message(Timestamp::from_micros(0), 0))
    }

    /// The pieces of a changed message's entry.
    pub fn of_change(m: &Message) -> Result<Self, serde_json::Error> {
        Self::of(m.clone())
    }

    fn of(m: Message) -> Result<Self, serde_json::Error> {
        // createdAt and the change sequence are the script's to fill in.
        let wire = Wire { c: None, q: None, ..Wire::from_owned(m) };
        // `{"id":…}` without `c` and `q`: the tail is `,"id":…}`.
        let json = serde_json::to_string(&wire)?;
        Ok(EntryParts { tail: format!(",{}", &json[1..]) })
    }
}

/// The replaced version an edit's stream entry carries.
pub fn encode_version(v: &MessageVersion) -> Vec<u8> {
    let wire = WireVersion { v: v.version, b: v.content.clone(), m: v.metadata.clone(), w: v.written_at.micros() };
    // Serializing plain data into a Vec cannot fail.
    serde_json::to_vec(&wire).unwrap_or_default()
}

/// A replaced version back from a stream entry.
pub fn decode_version(raw: &[u8]) -> Option<MessageVersion> {
    let w: WireVersion = serde_json::from_slice(raw).ok()?;
    Some(MessageVersion { version: w.v, content: w.b, metadata: w.m, written_at: Timestamp::from_micros(w.w) })
}

/// A body: the persisted flag, then the entry.
pub fn encode_body(m: &Message, persisted: bool) -> Vec<u8> {
    let mut body = if persisted { PERSISTED } else { UNPERSISTED }.as_bytes().to_vec();
    // Serializing plain data into a Vec cannot fail.
    body.extend(serde_json::to_vec(&Wire::from_owned(m.clone())).unwrap_or_default());
    body
}

/// A stored body back into a message.
pub fn decode_body(raw: &[u8]) -> Option<Message> {
    let (flag, entry) = raw.split_first()?;
    serde_json::from_slice::<Wire>(entry).ok()?.into_message(*flag == PERSISTED.as_bytes()[0])
}

/// A persistence-stream entry back into a (not yet persisted) message.
pub fn decode_entry(entry: &[u8]) -> Option<Message> {
    serde_json::from_slice::<Wire>(entry).ok()?.into_message(false)
}

/// A pub/sub event, decoded.
#[derive(Debug)]
pub enum WireEvent {
    /// A message was saved; `prev` is the thread's previous createdAt µs
    /// when the script knew it.
    Saved {
        /// createdAt (µs) of the message before it.
        prev: Option<i64>,
        /// The message.
        message: Message,
    },
    /// `user` lost access to the thread.
    Revoked(String),
    /// Not readable (another version's format): subscribers re-read.
    Unreadable,
}

/// The revoke event for `user`.
pub fn encode_revoke(user: &str) -> String {
    format!("{REVOKE}{user}")
}

/// A pub/sub payload back into an event.
pub fn decode_event(payload: &[u8]) -> WireEvent {
    if let Some(user) = payload.strip_prefix(REVOKE.as_bytes()) {
        return match std::str::from_utf8(user) {
            Ok(user) => WireEvent::Revoked(user.to_owned()),
            Err(_) => WireEvent::Unreadable,
        };
    }
    let sep = EVENT_SEP.as_bytes()[0];
    let Some(at) = payload.iter().position(|b| *b == sep) else {
        return WireEvent::Unreadable;
    };
    let prev = std::str::from_utf8(&payload[..at]).ok().and_then(|s| s.parse().ok());
    match decode_body(&payload[at + 1..]) {
        Some(message) => WireEvent::Saved { prev, message },
        None => WireEvent::Unreadable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{ClientMessageId, Content, Metadata, ThreadId};

    fn new_message() -> NewMessage {
        NewMessage {
            id: MessageId::generate(),
            thread_id: ThreadId::parse("t1").unwrap(),
            role: Role::User,
            content: Content::parse("hi | \"there\"".into()).unwrap(),
            metadata: Some(Metadata::parse(serde_json::json!({"k": [1, "|"]})).unwrap()),
            client_message_id: Some(ClientMessageId::parse("key-1").unwrap()),
            author_id: Some("u1".into()),
        }
    }

    /// What the save script builds from the parts, as `lua/save.lua` does.
    fn as_script_would(parts: &EntryParts, ts: i64, prev: &str) -> (String, String, String) {
        let seq = ts + 5;
        let entry = format!("{ENTRY_HEAD}{ts}{ENTRY_MID}{seq}{}", parts.tail);
        let body = format!("{UNPERSISTED}{entry}");
        let event = format!("{prev}{EVENT_SEP}{body}");
        (entry, body, event)
    }

    #[test]
    fn the_script_pieces_decode_to_the_message_saved() {
        let new = new_message();
        let (entry, body, event) = as_script_would(&EntryParts::of_new(&new).unwrap(), 42, "41");
        let expected = new.to_message(Timestamp::from_micros(42), 47);
        assert_eq!(decode_entry(entry.as_bytes()), Some(expected.clone()));
        assert_eq!(decode_body(body.as_bytes()), Some(expected.clone()));
        match decode_event(event.as_bytes()) {
            WireEvent::Saved { prev, message } => assert_eq!((prev, message), (Some(41), expected)),
            other => panic!("{other:?}"),
        }
        let (_, _, unknown) = as_script_would(&EntryParts::of_new(&new).unwrap(), 42, PREV_UNKNOWN);
        assert!(matches!(decode_event(unknown.as_bytes()), WireEvent::Saved { prev: None, .. }));
    }

    #[test]
    fn bodies_round_trip_with_their_flag() {
        let m = new_message().to_message(Timestamp::from_micros(7), 9);
        for persisted in [false, true] {
            let decoded = decode_body(&encode_body(&m, persisted)).unwrap();
            assert_eq!(decoded.persisted, persisted);
            assert_eq!(Message { persisted: m.persisted, ..decoded }, m);
        }
    }

    #[test]
    fn the_lua_constants_hold_every_piece() {
        let lua = lua_constants();
        for piece in
            [ENTRY_HEAD, ENTRY_MID, ENTRY_FIELD, REPLACED_FIELD, UNPERSISTED, PERSISTED, EVENT_SEP, PREV_UNKNOWN]
        {
            assert!(!piece.contains("]]"), "{piece}");
            assert!(lua.contains(&format!("[[{piece}]]")), "{lua}");
        }
    }

    #[test]
    fn an_edited_message_and_its_replaced_version_round_trip() {
        let mut m = new_message().to_message(Timestamp::from_micros(7), 9);
        m.version = 3;
        m.edited_at = Some(Timestamp::from_micros(20));
        let parts = EntryParts::of_change(&m).unwrap();
        let entry = format!("{ENTRY_HEAD}7{ENTRY_MID}30{}", parts.tail);
        assert_eq!(decode_entry(entry.as_bytes()), Some(Message { change_seq: 30, ..m.clone() }));
        let old = MessageVersion::of(&new_message().to_message(Timestamp::from_micros(7), 9));
        assert_eq!(decode_version(&encode_version(&old)), Some(old));
    }

    #[test]
    fn revoke_and_garbage_events() {
        assert!(matches!(decode_event(encode_revoke("u|1").as_bytes()), WireEvent::Revoked(u) if u == "u|1"));
        assert!(matches!(decode_event(b"12|not json"), WireEvent::Unreadable));
        assert!(matches!(decode_event(b"no separator"), WireEvent::Unreadable));
    }
}
