//! SQS adapters for the queue ports.

use crate::envelope::Envelope;
use crate::queue::{IngestQueue, QueueError};
use aws_sdk_sqs::types::MessageAttributeValue;

/// SQS accepts only XML characters in a message; JSON leaves U+FFFE and U+FFFF unescaped, so they
/// are escaped here (they can only occur inside JSON strings, where `\uXXXX` means the same).
pub fn sqs_safe_json(json: String) -> String {
    if json.contains(['\u{FFFE}', '\u{FFFF}']) {
        json.replace('\u{FFFE}', "\\ufffe")
            .replace('\u{FFFF}', "\\uffff")
    } else {
        json
    }
}

fn string_attribute(value: &str) -> MessageAttributeValue {
    MessageAttributeValue::builder()
        .data_type("String")
        .string_value(value)
        .build()
        .expect("data_type is set")
}

#[derive(Clone)]
pub struct SqsIngestQueue {
    client: aws_sdk_sqs::Client,
    queue_url: String,
}

impl SqsIngestQueue {
    pub fn new(aws: &aws_config::SdkConfig, queue_url: impl Into<String>) -> Self {
        Self {
            client: aws_sdk_sqs::Client::new(aws),
            queue_url: queue_url.into(),
        }
    }
}

impl IngestQueue for SqsIngestQueue {
    async fn enqueue(&self, envelope: &Envelope) -> Result<(), QueueError> {
        let body = serde_json::to_string(envelope).map_err(|e| QueueError(e.to_string()))?;
        self.client
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(sqs_safe_json(body))
            .message_attributes("provider", string_attribute(envelope.provider.as_str()))
            .message_attributes("event_type", string_attribute(&envelope.event_type))
            .message_attributes("event_id", string_attribute(&envelope.event_id))
            .send()
            .await
            .map_err(|e| QueueError(aws_sdk_sqs::error::DisplayErrorContext(e).to_string()))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn noncharacters_are_escaped_and_still_decode_to_the_same_string() {
        let original = "a\u{FFFF}b\u{FFFE}";
        let json = serde_json::to_string(original).unwrap();
        let safe = sqs_safe_json(json);
        assert!(!safe.contains('\u{FFFF}'));
        assert_eq!(serde_json::from_str::<String>(&safe).unwrap(), original);
    }
}
