//! What the relay remembers about events, deliveries and destinations: one DynamoDB table (the
//! records table), partitioned by **session**, so "what happened to this session" is one `Query`.
//!
//! ```text
//! pk                               sk                               item
//! s#{provider}#{session_id}        ev#{n}#{event_id}                event: claim, type, status, archive
//! s#{provider}#{session_id}        ev#{n}#{event_id}#d#{dest}       delivery: status, attempts, history
//! s#{provider}#{session_id}        ev#{n}#{event_id}#r#{id}#{dest}  delivery of a replay
//! e#{provider}#{event_id}          ev#{n}#{event_id}...             the same, for an event without session
//! dest                             {destination id}                 circuit breaker / operator pause
//! ```
//!
//! `{n}` is the event id's length in bytes: with it, no event id (whatever characters it holds) is a
//! prefix of another event's sort key, so `begins_with(sk, ev#{n}#{event_id})` selects exactly one
//! event's items.
//!
//! Why this shape (ARCHITECTURE.md §3): the happy path writes two items per event and destination
//! (the claim and the delivery's outcome), the session's status is the furthest status among its
//! events (computed when read, so it cannot move backwards), and a session's timeline needs no index.
//!
//! The ports are [`EventStore`] (consumer), [`DeliveryStore`] (dispatcher), [`DestinationStates`]
//! (dispatcher and operators) and [`RecordReader`] (operators). `aws::dynamodb::DynamoRecords`
//! implements them on DynamoDB, [`memory::MemoryRecords`] in memory with the same conditional-write
//! semantics (fast unit tests; `tests/tests/records.rs` runs the same checks against both).

pub mod memory;

use crate::delivery::AttemptLog;
use crate::provider::Provider;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, thiserror::Error)]
#[error("store unavailable: {0}")]
pub struct StoreError(pub String);

/// The partition key of the destinations' state items.
pub const DESTINATIONS_PK: &str = "dest";

/// Attempts kept on a delivery item (the most recent ones). Every attempt is also logged
/// (`delivery attempt`), and a dead-lettered job carries its last `JOB_HISTORY_CAP` (32) entries.
pub const HISTORY_CAP: usize = 12;

/// Partition of an event's items: its session, or the event itself when it has no session.
pub fn partition_key(provider: Provider, session_id: Option<&str>, event_id: &str) -> String {
    match session_id {
        Some(session) => session_pk(provider, session),
        None => format!("e#{provider}#{event_id}"),
    }
}

pub fn session_pk(provider: Provider, session_id: &str) -> String {
    format!("s#{provider}#{session_id}")
}

pub fn event_sk(event_id: &str) -> String {
    format!("ev#{}#{event_id}", event_id.len())
}

/// Where an event's items live.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct EventKey {
    pub pk: String,
    /// The event item's sort key (`ev#{n}#{event_id}`); its deliveries' keys start with it.
    pub sk: String,
}

impl EventKey {
    pub fn new(provider: Provider, session_id: Option<&str>, event_id: &str) -> Self {
        Self {
            pk: partition_key(provider, session_id, event_id),
            sk: event_sk(event_id),
        }
    }

    pub fn of(envelope: &crate::envelope::Envelope) -> Self {
        Self::new(
            envelope.provider,
            envelope.session_id.as_deref(),
            &envelope.event_id,
        )
    }

    /// The key of this event's delivery to `destination` (or of a replay of it).
    pub fn delivery(&self, destination: &str, replay: Option<&str>) -> DeliveryKey {
        let sk = match replay {
            None => format!("{}#d#{destination}", self.sk),
            Some(id) => format!("{}#r#{id}#{destination}", self.sk),
        };
        DeliveryKey {
            pk: self.pk.clone(),
            sk,
            event_sk: self.sk.clone(),
        }
    }
}

impl std::fmt::Display for EventKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.pk, self.sk)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DeliveryKey {
    pub pk: String,
    pub sk: String,
    pub event_sk: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeliveryStatus {
    /// A replay the operator queued; no attempt made yet. (A first delivery has no item at all
    /// until its first attempt: absent means pending.)
    #[serde(rename = "PENDING")]
    Pending,
    /// At least one attempt failed; the next is scheduled (or held while the destination is paused).
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

// ------------------------------------------------------------------------------------------------
// Consumer: the claim
// ------------------------------------------------------------------------------------------------

/// The event item the consumer writes with one conditional put.
#[derive(Debug, Clone)]
pub struct EventClaim<'a> {
    pub key: &'a EventKey,
    pub event_id: &'a str,
    pub event_type: &'a str,
    /// Session status the event reports, with its rank (`provider::status`), if any.
    pub status: Option<(&'a str, u16)>,
    pub payload_hash: &'a str,
    /// The envelope's `intake_id`: which accepted request (and so which ingest message and its SQS
    /// copies) owns the event.
    pub intake_id: &'a str,
    pub received_at_ms: u64,
    pub now_ms: u64,
    pub lease_until_ms: u64,
    pub expires_at_secs: u64,
    /// Destinations the event is routed to (their ids, sorted).
    pub destinations: &'a [String],
    /// The archive object this batch writes (None: archive off).
    pub archive_object: Option<&'a str>,
}

/// What the store found when claiming.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimResult {
    Claimed,
    Existing(ExistingRecord),
}

/// The event item that made a claim fail (returned by the failed conditional put itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExistingRecord {
    pub payload_hash: String,
    pub intake_id: String,
    pub claimed_at_ms: u64,
    pub lease_until_ms: u64,
    pub expires_at_secs: u64,
    pub generation: u32,
    pub destinations: Vec<String>,
    /// The event's session was erased (`kyc-relay erase`): the item is a tombstone that refuses
    /// every later copy of the event (provider retries, redeliveries, redriven envelopes).
    pub erased: bool,
}

/// A repair takes the event over: a new lease, the next generation (jobs of older generations for
/// deliveries never attempted are dropped by the dispatcher) and the repair batch's archive object.
#[derive(Debug, Clone)]
pub struct RepairTakeover<'a> {
    pub key: &'a EventKey,
    pub intake_ids: &'a [&'a str],
    pub now_ms: u64,
    pub lease_until_ms: u64,
    pub archive_object: Option<&'a str>,
}

pub trait EventStore: Send + Sync {
    /// One conditional write: succeeds if no unexpired record exists, else returns that record.
    fn claim(
        &self,
        claim: &EventClaim<'_>,
    ) -> impl Future<Output = Result<ClaimResult, StoreError>> + Send;

    /// Takes over an interrupted event (conditional on the lease being over and the event being
    /// owned by one of `intake_ids`). `Ok(Some(generation))`: the new generation. `Ok(None)`:
    /// another invocation holds the lease (or the record changed owner).
    fn take_over(
        &self,
        takeover: &RepairTakeover<'_>,
    ) -> impl Future<Output = Result<Option<u32>, StoreError>> + Send;

    /// Destinations with a delivery item (attempted at least once), strongly consistent.
    fn attempted(
        &self,
        key: &EventKey,
    ) -> impl Future<Output = Result<Vec<String>, StoreError>> + Send;
}

// ------------------------------------------------------------------------------------------------
// Dispatcher: delivery state and attempts
// ------------------------------------------------------------------------------------------------

/// A delivery's stored state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryState {
    pub status: DeliveryStatus,
    pub attempts: u32,
    /// For a replay marker: the copy of the job the operator's latest run queued.
    pub token: Option<String>,
}

/// What the dispatcher reads before an attempt (one strongly consistent query of the event's items).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeliveryView {
    /// The event item exists (it expires with its deliveries).
    pub event_exists: bool,
    /// The event's generation (bumped by each repair).
    pub generation: u32,
    /// The delivery's item, if any attempt was recorded (or a replay marker written).
    pub delivery: Option<DeliveryState>,
    /// The event's item is an erasure tombstone: its jobs are dropped, never sent, recorded or
    /// dead-lettered with their webhook.
    pub erased: bool,
    /// A replay of this event to the same destination that was DELIVERED (its replay id): the
    /// destination has the event, so a redriven or retried job of the original delivery is not
    /// sent again (read by the same query, at no extra cost).
    pub delivered_by_replay: Option<String>,
}

impl DeliveryView {
    /// Notes another item of the event read with the view: a replay to the same destination as
    /// the delivery at `own_sk` that was DELIVERED.
    pub fn note_replay(&mut self, own_sk: &str, sk: &str, status: Option<&str>) {
        let own = match parse_sk(own_sk) {
            Some((_, SortKey::Delivery { destination, .. })) => destination,
            _ => return,
        };
        if let Some((
            _,
            SortKey::Delivery {
                destination,
                replay: Some(replay),
            },
        )) = parse_sk(sk)
            && destination == own
            && status == Some(DeliveryStatus::Delivered.as_str())
            && self.delivered_by_replay.is_none()
        {
            self.delivered_by_replay = Some(replay.to_string());
        }
    }
}

/// One attempt's outcome, written to the delivery's item.
#[derive(Debug, Clone)]
pub struct AttemptUpdate {
    pub event_id: String,
    pub destination: String,
    pub replay: Option<String>,
    pub attempt: u32,
    pub at_ms: u64,
    pub status: DeliveryStatus,
    pub outcome: String,
    pub status_code: Option<u16>,
    pub latency_ms: u64,
    /// Provider request to destination 2xx (DELIVERED only).
    pub lag_ms: Option<u64>,
    /// The delivery's most recent attempts (at most [`HISTORY_CAP`]), this one last.
    pub history: Vec<AttemptLog>,
    /// An operator redrove the job from the DLQ: a FAILED delivery may move again.
    pub redrive: bool,
    pub expires_at_secs: u64,
}

pub trait DeliveryStore: Send + Sync {
    /// The event's item and this delivery's item, strongly consistent.
    fn view(
        &self,
        key: &DeliveryKey,
    ) -> impl Future<Output = Result<DeliveryView, StoreError>> + Send;

    /// Records an attempt unless a later (or the same) attempt is already recorded or the delivery
    /// is final (FAILED may move in a redriven cycle). `Ok(false)`: not applied.
    fn record_attempt(
        &self,
        key: &DeliveryKey,
        update: &AttemptUpdate,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Writes a replay's PENDING marker carrying `token` (the copy of the job being queued), unless
    /// an attempt was already recorded. `Ok(false)`: the replay already made an attempt.
    fn mark_replay(
        &self,
        key: &DeliveryKey,
        marker: &ReplayMarker<'_>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
}

#[derive(Debug, Clone)]
pub struct ReplayMarker<'a> {
    pub event_id: &'a str,
    pub destination: &'a str,
    pub replay_id: &'a str,
    pub token: &'a str,
    pub at_ms: u64,
    pub expires_at_secs: u64,
}

// ------------------------------------------------------------------------------------------------
// Destinations: circuit breaker and operator pauses
// ------------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PausedBy {
    /// The circuit breaker; a probe resumes the destination when it answers again.
    Breaker,
    /// An operator (`kyc-relay destinations pause`); only an operator resumes it.
    Operator,
}

impl PausedBy {
    pub fn as_str(self) -> &'static str {
        match self {
            PausedBy::Breaker => "breaker",
            PausedBy::Operator => "operator",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "breaker" => Some(PausedBy::Breaker),
            "operator" => Some(PausedBy::Operator),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pause {
    pub by: PausedBy,
    pub reason: String,
    pub since_ms: u64,
}

/// A destination's shared state. Absent = healthy, never failed.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct DestinationState {
    pub paused: Option<Pause>,
    /// The consecutive failures that tripped the breaker (0 when not paused by it).
    pub failures: u32,
    pub last_failure: Option<String>,
    pub last_failure_at_ms: u64,
    /// First attempts skip the fast lane until then (the destination answered too slowly).
    pub slow_until_ms: u64,
    /// While paused by the breaker: when the next probe may run.
    pub probe_at_ms: u64,
    /// When the last pause ended (a probe delivered, or an operator resumed it). A dispatcher
    /// instance forgets a failure streak it began counting before then (`breaker::writes`).
    pub resumed_at_ms: u64,
    pub updated_at_ms: u64,
}

/// What one dispatcher invocation learnt about a destination, written once per batch and only when
/// something changes: the happy path costs no write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BreakerWrite {
    /// The dispatcher saw `failures` consecutive counted failures (the last one described): pause,
    /// unless already paused, with the first probe at `probe_at_ms`.
    Trip {
        failures: u32,
        last: String,
        probe_at_ms: u64,
    },
    /// A success while paused by the breaker (the probe passed): resume.
    Recovered,
    /// `410 Gone`: pause now.
    Gone { reason: String, probe_at_ms: u64 },
    /// Too slow for the fast lane until `until_ms`.
    Slow { until_ms: u64 },
}

pub trait DestinationStates: Send + Sync {
    /// Every destination's state (absent ones are healthy).
    fn load(
        &self,
    ) -> impl Future<Output = Result<BTreeMap<String, DestinationState>, StoreError>> + Send;

    /// Applies what a batch learnt. Returns the state after the write when it changed whether the
    /// destination is paused (so the caller can log and count the transition).
    fn apply(
        &self,
        destination: &str,
        write: &BreakerWrite,
        now_ms: u64,
    ) -> impl Future<Output = Result<Transition, StoreError>> + Send;

    /// Claims the next probe of a destination paused by the breaker: succeeds for one caller per
    /// probe interval. `Ok(true)`: this caller probes (the next probe is moved to `next_probe_ms`).
    fn claim_probe(
        &self,
        destination: &str,
        now_ms: u64,
        next_probe_ms: u64,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Operator pause (kept until [`Self::resume`]).
    fn pause(
        &self,
        destination: &str,
        reason: &str,
        now_ms: u64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Ends any pause and the failure streak.
    fn resume(
        &self,
        destination: &str,
        now_ms: u64,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
}

/// Whether a write paused or resumed the destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    None,
    Paused,
    Resumed,
}

// ------------------------------------------------------------------------------------------------
// Operators: reading records
// ------------------------------------------------------------------------------------------------

/// An event item as read back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EventRecord {
    pub key: EventKey,
    pub event_id: String,
    pub event_type: String,
    pub status: Option<String>,
    pub rank: Option<u16>,
    pub payload_hash: String,
    pub intake_id: String,
    pub received_at_ms: u64,
    pub claimed_at_ms: u64,
    pub expires_at_secs: u64,
    pub generation: u32,
    pub destinations: Vec<String>,
    pub archive: Vec<String>,
}

/// A delivery item as read back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeliveryRecord {
    pub destination: String,
    pub replay: Option<String>,
    pub status: DeliveryStatus,
    pub attempts: u32,
    pub last_attempt_at_ms: u64,
    pub last_outcome: Option<String>,
    pub last_status_code: Option<u16>,
    pub lag_ms: Option<u64>,
    pub history: Vec<AttemptLog>,
}

/// An event with its deliveries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EventWithDeliveries {
    pub event: EventRecord,
    pub deliveries: Vec<DeliveryRecord>,
}

pub trait RecordReader: Send + Sync {
    /// Every event of a partition (a session, or a lone event) with its deliveries.
    fn partition(
        &self,
        pk: &str,
    ) -> impl Future<Output = Result<Vec<EventWithDeliveries>, StoreError>> + Send;

    /// One event with its deliveries.
    fn event(
        &self,
        key: &EventKey,
    ) -> impl Future<Output = Result<Option<EventWithDeliveries>, StoreError>> + Send;

    /// Erases a partition: deletes every delivery item and replaces every event item (expired ones
    /// included) with a **tombstone** that keeps only the key, the erasure time and an expiry of
    /// `now + ` the record's own lifetime (`expires_at - claimed`, which the functions check at cold
    /// start to outlive every way an event comes back). A tombstone is not an event for
    /// [`Self::partition`] or [`Self::event`]; a claim finds it and refuses the event, the dispatcher
    /// drops the event's jobs. Returns how many items were deleted or replaced.
    fn erase_partition(
        &self,
        pk: &str,
        now_ms: u64,
    ) -> impl Future<Output = Result<usize, StoreError>> + Send;

    /// Every archive object the partition's event items name, sorted, **expired items included**:
    /// DynamoDB's TTL deletes items days after `expires_at`, and erasure must rewrite the objects of
    /// every item it is about to delete.
    fn archive_objects(
        &self,
        pk: &str,
    ) -> impl Future<Output = Result<Vec<String>, StoreError>> + Send;
}

/// A tombstone's expiry: `now` plus the record's own lifetime (at least the record's expiry), so it
/// outlives every copy of the event the record would have refused.
pub fn tombstone_expiry(expires_at_secs: u64, claimed_at_ms: u64, now_ms: u64) -> u64 {
    let lifetime = expires_at_secs.saturating_sub(claimed_at_ms / 1000);
    (now_ms / 1000 + lifetime).max(expires_at_secs)
}

/// The session's status as its events tell it: the furthest (highest-ranked) status, and of two
/// events of the same rank the one received first (so a second terminal status never replaces the
/// first). Computed when read, so it cannot move backwards whatever order events arrive in.
pub fn session_status(events: &[EventRecord]) -> Option<&EventRecord> {
    events
        .iter()
        .filter(|e| e.rank.is_some() && e.status.is_some())
        .min_by(|a, b| {
            b.rank
                .cmp(&a.rank)
                .then(a.received_at_ms.cmp(&b.received_at_ms))
                .then(a.event_id.cmp(&b.event_id))
        })
}

/// Which of an event's items a sort key names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SortKey<'a> {
    Event,
    Delivery {
        destination: &'a str,
        replay: Option<&'a str>,
    },
}

/// Splits a records-table sort key into the event id and the item it names.
pub fn parse_sk(sk: &str) -> Option<(&str, SortKey<'_>)> {
    let rest = sk.strip_prefix("ev#")?;
    let (len, rest) = rest.split_once('#')?;
    let len: usize = len.parse().ok()?;
    if rest.len() < len || !rest.is_char_boundary(len) {
        return None;
    }
    let (event_id, tail) = rest.split_at(len);
    if tail.is_empty() {
        return Some((event_id, SortKey::Event));
    }
    if let Some(dest) = tail.strip_prefix("#d#") {
        return Some((
            event_id,
            SortKey::Delivery {
                destination: dest,
                replay: None,
            },
        ));
    }
    let (replay, dest) = tail.strip_prefix("#r#")?.split_once('#')?;
    Some((
        event_id,
        SortKey::Delivery {
            destination: dest,
            replay: Some(replay),
        },
    ))
}

// Shared handles (tests keep one to inspect what the code under test wrote).
impl<T: EventStore> EventStore for std::sync::Arc<T> {
    fn claim(
        &self,
        claim: &EventClaim<'_>,
    ) -> impl Future<Output = Result<ClaimResult, StoreError>> + Send {
        (**self).claim(claim)
    }

    fn take_over(
        &self,
        takeover: &RepairTakeover<'_>,
    ) -> impl Future<Output = Result<Option<u32>, StoreError>> + Send {
        (**self).take_over(takeover)
    }

    fn attempted(
        &self,
        key: &EventKey,
    ) -> impl Future<Output = Result<Vec<String>, StoreError>> + Send {
        (**self).attempted(key)
    }
}

impl<T: DeliveryStore> DeliveryStore for std::sync::Arc<T> {
    fn view(
        &self,
        key: &DeliveryKey,
    ) -> impl Future<Output = Result<DeliveryView, StoreError>> + Send {
        (**self).view(key)
    }

    fn record_attempt(
        &self,
        key: &DeliveryKey,
        update: &AttemptUpdate,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        (**self).record_attempt(key, update)
    }

    fn mark_replay(
        &self,
        key: &DeliveryKey,
        marker: &ReplayMarker<'_>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        (**self).mark_replay(key, marker)
    }
}

impl<T: DestinationStates> DestinationStates for std::sync::Arc<T> {
    fn load(
        &self,
    ) -> impl Future<Output = Result<BTreeMap<String, DestinationState>, StoreError>> + Send {
        (**self).load()
    }

    fn apply(
        &self,
        destination: &str,
        write: &BreakerWrite,
        now_ms: u64,
    ) -> impl Future<Output = Result<Transition, StoreError>> + Send {
        (**self).apply(destination, write, now_ms)
    }

    fn claim_probe(
        &self,
        destination: &str,
        now_ms: u64,
        next_probe_ms: u64,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        (**self).claim_probe(destination, now_ms, next_probe_ms)
    }

    fn pause(
        &self,
        destination: &str,
        reason: &str,
        now_ms: u64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        (**self).pause(destination, reason, now_ms)
    }

    fn resume(
        &self,
        destination: &str,
        now_ms: u64,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        (**self).resume(destination, now_ms)
    }
}

impl<T: RecordReader> RecordReader for std::sync::Arc<T> {
    fn partition(
        &self,
        pk: &str,
    ) -> impl Future<Output = Result<Vec<EventWithDeliveries>, StoreError>> + Send {
        (**self).partition(pk)
    }

    fn event(
        &self,
        key: &EventKey,
    ) -> impl Future<Output = Result<Option<EventWithDeliveries>, StoreError>> + Send {
        (**self).event(key)
    }

    fn erase_partition(
        &self,
        pk: &str,
        now_ms: u64,
    ) -> impl Future<Output = Result<usize, StoreError>> + Send {
        (**self).erase_partition(pk, now_ms)
    }

    fn archive_objects(
        &self,
        pk: &str,
    ) -> impl Future<Output = Result<Vec<String>, StoreError>> + Send {
        (**self).archive_objects(pk)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_event_id_is_a_prefix_of_another_events_keys() {
        // Without the length, "a#d#x" would look like event "a"'s delivery to "x".
        let a = EventKey::new(Provider::Idnow, Some("s"), "a");
        let tricky = EventKey::new(Provider::Idnow, Some("s"), "a#d#x");
        assert!(!tricky.sk.starts_with(&a.sk));
        assert!(!a.delivery("x", None).sk.starts_with(&tricky.sk));
        assert_eq!(parse_sk(&tricky.sk), Some(("a#d#x", SortKey::Event)));
        assert_eq!(
            parse_sk(&a.delivery("x", None).sk),
            Some((
                "a",
                SortKey::Delivery {
                    destination: "x",
                    replay: None
                }
            ))
        );
        assert_eq!(
            parse_sk(&a.delivery("x", Some("r1")).sk),
            Some((
                "a",
                SortKey::Delivery {
                    destination: "x",
                    replay: Some("r1")
                }
            ))
        );
        // Multi-byte ids: the length counts bytes.
        let e = EventKey::new(Provider::Idnow, Some("s"), "é#d#x");
        assert_eq!(parse_sk(&e.sk), Some(("é#d#x", SortKey::Event)));
        assert_eq!(parse_sk("ev#9#short"), None);
        assert_eq!(parse_sk("nope"), None);
    }

    #[test]
    fn events_without_a_session_have_their_own_partition() {
        let lone = EventKey::new(Provider::Incode, None, "inc_1");
        let in_session = EventKey::new(Provider::Incode, Some("inc_1"), "inc_1");
        assert_ne!(lone.pk, in_session.pk);
        assert_eq!(lone.pk, "e#incode#inc_1");
        assert_eq!(in_session.pk, "s#incode#inc_1");
    }

    fn rec(id: &str, status: &str, rank: u16, at: u64) -> EventRecord {
        EventRecord {
            key: EventKey::new(Provider::Idnow, Some("s"), id),
            event_id: id.into(),
            event_type: "session.x".into(),
            status: Some(status.into()),
            rank: Some(rank),
            payload_hash: String::new(),
            intake_id: String::new(),
            received_at_ms: at,
            claimed_at_ms: at,
            expires_at_secs: 0,
            generation: 0,
            destinations: vec![],
            archive: vec![],
        }
    }

    #[test]
    fn the_session_status_is_the_furthest_and_the_first_terminal_stays() {
        // Arrival order does not matter: the highest rank wins.
        let events = vec![
            rec("3", "COMPLETED", 1000, 30),
            rec("1", "CREATED", 10, 50),
            rec("2", "STARTED", 20, 40),
        ];
        assert_eq!(session_status(&events).unwrap().event_id, "3");
        // Two terminal statuses: the first received stays.
        let events = vec![
            rec("a", "ABORTED", 1000, 20),
            rec("b", "COMPLETED", 1000, 10),
        ];
        assert_eq!(session_status(&events).unwrap().event_id, "b");
        assert!(session_status(&[]).is_none());
    }
}
