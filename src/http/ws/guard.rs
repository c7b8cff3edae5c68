//! The `graphql-transport-ws` rules async-graphql does not enforce itself,
//! checked on every client message before it reaches the protocol engine:
//!
//! | client did | close code |
//! | --- | --- |
//! | no `connection_init` in time | 4408 (see `ws.rs`) |
//! | a second `connection_init` | 4429 |
//! | `subscribe` before `connection_ack` | 4401 |
//! | `subscribe` with an id already running | 4409 |
//! | a message that is not one of the protocol's | 4400 |
//! | a token that does not verify | 4403 (see `ws.rs`) |
//!
//! More than `max_subscriptions` at once on one connection gets an `error`
//! message for the extra one (the connection stays up). The legacy
//! `graphql-ws` protocol only gets the init, token and cap checks.

use std::collections::HashSet;

use serde_json::Value;

/// What to do with one client message.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Pass it on to the protocol engine.
    Forward,
    /// `connection_init`: authenticate with this payload, then pass it on.
    Init(Value),
    /// Answer with this message instead (the connection stays up).
    Reply(String),
    /// Close the connection.
    Close(u16, &'static str),
}

/// Per-connection protocol state.
pub struct Guard {
    legacy: bool,
    initialised: bool,
    max_subscriptions: usize,
    running: HashSet<String>,
}

impl Guard {
    /// A fresh connection (`legacy`: the `graphql-ws` subprotocol).
    pub fn new(legacy: bool, max_subscriptions: usize) -> Self {
        Self { legacy, initialised: false, max_subscriptions, running: HashSet::new() }
    }

    /// Whether `connection_init` was accepted.
    pub fn initialised(&self) -> bool {
        self.initialised
    }

    /// Marks the connection initialised (after the token verified).
    pub fn accept_init(&mut self) {
        self.initialised = true;
    }

    /// Checks one text message from the client.
    pub fn client(&mut self, text: &str) -> Verdict {
        let Ok(msg) = serde_json::from_str::<Value>(text) else {
            return Verdict::Close(4400, "Invalid message");
        };
        let kind = msg.get("type").and_then(Value::as_str).unwrap_or_default();
        let id = msg.get("id").and_then(Value::as_str);
        match kind {
            "connection_init" if self.initialised => Verdict::Close(4429, "Too many initialisation requests"),
            "connection_init" => Verdict::Init(msg.get("payload").cloned().unwrap_or(Value::Null)),
            "ping" | "pong" if !self.legacy => Verdict::Forward,
            "subscribe" | "start" if !self.initialised => Verdict::Close(4401, "Unauthorized"),
            "subscribe" | "start" => {
                let Some(id) = id.filter(|id| !id.is_empty() && id.len() <= 128) else {
                    return Verdict::Close(4400, "Invalid message");
                };
                if msg.get("payload").and_then(|p| p.get("query")).and_then(Value::as_str).is_none() {
                    return Verdict::Close(4400, "Invalid message");
                }
                if self.running.contains(id) {
                    return if self.legacy {
                        Verdict::Forward
                    } else {
                        Verdict::Close(4409, "Subscriber already exists")
                    };
                }
                if self.running.len() >= self.max_subscriptions {
                    return Verdict::Reply(too_many(id));
                }
                self.running.insert(id.to_owned());
                Verdict::Forward
            }
            "complete" | "stop" => {
                if let Some(id) = id {
                    self.running.remove(id);
                }
                Verdict::Forward
            }
            "connection_terminate" if self.legacy => Verdict::Forward,
            _ => Verdict::Close(4400, "Invalid message"),
        }
    }

    /// Sees one message the server sends: a finished subscription frees its id.
    pub fn server(&mut self, text: &str) {
        if !(text.contains("\"complete\"") || text.contains("\"error\"")) {
            return; // the common case, `next` / `data`, without parsing
        }
        if let Ok(msg) = serde_json::from_str::<Value>(text) {
            let kind = msg.get("type").and_then(Value::as_str);
            if matches!(kind, Some("complete" | "error")) {
                if let Some(id) = msg.get("id").and_then(Value::as_str) {
                    self.running.remove(id);
                }
            }
        }
    }
}

/// The `error` message refusing one subscription (both protocols call it that).
fn too_many(id: &str) -> String {
    let error = serde_json::json!([{
        "message": "too many subscriptions on this connection",
        "extensions": { "code": crate::error::code::RATE_LIMITED }
    }]);
    serde_json::json!({ "id": id, "type": "error", "payload": error }).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub(id: &str) -> String {
        serde_json::json!({"id": id, "type": "subscribe", "payload": {"query": "subscription { x }"}}).to_string()
    }

    #[test]
    fn enforces_the_protocol_rules() {
        let mut g = Guard::new(false, 2);
        assert_eq!(g.client(&sub("1")), Verdict::Close(4401, "Unauthorized"));
        assert!(matches!(g.client(r#"{"type":"connection_init","payload":{"token":"t"}}"#), Verdict::Init(_)));
        g.accept_init();
        assert_eq!(g.client(r#"{"type":"connection_init"}"#), Verdict::Close(4429, "Too many initialisation requests"));
        assert_eq!(g.client(&sub("1")), Verdict::Forward);
        assert_eq!(g.client(&sub("1")), Verdict::Close(4409, "Subscriber already exists"));
        assert_eq!(g.client(&sub("2")), Verdict::Forward);
        assert!(matches!(g.client(&sub("3")), Verdict::Reply(r) if r.contains("RATE_LIMITED")));
        g.server(r#"{"id":"1","type":"complete"}"#);
        assert_eq!(g.client(&sub("1")), Verdict::Forward, "a completed id may be reused");
        assert_eq!(g.client("not json"), Verdict::Close(4400, "Invalid message"));
        assert_eq!(g.client(r#"{"type":"bogus"}"#), Verdict::Close(4400, "Invalid message"));
        assert_eq!(g.client(r#"{"id":"9","type":"subscribe"}"#), Verdict::Close(4400, "Invalid message"));
    }
}
