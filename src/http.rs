//! The axum router: `/graphql` (POST, GET queries, WebSocket upgrade for
//! both subscription protocols), GraphiQL at `/`, Prometheus text at
//! `/metrics`, `/healthz` (alive) and `/readyz` (a tier can take writes).
//!
//! The edges, per the GraphQL-over-HTTP spec: POST bodies must be
//! `application/json` (or `application/graphql-response+json`): anything
//! else is 415, so no cross-site "simple request" can reach a resolver.
//! The answer is `application/graphql-response+json` when the client
//! accepts it (then a request error — parse, validation, limits — is a
//! 400), else `application/json` (always 200 for a well-formed request);
//! an `Accept` that allows neither is 406. Bodies are bounded (413), each
//! request has a deadline (408), batches (JSON arrays) are refused (400),
//! GET serves queries only (405 for mutations). A missing or invalid
//! bearer token is 401 before any GraphQL runs.

mod negotiate;
mod ws;

use std::sync::Arc;

use async_graphql::{
    http::{parse_query_string, GraphiQLSource, ALL_WEBSOCKET_PROTOCOLS},
    Data, Executor,
};
use async_graphql_axum::{rejection::GraphQLRejection, GraphQLProtocol, GraphQLRequest};
use axum::{
    extract::{RawQuery, State, WebSocketUpgrade},
    http::{header, HeaderMap, StatusCode},
    response::{Html, IntoResponse, Response},
    routing::get,
    Json, Router,
};
use tokio::sync::Semaphore;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tower_http::{
    limit::RequestBodyLimitLayer,
    timeout::TimeoutLayer,
    trace::{DefaultMakeSpan, DefaultOnResponse, TraceLayer},
};
use tracing::Level;

use crate::auth::{Authenticator, Caller};
use crate::config::LimitSettings;
use crate::graphql::{loader, Api, NotAQuery};
use crate::metrics::prometheus;
use crate::store::MessageStore;
use negotiate::{error_response, graphql_response, Media, Refusal};

/// Shared request state: cheap handles only.
#[derive(Clone)]
pub struct AppState {
    /// The GraphQL schema (holds the store, events and metrics), wrapped.
    pub api: Api,
    /// The storage facade.
    pub store: MessageStore,
    /// Shutdown signal.
    pub stop: CancellationToken,
    /// Tracks WebSocket connections so shutdown waits for their close.
    pub tracker: TaskTracker,
    /// Verifies bearer tokens.
    pub auth: Authenticator,
    /// One permit per open WebSocket (`MAX_WS_CONNECTIONS`).
    pub ws_permits: Arc<Semaphore>,
    /// Request and WebSocket limits.
    pub limits: Arc<LimitSettings>,
}

/// Builds the router.
pub fn router(state: AppState) -> Router {
    let limits = state.limits.clone();
    Router::new()
        .route("/graphql", get(graphql_get).post(graphql_post))
        .route("/", get(graphiql))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .layer(RequestBodyLimitLayer::new(limits.max_body_bytes))
        .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, limits.request_timeout()))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(DefaultMakeSpan::new().level(Level::INFO))
                .on_response(DefaultOnResponse::new().level(Level::INFO)),
        )
        .with_state(state)
}

fn request_data(store: &MessageStore, caller: Option<Caller>) -> Data {
    let mut data = Data::default();
    data.insert(loader::per_request(store.clone()));
    if let Some(c) = caller {
        data.insert(c);
    }
    data
}

/// The caller named by the `Authorization` header, or the 401 to send.
fn authenticate(state: &AppState, headers: &HeaderMap, media: Media) -> Result<Caller, Refusal> {
    let header = headers.get(header::AUTHORIZATION).and_then(|h| h.to_str().ok());
    state.auth.authenticate_header(header).map_err(|e| {
        tracing::info!(error = %e, "request not authenticated");
        let mut r =
            error_response(media, StatusCode::UNAUTHORIZED, "a valid bearer token is required", "UNAUTHENTICATED");
        r.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
        Box::new(r)
    })
}

async fn graphql_post(
    State(state): State<AppState>,
    headers: HeaderMap,
    req: Result<GraphQLRequest, GraphQLRejection>,
) -> Response {
    let media = match negotiate::accept(&headers) {
        Ok(m) => m,
        Err(r) => return *r,
    };
    if let Err(r) = negotiate::content_type(&headers, media) {
        return *r;
    }
    let caller = match authenticate(&state, &headers, media) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    let req = match req {
        Ok(r) => r.into_inner(),
        Err(rejection) => return negotiate::rejection(media, rejection),
    };
    let req = req.data(loader::per_request(state.store.clone())).data(caller);
    graphql_response(media, state.api.execute(req).await)
}

/// GET serves queries only (a mutation over GET is 405, so a link or an
/// image tag can't write), and upgrades WebSockets.
async fn graphql_get(
    State(state): State<AppState>,
    headers: HeaderMap,
    protocol: Result<GraphQLProtocol, <GraphQLProtocol as axum::extract::FromRequestParts<AppState>>::Rejection>,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
    RawQuery(query): RawQuery,
) -> Response {
    if let (Ok(protocol), Ok(upgrade)) = (protocol, upgrade) {
        return websocket(state, headers, protocol, upgrade);
    }
    let media = match negotiate::accept(&headers) {
        Ok(m) => m,
        Err(r) => return *r,
    };
    let caller = match authenticate(&state, &headers, media) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    let req = match parse_query_string(query.as_deref().unwrap_or_default()) {
        Ok(r) => r,
        Err(e) => return error_response(media, StatusCode::BAD_REQUEST, &e.to_string(), "BAD_REQUEST"),
    };
    let req = req.data(loader::per_request(state.store.clone())).data(caller);
    match state.api.execute_query(req).await {
        Ok(response) => graphql_response(media, response),
        Err(NotAQuery) => {
            (StatusCode::METHOD_NOT_ALLOWED, [("allow", "POST")], "mutations and subscriptions need POST or WebSocket")
                .into_response()
        }
    }
}

/// Upgrades to a WebSocket within the connection cap. The token may come in
/// the `Authorization` header (checked now) or in `connection_init`.
fn websocket(state: AppState, headers: HeaderMap, protocol: GraphQLProtocol, upgrade: WebSocketUpgrade) -> Response {
    let header_caller = match headers.get(header::AUTHORIZATION) {
        Some(_) => match authenticate(&state, &headers, Media::Json) {
            Ok(c) => Some(c),
            Err(r) => return *r,
        },
        None => None,
    };
    let Ok(permit) = state.ws_permits.clone().try_acquire_owned() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "too many WebSocket connections").into_response();
    };
    let max = state.limits.max_ws_message_bytes;
    // The extractor took the first subprotocol it supports, in the client's order.
    let legacy = headers
        .get(header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|h| h.to_str().ok())
        .and_then(|p| p.split(',').map(str::trim).find(|p| *p == "graphql-transport-ws" || *p == "graphql-ws"))
        == Some("graphql-ws");
    let conn = ws::Connection {
        api: state.api.clone(),
        protocol,
        legacy,
        data: request_data(&state.store, None),
        stop: state.stop.clone(),
        auth: state.auth.clone(),
        header_caller,
        limits: ws::WsLimits {
            init_timeout: state.limits.ws_init_timeout(),
            max_subscriptions: state.limits.max_subscriptions_per_connection,
        },
        permit,
    };
    let tracker = state.tracker.clone();
    upgrade
        .protocols(ALL_WEBSOCKET_PROTOCOLS)
        .max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |socket| tracker.track_future(ws::serve(socket, conn)))
        .into_response()
}

async fn graphiql() -> Html<String> {
    Html(GraphiQLSource::build().endpoint("/graphql").subscription_endpoint("/graphql").finish())
}

async fn metrics() -> impl IntoResponse {
    ([("content-type", "text/plain; version=0.0.4")], prometheus().render())
}

/// Ready when at least one tier can take writes: PostgreSQL alone is enough
/// (failover), Redis alone is enough (saves queue for persistence). Not
/// ready while the persistence backlog is at its bound (saves are refused).
async fn readyz(State(state): State<AppState>) -> Response {
    let r = state.store.readiness().await;
    let body = serde_json::json!({ "redis": r.redis, "postgres": r.postgres, "backpressure": r.backpressure });
    let status = if r.ready() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(body)).into_response()
}
