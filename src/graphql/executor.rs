//! `Api`: the schema wrapped with the two things every request gets, for
//! HTTP and WebSocket alike.
//!
//! - **A parsed-query cache.** Clients send the same few operations over
//!   and over; parsing (a PEG parser) costs more than cloning the parsed
//!   document, so each distinct query text is parsed once.
//! - **`extensions.code` on every error.** Resolver errors carry theirs from
//!   [`crate::Error`]; the ones async-graphql raises itself (parse,
//!   validation, limits, input coercion) are labelled here, and any other
//!   message is replaced by a generic one so no internal text reaches a
//!   client.
//!
//! This is done around the schema rather than as schema extensions: any
//! extension makes async-graphql run a per-field hook chain (with a type
//! registry lookup per field), which costs more than everything here.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use async_graphql::{
    futures_util::stream::BoxStream, parser::types::ExecutableDocument, Data, Executor, Request, Response, ServerError,
};
use futures::StreamExt;

use super::AppSchema;
use crate::error::code;

/// Distinct query texts kept; past this the cache starts over (bounded
/// memory against clients that send ever-new texts).
const CAPACITY: usize = 512;
/// Longer query texts are not cached.
const MAX_CACHED_QUERY: usize = 8 * 1024;

/// Limits on the query text that async-graphql does not have itself.
#[derive(Debug, Clone, Copy)]
pub struct TextLimits {
    /// Longest query text, bytes.
    pub max_bytes: usize,
    /// Most aliased fields.
    pub max_aliases: usize,
    /// Most directives.
    pub max_directives: usize,
}

/// The schema as the HTTP and WebSocket layers use it. Cheap to clone.
#[derive(Clone)]
pub struct Api {
    schema: AppSchema,
    parsed: Arc<Mutex<HashMap<String, ExecutableDocument>>>,
    limits: TextLimits,
}

fn too_complex(message: String) -> Box<Response> {
    Box::new(Response::from_errors(vec![with_code(ServerError::new(message, None), code::QUERY_TOO_COMPLEX)]))
}

impl Api {
    /// Wraps a schema.
    pub fn new(schema: AppSchema, limits: TextLimits) -> Self {
        Self { schema, parsed: Arc::default(), limits }
    }

    /// Attaches the parsed document, from the cache or parsed now. Texts
    /// over the limits never reach the parser's cache.
    fn prepare(&self, mut request: Request) -> Result<Request, Box<Response>> {
        if let Some(doc) = self.parsed.lock().ok().and_then(|d| d.get(&request.query).cloned()) {
            request.set_parsed_query(doc);
            return Ok(request);
        }
        if request.query.len() > self.limits.max_bytes {
            return Err(too_complex(format!("query text is longer than {} bytes", self.limits.max_bytes)));
        }
        if !super::shape::nesting_ok(&request.query) {
            return Err(too_complex(format!("nested more than {} levels", super::shape::MAX_NESTING)));
        }
        let doc = async_graphql::parser::parse_query(&request.query).map_err(|e| {
            let e = ServerError::new(e.to_string(), e.positions().next());
            let c = if e.message.contains("recursion limit") { code::QUERY_TOO_COMPLEX } else { code::PARSE_FAILED };
            Box::new(Response::from_errors(vec![with_code(e, c)]))
        })?;
        let (aliases, directives) = super::shape::count(&doc);
        if aliases > self.limits.max_aliases {
            return Err(too_complex(format!("more than {} aliases", self.limits.max_aliases)));
        }
        if directives > self.limits.max_directives {
            return Err(too_complex(format!("more than {} directives", self.limits.max_directives)));
        }
        if request.query.len() <= MAX_CACHED_QUERY {
            if let Ok(mut docs) = self.parsed.lock() {
                if docs.len() >= CAPACITY {
                    docs.clear();
                }
                docs.insert(request.query.clone(), doc.clone());
            }
        }
        request.set_parsed_query(doc);
        Ok(request)
    }
}

impl Executor for Api {
    async fn execute(&self, request: Request) -> Response {
        match self.prepare(request) {
            Ok(request) => label(self.schema.execute(request).await),
            Err(response) => *response,
        }
    }

    fn execute_stream(&self, request: Request, session_data: Option<Arc<Data>>) -> BoxStream<'static, Response> {
        match self.prepare(request) {
            Ok(request) => Box::pin(
                self.schema.execute_stream_with_session_data(request, session_data.unwrap_or_default()).map(label),
            ),
            Err(response) => Box::pin(futures::stream::once(async move { *response })),
        }
    }
}

fn has_code(e: &ServerError) -> bool {
    e.extensions.as_ref().is_some_and(|x| x.get("code").is_some())
}

fn with_code(mut e: ServerError, c: &str) -> ServerError {
    if !has_code(&e) {
        e.extensions.get_or_insert_with(Default::default).set("code", c);
    }
    e
}

fn is_input_error(m: &str) -> bool {
    m.starts_with("Invalid value for argument")
        || m.starts_with("Invalid value for variable")
        || m.starts_with("Failed to parse")
        || (m.contains("Variable") && m.contains("is not defined"))
}

fn is_limit_error(m: &str) -> bool {
    m.contains("too complex")
        || m.contains("nested too deep")
        || m.contains("Too many")
        || m.contains("recursion depth")
        || m.contains("number of directives")
}

/// Gives every error of a response a code.
fn label(mut response: Response) -> Response {
    response.errors = std::mem::take(&mut response.errors).into_iter().map(label_error).collect();
    response
}

fn label_error(e: ServerError) -> ServerError {
    if has_code(&e) {
        e
    } else if is_limit_error(&e.message) {
        with_code(e, code::QUERY_TOO_COMPLEX)
    } else if is_input_error(&e.message) {
        with_code(e, code::BAD_USER_INPUT)
    } else if e.path.is_empty() {
        // Raised before execution (no field path): a validation rule.
        with_code(e, code::VALIDATION_FAILED)
    } else {
        tracing::error!(message = %e.message, "unlabelled GraphQL error");
        let mut generic = ServerError::new("internal server error", e.locations.first().copied());
        generic.path = e.path;
        with_code(generic, code::INTERNAL)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_by_origin() {
        let code_of =
            |e: ServerError| label_error(e).extensions.and_then(|x| x.get("code").cloned()).map(|v| v.to_string());
        assert_eq!(
            code_of(ServerError::new("Query is nested too deep.", None)).as_deref(),
            Some("\"QUERY_TOO_COMPLEX\"")
        );
        assert_eq!(
            code_of(ServerError::new("Unknown field \"x\"", None)).as_deref(),
            Some("\"GRAPHQL_VALIDATION_FAILED\"")
        );
        let mut internal = ServerError::new("pool timed out: select * from secrets", None);
        internal.path = vec![async_graphql::PathSegment::Field("thread".into())];
        let labelled = label_error(internal);
        assert_eq!(labelled.message, "internal server error", "no internal text leaks");
    }
}
