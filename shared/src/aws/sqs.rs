//! SQS adapters for the queue ports.

use crate::delivery::{DeliveryJob, DeliveryQueue, Lane, Scheduled};
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
    fast_url: String,
    retry_url: Option<String>,
    dlq_url: Option<String>,
}

impl SqsDeliveryQueue {
    /// `retry_url`: the retry lane (the dispatcher needs it; the consumer sends first attempts only);
    /// `dlq_url`: where exhausted jobs go (the dispatcher).
    pub fn new(
        aws: &aws_config::SdkConfig,
        fast_url: impl Into<String>,
        retry_url: Option<String>,
        dlq_url: Option<String>,
    ) -> Self {
        Self::from_client(aws_sdk_sqs::Client::new(aws), fast_url, retry_url, dlq_url)
    }

    pub fn from_client(
        client: aws_sdk_sqs::Client,
        fast_url: impl Into<String>,
        retry_url: Option<String>,
        dlq_url: Option<String>,
    ) -> Self {
        Self {
            client,
            fast_url: fast_url.into(),
            retry_url,
            dlq_url,
        }
    }

    fn url(&self, lane: Lane) -> Option<&str> {
        match lane {
            Lane::Fast => Some(&self.fast_url),
            Lane::Retry => self.retry_url.as_deref(),
        }
    }

    async fn send_batch(
        &self,
        url: &str,
        entries: Vec<aws_sdk_sqs::types::SendMessageBatchRequestEntry>,
    ) -> Vec<Result<(), QueueError>> {
        let count = entries.len();
        match self
            .client
            .send_message_batch()
            .queue_url(url)
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
        let mut results: Vec<Option<Result<(), QueueError>>> =
            (0..jobs.len()).map(|_| None).collect();
        // Per lane, pack jobs into as few requests as the batch limits allow; results keep job order.
        for lane in [Lane::Fast, Lane::Retry] {
            let indices: Vec<usize> = (0..jobs.len()).filter(|&i| jobs[i].lane == lane).collect();
            if indices.is_empty() {
                continue;
            }
            let Some(url) = self.url(lane) else {
                for i in indices {
                    results[i] = Some(Err(QueueError(format!(
                        "no {} lane configured",
                        lane.as_str()
                    ))));
                }
                continue;
            };
            let mut batch = Vec::new();
            let mut owners = Vec::new();
            let mut batch_bytes = 0;
            for i in indices {
                let s = &jobs[i];
                let body = match serde_json::to_string(&s.job) {
                    Ok(b) => sqs_safe_json(b),
                    Err(e) => {
                        results[i] = Some(Err(QueueError(e.to_string())));
                        continue;
                    }
                };
                let size = body.len() + 512; // attributes
                if !batch.is_empty()
                    && (batch.len() == BATCH_MAX_ENTRIES || batch_bytes + size > BATCH_MAX_BYTES)
                {
                    let sent = self.send_batch(url, std::mem::take(&mut batch)).await;
                    for (o, r) in std::mem::take(&mut owners).into_iter().zip(sent) {
                        results[o] = Some(r);
                    }
                    batch_bytes = 0;
                }
                batch_bytes += size;
                batch.push(job_entry(batch.len(), body, s));
                owners.push(i);
            }
            if !batch.is_empty() {
                let sent = self.send_batch(url, batch).await;
                for (o, r) in owners.into_iter().zip(sent) {
                    results[o] = Some(r);
                }
            }
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(QueueError("not sent".into()))))
            .collect()
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
