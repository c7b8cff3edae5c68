//! The request handling done at the edge: the POST body as a GraphQL
//! request (what async-graphql-axum's extractor does), the GET query string,
//! the document through the service's admission (length, nesting guard,
//! parser, cost measure) and then async-graphql's validation and execution
//! against the service's schema, and the domain validators on every string
//! a client can send (the raw input and every string in variables).

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use threadstore::config::Settings;
use threadstore::domain::{ClientMessageId, Content, Cursor, Metadata, ThreadId, UserId};
use threadstore::graphql::{Api, AppSchema, QueryLimits};

/// The service's default limits and its schema without data: documents
/// validate exactly as in the service, and resolvers fail cleanly.
fn service() -> &'static (QueryLimits, AppSchema) {
    static SERVICE: OnceLock<(QueryLimits, AppSchema)> = OnceLock::new();
    SERVICE.get_or_init(|| {
        let settings = Settings::from_env().expect("default settings");
        (QueryLimits::from(&settings.limits), threadstore::graphql::unwired(&settings.limits))
    })
}

/// What the service does with a query text: the length limit, the guard
/// before the parser, the parser, the linear cost measure and its limits,
/// then validation and execution. Run with `-timeout=2`, so an input that
/// makes any phase slow (super-linear) is a failure, not just one that
/// crashes.
fn run(mut request: async_graphql::Request) {
    let (limits, schema) = service();
    if request.query.len() > limits.max_bytes {
        return;
    }
    if let Ok((doc, _cost)) = Api::check(&request.query, *limits) {
        request.set_parsed_query(doc);
        let _ = futures::executor::block_on(schema.execute(request));
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = serde_json::from_slice::<async_graphql::Request>(data) {
        if let Ok(vars) = serde_json::to_value(&req.variables) {
            validate_json(&vars);
        }
        run(req);
    }
    let _ = serde_json::from_slice::<async_graphql::BatchRequest>(data);
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(req) = async_graphql::http::parse_query_string(s) {
            run(req);
        }
        // The text itself as a document, the commonest shape of input.
        run(async_graphql::Request::new(s));
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
