//! The envelope: what the receiver puts on the ingest queue for each accepted webhook, and what the
//! consumer and dispatcher read. It carries the raw body exactly as received (so a signature can be
//! re-checked and a destination can get the provider's bytes) beside the parsed event.

use crate::provider::{ParsedEvent, Provider};
use crate::verification::Check;
use serde::{Deserialize, Serialize};

pub const ENVELOPE_VERSION: u8 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// Format version, for readers deployed before a change of format.
    pub v: u8,
    pub provider: Provider,
    pub event_type: String,
    /// The provider's event id (IDnow `eventId`) or the content-derived one (Incode).
    pub event_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// Session status reported by this event, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Hash of the event's stable content (see `ParsedEvent::payload_hash`).
    pub payload_hash: String,
    /// Milliseconds since the Unix epoch when the receiver accepted the request.
    pub received_at_ms: u64,
    /// Unique per accepted request (128 random bits, hex). Every SQS copy of the request's message
    /// carries it, a provider retry has its own: the consumer tells the event's owner by it.
    #[serde(default)]
    pub intake_id: String,
    /// The checks that authenticated the request.
    pub verified_by: Vec<Check>,
    /// Incode: the type segment of the URL when it named a type this version does not know.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub type_hint: Option<String>,
    /// API Gateway's request id, to find the receiver's log line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// The W3C trace id the webhook is correlated by ([`crate::trace`]): the one the request came
    /// with, else its intake id. Absent in envelopes of earlier versions: see [`Self::trace_id`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    pub content_type: String,
    /// The request body exactly as received (UTF-8: JSON or a compact JWT).
    pub raw_body: String,
    /// The provider's event as JSON (for a JWT body: its `data` claim).
    pub event: serde_json::Value,
}

/// What the receiver knows about the request beside the parsed event.
pub struct Received<'a> {
    pub provider: Provider,
    pub received_at_ms: u64,
    pub verified_by: Vec<Check>,
    pub type_hint: Option<&'a str>,
    pub request_id: Option<&'a str>,
    pub content_type: &'a str,
    pub raw_body: &'a str,
}

impl Envelope {
    pub fn new(parsed: ParsedEvent, received: Received<'_>) -> Self {
        Self {
            v: ENVELOPE_VERSION,
            provider: received.provider,
            event_type: parsed.event_type,
            event_id: parsed.event_id,
            session_id: parsed.session_id,
            status: parsed.status,
            payload_hash: parsed.payload_hash,
            received_at_ms: received.received_at_ms,
            intake_id: new_intake_id(),
            verified_by: received.verified_by,
            type_hint: received.type_hint.map(str::to_string),
            request_id: received.request_id.map(str::to_string),
            trace_id: None,
            content_type: received.content_type.to_string(),
            raw_body: received.raw_body.to_string(),
            event: parsed.event,
        }
    }
}

impl Envelope {
    /// The webhook's trace id: the one recorded at intake, else the intake id (also 128 random
    /// bits in hex, so a valid W3C trace id).
    pub fn trace_id(&self) -> &str {
        self.trace_id
            .as_deref()
            .filter(|t| crate::trace::is_trace_id(t))
            .unwrap_or(&self.intake_id)
    }
}

/// A fresh intake id. Not a secret: it only has to differ between requests (a collision would make
/// a provider retry look like a copy of the first message, which the consumer also handles safely).
pub fn new_intake_id() -> String {
    format!("{:032x}", fastrand::u128(..))
}

/// Envelopes for the library's unit tests (the integration tests have their own builders).
#[cfg(test)]
pub(crate) mod tests_support {
    use super::*;

    pub fn idnow(event_id: &str, session_id: &str) -> Envelope {
        idnow_with(event_id, session_id, "session.completed", "COMPLETED")
    }

    pub fn idnow_with(event_id: &str, session_id: &str, name: &str, status: &str) -> Envelope {
        let event = serde_json::json!({
            "eventId": event_id, "eventDeliverId": format!("d-{event_id}"), "eventVersion": "1.0",
            "eventName": name, "eventSequence": 1, "createdAt": "2026-11-18T08:53:20Z",
            "environment": "test",
            "payload": {"flowId": "flow-1", "sessionId": session_id, "sessionStatus": status}
        });
        let parsed = crate::provider::idnow::parse(&event).expect("valid IDnow event");
        let raw = event.to_string();
        Envelope::new(
            parsed,
            Received {
                provider: Provider::Idnow,
                received_at_ms: 1_800_000_000_000,
                verified_by: vec![Check::JwtRs256],
                type_hint: None,
                request_id: None,
                content_type: "application/json",
                raw_body: &raw,
            },
        )
    }
}
