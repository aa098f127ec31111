//! OAuth 2.0 client credentials (RFC 6749 section 4.4) for Incode's webhook authentication: Incode
//! fetches a token from `/oauth/token` with the client id and secret configured in its dashboard,
//! then sends `Authorization: Bearer <token>` on every webhook.
//!
//! Tokens are HS256 JWTs signed with a key only this service holds (`iss`, `aud`, `sub` = client id,
//! `iat`, `exp`, `jti`; header `kid` names the key). Verifying them needs no storage: any receiver
//! instance checks the signature, issuer, audience, subject and expiry, with the same header and
//! claim rules as IDnow's JWTs (no `crit`, `iss` a string, no duplicate key).
//!
//! Rotation: a previous client secret stays accepted beside the current one; tokens are signed with
//! the current key, and a token whose `kid` names the previous key stays valid until it expires.

use super::jwt::{check_issuer, check_times, jose_header, strict_claims, validation};
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

/// A token signing key and its id (`kid`): derived from the key, so every sandbox with the same key
/// agrees on it without another setting, and it reveals nothing usable about the key.
struct SigningKey {
    kid: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl SigningKey {
    fn new(key: &str) -> Self {
        let kid = crate::provider::sha256_hex(&[b"kyc-relay token key id", key.as_bytes()]);
        Self {
            kid: format!("k{}", &kid[..16]),
            encoding: EncodingKey::from_secret(key.as_bytes()),
            decoding: DecodingKey::from_secret(key.as_bytes()),
        }
    }
}

pub struct TokenIssuer {
    client_id: String,
    client_id_digest: [u8; 32],
    /// The current secret's digest, then the previous one's during a rotation.
    client_secret_digests: Vec<[u8; 32]>,
    /// The current key (signs), then the previous one (verifies only) during a rotation.
    keys: Vec<SigningKey>,
    issuer: String,
    audience: String,
    ttl_secs: u64,
    clock: Arc<dyn Clock>,
}

/// The token endpoint's settings; secrets as (variable, value), the current one first.
#[derive(Clone)]
pub struct OAuthSettings {
    pub client_id: String,
    pub client_secrets: Vec<(String, String)>,
    pub signing_keys: Vec<(String, String)>,
    pub issuer: String,
    pub audience: String,
    pub ttl_secs: u64,
}

impl std::fmt::Debug for OAuthSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuthSettings")
            .field("client_id", &self.client_id)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("ttl_secs", &self.ttl_secs)
            .finish_non_exhaustive()
    }
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
    pub(crate) fn invalid_request(description: &'static str) -> Self {
        Self {
            status: 400,
            error: "invalid_request",
            description,
            basic_challenge: false,
        }
    }

    pub fn body(&self) -> Value {
        json!({"error": self.error, "error_description": self.description})
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

/// Credentials from `Authorization: Basic`, in both readings: RFC 6749 section 2.3.1 says client id
/// and secret are form-urlencoded before Basic encoding, but many clients send them raw (Incode's
/// documentation says only "Send as Basic Auth Header"). `decoded` is `None` when the raw text does
/// not form-decode to UTF-8.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BasicCredentials {
    pub raw: (String, String),
    pub decoded: Option<(String, String)>,
}

impl TokenIssuer {
    pub fn new(settings: OAuthSettings, clock: Arc<dyn Clock>) -> Result<Self, ConfigError> {
        for (var, value) in settings.client_secrets.iter().chain(&settings.signing_keys) {
            if value.len() < MIN_SECRET_LEN {
                return Err(ConfigError::new(
                    var.as_str(),
                    format!("must be at least {MIN_SECRET_LEN} bytes"),
                ));
            }
        }
        if settings.client_secrets.is_empty() || settings.signing_keys.is_empty() {
            return Err(ConfigError::new(
                "OAUTH_CLIENT_SECRET",
                "a client secret and a token signing key are required",
            ));
        }
        if !(60..=86_400).contains(&settings.ttl_secs) {
            return Err(ConfigError::new(
                "OAUTH_TOKEN_TTL_SECONDS",
                "must be between 60 and 86400",
            ));
        }
        Ok(Self {
            client_id_digest: secret_digest(settings.client_id.as_bytes()),
            client_id: settings.client_id,
            client_secret_digests: settings
                .client_secrets
                .iter()
                .map(|(_, v)| secret_digest(v.as_bytes()))
                .collect(),
            keys: settings
                .signing_keys
                .iter()
                .map(|(_, k)| SigningKey::new(k))
                .collect(),
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
        let (authenticated, used_basic) = match (basic, body_id, body_secret) {
            (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
                return Err(OAuthError::invalid_request(
                    "use one client authentication method, not two",
                ));
            }
            (Some(basic), None, None) => {
                // Both readings are compared; either may match. Every comparison runs (no early
                // exit), so the timing does not tell which reading or which part was wrong.
                let raw = self.client_matches(&basic.raw.0, &basic.raw.1);
                let decoded = basic
                    .decoded
                    .as_ref()
                    .is_some_and(|(id, secret)| self.client_matches(id, secret));
                (raw | decoded, true)
            }
            // Form parameters are already form-decoded: one reading only.
            (None, Some(id), Some(secret)) => (self.client_matches(id, secret), false),
            (None, _, _) => {
                return Err(OAuthError {
                    status: 401,
                    error: "invalid_client",
                    description: "client authentication missing",
                    basic_challenge: true,
                });
            }
        };
        if !authenticated {
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
        let key = &self.keys[0];
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(key.kid.clone());
        let access_token = encode(&header, &claims, &key.encoding).map_err(|_| OAuthError {
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

    /// Client id and secret against the configured ones, each compared in constant time over
    /// digests, against every accepted secret, without early exit.
    fn client_matches(&self, id: &str, secret: &str) -> bool {
        let id_ok = digests_equal(&secret_digest(id.as_bytes()), &self.client_id_digest);
        let digest = secret_digest(secret.as_bytes());
        let secret_ok = self
            .client_secret_digests
            .iter()
            .fold(false, |acc, d| acc | digests_equal(&digest, d));
        id_ok & secret_ok
    }

    /// Checks `Authorization: Bearer <token>` against the tokens this service issues.
    pub fn verify_bearer(&self, authorization: Option<&str>) -> Result<Check, Rejection> {
        let header = authorization.ok_or(Rejection::Unauthorized("bearer token missing"))?;
        let token = header
            .split_once(' ')
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim())
            .ok_or(Rejection::Unauthorized("bearer token missing"))?;
        let jose =
            jose_header(token).map_err(|_| Rejection::Unauthorized("bearer token invalid"))?;
        // The key the token names; a token without `kid` (issued before keys had ids) is checked
        // against the current key only.
        let key = match jose.kid.as_deref() {
            None => &self.keys[0],
            Some(kid) => self
                .keys
                .iter()
                .find(|k| k.kid == kid)
                .ok_or(Rejection::Unauthorized("bearer token invalid"))?,
        };
        let validation = validation(
            Algorithm::HS256,
            &self.issuer,
            &self.audience,
            Some(&self.client_id),
        );
        decode::<Map<String, Value>>(token, &key.decoding, &validation)
            .map_err(|_| Rejection::Unauthorized("bearer token invalid"))?;
        let claims =
            strict_claims(token).map_err(|_| Rejection::Unauthorized("bearer token invalid"))?;
        check_issuer(&claims, &self.issuer)
            .map_err(|_| Rejection::Unauthorized("bearer token invalid"))?;
        check_times(&claims, self.clock.now_secs(), LEEWAY_SECS, true)?;
        Ok(Check::BearerToken)
    }
}

/// `Basic base64(id ":" secret)`, in both readings ([`BasicCredentials`]). Padding of the base64
/// part is optional (some clients omit it); the id is everything before the first `:` (RFC 7617).
pub fn parse_basic(header: &str) -> Result<BasicCredentials, OAuthError> {
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
    const LENIENT: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    let decoded = LENIENT.decode(encoded.trim()).map_err(|_| bad())?;
    let decoded = String::from_utf8(decoded).map_err(|_| bad())?;
    let (id, secret) = decoded.split_once(':').ok_or_else(bad)?;
    let unescape = |s: &str| {
        percent_encoding::percent_decode_str(&s.replace('+', " "))
            .decode_utf8()
            .ok()
            .map(|c| c.into_owned())
    };
    let decoded = unescape(id).zip(unescape(secret));
    Ok(BasicCredentials {
        raw: (id.to_string(), secret.to_string()),
        decoded,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    const SECRET: &str = "client-secret-0123456789abcdefghij";
    const KEY: &str = "signing-key-0123456789abcdefghijklmn";

    fn issuer(clock: &ManualClock, audience: &str) -> TokenIssuer {
        TokenIssuer::new(
            settings(&[SECRET], &[KEY], audience),
            Arc::new(clock.clone()),
        )
        .unwrap()
    }

    fn settings(secrets: &[&str], keys: &[&str], audience: &str) -> OAuthSettings {
        OAuthSettings {
            client_id: "incode".into(),
            client_secrets: secrets
                .iter()
                .map(|s| ("S".into(), s.to_string()))
                .collect(),
            signing_keys: keys.iter().map(|k| ("K".into(), k.to_string())).collect(),
            issuer: "kyc-relay".into(),
            audience: audience.into(),
            ttl_secs: 3600,
        }
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
        let mut s = settings(&["short"], &[KEY], "a");
        s.client_secrets[0].0 = "OAUTH_CLIENT_SECRET".into();
        let r = TokenIssuer::new(s, Arc::new(clock));
        assert_eq!(r.err().unwrap().var, "OAUTH_CLIENT_SECRET");
    }

    /// A secret with every character that form-encoding changes: `+` (space when decoded), `/`,
    /// `=` and `%` (an escape when decoded).
    const AWKWARD: &str = "a+b/c=d%2Fe%zz-0123456789abcdefghijklmnop";

    fn form_encode(s: &str) -> String {
        url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
    }

    #[test]
    fn basic_credentials_match_raw_or_percent_encoded() {
        let clock = ManualClock::at_ms(1_700_000_000_000);
        let s = TokenIssuer::new(settings(&[AWKWARD], &[KEY], "a"), Arc::new(clock)).unwrap();
        let grant = b"grant_type=client_credentials";
        // Raw, as most clients send it.
        assert!(s.issue(Some(&basic("incode", AWKWARD)), grant).is_ok());
        // Percent-encoded, as RFC 6749 section 2.3.1 says.
        assert!(
            s.issue(Some(&basic("incode", &form_encode(AWKWARD))), grant)
                .is_ok()
        );
        assert!(
            s.issue(
                Some(&basic(&form_encode("incode"), &form_encode(AWKWARD))),
                grant
            )
            .is_ok()
        );
        // In the form body (form-decoded once).
        let form = format!(
            "grant_type=client_credentials&client_id=incode&client_secret={}",
            form_encode(AWKWARD)
        );
        assert!(s.issue(None, form.as_bytes()).is_ok());
        // A body secret sent raw is form-decoded: `+` becomes a space, so it does not match.
        let raw_form =
            format!("grant_type=client_credentials&client_id=incode&client_secret={AWKWARD}");
        assert_eq!(s.issue(None, raw_form.as_bytes()).unwrap_err().status, 401);
        // Wrong secrets, in each form.
        let wrong = "a+b/c=d%2Fe%zz-0123456789abcdefghijklmnoX";
        for auth in [basic("incode", wrong), basic("incode", &form_encode(wrong))] {
            let e = s.issue(Some(&auth), grant).unwrap_err();
            assert_eq!((e.status, e.error), (401, "invalid_client"));
        }
        let form = format!(
            "grant_type=client_credentials&client_id=incode&client_secret={}",
            form_encode(wrong)
        );
        assert_eq!(s.issue(None, form.as_bytes()).unwrap_err().status, 401);
        // An id without escapes reads the same both ways: raw id, encoded secret is one client.
        let mixed = basic("incode", &form_encode(AWKWARD));
        assert!(s.issue(Some(&mixed), grant).is_ok());
        // Unpadded base64 is accepted.
        let unpadded = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD_NO_PAD.encode(format!("incode:{AWKWARD}"))
        );
        assert!(s.issue(Some(&unpadded), grant).is_ok());
    }

    #[test]
    fn a_previous_client_secret_and_signing_key_stay_valid_during_a_rotation() {
        let clock = ManualClock::at_ms(1_700_000_000_000);
        const OLD_KEY: &str = "old-signing-key-0123456789abcdefghijk";
        const NEW_SECRET: &str = "new-client-secret-0123456789abcdefgh";
        let before = TokenIssuer::new(
            settings(&[SECRET], &[OLD_KEY], "a"),
            Arc::new(clock.clone()),
        )
        .unwrap();
        let old_token = before
            .issue(
                Some(&basic("incode", SECRET)),
                b"grant_type=client_credentials",
            )
            .unwrap()
            .access_token;
        let during = TokenIssuer::new(
            settings(&[NEW_SECRET, SECRET], &[KEY, OLD_KEY], "a"),
            Arc::new(clock.clone()),
        )
        .unwrap();
        for secret in [NEW_SECRET, SECRET] {
            assert!(
                during
                    .issue(
                        Some(&basic("incode", secret)),
                        b"grant_type=client_credentials"
                    )
                    .is_ok()
            );
        }
        let new_token = during
            .issue(
                Some(&basic("incode", NEW_SECRET)),
                b"grant_type=client_credentials",
            )
            .unwrap()
            .access_token;
        for t in [&old_token, &new_token] {
            assert_eq!(
                during.verify_bearer(Some(&format!("Bearer {t}"))),
                Ok(Check::BearerToken)
            );
        }
        // After the rotation the previous key is gone: its tokens are refused.
        let after =
            TokenIssuer::new(settings(&[NEW_SECRET], &[KEY], "a"), Arc::new(clock)).unwrap();
        assert!(
            after
                .verify_bearer(Some(&format!("Bearer {old_token}")))
                .is_err()
        );
        assert!(
            after
                .verify_bearer(Some(&format!("Bearer {new_token}")))
                .is_ok()
        );
        assert!(
            after
                .issue(
                    Some(&basic("incode", SECRET)),
                    b"grant_type=client_credentials"
                )
                .is_err()
        );
    }

    fn forge(header: Value, claims: Value, key: &str) -> String {
        use hmac::Mac;
        let b64 =
            |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        let signing_input = format!("{}.{}", b64(&header), b64(&claims));
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).unwrap();
        mac.update(signing_input.as_bytes());
        let sig =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{signing_input}.{sig}")
    }

    #[test]
    fn bearer_tokens_with_crit_or_an_issuer_array_are_refused() {
        let clock = ManualClock::at_ms(1_700_000_000_000);
        let s = issuer(&clock, "incode-webhooks");
        let kid = SigningKey::new(KEY).kid;
        let claims = json!({"iss": "kyc-relay", "aud": "incode-webhooks", "sub": "incode",
            "iat": 1_700_000_000u64, "exp": 1_700_003_600u64});
        let good = forge(json!({"alg": "HS256", "kid": kid}), claims.clone(), KEY);
        assert_eq!(
            s.verify_bearer(Some(&format!("Bearer {good}"))),
            Ok(Check::BearerToken)
        );
        let crit = forge(
            json!({"alg": "HS256", "kid": kid, "crit": ["exp"]}),
            claims.clone(),
            KEY,
        );
        assert!(s.verify_bearer(Some(&format!("Bearer {crit}"))).is_err());
        let mut arr = claims.clone();
        arr["iss"] = json!(["kyc-relay", "other"]);
        let arr = forge(json!({"alg": "HS256", "kid": kid}), arr, KEY);
        assert!(s.verify_bearer(Some(&format!("Bearer {arr}"))).is_err());
        let unknown_kid = forge(json!({"alg": "HS256", "kid": "nope"}), claims, KEY);
        assert!(
            s.verify_bearer(Some(&format!("Bearer {unknown_kid}")))
                .is_err()
        );
    }
}
