//! Verification of the JWTs IDnow signs its webhooks with: RS256 with a key from IDnow's JWKS
//! (current documentation) and/or HS256 with a shared secret (onboarding guide). Only the configured
//! algorithms are accepted, so `alg: none` and algorithm confusion (an HS256 token "signed" with the
//! RSA public key) fail before any signature is computed.
//!
//! Claims: `iss` and `aud` must equal the configured values; `exp` and `iat` are required; `nbf` is
//! honoured when present. Time claims are checked against the injected clock with `leeway` seconds
//! of tolerance for clock skew (default 60 s).

use super::jwks::JwksCache;
use super::{Check, Rejection};
use crate::clock::Clock;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use serde_json::{Map, Value};
use std::sync::Arc;

pub const MIN_HS256_SECRET_LEN: usize = 32;

pub struct JwtVerifier {
    pub(crate) jwks: Option<JwksCache>,
    pub(crate) hs256: Option<DecodingKey>,
    issuer: String,
    audience: String,
    leeway_secs: u64,
    clock: Arc<dyn Clock>,
}

pub struct VerifiedJwt {
    pub claims: Map<String, Value>,
    pub check: Check,
}

impl JwtVerifier {
    pub fn new(
        jwks: Option<JwksCache>,
        hs256_secret: Option<&[u8]>,
        issuer: String,
        audience: String,
        leeway_secs: u64,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            jwks,
            hs256: hs256_secret.map(DecodingKey::from_secret),
            issuer,
            audience,
            leeway_secs,
            clock,
        }
    }

    pub async fn verify(&self, token: &str) -> Result<VerifiedJwt, Rejection> {
        let token = token.trim();
        // An unknown `alg` (including "none") does not even parse as a header.
        let header = decode_header(token).map_err(|_| Rejection::Unauthorized("malformed JWT"))?;
        let (key, check) = match (header.alg, &self.jwks, &self.hs256) {
            (Algorithm::RS256, Some(jwks), _) => {
                let kid = header
                    .kid
                    .as_deref()
                    .ok_or(Rejection::Unauthorized("JWT has no kid"))?;
                let key = jwks.key(kid).await.map_err(|e| {
                    tracing::error!(error = %e, "cannot verify JWT: JWKS unavailable");
                    Rejection::Unavailable("signing keys unavailable")
                })?;
                (
                    key.ok_or(Rejection::Unauthorized("unknown JWT key id"))?,
                    Check::JwtRs256,
                )
            }
            (Algorithm::HS256, _, Some(secret)) => (secret.clone(), Check::JwtHs256),
            _ => return Err(Rejection::Unauthorized("JWT algorithm not accepted")),
        };

        let validation = validation(header.alg, &self.issuer, &self.audience, None);
        let data = decode::<Map<String, Value>>(token, &key, &validation).map_err(|e| {
            Rejection::Unauthorized(match e.kind() {
                ErrorKind::InvalidSignature => "JWT signature invalid",
                ErrorKind::InvalidIssuer => "JWT issuer not accepted",
                ErrorKind::InvalidAudience => "JWT audience not accepted",
                ErrorKind::InvalidAlgorithm => "JWT algorithm not accepted",
                ErrorKind::MissingRequiredClaim(_) => "JWT lacks a required claim",
                _ => "invalid JWT",
            })
        })?;
        check_times(&data.claims, self.clock.now_secs(), self.leeway_secs, true)?;
        Ok(VerifiedJwt {
            claims: data.claims,
            check,
        })
    }
}

/// What jsonwebtoken checks for every JWT we accept: the one algorithm, `iss`, `aud` and, when
/// given, `sub`. Time claims are left to [`check_times`], against the injected clock.
pub(crate) fn validation(
    alg: Algorithm,
    issuer: &str,
    audience: &str,
    subject: Option<&str>,
) -> Validation {
    let mut v = Validation::new(alg);
    v.validate_exp = false;
    v.required_spec_claims = ["iss", "aud"].iter().map(|s| s.to_string()).collect();
    v.set_issuer(&[issuer]);
    v.set_audience(&[audience]);
    if let Some(sub) = subject {
        v.required_spec_claims.insert("sub".into());
        v.sub = Some(sub.to_string());
    }
    v
}

/// `exp` (required), `nbf` (optional) and `iat` (required when `require_iat`), with leeway.
pub(crate) fn check_times(
    claims: &Map<String, Value>,
    now: u64,
    leeway: u64,
    require_iat: bool,
) -> Result<(), Rejection> {
    let number = |name: &str| claims.get(name).and_then(Value::as_f64);
    let exp = number("exp").ok_or(Rejection::Unauthorized("JWT lacks a required claim"))?;
    if (now as f64) > exp + leeway as f64 {
        return Err(Rejection::Unauthorized("JWT expired"));
    }
    if let Some(nbf) = number("nbf")
        && ((now + leeway) as f64) < nbf
    {
        return Err(Rejection::Unauthorized("JWT not yet valid"));
    }
    match number("iat") {
        Some(iat) if iat > (now + leeway) as f64 => {
            Err(Rejection::Unauthorized("JWT issued in the future"))
        }
        None if require_iat => Err(Rejection::Unauthorized("JWT lacks a required claim")),
        _ => Ok(()),
    }
}
