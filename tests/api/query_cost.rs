//! Hostile documents, sent from the outside to a `threadstore serve`
//! process: every one is answered (`QUERY_TOO_COMPLEX`, another request
//! error, or a result) within a generous bound, `/healthz` answers
//! throughout, nothing is stored, and SIGTERM still stops the process. The
//! family is generated: fragment fan-out at widths 2–4 and depths up to
//! 40, a fragment under many aliases, wide overlapping fields with
//! conflicting arguments, deep inline fragments, long spread chains,
//! fragment cycles, thousands of variables, huge string, list and variable
//! values. Each goes over POST, GET and both WebSocket subprotocols.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use serde_json::{json, Value};
use tokio::time::Instant;

use crate::helpers::{Service, WsClient, WsEvent, WsProtocol};
use support::PostgresServer;

/// Generous bound on one answer (a debug build on a busy 2-core machine).
const ANSWER_BOUND: Duration = Duration::from_secs(15);
/// Generous bound on one `/healthz` answer while the family runs: a
/// liveness check, not a latency benchmark.
const PROBE_BOUND: Duration = Duration::from_secs(5);

/// One hostile document and the code it must get (`None`: a result).
struct Doc {
    name: String,
    query: String,
    variables: Value,
    expect: Option<&'static str>,
}

fn doc(name: impl Into<String>, query: String, expect: Option<&'static str>) -> Doc {
    Doc { name: name.into(), query, variables: json!({}), expect }
}

const TOO_COMPLEX: Option<&str> = Some("QUERY_TOO_COMPLEX");
const INVALID: Option<&str> = Some("GRAPHQL_VALIDATION_FAILED");

/// `fragment F{i}` spreads `F{i+1}` `width` times, `depth` deep, under `root`.
fn fan_out(op: &str, on: &str, width: usize, depth: usize, leaf: &str) -> String {
    let mut q = format!("{op} {{ ...F0 }} ");
    for i in 0..depth {
        q.push_str(&format!("fragment F{i} on {on} {{ {leaf}"));
        for _ in 0..width {
            q.push_str(&format!(" ...F{}", i + 1));
        }
        q.push_str(" } ");
    }
    q.push_str(&format!("fragment F{depth} on {on} {{ {leaf} }}"));
    q
}

/// Repeats `item(i)` until the text is about `bytes` long.
fn repeat_to(bytes: usize, item: impl Fn(usize) -> String) -> String {
    let mut out = String::new();
    for i in 0.. {
        if out.len() >= bytes {
            break;
        }
        out.push_str(&item(i));
    }
    out
}

/// The generated family (all within the default 16 KiB query and 1 MiB body).
fn family() -> Vec<Doc> {
    let mut docs = Vec::new();
    // Spreads only, ending at an unknown fragment: no field anywhere.
    let spreads: String =
        (1..=30).map(|i| format!("fragment F{i} on Query {{ ...F{j} ...F{j} }} ", j = i - 1)).collect();
    docs.push(doc(
        "spread-only fan-out",
        format!("query {{ ...F30 }} fragment F0 on Query {{ ...Unknown }} {spreads}"),
        TOO_COMPLEX,
    ));
    // Arguments: thousands on one field, and a few on a field repeated
    // hundreds of times (the overlapping-fields rule compares each repeat's
    // arguments with the first one's: one error per difference).
    let args = repeat_to(10_000, |i| format!("b{i}: 1 "));
    docs.push(doc(
        "2500 arguments",
        format!("{{ thread(id: \"qc\" {args}) {{ id }} {} }}", "thread { id } ".repeat(400)),
        TOO_COMPLEX,
    ));
    let args: String = (0..15).map(|i| format!("a{i}: {i} ")).collect();
    let repeats = "thread(id: \"qc\") { id } ".repeat(600);
    docs.push(doc("16 arguments, 600 repeats", format!("{{ thread(id: \"qc\" {args}) {{ id }} {repeats}}}"), INVALID));
    // The report's query, byte for byte in shape: 1,559 bytes.
    let frags: String =
        (0..30).map(|i| format!("fragment F{i} on Query {{ __typename ...F{} ...F{} }} ", i + 1, i + 1)).collect();
    docs.push(doc(
        "report",
        format!("query Bomb {{ ...F0 }} {frags}fragment F30 on Query {{ __typename }}"),
        TOO_COMPLEX,
    ));
    for width in 2..=4 {
        for depth in [10, 16, 24, 40] {
            let q = fan_out("query", "Query", width, depth, "__typename");
            docs.push(doc(format!("fan-out w{width} d{depth}"), q, TOO_COMPLEX));
        }
    }
    // A write never runs either: nothing may be stored.
    let save = "saveMessage(input: { threadId: \"qc\", role: USER, content: \"boom\" }) { id }";
    docs.push(doc("mutation fan-out", fan_out("mutation", "Mutation", 2, 24, save), TOO_COMPLEX));
    docs.push(doc(
        "subscription fan-out",
        fan_out("subscription", "Subscription", 2, 24, "messageSaved(threadId: \"qc\") { id }"),
        TOO_COMPLEX,
    ));
    // One fragment under the most aliases allowed, itself fanning out.
    let aliases: String = (0..30).map(|i| format!("a{i}: thread(id: \"qc\") {{ ...T }} ")).collect();
    let inner = fan_out("", "Message", 3, 8, "id").replacen(" { ...F0 } ", "", 1);
    docs.push(doc(
        "fragment under aliases",
        format!("{{ {aliases}}} fragment T on Thread {{ messages {{ ...F0 }} }} {inner}"),
        TOO_COMPLEX,
    ));
    // Wide overlapping fields with conflicting arguments, inline and
    // through fragments: valid in size, so validation runs and refuses.
    let wide = repeat_to(15_000, |i| format!("thread(id: \"o{i}\") {{ id }} "));
    docs.push(doc("overlapping fields", format!("{{ {wide}}}"), INVALID));
    let spreads = repeat_to(1_300, |i| format!("...O{i} "));
    let n = spreads.matches("...").count();
    let defs: String = (0..n).map(|i| format!("fragment O{i} on Query {{ thread(id: \"f{i}\") {{ id }} }} ")).collect();
    docs.push(doc("overlapping through fragments", format!("{{ {spreads}}} {defs}"), INVALID));
    // Deep inline fragments: within the parser's recursion bound they run, past it not.
    let inline = |n: usize| format!("{{ {}__typename{} }}", "... on Query { ".repeat(n), " }".repeat(n));
    docs.push(doc("inline fragments 25 deep", inline(25), None));
    docs.push(doc("inline fragments 40 deep", inline(40), TOO_COMPLEX));
    docs.push(doc("inline fragments 200 deep", inline(200), TOO_COMPLEX));
    // A long chain of spreads: no brackets nest, yet the validator recurses.
    let chain: String = (0..600).map(|i| format!("fragment C{i} on Query {{ __typename ...C{} }} ", i + 1)).collect();
    docs.push(doc(
        "spread chain 600",
        format!("{{ ...C0 }} {chain}fragment C600 on Query {{ __typename }}"),
        TOO_COMPLEX,
    ));
    docs.push(doc(
        "fragment cycle",
        "{ ...A } fragment A on Query { __typename ...B } fragment B on Query { ...A }".into(),
        INVALID,
    ));
    // Thousands of variables, unused, and used by conflicting fields.
    let vars = repeat_to(14_000, |i| format!("$v{i}: Int "));
    docs.push(doc("2000 unused variables", format!("query V({vars}) {{ __typename }}"), INVALID));
    let n = 300;
    let defs: String = (0..n).map(|i| format!("$v{i}: Int ")).collect();
    let uses: String = (0..n).map(|i| format!("messages(limit: $v{i}) {{ id }} ")).collect();
    docs.push(doc("300 used variables", format!("query V({defs}) {{ thread(id: \"qc\") {{ {uses}}} }}"), INVALID));
    // Huge literals and values within the limits.
    let long = "x".repeat(15_000);
    docs.push(doc("15 KB string literal", format!("{{ thread(id: \"{long}\") {{ id }} }}"), Some("BAD_USER_INPUT")));
    let list = repeat_to(15_000, |_| "1,".into());
    docs.push(doc("7500-item list literal", format!("{{ thread(id: [{list}]) {{ id }} }}"), TOO_COMPLEX));
    let list = "1,".repeat(1500);
    docs.push(doc("1500-item list literal", format!("{{ thread(id: [{list}]) {{ id }} }}"), Some("BAD_USER_INPUT")));
    let mut big = doc("100k-item variable", "query Big($big: [Int]) { __typename }".into(), INVALID);
    big.variables = json!({ "big": vec![7; 100_000] });
    docs.push(big);
    // Longer than the text limit.
    docs.push(doc("text over the limit", format!("{{ __typename }} #{}", "x".repeat(20_000)), TOO_COMPLEX));
    docs
}

/// Every `extensions.code` in a response or WebSocket message.
fn codes(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(c)) = m.get("extensions").and_then(|x| x.get("code")) {
                out.push(c.clone());
            }
            m.values().for_each(|v| codes(v, out));
        }
        Value::Array(a) => a.iter().for_each(|v| codes(v, out)),
        _ => {}
    }
}

/// Checks one answer against what the document must get.
fn check(d: &Doc, via: &str, answer: &Value) {
    let mut found = Vec::new();
    codes(answer, &mut found);
    // A response lists at most 100 errors and a note of how many more.
    assert!(found.len() <= 101, "{} via {via}: {} errors in one answer", d.name, found.len());
    assert!(!found.iter().any(|c| c == "INTERNAL_SERVER_ERROR"), "{} via {via}: internal error: {answer}", d.name);
    match d.expect {
        Some(code) => assert!(found.iter().any(|c| c == code), "{} via {via}: expected {code}, got {answer}", d.name),
        None => assert!(found.is_empty(), "{} via {via}: expected a result, got {answer}", d.name),
    }
}

async fn post(svc: &Service, d: &Doc) -> Value {
    let body = json!({ "query": d.query, "variables": d.variables });
    let req = svc.http.post(format!("http://{}/graphql", svc.addr)).json(&body).timeout(ANSWER_BOUND);
    let resp = req.send().await;
    let resp = resp.unwrap_or_else(|e| panic!("{}: no answer over POST: {}\n{}", d.name, e.without_url(), svc.log()));
    resp.json().await.unwrap_or_else(|e| panic!("{}: not JSON: {e}", d.name))
}

/// Longest GET URL tried: past it HTTP clients refuse to build the request.
const MAX_GET_BYTES: usize = 48 * 1024;

async fn get(svc: &Service, d: &Doc) -> Option<Value> {
    let vars = d.variables.to_string();
    if d.query.len() + vars.len() > MAX_GET_BYTES / 3 {
        return None;
    }
    let req = svc.http.get(format!("http://{}/graphql", svc.addr)).query(&[("query", &d.query), ("variables", &vars)]);
    let resp = req.timeout(ANSWER_BOUND).send().await;
    let resp = resp.unwrap_or_else(|e| panic!("{}: no answer over GET: {}\n{}", d.name, e.without_url(), svc.log()));
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    // Past the URI limits of the HTTP layer a GET is refused before GraphQL.
    let short = text.get(..2048).unwrap_or(&text);
    Some(serde_json::from_str(&text).unwrap_or_else(|_| panic!("{}: GET answered {status}: {short}", d.name)))
}

/// The default `MAX_WS_MESSAGE_BYTES`.
const MAX_WS_MESSAGE: usize = 64 * 1024;

/// Sends `d` as a subscription over `protocol`; the first thing back, or
/// `None` when the message is over the WebSocket limit (and the server
/// closed with 1009, as it must).
async fn websocket(svc: &Service, d: &Doc, protocol: WsProtocol) -> Option<Value> {
    let mut ws = WsClient::connect(svc.addr, protocol).await;
    ws.subscribe("1", &d.query, d.variables.clone()).await;
    let oversize = d.query.len() + d.variables.to_string().len() > MAX_WS_MESSAGE;
    match ws.next_event(ANSWER_BOUND).await {
        WsEvent::Closed(why) if oversize && why.contains("Size") => None,
        WsEvent::Data(v) if !oversize => Some(json!({ "data": v })),
        WsEvent::Error(v) if !oversize => Some(v),
        other => panic!("{} over {protocol:?}: {other:?}", d.name),
    }
}

/// Probes `/healthz` every 20 ms until stopped; panics past the bound.
struct Probe {
    stop: Arc<AtomicBool>,
    slowest_ms: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<usize>,
}

impl Probe {
    fn start(svc: &Service) -> Probe {
        let (stop, slowest_ms) = (Arc::<AtomicBool>::default(), Arc::<AtomicU64>::default());
        let (http, url) = (svc.http.clone(), format!("http://{}/healthz", svc.addr));
        let task = tokio::spawn({
            let (stop, slowest_ms) = (stop.clone(), slowest_ms.clone());
            async move {
                let mut probes = 0;
                while !stop.load(Ordering::Relaxed) {
                    let began = Instant::now();
                    let r = http.get(&url).timeout(PROBE_BOUND).send().await;
                    assert!(r.is_ok_and(|r| r.status() == 200), "/healthz did not answer within {PROBE_BOUND:?}");
                    slowest_ms.fetch_max(began.elapsed().as_millis() as u64, Ordering::Relaxed);
                    probes += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                probes
            }
        });
        Probe { stop, slowest_ms, task }
    }

    async fn finish(self) {
        self.stop.store(true, Ordering::Relaxed);
        let probes = self.task.await.expect("/healthz stayed alive");
        assert!(probes > 0, "the probe ran");
        eprintln!("/healthz: {probes} probes, slowest {} ms", self.slowest_ms.load(Ordering::Relaxed));
    }
}

fn assert_nothing_stored(svc: &Service) {
    let rows = PostgresServer::shared().psql(&svc.db, "SELECT count(*) FROM messages");
    assert_eq!(rows.trim(), "0", "PostgreSQL holds messages");
    assert_eq!(svc.redis.cmd(&["XLEN", "ts:persist"]).as_int(), Some(0), "the persistence stream holds entries");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hostile_family_is_answered_and_the_service_stays_alive() {
    let mut svc = Service::new("query-cost");
    svc.start().await;
    let docs = family();

    let probe = Probe::start(&svc);
    for d in &docs {
        let began = Instant::now();
        check(d, "POST", &post(&svc, d).await);
        eprintln!("{:32} POST {:>6} ms", d.name, began.elapsed().as_millis());
    }
    for group in docs.chunks(4) {
        let answers = futures::future::join_all(group.iter().map(|d| post(&svc, d))).await;
        group.iter().zip(&answers).for_each(|(d, a)| check(d, "POST, four at once", a));
    }
    for d in &docs {
        if let Some(answer) = get(&svc, d).await {
            check(d, "GET", &answer);
        }
    }
    for protocol in [WsProtocol::TransportWs, WsProtocol::LegacyWs] {
        for d in &docs {
            if let Some(answer) = websocket(&svc, d, protocol).await {
                check(d, &format!("{protocol:?}"), &answer);
            }
        }
    }
    probe.finish().await;
    assert_nothing_stored(&svc);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_compute_pool_answers_503_service_overloaded() {
    let mut svc = Service::new("query-cost-pool");
    svc.set("GRAPHQL_WORKERS", "1");
    svc.set("GRAPHQL_QUEUE", "0");
    svc.start().await;
    // Valid in size and heavy: validated on the pool.
    let wide = repeat_to(15_000, |i| format!("thread(id: \"o{i}\") {{ id }} "));
    let heavy = json!({ "query": format!("{{ {wide}}}") });
    let url = format!("http://{}/graphql", svc.addr);
    let mut overloaded = 0;
    for _round in 0..50 {
        let sends = (0..16).map(|_| svc.http.post(&url).json(&heavy).timeout(ANSWER_BOUND).send());
        for r in futures::future::join_all(sends).await {
            let r = r.expect("answered");
            let (status, retry) = (r.status(), r.headers().get("retry-after").cloned());
            let body: Value = r.json().await.expect("JSON");
            let mut found = Vec::new();
            codes(&body, &mut found);
            if found.iter().any(|c| c == "SERVICE_OVERLOADED") {
                assert_eq!(status, 503, "{body}");
                assert!(retry.is_some(), "503 carries Retry-After");
                overloaded += 1;
            } else {
                assert_eq!(found.first().map(String::as_str), Some("GRAPHQL_VALIDATION_FAILED"), "{body}");
            }
        }
        if overloaded > 0 {
            break;
        }
    }
    assert!(overloaded > 0, "16 heavy requests at once, one worker, no queue: some must be refused");
    let ok = svc.http.get(format!("http://{}/healthz", svc.addr)).send().await.expect("alive");
    assert_eq!(ok.status(), 200);
    assert_nothing_stored(&svc);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_a_stream_of_hostile_requests_exits_zero() {
    let mut svc = Service::new("query-cost-term");
    svc.start().await;
    let docs = Arc::new(family());
    let stop = Arc::<AtomicBool>::default();
    let senders: Vec<_> = (0..4)
        .map(|c| {
            let (svc_http, addr, docs, stop) = (svc.http.clone(), svc.addr, docs.clone(), stop.clone());
            tokio::spawn(async move {
                let mut i = c;
                while !stop.load(Ordering::Relaxed) {
                    let d = &docs[i % docs.len()];
                    let body = json!({ "query": d.query, "variables": d.variables });
                    let sent = svc_http.post(format!("http://{addr}/graphql")).json(&body).send().await;
                    if sent.is_err() {
                        return; // shutting down
                    }
                    i += 4;
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    svc.signal(libc::SIGTERM);
    let status = svc.exit_status().await;
    assert_eq!(status.code(), Some(0), "{status}\n{}", svc.log());
    stop.store(true, Ordering::Relaxed);
    for s in senders {
        let _ = tokio::time::timeout(ANSWER_BOUND, s).await;
    }
    assert_nothing_stored(&svc);
}

/// With the expansion limit lifted, the report's kind of document really
/// does compute for a long time: it must stall only itself. `/healthz` and
/// cheap queries keep answering beside it, a second heavy document is
/// refused (one worker, no queue), and SIGTERM still stops the process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unbounded_validation_stalls_only_itself() {
    let mut svc = Service::new("query-cost-stuck");
    svc.set("MAX_QUERY_FIELDS", u64::MAX.to_string());
    svc.set("GRAPHQL_WORKERS", "1");
    svc.set("GRAPHQL_QUEUE", "0");
    svc.set("REQUEST_TIMEOUT_MS", "3000");
    svc.start().await;
    let url = format!("http://{}/graphql", svc.addr);
    // 2^31 selections per walk: minutes of validation, even in a release
    // build, so it is surely still running throughout.
    let bomb = json!({ "query": fan_out("query", "Query", 2, 30, "__typename") });
    let stuck = tokio::spawn(svc.http.post(&url).json(&bomb).timeout(ANSWER_BOUND).send());
    tokio::time::sleep(Duration::from_millis(300)).await;

    let probe = Probe::start(&svc);
    let cheap = json!({ "query": "{ thread(id: \"qc\") { messageCount } }" });
    for _ in 0..20 {
        let r: Value = svc
            .http
            .post(&url)
            .json(&cheap)
            .timeout(PROBE_BOUND)
            .send()
            .await
            .expect("answered")
            .json()
            .await
            .expect("JSON");
        assert_eq!(r["data"]["thread"]["messageCount"], 0, "{r}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let second = svc.http.post(&url).json(&bomb).timeout(PROBE_BOUND).send().await.expect("answered");
    assert_eq!(second.status(), 503, "the one worker is busy and nothing may wait");
    probe.finish().await;

    // The stuck request gets its deadline (408) while its validation goes on.
    let answered = stuck.await.expect("joins").expect("answered");
    assert_eq!(answered.status(), 408);
    let began = Instant::now();
    svc.signal(libc::SIGTERM);
    let status = svc.exit_status().await;
    assert_eq!(status.code(), Some(0), "{status}\n{}", svc.log());
    eprintln!("exited {} ms after SIGTERM with a validation still running", began.elapsed().as_millis());
}
