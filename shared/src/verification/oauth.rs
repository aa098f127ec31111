//! OAuth 2.0 client credentials (RFC 6749 section 4.4) for Incode's webhook authentication: Incode
//! fetches a token from `/oauth/token` with the client id and secret configured in its dashboard,
//! then sends `Authorization: Bearer <token>` on every webhook.
//!
//! Tokens are HS256 JWTs signed with a key only this service holds (`iss`, `aud`, `sub` = client id,
//! `iat`, `exp`, `jti`). Verifying them needs no storage: any receiver instance checks the
//! signature, issuer, audience, subject and expiry.

use super::jwt::{check_times, validation};
use super::{Check, Rejection, digests_equal, secret_digest};
use crate::clock::Clock;
use crate::config::ConfigError;
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, decode, encode};
use serde::Serialize;
use serde_json::{Map, Value, json};
use std::sync::Arc;

pub const MIN_SECRET_LEN: usize = 32;
const LEEWAY_SECS: u64 = 30;

pub struct TokenIssuer {
    client_id: String,
    client_id_digest: [u8; 32],
    client_secret_digest: [u8; 32],
    encoding: EncodingKey,
    decoding: DecodingKey,
    issuer: String,
    audience: String,
    ttl_secs: u64,
    clock: Arc<dyn Clock>,
}

pub struct OAuthSettings<'a> {
    pub client_id: &'a str,
    pub client_secret: &'a str,
    pub signing_key: &'a str,
    pub issuer: String,
    pub audience: String,
    pub ttl_secs: u64,
}

/// An RFC 6749 section 5.2 error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthError {
    pub status: u16,
    pub error: &'static str,
    pub description: &'static str,
    /// Whether to answer with `WWW-Authenticate: Basic` (client tried HTTP Basic).
    pub basic_challenge: bool,
}

impl OAuthError {
    fn invalid_request(description: &'static str) -> Self {
        Self {
            status: 400,
            error: "invalid_request",
            description,
            basic_challenge: false,
        }
    }

    pub fn body(&self) -> String {
        json!({"error": self.error, "error_description": self.description}).to_string()
    }
}

#[derive(Debug, Serialize)]
pub struct TokenResponse {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    aud: &'a str,
    sub: &'a str,
    iat: u64,
    exp: u64,
    jti: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<&'a str>,
}

impl TokenIssuer {
    pub fn new(settings: OAuthSettings<'_>, clock: Arc<dyn Clock>) -> Result<Self, ConfigError> {
        if settings.client_secret.len() < MIN_SECRET_LEN {
            return Err(ConfigError::new(
                "OAUTH_CLIENT_SECRET",
                format!("must be at least {MIN_SECRET_LEN} bytes"),
            ));
        }
        if settings.signing_key.len() < MIN_SECRET_LEN {
            return Err(ConfigError::new(
                "OAUTH_TOKEN_SIGNING_KEY",
                format!("must be at least {MIN_SECRET_LEN} bytes"),
            ));
        }
        if !(60..=86_400).contains(&settings.ttl_secs) {
            return Err(ConfigError::new(
                "OAUTH_TOKEN_TTL_SECONDS",
                "must be between 60 and 86400",
            ));
        }
        Ok(Self {
            client_id: settings.client_id.to_string(),
            client_id_digest: secret_digest(settings.client_id.as_bytes()),
            client_secret_digest: secret_digest(settings.client_secret.as_bytes()),
            encoding: EncodingKey::from_secret(settings.signing_key.as_bytes()),
            decoding: DecodingKey::from_secret(settings.signing_key.as_bytes()),
            issuer: settings.issuer,
            audience: settings.audience,
            ttl_secs: settings.ttl_secs,
            clock,
        })
    }

    /// Handles a token request: `authorization` is the request's Authorization header (if any),
    /// `form` its `application/x-www-form-urlencoded` body.
    pub fn issue(
        &self,
        authorization: Option<&str>,
        form: &[u8],
    ) -> Result<TokenResponse, OAuthError> {
        let params: Vec<(String, String)> = serde_urlencoded::from_bytes(form)
            .map_err(|_| OAuthError::invalid_request("body is not a valid form"))?;
        let param = |name: &str| -> Result<Option<&str>, OAuthError> {
            let mut found = params
                .iter()
                .filter(|(k, _)| k == name)
                .map(|(_, v)| v.as_str());
            match (found.next(), found.next()) {
                (_, Some(_)) => Err(OAuthError::invalid_request("a parameter is repeated")),
                (v, None) => Ok(v),
            }
        };

        let basic = authorization.map(parse_basic).transpose()?;
        let body_id = param("client_id")?;
        let body_secret = param("client_secret")?;
        let (client_id, client_secret, used_basic) = match (basic, body_id, body_secret) {
            (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
                return Err(OAuthError::invalid_request(
                    "use one client authentication method, not two",
                ));
            }
            (Some((id, secret)), None, None) => (id, secret, true),
            (None, Some(id), Some(secret)) => (id.to_string(), secret.to_string(), false),
            (None, _, _) => {
                return Err(OAuthError {
                    status: 401,
                    error: "invalid_client",
                    description: "client authentication missing",
                    basic_challenge: true,
                });
            }
        };
        // Both compared, in constant time, before deciding: no early exit tells which one was wrong.
        let id_ok = digests_equal(&secret_digest(client_id.as_bytes()), &self.client_id_digest);
        let secret_ok = digests_equal(
            &secret_digest(client_secret.as_bytes()),
            &self.client_secret_digest,
        );
        if !(id_ok & secret_ok) {
            return Err(OAuthError {
                status: 401,
                error: "invalid_client",
                description: "client authentication failed",
                basic_challenge: used_basic,
            });
        }

        match param("grant_type")? {
            None => return Err(OAuthError::invalid_request("grant_type is missing")),
            Some("client_credentials") => {}
            Some(_) => {
                return Err(OAuthError {
                    status: 400,
                    error: "unsupported_grant_type",
                    description: "only client_credentials is supported",
                    basic_challenge: false,
                });
            }
        }
        let scope = param("scope")?;

        let now = self.clock.now_secs();
        let claims = Claims {
            iss: &self.issuer,
            aud: &self.audience,
            sub: &self.client_id,
            iat: now,
            exp: now + self.ttl_secs,
            jti: format!("{:032x}", fastrand::u128(..)),
            scope,
        };
        let access_token = encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|_| OAuthError {
                status: 500,
                error: "server_error",
                description: "could not sign the token",
                basic_challenge: false,
            })?;
        Ok(TokenResponse {
            access_token,
            token_type: "Bearer",
            expires_in: self.ttl_secs,
            scope: scope.map(str::to_string),
        })
    }

    /// Checks `Authorization: Bearer <token>` against the tokens this service issues.
    pub fn verify_bearer(&self, authorization: Option<&str>) -> Result<Check, Rejection> {
        let header = authorization.ok_or(Rejection::Unauthorized("bearer token missing"))?;
        let token = header
            .split_once(' ')
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim())
            .ok_or(Rejection::Unauthorized("bearer token missing"))?;
        let validation = validation(
            Algorithm::HS256,
            &self.issuer,
            &self.audience,
            Some(&self.client_id),
        );
        let data = decode::<Map<String, Value>>(token, &self.decoding, &validation)
            .map_err(|_| Rejection::Unauthorized("bearer token invalid"))?;
        check_times(&data.claims, self.clock.now_secs(), LEEWAY_SECS, true)?;
        Ok(Check::BearerToken)
    }
}

/// `Basic base64(urlencode(id) ":" urlencode(secret))` (RFC 6749 section 2.3.1).
fn parse_basic(header: &str) -> Result<(String, String), OAuthError> {
    let bad = || OAuthError {
        status: 401,
        error: "invalid_client",
        description: "malformed Basic authorization",
        basic_challenge: true,
    };
    let (scheme, encoded) = header.trim().split_once(' ').ok_or_else(bad)?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(bad());
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| bad())?;
    let decoded = String::from_utf8(decoded).map_err(|_| bad())?;
    let (id, secret) = decoded.split_once(':').ok_or_else(bad)?;
    let unescape = |s: &str| {
        percent_encoding::percent_decode_str(&s.replace('+', " "))
            .decode_utf8()
            .map(|c| c.into_owned())
            .map_err(|_| bad())
    };
    Ok((unescape(id)?, unescape(secret)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    const SECRET: &str = "client-secret-0123456789abcdefghij";
    const KEY: &str = "signing-key-0123456789abcdefghijklmn";

    fn issuer(clock: &ManualClock, audience: &str) -> TokenIssuer {
        TokenIssuer::new(
            OAuthSettings {
                client_id: "incode",
                client_secret: SECRET,
                signing_key: KEY,
                issuer: "kyc-relay".into(),
                audience: audience.into(),
                ttl_secs: 3600,
            },
            Arc::new(clock.clone()),
        )
        .unwrap()
    }

    fn basic(id: &str, secret: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"))
        )
    }

    #[test]
    fn issues_with_basic_or_body_credentials_and_verifies_its_tokens() {
        let clock = ManualClock::at_ms(1_700_000_000_000);
        let s = issuer(&clock, "incode-webhooks");
        let t = s
            .issue(
                Some(&basic("incode", SECRET)),
                b"grant_type=client_credentials&scope=webhooks",
            )
            .unwrap();
        assert_eq!(t.token_type, "Bearer");
        assert_eq!(t.expires_in, 3600);
        assert_eq!(t.scope.as_deref(), Some("webhooks"));
        let form = format!("grant_type=client_credentials&client_id=incode&client_secret={SECRET}");
        let t2 = s.issue(None, form.as_bytes()).unwrap();
        for tok in [&t.access_token, &t2.access_token] {
            assert_eq!(
                s.verify_bearer(Some(&format!("Bearer {tok}"))),
                Ok(Check::BearerToken)
            );
        }
        // Expired after ttl + leeway.
        clock.advance_ms((3600 + LEEWAY_SECS + 1) * 1000);
        assert_eq!(
            s.verify_bearer(Some(&format!("Bearer {}", t.access_token))),
            Err(Rejection::Unauthorized("JWT expired"))
        );
    }

    #[test]
    fn refuses_bad_clients_and_grants() {
        let clock = ManualClock::at_ms(1_700_000_000_000);
        let s = issuer(&clock, "incode-webhooks");
        let e = s
            .issue(
                Some(&basic("incode", "wrong-secret-0123456789abcdefghij")),
                b"grant_type=client_credentials",
            )
            .unwrap_err();
        assert_eq!((e.status, e.error), (401, "invalid_client"));
        assert!(e.basic_challenge);
        let e = s
            .issue(Some(&basic("incode", SECRET)), b"grant_type=password")
            .unwrap_err();
        assert_eq!((e.status, e.error), (400, "unsupported_grant_type"));
        let e = s.issue(Some(&basic("incode", SECRET)), b"").unwrap_err();
        assert_eq!((e.status, e.error), (400, "invalid_request"));
        let e = s.issue(None, b"grant_type=client_credentials").unwrap_err();
        assert_eq!((e.status, e.error), (401, "invalid_client"));
        let both = format!("grant_type=client_credentials&client_id=incode&client_secret={SECRET}");
        let e = s
            .issue(Some(&basic("incode", SECRET)), both.as_bytes())
            .unwrap_err();
        assert_eq!((e.status, e.error), (400, "invalid_request"));
        let e = s
            .issue(
                Some(&basic("incode", SECRET)),
                b"grant_type=client_credentials&grant_type=x",
            )
            .unwrap_err();
        assert_eq!(e.error, "invalid_request");
        assert!(
            s.issue(Some("Basic !!!"), b"grant_type=client_credentials")
                .is_err()
        );
    }

    #[test]
    fn tokens_for_another_audience_or_key_are_refused() {
        let clock = ManualClock::at_ms(1_700_000_000_000);
        let ours = issuer(&clock, "incode-webhooks");
        let other = issuer(&clock, "another-service");
        let t = other
            .issue(
                Some(&basic("incode", SECRET)),
                b"grant_type=client_credentials",
            )
            .unwrap();
        assert_eq!(
            ours.verify_bearer(Some(&format!("Bearer {}", t.access_token))),
            Err(Rejection::Unauthorized("bearer token invalid"))
        );
        assert!(ours.verify_bearer(None).is_err());
        assert!(ours.verify_bearer(Some("Basic abc")).is_err());
        assert!(ours.verify_bearer(Some("Bearer not.a.jwt")).is_err());
    }

    #[test]
    fn weak_configuration_is_refused() {
        let clock = ManualClock::at_ms(0);
        let r = TokenIssuer::new(
            OAuthSettings {
                client_id: "incode",
                client_secret: "short",
                signing_key: KEY,
                issuer: "i".into(),
                audience: "a".into(),
                ttl_secs: 3600,
            },
            Arc::new(clock),
        );
        assert_eq!(r.err().unwrap().var, "OAUTH_CLIENT_SECRET");
    }
}
