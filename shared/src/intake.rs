//! The receiver's work: route, refuse what is not from the provider or not well-formed, and enqueue
//! the rest before answering. Statuses follow one contract:
//!
//! | outcome | status |
//! |---|---|
//! | accepted (new or duplicate) | 200 `{"success":true}` |
//! | unknown path / provider disabled | 404 |
//! | method other than POST | 405 |
//! | body over [`MAX_BODY_BYTES`] | 413 |
//! | source IP not allowed | 403 |
//! | shared header, bearer token or JWT missing or invalid | 401 |
//! | media type not accepted | 415 |
//! | body not UTF-8 / not JSON / required field missing | 400 naming the problem |
//! | ingest queue unavailable, or signing keys unreachable | 503 (nothing acknowledged) |
//!
//! Checks run cheapest first, and the source IP before anything that reads the body, so an
//! unauthenticated caller learns nothing about the body format.

use crate::clock::Clock;
use crate::config::{ConfigError, Env, validate_outbound_url};
use crate::envelope::{Envelope, Received};
use crate::provider::incode::{self, TypeHint};
use crate::provider::{ParseError, Provider, idnow, parse_json};
use crate::queue::IngestQueue;
use crate::verification::jwks::JwksCache;
use crate::verification::jwt::{JwtVerifier, MIN_HS256_SECRET_LEN};
use crate::verification::oauth::{OAuthSettings, TokenIssuer};
use crate::verification::shared_header::SharedHeader;
use crate::verification::{Check, Rejection, ip::SourcePolicy};
use http::{HeaderMap, Method};
use serde_json::{Value, json};
use std::net::IpAddr;
use std::sync::Arc;

/// Largest accepted body. Provider webhooks are a few hundred bytes to a few KB; 64 KiB leaves room
/// for the raw body and the parsed event in one SQS message (256 KiB).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Header carrying IDnow's JWT when the body is JSON (older IDnow documentation).
pub const IDNOW_SIGNATURE_HEADER: &str = "x-idnow-signature";

/// Variables whose values are secrets (each may instead be given as `<NAME>_SSM`).
pub const RECEIVER_SECRETS: &[&str] = &[
    "INCODE_SHARED_HEADER_VALUE",
    "OAUTH_CLIENT_SECRET",
    "OAUTH_TOKEN_SIGNING_KEY",
    "IDNOW_JWT_SECRET",
    "IDNOW_SHARED_HEADER_VALUE",
];

pub struct InboundRequest<'a> {
    pub method: &'a Method,
    pub path: &'a str,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
    /// API Gateway's `requestContext.http.sourceIp`.
    pub source_ip: Option<IpAddr>,
    pub request_id: Option<&'a str>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub body: String,
    pub headers: Vec<(&'static str, String)>,
    /// Why the request was refused (for the log line; never request data).
    pub reason: Option<String>,
}

impl Reply {
    fn json(status: u16, body: Value) -> Self {
        Self {
            status,
            body: body.to_string(),
            headers: vec![("content-type", "application/json".into())],
            reason: None,
        }
    }

    fn accepted() -> Self {
        Self::json(200, json!({"success": true}))
    }

    fn error(status: u16, code: &str, message: &str) -> Self {
        let mut reply = Self::json(status, json!({"error": code, "message": message}));
        reply.reason = Some(message.to_string());
        reply
    }

    fn rejection(r: Rejection) -> Self {
        let code = match r {
            Rejection::Forbidden(_) => "forbidden",
            Rejection::Unauthorized(_) => "unauthorized",
            Rejection::Unavailable(_) => "unavailable",
        };
        Self::error(r.status(), code, r.reason())
    }

    fn invalid(e: ParseError) -> Self {
        Self::error(400, "invalid_body", &e.0)
    }
}

enum Route<'a> {
    Incode(TypeHint<'a>),
    Idnow,
    Token,
}

fn route(path: &str) -> Option<Route<'_>> {
    let path = path.strip_suffix('/').unwrap_or(path);
    match path {
        "/webhooks/incode" => Some(Route::Incode(TypeHint::None)),
        "/webhooks/idnow" => Some(Route::Idnow),
        "/oauth/token" => Some(Route::Token),
        _ => path
            .strip_prefix("/webhooks/incode/")
            .filter(|slug| incode::is_valid_slug(slug))
            .map(|slug| Route::Incode(TypeHint::Path(slug))),
    }
}

/// The media type of a Content-Type header, lowercased, without parameters.
fn media_type(headers: &HeaderMap) -> Option<String> {
    let raw = headers.get(http::header::CONTENT_TYPE)?.to_str().ok()?;
    Some(raw.split(';').next()?.trim().to_ascii_lowercase())
}

fn header_str(headers: &HeaderMap, name: impl http::header::AsHeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

pub struct IncodeIntake {
    source: SourcePolicy,
    shared_header: Option<SharedHeader>,
    require_bearer: bool,
}

pub struct IdnowIntake {
    source: SourcePolicy,
    shared_header: Option<SharedHeader>,
    jwt: Option<JwtVerifier>,
}

pub struct Intake<Q> {
    incode: Option<IncodeIntake>,
    idnow: Option<IdnowIntake>,
    oauth: Option<TokenIssuer>,
    queue: Q,
    clock: Arc<dyn Clock>,
}

fn shared_header(env: &Env, prefix: &str) -> Result<Option<SharedHeader>, ConfigError> {
    let name_var = format!("{prefix}_SHARED_HEADER_NAME");
    let value_var = format!("{prefix}_SHARED_HEADER_VALUE");
    match (env.get(&name_var), env.get(&value_var)) {
        (None, None) => Ok(None),
        (Some(name), Some(value)) => SharedHeader::new(&name_var, name, value).map(Some),
        (None, Some(_)) => Err(ConfigError::new(
            name_var,
            "is required when the header value is set",
        )),
        (Some(_), None) => Err(ConfigError::new(
            value_var,
            "is required when the header name is set (or its _SSM form)",
        )),
    }
}

impl<Q: IngestQueue> Intake<Q> {
    /// Builds the receiver from its (secret-resolved) environment; see docs/configuration.md.
    pub fn from_env(
        env: &Env,
        queue: Q,
        http: reqwest::Client,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, ConfigError> {
        let oauth = match env.get("OAUTH_CLIENT_ID") {
            // Secrets without a client id would silently switch bearer checks off.
            None if env.get("OAUTH_CLIENT_SECRET").is_some()
                || env.get("OAUTH_TOKEN_SIGNING_KEY").is_some() =>
            {
                return Err(ConfigError::new(
                    "OAUTH_CLIENT_ID",
                    "is required when OAUTH_CLIENT_SECRET or OAUTH_TOKEN_SIGNING_KEY is set",
                ));
            }
            None => None,
            Some(client_id) => Some(TokenIssuer::new(
                OAuthSettings {
                    client_id,
                    client_secret: env.require("OAUTH_CLIENT_SECRET")?,
                    signing_key: env.require("OAUTH_TOKEN_SIGNING_KEY")?,
                    issuer: env
                        .get("OAUTH_ISSUER")
                        .unwrap_or("kyc-webhook-relay")
                        .to_string(),
                    audience: env
                        .get("OAUTH_AUDIENCE")
                        .unwrap_or("incode-webhooks")
                        .to_string(),
                    ttl_secs: env.parse_or("OAUTH_TOKEN_TTL_SECONDS", 3600)?,
                },
                clock.clone(),
            )?),
        };

        let incode = if env.flag("INCODE_ENABLED", true)? {
            let source = SourcePolicy::parse(
                "INCODE_ALLOWED_IPS",
                env.get("INCODE_ALLOWED_IPS").unwrap_or("incode-production"),
            )?;
            let require_bearer = env.flag("INCODE_REQUIRE_BEARER_TOKEN", oauth.is_some())?;
            if require_bearer && oauth.is_none() {
                return Err(ConfigError::new(
                    "INCODE_REQUIRE_BEARER_TOKEN",
                    "bearer tokens are required but OAUTH_CLIENT_ID is not set",
                ));
            }
            let shared_header = shared_header(env, "INCODE")?;
            if !source.is_restricted() && shared_header.is_none() && !require_bearer {
                return Err(ConfigError::new(
                    "INCODE_ALLOWED_IPS",
                    "Incode has no verification: with `any` source IP, configure INCODE_SHARED_HEADER_* or OAuth (or set INCODE_ENABLED=false)",
                ));
            }
            Some(IncodeIntake {
                source,
                shared_header,
                require_bearer,
            })
        } else {
            None
        };

        let idnow = if env.flag("IDNOW_ENABLED", true)? {
            let source = SourcePolicy::parse(
                "IDNOW_ALLOWED_IPS",
                env.get("IDNOW_ALLOWED_IPS").ok_or_else(|| {
                    ConfigError::new(
                        "IDNOW_ALLOWED_IPS",
                        "is required: the CIDRs IDnow gave for your account, or `any` (or set IDNOW_ENABLED=false)",
                    )
                })?,
            )?;
            let jwks_url = env
                .get("IDNOW_JWKS_URL")
                .map(|u| validate_outbound_url("IDNOW_JWKS_URL", u))
                .transpose()?;
            let secret = env.get("IDNOW_JWT_SECRET");
            if secret.is_some_and(|s| s.len() < MIN_HS256_SECRET_LEN) {
                return Err(ConfigError::new(
                    "IDNOW_JWT_SECRET",
                    format!("must be at least {MIN_HS256_SECRET_LEN} bytes for HS256"),
                ));
            }
            let jwt = if jwks_url.is_some() || secret.is_some() {
                let leeway: u64 = env.parse_or("IDNOW_JWT_LEEWAY_SECONDS", 60)?;
                if leeway > 300 {
                    return Err(ConfigError::new(
                        "IDNOW_JWT_LEEWAY_SECONDS",
                        "must be at most 300",
                    ));
                }
                let jwks = jwks_url
                    .map(|url| -> Result<_, ConfigError> {
                        Ok(JwksCache::new(
                            url,
                            http.clone(),
                            clock.clone(),
                            env.parse_or("IDNOW_JWKS_MIN_REFRESH_SECONDS", 60)?,
                            env.parse_or("IDNOW_JWKS_MAX_AGE_SECONDS", 3600)?,
                        ))
                    })
                    .transpose()?;
                Some(JwtVerifier::new(
                    jwks,
                    secret.map(str::as_bytes),
                    env.require("IDNOW_JWT_ISSUER")?.to_string(),
                    env.require("IDNOW_JWT_AUDIENCE")?.to_string(),
                    leeway,
                    clock.clone(),
                ))
            } else {
                None
            };
            let shared_header = shared_header(env, "IDNOW")?;
            if !source.is_restricted() && shared_header.is_none() && jwt.is_none() {
                return Err(ConfigError::new(
                    "IDNOW_ALLOWED_IPS",
                    "IDnow has no verification: with `any` source IP, configure IDNOW_JWKS_URL, IDNOW_JWT_SECRET or IDNOW_SHARED_HEADER_* (or set IDNOW_ENABLED=false)",
                ));
            }
            Some(IdnowIntake {
                source,
                shared_header,
                jwt,
            })
        } else {
            None
        };

        if incode.is_none() && idnow.is_none() {
            return Err(ConfigError::new(
                "INCODE_ENABLED",
                "both providers are disabled: the receiver would refuse everything",
            ));
        }
        Ok(Self {
            incode,
            idnow,
            oauth,
            queue,
            clock,
        })
    }

    pub async fn handle(&self, req: InboundRequest<'_>) -> Reply {
        let Some(route) = route(req.path) else {
            return Reply::error(404, "not_found", "no such endpoint");
        };
        if req.method != Method::POST {
            let mut reply = Reply::error(405, "method_not_allowed", "use POST");
            reply.headers.push(("allow", "POST".into()));
            return reply;
        }
        if req.body.len() > MAX_BODY_BYTES {
            return Reply::error(413, "payload_too_large", "body exceeds 65536 bytes");
        }
        let (provider, reply) = match route {
            Route::Token => (Provider::Incode, self.token(&req)),
            Route::Incode(hint) => (Provider::Incode, self.incode(&req, hint).await),
            Route::Idnow => (Provider::Idnow, self.idnow(&req).await),
        };
        if reply.status != 200 {
            // Refusals are logged with their reason; the source address only for 403s, where the
            // operator needs it to recognise a provider's new address.
            let ip = (reply.status == 403)
                .then(|| req.source_ip.map(|i| i.to_string()))
                .flatten();
            tracing::warn!(
                provider = %provider,
                path = req.path,
                status = reply.status,
                reason = reply.reason.as_deref().unwrap_or("oauth error"),
                source_ip = ip,
                request_id = req.request_id,
                "webhook refused"
            );
        }
        reply
    }

    fn token(&self, req: &InboundRequest<'_>) -> Reply {
        let (Some(incode), Some(oauth)) = (&self.incode, &self.oauth) else {
            return Reply::error(404, "not_found", "no such endpoint");
        };
        if !incode.source.allows(req.source_ip) {
            return Reply::rejection(Rejection::Forbidden("source IP not allowed"));
        }
        if media_type(req.headers).as_deref() != Some("application/x-www-form-urlencoded") {
            return Reply::json(
                415,
                json!({"error": "invalid_request", "error_description": "use application/x-www-form-urlencoded"}),
            );
        }
        let no_store = [
            ("cache-control", "no-store".to_string()),
            ("pragma", "no-cache".to_string()),
        ];
        match oauth.issue(
            header_str(req.headers, http::header::AUTHORIZATION),
            req.body,
        ) {
            Ok(token) => {
                let mut reply = Reply::json(200, serde_json::to_value(token).unwrap_or_default());
                reply.headers.extend(no_store);
                reply
            }
            Err(e) => {
                let mut reply = Reply::json(
                    e.status,
                    serde_json::from_str(&e.body()).unwrap_or_default(),
                );
                reply.headers.extend(no_store);
                if e.basic_challenge {
                    reply.headers.push((
                        "www-authenticate",
                        "Basic realm=\"kyc-webhook-relay\"".into(),
                    ));
                }
                reply
            }
        }
    }

    async fn incode(&self, req: &InboundRequest<'_>, hint: TypeHint<'_>) -> Reply {
        let Some(cfg) = &self.incode else {
            return Reply::error(404, "not_found", "Incode webhooks are disabled");
        };
        let mut verified = Vec::with_capacity(3);
        if let Err(r) =
            source_and_header(&cfg.source, cfg.shared_header.as_ref(), req, &mut verified)
        {
            return Reply::rejection(r);
        }
        if cfg.require_bearer {
            let oauth = self
                .oauth
                .as_ref()
                .expect("validated at init: bearer needs OAuth");
            match oauth.verify_bearer(header_str(req.headers, http::header::AUTHORIZATION)) {
                Ok(check) => verified.push(check),
                Err(r) => return Reply::rejection(r),
            }
        }
        if media_type(req.headers).as_deref() != Some("application/json") {
            return Reply::error(415, "unsupported_media_type", "use application/json");
        }
        let value = match parse_json(req.body) {
            Ok(v) => v,
            Err(e) => return Reply::invalid(e),
        };
        let parsed = match incode::parse(&value, hint) {
            Ok(p) => p,
            Err(e) => return Reply::invalid(e),
        };
        let type_hint = match hint {
            TypeHint::Path(slug) if parsed.event_type == incode::UNKNOWN_TYPE => Some(slug),
            _ => None,
        };
        self.enqueue(
            req,
            Provider::Incode,
            parsed,
            verified,
            type_hint,
            "application/json",
        )
        .await
    }

    async fn idnow(&self, req: &InboundRequest<'_>) -> Reply {
        let Some(cfg) = &self.idnow else {
            return Reply::error(404, "not_found", "IDnow webhooks are disabled");
        };
        let mut verified = Vec::with_capacity(3);
        if let Err(r) =
            source_and_header(&cfg.source, cfg.shared_header.as_ref(), req, &mut verified)
        {
            return Reply::rejection(r);
        }
        let media = media_type(req.headers);
        let (event, content_type) = match (media.as_deref(), &cfg.jwt) {
            // Current IDnow documentation: the body is the JWT, the event its `data` claim.
            (Some("application/jwt"), Some(jwt)) => {
                let Ok(token) = std::str::from_utf8(req.body) else {
                    return Reply::invalid(ParseError("body is not valid UTF-8".into()));
                };
                let verified_jwt = match jwt.verify(token).await {
                    Ok(v) => v,
                    Err(r) => return Reply::rejection(r),
                };
                verified.push(verified_jwt.check);
                let Some(data) = verified_jwt.claims.get("data").filter(|d| d.is_object()) else {
                    return Reply::invalid(ParseError("JWT has no `data` object claim".into()));
                };
                if let Some(sub) = verified_jwt.claims.get("sub")
                    && data.get("eventId") != Some(sub)
                {
                    return Reply::rejection(Rejection::Unauthorized(
                        "JWT subject does not match the event id",
                    ));
                }
                (data.clone(), "application/jwt")
            }
            // Older documentation: JSON body, JWT in X-Idnow-Signature (required when JWT
            // verification is configured).
            (Some("application/json"), jwt) => {
                // The signature is checked before the body is read: an unauthenticated caller gets
                // a 401, never a description of its JSON.
                let verified_jwt = match jwt {
                    None => None,
                    Some(jwt) => {
                        let Some(token) = header_str(req.headers, IDNOW_SIGNATURE_HEADER) else {
                            return Reply::rejection(Rejection::Unauthorized(
                                "X-Idnow-Signature missing",
                            ));
                        };
                        match jwt.verify(token).await {
                            Ok(v) => Some(v),
                            Err(r) => return Reply::rejection(r),
                        }
                    }
                };
                let value = match parse_json(req.body) {
                    Ok(v) => v,
                    Err(e) => return Reply::invalid(e),
                };
                if let Some(verified_jwt) = verified_jwt {
                    if let Err(r) = body_is_covered(&verified_jwt.claims, &value) {
                        return Reply::rejection(r);
                    }
                    verified.push(verified_jwt.check);
                }
                (value, "application/json")
            }
            _ => {
                let accepted = if cfg.jwt.is_some() {
                    "use application/jwt or application/json"
                } else {
                    "use application/json"
                };
                return Reply::error(415, "unsupported_media_type", accepted);
            }
        };
        let parsed = match idnow::parse(&event) {
            Ok(p) => p,
            Err(e) => return Reply::invalid(e),
        };
        self.enqueue(req, Provider::Idnow, parsed, verified, None, content_type)
            .await
    }

    async fn enqueue(
        &self,
        req: &InboundRequest<'_>,
        provider: Provider,
        parsed: crate::provider::ParsedEvent,
        verified_by: Vec<Check>,
        type_hint: Option<&str>,
        content_type: &str,
    ) -> Reply {
        // The body was validated as UTF-8 by the JSON parser or the JWT path.
        let raw_body = String::from_utf8_lossy(req.body);
        let envelope = Envelope::new(
            parsed,
            Received {
                provider,
                received_at_ms: self.clock.now_ms(),
                verified_by,
                type_hint,
                request_id: req.request_id,
                content_type,
                raw_body: &raw_body,
            },
        );
        match self.queue.enqueue(&envelope).await {
            Ok(()) => {
                tracing::info!(
                    provider = %provider,
                    event_type = envelope.event_type,
                    event_id = envelope.event_id,
                    request_id = req.request_id,
                    "webhook accepted"
                );
                Reply::accepted()
            }
            Err(e) => {
                tracing::error!(provider = %provider, event_id = envelope.event_id, error = %e, "enqueue failed");
                Reply::error(
                    503,
                    "unavailable",
                    "could not enqueue the webhook; retry later",
                )
            }
        }
    }
}

fn source_and_header(
    source: &SourcePolicy,
    header: Option<&SharedHeader>,
    req: &InboundRequest<'_>,
    verified: &mut Vec<Check>,
) -> Result<(), Rejection> {
    if !source.allows(req.source_ip) {
        return Err(Rejection::Forbidden("source IP not allowed"));
    }
    if source.is_restricted() {
        verified.push(Check::SourceIp);
    }
    if let Some(h) = header {
        h.verify(req.headers)?;
        verified.push(Check::SharedHeader);
    }
    Ok(())
}

/// A signature header must bind the body it came with: its `data` claim must equal the body (and a
/// `sub`, if present, the body's `eventId`). A JWT that names only the event id would let a captured
/// signature authorise any body with that id, so it is refused.
fn body_is_covered(claims: &serde_json::Map<String, Value>, body: &Value) -> Result<(), Rejection> {
    let covered = claims.get("data") == Some(body)
        && claims
            .get("sub")
            .is_none_or(|sub| body.get("eventId") == Some(sub));
    if covered {
        Ok(())
    } else {
        Err(Rejection::Unauthorized(
            "signature does not cover this body",
        ))
    }
}
