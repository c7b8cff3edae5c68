//! GraphQL-over-HTTP: which media type to answer in, which request bodies
//! to accept, and which status a response gets.

use async_graphql::Value;
use async_graphql_axum::rejection::GraphQLRejection;
use axum::{
    http::{header, HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};

/// A request refused before GraphQL runs: the response to send (boxed, as
/// it is large and the happy path carries none).
pub type Refusal = Box<Response>;

/// The response media type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Media {
    /// `application/json`: 200 for every well-formed request.
    Json,
    /// `application/graphql-response+json`: request errors are 4xx.
    GraphqlResponse,
}

impl Media {
    fn content_type(self) -> &'static str {
        match self {
            Media::Json => "application/json; charset=utf-8",
            Media::GraphqlResponse => "application/graphql-response+json; charset=utf-8",
        }
    }
}

const GRAPHQL_RESPONSE: &str = "application/graphql-response+json";
const JSON: &str = "application/json";

/// Picks the media type from `Accept` (none: `application/json`); 406 when
/// neither JSON type is acceptable.
pub fn accept(headers: &HeaderMap) -> Result<Media, Refusal> {
    let Some(accept) = headers.get(header::ACCEPT).and_then(|h| h.to_str().ok()) else {
        return Ok(Media::Json);
    };
    let (mut json, mut graphql) = (false, false);
    for range in accept.split(',') {
        let mut parts = range.split(';');
        let ty = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
        let refused = parts.any(|p| {
            let p = p.trim().replace(' ', "");
            p.strip_prefix("q=").and_then(|q| q.parse::<f32>().ok()) == Some(0.0)
        });
        if refused {
            continue;
        }
        match ty.as_str() {
            GRAPHQL_RESPONSE => graphql = true,
            JSON | "application/*" | "*/*" => json = true,
            _ => {}
        }
    }
    match (graphql, json) {
        (true, _) => Ok(Media::GraphqlResponse),
        (false, true) => Ok(Media::Json),
        _ => Err(Box::new(
            (StatusCode::NOT_ACCEPTABLE, "accepts application/json or application/graphql-response+json")
                .into_response(),
        )),
    }
}

/// Only JSON bodies: 415 for anything else (including the CSRF-able
/// `text/plain`, form and multipart types) or no `Content-Type` at all.
pub fn content_type(headers: &HeaderMap, media: Media) -> Result<(), Refusal> {
    let ty = headers.get(header::CONTENT_TYPE).and_then(|h| h.to_str().ok()).unwrap_or_default();
    let mime = ty.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    if mime == JSON || mime == GRAPHQL_RESPONSE {
        Ok(())
    } else {
        Err(Box::new(error_response(
            media,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "the body must be application/json",
            "UNSUPPORTED_MEDIA_TYPE",
        )))
    }
}

/// A response with one error and no `data`.
pub fn error_response(media: Media, status: StatusCode, message: &str, code: &str) -> Response {
    let body = serde_json::json!({ "errors": [{ "message": message, "extensions": { "code": code } }] });
    let mut r = (status, body.to_string()).into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(media.content_type()));
    r
}

/// A body the GraphQL extractor refused: 413 past the size limit, else 400.
pub fn rejection(media: Media, rejection: GraphQLRejection) -> Response {
    let text = format!("{}", rejection.0);
    if text.contains("length limit") {
        return error_response(media, StatusCode::PAYLOAD_TOO_LARGE, "request body too large", "PAYLOAD_TOO_LARGE");
    }
    let message = match rejection.0 {
        async_graphql::ParseRequestError::UnsupportedBatch => "batched requests are not supported".to_owned(),
        _ => "the body is not a GraphQL request (a JSON object with a query)".to_owned(),
    };
    error_response(media, StatusCode::BAD_REQUEST, &message, "BAD_REQUEST")
}

/// The executed response with the status the media type calls for, and a
/// `Retry-After` header when a rate limit was hit or the service is
/// overloaded (503).
pub fn graphql_response(media: Media, response: async_graphql::Response) -> Response {
    // A request error (parse, validation, limits): nothing was executed.
    let request_error = response.data == Value::Null
        && !response.errors.is_empty()
        && response.errors.iter().all(|e| e.path.is_empty());
    let retry_after = response.errors.iter().find_map(|e| {
        let secs = e.extensions.as_ref()?.get("retryAfter")?;
        match secs {
            Value::Number(n) => n.as_u64(),
            _ => None,
        }
    });
    let mut body = match serde_json::to_value(&response) {
        Ok(v) => v,
        Err(_) => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    };
    if request_error {
        if let Some(obj) = body.as_object_mut() {
            obj.remove("data");
        }
    }
    // The compute pool was full: nothing ran, and either media type gets a
    // 503 so that proxies and clients back off.
    let overloaded = request_error
        && response.errors.iter().any(|e| {
            e.extensions.as_ref().and_then(|x| x.get("code"))
                == Some(&Value::String(crate::error::code::SERVICE_OVERLOADED.into()))
        });
    let retry_after = retry_after.or(overloaded.then_some(1));
    let status = match (overloaded, request_error, media) {
        (true, _, _) => StatusCode::SERVICE_UNAVAILABLE,
        (false, true, Media::GraphqlResponse) => StatusCode::BAD_REQUEST,
        _ => StatusCode::OK,
    };
    let mut r = (status, body.to_string()).into_response();
    let headers = r.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(media.content_type()));
    if let Some(secs) = retry_after {
        if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
            headers.insert(header::RETRY_AFTER, v);
        }
    }
    r
}
