//! `POST /oauth/token`: RFC 6749 section 4.4 client credentials for Incode
//! ([`crate::verification::oauth::TokenIssuer`]).

use super::{Intake, IntakeError, Reply, Request};
use crate::queue::IngestQueue;
use crate::verification::Rejection;
use crate::verification::oauth::OAuthError;
use serde_json::json;

/// RFC 6749 section 5.1: token responses must not be cached (errors too, since they answer the
/// same request).
pub(super) const NO_STORE: [(&str, &str); 2] =
    [("cache-control", "no-store"), ("pragma", "no-cache")];

impl<Q: IngestQueue> Intake<Q> {
    pub(super) fn token(&self, req: &Request<'_>) -> Result<Reply, IntakeError> {
        let (Some(incode), Some(oauth)) = (&self.incode, &self.oauth) else {
            return Err(IntakeError::NotFound("no such endpoint"));
        };
        if !incode.source.allows(req.source_ip) {
            return Err(Rejection::Forbidden("source IP not allowed").into());
        }
        if req.media_type().as_deref() != Some("application/x-www-form-urlencoded") {
            return Err(OAuthError {
                status: 415,
                error: "invalid_request",
                description: "use application/x-www-form-urlencoded",
                basic_challenge: false,
            }
            .into());
        }
        let token = oauth.issue(req.header(http::header::AUTHORIZATION), &req.body)?;
        let mut body = json!({
            "access_token": token.access_token,
            "token_type": token.token_type,
            "expires_in": token.expires_in,
        });
        if let Some(scope) = token.scope {
            body["scope"] = scope.into();
        }
        let mut reply = Reply::json(200, body);
        reply
            .headers
            .extend(NO_STORE.map(|(k, v)| (k, v.to_string())));
        Ok(reply)
    }
}
