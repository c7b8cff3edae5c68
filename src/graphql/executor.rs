//! `Api`: the schema wrapped with what every request gets, for HTTP and
//! WebSocket alike.
//!
//! - **A parsed-query cache.** Clients send the same few operations over
//!   and over; parsing (a PEG parser) costs more than cloning the parsed
//!   document, so each distinct query text is parsed once.
//! - **`extensions.code` on every error** ([`super::labels`]).
//! - **A bounded cost.** Before async-graphql validates or executes a
//!   document, its expansion is measured in linear time ([`super::cost`])
//!   and checked against the limits; heavy phases run on the compute pool
//!   ([`super::compute`]) so they cannot starve the runtime.
//!
//! This is done around the schema rather than as schema extensions: any
//! extension makes async-graphql run a per-field hook chain (with a type
//! registry lookup per field), which costs more than everything here.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use async_graphql::{
    futures_util::stream::BoxStream,
    parser::types::{ExecutableDocument, OperationType},
    Data, Executor, Request, Response, ServerError,
};
use futures::StreamExt;

use super::{
    compute::{ComputePool, Overloaded},
    cost::{self, Cost},
    labels::{label, with_code},
    shape, AppSchema,
};
use crate::error::code;

/// Distinct query texts kept; past this the cache starts over (bounded
/// memory against clients that send ever-new texts).
const CAPACITY: usize = 512;
/// Longer query texts are not cached.
const MAX_CACHED_QUERY: usize = 8 * 1024;
/// Texts up to this long parse in microseconds: on the runtime's thread.
const CHEAP_TEXT: usize = 2 * 1024;
/// Documents whose measured work ([`Cost::work`]) is at most this validate
/// in microseconds: on the runtime's thread. Everything bigger validates on
/// the compute pool.
const CHEAP_WORK: u64 = 256;
/// Most arguments on one field: the widest field of the schema has five,
/// and the overlapping-fields rule compares each repeat of a field with
/// the first one's arguments, one error per difference.
const MAX_ARGUMENTS: usize = 16;

/// Limits on the document that are checked before async-graphql sees it.
#[derive(Debug, Clone, Copy)]
pub struct QueryLimits {
    /// Longest query text, bytes.
    pub max_bytes: usize,
    /// Most aliased fields.
    pub max_aliases: usize,
    /// Most directives.
    pub max_directives: usize,
    /// Most work the document may expand to (see [`cost::Cost::work`]).
    pub max_fields: u64,
    /// Deepest field nesting after fragments are inlined.
    pub max_depth: usize,
}

impl From<&crate::config::LimitSettings> for QueryLimits {
    fn from(l: &crate::config::LimitSettings) -> Self {
        Self {
            max_bytes: l.max_query_bytes,
            max_aliases: l.max_aliases,
            max_directives: l.max_directives,
            max_fields: l.max_query_fields,
            max_depth: l.max_query_depth,
        }
    }
}

/// The document holds a mutation or a subscription, and the transport
/// serves queries only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotAQuery;

/// The schema as the HTTP and WebSocket layers use it. Cheap to clone.
#[derive(Clone)]
pub struct Api {
    schema: AppSchema,
    parsed: Arc<Mutex<HashMap<String, (ExecutableDocument, Cost)>>>,
    limits: QueryLimits,
    pool: ComputePool,
}

fn refused(message: String, c: &'static str) -> Box<Response> {
    crate::metrics::Metrics::query_refused(c);
    Box::new(Response::from_errors(vec![with_code(ServerError::new(message, None), c)]))
}

fn too_complex(message: String) -> Box<Response> {
    refused(message, code::QUERY_TOO_COMPLEX)
}

fn overloaded() -> Box<Response> {
    refused("the service is busy with other requests; retry shortly".into(), code::SERVICE_OVERLOADED)
}

/// A document admitted: whether it is heavy enough to validate on the
/// compute pool, and the operation types it holds.
struct Admitted {
    request: Request,
    heavy: bool,
    only_queries: bool,
}

impl Api {
    /// Wraps a schema.
    pub fn new(schema: AppSchema, limits: QueryLimits, pool: ComputePool) -> Self {
        Self { schema, parsed: Arc::default(), limits, pool }
    }

    /// Parses and measures `query` and checks it against the limits: the
    /// guard before the parser (which recurses without a limit), then the
    /// linear measure before anything walks the document's expansion. (The
    /// length limit is checked before this, on the cache miss.)
    pub fn check(query: &str, limits: QueryLimits) -> Result<(ExecutableDocument, Cost), Box<Response>> {
        if !shape::nesting_ok(query) {
            return Err(too_complex(format!("nested more than {} levels", shape::MAX_NESTING)));
        }
        let doc = async_graphql::parser::parse_query(query).map_err(|e| {
            let e = ServerError::new(e.to_string(), e.positions().next());
            let c = if e.message.contains("recursion limit") { code::QUERY_TOO_COMPLEX } else { code::PARSE_FAILED };
            Box::new(Response::from_errors(vec![with_code(e, c)]))
        })?;
        let cost = cost::measure(&doc).map_err(|cost::FragmentCycle(name)| {
            let e = ServerError::new(format!("fragment \"{name}\" spreads itself"), None);
            Box::new(Response::from_errors(vec![with_code(e, code::VALIDATION_FAILED)]))
        })?;
        if cost.nesting > shape::MAX_NESTING as u64 {
            return Err(too_complex(format!(
                "fields, fragments and spreads nest more than {} levels",
                shape::MAX_NESTING
            )));
        }
        if cost.work > limits.max_fields {
            return Err(too_complex(format!(
                "the query expands to more than {} fields, fragments and argument values",
                limits.max_fields
            )));
        }
        if cost.max_arguments > MAX_ARGUMENTS {
            return Err(too_complex(format!("a field has more than {MAX_ARGUMENTS} arguments")));
        }
        if cost.depth > limits.max_depth as u64 {
            return Err(too_complex(format!("the query nests fields more than {} deep", limits.max_depth)));
        }
        if cost.aliases > limits.max_aliases {
            return Err(too_complex(format!("more than {} aliases", limits.max_aliases)));
        }
        if cost.directives > limits.max_directives {
            return Err(too_complex(format!("more than {} directives", limits.max_directives)));
        }
        Ok((doc, cost))
    }

    /// Attaches the parsed document, from the cache or parsed now (a long
    /// text on the compute pool). Texts over the limits never reach the
    /// parser or the cache.
    async fn admit(&self, mut request: Request) -> Result<Admitted, Box<Response>> {
        let cached = self.parsed.lock().ok().and_then(|d| d.get(&request.query).cloned());
        let (doc, cost) = match cached {
            Some(hit) => hit,
            None => {
                if request.query.len() > self.limits.max_bytes {
                    return Err(too_complex(format!("query text is longer than {} bytes", self.limits.max_bytes)));
                }
                let limits = self.limits;
                let checked = if request.query.len() <= CHEAP_TEXT {
                    Self::check(&request.query, limits)
                } else {
                    let query = request.query.clone();
                    self.pool.run(move || Self::check(&query, limits)).await.map_err(|Overloaded| overloaded())?
                }?;
                if request.query.len() <= MAX_CACHED_QUERY {
                    if let Ok(mut docs) = self.parsed.lock() {
                        if docs.len() >= CAPACITY {
                            docs.clear();
                        }
                        docs.insert(request.query.clone(), checked.clone());
                    }
                }
                checked
            }
        };
        let only_queries = doc.operations.iter().all(|(_, op)| op.node.ty == OperationType::Query);
        let heavy = request.query.len() > CHEAP_TEXT || cost.work > CHEAP_WORK;
        request.set_parsed_query(doc);
        Ok(Admitted { request, heavy, only_queries })
    }

    /// Runs a request that may hold queries only (GET: a link or an image
    /// tag must not write).
    pub async fn execute_query(&self, request: Request) -> Result<Response, NotAQuery> {
        match self.admit(request).await {
            Ok(a) if !a.only_queries => Err(NotAQuery),
            Ok(a) => Ok(self.finish(a).await),
            Err(response) => Ok(*response),
        }
    }

    /// Validates (on the pool when heavy) and executes.
    async fn finish(&self, admitted: Admitted) -> Response {
        let response = if admitted.heavy {
            let schema = self.schema.clone();
            let execution = async move { schema.execute(admitted.request).await };
            match self.pool.first_poll(execution).await {
                Ok(r) => r,
                Err(Overloaded) => *overloaded(),
            }
        } else {
            self.schema.execute(admitted.request).await
        };
        label(response)
    }

    /// Runs one subscription (or any operation over WebSocket) as a stream.
    async fn stream(self, request: Request, data: Arc<Data>) -> BoxStream<'static, Response> {
        let single = |r: Box<Response>| futures::stream::once(async move { *r }).boxed();
        let admitted = match self.admit(request).await {
            Ok(a) => a,
            Err(response) => return single(response),
        };
        let stream = self.schema.execute_stream_with_session_data(admitted.request, data);
        if !admitted.heavy {
            return stream.map(label).boxed();
        }
        // Validation runs in the stream's first poll: make that one on the
        // pool, then go on as usual.
        match self.pool.first_poll(stream.into_future()).await {
            Ok((first, rest)) => futures::stream::iter(first).chain(rest).map(label).boxed(),
            Err(Overloaded) => single(overloaded()),
        }
    }
}

impl Executor for Api {
    async fn execute(&self, request: Request) -> Response {
        match self.admit(request).await {
            Ok(a) => self.finish(a).await,
            Err(response) => *response,
        }
    }

    fn execute_stream(&self, request: Request, session_data: Option<Arc<Data>>) -> BoxStream<'static, Response> {
        let api = self.clone();
        futures::stream::once(api.stream(request, session_data.unwrap_or_default())).flatten().boxed()
    }
}
