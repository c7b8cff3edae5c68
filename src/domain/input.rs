//! Parsers for client input, with the limits of SPEC §3.

use serde_json::Value;

/// Why a piece of input was rejected; its text is safe to show to clients.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("{field}: {reason}")]
pub struct ValidationError {
    /// The input field, as the API names it.
    pub field: &'static str,
    /// A short human explanation.
    pub reason: String,
}

fn invalid(field: &'static str, reason: impl Into<String>) -> ValidationError {
    ValidationError { field, reason: reason.into() }
}

/// A client-chosen thread id: 1-128 chars of `[A-Za-z0-9._:-]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ThreadId(String);

impl ThreadId {
    /// Parses a thread id.
    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-');
        if s.is_empty() || s.len() > 128 {
            return Err(invalid("threadId", "must be 1-128 characters"));
        }
        if !s.chars().all(ok_char) {
            return Err(invalid("threadId", "may only contain A-Z a-z 0-9 . _ : -"));
        }
        Ok(Self(s.to_owned()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for ThreadId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Message text: 1..=32768 UTF-8 bytes, stored byte-exact; no control
/// characters (Unicode Cc) except tab, newline and carriage return.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Content(String);

/// Largest accepted content, in UTF-8 bytes.
pub const MAX_CONTENT_BYTES: usize = 32 * 1024;

impl Content {
    /// Parses message content.
    pub fn parse(s: String) -> Result<Self, ValidationError> {
        if s.is_empty() || s.len() > MAX_CONTENT_BYTES {
            return Err(invalid("content", "must be 1-32768 bytes of UTF-8"));
        }
        if s.chars().any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r')) {
            return Err(invalid("content", "must not contain control characters other than tab, LF, CR"));
        }
        Ok(Self(s))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Message metadata: a JSON object, compact form at most 16 KiB, nesting
/// depth at most 8, and no U+0000 anywhere (PostgreSQL `jsonb` rejects it).
#[derive(Debug, Clone, PartialEq)]
pub struct Metadata(Value);

/// Largest accepted metadata, compact JSON bytes.
pub const MAX_METADATA_BYTES: usize = 16 * 1024;
/// Deepest accepted metadata nesting; the top-level object is depth 1.
pub const MAX_METADATA_DEPTH: usize = 8;

impl Metadata {
    /// Parses metadata.
    pub fn parse(v: Value) -> Result<Self, ValidationError> {
        if !v.is_object() {
            return Err(invalid("metadata", "must be a JSON object"));
        }
        if depth(&v) > MAX_METADATA_DEPTH {
            return Err(invalid("metadata", "nesting deeper than 8 levels"));
        }
        if has_nul(&v) {
            return Err(invalid("metadata", "strings must not contain U+0000"));
        }
        let size = serde_json::to_vec(&v).map(|b| b.len()).unwrap_or(usize::MAX);
        if size > MAX_METADATA_BYTES {
            return Err(invalid("metadata", "larger than 16384 bytes serialised"));
        }
        Ok(Self(v))
    }

    /// The JSON value (always an object).
    pub fn as_value(&self) -> &Value {
        &self.0
    }
}

fn depth(v: &Value) -> usize {
    match v {
        Value::Object(m) => 1 + m.values().map(depth).max().unwrap_or(0),
        Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

fn has_nul(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains('\0'),
        Value::Object(m) => m.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        Value::Array(a) => a.iter().any(has_nul),
        _ => false,
    }
}

/// An idempotency key: 1-128 characters of printable ASCII `!`..=`~`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientMessageId(String);

impl ClientMessageId {
    /// Parses an idempotency key.
    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        if s.is_empty() || s.len() > 128 || !s.bytes().all(|b| (b'!'..=b'~').contains(&b)) {
            return Err(invalid("clientMessageId", "must be 1-128 printable ASCII characters without spaces"));
        }
        Ok(Self(s.to_owned()))
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A principal id (a token's `sub`) named by a client, e.g. to add a
/// member: 1-256 bytes of UTF-8, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UserId(String);

impl UserId {
    /// Parses a user id.
    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        if s.is_empty() || s.len() > 256 || s.chars().any(char::is_control) {
            return Err(invalid("userId", "must be 1-256 characters without control characters"));
        }
        Ok(Self(s.to_owned()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn thread_id_limits() {
        assert!(ThreadId::parse("a").is_ok());
        assert!(ThreadId::parse(&"a".repeat(128)).is_ok());
        assert!(ThreadId::parse(&"a".repeat(129)).is_err());
        assert!(ThreadId::parse("").is_err());
        assert!(ThreadId::parse("room 1").is_err());
        assert!(ThreadId::parse("Az09._:-").is_ok());
    }

    #[test]
    fn content_limits_count_bytes() {
        assert!(Content::parse("é".repeat(16384)).is_ok());
        assert!(Content::parse("é".repeat(16385)).is_err());
        assert!(Content::parse(String::new()).is_err());
        assert!(Content::parse("a\tb\nc\r".into()).is_ok());
        assert!(Content::parse("a\u{0}".into()).is_err());
        assert!(Content::parse("a\u{7f}".into()).is_err());
        assert!(Content::parse("a\u{85}".into()).is_err());
        assert_eq!(Content::parse("  x  ".into()).map(|c| c.0), Ok("  x  ".to_string()));
    }

    #[test]
    fn metadata_depth_and_size() {
        let mut eight = json!({});
        for _ in 0..7 {
            eight = json!({ "a": eight });
        }
        assert!(Metadata::parse(eight.clone()).is_ok());
        assert!(Metadata::parse(json!({ "a": eight })).is_err());
        assert!(Metadata::parse(json!([1])).is_err());
        assert!(Metadata::parse(json!({ "a": "x\u{0}" })).is_err());
        assert!(Metadata::parse(json!({ "a": "x".repeat(16_384 - 8) })).is_ok());
        assert!(Metadata::parse(json!({ "a": "x".repeat(16_384 - 7) })).is_err());
    }

    #[test]
    fn client_message_id_limits() {
        assert!(ClientMessageId::parse("abc-123!~").is_ok());
        assert!(ClientMessageId::parse("a b").is_err());
        assert!(ClientMessageId::parse("").is_err());
        assert!(ClientMessageId::parse(&"k".repeat(129)).is_err());
        assert!(ClientMessageId::parse("é").is_err());
    }
}
