//! Exactly-once processing of events over at-least-once deliveries (providers retry, SQS redelivers).
//!
//! # Design: one conditional write, then idempotent effects
//!
//! The consumer claims an event with **one** conditional `PutItem` on the records table (the event
//! item of [`crate::records`]). The item records the payload hash, the **intake id** (which accepted
//! request owns the event: the receiver gives every request its own, and every SQS copy of that
//! request's message carries it), an expiry, a lease, the event's generation (0) and the destinations
//! the event is routed to. It succeeds only if no unexpired item exists (`expires_at` is checked in
//! the condition: DynamoDB's TTL deletes late and is only housekeeping). Everything after the claim
//! is idempotent, so nothing needs a "completed" write:
//!
//! - the archive object (one per consumer batch) is written after the claim, and a repair writes the
//!   event again into its own batch's object and appends that object to the event's list;
//! - delivery jobs carry a deterministic delivery id, and the dispatcher reads the delivery's state
//!   before it sends: a delivery already final, or an attempt already recorded, is acknowledged
//!   without sending; an attempt-1 job of an older generation whose delivery was never attempted is
//!   a copy superseded by a repair and is dropped.
//!
//! When the claim fails, DynamoDB returns the existing item (`ReturnValuesOnConditionCheckFailure`),
//! and [`decide`] chooses without another read:
//!
//! - other payload hash: a **conflict** (same id, different content) is logged with both hashes and
//!   counted, and not processed;
//! - the event is owned by another intake (a provider retry of an accepted request): a **duplicate**,
//!   acknowledged at once, whatever state its deliveries are in. The owner's message is responsible
//!   for the event: it is in flight, back on the queue, or in the ingest DLQ, and in each case it
//!   returns and repairs the event itself (a message redriven from the DLQ keeps its body, so its
//!   intake id). So a duplicate costs one call and one write unit, never sends anything, and never
//!   waits on the queue until it reaches a DLQ, however long the delivery backlog;
//! - owned by this intake (the same message back after a crash, a timeout or a failed send, or an SQS
//!   duplicate of it) and the lease still running: another invocation is processing it right now:
//!   the record becomes a batch item failure and comes back after the visibility timeout;
//! - owned by this intake and the lease over: **repair**. One conditional update takes the event over
//!   (new lease, generation + 1, this batch's archive object); then the event is archived again and
//!   the jobs of the deliveries never attempted are sent again, under the new generation, so copies
//!   still waiting in a backlog are dropped when they arrive instead of being sent twice.
//!
//! The lease ends at the invocation's deadline (Lambda's `Context` deadline): after it the invocation
//! is gone, and the SQS visibility timeout (6x the function timeout) is longer, so a redelivery
//! always finds the lease over.
//!
//! Cost with one destination on the happy path: the claim (1 WCU, the session's status is computed
//! from its events when read, not written) plus the dispatcher's outcome (1 WCU) = 2 write units.

use crate::records::ExistingRecord;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimOutcome {
    /// First time (or the previous record expired): apply every effect.
    Claimed,
    /// Another invocation holds the lease: try again later.
    InProgress,
    /// This intake owns the event and its invocation is gone: take over and re-apply the effects.
    Repair,
    /// Owned by another intake (a provider retry): acknowledge without effects.
    Duplicate,
    /// Same key, different content: not processed.
    Conflict { stored_hash: String },
}

/// Decides what a failed claim means (see the module documentation). `intake_ids`: the intake ids
/// of the batch's records for this event (an event can appear more than once in a batch).
pub fn decide(
    payload_hash: &str,
    now_ms: u64,
    intake_ids: &[&str],
    existing: &ExistingRecord,
) -> ClaimOutcome {
    if existing.payload_hash != payload_hash {
        return ClaimOutcome::Conflict {
            stored_hash: existing.payload_hash.clone(),
        };
    }
    if !intake_ids.contains(&existing.intake_id.as_str()) {
        return ClaimOutcome::Duplicate;
    }
    if existing.lease_until_ms > now_ms {
        return ClaimOutcome::InProgress;
    }
    ClaimOutcome::Repair
}

#[cfg(test)]
mod tests {
    use super::*;

    fn existing(intake: &str, lease_until_ms: u64) -> ExistingRecord {
        ExistingRecord {
            payload_hash: "h".into(),
            intake_id: intake.into(),
            claimed_at_ms: 1_000,
            lease_until_ms,
            expires_at_secs: u64::MAX,
            generation: 0,
            destinations: vec!["crm".into()],
            erased: false,
        }
    }

    #[test]
    fn decisions() {
        // A provider retry: acknowledged at once, even while the owner still holds the lease.
        assert_eq!(
            decide("h", 2_000, &["i2"], &existing("i1", 31_000)),
            ClaimOutcome::Duplicate
        );
        assert_eq!(
            decide("h", 900_000, &["i2"], &existing("i1", 31_000)),
            ClaimOutcome::Duplicate
        );
        // The owner's message (or an SQS copy of it) while its invocation runs: later.
        assert_eq!(
            decide("h", 2_000, &["i1"], &existing("i1", 31_000)),
            ClaimOutcome::InProgress
        );
        // The owner's message after its invocation died: repair.
        assert_eq!(
            decide("h", 200_000, &["i1"], &existing("i1", 31_000)),
            ClaimOutcome::Repair
        );
        // A batch holding both a retry and the owner's copy repairs.
        assert_eq!(
            decide("h", 200_000, &["i2", "i1"], &existing("i1", 31_000)),
            ClaimOutcome::Repair
        );
        let mut other = existing("i1", 0);
        other.payload_hash = "other".into();
        assert_eq!(
            decide("h", 2_000, &["i1"], &other),
            ClaimOutcome::Conflict {
                stored_hash: "other".into()
            }
        );
    }
}
