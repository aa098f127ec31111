//! IDnow (Trust Platform) webhooks.
//!
//! Thin payloads with no PII: `eventId` (stable across IDnow's retries, our dedup key),
//! `eventDeliverId` (new per attempt, so excluded from the payload hash), `eventName`
//! (`resource.action`), `eventSequence`, `createdAt`, `payload {flowId, sessionId, sessionStatus}`.
//! The event arrives either as the JSON body or as the `data` claim of a JWT body.

use super::{
    MAX_ID_CHARS, MAX_NAME_CHARS, ParseError, ParsedEvent, as_object, canonical_json, optional_key,
    optional_str, required_key, sha256_hex,
};
use serde_json::Value;

/// Fields that change from one delivery attempt of the same event to the next.
const PER_DELIVERY_FIELDS: [&str; 1] = ["eventDeliverId"];

pub fn parse(event: &Value) -> Result<ParsedEvent, ParseError> {
    let obj = as_object(event)?;
    // Each of these becomes a DynamoDB key, an SQS message attribute or a log field.
    let event_id = required_key(obj, "eventId", "eventId", MAX_ID_CHARS)?;
    let event_name = required_key(obj, "eventName", "eventName", MAX_NAME_CHARS)?;
    optional_str(obj, "eventDeliverId")?;
    optional_str(obj, "createdAt")?;

    let (session_id, status) = match obj.get("payload") {
        None | Some(Value::Null) => (None, None),
        Some(Value::Object(payload)) => (
            optional_key(payload, "sessionId", "payload.sessionId", MAX_ID_CHARS)?,
            optional_key(
                payload,
                "sessionStatus",
                "payload.sessionStatus",
                MAX_NAME_CHARS,
            )?,
        ),
        Some(_) => return Err(ParseError::invalid("payload", "an object")),
    };
    // Session events name the status in the event name too (session.completed); prefer the explicit
    // sessionStatus, fall back to the action.
    let status = status.map(str::to_ascii_uppercase).or_else(|| {
        event_name
            .strip_prefix("session.")
            .map(str::to_ascii_uppercase)
    });

    let mut stable = obj.clone();
    for field in PER_DELIVERY_FIELDS {
        stable.remove(field);
    }
    let payload_hash = sha256_hex(&[b"idnow", canonical_json(&Value::Object(stable)).as_bytes()]);

    Ok(ParsedEvent {
        event_type: event_name.to_string(),
        event_id: event_id.to_string(),
        session_id: session_id.map(str::to_string),
        status,
        payload_hash,
        event: event.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample(deliver: &str) -> Value {
        json!({
            "eventId": "evt-1", "eventDeliverId": deliver, "eventVersion": "1",
            "eventName": "session.completed", "eventSequence": 3,
            "createdAt": "2026-01-01T00:00:00Z", "environment": "live",
            "payload": {"flowId": "f", "sessionId": "s-1", "sessionStatus": "COMPLETED"}
        })
    }

    #[test]
    fn parses_an_event() {
        let ev = parse(&sample("d1")).unwrap();
        assert_eq!(ev.event_id, "evt-1");
        assert_eq!(ev.event_type, "session.completed");
        assert_eq!(ev.session_id.as_deref(), Some("s-1"));
        assert_eq!(ev.status.as_deref(), Some("COMPLETED"));
    }

    #[test]
    fn retries_hash_the_same_despite_a_new_deliver_id() {
        assert_eq!(
            parse(&sample("d1")).unwrap().payload_hash,
            parse(&sample("d2")).unwrap().payload_hash
        );
        let mut changed = sample("d1");
        changed["payload"]["sessionStatus"] = json!("ERROR");
        assert_ne!(
            parse(&sample("d1")).unwrap().payload_hash,
            parse(&changed).unwrap().payload_hash
        );
    }

    #[test]
    fn status_falls_back_to_the_event_action() {
        let ev = parse(
            &json!({"eventId": "e", "eventName": "session.created", "payload": {"sessionId": "s"}}),
        )
        .unwrap();
        assert_eq!(ev.status.as_deref(), Some("CREATED"));
    }

    #[test]
    fn refuses_missing_or_malformed_fields() {
        assert_eq!(
            parse(&json!({"eventName": "x"})).unwrap_err().0,
            "missing required field `eventId`"
        );
        assert_eq!(
            parse(&json!({"eventId": "e"})).unwrap_err().0,
            "missing required field `eventName`"
        );
        assert!(parse(&json!({"eventId": "e", "eventName": "x", "payload": 1})).is_err());
        assert!(parse(&json!({"eventId": "e\n", "eventName": "x"})).is_err());
        assert!(parse(&json!({"eventId": "e".repeat(300), "eventName": "x"})).is_err());
    }
}
