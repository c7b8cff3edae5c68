//! Bearer JWT verification (`jsonwebtoken`).

use anyhow::{bail, Context};
use jsonwebtoken::{decode, Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use super::{AuthError, Principal};
use crate::config::AuthSettings;

/// Longest `sub` accepted (it is stored with every message).
const MAX_SUBJECT: usize = 256;

#[derive(Deserialize)]
struct Claims {
    sub: String,
    #[serde(default)]
    role: Option<String>,
}

/// Verifies tokens with one key and one algorithm.
pub struct Verifier {
    key: DecodingKey,
    validation: Validation,
}

impl Verifier {
    /// HS256 with `JWT_SECRET`, or RS256/ES256 with the PEM public key in
    /// `JWT_PUBLIC_KEY_FILE` (the key's type picks the algorithm).
    pub fn from_settings(s: &AuthSettings) -> anyhow::Result<Self> {
        let (key, algorithm) = match (&s.jwt_secret, &s.jwt_public_key_file) {
            (Some(secret), None) => {
                if secret.expose().len() < 32 {
                    bail!("JWT_SECRET must be at least 32 bytes");
                }
                (DecodingKey::from_secret(secret.expose().as_bytes()), Algorithm::HS256)
            }
            (None, Some(path)) => {
                let pem =
                    std::fs::read(path).with_context(|| format!("reading JWT_PUBLIC_KEY_FILE {}", path.display()))?;
                match DecodingKey::from_rsa_pem(&pem) {
                    Ok(key) => (key, Algorithm::RS256),
                    Err(_) => (
                        DecodingKey::from_ec_pem(&pem)
                            .context("JWT_PUBLIC_KEY_FILE is neither an RSA nor an EC public key")?,
                        Algorithm::ES256,
                    ),
                }
            }
            (Some(_), Some(_)) => bail!("set JWT_SECRET or JWT_PUBLIC_KEY_FILE, not both"),
            (None, None) => bail!(
                "AUTH_MODE=jwt needs JWT_SECRET (HS256) or JWT_PUBLIC_KEY_FILE (RS256/ES256); \
                 AUTH_MODE=none or --insecure-no-auth turns authentication off for local use"
            ),
        };
        let mut validation = Validation::new(algorithm);
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = 30;
        if let Some(iss) = &s.jwt_issuer {
            validation.set_issuer(&[iss]);
            validation.required_spec_claims.insert("iss".into());
        }
        match &s.jwt_audience {
            Some(aud) => {
                validation.set_audience(&[aud]);
                validation.required_spec_claims.insert("aud".into());
            }
            None => validation.validate_aud = false,
        }
        Ok(Self { key, validation })
    }

    /// The principal a token names, if it verifies.
    pub fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        let data =
            decode::<Claims>(token, &self.key, &self.validation).map_err(|e| AuthError::Invalid(e.to_string()))?;
        let Claims { sub, role } = data.claims;
        if sub.is_empty() || sub.len() > MAX_SUBJECT || sub.chars().any(char::is_control) {
            return Err(AuthError::Invalid("unusable sub".into()));
        }
        Ok(Principal { id: sub, service: role.as_deref() == Some("service") })
    }
}
