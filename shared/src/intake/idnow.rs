//! `POST /webhooks/idnow`: a JWT body (current IDnow documentation), a JSON body with the JWT in
//! `X-Idnow-Signature` (older documentation), or plain JSON when no JWT key is configured.

use super::{IDNOW_SIGNATURE_HEADER, Intake, IntakeError, Reply, Request, source_and_header};
use crate::provider::{ParseError, Provider, idnow, parse_json};
use crate::queue::IngestQueue;
use crate::verification::Rejection;
use serde_json::{Map, Value};

impl<Q: IngestQueue> Intake<Q> {
    pub(super) async fn idnow(&self, req: &Request<'_>) -> Result<Reply, IntakeError> {
        let cfg = self
            .idnow
            .as_ref()
            .ok_or(IntakeError::NotFound("IDnow webhooks are disabled"))?;
        let mut verified = source_and_header(&cfg.source, cfg.shared_header.as_ref(), req)?;
        let (event, content_type) = match (req.media_type().as_deref(), &cfg.jwt) {
            // Current IDnow documentation: the body is the JWT, the event its `data` claim.
            (Some("application/jwt"), Some(jwt)) => {
                let token = std::str::from_utf8(&req.body)
                    .map_err(|_| ParseError("body is not valid UTF-8".into()))?;
                let verified_jwt = jwt.verify(token).await?;
                verified.push(verified_jwt.check);
                let data = crate::verification::jwt::data_claim(&verified_jwt.claims)?;
                if let Some(sub) = verified_jwt.claims.get("sub")
                    && data.get("eventId") != Some(sub)
                {
                    return Err(
                        Rejection::Unauthorized("JWT subject does not match the event id").into(),
                    );
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
                        let token = req
                            .header(IDNOW_SIGNATURE_HEADER)
                            .ok_or(Rejection::Unauthorized("X-Idnow-Signature missing"))?;
                        Some(jwt.verify(token).await?)
                    }
                };
                let value = parse_json(&req.body)?;
                if let Some(verified_jwt) = verified_jwt {
                    body_is_covered(&verified_jwt.claims, &value)?;
                    verified.push(verified_jwt.check);
                }
                (value, "application/json")
            }
            _ => {
                return Err(IntakeError::UnsupportedMediaType(if cfg.jwt.is_some() {
                    "use application/jwt or application/json"
                } else {
                    "use application/json"
                }));
            }
        };
        let parsed = idnow::parse(&event)?;
        self.enqueue(req, Provider::Idnow, parsed, verified, None, content_type)
            .await
    }
}

/// A signature header must bind the body it came with: its `data` claim must equal the body (and a
/// `sub`, if present, the body's `eventId`). A JWT that names only the event id would let a captured
/// signature authorise any body with that id, so it is refused.
fn body_is_covered(claims: &Map<String, Value>, body: &Value) -> Result<(), Rejection> {
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
