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

/// A keyed identifier of `parts` (HMAC-SHA-256 under `key`, hex; the parts separated as in
/// [`sha256_hex`]): it proves a given value to whoever holds the key, and cannot be reversed by
/// enumerating guessable values without it (an erasure's audit subject).
pub fn keyed_hex(key: &[u8], parts: &[&[u8]]) -> String {
    use hmac::{Hmac, Mac};
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes keys of any length");
    for part in parts {
        mac.update(part);
        mac.update(&[0u8]);
    }
    hex::encode(mac.finalize().into_bytes())
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

/// The deepest nesting a JSON body may have: the outermost object or array is level 1, so a body of
/// `MAX_JSON_DEPTH` nested containers is accepted and one more is a 400. Provider webhooks nest a few
/// levels; the limit is ours (serde_json's own guard, 128, is never reached).
pub const MAX_JSON_DEPTH: usize = 64;

/// Parses a JSON body strictly: UTF-8, at most [`MAX_JSON_DEPTH`] levels of nesting, and no object
/// with the same key twice at any depth. A duplicate key is refused because two parsers may disagree
/// on which value wins (the raw bytes are forwarded, the parsed value is checked and hashed): with
/// duplicates refused, every reader sees the same event.
pub fn parse_json(body: &[u8]) -> Result<serde_json::Value, ParseError> {
    parse_json_with_depth(body, MAX_JSON_DEPTH)
}

/// [`parse_json`] with another depth limit (a JWT's claims wrap the event one level deeper).
pub fn parse_json_with_depth(
    body: &[u8],
    max_depth: usize,
) -> Result<serde_json::Value, ParseError> {
    let text =
        std::str::from_utf8(body).map_err(|_| ParseError("body is not valid UTF-8".into()))?;
    let fault = std::cell::Cell::new(None);
    let mut de = serde_json::Deserializer::from_str(text);
    let parsed = serde::de::DeserializeSeed::deserialize(
        strict::Strict {
            depth: 0,
            max_depth,
            fault: &fault,
        },
        &mut de,
    )
    .and_then(|v| de.end().map(|()| v));
    parsed.map_err(|e| match fault.get() {
        Some(strict::Fault::DuplicateKey) => ParseError(format!(
            "body is not valid JSON (duplicate object key at line {} column {})",
            e.line(),
            e.column()
        )),
        Some(strict::Fault::TooDeep) => ParseError(format!(
            "body nests deeper than {max_depth} levels (line {} column {})",
            e.line(),
            e.column()
        )),
        // The position is useful, the message may quote input: keep only its category and place.
        None => ParseError(format!(
            "body is not valid JSON ({:?} error at line {} column {})",
            e.classify(),
            e.line(),
            e.column()
        )),
    })
}

mod strict {
    //! A `serde_json::Value` builder that refuses duplicate keys and counts nesting itself.
    use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
    use serde_json::{Map, Value};
    use std::cell::Cell;
    use std::fmt;

    #[derive(Clone, Copy)]
    pub(super) enum Fault {
        DuplicateKey,
        TooDeep,
    }

    #[derive(Clone, Copy)]
    pub(super) struct Strict<'f> {
        pub depth: usize,
        pub max_depth: usize,
        /// Why the error was raised (serde's error type carries only a message).
        pub fault: &'f Cell<Option<Fault>>,
    }

    impl Strict<'_> {
        fn nested<E: de::Error>(self) -> Result<Self, E> {
            if self.depth >= self.max_depth {
                self.fault.set(Some(Fault::TooDeep));
                return Err(E::custom("nesting too deep"));
            }
            Ok(Self {
                depth: self.depth + 1,
                ..self
            })
        }
    }

    impl<'de> DeserializeSeed<'de> for Strict<'_> {
        type Value = Value;
        fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
            d.deserialize_any(self)
        }
    }

    impl<'de> Visitor<'de> for Strict<'_> {
        type Value = Value;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a JSON value")
        }
        fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
            Ok(Value::Bool(v))
        }
        fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
            Ok(Value::from(v))
        }
        fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
            Ok(Value::from(v))
        }
        fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
            Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
        }
        fn visit_str<E>(self, v: &str) -> Result<Value, E> {
            Ok(Value::String(v.to_owned()))
        }
        fn visit_string<E>(self, v: String) -> Result<Value, E> {
            Ok(Value::String(v))
        }
        fn visit_unit<E>(self) -> Result<Value, E> {
            Ok(Value::Null)
        }
        fn visit_none<E>(self) -> Result<Value, E> {
            Ok(Value::Null)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
            let inner = self.nested()?;
            let mut out = Vec::new();
            while let Some(v) = seq.next_element_seed(inner)? {
                out.push(v);
            }
            Ok(Value::Array(out))
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
            let inner = self.nested()?;
            let mut out = Map::new();
            while let Some(key) = map.next_key::<String>()? {
                if out.contains_key(&key) {
                    self.fault.set(Some(Fault::DuplicateKey));
                    return Err(de::Error::custom("duplicate object key"));
                }
                let value = map.next_value_seed(inner)?;
                out.insert(key, value);
            }
            Ok(Value::Object(out))
        }
    }
}

/// Longest accepted identifier (IDnow `eventId`, session ids), in characters. Identifiers become
/// DynamoDB keys: the sort key of a replay's delivery item is `ev#{n}#{event id}#r#{replay id}#{destination}`
/// and a sort key holds at most 1024 bytes, so at 4 bytes per character an event id may have at
/// most 128 (512 bytes, leaving room for the rest). They are also SQS message attributes and log
/// fields. Providers' ids are UUIDs or hex strings of 24 to 40 characters.
pub const MAX_ID_CHARS: usize = 128;
/// Longest accepted event name or status, in characters (SQS attribute, destination filter, log).
pub const MAX_NAME_CHARS: usize = 128;

/// Unicode format characters (general category Cf, Unicode 15): invisible, and some (the bidi
/// overrides U+202A..U+202E, U+2066..U+2069) reorder how a log line or a console shows the text.
const FORMAT_CHARS: &[(u32, u32)] = &[
    (0x00AD, 0x00AD),
    (0x0600, 0x0605),
    (0x061C, 0x061C),
    (0x06DD, 0x06DD),
    (0x070F, 0x070F),
    (0x0890, 0x0891),
    (0x08E2, 0x08E2),
    (0x180E, 0x180E),
    (0x200B, 0x200F),
    (0x202A, 0x202E),
    (0x2060, 0x2064),
    (0x2066, 0x206F),
    (0xFEFF, 0xFEFF),
    (0xFFF9, 0xFFFB),
    (0x110BD, 0x110BD),
    (0x110CD, 0x110CD),
    (0x13430, 0x1343F),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0001, 0xE0001),
    (0xE0020, 0xE007F),
];

/// Characters refused in identifiers: control (Cc), format (Cf) and noncharacters (U+FDD0..U+FDEF
/// and the last two of every plane). Surrogates cannot occur: a Rust `str` holds none, and the JSON
/// parser refuses a lone `\uD800`-style escape.
pub fn is_forbidden_char(c: char) -> bool {
    let u = c as u32;
    c.is_control()
        || (0xFDD0..=0xFDEF).contains(&u)
        || (u & 0xFFFE) == 0xFFFE
        || FORMAT_CHARS.iter().any(|&(lo, hi)| (lo..=hi).contains(&u))
}

/// Checks a value that becomes a key, a message attribute, a metric dimension or a log field:
/// non-blank, at most `max_chars` characters (counted as Unicode scalar values), no forbidden
/// character. The error names the field, never the value.
pub fn check_key_text(field: &str, value: &str, max_chars: usize) -> Result<(), ParseError> {
    if value.trim().is_empty() {
        return Err(ParseError::invalid(field, "a non-empty string"));
    }
    if value.chars().count() > max_chars || value.chars().any(is_forbidden_char) {
        return Err(ParseError::invalid(
            field,
            &format!(
                "at most {max_chars} characters, without control, format or noncharacter code points"
            ),
        ));
    }
    Ok(())
}

/// A required string field that becomes a key or log field ([`check_key_text`]).
pub(crate) fn required_key<'a>(
    obj: &'a serde_json::Map<String, serde_json::Value>,
    field: &str,
    label: &str,
    max_chars: usize,
) -> Result<&'a str, ParseError> {
    let value = required_str(obj, field).map_err(|e| relabel(e, field, label))?;
    check_key_text(label, value, max_chars)?;
    Ok(value)
}

/// An optional string field that becomes a key or log field ([`check_key_text`]).
pub(crate) fn optional_key<'a>(
    obj: &'a serde_json::Map<String, serde_json::Value>,
    field: &str,
    label: &str,
    max_chars: usize,
) -> Result<Option<&'a str>, ParseError> {
    let value = optional_str(obj, field).map_err(|e| relabel(e, field, label))?;
    if let Some(v) = value {
        check_key_text(label, v, max_chars)?;
    }
    Ok(value)
}

fn relabel(e: ParseError, field: &str, label: &str) -> ParseError {
    if field == label {
        e
    } else {
        ParseError(e.0.replace(&format!("`{field}`"), &format!("`{label}`")))
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn keyed_ids_match_the_documented_hmac_and_need_the_key() {
        // docs/operations.md §8: python3 hmac.new(key, b"idnow\0" + session + b"\0", sha256).
        let subject = keyed_hex(
            b"4f1c2d9e8b7a6f5e4d3c2b1a0f9e8d7c",
            &[b"idnow", b"person-to-forget"],
        );
        assert_eq!(
            subject,
            "5c21ba73f5fdd775076d8d1cb5993da6a3ad2f1337e323bf9178448fac1e7eb6"
        );
        assert_ne!(
            subject,
            keyed_hex(b"another key", &[b"idnow", b"person-to-forget"])
        );
        assert_ne!(subject, sha256_hex(&[b"idnow", b"person-to-forget"]));
    }

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
        assert!(err.0.contains("nests deeper than 64 levels"), "{err}");
    }

    #[test]
    fn the_nesting_limit_is_exact() {
        let nested = |n: usize| "[".repeat(n) + &"]".repeat(n);
        assert!(parse_json(nested(MAX_JSON_DEPTH).as_bytes()).is_ok());
        assert!(parse_json(nested(MAX_JSON_DEPTH + 1).as_bytes()).is_err());
        let objects = |n: usize| "{\"a\":".repeat(n) + "1" + &"}".repeat(n);
        assert!(parse_json(objects(MAX_JSON_DEPTH).as_bytes()).is_ok());
        assert!(parse_json(objects(MAX_JSON_DEPTH + 1).as_bytes()).is_err());
    }

    #[test]
    fn duplicate_keys_are_refused_at_any_depth() {
        for body in [
            r#"{"a":1,"a":1}"#,
            r#"{"a":{"b":[{"c":1,"c":2}]}}"#,
            r#"[{"x":{"y":1,"y":{"z":1}}}]"#,
            r#"{"a":1,"\u0061":2}"#,
        ] {
            let err = parse_json(body.as_bytes()).unwrap_err();
            assert!(err.0.contains("duplicate object key"), "{body}: {err}");
        }
        assert!(parse_json(br#"{"a":{"a":{"a":1}},"b":[{"a":1},{"a":2}]}"#).is_ok());
        assert!(parse_json(b"{} x").is_err(), "trailing characters");
    }

    #[test]
    fn key_text_refuses_controls_format_and_noncharacters_and_counts_characters() {
        assert!(check_key_text("f", &"é".repeat(256), 256).is_ok());
        assert!(check_key_text("f", &"é".repeat(257), 256).is_err());
        for c in [
            '\u{0}',
            '\u{1F}',
            '\u{7F}',
            '\u{85}',
            '\u{AD}',
            '\u{200B}',
            '\u{202E}',
            '\u{2066}',
            '\u{FEFF}',
            '\u{FDD0}',
            '\u{FFFE}',
            '\u{1FFFF}',
            '\u{10FFFF}',
            '\u{E0041}',
        ] {
            let e = check_key_text("payload.sessionId", &format!("a{c}b"), 256).unwrap_err();
            assert!(e.0.contains("`payload.sessionId`"), "{c:?}: {e}");
        }
        assert!(check_key_text("f", "sess-7f3a ü 日本", 256).is_ok());
        assert!(check_key_text("f", "  ", 256).is_err());
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
