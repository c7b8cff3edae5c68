//! `extensions.code` on every error of a response, by where the error came
//! from: resolver errors carry theirs from [`crate::Error`]; the ones
//! async-graphql raises itself (parse, validation, limits, input coercion)
//! are about the request and get a client code. A response also keeps at
//! most [`MAX_ERRORS`] errors.

use async_graphql::{Response, ServerError};

use crate::error::code;

/// Errors sent back in one response. A document at the limits can still
/// be wrong in thousands of places; past this they are counted, not sent,
/// so the answer's size stays bounded.
pub const MAX_ERRORS: usize = 100;

fn has_code(e: &ServerError) -> bool {
    e.extensions.as_ref().is_some_and(|x| x.get("code").is_some())
}

/// `e` with code `c`, unless it has one.
pub fn with_code(mut e: ServerError, c: &str) -> ServerError {
    if !has_code(&e) {
        e.extensions.get_or_insert_with(Default::default).set("code", c);
    }
    e
}

/// async-graphql's own limits, by the texts of the limits it enforces
/// (complexity, the parser's recursion depth); our checks run before
/// them and carry their codes already.
fn is_limit_error(m: &str) -> bool {
    m.contains("too complex") || m.contains("nested too deep") || m.contains("recursion depth")
}

/// Gives every error of a response a code, and keeps at most
/// [`MAX_ERRORS`] of them.
pub fn label(mut response: Response) -> Response {
    let errors = std::mem::take(&mut response.errors);
    let total = errors.len();
    response.errors = errors.into_iter().take(MAX_ERRORS).map(label_error).collect();
    if total > MAX_ERRORS {
        let code = response.errors.last().and_then(|e| e.extensions.as_ref()?.get("code").cloned());
        let mut more = ServerError::new(format!("{} more errors not shown", total - MAX_ERRORS), None);
        if let Some(c) = code {
            more.extensions.get_or_insert_with(Default::default).set("code", c);
        }
        response.errors.push(more);
    }
    response
}

/// Labels an error by where it came from, not by its wording:
/// - it carries a code: it is ours (every resolver error is a
///   [`crate::Error`], which always has one; `INTERNAL_SERVER_ERROR` among
///   them already has its generic message);
/// - no code and no path: async-graphql refused the request before running
///   it (validation, a limit, a variable's value): a client mistake, and
///   `BAD_USER_INPUT` when it is about a value (an argument's or a
///   variable's: "Invalid value for …"), else `GRAPHQL_VALIDATION_FAILED`;
/// - no code on a field's path: async-graphql could not coerce that
///   field's arguments (resolvers never raise code-less errors): a client
///   mistake too.
///
/// So no client mistake can become `INTERNAL_SERVER_ERROR`; the wording
/// only picks the more precise client code.
fn label_error(e: ServerError) -> ServerError {
    if has_code(&e) {
        e
    } else if is_limit_error(&e.message) {
        with_code(e, code::QUERY_TOO_COMPLEX)
    } else if e.path.is_empty() && !e.message.starts_with("Invalid value for") {
        with_code(e, code::VALIDATION_FAILED)
    } else {
        with_code(e, code::BAD_USER_INPUT)
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
        // Whatever async-graphql says while coercing a field's arguments,
        // in any wording, is the client's mistake.
        let mut coercion = ServerError::new("Expected input type \"MessageOrder\", found null.", None);
        coercion.path = vec![async_graphql::PathSegment::Field("messages".into())];
        assert_eq!(code_of(coercion).as_deref(), Some("\"BAD_USER_INPUT\""));
        // A resolver's internal error keeps its code and generic message.
        let internal: async_graphql::Error =
            crate::Error::Internal("pool timed out: select * from secrets".into()).into();
        let mut internal = internal.into_server_error(async_graphql::Pos::default());
        internal.path = vec![async_graphql::PathSegment::Field("thread".into())];
        let labelled = label_error(internal);
        assert!(!labelled.message.contains("secrets"), "no internal text leaks: {}", labelled.message);
        assert_eq!(code_of(labelled).as_deref(), Some("\"INTERNAL_SERVER_ERROR\""));
    }
}
