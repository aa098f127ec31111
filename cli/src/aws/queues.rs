//! SQS: queue depths, and reading and moving dead-letter messages.
//!
//! A DLQ is read by receiving its messages, not peeking (SQS has no peek): each message received is
//! held invisible for the scan (so one pass sees each message once) and released at the end, or
//! moved (sent to the target queue first, deleted from the DLQ after: a crash in between leaves a
//! copy in both, which the consumer and the dispatcher drop as a duplicate, never a loss). The DLQs
//! have no redrive policy, so the receive counts this adds change nothing.

use crate::error::{Result, sdk};
use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, MessageAttributeValue, MessageSystemAttributeName,
    QueueAttributeName,
};
use std::collections::{HashMap, HashSet};

#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Depth {
    pub visible: u64,
    pub in_flight: u64,
    pub delayed: u64,
}

pub async fn depth(client: &Client, url: &str) -> Result<Depth> {
    let out = client
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesDelayed)
        .send()
        .await
        .map_err(|e| sdk(&format!("queue attributes of {url}"), e))?;
    let get = |n: QueueAttributeName| {
        out.attributes()
            .and_then(|a| a.get(&n))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Ok(Depth {
        visible: get(QueueAttributeName::ApproximateNumberOfMessages),
        in_flight: get(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
        delayed: get(QueueAttributeName::ApproximateNumberOfMessagesDelayed),
    })
}

/// A message received from a DLQ.
#[derive(Debug, Clone)]
pub struct DlqMessage {
    pub message_id: String,
    receipt_handle: String,
    pub body: String,
    pub attributes: HashMap<String, MessageAttributeValue>,
    pub sent_at_ms: Option<u64>,
    pub receive_count: u32,
}

impl DlqMessage {
    pub fn attribute(&self, name: &str) -> Option<&str> {
        self.attributes.get(name).and_then(|v| v.string_value())
    }
}

/// Messages one pass holds in flight from which an empty receive may mean SQS's in-flight limit
/// (about 120,000 for a standard queue, counting other consumers' messages too) rather than the end.
pub const NEAR_IN_FLIGHT_LIMIT: usize = 100_000;

/// One pass over a queue's visible messages.
pub struct Scan<'a> {
    client: &'a Client,
    url: &'a str,
    visibility_secs: i32,
    seen: HashSet<String>,
    held: Vec<String>,
    done: bool,
    /// Set when the pass ended while the queue still had visible messages it did not reach.
    left: Option<u64>,
}

impl<'a> Scan<'a> {
    /// `visibility_secs`: how long each received message stays invisible; longer than the whole
    /// scan takes, or the pass meets messages again (it then stops, see [`Self::next_batch`]).
    pub fn new(client: &'a Client, url: &'a str, visibility_secs: u32) -> Self {
        Self {
            client,
            url,
            visibility_secs: visibility_secs.clamp(30, 43_200) as i32,
            seen: HashSet::new(),
            held: Vec::new(),
            done: false,
            left: None,
        }
    }

    pub fn visibility_secs(&self) -> i32 {
        self.visibility_secs
    }

    /// The next messages not seen before in this pass; empty when the pass is over: the queue has no
    /// visible message left (one long poll of 1 s, which asks every SQS server), or only messages
    /// already seen came back (their invisibility ran out: the pass has gone round).
    pub async fn next_batch(&mut self) -> Result<Vec<DlqMessage>> {
        if self.done {
            return Ok(Vec::new());
        }
        let out = self
            .client
            .receive_message()
            .queue_url(self.url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .visibility_timeout(self.visibility_secs)
            .message_attribute_names("All")
            .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .send()
            .await;
        let out = match out {
            Ok(out) => out,
            // The queue's in-flight limit (about 120,000 messages for a standard queue, most of
            // them held by this pass): the rest cannot be received until some are released.
            Err(e) if e.as_service_error().is_some_and(|s| s.is_over_limit()) => {
                self.done = true;
                self.left = Some(depth(self.client, self.url).await?.visible.max(1));
                return Ok(Vec::new());
            }
            Err(e) => return Err(sdk(&format!("receive from {}", self.url), e)),
        };
        let mut fresh = Vec::new();
        let mut any = false;
        for m in out.messages() {
            any = true;
            let (Some(id), Some(handle)) = (m.message_id(), m.receipt_handle()) else {
                continue;
            };
            if !self.seen.insert(id.to_string()) {
                // Seen earlier in this pass: keep it with its new receipt handle for the release.
                self.held.push(handle.to_string());
                continue;
            }
            let sys = |n: MessageSystemAttributeName| {
                m.attributes()
                    .and_then(|a| a.get(&n))
                    .and_then(|v| v.parse::<u64>().ok())
            };
            fresh.push(DlqMessage {
                message_id: id.to_string(),
                receipt_handle: handle.to_string(),
                body: m.body().unwrap_or_default().to_string(),
                attributes: m.message_attributes().cloned().unwrap_or_default(),
                sent_at_ms: sys(MessageSystemAttributeName::SentTimestamp),
                receive_count: sys(MessageSystemAttributeName::ApproximateReceiveCount).unwrap_or(0)
                    as u32,
            });
        }
        if !any || fresh.is_empty() {
            self.done = true;
        }
        if !any && self.seen.len() >= NEAR_IN_FLIGHT_LIMIT {
            // Nothing came back while this pass holds close to SQS's in-flight limit (about
            // 120,000 messages of a standard queue): SQS may answer empty rather than with
            // OverLimit, so the queue's own count decides whether messages were left. (Below the
            // limit an empty long poll means an empty queue; the approximate count lags by up to a
            // minute and would report a finished pass as partial.)
            let visible = depth(self.client, self.url).await?.visible;
            if visible > 0 {
                self.left = Some(visible);
            }
        }
        Ok(fresh)
    }

    /// Messages the pass did not reach (approximately, as SQS counts them): `Some` when it ended
    /// with visible messages left, e.g. at the queue's in-flight limit.
    pub fn left(&self) -> Option<u64> {
        self.left
    }

    /// Leaves the message in the queue (made visible again by [`Self::release`]).
    pub fn keep(&mut self, m: &DlqMessage) {
        self.held.push(m.receipt_handle.clone());
    }

    /// Deletes a message this pass received.
    pub async fn delete(&self, m: &DlqMessage) -> Result<()> {
        self.client
            .delete_message()
            .queue_url(self.url)
            .receipt_handle(&m.receipt_handle)
            .send()
            .await
            .map_err(|e| {
                sdk(
                    &format!("delete message {} from {}", m.message_id, self.url),
                    e,
                )
            })?;
        Ok(())
    }

    /// Makes every kept message visible again at once (else it would stay invisible for the rest
    /// of the scan's visibility timeout). Returns how many could not be released (they reappear
    /// when their visibility timeout ends).
    pub async fn release(&mut self) -> usize {
        let mut failed = 0;
        let held = std::mem::take(&mut self.held);
        for chunk in held.chunks(10) {
            let entries: Vec<_> = chunk
                .iter()
                .enumerate()
                .filter_map(|(i, handle)| {
                    ChangeMessageVisibilityBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(handle)
                        .visibility_timeout(0)
                        .build()
                        .ok()
                })
                .collect();
            match self
                .client
                .change_message_visibility_batch()
                .queue_url(self.url)
                .set_entries(Some(entries))
                .send()
                .await
            {
                Ok(out) => failed += out.failed().len(),
                Err(_) => failed += chunk.len(),
            }
        }
        failed
    }
}

/// Sends a copy of a DLQ message (body and message attributes) to `target`.
pub async fn send_copy(client: &Client, target: &str, m: &DlqMessage) -> Result<String> {
    let out = client
        .send_message()
        .queue_url(target)
        .message_body(&m.body)
        .set_message_attributes((!m.attributes.is_empty()).then(|| m.attributes.clone()))
        .send()
        .await
        .map_err(|e| sdk(&format!("send message {} to {target}", m.message_id), e))?;
    Ok(out.message_id().unwrap_or_default().to_string())
}

/// The invisibility a pass needs: long enough for `messages` at `per_sec` (moves are rate-limited),
/// with margin; SQS allows at most 12 hours.
pub fn scan_visibility(messages: u64, per_sec: Option<f64>) -> u32 {
    let secs = match per_sec {
        Some(r) if r > 0.0 => messages as f64 / r * 1.5 + 120.0,
        _ => messages as f64 / 50.0 + 120.0,
    };
    secs.min(43_200.0) as u32
}
