//! Lambda SQS event adapter: records in, partial batch response out.

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};

/// (message id, body) of each record. A record without an id cannot be reported as failed, and one
/// without a body cannot be processed: both are logged.
pub fn records(event: &SqsEvent) -> Vec<(String, String)> {
    event
        .records
        .iter()
        .filter_map(|r| {
            let id = r.message_id.clone();
            if id.is_none() {
                tracing::error!("SQS record without message id");
            }
            Some((id?, r.body.clone().unwrap_or_default()))
        })
        .collect()
}

/// The queue a record came from: the last part of its `eventSourceARN` (the queue name).
pub fn source_queue(event: &SqsEvent, message_id: &str) -> Option<String> {
    event
        .records
        .iter()
        .find(|r| r.message_id.as_deref() == Some(message_id))
        .and_then(|r| r.event_source_arn.as_deref())
        .and_then(|arn| arn.rsplit(':').next())
        .map(str::to_string)
}

/// The queue name of a queue URL (its last path segment).
pub fn queue_name(url: &str) -> &str {
    url.trim_end_matches('/').rsplit('/').next().unwrap_or(url)
}

pub fn batch_response(failed: Vec<String>) -> SqsBatchResponse {
    let mut response = SqsBatchResponse::default();
    for id in failed {
        response.add_failure(id);
    }
    response
}
