//! Delivery jobs: one message on the delivery queue per (event, destination) and attempt.
//!
//! A job carries the envelope, the attempt it is for, its due time and the history of earlier
//! attempts, so a dead-lettered job tells the operator everything without a table lookup.
//!
//! SQS delays a message by at most 900 s, in whole seconds. A job due later is enqueued with
//! `min(remaining, 900)` seconds and, when it arrives before its due time, re-enqueued with the
//! remainder, without an attempt being made or counted. Sub-second remainders round up to the next
//! second (a job is never attempted more than a second early, and never before its delay).

use crate::envelope::Envelope;
use crate::provider::sha256_hex;
use crate::queue::QueueError;
use serde::{Deserialize, Serialize};

pub const JOB_VERSION: u8 = 1;
pub const MAX_SQS_DELAY_SECS: u64 = 900;

/// Deterministic delivery id (the `webhook-id` destinations deduplicate on).
pub fn delivery_id(event_key: &str, destination_id: &str) -> String {
    format!(
        "dlv_{}",
        &sha256_hex(&[event_key.as_bytes(), destination_id.as_bytes()])[..32]
    )
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptLog {
    pub attempt: u32,
    pub at_ms: u64,
    pub outcome: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_code: Option<u16>,
    pub latency_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetterInfo {
    pub reason: String,
    pub at_ms: u64,
    pub attempts: u32,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeliveryJob {
    pub v: u8,
    pub delivery_id: String,
    pub destination_id: String,
    /// Events table key (`{provider}#{event_id}`).
    pub event_key: String,
    /// The attempt this job makes (1-based; strictly increasing across the delivery's life).
    pub attempt: u32,
    /// First attempt of the current retry cycle (> 1 after an operator redrove the job).
    #[serde(default = "one")]
    pub cycle_start: u32,
    /// Not before this time (ms since the epoch).
    pub due_at_ms: u64,
    #[serde(default)]
    pub history: Vec<AttemptLog>,
    /// Set when the job was dead-lettered; a job carrying it on the delivery queue was redriven.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter: Option<DeadLetterInfo>,
    pub envelope: Envelope,
}

impl DeliveryJob {
    pub fn first(envelope: &Envelope, event_key: &str, destination_id: &str, now_ms: u64) -> Self {
        Self {
            v: JOB_VERSION,
            delivery_id: delivery_id(event_key, destination_id),
            destination_id: destination_id.to_string(),
            event_key: event_key.to_string(),
            attempt: 1,
            cycle_start: 1,
            due_at_ms: now_ms,
            history: Vec::new(),
            dead_letter: None,
            envelope: envelope.clone(),
        }
    }

    /// The attempt's number within the current retry cycle, as the retry policy counts it.
    pub fn policy_attempt(&self) -> u32 {
        self.attempt.saturating_sub(self.cycle_start) + 1
    }
}

/// Seconds to delay a message due at `due_at_ms`: the remainder rounded up, at most 900.
pub fn sqs_delay_secs(due_at_ms: u64, now_ms: u64) -> u32 {
    let remaining_ms = due_at_ms.saturating_sub(now_ms);
    remaining_ms.div_ceil(1000).min(MAX_SQS_DELAY_SECS) as u32
}

/// Whether a job due at `due_at_ms` may be attempted now (less than a second remains, which SQS
/// cannot express).
pub fn is_due(due_at_ms: u64, now_ms: u64) -> bool {
    due_at_ms.saturating_sub(now_ms) < 1000
}

pub struct Scheduled {
    pub job: DeliveryJob,
    pub delay_secs: u32,
}

/// The delivery queue (delays) and the delivery dead-letter queue.
pub trait DeliveryQueue: Send + Sync {
    /// Enqueues jobs in as few requests as the queue allows; one result per job, in order.
    fn schedule(
        &self,
        jobs: Vec<Scheduled>,
    ) -> impl Future<Output = Vec<Result<(), QueueError>>> + Send;

    fn dead_letter(&self, job: &DeliveryJob)
    -> impl Future<Output = Result<(), QueueError>> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_round_up_and_chain_past_900_seconds() {
        let now = 1_000_000;
        // Incode's fifth delay: 1171.875 s = 900 now, then 272 (271.875 rounded up).
        let due = now + 1_171_875;
        assert_eq!(sqs_delay_secs(due, now), 900);
        assert!(!is_due(due, now + 900_000));
        assert_eq!(sqs_delay_secs(due, now + 900_000), 272);
        assert!(is_due(due, now + 900_000 + 272_000));
        assert_eq!(sqs_delay_secs(now + 187_500, now), 188);
        assert_eq!(sqs_delay_secs(now, now), 0);
        assert_eq!(sqs_delay_secs(now - 5, now), 0);
    }

    #[test]
    fn delivery_ids_are_deterministic_and_distinct() {
        assert_eq!(
            delivery_id("idnow#e1", "crm"),
            delivery_id("idnow#e1", "crm")
        );
        assert_ne!(
            delivery_id("idnow#e1", "crm"),
            delivery_id("idnow#e1", "bi")
        );
        assert_ne!(
            delivery_id("idnow#e1", "crm"),
            delivery_id("idnow#e2", "crm")
        );
        assert!(delivery_id("a", "b").starts_with("dlv_"));
    }
}
