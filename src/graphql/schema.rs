//! Schema assembly with the limits that keep the service safe.

use std::sync::Arc;

use async_graphql::{Schema, SchemaBuilder};
use tokio_util::sync::CancellationToken;

use super::{mutation::Mutation, query::Query, subscription::SubscriptionRoot};
use crate::config::LimitSettings;
use crate::live::Events;
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
    builder(limits).data(store).data(events).data(metrics).data(stop).data(rate).finish()
}

/// The schema with the service's limits and no data: it validates as the
/// service does, and every resolver fails cleanly (the fuzz target runs
/// documents through it).
pub fn unwired(limits: &LimitSettings) -> AppSchema {
    builder(limits).finish()
}

fn builder(limits: &LimitSettings) -> SchemaBuilder<Query, Mutation, SubscriptionRoot> {
    let builder = Schema::build(Query, Mutation, SubscriptionRoot)
        .limit_depth(limits.max_query_depth)
        .limit_complexity(limits.max_query_complexity)
        .limit_directives(limits.max_directives);
    if limits.introspection {
        builder
    } else {
        builder.disable_introspection()
    }
}

/// The SDL, as committed in `schema.graphql`.
pub fn sdl() -> String {
    Schema::build(Query, Mutation, SubscriptionRoot).finish().sdl()
}
