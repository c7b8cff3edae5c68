//! The request parsing done at the edge before any resolver runs: the POST
//! body as a GraphQL request (what async-graphql-axum's extractor does), its
//! query document, the GET query string, and the domain validators on every
//! string a client can send (the raw input and every string in variables).

#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use threadstore::domain::{ClientMessageId, Content, Cursor, Metadata, ThreadId, UserId};

/// What the service does with a query text: the nesting guard first (the
/// parser recurses without a limit), then the parser.
fn parse(query: &str) {
    if threadstore::graphql::shape::nesting_ok(query) {
        let _ = async_graphql::parser::parse_query(query);
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = serde_json::from_slice::<async_graphql::Request>(data) {
        parse(&req.query);
        if let Ok(vars) = serde_json::to_value(&req.variables) {
            validate_json(&vars);
        }
    }
    let _ = serde_json::from_slice::<async_graphql::BatchRequest>(data);
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(req) = async_graphql::http::parse_query_string(s) {
            parse(&req.query);
        }
        validate_str(s);
    }
});

fn validate_str(s: &str) {
    if let Ok(c) = Content::parse(s.to_owned()) {
        assert_eq!(c.as_str(), s, "content must be stored byte-exact");
    }
    let _ = ThreadId::parse(s);
    let _ = ClientMessageId::parse(s);
    let _ = UserId::parse(s);
    let _ = Cursor::decode(s);
}

fn validate_json(v: &Value) {
    let _ = Metadata::parse(v.clone());
    match v {
        Value::String(s) => validate_str(s),
        Value::Array(a) => a.iter().for_each(validate_json),
        Value::Object(m) => m.iter().for_each(|(k, v)| {
            validate_str(k);
            validate_json(v);
        }),
        _ => {}
    }
}
