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
    /// The checks that authenticated the request.
    pub verified_by: Vec<Check>,
    /// Incode: the type segment of the URL when it named a type this version does not know.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub type_hint: Option<String>,
    /// API Gateway's request id, to find the receiver's log line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
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
            verified_by: received.verified_by,
            type_hint: received.type_hint.map(str::to_string),
            request_id: received.request_id.map(str::to_string),
            content_type: received.content_type.to_string(),
            raw_body: received.raw_body.to_string(),
            event: parsed.event,
        }
    }
}
