//! The consumer's work: for each envelope from the ingest queue, claim the event (idempotency),
//! archive it, and enqueue one delivery job per subscribed destination. See
//! [`crate::idempotency`] for why this is exactly-once at one write unit per event.
//!
//! Records of a batch are independent, so they are claimed concurrently; the batch's claimed events
//! then go into one archive object, and their delivery jobs out together in `SendMessageBatch`
//! requests of up to 10. The result names the records that must come back (SQS partial batch
//! response). Order per record: claim, archive, jobs; a crash or failure between any two leaves the
//! record to come back and repair (its intake owns the event).

use crate::archive::{self, Archive};
use crate::clock::Clock;
use crate::config::{ConfigError, Env};
use crate::delivery::{DeliveryJob, DeliveryQueue, Lane, Scheduled};
use crate::destination::Destinations;
use crate::envelope::Envelope;
use crate::idempotency::{ClaimOutcome, decide};
use crate::provider::status;
use crate::records::{ClaimResult, EventClaim, EventKey, EventStore, RepairTakeover};
use crate::telemetry::Counters;
use futures_util::future::join_all;
use std::collections::HashMap;
use std::sync::Arc;

pub struct IngestRecord {
    pub message_id: String,
    pub body: String,
}

/// How long an event's records live, checked against every path that can bring the event back
/// (ARCHITECTURE.md §2, "late arrivals").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordLifetime {
    pub ttl_secs: u64,
}

/// Longest a provider keeps retrying one webhook, with margin (Incode: 32 min; IDnow: about an hour).
pub const PROVIDER_RETRY_WINDOW_SECS: u64 = 86_400;
const DAY: u64 = 86_400;

impl RecordLifetime {
    /// `RECORD_TTL_SECONDS` (default 30 days), checked against the queues' retention (the values
    /// template.yaml gives the queues, passed to the functions) and the destinations' longest retry
    /// chains: the records must outlive
    /// - any copy of an ingest message: `max(INGEST_RETENTION_SECONDS, INGEST_DLQ_RETENTION_SECONDS)`
    ///   after the provider's last retry ([`PROVIDER_RETRY_WINDOW_SECS`]);
    /// - any delivery job: the longest retry chain, held at most `MAX_HOLD_SECONDS` while its
    ///   destination is paused, then `DELIVERY_DLQ_RETENTION_SECONDS` in the DLQ, and one redriven
    ///   cycle (chain and hold again).
    pub fn from_env(env: &Env, destinations: &Destinations) -> Result<Self, ConfigError> {
        let ttl_secs: u64 = env.parse_or("RECORD_TTL_SECONDS", 30 * DAY)?;
        let ingest: u64 = env.parse_or("INGEST_RETENTION_SECONDS", 4 * DAY)?;
        let ingest_dlq: u64 = env.parse_or("INGEST_DLQ_RETENTION_SECONDS", 14 * DAY)?;
        let delivery_dlq: u64 = env.parse_or("DELIVERY_DLQ_RETENTION_SECONDS", 14 * DAY)?;
        let max_hold: u64 = env.parse_or("MAX_HOLD_SECONDS", 7 * DAY)?;
        let ingest_need = ingest.max(ingest_dlq) + PROVIDER_RETRY_WINDOW_SECS;
        if ttl_secs < ingest_need {
            return Err(ConfigError::new(
                "RECORD_TTL_SECONDS",
                format!(
                    "{ttl_secs} s is shorter than an ingest message can live ({ingest_need} s: the ingest queue's or its DLQ's retention plus the providers' retry window); a redrive would be processed as a new event"
                ),
            ));
        }
        if let Some((id, chain)) = destinations.longest_chain() {
            let chain = chain.as_secs().saturating_add(1);
            let delivery_need = 2 * chain + 2 * max_hold + delivery_dlq;
            if ttl_secs < delivery_need {
                return Err(ConfigError::new(
                    "RECORD_TTL_SECONDS",
                    format!(
                        "{ttl_secs} s is shorter than a delivery can live ({delivery_need} s: twice destination {id:?}'s retry chain of {chain} s and MAX_HOLD_SECONDS, plus the delivery DLQ's retention); raise it or shorten the chain"
                    ),
                ));
            }
        }
        Ok(Self { ttl_secs })
    }

    /// Whether an envelope received at `received_at_ms` can still be deduplicated at `now_ms`: any
    /// earlier record of the same event (claimed at the earliest a provider retry window before) is
    /// then still live. A later one is refused rather than processed as new.
    pub fn accepts(&self, received_at_ms: u64, now_ms: u64) -> bool {
        let window_ms = self.ttl_secs.saturating_sub(PROVIDER_RETRY_WINDOW_SECS) * 1000;
        now_ms < received_at_ms.saturating_add(window_ms)
    }
}

fn parse_envelope(record: &IngestRecord) -> Option<Envelope> {
    serde_json::from_str(&record.body)
        .inspect_err(|e| {
            // serde's message may quote the offending value: log only where and what kind.
            tracing::error!(
                message_id = record.message_id,
                error = ?e.classify(),
                line = e.line(),
                column = e.column(),
                "malformed envelope"
            );
        })
        .ok()
}

pub struct Processor<S, Q, A> {
    pub store: S,
    pub queue: Q,
    pub archive: A,
    pub destinations: Destinations,
    pub clock: Arc<dyn Clock>,
    pub lifetime: RecordLifetime,
}

/// What became of an event before its archive write and jobs.
enum Step {
    Fail,
    Done,
    /// Archive the envelope (if the archive is on), then send these jobs.
    Apply(Vec<DeliveryJob>),
}

/// The records of one event in a batch (an event can arrive more than once in a batch: a provider
/// retry beside an SQS copy, say). They are processed once, and share the outcome.
struct Group {
    first: usize,
    members: Vec<usize>,
}

impl<S: EventStore, Q: DeliveryQueue, A: Archive> Processor<S, Q, A> {
    /// Processes a batch; returns the message ids to report as batch item failures.
    /// `deadline_ms`: the invocation's deadline, which bounds the claims' lease. `batch_id`: names
    /// the batch's archive object (Lambda's request id).
    pub async fn process_batch(
        &self,
        records: &[IngestRecord],
        deadline_ms: u64,
        batch_id: &str,
    ) -> Vec<String> {
        let counters = &Counters::default();
        let now_ms = self.clock.now_ms();
        let parsed: Vec<Option<Envelope>> = records.iter().map(parse_envelope).collect();
        let mut failed: Vec<bool> = parsed.iter().map(Option::is_none).collect();
        counters.add(
            "MalformedEnvelopes",
            failed.iter().filter(|f| **f).count() as u64,
        );

        let mut groups: Vec<Group> = Vec::new();
        let mut by_key: HashMap<(EventKey, &str), usize> = HashMap::new();
        for (i, envelope) in parsed.iter().enumerate() {
            let Some(e) = envelope else { continue };
            if !self.lifetime.accepts(e.received_at_ms, now_ms) {
                // Left as acknowledged: processing it could repeat an event whose record expired.
                counters.add("LateEnvelopes", 1);
                tracing::error!(
                    message_id = records[i].message_id,
                    event_id = e.event_id,
                    received_at_ms = e.received_at_ms,
                    "envelope older than the records' lifetime: refused, not processed (replay it from the archive if it must be delivered)"
                );
                continue;
            }
            match by_key.entry((EventKey::of(e), e.payload_hash.as_str())) {
                std::collections::hash_map::Entry::Occupied(g) => {
                    counters.add("DuplicatesInBatch", 1);
                    groups[*g.get()].members.push(i);
                }
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(groups.len());
                    groups.push(Group {
                        first: i,
                        members: vec![i],
                    });
                }
            }
        }

        let object = self
            .archive
            .enabled()
            .then(|| archive::object_key(now_ms, batch_id));
        let steps: Vec<Step> = join_all(groups.iter().map(|g| {
            let envelope = parsed[g.first].as_ref().expect("grouped records parsed");
            let intakes: Vec<&str> = g
                .members
                .iter()
                .filter_map(|&m| parsed[m].as_ref().map(|e| e.intake_id.as_str()))
                .collect();
            self.process_event(
                envelope,
                intakes,
                now_ms,
                deadline_ms,
                object.as_deref(),
                counters,
            )
        }))
        .await;

        // Archive every event that is being applied, in one object, before any of its jobs go out.
        let to_apply: Vec<(usize, Vec<DeliveryJob>)> = groups
            .iter()
            .zip(steps)
            .enumerate()
            .filter_map(|(gi, (g, step))| match step {
                Step::Fail => {
                    for &m in &g.members {
                        failed[m] = true;
                    }
                    None
                }
                Step::Done => None,
                Step::Apply(jobs) => Some((gi, jobs)),
            })
            .collect();
        let mut applied = to_apply;
        if let (Some(object), false) = (&object, applied.is_empty()) {
            let envelopes: Vec<&Envelope> = applied
                .iter()
                .map(|(gi, _)| parsed[groups[*gi].first].as_ref().expect("parsed"))
                .collect();
            let result = match archive::encode(&envelopes) {
                Ok(body) => self.archive.put(object, body).await,
                Err(e) => Err(e),
            };
            if let Err(e) = result {
                // Nothing of these events goes out before they are archived: they come back and
                // repair (a new object, appended to their records).
                tracing::error!(object, error = %e, events = applied.len(), "archive write failed; the events will be redelivered");
                counters.add("ArchiveFailures", 1);
                for (gi, _) in &applied {
                    for &m in &groups[*gi].members {
                        failed[m] = true;
                    }
                }
                applied.clear();
            } else {
                counters.add("Archived", applied.len() as u64);
            }
        }

        let mut owners = Vec::new();
        let mut scheduled = Vec::new();
        for (gi, jobs) in applied {
            for job in jobs {
                owners.push(gi);
                scheduled.push(Scheduled {
                    job,
                    delay_secs: 0,
                    lane: Lane::Fast,
                });
            }
        }
        if !scheduled.is_empty() {
            counters.add("JobsSent", scheduled.len() as u64);
            let results = self.queue.schedule(scheduled).await;
            for (gi, result) in owners.into_iter().zip(results) {
                if let Err(e) = result {
                    let g = &groups[gi];
                    tracing::error!(message_id = records[g.first].message_id, error = %e, "delivery job not enqueued; the record will be redelivered");
                    for &m in &g.members {
                        failed[m] = true;
                    }
                }
            }
        }

        let failed: Vec<String> = records
            .iter()
            .zip(failed)
            .filter(|(_, f)| *f)
            .map(|(r, _)| r.message_id.clone())
            .collect();
        counters.add("RecordsFailed", failed.len() as u64);
        counters.emit("consumer");
        failed
    }

    async fn process_event(
        &self,
        envelope: &Envelope,
        intakes: Vec<&str>,
        now_ms: u64,
        deadline_ms: u64,
        object: Option<&str>,
        counters: &Counters,
    ) -> Step {
        // The key holds the session id: logs name the event by provider and event id only.
        let key = EventKey::of(envelope);
        let mut destinations: Vec<String> = self
            .destinations
            .matching(envelope)
            .map(|d| d.id.clone())
            .collect();
        destinations.sort();
        let status = envelope
            .status
            .as_deref()
            .and_then(|s| status::rank(envelope.provider, s).map(|rank| (s, rank)));
        let lease_until_ms = deadline_ms.max(now_ms);
        let expires_at_secs = now_ms / 1000 + self.lifetime.ttl_secs;
        let claim = EventClaim {
            key: &key,
            event_id: &envelope.event_id,
            event_type: &envelope.event_type,
            status,
            payload_hash: &envelope.payload_hash,
            intake_id: &envelope.intake_id,
            received_at_ms: envelope.received_at_ms,
            now_ms,
            lease_until_ms,
            expires_at_secs,
            destinations: &destinations,
            archive_object: object,
        };
        let existing = match self.store.claim(&claim).await {
            Ok(ClaimResult::Claimed) => {
                counters.add("EventsProcessed", 1);
                tracing::info!(
                    provider = %envelope.provider, event_id = envelope.event_id,
                    event_type = envelope.event_type,
                    destinations = destinations.len(),
                    trace_id = envelope.trace_id(),
                    "event claimed"
                );
                return Step::Apply(self.jobs(envelope, &destinations, now_ms, 0, expires_at_secs));
            }
            Ok(ClaimResult::Existing(existing)) if existing.erased => {
                // The session was erased: a provider retry, a redelivery or a redriven copy of one
                // of its events. Acknowledged, counted, never processed again.
                counters.add("ErasedEvents", 1);
                tracing::info!(provider = %envelope.provider, event_id = envelope.event_id, "event of an erased session: refused");
                return Step::Done;
            }
            Ok(ClaimResult::Existing(existing)) => existing,
            Err(e) => {
                tracing::error!(provider = %envelope.provider, event_id = envelope.event_id, error = %e, "claim failed");
                return Step::Fail;
            }
        };
        match decide(&envelope.payload_hash, now_ms, &intakes, &existing) {
            ClaimOutcome::Claimed => unreachable!("decide() never answers Claimed"),
            ClaimOutcome::Duplicate => {
                counters.add("Duplicates", 1);
                tracing::info!(provider = %envelope.provider, event_id = envelope.event_id, "duplicate event: owned by another request");
                Step::Done
            }
            ClaimOutcome::Conflict { stored_hash } => {
                counters.add("PayloadConflicts", 1);
                tracing::warn!(
                    provider = %envelope.provider, event_id = envelope.event_id,
                    stored_hash,
                    received_hash = envelope.payload_hash,
                    "payload conflict: same event id, different content; not processed"
                );
                Step::Done
            }
            ClaimOutcome::InProgress => {
                counters.add("ConcurrentDuplicates", 1);
                tracing::info!(provider = %envelope.provider, event_id = envelope.event_id, "event in progress elsewhere; retry later");
                Step::Fail
            }
            ClaimOutcome::Repair => {
                let takeover = RepairTakeover {
                    key: &key,
                    intake_ids: &intakes,
                    now_ms,
                    lease_until_ms,
                    archive_object: object,
                };
                let generation = match self.store.take_over(&takeover).await {
                    Ok(Some(g)) => g,
                    Ok(None) => {
                        counters.add("ConcurrentDuplicates", 1);
                        tracing::info!(provider = %envelope.provider, event_id = envelope.event_id, "repair already in progress elsewhere; retry later");
                        return Step::Fail;
                    }
                    Err(e) => {
                        tracing::error!(provider = %envelope.provider, event_id = envelope.event_id, error = %e, "repair takeover failed");
                        return Step::Fail;
                    }
                };
                let attempted = match self.store.attempted(&key).await {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::error!(provider = %envelope.provider, event_id = envelope.event_id, error = %e, "cannot read deliveries for repair");
                        return Step::Fail;
                    }
                };
                // The destinations the event was routed to when claimed (the configuration may
                // have changed since), minus those already attempted.
                let pending: Vec<String> = existing
                    .destinations
                    .iter()
                    .filter(|d| !attempted.contains(d))
                    .cloned()
                    .collect();
                counters.add("Repairs", 1);
                tracing::info!(
                    provider = %envelope.provider, event_id = envelope.event_id,
                    generation,
                    pending = pending.len(),
                    "repairing an interrupted event: archiving it again and re-sending its unattempted deliveries"
                );
                Step::Apply(self.jobs(
                    envelope,
                    &pending,
                    now_ms,
                    generation,
                    existing.expires_at_secs,
                ))
            }
        }
    }

    fn jobs(
        &self,
        envelope: &Envelope,
        destinations: &[String],
        now_ms: u64,
        generation: u32,
        expires_at_secs: u64,
    ) -> Vec<DeliveryJob> {
        destinations
            .iter()
            .map(|d| DeliveryJob::first(envelope, d, now_ms, generation, expires_at_secs))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::MemoryArchive;
    use crate::clock::ManualClock;
    use crate::delivery::memory::MemoryDeliveryQueue;
    use crate::envelope::tests_support::{idnow, idnow_with};
    use crate::records::memory::MemoryRecords;
    use crate::records::{
        AttemptUpdate, DeliveryStatus, DeliveryStore, RecordReader, session_status,
    };
    use std::sync::atomic::Ordering;

    const T0: u64 = 1_800_000_000_000;
    const DESTINATIONS: &str = r#"{"destinations": [
      {"id": "crm", "url": "https://crm.example/h", "retry_policy": "idnow"},
      {"id": "bi", "url": "https://bi.example/h", "retry_policy": "incode",
       "providers": ["idnow"], "event_types": ["session.completed"]}
    ]}"#;

    type Consumer = Processor<Arc<MemoryRecords>, Arc<MemoryDeliveryQueue>, Arc<MemoryArchive>>;

    struct Rig {
        consumer: Consumer,
        store: Arc<MemoryRecords>,
        queue: Arc<MemoryDeliveryQueue>,
        archive: Arc<MemoryArchive>,
        clock: ManualClock,
    }

    fn rig() -> Rig {
        let clock = ManualClock::at_ms(T0);
        let store = Arc::new(MemoryRecords::new(Arc::new(clock.clone())));
        let queue = Arc::new(MemoryDeliveryQueue::default());
        let archive = Arc::new(MemoryArchive::default());
        Rig {
            consumer: Processor {
                store: store.clone(),
                queue: queue.clone(),
                archive: archive.clone(),
                destinations: Destinations::parse(DESTINATIONS).unwrap(),
                clock: Arc::new(clock.clone()),
                lifetime: RecordLifetime {
                    ttl_secs: 30 * 86_400,
                },
            },
            store,
            queue,
            archive,
            clock,
        }
    }

    fn record(id: &str, e: &Envelope) -> IngestRecord {
        IngestRecord {
            message_id: id.into(),
            body: serde_json::to_string(e).unwrap(),
        }
    }

    /// The same accepted request's envelope (an SQS copy): same intake id.
    fn fresh(e: &Envelope) -> Envelope {
        let mut e = e.clone();
        e.received_at_ms = T0;
        e
    }

    /// A provider retry of the same event: another request, another intake id.
    fn retry_of(e: &Envelope) -> Envelope {
        let mut r = e.clone();
        r.intake_id = crate::envelope::new_intake_id();
        r
    }

    impl Rig {
        async fn batch(&self, records: &[IngestRecord]) -> Vec<String> {
            self.consumer
                .process_batch(records, self.clock.now_ms() + 30_000, "batch")
                .await
        }

        fn archived_events(&self) -> Vec<String> {
            self.archive
                .objects()
                .values()
                .flat_map(|body| crate::archive::decode(body).0)
                .map(|e| e.event_id)
                .collect()
        }
    }

    #[tokio::test]
    async fn events_of_an_erased_session_are_refused_for_as_long_as_copies_can_arrive() {
        use crate::records::RecordReader;
        let r = rig();
        let e = fresh(&idnow("e1", "s1"));
        assert!(r.batch(&[record("m1", &e)]).await.is_empty());
        r.queue.take();
        let archived = r.archive.objects().len();
        r.store
            .erase_partition(&EventKey::of(&e).pk, r.clock.now_ms())
            .await
            .unwrap();
        // A provider retry, and an SQS copy of the original message: acknowledged, nothing
        // claimed, archived or sent; still so four weeks later.
        r.clock.advance_ms(28 * 86_400_000);
        let calls = r.store.calls.load(Ordering::Relaxed);
        assert!(
            r.batch(&[record("m2", &retry_of(&e)), record("m3", &e)])
                .await
                .is_empty()
        );
        assert_eq!(
            r.store.calls.load(Ordering::Relaxed) - calls,
            1,
            "one claim"
        );
        assert!(r.queue.take().is_empty());
        assert_eq!(r.archive.objects().len(), archived);
        assert!(r.store.event(&EventKey::of(&e)).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_new_event_is_claimed_archived_and_fanned_out_in_one_write() {
        let r = rig();
        let e = fresh(&idnow("e1", "s1"));
        assert!(r.batch(&[record("m1", &e)]).await.is_empty());
        // One store call: the claim. No session write: the status is read from the events.
        assert_eq!(r.store.calls.load(Ordering::Relaxed), 1);
        let jobs = r.queue.take();
        let mut dests: Vec<_> = jobs.iter().map(|s| s.job.destination_id.as_str()).collect();
        dests.sort();
        assert_eq!(dests, ["bi", "crm"]);
        assert!(
            jobs.iter()
                .all(|s| s.lane == Lane::Fast && s.job.generation == 0)
        );
        assert_eq!(r.archived_events(), ["e1"]);
        let stored = r.store.event(&EventKey::of(&e)).await.unwrap().unwrap();
        assert_eq!(stored.event.archive.len(), 1);
        assert_eq!(stored.event.destinations, ["bi", "crm"]);
        // The archive keeps the raw body byte for byte.
        let body = r.archive.objects().values().next().unwrap().clone();
        assert_eq!(crate::archive::decode(&body).0[0].raw_body, e.raw_body);
    }

    #[tokio::test]
    async fn duplicates_in_a_batch_and_provider_retries_are_acknowledged_once_for_one_call() {
        let r = rig();
        let e = fresh(&idnow("e1", "s1"));
        let retry = retry_of(&e);
        assert!(
            r.batch(&[record("m1", &e), record("m2", &retry)])
                .await
                .is_empty()
        );
        assert_eq!(r.queue.take().len(), 2);
        // Later, with both deliveries still pending in a backlog: a provider retry is acknowledged
        // at once (never deferred towards the DLQ) and sends nothing again.
        let calls = r.store.calls.load(Ordering::Relaxed);
        r.clock.advance_ms(3_600_000);
        assert!(r.batch(&[record("m3", &retry_of(&e))]).await.is_empty());
        assert!(r.queue.is_empty());
        assert_eq!(r.store.calls.load(Ordering::Relaxed) - calls, 1);
        assert_eq!(r.archived_events(), ["e1"]);
    }

    #[tokio::test]
    async fn a_copy_of_the_owner_waits_for_the_lease_then_repairs_only_what_was_not_attempted() {
        let r = rig();
        let e = fresh(&idnow("e1", "s1"));
        assert!(r.batch(&[record("m1", &e)]).await.is_empty());
        let first = r.queue.take();
        // crm was attempted by the dispatcher; bi still waits in the queue.
        let crm = first
            .iter()
            .find(|s| s.job.destination_id == "crm")
            .unwrap();
        r.store
            .record_attempt(
                &crm.job.delivery_key(),
                &AttemptUpdate {
                    event_id: "e1".into(),
                    destination: "crm".into(),
                    replay: None,
                    attempt: 1,
                    at_ms: T0,
                    status: DeliveryStatus::Delivered,
                    outcome: "http_200".into(),
                    status_code: Some(200),
                    latency_ms: 1,
                    lag_ms: Some(1),
                    history: vec![],
                    redrive: false,
                    expires_at_secs: crm.job.expires_at_secs,
                },
            )
            .await
            .unwrap();
        // An SQS copy of m1 while the first invocation still holds the lease: later.
        assert_eq!(r.batch(&[record("m1", &e)]).await, ["m1"]);
        // After the lease: repair. Only bi is sent again, under generation 1.
        r.clock.advance_ms(60_000);
        assert!(r.batch(&[record("m1", &e)]).await.is_empty());
        let resent = r.queue.take();
        assert_eq!(resent.len(), 1);
        assert_eq!(resent[0].job.destination_id, "bi");
        assert_eq!(resent[0].job.generation, 1);
        let stored = r.store.event(&EventKey::of(&e)).await.unwrap().unwrap();
        assert_eq!(stored.event.generation, 1);
        assert_eq!(stored.event.archive.len(), 2, "every copy is listed");
    }

    #[tokio::test]
    async fn a_crash_after_the_claim_is_repaired_by_the_redelivered_message() {
        let r = rig();
        let e = fresh(&idnow("e1", "s1"));
        // The archive is down: claimed, not archived, nothing sent, record back to the queue.
        r.archive.fail_puts.store(true, Ordering::SeqCst);
        assert_eq!(r.batch(&[record("m1", &e)]).await, ["m1"]);
        assert!(r.queue.is_empty());
        assert!(r.archive.objects().is_empty());
        // The same message after the visibility timeout, the archive back.
        r.archive.fail_puts.store(false, Ordering::SeqCst);
        r.clock.advance_ms(180_000);
        assert!(r.batch(&[record("m1", &e)]).await.is_empty());
        assert_eq!(r.queue.take().len(), 2);
        assert_eq!(r.archived_events(), ["e1"]);
        // The queue is down: the same again.
        let e2 = fresh(&idnow("e2", "s1"));
        r.queue.fail_sends.store(true, Ordering::SeqCst);
        assert_eq!(r.batch(&[record("m2", &e2)]).await, ["m2"]);
        r.queue.fail_sends.store(false, Ordering::SeqCst);
        r.clock.advance_ms(180_000);
        assert!(r.batch(&[record("m2", &e2)]).await.is_empty());
        assert_eq!(r.queue.take().len(), 2);
    }

    #[tokio::test]
    async fn conflicts_malformed_and_late_envelopes_are_not_processed() {
        let r = rig();
        let e = fresh(&idnow("e1", "s1"));
        assert!(r.batch(&[record("m1", &e)]).await.is_empty());
        r.queue.take();
        let mut other = retry_of(&e);
        other.payload_hash = "different".into();
        let bad = IngestRecord {
            message_id: "m3".into(),
            body: "not json".into(),
        };
        let mut late = fresh(&idnow("e9", "s9"));
        late.received_at_ms = T0 - 29 * 86_400_000;
        let failed = r
            .batch(&[record("m2", &other), bad, record("m4", &late)])
            .await;
        assert_eq!(failed, ["m3"]);
        assert!(r.queue.is_empty());
        assert!(r.store.event(&EventKey::of(&late)).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn out_of_order_events_end_in_the_furthest_status() {
        let r = rig();
        let created = fresh(&idnow_with("c", "s1", "session.created", "CREATED"));
        let done = fresh(&idnow_with("d", "s1", "session.completed", "COMPLETED"));
        assert!(r.batch(&[record("m1", &done)]).await.is_empty());
        r.clock.advance_ms(1_000);
        assert!(r.batch(&[record("m2", &created)]).await.is_empty());
        let events: Vec<_> = r
            .store
            .partition(&EventKey::of(&done).pk)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.event)
            .collect();
        assert_eq!(events.len(), 2);
        assert_eq!(
            session_status(&events).unwrap().status.as_deref(),
            Some("COMPLETED")
        );
    }

    #[test]
    fn the_record_lifetime_must_outlive_every_way_back() {
        let d = Destinations::parse(DESTINATIONS).unwrap();
        assert_eq!(
            RecordLifetime::from_env(&Env::default(), &d)
                .unwrap()
                .ttl_secs,
            30 * 86_400
        );
        let short = Env::from_pairs([("RECORD_TTL_SECONDS", "604800")]);
        let e = RecordLifetime::from_env(&short, &d).unwrap_err();
        assert_eq!(e.var, "RECORD_TTL_SECONDS");
        assert!(e.message.contains("ingest"), "{e}");
        // A custom chain of 20 days cannot fit in 30 days of records.
        let long = Destinations::parse(
            r#"{"destinations": [{"id": "x", "url": "https://x.example/h",
               "retry_policy": {"custom": {"initial_ms": 86400000, "multiplier": 1, "max_retries": 20, "max_interval_ms": 86400000}}}]}"#,
        )
        .unwrap();
        let e = RecordLifetime::from_env(&Env::default(), &long).unwrap_err();
        assert!(e.message.contains("\"x\""), "{e}");
        // A late redrive is refused, a timely one accepted.
        let l = RecordLifetime {
            ttl_secs: 30 * 86_400,
        };
        assert!(l.accepts(T0, T0 + 14 * 86_400_000));
        assert!(!l.accepts(T0, T0 + 29 * 86_400_000));
    }
}
