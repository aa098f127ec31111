//! Exactly-once processing of events over at-least-once deliveries (providers retry, SQS redelivers).
//!
//! # Design: one conditional write, then idempotent effects
//!
//! The consumer claims an event with **one** conditional `PutItem` on the events table, keyed
//! `{provider}#{event_id}`. The item records the payload hash, an expiry, a lease and one PENDING
//! entry per destination the event goes to. It succeeds only if no record exists or the existing one
//! has expired (`expires_at` is checked in the condition: DynamoDB's TTL deletes late and is only
//! housekeeping). Everything after the claim is idempotent, so nothing needs a second "completed"
//! write:
//!
//! - the session update is conditional on the status rank (re-applying it fails the condition and
//!   changes nothing);
//! - delivery jobs carry a deterministic delivery id (hash of event key and destination), and the
//!   dispatcher reads the delivery's state before it sends: a delivery already final, or an attempt
//!   already recorded, is acknowledged without sending.
//!
//! When the claim fails, DynamoDB returns the existing item (`ReturnValuesOnConditionCheckFailure`),
//! and [`decide`] chooses without another read:
//!
//! - other payload hash: a **conflict** (same id, different content) is logged with both hashes and
//!   counted, and not processed;
//! - lease still running: another invocation is processing the event right now: the record becomes a
//!   batch item failure and comes back after the visibility timeout;
//! - lease over, and this is the SQS message that claimed the event (a redelivery after a crash or a
//!   failed send): **repair**: the effects are applied again for the deliveries still PENDING (never
//!   attempted). This is what repairs a crash anywhere between the claim and the last
//!   `SendMessageBatch`;
//! - lease over, another message (a provider retry, an SQS duplicate, or the claiming message itself
//!   redriven from the ingest DLQ, which gives it a new message id), and no delivery still PENDING:
//!   a **duplicate**, acknowledged without effects;
//! - the same, with deliveries still PENDING: the claiming message may still be about to send them,
//!   so the record is **deferred** (a batch item failure, back after the visibility timeout) until
//!   either the dispatcher has attempted them (then it is a duplicate) or the record is older than
//!   `orphan_after` (default 900 s = the ingest queue's maxReceiveCount x visibility timeout: by
//!   then the claiming message is deleted or in the DLQ), when it **repairs** them. So an event whose
//!   first message died is never lost, and a duplicate never races the first message's own sends.
//!
//! The lease ends at the invocation's deadline (Lambda's `Context` deadline): after it the invocation
//! is gone, and the SQS visibility timeout (6x the function timeout) is longer, so a redelivery
//! always finds the lease over.
//!
//! Cost with one destination on the happy path: claim 1 WCU + session update 1 WCU (consumer) +
//! the dispatcher's outcome update 1 WCU = 3 write units; items stay well under 1 KB because the raw
//! body travels in the SQS messages, never in the table. A Powertools-style IN_PROGRESS/COMPLETED
//! claim needs 4 and a transaction would double its writes.

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
#[error("store unavailable: {0}")]
pub struct StoreError(pub String);

/// The events table key of an event.
pub fn event_key(provider: crate::provider::Provider, event_id: &str) -> String {
    format!("{provider}#{event_id}")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeliveryStatus {
    /// Job enqueued (or about to be), no attempt made yet.
    #[serde(rename = "PENDING")]
    Pending,
    /// At least one attempt failed; the next is scheduled.
    #[serde(rename = "RETRYING")]
    Retrying,
    #[serde(rename = "DELIVERED")]
    Delivered,
    /// The policy gave up; the job is in the delivery DLQ.
    #[serde(rename = "FAILED")]
    Failed,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "PENDING",
            DeliveryStatus::Retrying => "RETRYING",
            DeliveryStatus::Delivered => "DELIVERED",
            DeliveryStatus::Failed => "FAILED",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "PENDING" => DeliveryStatus::Pending,
            "RETRYING" => DeliveryStatus::Retrying,
            "DELIVERED" => DeliveryStatus::Delivered,
            "FAILED" => DeliveryStatus::Failed,
            _ => return None,
        })
    }

    pub fn is_final(self) -> bool {
        matches!(self, DeliveryStatus::Delivered | DeliveryStatus::Failed)
    }
}

pub struct EventClaim<'a> {
    pub key: &'a str,
    /// The SQS message id of the record making the claim.
    pub message_id: &'a str,
    pub payload_hash: &'a str,
    pub destinations: &'a [String],
    pub now_ms: u64,
    pub lease_until_ms: u64,
    pub expires_at_secs: u64,
}

/// What the store found when claiming.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimResult {
    Claimed,
    Existing(ExistingRecord),
}

/// The record that made a claim fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExistingRecord {
    pub payload_hash: String,
    pub claimed_by: String,
    pub created_at_ms: u64,
    pub lease_until_ms: u64,
    /// Destinations whose delivery is still PENDING (never attempted).
    pub pending: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimOutcome {
    /// First time (or the previous record expired): apply every effect.
    Claimed,
    /// Another invocation holds the lease: try again later.
    InProgress,
    /// Re-apply the effects, sending the deliveries still pending.
    Repair { pending: Vec<String> },
    /// Already handled by another message: acknowledge without effects.
    Duplicate,
    /// Handled by another message that may still be sending its deliveries: try again later.
    Deferred,
    /// Same key, different content: not processed.
    Conflict { stored_hash: String },
}

/// Decides what a failed claim means (see the module documentation).
pub fn decide(
    claim: &EventClaim<'_>,
    existing: ExistingRecord,
    orphan_after_ms: u64,
) -> ClaimOutcome {
    if existing.payload_hash != claim.payload_hash {
        return ClaimOutcome::Conflict {
            stored_hash: existing.payload_hash,
        };
    }
    if existing.lease_until_ms > claim.now_ms {
        return ClaimOutcome::InProgress;
    }
    if existing.claimed_by == claim.message_id {
        return ClaimOutcome::Repair {
            pending: existing.pending,
        };
    }
    if existing.pending.is_empty() {
        return ClaimOutcome::Duplicate;
    }
    if claim.now_ms.saturating_sub(existing.created_at_ms) >= orphan_after_ms {
        ClaimOutcome::Repair {
            pending: existing.pending,
        }
    } else {
        ClaimOutcome::Deferred
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryRecord {
    pub status: DeliveryStatus,
    pub attempts: u32,
}

/// One attempt's outcome, written to the delivery's entry in the event record.
#[derive(Debug, Clone)]
pub struct AttemptUpdate {
    pub attempt: u32,
    pub at_ms: u64,
    pub status: DeliveryStatus,
    pub outcome: String,
    pub status_code: Option<u16>,
    pub latency_ms: u64,
    /// An operator redrove the job from the DLQ: a FAILED delivery may move again.
    pub redrive: bool,
}

pub trait EventStore: Send + Sync {
    /// One conditional write: succeeds if no unexpired record exists, else returns that record.
    fn claim(
        &self,
        claim: &EventClaim<'_>,
    ) -> impl Future<Output = Result<ClaimResult, StoreError>> + Send;

    /// The delivery's current state (strongly consistent), `None` if the record or entry is gone.
    fn delivery(
        &self,
        key: &str,
        destination: &str,
    ) -> impl Future<Output = Result<Option<DeliveryRecord>, StoreError>> + Send;

    /// Records an attempt unless a later (or the same) attempt is already recorded or the delivery is
    /// final. `Ok(false)`: not applied, another chain got there first.
    fn record_attempt(
        &self,
        key: &str,
        destination: &str,
        update: &AttemptUpdate,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
}

/// Session-state projection: one item per (provider, session) holding the furthest status.
pub struct SessionUpdate<'a> {
    pub provider: crate::provider::Provider,
    pub session_id: &'a str,
    pub status: &'a str,
    pub rank: u16,
    pub event_id: &'a str,
    pub at_ms: u64,
    pub expires_at_secs: u64,
}

pub trait SessionStore: Send + Sync {
    /// Moves the session to `status` if its rank is higher than the stored one. `Ok(false)`: the
    /// session is already there or further (this event applied before, or a later one); nothing
    /// changed.
    fn advance(
        &self,
        update: &SessionUpdate<'_>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim<'a>(message_id: &'a str, now_ms: u64) -> EventClaim<'a> {
        EventClaim {
            key: "idnow#e",
            message_id,
            payload_hash: "h",
            destinations: &[],
            now_ms,
            lease_until_ms: now_ms + 30_000,
            expires_at_secs: 0,
        }
    }

    fn existing(claimed_by: &str, lease_until_ms: u64, pending: &[&str]) -> ExistingRecord {
        ExistingRecord {
            payload_hash: "h".into(),
            claimed_by: claimed_by.into(),
            created_at_ms: 1_000,
            lease_until_ms,
            pending: pending.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn decisions() {
        let orphan = 900_000;
        // Another invocation is on it.
        assert_eq!(
            decide(
                &claim("m2", 2_000),
                existing("m1", 31_000, &["crm"]),
                orphan
            ),
            ClaimOutcome::InProgress
        );
        // The claiming message came back after a crash: repair the pending deliveries.
        assert_eq!(
            decide(
                &claim("m1", 200_000),
                existing("m1", 31_000, &["crm"]),
                orphan
            ),
            ClaimOutcome::Repair {
                pending: vec!["crm".into()]
            }
        );
        // A provider retry while the claiming message may still send: come back later.
        assert_eq!(
            decide(
                &claim("m2", 200_000),
                existing("m1", 31_000, &["crm"]),
                orphan
            ),
            ClaimOutcome::Deferred
        );
        // Deliveries already attempted: nothing left to do.
        assert_eq!(
            decide(&claim("m2", 200_000), existing("m1", 31_000, &[]), orphan),
            ClaimOutcome::Duplicate
        );
        // Much later, deliveries never attempted: the claiming message died (or was redriven from
        // the DLQ under a new id); repair.
        assert_eq!(
            decide(
                &claim("m3", 1_000 + orphan),
                existing("m1", 31_000, &["crm"]),
                orphan
            ),
            ClaimOutcome::Repair {
                pending: vec!["crm".into()]
            }
        );
        assert_eq!(
            decide(
                &claim("m3", 1_000 + orphan),
                existing("m1", 31_000, &[]),
                orphan
            ),
            ClaimOutcome::Duplicate
        );
        let mut other = existing("m1", 0, &[]);
        other.payload_hash = "other".into();
        assert_eq!(
            decide(&claim("m2", 2_000), other, orphan),
            ClaimOutcome::Conflict {
                stored_hash: "other".into()
            }
        );
    }
}
