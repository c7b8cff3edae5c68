//! Gives every error an `extensions.code`. Resolver errors carry theirs from
//! [`crate::Error`]; this extension labels the ones async-graphql raises
//! itself (parse, validation, limits, input coercion) and replaces any other
//! message with a generic one, so no internal text reaches a client.

use std::sync::Arc;

use async_graphql::{
    extensions::{
        Extension, ExtensionContext, ExtensionFactory, NextParseQuery, NextRequest, NextSubscribe,
        NextValidation,
    },
    futures_util::stream::BoxStream,
    parser::types::ExecutableDocument,
    Response, ServerError, ServerResult, ValidationResult, Variables,
};
use futures::StreamExt;

use crate::error::code;

/// The extension factory; add it to the schema.
pub struct ErrorCodes;

impl ExtensionFactory for ErrorCodes {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(ErrorCodesExtension)
    }
}

struct ErrorCodesExtension;

fn has_code(e: &ServerError) -> bool {
    e.extensions
        .as_ref()
        .is_some_and(|x| x.get("code").is_some())
}

fn with_code(mut e: ServerError, c: &str) -> ServerError {
    if !has_code(&e) {
        e.extensions
            .get_or_insert_with(Default::default)
            .set("code", c);
    }
    e
}

fn is_input_error(m: &str) -> bool {
    m.starts_with("Invalid value for argument")
        || m.starts_with("Invalid value for variable")
        || m.starts_with("Failed to parse")
        || m.contains("Variable") && m.contains("is not defined")
}

fn is_limit_error(m: &str) -> bool {
    m.contains("too complex") || m.contains("nested too deep") || m.contains("Too many")
}

fn classify_validation(e: ServerError) -> ServerError {
    let c = if is_limit_error(&e.message) {
        code::QUERY_TOO_COMPLEX
    } else if is_input_error(&e.message) {
        code::BAD_USER_INPUT
    } else {
        code::VALIDATION_FAILED
    };
    with_code(e, c)
}

fn finish(mut resp: Response) -> Response {
    resp.errors = std::mem::take(&mut resp.errors)
        .into_iter()
        .map(|e| {
            if has_code(&e) {
                e
            } else if is_input_error(&e.message) {
                with_code(e, code::BAD_USER_INPUT)
            } else if is_limit_error(&e.message) {
                with_code(e, code::QUERY_TOO_COMPLEX)
            } else {
                tracing::error!(message = %e.message, "unlabelled GraphQL error");
                let mut generic =
                    ServerError::new("internal server error", e.locations.first().copied());
                generic.path = e.path;
                with_code(generic, code::INTERNAL)
            }
        })
        .collect();
    resp
}

#[async_trait::async_trait]
impl Extension for ErrorCodesExtension {
    async fn request(&self, ctx: &ExtensionContext<'_>, next: NextRequest<'_>) -> Response {
        finish(next.run(ctx).await)
    }

    fn subscribe<'s>(
        &self,
        ctx: &ExtensionContext<'_>,
        stream: BoxStream<'s, Response>,
        next: NextSubscribe<'_>,
    ) -> BoxStream<'s, Response> {
        Box::pin(next.run(ctx, stream).map(finish))
    }

    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        next.run(ctx, query, variables)
            .await
            .map_err(|e| with_code(e, code::PARSE_FAILED))
    }

    async fn validation(
        &self,
        ctx: &ExtensionContext<'_>,
        next: NextValidation<'_>,
    ) -> Result<ValidationResult, Vec<ServerError>> {
        next.run(ctx)
            .await
            .map_err(|errs| errs.into_iter().map(classify_validation).collect())
    }
}
