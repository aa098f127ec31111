//! AWS-native destinations: SQS `SendMessage`, SNS `Publish` and EventBridge `PutEvents`, behind the
//! transport port (`dispatch::transport`) beside the HTTP client, so the delivery decisions treat
//! every destination kind alike. Clients are built on the first message to a target's region (a
//! dispatcher without AWS destinations never builds one) and reused by the warm sandbox.
//!
//! What each kind carries (docs/configuration.md, "AWS destinations"):
//! - SQS and SNS: the body as the message; message attributes `webhook-id`, `provider`,
//!   `event-type`, `content-type` and `traceparent`; on FIFO queues and topics
//!   `MessageGroupId` = the session (its records' partition key) and `MessageDeduplicationId` = the
//!   `webhook-id`. SQS messages also carry the `AWSTraceHeader` system attribute (X-Ray).
//! - EventBridge: `source` = `kyc-relay.<provider>`, `detail-type` = the event type, `detail` = the
//!   envelope with `webhook_id` added, `TraceHeader` = the X-Ray form of the trace id.

use crate::destination::AwsTarget;
use crate::dispatch::transport::{
    AwsClass, AwsRefusal, Post, Publish, PublishError, Reply, Transport, TransportError,
};
use aws_sdk_sqs::error::ProvideErrorMetadata;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_runtime_api::http::Response as HttpResponse;
use std::collections::HashMap;
use std::sync::Mutex;

/// The HTTP transport plus clients for AWS targets.
pub struct AwsTransport<H> {
    http: H,
    sdk: aws_config::SdkConfig,
    sqs: Mutex<HashMap<Option<String>, aws_sdk_sqs::Client>>,
    sns: Mutex<HashMap<Option<String>, aws_sdk_sns::Client>>,
    events: Mutex<HashMap<Option<String>, aws_sdk_eventbridge::Client>>,
}

impl<H> AwsTransport<H> {
    pub fn new(http: H, sdk: &aws_config::SdkConfig) -> Self {
        Self {
            http,
            sdk: sdk.clone(),
            sqs: Mutex::default(),
            sns: Mutex::default(),
            events: Mutex::default(),
        }
    }

    /// The SDK configuration for a target's region (the function's own when `None`).
    fn config(&self, region: Option<&str>) -> aws_config::SdkConfig {
        match region {
            Some(r) if Some(r) != self.sdk.region().map(|x| x.as_ref()) => self
                .sdk
                .to_builder()
                .region(aws_config::Region::new(r.to_string()))
                .build(),
            _ => self.sdk.clone(),
        }
    }

    fn client<C: Clone>(
        &self,
        clients: &Mutex<HashMap<Option<String>, C>>,
        region: Option<&str>,
        build: impl FnOnce(&aws_config::SdkConfig) -> C,
    ) -> C {
        let mut clients = clients.lock().unwrap_or_else(|p| p.into_inner());
        clients
            .entry(region.map(str::to_string))
            .or_insert_with(|| build(&self.config(region)))
            .clone()
    }
}

impl<H: Transport> Transport for AwsTransport<H> {
    async fn post(&self, post: Post) -> Result<Reply, TransportError> {
        self.http.post(post).await
    }

    async fn publish(&self, p: Publish) -> Result<(), PublishError> {
        let timeout = p.timeout;
        match tokio::time::timeout(timeout, self.send(p)).await {
            Ok(result) => result,
            Err(_) => Err(TransportError::Timeout.into()),
        }
    }
}

impl<H> AwsTransport<H> {
    async fn send(&self, p: Publish) -> Result<(), PublishError> {
        let attributes = [
            ("webhook-id", p.webhook_id.as_str()),
            ("provider", p.provider),
            ("event-type", p.event_type.as_str()),
            ("content-type", p.content_type.as_str()),
            ("traceparent", p.traceparent.as_str()),
        ];
        match &p.target {
            AwsTarget::Sqs {
                queue_url,
                region,
                fifo,
            } => {
                use aws_sdk_sqs::types::{
                    MessageAttributeValue, MessageSystemAttributeNameForSends as System,
                    MessageSystemAttributeValue,
                };
                let client = self.client(&self.sqs, region.as_deref(), aws_sdk_sqs::Client::new);
                let mut request = client
                    .send_message()
                    .queue_url(queue_url)
                    .message_body(&p.body);
                for (name, value) in attributes {
                    let value = MessageAttributeValue::builder()
                        .data_type("String")
                        .string_value(value)
                        .build()
                        .map_err(|_| rejected("MessageAttribute"))?;
                    request = request.message_attributes(name, value);
                }
                if let Some(header) = xray_header(&p.trace_id)
                    && let Ok(value) = MessageSystemAttributeValue::builder()
                        .data_type("String")
                        .string_value(header)
                        .build()
                {
                    request = request.message_system_attributes(System::AwsTraceHeader, value);
                }
                if *fifo {
                    request = request
                        .message_group_id(group_id(&p.group))
                        .message_deduplication_id(&p.webhook_id);
                }
                request.send().await.map(drop).map_err(classify)
            }
            AwsTarget::Sns {
                topic_arn,
                region,
                fifo,
            } => {
                use aws_sdk_sns::types::MessageAttributeValue;
                let client = self.client(&self.sns, region.as_deref(), aws_sdk_sns::Client::new);
                let mut request = client.publish().topic_arn(topic_arn).message(&p.body);
                for (name, value) in attributes {
                    let value = MessageAttributeValue::builder()
                        .data_type("String")
                        .string_value(value)
                        .build()
                        .map_err(|_| rejected("MessageAttribute"))?;
                    request = request.message_attributes(name, value);
                }
                if *fifo {
                    request = request
                        .message_group_id(group_id(&p.group))
                        .message_deduplication_id(&p.webhook_id);
                }
                request.send().await.map(drop).map_err(classify)
            }
            AwsTarget::EventBridge { bus, region } => {
                use aws_sdk_eventbridge::types::PutEventsRequestEntry;
                let client = self.client(
                    &self.events,
                    region.as_deref(),
                    aws_sdk_eventbridge::Client::new,
                );
                let mut entry = PutEventsRequestEntry::builder()
                    .event_bus_name(bus)
                    .source(format!("kyc-relay.{}", p.provider))
                    .detail_type(&p.event_type)
                    .detail(detail(&p.body, &p.webhook_id)?);
                if let Some(header) = xray_header(&p.trace_id) {
                    entry = entry.trace_header(header);
                }
                let out = client
                    .put_events()
                    .entries(entry.build())
                    .send()
                    .await
                    .map_err(classify)?;
                // PutEvents answers 200 with per-entry failures.
                match out.entries().first().and_then(|e| e.error_code()) {
                    None if out.failed_entry_count() == 0 => Ok(()),
                    code => {
                        let code = code.unwrap_or("FailedEntry");
                        Err(refusal(code, class_of(code, 200)).into())
                    }
                }
            }
        }
    }
}

/// The envelope as EventBridge `detail`, with the `webhook-id` added as `webhook_id` (an event has
/// no attributes, and consumers deduplicate on it).
fn detail(envelope: &str, webhook_id: &str) -> Result<String, PublishError> {
    let rest = envelope
        .strip_prefix('{')
        .filter(|r| r.trim_start() != "}")
        .ok_or_else(|| rejected("DetailNotAnObject"))?;
    let id = serde_json::to_string(webhook_id).map_err(|_| rejected("DetailNotAnObject"))?;
    Ok(format!("{{\"webhook_id\":{id},{rest}"))
}

/// The X-Ray trace header for a W3C trace id (32 hex digits): `Root=1-<8 hex>-<24 hex>`.
fn xray_header(trace_id: &str) -> Option<String> {
    (trace_id.len() == 32 && trace_id.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| format!("Root=1-{}-{};Sampled=1", &trace_id[..8], &trace_id[8..]))
}

/// A FIFO `MessageGroupId`: up to 128 characters of letters, digits and punctuation. A partition
/// key outside that (a long or unusual session id) is replaced by its SHA-256, which keeps one
/// session in one group.
fn group_id(partition: &str) -> String {
    let fits = !partition.is_empty()
        && partition.len() <= 128
        && partition.bytes().all(|b| b.is_ascii_graphic());
    if fits {
        partition.to_string()
    } else {
        format!(
            "sha256:{}",
            crate::provider::sha256_hex(&[partition.as_bytes()])
        )
    }
}

fn rejected(code: &str) -> PublishError {
    refusal(code, AwsClass::Rejected).into()
}

fn refusal(code: &str, class: AwsClass) -> AwsRefusal {
    let mut code = code.to_string();
    crate::retry::truncate_chars(&mut code, 40);
    AwsRefusal { code, class }
}

/// An SDK error as a transport failure (timeouts, connections) or a classified refusal.
fn classify<E: ProvideErrorMetadata>(e: SdkError<E, HttpResponse>) -> PublishError {
    match &e {
        SdkError::TimeoutError(_) => TransportError::Timeout.into(),
        SdkError::DispatchFailure(f) if f.is_timeout() => TransportError::Timeout.into(),
        SdkError::DispatchFailure(_) => TransportError::Connect.into(),
        SdkError::ServiceError(s) => {
            let status = s.raw().status().as_u16();
            let code = s.err().code().unwrap_or("UnknownError");
            refusal(code, class_of(code, status)).into()
        }
        SdkError::ResponseError(_) => refusal("MalformedResponse", AwsClass::Transient).into(),
        // The request could not be built or signed (no credentials, no endpoint for the region):
        // the target is unusable from here until the configuration changes, whatever the message.
        _ => refusal("RequestNotBuilt", AwsClass::Unavailable).into(),
    }
}

/// The class of an AWS error code (SQS, SNS and EventBridge spell them differently), with the
/// HTTP status as the fallback.
pub fn class_of(code: &str, status: u16) -> AwsClass {
    let c = code.to_ascii_lowercase();
    let has = |s: &str| c.contains(s);
    if has("throttl") || has("toomanyrequests") || has("limitexceeded") || status == 429 {
        AwsClass::Throttled
    } else if has("accessdenied")
        || has("authorization")
        || has("kms")
        || has("nonexistentqueue")
        || has("queuedoesnotexist")
        || has("notfound")
        || has("invalidclienttokenid")
        || has("expiredtoken")
        || has("invalidsecurity")
        || has("signaturedoesnotmatch")
        || has("unrecognizedclient")
        || has("incompletesignature")
        || has("missingauthenticationtoken")
        || has("notauthorized")
        || matches!(status, 401 | 403 | 404)
    {
        AwsClass::Unavailable
    } else if has("internal") || has("unavailable") || has("timeout") || status >= 500 {
        AwsClass::Transient
    } else {
        AwsClass::Rejected
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_of_the_three_services_are_classified() {
        for (code, status, class) in [
            ("ThrottlingException", 400, AwsClass::Throttled),
            ("RequestThrottled", 403, AwsClass::Throttled),
            ("KMS.ThrottlingException", 400, AwsClass::Throttled),
            ("Throttled", 400, AwsClass::Throttled),
            ("AccessDenied", 403, AwsClass::Unavailable),
            ("AccessDeniedException", 400, AwsClass::Unavailable),
            ("AuthorizationError", 403, AwsClass::Unavailable),
            ("KmsAccessDenied", 400, AwsClass::Unavailable),
            ("KMS.DisabledException", 400, AwsClass::Unavailable),
            (
                "AWS.SimpleQueueService.NonExistentQueue",
                400,
                AwsClass::Unavailable,
            ),
            ("QueueDoesNotExist", 400, AwsClass::Unavailable),
            ("NotFound", 404, AwsClass::Unavailable),
            ("ResourceNotFoundException", 400, AwsClass::Unavailable),
            ("UnrecognizedClientException", 400, AwsClass::Unavailable),
            ("MissingAuthenticationToken", 400, AwsClass::Unavailable),
            (
                "NotAuthorizedForSourceException",
                200,
                AwsClass::Unavailable,
            ),
            ("InternalFailure", 200, AwsClass::Transient),
            ("InternalError", 500, AwsClass::Transient),
            ("ServiceUnavailable", 503, AwsClass::Transient),
            ("InvalidParameterValue", 400, AwsClass::Rejected),
            ("InvalidMessageContents", 400, AwsClass::Rejected),
            ("MalformedDetail", 200, AwsClass::Rejected),
            ("InvalidArgument", 200, AwsClass::Rejected),
        ] {
            assert_eq!(class_of(code, status), class, "{code}");
        }
    }

    #[test]
    fn detail_group_and_trace_header() {
        assert_eq!(
            detail(r#"{"v":1,"provider":"idnow"}"#, "dlv_1").unwrap(),
            r#"{"webhook_id":"dlv_1","v":1,"provider":"idnow"}"#
        );
        assert!(detail("{}", "dlv_1").is_err());
        assert!(detail("eyJ", "dlv_1").is_err());
        assert_eq!(group_id("idnow#s-1"), "idnow#s-1");
        let long = format!("incode#{}", "x".repeat(200));
        assert_eq!(group_id(&long).len(), "sha256:".len() + 64);
        assert_eq!(group_id(&long), group_id(&long));
        assert_eq!(group_id("idnow#sé"), group_id("idnow#sé"));
        assert!(group_id("idnow#sé").starts_with("sha256:"));
        assert_eq!(
            xray_header("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
            "Root=1-4bf92f35-77b34da6a3ce929d0e0e4736;Sampled=1"
        );
        assert_eq!(xray_header("intake-1"), None);
    }
}
