//! Optional arguments as real clients send them (SPEC §3): every optional
//! argument of the schema left out, `null`, and given, through variables
//! and through literals, takes its default when not given; random
//! malformed variables never get `INTERNAL_SERVER_ERROR`; and a real
//! Apollo Client (`tests/clients/apollo.mjs`) pages, saves and subscribes
//! with the variables its code generator would declare.

use std::{path::Path, process::Stdio, time::Duration};

use rand::{rngs::StdRng, Rng, SeedableRng};
use serde_json::{json, Value};

use crate::helpers::{error_code, TestApp, WsClient, WsProtocol};

const PAGE: &str = "query Page($id: ID!, $limit: Int, $offset: Int, $order: MessageOrder) {
    thread(id: $id) { messages(limit: $limit, offset: $offset, order: $order) { content } } }";
const CONNECTION: &str = "query Conn($id: ID!, $first: Int, $after: String, $last: Int, $before: String) {
    thread(id: $id) { messageConnection(first: $first, after: $after, last: $last, before: $before) {
      edges { node { content } } pageInfo { hasNextPage hasPreviousPage } } } }";
const SAVE: &str = "mutation Save($t: ID!, $c: String!, $m: JSON, $k: String) {
    saveMessage(input: { threadId: $t, role: USER, content: $c, metadata: $m, clientMessageId: $k }) { content metadata clientMessageId } }";

fn contents(r: &Value, path: &[&str]) -> Vec<String> {
    let mut v = &r["data"];
    for p in path {
        v = &v[*p];
    }
    let items = v.as_array().unwrap_or_else(|| panic!("no list at {path:?}: {r}"));
    items
        .iter()
        .map(|m| m["content"].as_str().or(m["node"]["content"].as_str()).unwrap_or_default().to_owned())
        .collect()
}

async fn seeded(thread: &str, n: usize) -> TestApp {
    let app = TestApp::spawn().await;
    for i in 0..n {
        app.save(thread, &format!("m{i}")).await;
    }
    app
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_optional_argument_omitted_null_or_given() {
    let app = seeded("opt", 60).await;
    let first50: Vec<String> = (0..50).map(|i| format!("m{i}")).collect();
    let page = |vars: Value| {
        let app = &app;
        async move {
            let r = app.gql(PAGE, vars).await;
            assert!(r.get("errors").is_none(), "{r}");
            contents(&r, &["thread", "messages"])
        }
    };
    // messages: omitted, null, given — through variables.
    assert_eq!(page(json!({ "id": "opt" })).await, first50);
    assert_eq!(page(json!({ "id": "opt", "limit": null, "offset": null, "order": null })).await, first50);
    assert_eq!(page(json!({ "id": "opt", "limit": 2, "offset": 1, "order": "NEWEST_FIRST" })).await, ["m58", "m57"]);
    assert_eq!(page(json!({ "id": "opt", "order": "NEWEST_FIRST" })).await.len(), 50);
    // … and through literals.
    for literal in [
        "{ thread(id: \"opt\") { messages { content } } }",
        "{ thread(id: \"opt\") { messages(limit: null, offset: null, order: null) { content } } }",
    ] {
        let r = app.gql(literal, json!({})).await;
        assert_eq!(contents(&r, &["thread", "messages"]), first50, "{literal}");
    }
    let r = app.gql("{ thread(id: \"opt\") { messages(limit: 1, offset: 59) { content } } }", json!({})).await;
    assert_eq!(contents(&r, &["thread", "messages"]), ["m59"]);

    // messageConnection: every argument omitted or null is the first 50.
    for vars in
        [json!({ "id": "opt" }), json!({ "id": "opt", "first": null, "after": null, "last": null, "before": null })]
    {
        let r = app.gql(CONNECTION, vars.clone()).await;
        assert!(r.get("errors").is_none(), "{vars}: {r}");
        assert_eq!(contents(&r, &["thread", "messageConnection", "edges"]), first50, "{vars}");
        assert_eq!(r["data"]["thread"]["messageConnection"]["pageInfo"]["hasNextPage"], true);
    }
    let r = app.gql(CONNECTION, json!({ "id": "opt", "last": 2 })).await;
    assert_eq!(contents(&r, &["thread", "messageConnection", "edges"]), ["m58", "m59"]);
    let r = app.gql("{ thread(id: \"opt\") { messageConnection { edges { node { content } } } } }", json!({})).await;
    assert_eq!(contents(&r, &["thread", "messageConnection", "edges"]).len(), 50);

    // MessageCreate's optional fields: omitted, null, given.
    for (vars, metadata, key) in [
        (json!({ "t": "opt2", "c": "a" }), Value::Null, Value::Null),
        (json!({ "t": "opt2", "c": "b", "m": null, "k": null }), Value::Null, Value::Null),
        (json!({ "t": "opt2", "c": "c", "m": { "x": 1 }, "k": "key-c" }), json!({ "x": 1 }), json!("key-c")),
    ] {
        let r = app.gql(SAVE, vars.clone()).await;
        assert!(r.get("errors").is_none(), "{vars}: {r}");
        assert_eq!(r["data"]["saveMessage"]["metadata"], metadata);
        assert_eq!(r["data"]["saveMessage"]["clientMessageId"], key);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_saved_after_omitted_null_or_given() {
    let app = seeded("opt-sub", 3).await;
    let all = app.all_messages("opt-sub").await;
    let q = "subscription S($t: ID!, $after: String) { messageSaved(threadId: $t, after: $after) { content } }";
    for protocol in [WsProtocol::TransportWs, WsProtocol::LegacyWs] {
        // Given: replays what follows the cursor.
        let mut ws = WsClient::connect(app.addr, protocol).await;
        ws.subscribe("1", q, json!({ "t": "opt-sub", "after": all[0]["cursor"] })).await;
        for want in ["m1", "m2"] {
            let got = ws.next_message(Duration::from_secs(10)).await;
            assert_eq!(got["messageSaved"]["content"], want, "{protocol:?}");
        }
        // Omitted and null: live from now on.
        for (id, vars) in [("2", json!({ "t": "opt-sub" })), ("3", json!({ "t": "opt-sub", "after": null }))] {
            let mut ws = WsClient::connect(app.addr, protocol).await;
            ws.subscribe(id, q, vars.clone()).await;
            let live = ws
                .wait_live(|| async {
                    app.save("opt-sub", "probe").await;
                })
                .await;
            assert_eq!(live["messageSaved"]["content"], "probe", "{protocol:?} {vars}");
        }
    }
}

/// A random JSON value of any shape, sometimes huge or deeply nested.
fn random_value(rng: &mut StdRng, depth: u32) -> Value {
    match rng.random_range(0..12) {
        0 => Value::Null,
        1 => json!(rng.random::<bool>()),
        2 => json!(rng.random::<i64>()),
        3 => json!(rng.random::<f64>() * 1e300),
        4 => json!(rng.random_range(-5..300)),
        5 => json!(["OLDEST_FIRST", "NEWEST_FIRST", "SIDEWAYS", "", "oldest_first"][rng.random_range(0..5)]),
        6 => json!("x".repeat(rng.random_range(0..300))),
        7 => json!("\u{0}\u{1}\u{7f}"),
        8 => json!(u64::MAX),
        9 if depth < 4 => Value::Array((0..rng.random_range(0..4)).map(|_| random_value(rng, depth + 1)).collect()),
        10 if depth < 4 => {
            let mut m = serde_json::Map::new();
            for k in ["threadId", "role", "content", "metadata", "x"] {
                if rng.random::<bool>() {
                    m.insert(k.into(), random_value(rng, depth + 1));
                }
            }
            Value::Object(m)
        }
        _ => json!("opt"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_malformed_variables_never_get_internal_server_error() {
    let app = seeded("opt", 3).await;
    let ops = [
        (PAGE, ["id", "limit", "offset", "order"].as_slice()),
        (CONNECTION, ["id", "first", "after", "last", "before"].as_slice()),
        (SAVE, ["t", "c", "m", "k"].as_slice()),
        ("mutation M($input: MessageCreate!) { saveMessage(input: $input) { id } }", ["input"].as_slice()),
        ("query Q($id: ID!) { message(id: $id) { id } }", ["id"].as_slice()),
    ];
    let seed = std::env::var("VARS_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random::<u64>);
    let mut rng = StdRng::seed_from_u64(seed);
    for case in 0..400 {
        let (query, names) = ops[rng.random_range(0..ops.len())];
        let mut vars = serde_json::Map::new();
        for name in names {
            if rng.random_range(0..4) > 0 {
                vars.insert((*name).into(), random_value(&mut rng, 0));
            }
        }
        if rng.random_range(0..10) == 0 {
            vars.insert("undeclared".into(), random_value(&mut rng, 0));
        }
        let vars = Value::Object(vars);
        let r = app.gql(query, vars.clone()).await;
        for e in r["errors"].as_array().into_iter().flatten() {
            let code = e["extensions"]["code"].as_str();
            assert!(code.is_some(), "seed {seed} case {case}: an error without a code: {e}\n{vars}");
            assert_ne!(code, Some("INTERNAL_SERVER_ERROR"), "seed {seed} case {case}: {query}\n{vars}\n{r}");
        }
    }
}

/// Runs `tests/clients/apollo.mjs` (Apollo Client, graphql-ws) against the
/// service. `scripts/test.sh` installs its packages (`npm ci`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apollo_client_pages_saves_and_subscribes() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients");
    assert!(
        dir.join("node_modules/@apollo/client").is_dir(),
        "tests/clients has no node_modules: run `npm ci --prefix tests/clients` (scripts/test.sh does)"
    );
    let app = TestApp::spawn().await;
    let run = tokio::process::Command::new("node")
        .arg("apollo.mjs")
        .arg(app.url())
        .current_dir(&dir)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), run).await.expect("finished in 60 s").expect("node runs");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "apollo client failed ({}):\n{stdout}\n{stderr}", out.status);
    assert!(stdout.contains("apollo client: ok"), "{stdout}");
    let unknown = app.gql(PAGE, json!({ "id": "opt", "order": "SIDEWAYS" })).await;
    assert_eq!(error_code(&unknown), "BAD_USER_INPUT");
}
