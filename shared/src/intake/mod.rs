//! The receiver's work: route, refuse what is not from the provider or not well-formed, and enqueue
//! the rest before answering. Statuses follow one contract:
//!
//! | outcome | status |
//! |---|---|
//! | accepted (new or duplicate) | 200 `{"success":true}` |
//! | path not exactly a documented route / provider disabled | 404 |
//! | method other than POST | 405 |
//! | a header that is not a valid HTTP header, a body that is not the base64 it claims to be | 400 `invalid_request` |
//! | body over [`MAX_BODY_BYTES`] | 413 |
//! | source IP not allowed | 403 |
//! | shared header, bearer token or JWT missing or invalid | 401 |
//! | media type not accepted | 415 |
//! | body not UTF-8 / not JSON / duplicate key / too deep / required field missing or invalid | 400 naming the problem |
//! | ingest queue unavailable, or signing keys unreachable | 503 (nothing acknowledged) |
//!
//! Checks run cheapest first, and the source IP before anything that reads the body, so an
//! unauthenticated caller learns nothing about the body format.
//!
//! Layout: [`router`] (the path), [`settings`] (configuration, validated once), [`error`] (every
//! refusal and its answer, in one place), and one handler per route: [`incode`], [`idnow`],
//! [`token`].

mod error;
mod idnow;
mod incode;
pub mod router;
pub mod settings;
mod token;

pub use error::IntakeError;
pub use router::{Route, route};
pub use settings::{RECEIVER_SECRETS, ReceiverSettings};

use crate::clock::Clock;
use crate::config::{ConfigError, Env};
use crate::envelope::{Envelope, Received};
use crate::provider::{MAX_NAME_CHARS, ParsedEvent, Provider, check_key_text};
use crate::queue::IngestQueue;
use crate::verification::jwks::JwksCache;
use crate::verification::jwt::JwtVerifier;
use crate::verification::oauth::TokenIssuer;
use crate::verification::{Check, Rejection};
use base64::Engine;
use http::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{Value, json};
use settings::{IdnowSettings, IncodeSettings};
use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;

/// Largest accepted body, in bytes (after base64 decoding when API Gateway encoded it). Provider
/// webhooks are a few hundred bytes to a few KB. The largest envelope it can produce (an
/// escape-heavy body is stored twice, as `raw_body` and as `event`) stays under the queues'
/// `MaximumMessageSize` (1 MiB): ARCHITECTURE.md § 1.2.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Header carrying IDnow's JWT when the body is JSON (older IDnow documentation).
pub const IDNOW_SIGNATURE_HEADER: &str = "x-idnow-signature";

/// A request as the API Gateway adapter hands it over: nothing checked yet. Headers are the
/// event's strings, validated here (after routing), so that a malformed one is a precise 400 and
/// never an error of the event's deserialisation.
pub struct InboundRequest<'a> {
    pub method: &'a str,
    /// API Gateway's `rawPath`: what the client sent, not decoded.
    pub path: &'a str,
    pub headers: &'a [(String, String)],
    pub body: &'a [u8],
    /// API Gateway's `isBase64Encoded`: `body` is the base64 text of the real body.
    pub body_base64: bool,
    /// API Gateway's `requestContext.http.sourceIp`.
    pub source_ip: Option<IpAddr>,
    pub request_id: Option<&'a str>,
}

/// A routed request with valid headers and the decoded body.
pub(crate) struct Request<'a> {
    headers: HeaderMap,
    body: Cow<'a, [u8]>,
    source_ip: Option<IpAddr>,
    request_id: Option<&'a str>,
}

impl Request<'_> {
    /// A header's value as text; a non-ASCII value reads as absent (none of ours is).
    fn header(&self, name: impl http::header::AsHeaderName) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The media type of the Content-Type header, lowercased, without parameters.
    fn media_type(&self) -> Option<String> {
        let raw = self.header(http::header::CONTENT_TYPE)?;
        Some(raw.split(';').next()?.trim().to_ascii_lowercase())
    }
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
    pub(crate) fn json(status: u16, body: Value) -> Self {
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
}

pub(crate) struct IncodeIntake {
    source: crate::verification::ip::SourcePolicy,
    shared_header: Option<crate::verification::shared_header::SharedHeader>,
    require_bearer: bool,
}

pub(crate) struct IdnowIntake {
    source: crate::verification::ip::SourcePolicy,
    shared_header: Option<crate::verification::shared_header::SharedHeader>,
    jwt: Option<JwtVerifier>,
}

pub struct Intake<Q> {
    incode: Option<IncodeIntake>,
    idnow: Option<IdnowIntake>,
    oauth: Option<TokenIssuer>,
    queue: Q,
    clock: Arc<dyn Clock>,
}

impl<Q: IngestQueue> Intake<Q> {
    /// [`ReceiverSettings::from_env`], then [`Intake::new`].
    pub fn from_env(
        env: &Env,
        queue: Q,
        http: reqwest::Client,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, ConfigError> {
        Self::new(ReceiverSettings::from_env(env)?, queue, http, clock)
    }

    pub fn new(
        settings: ReceiverSettings,
        queue: Q,
        http: reqwest::Client,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, ConfigError> {
        let oauth = settings
            .oauth
            .map(|o| TokenIssuer::new(o, clock.clone()))
            .transpose()?;
        let incode = settings.incode.map(
            |IncodeSettings {
                 source,
                 shared_header,
                 require_bearer,
             }| IncodeIntake {
                source,
                shared_header,
                require_bearer,
            },
        );
        let idnow = settings.idnow.map(
            |IdnowSettings {
                 source,
                 shared_header,
                 jwt,
             }| IdnowIntake {
                source,
                shared_header,
                jwt: jwt.map(|j| {
                    let jwks = j.jwks.map(|k| {
                        JwksCache::new(
                            k.url,
                            http.clone(),
                            clock.clone(),
                            k.min_refresh_secs,
                            k.max_age_secs,
                        )
                    });
                    let secrets: Vec<&[u8]> =
                        j.hs256_secrets.iter().map(|s| s.as_bytes()).collect();
                    JwtVerifier::new(
                        jwks,
                        &secrets,
                        j.issuer,
                        j.audience,
                        j.leeway_secs,
                        clock.clone(),
                    )
                }),
            },
        );
        Ok(Self {
            incode,
            idnow,
            oauth,
            queue,
            clock,
        })
    }

    pub async fn handle(&self, req: InboundRequest<'_>) -> Reply {
        let route = route(req.path);
        match self.serve(route, &req).await {
            Ok(reply) => reply,
            Err(e) => {
                // Refusals are logged with their reason (our words); the source address only for
                // 403s, where the operator needs it to recognise a provider's new address. The path
                // is client input: only the route's fixed name is logged.
                let ip = (e.status() == 403)
                    .then(|| req.source_ip.map(|i| i.to_string()))
                    .flatten();
                let provider = match route {
                    Some(Route::Idnow) => Some(Provider::Idnow.as_str()),
                    Some(_) => Some(Provider::Incode.as_str()),
                    None => None,
                };
                tracing::warn!(
                    provider,
                    route = route.map(|r| r.name()),
                    status = e.status(),
                    reason = e.reason(),
                    source_ip = ip,
                    request_id = request_id(req.request_id),
                    "webhook refused"
                );
                e.into_reply()
            }
        }
    }

    async fn serve(
        &self,
        route: Option<Route<'_>>,
        req: &InboundRequest<'_>,
    ) -> Result<Reply, IntakeError> {
        let route = route.ok_or(IntakeError::NotFound("no such endpoint"))?;
        if req.method != "POST" {
            return Err(IntakeError::MethodNotAllowed);
        }
        let request = Request {
            headers: header_map(req.headers)?,
            body: decode_body(req.body, req.body_base64)?,
            source_ip: req.source_ip,
            request_id: request_id(req.request_id),
        };
        match route {
            Route::Token => self.token(&request),
            Route::Incode(hint) => self.incode(&request, hint).await,
            Route::Idnow => self.idnow(&request).await,
        }
    }

    async fn enqueue(
        &self,
        req: &Request<'_>,
        provider: Provider,
        parsed: ParsedEvent,
        verified_by: Vec<Check>,
        type_hint: Option<&str>,
        content_type: &str,
    ) -> Result<Reply, IntakeError> {
        // The body was validated as UTF-8 by the JSON parser or the JWT path.
        let raw_body = String::from_utf8_lossy(&req.body);
        let mut envelope = Envelope::new(
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
        // Continue the trace the request came with (API Gateway's), else start one.
        envelope.trace_id = Some(
            crate::trace::continued(
                req.header(crate::trace::X_AMZN_TRACE_ID),
                req.header(crate::trace::TRACEPARENT),
            )
            .unwrap_or_else(|| envelope.intake_id.clone()),
        );
        match self.queue.enqueue(&envelope).await {
            Ok(()) => {
                tracing::info!(
                    provider = %provider,
                    event_type = envelope.event_type,
                    event_id = envelope.event_id,
                    request_id = req.request_id,
                    trace_id = envelope.trace_id(),
                    "webhook accepted"
                );
                Ok(Reply::accepted())
            }
            Err(e) => {
                tracing::error!(provider = %provider, event_id = envelope.event_id, error = %e, "enqueue failed");
                Err(IntakeError::QueueUnavailable)
            }
        }
    }
}

/// API Gateway's request id, if it is a plausible one (it is logged and put in the envelope).
fn request_id(id: Option<&str>) -> Option<&str> {
    id.filter(|id| check_key_text("requestId", id, MAX_NAME_CHARS).is_ok())
}

/// The event's header strings as an `http::HeaderMap`. A name or value that HTTP does not allow
/// (a control character, a space in a name) is a 400: API Gateway passes such headers through,
/// and converting them must not fail anywhere else.
fn header_map(pairs: &[(String, String)]) -> Result<HeaderMap, IntakeError> {
    let mut map = HeaderMap::with_capacity(pairs.len());
    for (name, value) in pairs {
        let invalid =
            IntakeError::MalformedRequest("a request header has an invalid name or value");
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| invalid.clone())?;
        let value = HeaderValue::from_str(value).map_err(|_| invalid)?;
        map.append(name, value);
    }
    Ok(map)
}

/// The body, base64-decoded when API Gateway encoded it, within [`MAX_BODY_BYTES`].
fn decode_body(body: &[u8], base64: bool) -> Result<Cow<'_, [u8]>, IntakeError> {
    if !base64 {
        if body.len() > MAX_BODY_BYTES {
            return Err(IntakeError::PayloadTooLarge);
        }
        return Ok(Cow::Borrowed(body));
    }
    // Refuse before decoding anything bigger than the encoding of the largest body.
    if body.len() > MAX_BODY_BYTES.div_ceil(3) * 4 {
        return Err(IntakeError::PayloadTooLarge);
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(body)
        .map_err(|_| IntakeError::MalformedRequest("body is not valid base64"))?;
    if decoded.len() > MAX_BODY_BYTES {
        return Err(IntakeError::PayloadTooLarge);
    }
    Ok(Cow::Owned(decoded))
}

/// The source IP and the shared header (if configured); returns the checks that passed.
fn source_and_header(
    source: &crate::verification::ip::SourcePolicy,
    header: Option<&crate::verification::shared_header::SharedHeader>,
    req: &Request<'_>,
) -> Result<Vec<Check>, IntakeError> {
    let mut verified = Vec::with_capacity(3);
    if !source.allows(req.source_ip) {
        return Err(Rejection::Forbidden("source IP not allowed").into());
    }
    if source.is_restricted() {
        verified.push(Check::SourceIp);
    }
    if let Some(h) = header {
        h.verify(&req.headers)?;
        verified.push(Check::SharedHeader);
    }
    Ok(verified)
}
