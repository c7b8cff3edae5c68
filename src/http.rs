//! The axum router: `/graphql` (POST, GET queries, WebSocket upgrade for
//! both subscription protocols), GraphiQL at `/`, Prometheus text at
//! `/metrics`, `/healthz` (alive) and `/readyz` (a tier can take writes).

mod ws;

use async_graphql::{
    http::{parse_query_string, GraphiQLSource, ALL_WEBSOCKET_PROTOCOLS},
    parser::types::OperationType,
    Data, Executor,
};
use async_graphql_axum::{GraphQLProtocol, GraphQLRequest, GraphQLResponse};
use axum::{
    extract::{RawQuery, State, WebSocketUpgrade},
    http::StatusCode,
    response::{Html, IntoResponse, Response},
    routing::get,
    Json, Router,
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tower_http::{
    limit::RequestBodyLimitLayer,
    trace::{DefaultMakeSpan, DefaultOnResponse, TraceLayer},
};
use tracing::Level;

use crate::graphql::{loader, Api};
use crate::metrics::prometheus;
use crate::store::MessageStore;

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
}

/// Builds the router.
pub fn router(state: AppState, max_body_bytes: usize) -> Router {
    Router::new()
        .route("/graphql", get(graphql_get).post(graphql_post))
        .route("/", get(graphiql))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .layer(RequestBodyLimitLayer::new(max_body_bytes))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(DefaultMakeSpan::new().level(Level::INFO))
                .on_response(DefaultOnResponse::new().level(Level::INFO)),
        )
        .with_state(state)
}

fn request_data(store: &MessageStore) -> Data {
    let mut data = Data::default();
    data.insert(loader::per_request(store.clone()));
    data
}

async fn graphql_post(State(state): State<AppState>, req: GraphQLRequest) -> GraphQLResponse {
    let req = req.into_inner().data(loader::per_request(state.store.clone()));
    state.api.execute(req).await.into()
}

/// GET serves queries only (a mutation over GET is 405, so a link or an
/// image tag can't write), and upgrades WebSockets.
async fn graphql_get(
    State(state): State<AppState>,
    protocol: Result<GraphQLProtocol, <GraphQLProtocol as axum::extract::FromRequestParts<AppState>>::Rejection>,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
    RawQuery(query): RawQuery,
) -> Response {
    if let (Ok(protocol), Ok(upgrade)) = (protocol, upgrade) {
        let api = state.api.clone();
        let data = request_data(&state.store);
        return upgrade
            .protocols(ALL_WEBSOCKET_PROTOCOLS)
            .on_upgrade(move |socket| {
                let stop = state.stop.clone();
                state.tracker.track_future(ws::serve(socket, api, protocol, data, stop))
            })
            .into_response();
    }
    let req = match parse_query_string(query.as_deref().unwrap_or_default()) {
        Ok(r) => r,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    if let Ok(doc) = async_graphql::parser::parse_query(&req.query) {
        if doc.operations.iter().any(|(_, op)| op.node.ty != OperationType::Query) {
            return (
                StatusCode::METHOD_NOT_ALLOWED,
                [("allow", "POST")],
                "mutations and subscriptions need POST or WebSocket",
            )
                .into_response();
        }
    }
    let req = req.data(loader::per_request(state.store.clone()));
    GraphQLResponse::from(state.api.execute(req).await).into_response()
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
    let (redis, pg) = tokio::join!(state.store.redis().ping(), state.store.pg().ping());
    let backpressure = state.store.backpressure().is_active();
    let body = serde_json::json!({ "redis": redis.is_ok(), "postgres": pg.is_ok(), "backpressure": backpressure });
    let ready = (redis.is_ok() || pg.is_ok()) && !backpressure;
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(body)).into_response()
}
