//! Trace context: one id follows a webhook from API Gateway to every destination, for correlation
//! in X-Ray or any OpenTelemetry backend. (The `webhook-id` stays the deduplication key.)
//!
//! The receiver continues the trace the request arrives with, API Gateway's `X-Amzn-Trace-Id`
//! (`Root=1-{8 hex}-{24 hex};...`, the same 128 bits as a W3C trace id) or a W3C `traceparent`, and
//! otherwise starts one (the intake id, 128 random bits). The id travels in the envelope
//! (`trace_id`) through both queues, is logged by each function (`trace_id`), and is sent to HTTPS
//! destinations as a W3C `traceparent` header whose parent id names the attempt.

use crate::provider::sha256_hex;

pub const TRACEPARENT: &str = "traceparent";
pub const X_AMZN_TRACE_ID: &str = "x-amzn-trace-id";

/// A W3C trace id: 32 lowercase hex digits, not all zero.
pub fn is_trace_id(s: &str) -> bool {
    s.len() == 32
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        && s.bytes().any(|b| b != b'0')
}

/// The trace id of an `X-Amzn-Trace-Id` header (its `Root`), in W3C form.
pub fn from_amzn(header: &str) -> Option<String> {
    let root = header
        .split(';')
        .find_map(|part| part.trim().strip_prefix("Root="))?;
    let mut parts = root.split('-');
    let (version, time, rest) = (parts.next()?, parts.next()?, parts.next()?);
    if version != "1" || time.len() != 8 || rest.len() != 24 || parts.next().is_some() {
        return None;
    }
    let id = format!("{time}{rest}").to_ascii_lowercase();
    is_trace_id(&id).then_some(id)
}

/// The trace id of a W3C `traceparent` header (`00-{trace id}-{parent id}-{flags}`).
pub fn from_traceparent(header: &str) -> Option<String> {
    let mut parts = header.trim().split('-');
    let (version, id, parent, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    if version != "00" || !hex(parent, 16) || !hex(flags, 2) || parts.next().is_some() {
        return None;
    }
    is_trace_id(id).then(|| id.to_string())
}

/// The trace a request continues: API Gateway's header first (it is what X-Ray shows for the
/// receiver), then a `traceparent` the caller sent.
pub fn continued(amzn: Option<&str>, traceparent: Option<&str>) -> Option<String> {
    amzn.and_then(from_amzn)
        .or_else(|| traceparent.and_then(from_traceparent))
}

/// The `traceparent` header of one delivery attempt: the webhook's trace, a parent id derived from
/// the delivery and attempt (the same for a resend of that attempt), sampled.
pub fn traceparent(trace_id: &str, delivery_id: &str, attempt: u32) -> String {
    let span = &sha256_hex(&[delivery_id.as_bytes(), &attempt.to_be_bytes()])[..16];
    format!("00-{trace_id}-{span}-01")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn x_ray_and_w3c_headers_give_the_same_trace_id() {
        let amzn = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1";
        let id = from_amzn(amzn).unwrap();
        assert_eq!(id, "5759e988bd862e3fe1be46a994272793");
        let tp = format!("00-{id}-53995c3f42cd8ad8-01");
        assert_eq!(from_traceparent(&tp).as_deref(), Some(id.as_str()));
        assert_eq!(continued(Some(amzn), Some("garbage")), Some(id.clone()));
        assert_eq!(continued(Some("Self=1-x"), Some(&tp)), Some(id));
        for bad in [
            "Root=1-5759e988-bd862e3fe1be46a99427279",
            "Root=2-5759e988-bd862e3fe1be46a994272793",
            "Root=1-00000000-000000000000000000000000",
            "Root=1-5759e98g-bd862e3fe1be46a994272793",
            "",
        ] {
            assert_eq!(from_amzn(bad), None, "{bad}");
        }
        for bad in [
            "01-5759e988bd862e3fe1be46a994272793-53995c3f42cd8ad8-01",
            "00-00000000000000000000000000000000-53995c3f42cd8ad8-01",
            "00-5759e988bd862e3fe1be46a994272793-53995c3f42cd8ad-01",
            "00-5759E988BD862E3FE1BE46A994272793-53995c3f42cd8ad8-01",
        ] {
            assert_eq!(from_traceparent(bad), None, "{bad}");
        }
        assert_eq!(continued(None, None), None);
    }

    #[test]
    fn each_attempt_has_its_own_parent_id_in_the_webhooks_trace() {
        let t = "5759e988bd862e3fe1be46a994272793";
        let a1 = traceparent(t, "dlv_1", 1);
        assert_eq!(from_traceparent(&a1).as_deref(), Some(t));
        assert_ne!(a1, traceparent(t, "dlv_1", 2));
        assert_eq!(a1, traceparent(t, "dlv_1", 1));
        assert_eq!(a1.len(), 55);
    }
}
