//! `TestApp`: a real threadstore instance on a free port, wired to a
//! per-test Redis (optionally behind a chaos proxy) and a fresh PostgreSQL
//! database, with small GraphQL helpers. Persistence and drain helpers are in
//! [`persist`], the background `Writers` load in [`load`] and the
//! GraphQL-over-WebSocket client in [`ws`].
#![allow(dead_code)]

use std::{net::SocketAddr, time::Duration};

use serde_json::{json, Value};
use threadstore::{
    config::Settings,
    metrics::Metrics,
    startup::Application,
    store::{MessageStore, Persister},
};
use tokio_util::sync::CancellationToken;

use support::{ChaosProxy, PostgresServer, RedisServer};

mod load;
mod persist;
mod process;
mod ws;

pub use load::Writers;
pub use persist::{drain, Drained};
pub use process::Service;
pub use ws::{WsClient, WsEvent, WsProtocol, MESSAGE_SAVED};

/// Knobs a test may turn before the app starts.
pub struct Options {
    /// Run the background persister (else drive `persister()` by hand).
    pub persister: bool,
    /// Put a chaos proxy between the service and Redis.
    pub redis_proxy: bool,
    /// Put a chaos proxy between the service and PostgreSQL.
    pub pg_proxy: bool,
    /// Use a PostgreSQL cluster of its own (tests that stop it).
    pub own_postgres: bool,
    /// Changes to the settings.
    pub tweak: Box<dyn FnOnce(&mut Settings) + Send>,
}

impl Default for Options {
    fn default() -> Self {
        Self { persister: true, redis_proxy: false, pg_proxy: false, own_postgres: false, tweak: Box::new(|_| {}) }
    }
}

/// Which PostgreSQL a test uses.
pub enum Pg {
    /// The binary-wide cluster.
    Shared(&'static PostgresServer),
    /// A cluster of the test's own.
    Own(PostgresServer),
}

impl Pg {
    pub fn server(&self) -> &PostgresServer {
        match self {
            Pg::Shared(s) => s,
            Pg::Own(s) => s,
        }
    }
    pub fn server_mut(&mut self) -> Option<&mut PostgresServer> {
        match self {
            Pg::Shared(_) => None,
            Pg::Own(s) => Some(s),
        }
    }
}

/// A running instance and its infrastructure.
pub struct TestApp {
    pub addr: SocketAddr,
    pub http: reqwest::Client,
    pub redis: RedisServer,
    pub pg: Pg,
    pub db: String,
    pub settings: Settings,
    pub redis_proxy: Option<ChaosProxy>,
    pub pg_proxy: Option<ChaosProxy>,
    pub store: MessageStore,
    stop: CancellationToken,
}

fn db_name(url: &str) -> String {
    url.rsplit('/').next().unwrap_or_default().to_owned()
}

impl TestApp {
    pub async fn spawn() -> TestApp {
        Self::spawn_with(Options::default()).await
    }

    pub async fn spawn_with(opts: Options) -> TestApp {
        let redis = RedisServer::start();
        let pg =
            if opts.own_postgres { Pg::Own(PostgresServer::start()) } else { Pg::Shared(PostgresServer::shared()) };
        let db_url = pg.server().create_database();
        let db = db_name(&db_url);
        let redis_proxy = opts.redis_proxy.then(|| ChaosProxy::start(redis.addr()));
        let pg_proxy = opts.pg_proxy.then(|| ChaosProxy::to_port(pg.server().port()));
        let mut settings = Settings::from_env().expect("default settings");
        settings.listen_addr = "127.0.0.1:0".parse().expect("addr");
        settings.redis.redis_url = match &redis_proxy {
            Some(p) => format!("redis://{}", p.addr()),
            None => redis.url(),
        }
        .into();
        settings.database.database_url = match &pg_proxy {
            Some(p) => format!("postgres://postgres@{}/{db}", p.addr()),
            None => db_url.clone(),
        }
        .into();
        settings.persist.persister_enabled = opts.persister;
        settings.persist.consumer_name = Some(format!("test-{}", std::process::id()));
        // Storage behaviour is tested without authentication; `security.rs`
        // turns it on.
        settings.auth.auth_mode = threadstore::config::AuthMode::None;
        (opts.tweak)(&mut settings);
        Self::start(settings, redis, pg, db, redis_proxy, pg_proxy).await
    }

    async fn start(
        settings: Settings,
        redis: RedisServer,
        pg: Pg,
        db: String,
        redis_proxy: Option<ChaosProxy>,
        pg_proxy: Option<ChaosProxy>,
    ) -> TestApp {
        let app = Application::build(settings.clone()).await.expect("app builds");
        let addr = app.local_addr().expect("bound");
        let store = app.store().clone();
        let stop = app.stop_token();
        tokio::spawn(app.run_until_stopped(std::future::pending()));
        let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("client");
        TestApp { addr, http, redis, pg, db, settings, redis_proxy, pg_proxy, store, stop }
    }

    /// A persister on this app's tiers, named `consumer`.
    pub fn persister(&self, consumer: &str) -> Persister {
        self.store.persister(self.settings.persist.clone(), consumer.to_owned(), Metrics::new())
    }

    /// Stops the instance (graceful).
    pub fn stop(&self) {
        self.stop.cancel();
    }

    pub fn url(&self) -> String {
        format!("http://{}/graphql", self.addr)
    }

    /// Runs a GraphQL request; returns the whole response body.
    pub async fn gql(&self, query: &str, variables: Value) -> Value {
        self.http
            .post(self.url())
            .json(&json!({ "query": query, "variables": variables }))
            .send()
            .await
            .expect("request sent")
            .json()
            .await
            .expect("json body")
    }

    /// Saves a message; panics on a GraphQL error.
    pub async fn save(&self, thread: &str, content: &str) -> Value {
        self.save_input(json!({ "threadId": thread, "role": "USER", "content": content })).await
    }

    /// Saves with a full input object; panics on a GraphQL error.
    pub async fn save_input(&self, input: Value) -> Value {
        let r = self.try_save(input).await;
        assert!(r.get("errors").is_none(), "save failed: {r}");
        r["data"]["saveMessage"].clone()
    }

    /// Saves with a full input; returns the whole response.
    pub async fn try_save(&self, input: Value) -> Value {
        self.gql(SAVE, json!({ "input": input })).await
    }

    /// All messages of a thread via offset pages, oldest first.
    pub async fn all_messages(&self, thread: &str) -> Vec<Value> {
        self.offset_pages(thread, "OLDEST_FIRST", 200).await
    }

    /// Every `thread.messages` page of `limit` in `order` ("OLDEST_FIRST" or
    /// "NEWEST_FIRST"), concatenated.
    pub async fn offset_pages(&self, thread: &str, order: &str, limit: usize) -> Vec<Value> {
        let q = "query($t: ID!, $l: Int!, $o: Int!, $ord: MessageOrder!) { thread(id: $t) { \
                 messages(limit: $l, offset: $o, order: $ord) { id content createdAt cursor persisted clientMessageId } } }";
        let mut out = Vec::new();
        loop {
            let r = self.gql(q, json!({ "t": thread, "l": limit, "o": out.len(), "ord": order })).await;
            let page = r["data"]["thread"]["messages"].as_array().unwrap_or_else(|| panic!("read failed: {r}")).clone();
            let n = page.len();
            out.extend(page);
            if n < limit {
                return out;
            }
        }
    }

    /// Rows in PostgreSQL for a thread (or all threads).
    pub fn pg_count(&self, thread: Option<&str>) -> i64 {
        let sql = match thread {
            Some(t) => format!("SELECT count(*) FROM messages WHERE thread_id = '{t}'"),
            None => "SELECT count(*) FROM messages".into(),
        };
        self.pg.server().psql(&self.db, &sql).trim().parse().expect("count")
    }

    /// Waits until PostgreSQL holds `n` messages in total (bounded).
    pub async fn wait_for_pg_count(&self, n: i64, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let got = self.pg_count(None);
            if got >= n {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "PostgreSQL holds {got} of {n} messages");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the persistence stream is empty and nothing is pending.
    pub async fn wait_drained(&self, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let len = self.redis.cmd(&["XLEN", "ts:persist"]).as_int().unwrap_or(-1);
            if len == 0 {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "stream still holds {len} entries");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The save mutation with every field.
pub const SAVE: &str = "mutation($input: MessageCreate!) { saveMessage(input: $input) { id threadId role content metadata clientMessageId createdAt cursor persisted } }";

/// The `extensions.code` of the first error.
pub fn error_code(r: &Value) -> String {
    r["errors"][0]["extensions"]["code"].as_str().unwrap_or_else(|| panic!("no error code in {r}")).to_owned()
}
