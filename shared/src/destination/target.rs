//! Where a destination's deliveries go: an HTTPS endpoint, or an AWS service the company's own
//! consumers read from (an SQS queue, an SNS topic, an EventBridge bus). Parsed and checked here;
//! sent by the transport (`dispatch::transport`, `aws::targets`).

use crate::config::{ConfigError, OutboundPolicy, validate_outbound_url};
use serde::Deserialize;

/// The `sqs` field as written in the document.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SqsSpec {
    queue_url: String,
}

/// The `sns` field as written in the document.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SnsSpec {
    topic_arn: String,
}

/// The `eventbridge` field as written in the document.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct EventBridgeSpec {
    bus: String,
}

/// A destination's target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Https(reqwest::Url),
    Aws(AwsTarget),
}

/// An AWS-native target. `region` is the target's own (from its URL or ARN), `None` for the
/// function's region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AwsTarget {
    /// `SendMessage`; a FIFO queue (`.fifo`) gets `MessageGroupId` = the session and
    /// `MessageDeduplicationId` = the `webhook-id`.
    Sqs {
        queue_url: String,
        region: Option<String>,
        fifo: bool,
    },
    /// `Publish`; a FIFO topic likewise.
    Sns {
        topic_arn: String,
        region: Option<String>,
        fifo: bool,
    },
    /// `PutEvents` with `source` = `kyc-relay.<provider>`, `detail-type` = the event type.
    EventBridge { bus: String, region: Option<String> },
}

impl AwsTarget {
    pub fn kind(&self) -> &'static str {
        match self {
            AwsTarget::Sqs { .. } => "sqs",
            AwsTarget::Sns { .. } => "sns",
            AwsTarget::EventBridge { .. } => "eventbridge",
        }
    }

    pub fn region(&self) -> Option<&str> {
        match self {
            AwsTarget::Sqs { region, .. }
            | AwsTarget::Sns { region, .. }
            | AwsTarget::EventBridge { region, .. } => region.as_deref(),
        }
    }

    /// The queue URL, topic ARN or bus, as configured.
    pub fn address(&self) -> &str {
        match self {
            AwsTarget::Sqs { queue_url, .. } => queue_url,
            AwsTarget::Sns { topic_arn, .. } => topic_arn,
            AwsTarget::EventBridge { bus, .. } => bus,
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Https(url) => write!(f, "{url}"),
            Target::Aws(t) => write!(f, "{}:{}", t.kind(), t.address()),
        }
    }
}

/// The four ways to name a target, exactly one of which is set.
pub(super) struct TargetFields {
    pub url: Option<String>,
    pub sqs: Option<SqsSpec>,
    pub sns: Option<SnsSpec>,
    pub eventbridge: Option<EventBridgeSpec>,
}

impl TargetFields {
    pub fn parse(
        self,
        at: &dyn Fn(&str) -> String,
        outbound: OutboundPolicy,
    ) -> Result<Target, ConfigError> {
        let err =
            |field: &str, m: String| ConfigError::new(format!("destinations{}", at(field)), m);
        match (self.url, self.sqs, self.sns, self.eventbridge) {
            (Some(url), None, None, None) => Ok(Target::Https(validate_outbound_url(
                &format!("destinations{}", at("url")),
                &url,
                outbound,
            )?)),
            (None, Some(sqs), None, None) => {
                let field = "sqs.queue_url";
                let url = validate_outbound_url(
                    &format!("destinations{}", at(field)),
                    &sqs.queue_url,
                    outbound,
                )?;
                let segments: Vec<&str> = url
                    .path_segments()
                    .map(Iterator::collect)
                    .unwrap_or_default();
                let [account, name] = segments[..] else {
                    return Err(err(field, "must be a queue URL: https://sqs.<region>.amazonaws.com/<account>/<queue name>".into()));
                };
                if !is_account(account) || !is_name(name, 80, "") {
                    return Err(err(field, "must be a queue URL: https://sqs.<region>.amazonaws.com/<account>/<queue name>".into()));
                }
                let host = url.host_str().unwrap_or_default();
                let region = host
                    .strip_prefix("sqs.")
                    .and_then(|h| h.split('.').next())
                    .filter(|r| is_region(r))
                    .map(str::to_string);
                Ok(Target::Aws(AwsTarget::Sqs {
                    fifo: name.ends_with(".fifo"),
                    queue_url: sqs.queue_url,
                    region,
                }))
            }
            (None, None, Some(sns), None) => {
                let field = "sns.topic_arn";
                let (region, resource) = parse_arn(&sns.topic_arn, "sns")
                    .filter(|(_, name)| is_name(name, 256, ""))
                    .ok_or_else(|| err(field, "must be a topic ARN: arn:<partition>:sns:<region>:<account>:<topic name>".into()))?;
                Ok(Target::Aws(AwsTarget::Sns {
                    fifo: resource.ends_with(".fifo"),
                    region: Some(region.to_string()),
                    topic_arn: sns.topic_arn.clone(),
                }))
            }
            (None, None, None, Some(eb)) => {
                let field = "eventbridge.bus";
                let region = if eb.bus.starts_with("arn:") {
                    let (region, _) = parse_arn(&eb.bus, "events")
                        .filter(|(_, r)| r.strip_prefix("event-bus/").is_some_and(|n| is_name(n, 256, "./")))
                        .ok_or_else(|| err(field, "must be an event bus name or ARN: arn:<partition>:events:<region>:<account>:event-bus/<name>".into()))?;
                    Some(region.to_string())
                } else if is_name(&eb.bus, 256, "./") {
                    None
                } else {
                    return Err(err(field, "must be an event bus name or ARN: arn:<partition>:events:<region>:<account>:event-bus/<name>".into()));
                };
                Ok(Target::Aws(AwsTarget::EventBridge {
                    bus: eb.bus,
                    region,
                }))
            }
            _ => Err(ConfigError::new(
                format!("destinations{}", at(""))
                    .trim_end_matches('.')
                    .to_string(),
                "set exactly one of url, sqs, sns and eventbridge",
            )),
        }
    }
}

/// `arn:<partition>:<service>:<region>:<account>:<resource>` → (region, resource).
fn parse_arn<'a>(arn: &'a str, service: &str) -> Option<(&'a str, &'a str)> {
    let mut parts = arn.splitn(6, ':');
    let (Some("arn"), Some(partition), Some(svc), Some(region), Some(account), Some(resource)) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return None;
    };
    (partition.starts_with("aws") && svc == service && is_region(region) && is_account(account))
        .then_some((region, resource))
}

fn is_account(s: &str) -> bool {
    s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit())
}

fn is_region(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 32
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// A queue, topic or bus name: 1 to `max` characters of `[A-Za-z0-9_-]` and `extra` (a trailing
/// `.fifo` is part of the name).
fn is_name(s: &str, max: usize, extra: &str) -> bool {
    let base = s.strip_suffix(".fifo").unwrap_or(s);
    !base.is_empty()
        && s.len() <= max
        && base
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || extra.contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(fields: TargetFields) -> Result<Target, ConfigError> {
        fields.parse(&|f: &str| format!("[0].{f}"), OutboundPolicy::default())
    }

    fn sqs(url: &str) -> TargetFields {
        TargetFields {
            url: None,
            sqs: Some(SqsSpec {
                queue_url: url.into(),
            }),
            sns: None,
            eventbridge: None,
        }
    }

    fn sns(arn: &str) -> TargetFields {
        TargetFields {
            url: None,
            sqs: None,
            sns: Some(SnsSpec {
                topic_arn: arn.into(),
            }),
            eventbridge: None,
        }
    }

    fn bus(bus: &str) -> TargetFields {
        TargetFields {
            url: None,
            sqs: None,
            sns: None,
            eventbridge: Some(EventBridgeSpec { bus: bus.into() }),
        }
    }

    #[test]
    fn aws_targets_take_their_region_and_fifo_from_the_address() {
        assert_eq!(
            parse(sqs(
                "https://sqs.eu-west-1.amazonaws.com/123456789012/kyc-events.fifo"
            ))
            .unwrap(),
            Target::Aws(AwsTarget::Sqs {
                queue_url: "https://sqs.eu-west-1.amazonaws.com/123456789012/kyc-events.fifo"
                    .into(),
                region: Some("eu-west-1".into()),
                fifo: true
            })
        );
        assert_eq!(
            parse(sns("arn:aws:sns:eu-central-1:123456789012:kyc")).unwrap(),
            Target::Aws(AwsTarget::Sns {
                topic_arn: "arn:aws:sns:eu-central-1:123456789012:kyc".into(),
                region: Some("eu-central-1".into()),
                fifo: false
            })
        );
        assert_eq!(
            parse(bus("kyc")).unwrap(),
            Target::Aws(AwsTarget::EventBridge {
                bus: "kyc".into(),
                region: None
            })
        );
        let cross = parse(bus("arn:aws:events:us-east-1:210987654321:event-bus/kyc")).unwrap();
        let Target::Aws(t) = &cross else { panic!() };
        assert_eq!(t.region(), Some("us-east-1"));
        assert_eq!(
            cross.to_string(),
            "eventbridge:arn:aws:events:us-east-1:210987654321:event-bus/kyc"
        );
    }

    #[test]
    fn malformed_addresses_are_named() {
        for (fields, var) in [
            (
                sqs("https://sqs.eu-west-1.amazonaws.com/kyc-events"),
                "destinations[0].sqs.queue_url",
            ),
            (
                sqs("https://sqs.eu-west-1.amazonaws.com/12345/q"),
                "destinations[0].sqs.queue_url",
            ),
            (
                sqs("http://sqs.eu-west-1.amazonaws.com/123456789012/q"),
                "destinations[0].sqs.queue_url",
            ),
            (
                sns("arn:aws:sqs:eu-west-1:123456789012:q"),
                "destinations[0].sns.topic_arn",
            ),
            (sns("kyc-topic"), "destinations[0].sns.topic_arn"),
            (
                bus("arn:aws:events:eu-west-1:123456789012:rule/x"),
                "destinations[0].eventbridge.bus",
            ),
            (bus("a bus"), "destinations[0].eventbridge.bus"),
        ] {
            assert_eq!(parse(fields).unwrap_err().var, var);
        }
        let none = TargetFields {
            url: None,
            sqs: None,
            sns: None,
            eventbridge: None,
        };
        let e = parse(none).unwrap_err();
        assert_eq!(e.var, "destinations[0]");
        assert!(
            e.message
                .contains("exactly one of url, sqs, sns and eventbridge")
        );
    }
}
