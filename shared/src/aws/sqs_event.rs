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

pub fn batch_response(failed: Vec<String>) -> SqsBatchResponse {
    let mut response = SqsBatchResponse::default();
    for id in failed {
        response.add_failure(id);
    }
    response
}
