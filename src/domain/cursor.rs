//! Opaque pagination cursors.
//!
//! A cursor encodes a message's position in its thread, `(createdAt, id)`,
//! so it is a stable function of the message: the same message yields the
//! same cursor from every resolver and tier. `id` breaks ties only across a
//! failover transition, where two tiers may have assigned the same microsecond.

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use uuid::Uuid;

use super::{MessageId, Timestamp, ValidationError};

/// The total order of messages within a thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OrderKey {
    /// Primary key: creation time.
    pub created_at: Timestamp,
    /// Tie-breaker.
    pub id: MessageId,
}

/// A decoded cursor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor(pub OrderKey);

impl Cursor {
    /// Encodes as the opaque string clients see.
    pub fn encode(&self) -> String {
        let raw = format!("v1:{}:{}", self.0.created_at.micros(), self.0.id.as_uuid().simple());
        URL_SAFE_NO_PAD.encode(raw)
    }

    /// Decodes a client-supplied cursor.
    pub fn decode(s: &str) -> Result<Self, ValidationError> {
        let bad = || ValidationError { field: "cursor", reason: "is not a cursor this service issued".into() };
        if s.len() > 128 {
            return Err(bad());
        }
        let raw = URL_SAFE_NO_PAD.decode(s).map_err(|_| bad())?;
        let raw = std::str::from_utf8(&raw).map_err(|_| bad())?;
        let mut parts = raw.splitn(3, ':');
        if parts.next() != Some("v1") {
            return Err(bad());
        }
        let micros: i64 = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
        let id = parts.next().and_then(|p| Uuid::try_parse(p).ok()).ok_or_else(bad)?;
        Ok(Self(OrderKey { created_at: Timestamp::from_micros(micros), id: MessageId::from_uuid(id) }))
    }
}

/// A position in a thread's change feed: a change sequence number
/// (`Thread.eventCursor`, `threadEvents(after:)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct EventCursor(pub i64);

impl EventCursor {
    /// Encodes as the opaque string clients see.
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!("e1:{}", self.0))
    }

    /// Decodes a client-supplied event cursor.
    pub fn decode(s: &str) -> Result<Self, ValidationError> {
        let bad = || ValidationError { field: "after", reason: "is not an event cursor this service issued".into() };
        if s.len() > 64 {
            return Err(bad());
        }
        let raw = URL_SAFE_NO_PAD.decode(s).map_err(|_| bad())?;
        let raw = std::str::from_utf8(&raw).map_err(|_| bad())?;
        let seq = raw.strip_prefix("e1:").and_then(|n| n.parse().ok()).filter(|n: &i64| *n >= 0).ok_or_else(bad)?;
        Ok(Self(seq))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_cursors_round_trip_and_reject_garbage() {
        for seq in [0, 1, 1_700_000_000_000_001, i64::MAX] {
            assert_eq!(EventCursor::decode(&EventCursor(seq).encode()), Ok(EventCursor(seq)));
        }
        assert!(EventCursor::decode("").is_err());
        assert!(EventCursor::decode(&URL_SAFE_NO_PAD.encode("e1:-1")).is_err());
        assert!(EventCursor::decode(&URL_SAFE_NO_PAD.encode("e1:x")).is_err());
        // A message cursor is not an event cursor.
        let key = OrderKey { created_at: Timestamp::from_micros(5), id: MessageId::generate() };
        assert!(EventCursor::decode(&Cursor(key).encode()).is_err());
    }

    #[test]
    fn round_trips_and_rejects_garbage() {
        let key = OrderKey { created_at: Timestamp::from_micros(1_700_000_000_000_001), id: MessageId::generate() };
        let c = Cursor(key);
        assert_eq!(Cursor::decode(&c.encode()), Ok(c));
        assert!(Cursor::decode("").is_err());
        assert!(Cursor::decode("!!!").is_err());
        assert!(Cursor::decode(&URL_SAFE_NO_PAD.encode("v2:1:x")).is_err());
    }
}
