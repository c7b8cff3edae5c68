//! Invariant 7: bad input gets a GraphQL error with `extensions.code`, and
//! nothing is stored in either tier. One case per limit of SPEC §3.

use serde_json::{json, Value};

use crate::helpers::{error_code, Options, TestApp};

fn nested(depth: usize) -> Value {
    let mut v = json!({});
    for _ in 1..depth {
        v = json!({ "a": v });
    }
    v
}

fn base() -> Value {
    json!({ "threadId": "t-bad", "role": "USER", "content": "ok" })
}

fn with(field: &str, value: Value) -> Value {
    let mut input = base();
    input[field] = value;
    input
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_invalid_save_is_rejected_and_nothing_is_stored() {
    let app = TestApp::spawn().await;
    let cases: Vec<(&str, Value)> = vec![
        ("empty thread id", with("threadId", json!(""))),
        ("thread id too long", with("threadId", json!("a".repeat(129)))),
        ("thread id with space", with("threadId", json!("a b"))),
        ("thread id with slash", with("threadId", json!("a/b"))),
        ("empty content", with("content", json!(""))),
        ("content over 32768 bytes", with("content", json!("é".repeat(16_385)))),
        ("content with NUL", with("content", json!("a\u{0}b"))),
        ("content with ESC", with("content", json!("a\u{1b}[31m"))),
        ("content with DEL", with("content", json!("a\u{7f}"))),
        ("content with C1 control", with("content", json!("a\u{85}"))),
        ("metadata not an object", with("metadata", json!([1, 2]))),
        ("metadata a string", with("metadata", json!("x"))),
        ("metadata depth 9", with("metadata", nested(9))),
        ("metadata over 16 KiB", with("metadata", json!({ "a": "x".repeat(16_384) }))),
        ("metadata with NUL", with("metadata", json!({ "a": "x\u{0}" }))),
        ("metadata key with NUL", with("metadata", json!({ "a\u{0}": 1 }))),
        ("empty client id", with("clientMessageId", json!(""))),
        ("client id with space", with("clientMessageId", json!("a b"))),
        ("client id too long", with("clientMessageId", json!("k".repeat(129)))),
        ("client id non-ASCII", with("clientMessageId", json!("clé"))),
        ("unknown role", with("role", json!("ROBOT"))),
        ("role of wrong type", with("role", json!(3))),
        ("content of wrong type", with("content", json!(7))),
        ("missing content", json!({ "threadId": "t", "role": "USER" })),
        ("unknown input field", with("author", json!("me"))),
    ];
    for (what, input) in cases {
        let r = app.try_save(input).await;
        assert_eq!(error_code(&r), "BAD_USER_INPUT", "{what}: {r}");
        assert!(r["data"].is_null() || r["data"]["saveMessage"].is_null(), "{what}: {r}");
    }
    // The boundaries themselves are accepted.
    app.save_input(with("content", json!("é".repeat(16_384)))).await;
    app.save_input(with("metadata", nested(8))).await;
    app.save_input(with("threadId", json!("A".repeat(128)))).await;
    app.save_input(with("clientMessageId", json!("~".repeat(128)))).await;

    app.wait_drained(std::time::Duration::from_secs(10)).await;
    assert_eq!(app.pg_count(None), 4, "only the four valid saves reached PostgreSQL");
    let threads = app.redis.cmd(&["KEYS", "ts:{t-bad}:m:*"]);
    assert_eq!(threads.as_array().map(<[_]>::len), Some(3), "only valid saves reached Redis");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_read_arguments_are_bad_user_input() {
    let app = TestApp::spawn().await;
    let cases = [
        "{ thread(id: \"t\") { messages(limit: 0) { id } } }",
        "{ thread(id: \"t\") { messages(limit: 201) { id } } }",
        "{ thread(id: \"t\") { messages(offset: -1) { id } } }",
        "{ thread(id: \"t\") { messages(offset: 100001) { id } } }",
        "{ thread(id: \"t\") { messages(order: SIDEWAYS) { id } } }",
        "{ thread(id: \"t\") { messageConnection(first: 0) { edges { cursor } } } }",
        "{ thread(id: \"t\") { messageConnection(last: 201) { edges { cursor } } } }",
        "{ thread(id: \"t\") { messageConnection(first: 1, last: 1) { edges { cursor } } } }",
        "{ thread(id: \"t\") { messageConnection(first: 5, after: \"bm90LWEtY3Vyc29y\") { edges { cursor } } } }",
        "{ thread(id: \"t\") { messageConnection(last: 5, before: \"%%%\") { edges { cursor } } } }",
        "{ thread(id: \"bad id\") { messageCount } }",
        "{ message(id: \"not-a-uuid\") { id } }",
    ];
    for q in cases {
        let r = app.gql(q, json!({})).await;
        assert_eq!(error_code(&r), "BAD_USER_INPUT", "{q}: {r}");
    }
    let r = app
        .gql("query($o: MessageOrder!) { thread(id: \"t\") { messages(order: $o) { id } } }", json!({ "o": "NOPE" }))
        .await;
    assert_eq!(error_code(&r), "BAD_USER_INPUT", "unknown enum in a variable: {r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversized_queries_get_their_codes() {
    let app = TestApp::spawn().await;
    let r = app.gql("{ thread(id: \"t\") { messages { id }", json!({})).await;
    assert_eq!(error_code(&r), "GRAPHQL_PARSE_FAILED", "{r}");
    let r = app.gql("{ thread(id: \"t\") { nope } }", json!({})).await;
    assert_eq!(error_code(&r), "GRAPHQL_VALIDATION_FAILED", "{r}");
    let r = app.gql("mutation { saveMessage { id } }", json!({})).await;
    let code = error_code(&r);
    assert!(code == "GRAPHQL_VALIDATION_FAILED" || code == "BAD_USER_INPUT", "{r}");

    // Deeper than 16 levels.
    let q = format!(
        "{{ __schema {{ types {{ fields {{ type {{ {} name {} }} }} }} }} }}",
        "ofType { ".repeat(20),
        "}".repeat(20)
    );
    let r = app.gql(&q, json!({})).await;
    assert_eq!(error_code(&r), "QUERY_TOO_COMPLEX", "{r}");

    // GraphiQL's introspection query fits the depth limit.
    let r = app.gql(INTROSPECTION, json!({})).await;
    assert!(r.get("errors").is_none(), "introspection must work: {r}");
    assert!(r["data"]["__schema"]["types"].as_array().is_some_and(|t| !t.is_empty()));
}

#[tokio::test]
async fn an_oversized_body_is_413_and_stores_nothing() {
    // A small limit, so the whole body fits in the socket buffers: the
    // server answers before reading it, and a client still writing a
    // multi-megabyte body could see a broken pipe instead of the answer.
    let app =
        TestApp::spawn_with(Options { tweak: Box::new(|s| s.limits.max_body_bytes = 16 * 1024), ..Options::default() })
            .await;
    let huge = "x".repeat(64 * 1024);
    let resp = app
        .http
        .post(app.url())
        .json(&json!({ "query": "{ __typename }", "variables": { "pad": huge } }))
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), 413);
    assert_eq!(app.pg_count(None), 0);
}

const INTROSPECTION: &str = r#"query IntrospectionQuery {
  __schema {
    queryType { name } mutationType { name } subscriptionType { name }
    types { ...FullType }
    directives { name description locations args { ...InputValue } }
  }
}
fragment FullType on __Type {
  kind name description
  fields(includeDeprecated: true) { name description args { ...InputValue } type { ...TypeRef } isDeprecated deprecationReason }
  inputFields { ...InputValue }
  interfaces { ...TypeRef }
  enumValues(includeDeprecated: true) { name description isDeprecated deprecationReason }
  possibleTypes { ...TypeRef }
}
fragment InputValue on __InputValue { name description type { ...TypeRef } defaultValue }
fragment TypeRef on __Type {
  kind name
  ofType { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name } } } } } } }
}"#;
