//! Queue ports. The SQS adapters live in `aws::sqs`.

use crate::envelope::Envelope;

#[derive(Debug, thiserror::Error)]
#[error("queue unavailable: {0}")]
pub struct QueueError(pub String);

/// Where the receiver puts accepted webhooks. `enqueue` returns only once the queue has durably
/// accepted the envelope: the receiver acknowledges the provider after that, never before.
pub trait IngestQueue: Send + Sync {
    fn enqueue(&self, envelope: &Envelope) -> impl Future<Output = Result<(), QueueError>> + Send;
}
