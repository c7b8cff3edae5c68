//! Who is calling, and what they may do.
//!
//! - [`jwt`]: bearer tokens (HS256 with a shared secret, RS256/ES256 with a
//!   public key), `exp`/`nbf`/`iss`/`aud` checked; `sub` is the principal, a
//!   `"role": "service"` claim marks a service principal (an AI backend
//!   writing replies) that may act on any thread.
//! - [`access`]: per-thread membership. The first writer of a thread owns it;
//!   owners and service principals add and remove members; reads, writes and
//!   subscriptions need membership, and a non-member gets `FORBIDDEN` whether
//!   the thread exists or not.
//!
//! With `AUTH_MODE=none` every caller is [`Caller::Open`]: no token, every
//! thread open (local use; the server prints a warning banner).

pub mod access;
pub mod jwt;

use std::sync::Arc;

use crate::config::{AuthMode, AuthSettings};
use jwt::Verifier;

/// An authenticated principal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The token's `sub`.
    pub id: String,
    /// A `"role": "service"` token.
    pub service: bool,
}

/// The caller of one request or WebSocket connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// `AUTH_MODE=none`: anyone, everywhere.
    Open,
    /// A verified token.
    Principal(Principal),
}

impl Caller {
    /// What messages saved by this caller carry as `authorId`.
    pub fn author_id(&self) -> Option<String> {
        match self {
            Caller::Open => None,
            Caller::Principal(p) => Some(p.id.clone()),
        }
    }

    /// The principal, unless authentication is off.
    pub fn principal(&self) -> Option<&Principal> {
        match self {
            Caller::Open => None,
            Caller::Principal(p) => Some(p),
        }
    }
}

/// Why a request was not authenticated (logged, never sent in detail).
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No bearer token.
    #[error("missing bearer token")]
    Missing,
    /// A token that does not verify.
    #[error("invalid token: {0}")]
    Invalid(String),
}

/// How requests are authenticated. Cheap to clone.
#[derive(Clone)]
pub enum Authenticator {
    /// `AUTH_MODE=none`.
    Open,
    /// Bearer JWTs.
    Jwt(Arc<Verifier>),
}

impl Authenticator {
    /// From the settings; refuses to start without a key in `jwt` mode.
    pub fn from_settings(s: &AuthSettings) -> anyhow::Result<Self> {
        match s.mode() {
            AuthMode::None => Ok(Authenticator::Open),
            AuthMode::Jwt => Ok(Authenticator::Jwt(Arc::new(Verifier::from_settings(s)?))),
        }
    }

    /// Whether authentication is off.
    pub fn is_open(&self) -> bool {
        matches!(self, Authenticator::Open)
    }

    /// From an `Authorization` header value (`Bearer <token>`).
    pub fn authenticate_header(&self, header: Option<&str>) -> Result<Caller, AuthError> {
        let token = match header {
            Some(h) => Some(
                h.strip_prefix("Bearer ")
                    .or_else(|| h.strip_prefix("bearer "))
                    .ok_or_else(|| AuthError::Invalid("not a bearer token".into()))?,
            ),
            None => None,
        };
        self.authenticate_token(token)
    }

    /// From a bare token.
    pub fn authenticate_token(&self, token: Option<&str>) -> Result<Caller, AuthError> {
        match self {
            Authenticator::Open => Ok(Caller::Open),
            Authenticator::Jwt(v) => v.verify(token.ok_or(AuthError::Missing)?.trim()).map(Caller::Principal),
        }
    }
}
