//! `POST /webhooks/incode[/{type}]`.

use super::{Intake, IntakeError, Reply, Request, source_and_header};
use crate::provider::incode::{self, TypeHint};
use crate::provider::{Provider, parse_json};
use crate::queue::IngestQueue;

impl<Q: IngestQueue> Intake<Q> {
    pub(super) async fn incode(
        &self,
        req: &Request<'_>,
        hint: TypeHint<'_>,
    ) -> Result<Reply, IntakeError> {
        let cfg = self
            .incode
            .as_ref()
            .ok_or(IntakeError::NotFound("Incode webhooks are disabled"))?;
        let mut verified = source_and_header(&cfg.source, cfg.shared_header.as_ref(), req)?;
        if cfg.require_bearer {
            // Settings refuse a required bearer token without OAuth; without it nothing verifies.
            let oauth = self
                .oauth
                .as_ref()
                .ok_or(IntakeError::NotFound("Incode webhooks are disabled"))?;
            verified.push(oauth.verify_bearer(req.header(http::header::AUTHORIZATION))?);
        }
        if req.media_type().as_deref() != Some("application/json") {
            return Err(IntakeError::UnsupportedMediaType("use application/json"));
        }
        let value = parse_json(&req.body)?;
        let parsed = incode::parse(&value, hint)?;
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
}
