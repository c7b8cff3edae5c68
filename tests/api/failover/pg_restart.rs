//! PostgreSQL restarted under a full connection pool (`pg_ctl stop -m fast`
//! and `-m immediate`, then started again): the pooled connections it
//! closed are retired, not handed out again, so reads that need PostgreSQL
//! work as soon as it accepts connections, and their errors while it is
//! down say a read failed, not that a message was not stored.

use serde_json::json;

use crate::helpers::{error_code, Options, TestApp};

const PAGE: &str = "query($t: ID!) { thread(id: $t) { messages(limit: 20) { id } } }";

#[derive(Clone, Copy, Debug)]
enum Stop {
    Fast,
    Immediate,
}

async fn reads_work_right_after_a_restart(stop: Stop) {
    let mut app = TestApp::spawn_with(Options {
        own_postgres: true,
        // PostgreSQL-only mode: every read and save needs PostgreSQL.
        tweak: Box::new(|s| {
            s.redis.force_failover = true;
            s.database.pg_timeout_ms = 2000;
        }),
        ..Options::default()
    })
    .await;
    for i in 0..20 {
        app.save("pgr", &format!("m{i}")).await;
    }
    // A burst, so the pool holds all its connections.
    let pool = app.settings.database.pg_pool_size as usize;
    for _ in 0..3 {
        let reads = (0..pool * 2).map(|_| app.gql(PAGE, json!({ "t": "pgr" })));
        for r in futures::future::join_all(reads).await {
            assert!(r.get("errors").is_none(), "{r}");
        }
    }

    let server = app.pg.server_mut().expect("own cluster");
    tokio::task::block_in_place(|| match stop {
        Stop::Fast => server.stop_fast(),
        Stop::Immediate => server.stop_immediate(),
    });
    let down = app.gql(PAGE, json!({ "t": "pgr" })).await;
    assert_eq!(error_code(&down), "STORAGE_UNAVAILABLE", "{down}");
    let message = down["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(message.contains("read") && !message.contains("stored"), "a read is not a store: {message}");
    tokio::task::block_in_place(|| app.pg.server_mut().expect("own cluster").start_again());

    // Every read from now on succeeds, at once: three times the pool, so
    // each stale connection would have been handed out.
    for round in 0..3 {
        let reads = (0..pool).map(|_| app.gql(PAGE, json!({ "t": "pgr" })));
        for r in futures::future::join_all(reads).await {
            assert!(r.get("errors").is_none(), "{stop:?}, round {round} after the restart: {r}");
            assert_eq!(r["data"]["thread"]["messages"].as_array().map(Vec::len), Some(20));
        }
    }
    // Saves too.
    app.save("pgr", "after").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_work_right_after_postgres_restarts_fast() {
    reads_work_right_after_a_restart(Stop::Fast).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_work_right_after_postgres_restarts_immediate() {
    reads_work_right_after_a_restart(Stop::Immediate).await;
}
