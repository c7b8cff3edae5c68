//! GraphQL-over-HTTP client, the operations the workloads send, and small helpers
//! (thread ids, message content, a tiny PRNG — no `rand` dependency).

use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;
use serde_json::{json, Value};

pub const SAVE_MUTATION: &str = "mutation($input: MessageCreate!) { saveMessage(input: $input) \
     { id threadId createdAt cursor persisted } }";
const EDIT_MUTATION: &str = "mutation($id: ID!, $c: String) { editMessage(id: $id, content: $c) { version } }";
pub const READ_QUERY: &str = "query($t: ID!) { thread(id: $t) \
     { messages(limit: 50, order: NEWEST_FIRST) { id content createdAt } } }";
pub const METRICS_QUERY: &str = "query { storageMetrics { persistenceQueueDepth persistenceLagMs } }";
pub const SUBSCRIPTION: &str =
    "subscription($t:ID!){ messageSaved(threadId:$t){ id threadId content createdAt cursor } }";

/// Shared, cheaply clonable GraphQL client (one keep-alive connection pool).
#[derive(Clone)]
pub struct Gql {
    http: reqwest::Client,
    endpoint: String,
    ws_endpoint: String,
}

#[derive(Serialize)]
struct Request<'a> {
    query: &'a str,
    variables: Value,
}

impl Gql {
    pub fn new(base: &str, pool: usize, timeout: Duration) -> Result<Self> {
        let base = base.trim_end_matches('/');
        let endpoint = if base.ends_with("/graphql") { base.to_string() } else { format!("{base}/graphql") };
        let ws_endpoint = if let Some(rest) = endpoint.strip_prefix("http://") {
            format!("ws://{rest}")
        } else if let Some(rest) = endpoint.strip_prefix("https://") {
            format!("wss://{rest}")
        } else {
            bail!("--url must start with http:// (got {base})");
        };
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(pool + 4)
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_nodelay(true)
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(5))
            .build()
            .context("building the HTTP client")?;
        Ok(Gql { http, endpoint, ws_endpoint })
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    pub fn ws_endpoint(&self) -> &str {
        &self.ws_endpoint
    }

    /// Sends one operation; returns `data`, or an error for transport failures,
    /// non-2xx statuses and responses carrying a non-empty `errors` array.
    pub async fn execute(&self, query: &str, variables: Value) -> Result<Value> {
        let resp = self
            .http
            .post(&self.endpoint)
            .json(&Request { query, variables })
            .send()
            .await
            .context("HTTP request failed")?;
        let status = resp.status();
        let body = resp.bytes().await.context("reading the response body")?;
        if !status.is_success() {
            bail!("HTTP {status}: {}", snippet(&body));
        }
        let mut v: Value =
            serde_json::from_slice(&body).with_context(|| format!("response is not JSON: {}", snippet(&body)))?;
        if let Some(errs) = v.get("errors").and_then(Value::as_array) {
            if let Some(first) = errs.first() {
                let msg = first.get("message").and_then(Value::as_str).unwrap_or("?");
                bail!("GraphQL error: {msg}");
            }
        }
        match v.get_mut("data") {
            Some(data) if !data.is_null() => Ok(data.take()),
            _ => bail!("response has no data: {}", snippet(&body)),
        }
    }

    /// Fails fast with a clear message when the endpoint is unreachable.
    pub async fn preflight(&self) -> Result<()> {
        self.execute("query { __typename }", json!({}))
            .await
            .with_context(|| format!("cannot reach the GraphQL endpoint {}", self.endpoint))?;
        Ok(())
    }

    /// `saveMessage` as a USER message with a unique clientMessageId; returns the id.
    pub async fn save_message(&self, thread: &str, content: &str) -> Result<String> {
        let vars = json!({ "input": {
            "threadId": thread,
            "role": "USER",
            "content": content,
            "clientMessageId": uuid::Uuid::now_v7().to_string(),
        }});
        let data = self.execute(SAVE_MUTATION, vars).await?;
        data.pointer("/saveMessage/id")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| anyhow!("saveMessage returned no id"))
    }

    /// `editMessage` of `id` to `content` (no expected version: the last
    /// writer wins); returns the new version.
    pub async fn edit_message(&self, id: &str, content: &str) -> Result<i64> {
        let data = self.execute(EDIT_MUTATION, json!({ "id": id, "c": content })).await?;
        data.pointer("/editMessage/version")
            .and_then(Value::as_i64)
            .ok_or_else(|| anyhow!("editMessage returned no version"))
    }

    /// Newest 50 messages of a thread; returns how many came back.
    pub async fn read_newest(&self, thread: &str) -> Result<usize> {
        let data = self.execute(READ_QUERY, json!({ "t": thread })).await?;
        let thread = data.get("thread").filter(|t| !t.is_null()).ok_or_else(|| anyhow!("thread not found"))?;
        thread.get("messages").and_then(Value::as_array).map(Vec::len).ok_or_else(|| anyhow!("thread.messages missing"))
    }

    /// (persistenceQueueDepth, persistenceLagMs) from `storageMetrics`.
    pub async fn storage_metrics(&self) -> Result<(f64, Option<f64>)> {
        let data = self.execute(METRICS_QUERY, json!({})).await?;
        let m = data.get("storageMetrics").ok_or_else(|| anyhow!("storageMetrics missing"))?;
        let depth = m
            .get("persistenceQueueDepth")
            .and_then(Value::as_f64)
            .ok_or_else(|| anyhow!("persistenceQueueDepth missing"))?;
        Ok((depth, m.get("persistenceLagMs").and_then(Value::as_f64)))
    }
}

/// True for errors where retrying at full speed would only spin (refused/unreachable).
pub fn is_connect_error(err: &anyhow::Error) -> bool {
    err.downcast_ref::<reqwest::Error>().is_some_and(|e| e.is_connect())
}

fn snippet(body: &[u8]) -> String {
    let s = String::from_utf8_lossy(body);
    s.chars().take(200).collect()
}

pub fn thread_ids(run_id: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("bench-{run_id}-{i}")).collect()
}

const FILLER: &str = "The quick brown fox jumps over the lazy dog while the assistant \
     summarises the conversation so far and proposes three follow-up questions. ";

/// ASCII content of exactly `len` bytes starting with `tag` (truncated if needed).
pub fn make_content(tag: &str, len: usize) -> String {
    let mut s = String::with_capacity(len);
    s.push_str(tag);
    while s.len() < len {
        s.push_str(FILLER);
    }
    s.truncate(len);
    s
}

/// SplitMix64: fast, good enough to pick random threads.
pub struct Rng(u64);

impl Rng {
    pub fn new(salt: u64) -> Self {
        // The low 64 bits of a v7 UUID are random.
        let seed = uuid::Uuid::now_v7().as_u128() as u64;
        Rng(seed ^ salt.wrapping_mul(0x9E37_79B9_7F4A_7C15))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform-ish index in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
}
