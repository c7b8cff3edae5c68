//! The GraphQL API (SPEC §3): schema assembly and limits in [`schema`],
//! resolvers per root type, object types in [`types`], the per-request
//! body loader in [`loader`], and the request wrapper (query cache, error codes) in [`executor`].

pub mod executor;
mod guard;
pub mod loader;
pub mod mutation;
pub mod query;
pub mod schema;
pub mod shape;
pub mod subscription;
pub mod types;

pub use executor::{Api, TextLimits};
pub use schema::{build_schema, sdl, AppSchema};
