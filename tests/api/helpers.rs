//! `TestApp`: a real threadstore instance on a free port, wired to a
//! per-test Redis (optionally behind a chaos proxy) and a fresh PostgreSQL
//! database, with small GraphQL helpers.
#![allow(dead_code)]

use std::{net::SocketAddr, time::Duration};

use serde_json::{json, Value};
use threadstore::{
    config::Settings,
    metrics::Metrics,
    startup::Application,
    store::{persister::Persister, MessageStore},
};
use tokio_util::sync::CancellationToken;

use crate::support::{ChaosProxy, PostgresServer, RedisServer};

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
        };
        settings.database.database_url = match &pg_proxy {
            Some(p) => format!("postgres://postgres@{}/{db}", p.addr()),
            None => db_url.clone(),
        };
        settings.persist.persister_enabled = opts.persister;
        settings.persist.consumer_name = Some(format!("test-{}", std::process::id()));
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
        Persister::new(
            self.store.redis().clone(),
            self.store.pg().clone(),
            self.settings.persist.clone(),
            consumer.to_owned(),
            self.settings.redis.cache_ttl_secs,
            Metrics::new(),
        )
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
        let mut out = Vec::new();
        loop {
            let r = self
                .gql(
                    "query($t: ID!, $o: Int!) { thread(id: $t) { messages(limit: 200, offset: $o) { id content createdAt cursor persisted clientMessageId } } }",
                    json!({ "t": thread, "o": out.len() }),
                )
                .await;
            let page = r["data"]["thread"]["messages"].as_array().unwrap_or_else(|| panic!("read failed: {r}")).clone();
            let n = page.len();
            out.extend(page);
            if n < 200 {
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

// ---- Persistence and failover helpers ----

/// Sum of the entries and new rows a persister reported.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Drained {
    pub entries: usize,
    pub inserted: u64,
}

/// Steps `p` until it reports `Idle` (bounded); `RetryLater` steps are retried.
pub async fn drain(p: &mut Persister, within: Duration) -> Drained {
    use threadstore::store::persister::PersistOutcome;
    let deadline = tokio::time::Instant::now() + within;
    let mut done = Drained::default();
    loop {
        match p.persist_batch().await {
            PersistOutcome::Idle => return done,
            PersistOutcome::Persisted { entries, inserted } => {
                done.entries += entries;
                done.inserted += inserted;
            }
            PersistOutcome::RetryLater => tokio::time::sleep(Duration::from_millis(50)).await,
        }
        assert!(tokio::time::Instant::now() < deadline, "persister not idle after {within:?} ({done:?})");
    }
}

impl TestApp {
    /// `storageMetrics` of this instance.
    pub async fn storage_metrics(&self) -> Value {
        let r = self
            .gql(
                "{ storageMetrics { breakerState failovers failoverWrites persistenceQueueDepth \
                 persistencePending persistenceLagMs deadLetters persisted } }",
                json!({}),
            )
            .await;
        r["data"]["storageMetrics"].clone()
    }

    /// Ids PostgreSQL holds for a thread, in thread order.
    pub fn pg_ids(&self, thread: &str) -> Vec<String> {
        let sql = format!("SELECT id FROM messages WHERE thread_id = '{thread}' ORDER BY created_at, id");
        let out = self.pg.server().psql(&self.db, &sql);
        out.lines().map(str::to_owned).collect()
    }

    /// `XPENDING ts:persist persisters` summary count.
    pub fn stream_pending(&self) -> i64 {
        let r = self.redis.cmd(&["XPENDING", "ts:persist", "persisters"]);
        r.as_array().and_then(|a| a.first()).and_then(|v| v.as_int()).unwrap_or(0)
    }
}

/// Background writers: one task per thread, saving unique messages (each with
/// a fresh `clientMessageId`) until stopped. Every request is bounded, so a
/// hung save shows up as a failure rather than a stuck test.
pub struct Writers {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// (thread, id) of every acknowledged save.
    acked: std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>>,
    /// Responses of saves that failed (or `"timed out"`).
    failed: std::sync::Arc<std::sync::Mutex<Vec<Value>>>,
}

impl Writers {
    /// Starts one writer per thread, pausing `pause` between saves.
    pub fn start(app: &TestApp, threads: &[&str], pause: Duration) -> Writers {
        use std::sync::{atomic::Ordering, Arc};
        let w = Writers { stop: Arc::default(), tasks: Vec::new(), acked: Arc::default(), failed: Arc::default() };
        let tasks = threads.iter().map(|t| {
            let (http, url, thread) = (app.http.clone(), app.url(), t.to_string());
            let (stop, acked, failed) = (w.stop.clone(), w.acked.clone(), w.failed.clone());
            tokio::spawn(async move {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let input = json!({ "threadId": thread, "role": "USER",
                        "content": format!("{thread} #{n}"), "clientMessageId": format!("{thread}-{n}") });
                    let body = json!({ "query": SAVE, "variables": { "input": input } });
                    let sent = http.post(&url).json(&body).send();
                    let r: Value = match tokio::time::timeout(Duration::from_secs(15), sent).await {
                        Ok(Ok(resp)) => resp.json().await.unwrap_or_else(|e| json!(e.to_string())),
                        Ok(Err(e)) => json!(e.to_string()),
                        Err(_) => json!("timed out"),
                    };
                    match r["data"]["saveMessage"]["id"].as_str() {
                        Some(id) => acked.lock().expect("lock").push((thread.clone(), id.to_owned())),
                        None => failed.lock().expect("lock").push(r),
                    }
                    tokio::time::sleep(pause).await;
                }
            })
        });
        Writers { tasks: tasks.collect(), ..w }
    }

    /// Saves acknowledged so far.
    pub fn acked(&self) -> usize {
        self.acked.lock().expect("lock").len()
    }

    /// The (thread, id) pairs acknowledged so far.
    pub fn snapshot(&self) -> Vec<(String, String)> {
        self.acked.lock().expect("lock").clone()
    }

    /// Stops the writers; returns the acknowledged (thread, id) pairs and the failures.
    pub async fn finish(self) -> (Vec<(String, String)>, Vec<Value>) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in self.tasks {
            t.await.expect("writer task");
        }
        let acked = std::mem::take(&mut *self.acked.lock().expect("lock"));
        let failed = std::mem::take(&mut *self.failed.lock().expect("lock"));
        (acked, failed)
    }
}

impl TestApp {
    /// Asserts PostgreSQL holds exactly the messages `ids` (all threads), each once.
    pub fn assert_pg_holds_exactly<'a>(&self, ids: impl IntoIterator<Item = &'a String>) {
        use std::collections::BTreeSet;
        let want: BTreeSet<&str> = ids.into_iter().map(String::as_str).collect();
        let out = self.pg.server().psql(&self.db, "SELECT id FROM messages");
        let rows: Vec<&str> = out.lines().collect();
        let got: BTreeSet<&str> = rows.iter().copied().collect();
        assert_eq!(rows.len(), got.len(), "PostgreSQL holds a message twice");
        let missing: Vec<_> = want.difference(&got).collect();
        let extra: Vec<_> = got.difference(&want).collect();
        assert!(missing.is_empty(), "acknowledged but not in PostgreSQL: {missing:?}");
        assert!(extra.is_empty(), "in PostgreSQL but never acknowledged: {extra:?}");
    }
}

pub use ws::{WsClient, WsEvent, WsProtocol, MESSAGE_SAVED};

/// A small GraphQL-over-WebSocket client for subscription tests (both
/// subprotocols), shared by `subscriptions.rs` and `shutdown.rs`.
mod ws {
    use std::{future::Future, net::SocketAddr, time::Duration};

    use futures::{SinkExt, StreamExt};
    use serde_json::{json, Value};
    use tokio::net::{TcpSocket, TcpStream};
    use tokio_tungstenite::{
        tungstenite::{client::IntoClientRequest, http::HeaderValue, Message},
        WebSocketStream,
    };

    /// The subscription the live-delivery tests use.
    pub const MESSAGE_SAVED: &str =
        "subscription($t: ID!, $after: String) { messageSaved(threadId: $t, after: $after) { id content createdAt cursor } }";

    /// The two subprotocols the server speaks.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum WsProtocol {
        /// `graphql-transport-ws`: subscribe / next / complete, ping / pong.
        TransportWs,
        /// Legacy `graphql-ws`: start / data / complete, `ka` keep-alives.
        LegacyWs,
    }

    impl WsProtocol {
        fn name(self) -> &'static str {
            match self {
                WsProtocol::TransportWs => "graphql-transport-ws",
                WsProtocol::LegacyWs => "graphql-ws",
            }
        }
    }

    /// What the server sent (keep-alives, pings and acks are skipped).
    #[derive(Debug)]
    pub enum WsEvent {
        /// `next` / `data`: the payload's `data`.
        Data(Value),
        /// `complete` for the subscription with this id.
        Complete(String),
        /// A close frame, the end of the stream or a transport error.
        Closed(String),
    }

    /// One WebSocket connection, initialised (`connection_ack` received).
    pub struct WsClient {
        ws: WebSocketStream<TcpStream>,
        protocol: WsProtocol,
    }

    impl WsClient {
        /// Connects to `ws://{addr}/graphql` with `protocol` and initialises.
        pub async fn connect(addr: SocketAddr, protocol: WsProtocol) -> WsClient {
            Self::connect_with(addr, protocol, None).await
        }

        /// Like [`WsClient::connect`]; a small `recv_buffer` (SO_RCVBUF) makes the
        /// server's writes block soon after the client stops reading.
        pub async fn connect_with(addr: SocketAddr, protocol: WsProtocol, recv_buffer: Option<u32>) -> WsClient {
            let mut req = format!("ws://{addr}/graphql").into_client_request().expect("valid ws request");
            req.headers_mut().insert("Sec-WebSocket-Protocol", HeaderValue::from_static(protocol.name()));
            let socket = TcpSocket::new_v4().expect("tcp socket");
            if let Some(n) = recv_buffer {
                socket.set_recv_buffer_size(n).expect("set SO_RCVBUF");
            }
            let tcp = socket.connect(addr).await.expect("tcp connect to the service");
            let (ws, _) = tokio_tungstenite::client_async(req, tcp).await.expect("websocket handshake");
            let mut client = WsClient { ws, protocol };
            client.send(json!({ "type": "connection_init", "payload": {} })).await;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            loop {
                let frame =
                    tokio::time::timeout_at(deadline, client.ws.next()).await.expect("connection_ack within 10 s");
                let text = match frame {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(_)) => continue,
                    other => panic!("connection closed before connection_ack: {other:?}"),
                };
                let v: Value = serde_json::from_str(&text).expect("JSON message");
                match v["type"].as_str() {
                    Some("connection_ack") => return client,
                    Some("ka" | "ping" | "pong") => continue,
                    _ => panic!("expected connection_ack, got {v}"),
                }
            }
        }

        async fn send(&mut self, v: Value) {
            self.ws.send(Message::text(v.to_string())).await.expect("websocket send");
        }

        /// Starts subscription `id`.
        pub async fn subscribe(&mut self, id: &str, query: &str, variables: Value) {
            let ty = match self.protocol {
                WsProtocol::TransportWs => "subscribe",
                WsProtocol::LegacyWs => "start",
            };
            self.send(json!({ "id": id, "type": ty, "payload": { "query": query, "variables": variables } })).await;
        }

        /// The next event within `within`, or `None` on timeout. Panics on a
        /// GraphQL error.
        pub async fn try_next_event(&mut self, within: Duration) -> Option<WsEvent> {
            let deadline = tokio::time::Instant::now() + within;
            loop {
                let frame = tokio::time::timeout_at(deadline, self.ws.next()).await.ok()?;
                let text = match frame {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Close(f))) => return Some(WsEvent::Closed(format!("close frame {f:?}"))),
                    Some(Ok(_)) => continue, // websocket ping/pong: tungstenite answers pings
                    Some(Err(e)) => return Some(WsEvent::Closed(format!("transport error: {e}"))),
                    None => return Some(WsEvent::Closed("end of stream".into())),
                };
                let v: Value = serde_json::from_str(&text).expect("JSON message");
                match v["type"].as_str().unwrap_or_default() {
                    "ping" => self.send(json!({ "type": "pong" })).await,
                    "pong" | "ka" | "connection_ack" => {}
                    "next" | "data" => {
                        let payload = &v["payload"];
                        assert!(payload.get("errors").is_none_or(Value::is_null), "subscription error: {v}");
                        return Some(WsEvent::Data(payload["data"].clone()));
                    }
                    "complete" => return Some(WsEvent::Complete(v["id"].as_str().unwrap_or_default().to_owned())),
                    _ => panic!("unexpected server message: {v}"),
                }
            }
        }

        /// The next event; panics when nothing arrives within `within`.
        pub async fn next_event(&mut self, within: Duration) -> WsEvent {
            self.try_next_event(within).await.unwrap_or_else(|| panic!("nothing received within {within:?}"))
        }

        /// The next `next`/`data` payload's data; panics on anything else.
        pub async fn next_message(&mut self, within: Duration) -> Value {
            match self.next_event(within).await {
                WsEvent::Data(v) => v,
                other => panic!("expected a message, got {other:?}"),
            }
        }

        /// Makes sure the subscription is live: saves probes (`save_probe`)
        /// until one is delivered; every message saved from then on must be
        /// delivered. Returns the probe delivered.
        pub async fn wait_live<F, Fut>(&mut self, mut save_probe: F) -> Value
        where
            F: FnMut() -> Fut,
            Fut: Future<Output = ()>,
        {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
            loop {
                assert!(tokio::time::Instant::now() < deadline, "subscription never delivered a probe");
                save_probe().await;
                match self.try_next_event(Duration::from_millis(500)).await {
                    None => continue,
                    Some(WsEvent::Data(v)) => return v,
                    Some(other) => panic!("subscription ended before going live: {other:?}"),
                }
            }
        }
    }
}
