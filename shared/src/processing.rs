//! The consumer's work: for each envelope from the ingest queue, claim the event (idempotency), move
//! the session state forward, and enqueue one delivery job per subscribed destination. See
//! [`crate::idempotency`] for why this is exactly-once at 3 write units per event.
//!
//! Records of a batch are independent (the session update is order-insensitive), so they are
//! processed concurrently; their delivery jobs then go out together in `SendMessageBatch` requests of
//! up to 10. The result names the records that must come back (SQS partial batch response).

use crate::clock::Clock;
use crate::delivery::{DeliveryJob, DeliveryQueue, Scheduled};
use crate::destination::Destinations;
use crate::envelope::Envelope;
use crate::idempotency::{
    ClaimOutcome, ClaimResult, EventClaim, EventStore, SessionStore, SessionUpdate, decide,
    event_key,
};
use crate::provider::status;
use crate::telemetry::Counters;
use futures_util::future::join_all;
use std::collections::HashMap;
use std::sync::Arc;

pub struct IngestRecord {
    pub message_id: String,
    pub body: String,
}

pub struct ProcessorSettings {
    /// How long an event record is kept (and so how long duplicates are recognised).
    pub idempotency_ttl_secs: u64,
    pub session_ttl_secs: u64,
    /// Age after which a record whose deliveries were never attempted is taken as orphaned (its
    /// claiming message deleted or dead-lettered), so a duplicate repairs it.
    pub orphan_after_secs: u64,
}

impl ProcessorSettings {
    pub fn from_env(env: &crate::config::Env) -> Result<Self, crate::config::ConfigError> {
        let idempotency_ttl_secs = env.parse_or("IDEMPOTENCY_TTL_SECONDS", 7 * 86_400)?;
        // Providers retry for up to 32 minutes (Incode) and hours (IDnow): a shorter window would
        // let a late retry through as a new event.
        if idempotency_ttl_secs < 86_400 {
            return Err(crate::config::ConfigError::new(
                "IDEMPOTENCY_TTL_SECONDS",
                "must be at least 86400 (longer than the providers' retry windows)",
            ));
        }
        // At least the ingest queue's maxReceiveCount x visibility timeout (5 x 180 s): until then
        // the claiming message may still come back and repair the event itself.
        let orphan_after_secs = env.parse_or("IDEMPOTENCY_ORPHAN_AFTER_SECONDS", 900)?;
        if orphan_after_secs < 900 {
            return Err(crate::config::ConfigError::new(
                "IDEMPOTENCY_ORPHAN_AFTER_SECONDS",
                "must be at least 900 (ingest maxReceiveCount x visibility timeout)",
            ));
        }
        Ok(Self {
            idempotency_ttl_secs,
            session_ttl_secs: env.parse_or("SESSION_TTL_SECONDS", 90 * 86_400)?,
            orphan_after_secs,
        })
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

pub struct Processor<E, S, Q> {
    pub events: E,
    pub sessions: S,
    pub queue: Q,
    pub destinations: Destinations,
    pub clock: Arc<dyn Clock>,
    pub settings: ProcessorSettings,
}

/// What became of one record before its jobs are sent.
enum Step {
    Fail,
    Done,
    Send(Vec<DeliveryJob>),
}

impl<E: EventStore, S: SessionStore, Q: DeliveryQueue> Processor<E, S, Q> {
    /// Processes a batch; returns the message ids to report as batch item failures.
    /// `deadline_ms`: the invocation's deadline, which bounds the claims' lease.
    pub async fn process_batch(&self, records: &[IngestRecord], deadline_ms: u64) -> Vec<String> {
        let counters = &Counters::default();
        // The same event twice in one batch: only its first record is processed; the others share
        // its fate (acknowledged with it, or retried with it).
        let mut first_of: HashMap<(String, String), usize> = HashMap::new();
        let mut twin_of: Vec<Option<usize>> = Vec::with_capacity(records.len());
        let parsed: Vec<Option<Envelope>> = records.iter().map(parse_envelope).collect();
        for (i, envelope) in parsed.iter().enumerate() {
            let twin = envelope.as_ref().and_then(|e| {
                let key = (event_key(e.provider, &e.event_id), e.payload_hash.clone());
                match first_of.get(&key) {
                    Some(&first) => Some(first),
                    None => {
                        first_of.insert(key, i);
                        None
                    }
                }
            });
            twin_of.push(twin);
        }
        let mut steps = join_all(records.iter().zip(&parsed).zip(&twin_of).map(
            |((record, envelope), twin)| async move {
                match (envelope, twin) {
                    (None, _) => {
                        // Left to SQS: after maxReceiveCount receives it lands in the ingest DLQ.
                        counters.add("MalformedEnvelopes", 1);
                        Step::Fail
                    }
                    (Some(_), Some(_)) => Step::Done,
                    (Some(e), None) => self.process_record(record, e, deadline_ms, counters).await,
                }
            },
        ))
        .await;
        for (i, twin) in twin_of.iter().enumerate() {
            if let Some(first) = twin {
                counters.add("Duplicates", 1);
                if matches!(steps[*first], Step::Fail) {
                    steps[i] = Step::Fail;
                }
            }
        }

        let mut failed: Vec<String> = Vec::new();
        let mut scheduled = Vec::new();
        let mut owners = Vec::new();
        for (record, step) in records.iter().zip(steps) {
            match step {
                Step::Fail => failed.push(record.message_id.clone()),
                Step::Done => {}
                Step::Send(jobs) => {
                    for job in jobs {
                        owners.push(record.message_id.as_str());
                        scheduled.push(Scheduled { job, delay_secs: 0 });
                    }
                }
            }
        }
        if !scheduled.is_empty() {
            let results = self.queue.schedule(scheduled).await;
            for (owner, result) in owners.into_iter().zip(results) {
                if let Err(e) = result {
                    tracing::error!(message_id = owner, error = %e, "delivery job not enqueued; the record will be redelivered");
                    if !failed.iter().any(|f| f == owner) {
                        failed.push(owner.to_string());
                    }
                }
            }
            // A twin of a record whose jobs were not all sent comes back with it.
            for (i, twin) in twin_of.iter().enumerate() {
                if let Some(first) = twin
                    && failed.contains(&records[*first].message_id)
                    && !failed.contains(&records[i].message_id)
                {
                    failed.push(records[i].message_id.clone());
                }
            }
        }
        counters.add("RecordsFailed", failed.len() as u64);
        counters.emit("consumer");
        failed
    }

    async fn process_record(
        &self,
        record: &IngestRecord,
        envelope: &Envelope,
        deadline_ms: u64,
        counters: &Counters,
    ) -> Step {
        let key = event_key(envelope.provider, &envelope.event_id);
        let now_ms = self.clock.now_ms();
        let destinations: Vec<String> = self
            .destinations
            .matching(envelope)
            .map(|d| d.id.clone())
            .collect();
        let claim = EventClaim {
            key: &key,
            message_id: &record.message_id,
            payload_hash: &envelope.payload_hash,
            destinations: &destinations,
            now_ms,
            lease_until_ms: deadline_ms.max(now_ms),
            expires_at_secs: now_ms / 1000 + self.settings.idempotency_ttl_secs,
        };
        let outcome = self.events.claim(&claim).await.map(|r| match r {
            ClaimResult::Claimed => ClaimOutcome::Claimed,
            ClaimResult::Existing(existing) => {
                decide(&claim, existing, self.settings.orphan_after_secs * 1000)
            }
        });
        let pending = match outcome {
            Ok(ClaimOutcome::Claimed) => {
                counters.add("EventsProcessed", 1);
                tracing::info!(
                    event_key = key,
                    event_type = envelope.event_type,
                    destinations = destinations.len(),
                    "event claimed"
                );
                destinations
            }
            Ok(ClaimOutcome::Repair { pending }) => {
                counters.add("Repairs", 1);
                tracing::info!(
                    event_key = key,
                    pending = pending.len(),
                    "repairing an interrupted event: re-applying its effects"
                );
                pending
            }
            Ok(ClaimOutcome::Duplicate) => {
                // Its deliveries are all attempted; only the session update may be missing (if the
                // claiming message died before it and was redriven). Re-applying it is a no-op
                // otherwise, so nothing is lost and nothing changes twice.
                counters.add("Duplicates", 1);
                tracing::info!(event_key = key, "duplicate event: no delivery pending");
                Vec::new()
            }
            Ok(ClaimOutcome::Deferred) => {
                counters.add("DeferredDuplicates", 1);
                tracing::info!(
                    event_key = key,
                    "duplicate while deliveries are pending; retry later"
                );
                return Step::Fail;
            }
            Ok(ClaimOutcome::InProgress) => {
                counters.add("ConcurrentDuplicates", 1);
                tracing::info!(event_key = key, "event in progress elsewhere; retry later");
                return Step::Fail;
            }
            Ok(ClaimOutcome::Conflict { stored_hash }) => {
                counters.add("PayloadConflicts", 1);
                tracing::warn!(
                    event_key = key,
                    stored_hash,
                    received_hash = envelope.payload_hash,
                    "payload conflict: same event id, different content; not processed"
                );
                return Step::Done;
            }
            Err(e) => {
                tracing::error!(event_key = key, error = %e, "claim failed");
                return Step::Fail;
            }
        };

        if let (Some(session_id), Some(status)) = (&envelope.session_id, &envelope.status)
            && let Some(rank) = status::rank(envelope.provider, status)
        {
            let update = SessionUpdate {
                provider: envelope.provider,
                session_id,
                status,
                rank,
                event_id: &envelope.event_id,
                at_ms: now_ms,
                expires_at_secs: now_ms / 1000 + self.settings.session_ttl_secs,
            };
            match self.sessions.advance(&update).await {
                Ok(true) => {}
                Ok(false) => {
                    counters.add("StaleSessionEvents", 1);
                    tracing::info!(
                        event_key = key,
                        status,
                        "session already further; state unchanged"
                    );
                }
                Err(e) => {
                    tracing::error!(event_key = key, error = %e, "session update failed");
                    return Step::Fail;
                }
            }
        }

        if pending.is_empty() {
            return Step::Done;
        }
        Step::Send(
            pending
                .iter()
                .map(|dest| DeliveryJob::first(envelope, &key, dest, now_ms))
                .collect(),
        )
    }
}
