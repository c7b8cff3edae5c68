//! The one error type of the API boundary, and the single place it becomes a
//! GraphQL error with a stable `extensions.code`.
//!
//! It deliberately does not implement `Display`: async-graphql converts any
//! `Display` type into a client-visible message, which is how database text
//! leaks. Internal causes are logged here, once, and clients get a generic
//! message.

use async_graphql::ErrorExtensions;

use crate::domain::{Refusal, ValidationError};
use crate::store::StoreError;

/// Stable error codes clients can branch on.
pub mod code {
    /// Query text did not parse.
    pub const PARSE_FAILED: &str = "GRAPHQL_PARSE_FAILED";
    /// Query is not valid against the schema.
    pub const VALIDATION_FAILED: &str = "GRAPHQL_VALIDATION_FAILED";
    /// An argument or variable is invalid.
    pub const BAD_USER_INPUT: &str = "BAD_USER_INPUT";
    /// Neither tier could take the write; nothing was stored.
    pub const STORAGE_UNAVAILABLE: &str = "STORAGE_UNAVAILABLE";
    /// An idempotency key was re-sent with a different payload.
    pub const IDEMPOTENCY_KEY_REUSED: &str = "IDEMPOTENCY_KEY_REUSED";
    /// Depth, complexity, alias, directive or length limit exceeded.
    pub const QUERY_TOO_COMPLEX: &str = "QUERY_TOO_COMPLEX";
    /// The compute pool for heavy requests is full; retry shortly (HTTP 503).
    pub const SERVICE_OVERLOADED: &str = "SERVICE_OVERLOADED";
    /// No valid credentials.
    pub const UNAUTHENTICATED: &str = "UNAUTHENTICATED";
    /// Not allowed on this thread (also for threads that do not exist).
    pub const FORBIDDEN: &str = "FORBIDDEN";
    /// Over a per-principal limit; `extensions.retryAfter` says when to retry (seconds).
    pub const RATE_LIMITED: &str = "RATE_LIMITED";
    /// No such message (or not one the caller may read).
    pub const NOT_FOUND: &str = "NOT_FOUND";
    /// `expectedVersion` is not the message's version; `extensions.currentVersion` is.
    pub const VERSION_CONFLICT: &str = "VERSION_CONFLICT";
    /// The message is a tombstone.
    pub const MESSAGE_DELETED: &str = "MESSAGE_DELETED";
    /// Anything else; the message is generic.
    pub const INTERNAL: &str = "INTERNAL_SERVER_ERROR";
}

/// Everything a resolver can fail with.
#[derive(Debug, Clone)]
pub enum Error {
    /// Invalid argument.
    BadInput(ValidationError),
    /// `clientMessageId` reused for a different payload.
    IdempotencyKeyReused,
    /// No tier can serve the request; `maybe_stored` as in [`StoreError::Unavailable`].
    StorageUnavailable {
        /// The write may have been applied: retry with the same `clientMessageId`.
        maybe_stored: bool,
    },
    /// No tier could serve a read (nothing was attempted to be stored).
    ReadUnavailable,
    /// No valid credentials.
    Unauthenticated,
    /// Not a member (or not the owner) of the thread.
    Forbidden,
    /// Over a per-principal limit.
    RateLimited {
        /// Seconds until a retry can succeed.
        retry_after_secs: u64,
    },
    /// No such message, or not one the caller may read.
    NotFound,
    /// The message is at another version.
    VersionConflict {
        /// Its version now.
        current: i32,
    },
    /// The message is a tombstone.
    MessageDeleted,
    /// A bug or an unexpected failure; the string is for logs only.
    Internal(String),
}

impl Error {
    /// The same error, worded for a read: an unavailable store did not
    /// fail to store anything.
    pub fn on_read(self) -> Self {
        match self {
            Error::StorageUnavailable { .. } => Error::ReadUnavailable,
            other => other,
        }
    }
}

impl From<ValidationError> for Error {
    fn from(e: ValidationError) -> Self {
        Error::BadInput(e)
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable { maybe_stored } => Error::StorageUnavailable { maybe_stored },
            StoreError::IdempotencyKeyReused => Error::IdempotencyKeyReused,
            StoreError::Refused(Refusal::NotFound) => Error::NotFound,
            StoreError::Refused(Refusal::VersionConflict { current }) => Error::VersionConflict { current },
            StoreError::Refused(Refusal::Deleted) => Error::MessageDeleted,
            StoreError::Internal(msg) => Error::Internal(msg),
        }
    }
}

impl From<async_graphql::Error> for Error {
    fn from(e: async_graphql::Error) -> Self {
        Error::Internal(e.message)
    }
}

impl From<Error> for async_graphql::Error {
    fn from(e: Error) -> Self {
        let maybe_stored = matches!(e, Error::StorageUnavailable { maybe_stored: true });
        let retry_after = match e {
            Error::RateLimited { retry_after_secs } => Some(retry_after_secs),
            _ => None,
        };
        let current_version = match e {
            Error::VersionConflict { current } => Some(current),
            _ => None,
        };
        let (code, message) = match e {
            Error::BadInput(v) => (code::BAD_USER_INPUT, v.to_string()),
            Error::IdempotencyKeyReused => (
                code::IDEMPOTENCY_KEY_REUSED,
                "clientMessageId was already used in this thread for a different message".into(),
            ),
            Error::StorageUnavailable { maybe_stored: false } => {
                (code::STORAGE_UNAVAILABLE, "storage is unavailable; the message was not stored".into())
            }
            Error::StorageUnavailable { maybe_stored: true } => (
                code::STORAGE_UNAVAILABLE,
                "storage is unavailable; the message may have been stored: retry with the same clientMessageId".into(),
            ),
            Error::ReadUnavailable => (
                code::STORAGE_UNAVAILABLE,
                "storage is unavailable; the read could not be served: retry shortly".into(),
            ),
            Error::Unauthenticated => (code::UNAUTHENTICATED, "a valid bearer token is required".into()),
            Error::Forbidden => (code::FORBIDDEN, "not allowed on this thread".into()),
            Error::RateLimited { .. } => (code::RATE_LIMITED, "too many requests; retry later".into()),
            Error::NotFound => (code::NOT_FOUND, "no such message".into()),
            Error::VersionConflict { .. } => {
                (code::VERSION_CONFLICT, "the message changed since that version: read it and decide again".into())
            }
            Error::MessageDeleted => (code::MESSAGE_DELETED, "the message was deleted".into()),
            Error::Internal(cause) => {
                tracing::error!(%cause, "internal error");
                (code::INTERNAL, "internal server error".into())
            }
        };
        async_graphql::Error::new(message).extend_with(|_, ext| {
            ext.set("code", code);
            // Clients (and the fault harness) tell "certainly not stored"
            // from "outcome unknown" by this flag.
            if maybe_stored {
                ext.set("maybeStored", true);
            }
            if let Some(secs) = retry_after {
                ext.set("retryAfter", secs);
            }
            if let Some(v) = current_version {
                ext.set("currentVersion", v);
            }
        })
    }
}
