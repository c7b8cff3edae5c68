//! Schema assembly with the limits that keep the service safe.

use std::sync::Arc;

use async_graphql::Schema;
use tokio_util::sync::CancellationToken;

use super::{mutation::Mutation, query::Query, subscription::SubscriptionRoot};
use crate::config::LimitSettings;
use crate::events::Events;
use crate::metrics::Metrics;
use crate::rate::RateLimits;
use crate::store::MessageStore;

/// The service's schema type.
pub type AppSchema = Schema<Query, Mutation, SubscriptionRoot>;

/// The schema with its shared data. Depth 16 still admits GraphiQL's
/// introspection query.
pub fn build_schema(
    store: MessageStore,
    events: Events,
    metrics: Metrics,
    stop: CancellationToken,
    rate: Arc<RateLimits>,
    limits: &LimitSettings,
) -> AppSchema {
    let mut builder = Schema::build(Query, Mutation, SubscriptionRoot)
        .limit_depth(limits.max_query_depth)
        .limit_complexity(limits.max_query_complexity)
        .limit_directives(limits.max_directives)
        .data(store)
        .data(events)
        .data(metrics)
        .data(stop)
        .data(rate);
    if !limits.introspection {
        builder = builder.disable_introspection();
    }
    builder.finish()
}

/// The SDL, as committed in `schema.graphql`.
pub fn sdl() -> String {
    Schema::build(Query, Mutation, SubscriptionRoot).finish().sdl()
}
