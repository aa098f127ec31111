//! Incode webhooks.
//!
//! Incode sends one webhook type per URL, with no event id and no signature. The type comes from the
//! URL path (`/webhooks/incode/{type}`) when present, else from the body's shape. Incode retries an
//! unacknowledged webhook with an identical request, so the event id is derived from the content:
//! `inc_` + the first 32 hex digits of SHA-256(type, canonical JSON body). A retry (byte-for-byte the
//! same, or the same JSON with other key order or whitespace) gets the same id; two different
//! webhooks cannot collide in practice (128 bits).

use super::{
    MAX_ID_CHARS, MAX_NAME_CHARS, ParseError, ParsedEvent, as_object, canonical_json, optional_key,
    optional_str, required_key, required_str, sha256_hex,
};
use serde_json::Value;

/// Incode's webhook types, as named in its dashboard. The slug is the path segment of the URL the
/// operator pastes into Incode's dashboard for that type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookType {
    OnboardingStatus,
    VideoSelfieUploaded,
    WatchlistUpdated,
    FaceAuthentication,
    SessionStarted,
    SessionProgress,
    SessionFailed,
    SessionSucceeded,
    SessionPendingReview,
    SessionIdentityEnrolled,
    WorkHistory,
    ProofOfPayment,
    ThirdPartyAsyncRetries,
}

impl WebhookType {
    pub const ALL: [WebhookType; 13] = [
        WebhookType::OnboardingStatus,
        WebhookType::VideoSelfieUploaded,
        WebhookType::WatchlistUpdated,
        WebhookType::FaceAuthentication,
        WebhookType::SessionStarted,
        WebhookType::SessionProgress,
        WebhookType::SessionFailed,
        WebhookType::SessionSucceeded,
        WebhookType::SessionPendingReview,
        WebhookType::SessionIdentityEnrolled,
        WebhookType::WorkHistory,
        WebhookType::ProofOfPayment,
        WebhookType::ThirdPartyAsyncRetries,
    ];

    /// URL path segment.
    pub fn slug(self) -> &'static str {
        match self {
            WebhookType::OnboardingStatus => "onboarding-status",
            WebhookType::VideoSelfieUploaded => "video-selfie-uploaded",
            WebhookType::WatchlistUpdated => "watchlist-updated",
            WebhookType::FaceAuthentication => "face-authentication",
            WebhookType::SessionStarted => "session-started",
            WebhookType::SessionProgress => "session-progress",
            WebhookType::SessionFailed => "session-failed",
            WebhookType::SessionSucceeded => "session-succeeded",
            WebhookType::SessionPendingReview => "session-pending-review",
            WebhookType::SessionIdentityEnrolled => "session-identity-enrolled",
            WebhookType::WorkHistory => "work-history",
            WebhookType::ProofOfPayment => "proof-of-payment",
            WebhookType::ThirdPartyAsyncRetries => "third-party-async-retries",
        }
    }

    /// Event type in envelopes and destination filters.
    pub fn event_type(self) -> &'static str {
        match self {
            WebhookType::OnboardingStatus => "onboarding_status",
            WebhookType::VideoSelfieUploaded => "video_selfie_uploaded",
            WebhookType::WatchlistUpdated => "watchlist_updated",
            WebhookType::FaceAuthentication => "face_authentication",
            WebhookType::SessionStarted => "session_started",
            WebhookType::SessionProgress => "session_progress",
            WebhookType::SessionFailed => "session_failed",
            WebhookType::SessionSucceeded => "session_succeeded",
            WebhookType::SessionPendingReview => "session_pending_review",
            WebhookType::SessionIdentityEnrolled => "session_identity_enrolled",
            WebhookType::WorkHistory => "work_history",
            WebhookType::ProofOfPayment => "proof_of_payment",
            WebhookType::ThirdPartyAsyncRetries => "third_party_async_retries",
        }
    }

    pub fn from_slug(slug: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|t| t.slug() == slug || t.event_type() == slug)
    }

    /// The `eventType` value of session webhooks.
    fn from_session_event(event: &str) -> Option<Self> {
        match event.to_ascii_uppercase().as_str() {
            "SESSION_STARTED" => Some(WebhookType::SessionStarted),
            "SESSION_PROGRESS" => Some(WebhookType::SessionProgress),
            "SESSION_FAILED" => Some(WebhookType::SessionFailed),
            "SESSION_SUCCEEDED" => Some(WebhookType::SessionSucceeded),
            "SESSION_PENDING_REVIEW" => Some(WebhookType::SessionPendingReview),
            "SESSION_IDENTITY_ENROLLED" => Some(WebhookType::SessionIdentityEnrolled),
            _ => None,
        }
    }

    fn is_session_event(self) -> bool {
        matches!(
            self,
            WebhookType::SessionStarted
                | WebhookType::SessionProgress
                | WebhookType::SessionFailed
                | WebhookType::SessionSucceeded
                | WebhookType::SessionPendingReview
                | WebhookType::SessionIdentityEnrolled
        )
    }
}

/// The type as the request names it: from the path, or not named at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TypeHint<'a> {
    None,
    Path(&'a str),
}

pub const UNKNOWN_TYPE: &str = "unknown";

/// Path segments we accept as a type hint: Incode's slugs are short lowercase words. Anything else is
/// a 404 (so the segment can be logged and hashed without escaping).
pub fn is_valid_slug(segment: &str) -> bool {
    !segment.is_empty()
        && segment.len() <= 64
        && segment
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

pub fn parse(body: &Value, hint: TypeHint<'_>) -> Result<ParsedEvent, ParseError> {
    let obj = as_object(body)?;
    // The session event names the status (a DynamoDB attribute and log field): validated as a key.
    let session_event = match optional_key(obj, "eventType", "eventType", MAX_NAME_CHARS)? {
        Some(e) => Some(e),
        None => optional_key(obj, "event_type", "event_type", MAX_NAME_CHARS)?,
    };

    // The path wins; an unknown path type is still accepted (Incode would otherwise retry a 400 for
    // half an hour) and marked unknown, keeping the segment for the operator.
    let (known, type_label) = match hint {
        TypeHint::Path(slug) => match WebhookType::from_slug(slug) {
            Some(t) => (Some(t), t.event_type().to_string()),
            None => (None, format!("{UNKNOWN_TYPE}:{slug}")),
        },
        TypeHint::None => match detect(obj, session_event) {
            Some(t) => (Some(t), t.event_type().to_string()),
            None => (None, UNKNOWN_TYPE.to_string()),
        },
    };

    let mut status = None;
    let session_id = match known {
        Some(WebhookType::OnboardingStatus) => {
            status = Some(
                required_key(obj, "onboardingStatus", "onboardingStatus", MAX_NAME_CHARS)?
                    .to_string(),
            );
            optional_str(obj, "externalId")?;
            Some(interview_id(obj)?)
        }
        Some(WebhookType::WatchlistUpdated) => {
            required_str(obj, "search_id")?;
            Some(interview_id(obj)?)
        }
        Some(WebhookType::VideoSelfieUploaded) => {
            required_str(obj, "clientId")?;
            required_str(obj, "flowId")?;
            Some(interview_id(obj)?)
        }
        Some(t) if t.is_session_event() => {
            // The session webhooks' field names are not fully documented: eventType or event_type,
            // and the status is the event itself (SESSION_SUCCEEDED, ...).
            let event = session_event.ok_or_else(|| ParseError::missing("eventType"))?;
            status = Some(event.to_ascii_uppercase());
            Some(interview_id(obj)?)
        }
        // Types whose bodies Incode does not document, and unknown types: any JSON object, with the
        // interview id when there is one.
        _ => optional_key(obj, "interviewId", "interviewId", MAX_ID_CHARS)?,
    };

    let canonical = canonical_json(body);
    let payload_hash = sha256_hex(&[b"incode", type_label.as_bytes(), canonical.as_bytes()]);
    let event_type = if known.is_some() {
        type_label
    } else {
        UNKNOWN_TYPE.to_string()
    };
    Ok(ParsedEvent {
        event_id: format!("inc_{}", &payload_hash[..32]),
        event_type,
        session_id: session_id.map(str::to_string),
        status,
        payload_hash,
        event: body.clone(),
    })
}

/// The interview id is the session key (`incode#{interviewId}` in the sessions table, a log field).
fn interview_id(obj: &serde_json::Map<String, Value>) -> Result<&str, ParseError> {
    required_key(obj, "interviewId", "interviewId", MAX_ID_CHARS)
}

/// Recognises a webhook posted to the generic `/webhooks/incode` URL by its fields.
fn detect(
    obj: &serde_json::Map<String, Value>,
    session_event: Option<&str>,
) -> Option<WebhookType> {
    if let Some(t) = session_event.and_then(WebhookType::from_session_event) {
        return Some(t);
    }
    if obj.contains_key("onboardingStatus") {
        return Some(WebhookType::OnboardingStatus);
    }
    if obj.contains_key("search_id") {
        return Some(WebhookType::WatchlistUpdated);
    }
    if obj.contains_key("clientId") && obj.contains_key("flowId") {
        return Some(WebhookType::VideoSelfieUploaded);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn onboarding_status_from_body_shape() {
        let body = json!({"interviewId": "i1", "externalId": "e1", "onboardingStatus": "ONBOARDING_FINISHED"});
        let ev = parse(&body, TypeHint::None).unwrap();
        assert_eq!(ev.event_type, "onboarding_status");
        assert_eq!(ev.session_id.as_deref(), Some("i1"));
        assert_eq!(ev.status.as_deref(), Some("ONBOARDING_FINISHED"));
        assert!(ev.event_id.starts_with("inc_") && ev.event_id.len() == 36);
    }

    #[test]
    fn the_path_type_wins_over_the_body() {
        let body = json!({"interviewId": "i1", "onboardingStatus": "UNKNOWN", "search_id": "s"});
        let ev = parse(&body, TypeHint::Path("watchlist-updated")).unwrap();
        assert_eq!(ev.event_type, "watchlist_updated");
        assert_eq!(ev.status, None);
    }

    #[test]
    fn every_documented_type_parses() {
        for t in WebhookType::ALL {
            let body = json!({
                "interviewId": "i1", "onboardingStatus": "UNKNOWN", "search_id": "s", "ref": "r",
                "clientId": "c", "flowId": "f", "eventType": "SESSION_STARTED"
            });
            let ev = parse(&body, TypeHint::Path(t.slug())).unwrap();
            assert_eq!(ev.event_type, t.event_type());
        }
    }

    #[test]
    fn session_events_accept_both_field_spellings_and_unknown_fields() {
        let a = parse(
            &json!({"eventType": "SESSION_SUCCEEDED", "interviewId": "i", "extra": {"x": 1}}),
            TypeHint::None,
        )
        .unwrap();
        let b = parse(
            &json!({"event_type": "session_succeeded", "interviewId": "i"}),
            TypeHint::None,
        )
        .unwrap();
        assert_eq!(a.event_type, "session_succeeded");
        assert_eq!(b.event_type, "session_succeeded");
        assert_eq!(b.status.as_deref(), Some("SESSION_SUCCEEDED"));
    }

    #[test]
    fn missing_required_fields_are_named() {
        let err = parse(&json!({"onboardingStatus": "UNKNOWN"}), TypeHint::None).unwrap_err();
        assert_eq!(err.0, "missing required field `interviewId`");
        let err = parse(
            &json!({"interviewId": "i"}),
            TypeHint::Path("onboarding-status"),
        )
        .unwrap_err();
        assert_eq!(err.0, "missing required field `onboardingStatus`");
        let err = parse(
            &json!({"interviewId": 5, "onboardingStatus": "X"}),
            TypeHint::None,
        )
        .unwrap_err();
        assert_eq!(err.0, "field `interviewId` must be a non-empty string");
        assert!(parse(&json!([1]), TypeHint::None).is_err());
    }

    #[test]
    fn unknown_types_are_accepted_and_marked() {
        let ev = parse(&json!({"foo": 1}), TypeHint::None).unwrap();
        assert_eq!(ev.event_type, UNKNOWN_TYPE);
        let ev2 = parse(&json!({"foo": 1}), TypeHint::Path("brand-new-type")).unwrap();
        assert_eq!(ev2.event_type, UNKNOWN_TYPE);
        // The path segment is part of the identity: the same body on two unknown URLs is two events.
        assert_ne!(ev.event_id, ev2.event_id);
    }

    #[test]
    fn the_dedup_key_is_stable_across_retries_and_formatting() {
        let a = super::super::parse_json(br#"{"interviewId":"i","onboardingStatus":"UNKNOWN"}"#)
            .unwrap();
        let b = super::super::parse_json(
            b"{\n  \"onboardingStatus\": \"UNKNOWN\",\n  \"interviewId\": \"i\"\n}",
        )
        .unwrap();
        let ea = parse(&a, TypeHint::None).unwrap();
        let eb = parse(&b, TypeHint::Path("onboarding-status")).unwrap();
        assert_eq!(ea.event_id, eb.event_id);
        let c = parse(
            &json!({"interviewId":"i","onboardingStatus":"ONBOARDING_FINISHED"}),
            TypeHint::None,
        )
        .unwrap();
        assert_ne!(ea.event_id, c.event_id);
        // A different type with the same body is a different event.
        let d = parse(&a, TypeHint::Path("face-authentication")).unwrap();
        assert_ne!(ea.event_id, d.event_id);
    }

    #[test]
    fn slugs_are_restricted() {
        assert!(is_valid_slug("onboarding-status"));
        assert!(!is_valid_slug("Onboarding"));
        assert!(!is_valid_slug("a/b"));
        assert!(!is_valid_slug(""));
        assert!(!is_valid_slug(&"a".repeat(65)));
    }
}
