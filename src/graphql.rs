//! The GraphQL API (SPEC §3): schema assembly and limits in [`schema`],
//! resolvers per root type, object types in [`types`], the per-request
//! body loader in [`loader`], and error-code mapping in [`codes`].

pub mod codes;
pub mod loader;
pub mod mutation;
pub mod query;
pub mod schema;
pub mod subscription;
pub mod types;

pub use schema::{build_schema, sdl, AppSchema};
