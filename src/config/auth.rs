//! Authentication and per-principal rate-limit settings.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use super::SecretUrl;

/// How callers are authenticated.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum AuthMode {
    /// Bearer JWTs; threads have members.
    Jwt,
    /// No authentication, every thread open to every caller (local use only).
    None,
}

/// Authentication.
#[derive(Debug, Clone, Args)]
pub struct AuthSettings {
    /// `jwt` (default) or `none`.
    #[arg(long, env = "AUTH_MODE", value_enum, default_value = "jwt")]
    pub auth_mode: AuthMode,
    /// Same as AUTH_MODE=none: no authentication, for local use only.
    #[arg(long = "insecure-no-auth", default_value_t = false)]
    pub insecure_no_auth: bool,
    /// Shared secret for HS256 tokens.
    #[arg(long, env = "JWT_SECRET")]
    pub jwt_secret: Option<SecretUrl>,
    /// PEM public key for RS256 or ES256 tokens.
    #[arg(long, env = "JWT_PUBLIC_KEY_FILE")]
    pub jwt_public_key_file: Option<PathBuf>,
    /// Required `iss` claim.
    #[arg(long, env = "JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// Required `aud` claim.
    #[arg(long, env = "JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
}

impl AuthSettings {
    /// The effective mode (the flag wins).
    pub fn mode(&self) -> AuthMode {
        if self.insecure_no_auth {
            AuthMode::None
        } else {
            self.auth_mode
        }
    }
}

/// Per-principal rate limits. Service principals and `AUTH_MODE=none` are
/// not limited unless `RATE_LIMIT_ALL` is set.
#[derive(Debug, Clone, Args)]
pub struct RateSettings {
    /// Sustained saves per second per principal (0: unlimited).
    #[arg(long, env = "SAVE_RATE_PER_SEC", default_value_t = 20)]
    pub save_rate_per_sec: u32,
    /// Saves a principal may make in a burst.
    #[arg(long, env = "SAVE_BURST", default_value_t = 100)]
    pub save_burst: u32,
    /// Live subscriptions per principal (0: unlimited).
    #[arg(long, env = "MAX_SUBSCRIPTIONS_PER_PRINCIPAL", default_value_t = 50)]
    pub max_subscriptions_per_principal: u32,
    /// Limit service principals and AUTH_MODE=none callers too.
    #[arg(long, env = "RATE_LIMIT_ALL", default_value_t = false)]
    pub rate_limit_all: bool,
}
