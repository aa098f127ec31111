//! Verification of the JWTs IDnow signs its webhooks with: RS256 with a key from IDnow's JWKS
//! (current documentation) and/or HS256 with a shared secret (onboarding guide). Only the configured
//! algorithms are accepted, so `alg: none` and algorithm confusion (an HS256 token "signed" with the
//! RSA public key) fail before any signature is computed.
//!
//! Claims: `iss` must be a string equal to the configured issuer (an array holding it is refused)
//! and `aud` must name the configured audience; `exp` and `iat` are required; `nbf` is honoured when
//! present. Time claims are checked against the injected clock with `leeway` seconds of tolerance for
//! clock skew (default 60 s). A header with `crit` is refused (RFC 7515 section 4.1.11: we implement
//! no extension), and header and claims are parsed strictly (a duplicate key is refused), the same
//! rules as for the tokens the receiver issues itself ([`super::oauth`]).
//!
//! HS256 accepts the current secret and, during a rotation, the previous one.

use super::jwks::JwksCache;
use super::{Check, Rejection};
use crate::clock::Clock;
use crate::provider::{MAX_JSON_DEPTH, parse_json_with_depth};
use base64::Engine;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Header, Validation, decode, decode_header};
use serde_json::{Map, Value};
use std::sync::Arc;

pub const MIN_HS256_SECRET_LEN: usize = 32;

pub struct JwtVerifier {
    pub(crate) jwks: Option<JwksCache>,
    /// Current secret first, then the previous one (rotation).
    pub(crate) hs256: Vec<DecodingKey>,
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
    /// `hs256_secrets`: the current secret, then optionally the previous one.
    pub fn new(
        jwks: Option<JwksCache>,
        hs256_secrets: &[&[u8]],
        issuer: String,
        audience: String,
        leeway_secs: u64,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            jwks,
            hs256: hs256_secrets
                .iter()
                .map(|s| DecodingKey::from_secret(s))
                .collect(),
            issuer,
            audience,
            leeway_secs,
            clock,
        }
    }

    pub async fn verify(&self, token: &str) -> Result<VerifiedJwt, Rejection> {
        let token = token.trim();
        // An unknown `alg` (including "none") does not even parse as a header.
        let header = jose_header(token)?;
        let (keys, check) = match (header.alg, &self.jwks, self.hs256.is_empty()) {
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
                    vec![key.ok_or(Rejection::Unauthorized("unknown JWT key id"))?],
                    Check::JwtRs256,
                )
            }
            (Algorithm::HS256, _, false) => (self.hs256.clone(), Check::JwtHs256),
            _ => return Err(Rejection::Unauthorized("JWT algorithm not accepted")),
        };

        let validation = validation(header.alg, &self.issuer, &self.audience, None);
        let mut result = Err(Rejection::Unauthorized("invalid JWT"));
        // The current key first; the previous one only when the signature did not match.
        for key in &keys {
            result = decode::<Map<String, Value>>(token, key, &validation)
                .map(|_| ())
                .map_err(|e| {
                    Rejection::Unauthorized(match e.kind() {
                        ErrorKind::InvalidSignature => "JWT signature invalid",
                        ErrorKind::InvalidIssuer => "JWT issuer not accepted",
                        ErrorKind::InvalidAudience => "JWT audience not accepted",
                        ErrorKind::InvalidAlgorithm => "JWT algorithm not accepted",
                        ErrorKind::MissingRequiredClaim(_) => "JWT lacks a required claim",
                        _ => "invalid JWT",
                    })
                });
            if result != Err(Rejection::Unauthorized("JWT signature invalid")) {
                break;
            }
        }
        result?;
        let claims = strict_claims(token)?;
        check_issuer(&claims, &self.issuer)?;
        check_times(&claims, self.clock.now_secs(), self.leeway_secs, true)?;
        Ok(VerifiedJwt { claims, check })
    }
}

/// The JOSE header, parsed strictly (no duplicate key) and without `crit`: RFC 7515 section 4.1.11
/// says a recipient must refuse a `crit` naming an extension it does not implement, and we implement
/// none.
pub(crate) fn jose_header(token: &str) -> Result<Header, Rejection> {
    let malformed = Rejection::Unauthorized("malformed JWT");
    let segment = token.split('.').next().ok_or(malformed)?;
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| malformed)?;
    let value = parse_json_with_depth(&raw, 4).map_err(|_| malformed)?;
    if value.get("crit").is_some() {
        return Err(Rejection::Unauthorized(
            "JWT names a critical extension (crit) this receiver does not implement",
        ));
    }
    decode_header(token).map_err(|_| malformed)
}

/// The claims of a token whose signature was verified, parsed strictly: a duplicate key would let
/// a reader that keeps the first value see another event than the one checked here. The event in
/// `data` may nest [`MAX_JSON_DEPTH`] levels, one more for the claims object around it.
pub(crate) fn strict_claims(token: &str) -> Result<Map<String, Value>, Rejection> {
    let malformed = Rejection::Unauthorized("malformed JWT");
    let segment = token.split('.').nth(1).ok_or(malformed)?;
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| malformed)?;
    match parse_json_with_depth(&raw, MAX_JSON_DEPTH + 1) {
        Ok(Value::Object(claims)) => Ok(claims),
        _ => Err(Rejection::Unauthorized(
            "JWT claims are not a JSON object without duplicate keys",
        )),
    }
}

/// The event in an IDnow compact-JWT body (its `data` claim), **without** checking the signature:
/// for an operator locating an event by a body they hold (`kyc-relay event idnow --body`), never
/// for intake. Parsed as strictly as the receiver parses a verified token.
pub fn unverified_event(token: &str) -> Result<Value, crate::provider::ParseError> {
    let claims = strict_claims(token.trim()).map_err(|_| {
        crate::provider::ParseError("body is neither JSON nor a compact JWT".into())
    })?;
    data_claim(&claims).cloned()
}

/// The event an IDnow JWT carries: its `data` claim, which must be an object.
pub(crate) fn data_claim(
    claims: &Map<String, Value>,
) -> Result<&Value, crate::provider::ParseError> {
    claims
        .get("data")
        .filter(|d| d.is_object())
        .ok_or_else(|| crate::provider::ParseError("JWT has no `data` object claim".into()))
}

/// `iss` must be a string equal to `issuer`. jsonwebtoken also accepts an array that contains it
/// (its `Issuer::Multiple`); RFC 7519 section 4.1.1 defines `iss` as one StringOrURI.
pub(crate) fn check_issuer(claims: &Map<String, Value>, issuer: &str) -> Result<(), Rejection> {
    match claims.get("iss") {
        Some(Value::String(iss)) if iss == issuer => Ok(()),
        _ => Err(Rejection::Unauthorized("JWT issuer not accepted")),
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
