//! Every way the receiver refuses a request, and the one place where a refusal becomes an answer.
//! Handlers return `Result<_, IntakeError>` and use `?`; [`IntakeError::into_reply`] picks the
//! status, the JSON body and the headers.

use super::Reply;
use crate::provider::ParseError;
use crate::verification::Rejection;
use crate::verification::oauth::OAuthError;
use serde_json::json;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IntakeError {
    /// Unknown path, or a route whose provider (or the token endpoint) is disabled.
    NotFound(&'static str),
    MethodNotAllowed,
    /// The request itself is malformed (a header that is not a valid HTTP header, a body that is
    /// not valid base64 although API Gateway says it is): 400 `invalid_request`.
    MalformedRequest(&'static str),
    PayloadTooLarge,
    /// A verification check failed (403, 401) or could not run (503).
    Refused(Rejection),
    UnsupportedMediaType(&'static str),
    /// The body does not hold a valid event: 400 naming the field.
    InvalidBody(ParseError),
    /// The ingest queue did not take the envelope: nothing was acknowledged.
    QueueUnavailable,
    /// The token endpoint's errors, in RFC 6749 section 5.2's shape.
    OAuth(OAuthError),
}

impl From<Rejection> for IntakeError {
    fn from(r: Rejection) -> Self {
        IntakeError::Refused(r)
    }
}

impl From<ParseError> for IntakeError {
    fn from(e: ParseError) -> Self {
        IntakeError::InvalidBody(e)
    }
}

impl From<OAuthError> for IntakeError {
    fn from(e: OAuthError) -> Self {
        IntakeError::OAuth(e)
    }
}

impl IntakeError {
    pub fn status(&self) -> u16 {
        match self {
            IntakeError::NotFound(_) => 404,
            IntakeError::MethodNotAllowed => 405,
            IntakeError::MalformedRequest(_) | IntakeError::InvalidBody(_) => 400,
            IntakeError::PayloadTooLarge => 413,
            IntakeError::Refused(r) => r.status(),
            IntakeError::UnsupportedMediaType(_) => 415,
            IntakeError::QueueUnavailable => 503,
            IntakeError::OAuth(e) => e.status,
        }
    }

    /// Why, for the log line: our own words, never request data.
    pub fn reason(&self) -> &str {
        match self {
            IntakeError::NotFound(m) | IntakeError::MalformedRequest(m) => m,
            IntakeError::MethodNotAllowed => "use POST",
            IntakeError::PayloadTooLarge => "body exceeds 65536 bytes",
            IntakeError::Refused(r) => r.reason(),
            IntakeError::UnsupportedMediaType(m) => m,
            IntakeError::InvalidBody(e) => &e.0,
            IntakeError::QueueUnavailable => "could not enqueue the webhook; retry later",
            IntakeError::OAuth(e) => e.description,
        }
    }

    pub fn into_reply(self) -> Reply {
        let status = self.status();
        let code = match &self {
            IntakeError::NotFound(_) => "not_found",
            IntakeError::MethodNotAllowed => "method_not_allowed",
            IntakeError::MalformedRequest(_) => "invalid_request",
            IntakeError::PayloadTooLarge => "payload_too_large",
            IntakeError::Refused(Rejection::Forbidden(_)) => "forbidden",
            IntakeError::Refused(Rejection::Unauthorized(_)) => "unauthorized",
            IntakeError::Refused(Rejection::Unavailable(_)) | IntakeError::QueueUnavailable => {
                "unavailable"
            }
            IntakeError::UnsupportedMediaType(_) => "unsupported_media_type",
            IntakeError::InvalidBody(_) => "invalid_body",
            IntakeError::OAuth(e) => {
                let mut reply = Reply::json(status, e.body());
                reply
                    .headers
                    .extend(super::token::NO_STORE.map(|(k, v)| (k, v.to_string())));
                if e.basic_challenge {
                    reply.headers.push((
                        "www-authenticate",
                        "Basic realm=\"kyc-webhook-relay\"".into(),
                    ));
                }
                reply.reason = Some(e.description.to_string());
                return reply;
            }
        };
        let mut reply = Reply::json(status, json!({"error": code, "message": self.reason()}));
        if self == IntakeError::MethodNotAllowed {
            reply.headers.push(("allow", "POST".into()));
        }
        reply.reason = Some(self.reason().to_string());
        reply
    }
}
