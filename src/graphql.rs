//! The GraphQL API (SPEC §3): schema assembly and limits in [`schema`],
//! resolvers per root type, object types in [`types`], the per-request
//! body loader in [`loader`], and the request wrapper (query cache, cost limits) in [`executor`], error codes in [`labels`],
//! the linear measure of a document in [`cost`] and where heavy request
//! phases run in [`compute`].

pub mod compute;
pub mod cost;
pub mod executor;
mod guard;
pub mod labels;
pub mod loader;
pub mod mutation;
pub mod query;
pub mod schema;
pub mod shape;
pub mod subscription;
pub mod types;

pub use compute::ComputePool;
pub use executor::{Api, NotAQuery, QueryLimits};
pub use schema::{build_schema, sdl, unwired, AppSchema};
