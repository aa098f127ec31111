//! Retry policies: when to try a delivery again, and what counts as delivered. Policies are data
//! (named presets or custom parameters in the destinations configuration), not code paths.
//!
//! Attempts are numbered from 1. After attempt `n` fails, `next_delay(n)` is the wait before attempt
//! `n + 1`, or `None` when the policy has given up (after `max_retries` retries, that is
//! `max_retries + 1` attempts in all).
//!
//! | preset | delays | success | retried |
//! |---|---|---|---|
//! | `incode` | 30 s x 2.5: 30, 75, 187.5, 468.75, 1171.875 s (5 retries, 32.2 min) | `200` + JSON content type, or `204` | anything else, timeouts, connection errors |
//! | `idnow` | 1 s x 2: 1, 2, 4 ... 512 s, each capped at 1 h (10 retries) | any 2xx | 5xx, timeouts, connection errors; not 4xx |
//!
//! Under every policy a `429` is retried after its `Retry-After` (seconds or HTTP date), bounded by
//! the policy's maximum interval; without the header the policy's own delay applies.

use serde::Deserialize;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq)]
pub enum SuccessRule {
    /// Any 2xx.
    Any2xx,
    /// Incode's own rule for its webhooks: `200` with an `application/json` content type, or `204`.
    IncodeStrict,
    /// Exactly these statuses.
    Statuses(Vec<u16>),
}

#[derive(Debug, Clone, PartialEq)]
pub enum RetryOn {
    /// Everything that is not a success (Incode's behaviour).
    AnyFailure,
    /// 5xx, 408 and 429 (IDnow's behaviour: a 4xx is final).
    ServerErrors,
    /// Exactly these statuses.
    Statuses(Vec<u16>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    pub name: String,
    pub initial: Duration,
    pub multiplier: f64,
    pub max_retries: u32,
    pub max_interval: Duration,
    /// Full jitter: each delay drawn uniformly from [0, delay].
    pub jitter: bool,
    pub success: SuccessRule,
    pub retry_on: RetryOn,
}

/// Longest outcome description kept (ARCHITECTURE.md §3: item sizes).
pub const MAX_OUTCOME_BYTES: usize = 48;

/// Why an AWS target refused a message, in the classes the retry policy and the breaker act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AwsClass {
    /// Throttled: retried, and counted by the breaker (like a 429).
    Throttled,
    /// A service-side error (5xx, an entry's `InternalFailure`): retried and counted.
    Transient,
    /// Access denied, the target or its KMS key missing or disabled: the target is unusable for
    /// every message until someone fixes it, so retried and counted, which pauses the destination
    /// and holds its jobs instead of dead-lettering them.
    Unavailable,
    /// This message is refused (too large, malformed): not retried.
    Rejected,
}

/// Cuts `text` to at most `max_bytes`, at a character boundary (outcome texts carry peer-chosen
/// strings: an error code, a host name).
pub fn truncate_chars(text: &mut String, max_bytes: usize) {
    if text.len() > max_bytes {
        let mut end = max_bytes;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
}

/// What one attempt produced.
#[derive(Debug, Clone, PartialEq)]
pub enum AttemptOutcome {
    Response {
        status: u16,
        content_type: Option<String>,
        retry_after: Option<Duration>,
    },
    Timeout,
    ConnectError,
    /// The destination's OAuth token endpoint failed (transient: retried).
    TokenError(String),
    /// The request could not be made at all (e.g. the destination resolves to a forbidden address).
    Refused(String),
    /// The server's certificate is not acceptable (untrusted, expired, another host's): retried and
    /// counted by the breaker, like a connection error.
    TlsServer(String),
    /// The server refused our client certificate: our configuration, which no retry mends, so not
    /// retried (like a refused request).
    TlsClient(String),
    /// An AWS target (SQS, SNS, EventBridge) accepted the message: delivered, under every policy.
    Published,
    /// An AWS target refused the message: its error code and class.
    Aws {
        code: String,
        class: AwsClass,
    },
}

impl AttemptOutcome {
    /// Short, PII-free description for records and logs, at most [`MAX_OUTCOME_BYTES`] (it is kept
    /// on the delivery item for each attempt, whose size decides its write units).
    pub fn describe(&self) -> String {
        let mut text = match self {
            AttemptOutcome::Response { status, .. } => format!("http_{status}"),
            AttemptOutcome::Timeout => "timeout".into(),
            AttemptOutcome::ConnectError => "connect_error".into(),
            AttemptOutcome::TokenError(why) => format!("token_error: {why}"),
            AttemptOutcome::Refused(why) => format!("refused: {why}"),
            AttemptOutcome::TlsServer(why) | AttemptOutcome::TlsClient(why) => {
                format!("tls: {why}")
            }
            AttemptOutcome::Published => "published".into(),
            AttemptOutcome::Aws { code, .. } => format!("aws: {code}"),
        };
        truncate_chars(&mut text, MAX_OUTCOME_BYTES);
        text
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            AttemptOutcome::Response { status, .. } => Some(*status),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Delivered,
    RetryAfter(Duration),
    GiveUp(String),
}

impl RetryPolicy {
    pub fn incode() -> Self {
        Self {
            name: "incode".into(),
            initial: Duration::from_secs(30),
            multiplier: 2.5,
            max_retries: 5,
            max_interval: Duration::from_secs(3600),
            jitter: false,
            success: SuccessRule::IncodeStrict,
            retry_on: RetryOn::AnyFailure,
        }
    }

    pub fn idnow() -> Self {
        Self {
            name: "idnow".into(),
            initial: Duration::from_secs(1),
            multiplier: 2.0,
            max_retries: 10,
            max_interval: Duration::from_secs(3600),
            jitter: false,
            success: SuccessRule::Any2xx,
            retry_on: RetryOn::ServerErrors,
        }
    }

    /// The policy's delay after attempt `attempt` failed, or `None` if it was the last.
    pub fn next_delay(&self, attempt: u32) -> Option<Duration> {
        if attempt == 0 || attempt > self.max_retries {
            return None;
        }
        let factor = self.multiplier.powi(attempt as i32 - 1);
        let secs = (self.initial.as_secs_f64() * factor).min(self.max_interval.as_secs_f64());
        let delay = Duration::from_secs_f64(secs);
        Some(if self.jitter {
            delay.mul_f64(fastrand::f64())
        } else {
            delay
        })
    }

    /// The whole schedule's length: the sum of every delay (jitter only shortens a delay).
    pub fn total_schedule(&self) -> Duration {
        (1..=self.max_retries)
            .map(|n| {
                let factor = self.multiplier.powi(n as i32 - 1);
                Duration::from_secs_f64(
                    (self.initial.as_secs_f64() * factor).min(self.max_interval.as_secs_f64()),
                )
            })
            .sum()
    }

    pub fn is_success(&self, outcome: &AttemptOutcome) -> bool {
        if *outcome == AttemptOutcome::Published {
            return true;
        }
        let AttemptOutcome::Response {
            status,
            content_type,
            ..
        } = outcome
        else {
            return false;
        };
        match &self.success {
            SuccessRule::Any2xx => (200..300).contains(status),
            SuccessRule::IncodeStrict => {
                *status == 204
                    || (*status == 200
                        && content_type.as_deref().is_some_and(|ct| {
                            ct.split(';')
                                .next()
                                .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
                        }))
            }
            SuccessRule::Statuses(list) => list.contains(status),
        }
    }

    fn is_retryable(&self, outcome: &AttemptOutcome) -> bool {
        match outcome {
            AttemptOutcome::Timeout
            | AttemptOutcome::ConnectError
            | AttemptOutcome::TokenError(_)
            | AttemptOutcome::TlsServer(_) => true,
            AttemptOutcome::Refused(_)
            | AttemptOutcome::TlsClient(_)
            | AttemptOutcome::Published => false,
            AttemptOutcome::Aws { class, .. } => *class != AwsClass::Rejected,
            AttemptOutcome::Response { status, .. } => {
                *status == 429
                    || match &self.retry_on {
                        RetryOn::AnyFailure => true,
                        RetryOn::ServerErrors => *status >= 500 || *status == 408,
                        RetryOn::Statuses(list) => list.contains(status),
                    }
            }
        }
    }

    /// Decides what follows attempt `attempt`.
    pub fn verdict(&self, attempt: u32, outcome: &AttemptOutcome) -> Verdict {
        if self.is_success(outcome) {
            return Verdict::Delivered;
        }
        if !self.is_retryable(outcome) {
            return Verdict::GiveUp(format!("{} is not retryable", outcome.describe()));
        }
        let Some(policy_delay) = self.next_delay(attempt) else {
            return Verdict::GiveUp(format!(
                "{} after {} attempts: retries exhausted",
                outcome.describe(),
                attempt
            ));
        };
        let delay = match outcome {
            AttemptOutcome::Response {
                status: 429,
                retry_after: Some(after),
                ..
            } => (*after).min(self.max_interval),
            _ => policy_delay,
        };
        Verdict::RetryAfter(delay)
    }
}

/// `Retry-After`: delay-seconds or an HTTP date (RFC 9110 section 10.2.3).
pub fn parse_retry_after(value: &str, now_secs: u64) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    let at = at.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs();
    Some(Duration::from_secs(at.saturating_sub(now_secs)))
}

/// The `retry_policy` field of a destination: a preset name or custom parameters.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum PolicySpec {
    Preset(String),
    Custom { custom: CustomPolicy },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomPolicy {
    pub initial_ms: u64,
    #[serde(default = "default_multiplier")]
    pub multiplier: f64,
    pub max_retries: u32,
    #[serde(default = "default_max_interval_ms")]
    pub max_interval_ms: u64,
    #[serde(default)]
    pub jitter: bool,
    /// Statuses that count as delivered (default: any 2xx).
    #[serde(default)]
    pub success_statuses: Option<Vec<u16>>,
    /// Statuses retried besides timeouts and connection errors (default: 5xx, 408, 429).
    #[serde(default)]
    pub retry_statuses: Option<Vec<u16>>,
}

fn default_multiplier() -> f64 {
    2.0
}

fn default_max_interval_ms() -> u64 {
    3_600_000
}

impl PolicySpec {
    pub fn build(&self) -> Result<RetryPolicy, String> {
        match self {
            PolicySpec::Preset(name) => match name.as_str() {
                "incode" => Ok(RetryPolicy::incode()),
                "idnow" => Ok(RetryPolicy::idnow()),
                other => Err(format!(
                    "unknown retry policy {other:?} (use \"incode\", \"idnow\" or {{\"custom\": {{...}}}})"
                )),
            },
            PolicySpec::Custom { custom: c } => {
                if c.initial_ms == 0 {
                    return Err("custom.initial_ms must be at least 1".into());
                }
                if !(1.0..=10.0).contains(&c.multiplier) {
                    return Err("custom.multiplier must be between 1 and 10".into());
                }
                if c.max_retries > 50 {
                    return Err("custom.max_retries must be at most 50".into());
                }
                // Beyond a day, a delivery is better handled by the DLQ and an operator.
                if c.max_interval_ms < c.initial_ms || c.max_interval_ms > 86_400_000 {
                    return Err(
                        "custom.max_interval_ms must be between initial_ms and 86400000".into(),
                    );
                }
                let valid =
                    |s: &Vec<u16>| s.iter().all(|c| (100..=599).contains(c)) && !s.is_empty();
                if c.success_statuses.as_ref().is_some_and(|s| !valid(s))
                    || c.retry_statuses.as_ref().is_some_and(|s| !valid(s))
                {
                    return Err(
                        "custom status lists must be non-empty lists of HTTP statuses".into(),
                    );
                }
                Ok(RetryPolicy {
                    name: "custom".into(),
                    initial: Duration::from_millis(c.initial_ms),
                    multiplier: c.multiplier,
                    max_retries: c.max_retries,
                    max_interval: Duration::from_millis(c.max_interval_ms),
                    jitter: c.jitter,
                    success: c
                        .success_statuses
                        .clone()
                        .map_or(SuccessRule::Any2xx, SuccessRule::Statuses),
                    retry_on: c
                        .retry_statuses
                        .clone()
                        .map_or(RetryOn::ServerErrors, RetryOn::Statuses),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(status: u16, ct: Option<&str>) -> AttemptOutcome {
        AttemptOutcome::Response {
            status,
            content_type: ct.map(str::to_string),
            retry_after: None,
        }
    }

    #[test]
    fn outcome_descriptions_are_bounded() {
        let long = AttemptOutcome::Refused(format!(
            "{} resolves only to link-local addresses",
            "é".repeat(200)
        ));
        let d = long.describe();
        assert!(
            d.len() <= MAX_OUTCOME_BYTES && d.starts_with("refused: é"),
            "{d}"
        );
        assert_eq!(AttemptOutcome::Timeout.describe(), "timeout");
    }

    #[test]
    fn incode_reproduces_the_published_table() {
        let p = RetryPolicy::incode();
        let delays: Vec<f64> = (1..=6)
            .map_while(|n| p.next_delay(n))
            .map(|d| d.as_secs_f64())
            .collect();
        assert_eq!(delays, vec![30.0, 75.0, 187.5, 468.75, 1171.875]);
        let cumulative_minutes: Vec<String> = delays
            .iter()
            .scan(0.0, |acc, d| {
                *acc += d;
                Some(format!("{:.2}", *acc / 60.0))
            })
            .collect();
        assert_eq!(
            cumulative_minutes,
            ["0.50", "1.75", "4.88", "12.69", "32.22"]
        );
    }

    #[test]
    fn idnow_doubles_from_one_second_ten_times() {
        let p = RetryPolicy::idnow();
        let delays: Vec<u64> = (1..=11)
            .map_while(|n| p.next_delay(n))
            .map(|d| d.as_secs())
            .collect();
        assert_eq!(delays, vec![1, 2, 4, 8, 16, 32, 64, 128, 256, 512]);
        let mut long = RetryPolicy::idnow();
        long.max_retries = 20;
        assert_eq!(
            long.next_delay(13),
            Some(Duration::from_secs(3600)),
            "capped at 1 h"
        );
    }

    #[test]
    fn incode_success_is_strict() {
        let p = RetryPolicy::incode();
        assert_eq!(
            p.verdict(1, &response(200, Some("application/json; charset=utf-8"))),
            Verdict::Delivered
        );
        assert_eq!(p.verdict(1, &response(204, None)), Verdict::Delivered);
        assert!(matches!(
            p.verdict(1, &response(200, Some("text/plain"))),
            Verdict::RetryAfter(_)
        ));
        assert!(matches!(
            p.verdict(1, &response(201, Some("application/json"))),
            Verdict::RetryAfter(_)
        ));
        assert!(matches!(
            p.verdict(1, &response(404, None)),
            Verdict::RetryAfter(_)
        ));
        assert!(matches!(
            p.verdict(6, &response(500, None)),
            Verdict::GiveUp(_)
        ));
    }

    #[test]
    fn idnow_does_not_retry_client_errors() {
        let p = RetryPolicy::idnow();
        assert_eq!(p.verdict(1, &response(202, None)), Verdict::Delivered);
        assert!(matches!(
            p.verdict(1, &response(400, None)),
            Verdict::GiveUp(_)
        ));
        assert!(matches!(
            p.verdict(1, &response(401, None)),
            Verdict::GiveUp(_)
        ));
        assert_eq!(
            p.verdict(1, &response(503, None)),
            Verdict::RetryAfter(Duration::from_secs(1))
        );
        assert_eq!(
            p.verdict(3, &AttemptOutcome::Timeout),
            Verdict::RetryAfter(Duration::from_secs(4))
        );
        assert_eq!(
            p.verdict(2, &AttemptOutcome::ConnectError),
            Verdict::RetryAfter(Duration::from_secs(2))
        );
        assert!(matches!(
            p.verdict(11, &AttemptOutcome::Timeout),
            Verdict::GiveUp(_)
        ));
    }

    #[test]
    fn a_refused_client_certificate_is_not_retried_and_an_untrusted_server_is() {
        let tls = AttemptOutcome::TlsClient("client cert refused: required".into());
        let server = AttemptOutcome::TlsServer("server cert expired".into());
        for p in [RetryPolicy::idnow(), RetryPolicy::incode()] {
            assert!(
                matches!(p.verdict(1, &tls), Verdict::GiveUp(_)),
                "{}",
                p.name
            );
            assert!(
                matches!(p.verdict(1, &server), Verdict::RetryAfter(_)),
                "{}",
                p.name
            );
        }
        assert_eq!(tls.describe(), "tls: client cert refused: required");
        assert_eq!(server.describe(), "tls: server cert expired");
    }

    #[test]
    fn too_many_requests_honours_retry_after_within_the_max_interval() {
        for p in [RetryPolicy::idnow(), RetryPolicy::incode()] {
            let limited = AttemptOutcome::Response {
                status: 429,
                content_type: None,
                retry_after: Some(Duration::from_secs(120)),
            };
            assert_eq!(
                p.verdict(1, &limited),
                Verdict::RetryAfter(Duration::from_secs(120))
            );
            let huge = AttemptOutcome::Response {
                status: 429,
                content_type: None,
                retry_after: Some(Duration::from_secs(86_400)),
            };
            assert_eq!(p.verdict(1, &huge), Verdict::RetryAfter(p.max_interval));
        }
    }

    #[test]
    fn retry_after_parses_seconds_and_dates() {
        assert_eq!(parse_retry_after("120", 0), Some(Duration::from_secs(120)));
        // Sun, 06 Nov 1994 08:49:37 GMT = 784111777
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", 784_111_700),
            Some(Duration::from_secs(77))
        );
        assert_eq!(parse_retry_after("soon", 0), None);
    }

    #[test]
    fn custom_policies_are_validated_and_jitter_stays_in_bounds() {
        let spec: PolicySpec = serde_json::from_str(
            r#"{"custom": {"initial_ms": 1000, "multiplier": 3, "max_retries": 4, "max_interval_ms": 5000, "jitter": true, "success_statuses": [200], "retry_statuses": [503]}}"#,
        )
        .unwrap();
        let p = spec.build().unwrap();
        for n in 1..=4 {
            let d = p.next_delay(n).unwrap();
            assert!(d <= Duration::from_millis(5000));
        }
        assert_eq!(p.next_delay(5), None);
        assert!(matches!(
            p.verdict(1, &response(500, None)),
            Verdict::GiveUp(_)
        ));
        assert!(matches!(
            p.verdict(1, &response(201, None)),
            Verdict::GiveUp(_)
        ));
        for bad in [
            r#"{"custom": {"initial_ms": 0, "max_retries": 1}}"#,
            r#"{"custom": {"initial_ms": 10, "max_retries": 1, "multiplier": 0.5}}"#,
            r#"{"custom": {"initial_ms": 10, "max_retries": 1, "retry_statuses": []}}"#,
            r#"{"custom": {"initial_ms": 10, "max_retries": 1, "surprise": 1}}"#,
            r#""weekly""#,
        ] {
            let parsed: Result<PolicySpec, _> = serde_json::from_str(bad);
            assert!(parsed.map(|s| s.build().is_err()).unwrap_or(true), "{bad}");
        }
    }
}
