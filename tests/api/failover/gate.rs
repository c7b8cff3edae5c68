//! Every kind of Redis call the store makes reaches the breaker when it
//! fails (one gate, `src/store/failover/gate.rs`): each is made to fail through the
//! chaos proxy, alone, and the breaker's failure count must move. Several
//! of these failures used to be swallowed without counting (the reads'
//! unpersisted lookup, the message locator, cache fills).

use std::time::Duration;

use serde_json::json;
use threadstore::store::BreakerState as State;

use crate::helpers::{Options, TestApp};

const PAGE: &str = "query($t: ID!) { thread(id: $t) { messages(limit: 10) { id content } } }";

/// How one kind of call is made to fail.
enum Fault {
    /// Open connections reset and new ones refused: the request's first
    /// Redis call fails.
    Refuse,
    /// The connection cut right after this RESP fragment is sent.
    CutAfter(&'static [u8]),
}

fn failures(app: &TestApp) -> u32 {
    match app.store.breaker_state() {
        State::Closed { failures } => failures,
        other => panic!("the breaker must stay closed in this test: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_redis_call_reports_its_failure_to_the_breaker() {
    let app = TestApp::spawn_with(Options {
        redis_proxy: true,
        tweak: Box::new(|s| {
            s.redis.breaker_failure_threshold = 1_000;
            s.redis.redis_timeout_ms = 1_000;
        }),
        ..Options::default()
    })
    .await;
    let proxy = app.redis_proxy.as_ref().expect("proxy");
    let saved = app.save("gate", "one").await;
    let id = saved["id"].as_str().expect("id").to_owned();
    app.wait_for_pg_count(1, Duration::from_secs(10)).await;

    type Setup = fn(&TestApp, &str);
    let hot: Setup = |_, _| {};
    let cold: Setup = |app, _| _ = app.redis.cmd(&["DEL", "ts:{gate}:idx", "ts:{gate}:meta"]);
    let evicted: Setup = |app, id| _ = app.redis.cmd(&["DEL", &format!("ts:{{gate}}:m:{id}")]);
    let cases: [(&str, Setup, Fault, &str); 6] = [
        ("save script", hot, Fault::Refuse, "save"),
        ("thread index", hot, Fault::Refuse, "page"),
        ("bodies (MGET)", hot, Fault::CutAfter(b"$4\r\nMGET\r\n"), "page"),
        ("message locator (GET)", hot, Fault::CutAfter(b"$3\r\nGET\r\n"), "message"),
        ("unpersisted ids of a cold thread", cold, Fault::CutAfter(b"$6\r\nZRANGE\r\n"), "page"),
        ("cache fill after a miss", evicted, Fault::CutAfter(b"$3\r\nSET\r\n"), "page"),
    ];
    for (name, setup, fault, action) in cases {
        // Reads until one goes through Redis (connections the last case
        // broke are replaced on first use): the count starts at 0.
        // A failover write (the save case) is reconciled into Redis first.
        for _ in 0..200 {
            let ok = app.gql(PAGE, json!({ "t": "gate" })).await;
            assert!(ok.get("errors").is_none(), "{ok}");
            if failures(&app) == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(failures(&app), 0, "{name}: a success resets the count");
        setup(&app, &id);
        match fault {
            Fault::Refuse => {
                proxy.refuse(true);
                proxy.reset_all();
                assert!(proxy.wait_for_connections(0, Duration::from_secs(5)).await, "connections reset");
            }
            Fault::CutAfter(pattern) => proxy.cut_after_match(pattern, 1),
        }
        let r = match action {
            "save" => app.try_save(json!({ "threadId": "gate", "role": "USER", "content": name })).await,
            "message" => app.gql("query($id: ID!) { message(id: $id) { id } }", json!({ "id": id })).await,
            _ => app.gql(PAGE, json!({ "t": "gate" })).await,
        };
        let seen = failures(&app);
        proxy.heal();
        assert!(r.get("errors").is_none(), "{name}: PostgreSQL answers instead: {r}");
        assert!(seen >= 1, "{name}: the failed Redis call never reached the breaker");
    }
}
