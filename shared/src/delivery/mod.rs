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
use crate::records::{EventKey, HISTORY_CAP};
use serde::{Deserialize, Serialize};

pub mod memory;

/// Version 2: jobs name their event by the envelope (records table keyed by session) and carry the
/// event's generation and expiry. Version 1 jobs (events table) are refused as malformed: drain the
/// delivery queues before upgrading from 0.1 (docs/deploy.md).
pub const JOB_VERSION: u8 = 2;
pub const MAX_SQS_DELAY_SECS: u64 = 900;
/// Attempts a job carries in its history (the delivery item keeps the last [`HISTORY_CAP`]). The
/// longest built-in policy makes 11 attempts per cycle; the rest of the room is for probes and a
/// redriven cycle. At about 200 bytes an entry, the history stays under 7 KiB.
pub const JOB_HISTORY_CAP: usize = 32;

/// Deterministic delivery id (the `webhook-id` destinations deduplicate on): the same for every
/// attempt, retry, redrive and (unless the operator asks for a new id) replay of one event to one
/// destination.
pub fn delivery_id(event_key: &EventKey, destination_id: &str) -> String {
    format!(
        "dlv_{}",
        &sha256_hex(&[
            event_key.pk.as_bytes(),
            event_key.sk.as_bytes(),
            destination_id.as_bytes()
        ])[..32]
    )
}

/// The `webhook-id` of a replay sent with `--new-id`.
pub fn replay_delivery_id(event_key: &EventKey, destination_id: &str, replay_id: &str) -> String {
    format!(
        "dlv_{}",
        &sha256_hex(&[
            event_key.pk.as_bytes(),
            event_key.sk.as_bytes(),
            destination_id.as_bytes(),
            replay_id.as_bytes()
        ])[..32]
    )
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptLog {
    pub attempt: u32,
    pub at_ms: u64,
    pub outcome: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_code: Option<u16>,
    pub latency_ms: u64,
    /// First attempt of the retry cycle this attempt belongs to (> 1 after a redrive).
    #[serde(default = "one")]
    pub cycle: u32,
    /// A probe of a paused destination: not counted by the retry policy.
    #[serde(default, skip_serializing_if = "is_false")]
    pub probe: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetterInfo {
    pub reason: String,
    pub at_ms: u64,
    pub attempts: u32,
}

/// A replay queued by an operator (`kyc-relay replay`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplayInfo {
    /// The replay run (its delivery items are keyed by it, apart from the event's own delivery).
    pub id: String,
    /// This copy of the job; a re-run of the replay writes a new one and older copies are dropped.
    pub token: String,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeliveryJob {
    pub v: u8,
    pub delivery_id: String,
    pub destination_id: String,
    /// The attempt this job makes (1-based; strictly increasing across the delivery's life).
    pub attempt: u32,
    /// First attempt of the current retry cycle (> 1 after an operator redrove the job).
    #[serde(default = "one")]
    pub cycle_start: u32,
    /// Attempts of the current cycle the retry policy does not count (failed probes of a paused
    /// destination): a destination that is down does not use up a delivery's retries.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub uncharged: u32,
    /// Not before this time (ms since the epoch).
    pub due_at_ms: u64,
    /// The event's generation when the job was queued (a repair bumps it; an attempt-1 job of an
    /// older generation whose delivery was never attempted is a superseded copy).
    #[serde(default)]
    pub generation: u32,
    /// When the event's records expire (its delivery items get the same expiry).
    pub expires_at_secs: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay: Option<ReplayInfo>,
    /// When the job was first held for a paused destination in its current retry cycle (ms since
    /// the epoch; a redrive clears it). `MAX_HOLD_SECONDS` counts from here, so a cycle lasts at most
    /// its retry chain plus the hold limit, however often the destination pauses and resumes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_since_ms: Option<u64>,
    /// The slot (µs since the epoch) this job reserved under its destination's rate limit and
    /// waits for on the retry lane (`crate::rate`); sent at it, or a new slot is reserved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_slot_us: Option<u64>,
    /// The attempts (and probes) made, at most [`JOB_HISTORY_CAP`] of them: see [`Self::log`].
    #[serde(default)]
    pub history: Vec<AttemptLog>,
    /// Entries [`Self::log`] dropped to keep the history bounded (oldest probes first).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub history_dropped: u32,
    /// Set when the job was dead-lettered; a job carrying it on a delivery queue was redriven.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter: Option<DeadLetterInfo>,
    pub envelope: Envelope,
}

impl DeliveryJob {
    pub fn first(
        envelope: &Envelope,
        destination_id: &str,
        now_ms: u64,
        generation: u32,
        expires_at_secs: u64,
    ) -> Self {
        Self {
            v: JOB_VERSION,
            delivery_id: delivery_id(&EventKey::of(envelope), destination_id),
            destination_id: destination_id.to_string(),
            attempt: 1,
            cycle_start: 1,
            uncharged: 0,
            due_at_ms: now_ms,
            generation,
            expires_at_secs,
            replay: None,
            held_since_ms: None,
            rate_slot_us: None,
            history: Vec::new(),
            history_dropped: 0,
            dead_letter: None,
            envelope: envelope.clone(),
        }
    }

    pub fn event_key(&self) -> EventKey {
        EventKey::of(&self.envelope)
    }

    pub fn delivery_key(&self) -> crate::records::DeliveryKey {
        self.event_key().delivery(
            &self.destination_id,
            self.replay.as_ref().map(|r| r.id.as_str()),
        )
    }

    /// The attempt's number within the current retry cycle, as the retry policy counts it.
    pub fn policy_attempt(&self) -> u32 {
        (self.attempt.saturating_sub(self.cycle_start) + 1)
            .saturating_sub(self.uncharged)
            .max(1)
    }

    /// Jobs of a redriven cycle may move a delivery that an earlier cycle left FAILED.
    pub fn is_redrive(&self) -> bool {
        self.cycle_start > 1
    }

    /// Appends an attempt to the history the job carries, keeping at most [`JOB_HISTORY_CAP`]
    /// entries: a destination paused for days is probed every minute or so, and one entry per failed
    /// probe would push a held job past SQS's 256 KiB message limit. The oldest probe goes first
    /// (probes are not counted by the retry policy, and every attempt is also logged), then the
    /// oldest attempt; `history_dropped` counts what went.
    pub fn log(&mut self, entry: AttemptLog) {
        self.history.push(entry);
        while self.history.len() > JOB_HISTORY_CAP {
            // Never the entry just made: the item's history tail and the DLQ show the latest.
            let older = &self.history[..self.history.len() - 1];
            let i = older.iter().position(|h| h.probe).unwrap_or(0);
            self.history.remove(i);
            self.history_dropped = self.history_dropped.saturating_add(1);
        }
    }

    /// The most recent attempts, as kept on the delivery item.
    pub fn history_tail(&self) -> Vec<AttemptLog> {
        let skip = self.history.len().saturating_sub(HISTORY_CAP);
        self.history[skip..].to_vec()
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

/// The two delivery queues. First attempts go to the fast lane; retries, chained delays, jobs held
/// for a paused destination and jobs of a destination that answers slowly go to the retry lane, so a
/// degraded destination never shares a batch (and its wait) with healthy ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Lane {
    Fast,
    Retry,
}

impl Lane {
    pub fn as_str(self) -> &'static str {
        match self {
            Lane::Fast => "fast",
            Lane::Retry => "retry",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Scheduled {
    pub job: DeliveryJob,
    pub delay_secs: u32,
    pub lane: Lane,
}

/// The delivery queues (delays) and the delivery dead-letter queue.
pub trait DeliveryQueue: Send + Sync {
    /// Enqueues jobs in as few requests as the queues allow; one result per job, in order.
    fn schedule(
        &self,
        jobs: Vec<Scheduled>,
    ) -> impl Future<Output = Vec<Result<(), QueueError>>> + Send;

    fn dead_letter(&self, job: &DeliveryJob)
    -> impl Future<Output = Result<(), QueueError>> + Send;
}

impl<T: DeliveryQueue> DeliveryQueue for std::sync::Arc<T> {
    fn schedule(
        &self,
        jobs: Vec<Scheduled>,
    ) -> impl Future<Output = Vec<Result<(), QueueError>>> + Send {
        (**self).schedule(jobs)
    }

    fn dead_letter(
        &self,
        job: &DeliveryJob,
    ) -> impl Future<Output = Result<(), QueueError>> + Send {
        (**self).dead_letter(job)
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_bounded_history_drops_the_oldest_probe_first_and_keeps_the_latest_entry() {
        let env = crate::envelope::tests_support::idnow("e1", "s1");
        let mut job = DeliveryJob::first(&env, "crm", 0, 0, 86_400);
        let entry = |attempt: u32, probe: bool| AttemptLog {
            attempt,
            at_ms: u64::from(attempt),
            outcome: "http_503".into(),
            status_code: Some(503),
            latency_ms: 1,
            cycle: 1,
            probe,
        };
        for a in 1..=JOB_HISTORY_CAP as u32 {
            job.log(entry(a, a == 5));
        }
        assert_eq!(job.history_dropped, 0);
        // Full: the probe (attempt 5) goes first...
        job.log(entry(100, false));
        assert!(job.history.iter().all(|h| h.attempt != 5));
        // ...then the oldest attempt, but never the entry just made, even a probe.
        job.log(entry(101, true));
        assert_eq!(job.history.len(), JOB_HISTORY_CAP);
        assert_eq!(job.history.first().unwrap().attempt, 2);
        assert_eq!(job.history.last().unwrap().attempt, 101);
        assert_eq!(job.history_dropped, 2);
    }

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
        use crate::provider::Provider::Idnow;
        let e1 = EventKey::new(Idnow, Some("s"), "e1");
        let e2 = EventKey::new(Idnow, Some("s"), "e2");
        assert_eq!(delivery_id(&e1, "crm"), delivery_id(&e1, "crm"));
        assert_ne!(delivery_id(&e1, "crm"), delivery_id(&e1, "bi"));
        assert_ne!(delivery_id(&e1, "crm"), delivery_id(&e2, "crm"));
        assert_ne!(
            delivery_id(&e1, "crm"),
            replay_delivery_id(&e1, "crm", "r1")
        );
        assert!(delivery_id(&e1, "b").starts_with("dlv_"));
    }
}
