//! The identity-verification providers: what their webhooks look like, how an event is identified
//! and deduplicated, and how their session statuses are ordered.

pub mod idnow;
pub mod incode;
pub mod status;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    Incode,
    Idnow,
}

impl Provider {
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Incode => "incode",
            Provider::Idnow => "idnow",
        }
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Provider {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "incode" => Ok(Provider::Incode),
            "idnow" => Ok(Provider::Idnow),
            other => Err(format!(
                "unknown provider {other:?} (expected incode or idnow)"
            )),
        }
    }
}

/// What intake extracts from a webhook body, whatever the provider.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedEvent {
    pub event_type: String,
    /// The provider's event id, or one derived from the content where the provider has none.
    pub event_id: String,
    pub session_id: Option<String>,
    /// The session status this event reports, if any (input to the session-state projection).
    pub status: Option<String>,
    /// SHA-256 (hex) of the event's canonical content, without per-delivery fields: two deliveries of
    /// one event hash the same; the same event id with another hash is a conflict.
    pub payload_hash: String,
    pub event: serde_json::Value,
}

/// A body that does not hold a valid event. Always answered with 400 and the message, which names
/// the field but never echoes values (they may be PII).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub String);

impl ParseError {
    pub fn missing(field: &str) -> Self {
        Self(format!("missing required field `{field}`"))
    }

    pub fn invalid(field: &str, expected: &str) -> Self {
        Self(format!("field `{field}` must be {expected}"))
    }
}

/// Canonical JSON: object keys sorted (serde_json's default map is a BTreeMap), no insignificant
/// whitespace. Two bodies that differ only in key order or formatting serialise identically.
pub fn canonical_json(value: &serde_json::Value) -> String {
    // Serialising a Value cannot fail: keys are strings and numbers are finite.
    serde_json::to_string(value).unwrap_or_default()
}

pub fn sha256_hex(parts: &[&[u8]]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part);
        // A separator that cannot occur inside JSON text keeps ("ab","c") and ("a","bc") apart.
        hasher.update([0u8]);
    }
    hex::encode(hasher.finalize())
}

/// Reads a required non-empty string field.
pub(crate) fn required_str<'a>(
    obj: &'a serde_json::Map<String, serde_json::Value>,
    field: &str,
) -> Result<&'a str, ParseError> {
    match obj.get(field) {
        None | Some(serde_json::Value::Null) => Err(ParseError::missing(field)),
        Some(serde_json::Value::String(s)) if !s.trim().is_empty() => Ok(s),
        Some(_) => Err(ParseError::invalid(field, "a non-empty string")),
    }
}

/// Reads an optional string field; present but not a string is an error.
pub(crate) fn optional_str<'a>(
    obj: &'a serde_json::Map<String, serde_json::Value>,
    field: &str,
) -> Result<Option<&'a str>, ParseError> {
    match obj.get(field) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(ParseError::invalid(field, "a string")),
    }
}

pub(crate) fn as_object(
    value: &serde_json::Value,
) -> Result<&serde_json::Map<String, serde_json::Value>, ParseError> {
    value
        .as_object()
        .ok_or_else(|| ParseError("body must be a JSON object".into()))
}

/// Parses a JSON body. serde_json refuses nesting deeper than 128 levels, so a hostile deeply nested
/// body is a 400, not a stack overflow.
pub fn parse_json(body: &[u8]) -> Result<serde_json::Value, ParseError> {
    let text =
        std::str::from_utf8(body).map_err(|_| ParseError("body is not valid UTF-8".into()))?;
    serde_json::from_str(text).map_err(|e| {
        // The position is useful, the message may quote input: keep only its category and place.
        ParseError(format!(
            "body is not valid JSON ({:?} error at line {} column {})",
            e.classify(),
            e.line(),
            e.column()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_json_ignores_key_order_and_whitespace() {
        let a = parse_json(br#"{"b":1,"a":{"y":[1,2],"x":"s"}}"#).unwrap();
        let b = parse_json(b"{ \"a\" : { \"x\":\"s\", \"y\":[1, 2] },\n \"b\": 1 }").unwrap();
        assert_eq!(canonical_json(&a), canonical_json(&b));
        assert_eq!(canonical_json(&a), r#"{"a":{"x":"s","y":[1,2]},"b":1}"#);
    }

    #[test]
    fn deeply_nested_json_is_a_parse_error_not_a_crash() {
        let body = "[".repeat(100_000) + &"]".repeat(100_000);
        let err = parse_json(body.as_bytes()).unwrap_err();
        assert!(err.0.contains("not valid JSON"), "{err}");
    }

    #[test]
    fn invalid_utf8_is_refused() {
        assert_eq!(
            parse_json(b"{\"a\":\"\xff\"}").unwrap_err().0,
            "body is not valid UTF-8"
        );
    }

    #[test]
    fn hash_parts_are_separated() {
        assert_ne!(sha256_hex(&[b"ab", b"c"]), sha256_hex(&[b"a", b"bc"]));
    }
}
