//! The HTTP and GraphQL edges: media types (415, 406, the
//! `application/graphql-response+json` status rules), batches, the query
//! text limits (aliases, directives, length), introspection and the request
//! deadline. Each test fails if the protection it covers is removed.

use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::{error_code, Options, TestApp, SAVE};

const GRAPHQL_RESPONSE: &str = "application/graphql-response+json";

/// A save request body for thread `t-edge`.
fn save_body() -> String {
    json!({ "query": SAVE, "variables": { "input": { "threadId": "t-edge", "role": "USER", "content": "hi" } } })
        .to_string()
}

/// POSTs `body` with the given headers; returns status, content type and body text.
async fn post(app: &TestApp, headers: &[(&str, &str)], body: String) -> (u16, String, String) {
    let mut req = app.http.post(app.url()).body(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.expect("request sent");
    let status = resp.status().as_u16();
    let ct = resp.headers().get("content-type").and_then(|h| h.to_str().ok()).unwrap_or_default().to_owned();
    (status, ct, resp.text().await.expect("body"))
}

/// POSTs a JSON GraphQL request with `Accept: accept`.
async fn post_query(app: &TestApp, accept: &str, query: &str) -> (u16, String, Value) {
    let body = json!({ "query": query }).to_string();
    let (status, ct, text) = post(app, &[("content-type", "application/json"), ("accept", accept)], body).await;
    let v = serde_json::from_str(&text).unwrap_or_else(|e| panic!("JSON body expected ({e}): {text}"));
    (status, ct, v)
}

/// Thread and locator keys in Redis (none when nothing was saved).
fn redis_message_keys(app: &TestApp) -> usize {
    ["ts:{t-edge}:*", "ts:loc:*"]
        .iter()
        .map(|p| app.redis.cmd(&["KEYS", p]).as_array().map(<[_]>::len).expect("KEYS answers an array"))
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_json_bodies_are_415_and_store_nothing() {
    let app = TestApp::spawn().await;
    let cases: [(&str, Option<&str>); 4] = [
        ("text/plain", Some("text/plain")),
        ("form", Some("application/x-www-form-urlencoded")),
        ("multipart", Some("multipart/form-data; boundary=x")),
        ("no content type", None),
    ];
    for (what, ct) in cases {
        let headers: Vec<(&str, &str)> = ct.map(|c| ("content-type", c)).into_iter().collect();
        let (status, _, text) = post(&app, &headers, save_body()).await;
        assert_eq!(status, 415, "{what}: {text}");
    }
    // Give a save that slipped through time to reach PostgreSQL.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(redis_message_keys(&app), 0, "nothing reached Redis");
    assert_eq!(app.pg_count(None), 0, "nothing reached PostgreSQL");

    // The same body as application/json is saved (the test sends a real save).
    let (status, _, text) = post(&app, &[("content-type", "application/json")], save_body()).await;
    assert_eq!(status, 200, "{text}");
    assert!(!text.contains("\"errors\""), "{text}");
    assert!(redis_message_keys(&app) > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_negotiation_and_status_codes() {
    let app = TestApp::spawn().await;
    // Neither JSON type acceptable.
    let body = json!({ "query": "{ __typename }" }).to_string();
    let (status, _, text) =
        post(&app, &[("content-type", "application/json"), ("accept", "text/html")], body.clone()).await;
    assert_eq!(status, 406, "{text}");

    // application/graphql-response+json: request errors are 400 without `data`.
    let (status, ct, v) = post_query(&app, GRAPHQL_RESPONSE, "{ __typename").await;
    assert_eq!(status, 400, "parse error: {v}");
    assert!(ct.starts_with(GRAPHQL_RESPONSE), "content type {ct}");
    assert!(v.get("data").is_none(), "no data key on a request error: {v}");
    assert_eq!(error_code(&v), "GRAPHQL_PARSE_FAILED", "{v}");

    let (status, ct, v) = post_query(&app, GRAPHQL_RESPONSE, "{ thread(id: \"t\") { nope } }").await;
    assert_eq!(status, 400, "validation error: {v}");
    assert!(ct.starts_with(GRAPHQL_RESPONSE), "content type {ct}");
    assert!(v.get("data").is_none(), "{v}");
    assert_eq!(error_code(&v), "GRAPHQL_VALIDATION_FAILED", "{v}");

    let (status, ct, v) = post_query(&app, GRAPHQL_RESPONSE, "{ __typename }").await;
    assert_eq!(status, 200, "{v}");
    assert!(ct.starts_with(GRAPHQL_RESPONSE), "content type {ct}");
    assert_eq!(v["data"]["__typename"], "Query", "{v}");

    // application/json (and no Accept at all): 200 for a well-formed request.
    let (status, ct, v) = post_query(&app, "application/json", "{ __typename").await;
    assert_eq!(status, 200, "{v}");
    assert!(ct.starts_with("application/json"), "content type {ct}");
    assert_eq!(error_code(&v), "GRAPHQL_PARSE_FAILED", "{v}");
    let (status, ct, text) =
        post(&app, &[("content-type", "application/json")], json!({ "query": "{ x" }).to_string()).await;
    assert_eq!(status, 200, "{text}");
    assert!(ct.starts_with("application/json"), "content type {ct}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_are_refused() {
    let app = TestApp::spawn().await;
    let body = json!([{ "query": "{ __typename }" }, { "query": "{ __typename }" }]).to_string();
    let (status, _, text) = post(&app, &[("content-type", "application/json")], body).await;
    assert_eq!(status, 400, "{text}");
    let body =
        json!([{ "query": SAVE, "variables": { "input": { "threadId": "t-edge", "role": "USER", "content": "x" } } }]);
    let (status, _, text) = post(&app, &[("content-type", "application/json")], body.to_string()).await;
    assert_eq!(status, 400, "{text}");
    assert_eq!(redis_message_keys(&app), 0, "a batched save stored nothing");
}

/// `{ a0: __typename a1: __typename … }` with `n` aliases.
fn aliases(n: usize) -> String {
    let fields: Vec<String> = (0..n).map(|i| format!("a{i}: __typename")).collect();
    format!("{{ {} }}", fields.join(" "))
}

/// `n` copies of `__typename @include(if: true)`: one directive per field.
fn directives(n: usize) -> String {
    format!("{{ {} }}", vec!["__typename @include(if: true)"; n].join(" "))
}

/// A valid query of exactly `len` bytes (whitespace-padded).
fn padded(len: usize) -> String {
    let q = "{ __typename }";
    format!("{q}{}", " ".repeat(len - q.len()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_text_limits_are_query_too_complex() {
    let app =
        TestApp::spawn_with(Options { tweak: Box::new(|s| s.limits.max_query_bytes = 2000), ..Default::default() })
            .await;
    assert_eq!(app.settings.limits.max_aliases, 30);
    assert_eq!(app.settings.limits.max_directives, 10);

    let r = app.gql(&aliases(31), json!({})).await;
    assert_eq!(error_code(&r), "QUERY_TOO_COMPLEX", "31 aliases: {r}");
    let r = app.gql(&aliases(30), json!({})).await;
    assert!(r.get("errors").is_none(), "30 aliases: {r}");
    assert_eq!(r["data"]["a29"], "Query", "{r}");

    let r = app.gql(&directives(11), json!({})).await;
    assert_eq!(error_code(&r), "QUERY_TOO_COMPLEX", "11 directives: {r}");
    let r = app.gql(&directives(10), json!({})).await;
    assert!(r.get("errors").is_none(), "10 directives: {r}");
    assert_eq!(r["data"]["__typename"], "Query", "{r}");

    let r = app.gql(&padded(3000), json!({})).await;
    assert_eq!(error_code(&r), "QUERY_TOO_COMPLEX", "3000-byte query: {r}");
    let comment = format!("# {}\n{{ __typename }}", "x".repeat(3000));
    let r = app.gql(&comment, json!({})).await;
    assert_eq!(error_code(&r), "QUERY_TOO_COMPLEX", "a long comment: {r}");
    let r = app.gql(&padded(1990), json!({})).await;
    assert!(r.get("errors").is_none(), "1990-byte query: {r}");
    assert_eq!(r["data"]["__typename"], "Query", "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn introspection_can_be_turned_off() {
    let q = "{ __schema { queryType { name } } }";
    let app = TestApp::spawn().await;
    let r = app.gql(q, json!({})).await;
    assert_eq!(r["data"]["__schema"]["queryType"]["name"], "Query", "on by default: {r}");

    let app =
        TestApp::spawn_with(Options { tweak: Box::new(|s| s.limits.introspection = false), ..Default::default() })
            .await;
    let r = app.gql(q, json!({})).await;
    assert!(r["data"]["__schema"].is_null() || r.get("errors").is_some(), "introspection served: {r}");
    assert!(r["data"]["__schema"]["queryType"]["name"].is_null(), "schema leaked: {r}");
    // Ordinary queries still work.
    let r = app.gql("{ __typename }", json!({})).await;
    assert_eq!(r["data"]["__typename"], "Query", "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_past_its_deadline_is_408() {
    let app = TestApp::spawn_with(Options {
        redis_proxy: true,
        pg_proxy: true,
        tweak: Box::new(|s| {
            s.limits.request_timeout_ms = 300;
            s.redis.force_failover = true;
        }),
        ..Default::default()
    })
    .await;
    app.pg_proxy.as_ref().expect("pg proxy").blackhole(true);
    let resp = app
        .http
        .post(app.url())
        .timeout(Duration::from_secs(15))
        .header("content-type", "application/json")
        .body(save_body())
        .send()
        .await
        .expect("an answer before the client gives up");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    assert_eq!(status, 408, "{text}");
    app.pg_proxy.as_ref().expect("pg proxy").heal();
}

/// Thousands of nested brackets in an argument would overflow the parser's
/// stack (it recurses on values without a limit) and abort the process.
#[tokio::test]
async fn deeply_nested_values_are_refused_and_the_server_survives() {
    let app = TestApp::spawn().await;
    let deep =
        format!("{{ thread(id: \"t\") {{ messages(limit: {}1{}) {{ id }} }} }}", "[".repeat(3000), "]".repeat(3000));
    let (status, _, body) = post_query(&app, "application/json", &deep).await;
    assert_eq!((status, error_code(&body).as_str()), (200, "QUERY_TOO_COMPLEX"), "{body}");
    let url = reqwest::Url::parse_with_params(&format!("http://{}/graphql", app.addr), [("query", deep.as_str())])
        .expect("url");
    let get = app.http.get(url).send().await.expect("GET still answered");
    assert!(get.status().is_success() || get.status().is_client_error(), "{}", get.status());
    let (status, _, body) = post_query(&app, "application/json", "{ thread(id: \"t\") { messageCount } }").await;
    assert_eq!((status, &body["data"]["thread"]["messageCount"]), (200, &json!(0)), "still serving: {body}");
}
