//! SQS adapters for the queue ports.

use crate::delivery::{DeliveryJob, DeliveryQueue, Scheduled};
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
        Self::from_client(aws_sdk_sqs::Client::new(aws), queue_url)
    }

    pub fn from_client(client: aws_sdk_sqs::Client, queue_url: impl Into<String>) -> Self {
        Self {
            client,
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

/// SQS batch limits: 10 entries and 256 KiB of payload per `SendMessageBatch`.
const BATCH_MAX_ENTRIES: usize = 10;
const BATCH_MAX_BYTES: usize = 256 * 1024;

#[derive(Clone)]
pub struct SqsDeliveryQueue {
    client: aws_sdk_sqs::Client,
    queue_url: String,
    dlq_url: Option<String>,
}

impl SqsDeliveryQueue {
    /// `dlq_url`: where exhausted jobs go (the dispatcher needs it; the consumer does not).
    pub fn new(
        aws: &aws_config::SdkConfig,
        queue_url: impl Into<String>,
        dlq_url: Option<String>,
    ) -> Self {
        Self::from_client(aws_sdk_sqs::Client::new(aws), queue_url, dlq_url)
    }

    pub fn from_client(
        client: aws_sdk_sqs::Client,
        queue_url: impl Into<String>,
        dlq_url: Option<String>,
    ) -> Self {
        Self {
            client,
            queue_url: queue_url.into(),
            dlq_url,
        }
    }

    async fn send_batch(
        &self,
        entries: Vec<aws_sdk_sqs::types::SendMessageBatchRequestEntry>,
    ) -> Vec<Result<(), QueueError>> {
        let count = entries.len();
        match self
            .client
            .send_message_batch()
            .queue_url(&self.queue_url)
            .set_entries(Some(entries))
            .send()
            .await
        {
            Ok(out) => {
                let mut results: Vec<Result<(), QueueError>> = (0..count).map(|_| Ok(())).collect();
                for failed in out.failed() {
                    if let Ok(i) = failed.id().parse::<usize>()
                        && i < count
                    {
                        results[i] = Err(QueueError(format!(
                            "{}: {}",
                            failed.code(),
                            failed.message().unwrap_or_default()
                        )));
                    }
                }
                results
            }
            Err(e) => {
                let msg = aws_sdk_sqs::error::DisplayErrorContext(e).to_string();
                (0..count).map(|_| Err(QueueError(msg.clone()))).collect()
            }
        }
    }
}

fn job_entry(
    id: usize,
    body: String,
    s: &Scheduled,
) -> aws_sdk_sqs::types::SendMessageBatchRequestEntry {
    aws_sdk_sqs::types::SendMessageBatchRequestEntry::builder()
        .id(id.to_string())
        .message_body(body)
        .delay_seconds(s.delay_secs as i32)
        .message_attributes("delivery_id", string_attribute(&s.job.delivery_id))
        .message_attributes("destination", string_attribute(&s.job.destination_id))
        .message_attributes("attempt", string_attribute(&s.job.attempt.to_string()))
        .build()
        .expect("id and body are set")
}

impl DeliveryQueue for SqsDeliveryQueue {
    async fn schedule(&self, jobs: Vec<Scheduled>) -> Vec<Result<(), QueueError>> {
        let mut results: Vec<Result<(), QueueError>> = Vec::with_capacity(jobs.len());
        // Pack jobs into as few requests as the batch limits allow, preserving order.
        let mut batch = Vec::new();
        let mut batch_bytes = 0;
        for s in &jobs {
            let body = match serde_json::to_string(&s.job) {
                Ok(b) => sqs_safe_json(b),
                Err(e) => {
                    // Flush first so results stay in job order.
                    if !batch.is_empty() {
                        results.extend(self.send_batch(std::mem::take(&mut batch)).await);
                        batch_bytes = 0;
                    }
                    results.push(Err(QueueError(e.to_string())));
                    continue;
                }
            };
            let size = body.len() + 512; // attributes
            if !batch.is_empty()
                && (batch.len() == BATCH_MAX_ENTRIES || batch_bytes + size > BATCH_MAX_BYTES)
            {
                results.extend(self.send_batch(std::mem::take(&mut batch)).await);
                batch_bytes = 0;
            }
            batch_bytes += size;
            batch.push(job_entry(batch.len(), body, s));
        }
        if !batch.is_empty() {
            results.extend(self.send_batch(batch).await);
        }
        results
    }

    async fn dead_letter(&self, job: &DeliveryJob) -> Result<(), QueueError> {
        let url = self
            .dlq_url
            .as_deref()
            .ok_or_else(|| QueueError("no delivery DLQ configured".into()))?;
        let body = serde_json::to_string(job).map_err(|e| QueueError(e.to_string()))?;
        self.client
            .send_message()
            .queue_url(url)
            .message_body(sqs_safe_json(body))
            .message_attributes("delivery_id", string_attribute(&job.delivery_id))
            .message_attributes("destination", string_attribute(&job.destination_id))
            .message_attributes(
                "reason",
                string_attribute(
                    job.dead_letter
                        .as_ref()
                        .map(|d| d.reason.as_str())
                        .unwrap_or("unknown"),
                ),
            )
            .send()
            .await
            .map_err(|e| QueueError(aws_sdk_sqs::error::DisplayErrorContext(e).to_string()))?;
        Ok(())
    }
}
