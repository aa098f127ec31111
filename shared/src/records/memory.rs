//! The records table in memory, with DynamoDB's semantics where the relay depends on them: every
//! conditional write is atomic (one lock), a failed claim returns the existing item, expired items
//! are logically absent even before TTL removes them, and replay markers are overwritten only while
//! no attempt is recorded. Used by the fast unit tests of the consumer and dispatcher logic; the
//! DynamoDB adapter passes the same checks against the emulator (`tests/tests/records.rs`).

use super::*;
use crate::delivery::AttemptLog;
use std::collections::BTreeMap;
use std::sync::Mutex;

#[derive(Debug, Clone)]
struct EventItem {
    record: EventRecord,
    lease_until_ms: u64,
    /// A tombstone: the session was erased (only the key and the expiry are kept).
    erased: bool,
}

#[derive(Debug, Clone)]
struct DeliveryItem {
    record: DeliveryRecord,
    token: Option<String>,
    expires_at_secs: u64,
}

#[derive(Default)]
struct Tables {
    events: BTreeMap<(String, String), EventItem>,
    deliveries: BTreeMap<(String, String), DeliveryItem>,
    destinations: BTreeMap<String, DestinationState>,
    /// Each rate-limited destination's theoretical arrival time (µs).
    rates: BTreeMap<String, u64>,
}

/// The records table in memory. `now_secs` decides which items have expired (the tests move it
/// with their clock).
pub struct MemoryRecords {
    tables: Mutex<Tables>,
    clock: std::sync::Arc<dyn crate::clock::Clock>,
    /// Counts every call, as the cost test counts SDK calls.
    pub calls: std::sync::atomic::AtomicU64,
    /// Rate-limit reservations that fail before the next one succeeds (a store outage, for tests).
    pub failing_reservations: std::sync::atomic::AtomicU32,
}

impl MemoryRecords {
    pub fn new(clock: std::sync::Arc<dyn crate::clock::Clock>) -> Self {
        Self {
            tables: Mutex::new(Tables::default()),
            clock,
            calls: Default::default(),
            failing_reservations: Default::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Tables> {
        self.calls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // A poisoned lock means a test panicked mid-write; the state is still the last complete one.
        self.tables.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn now_secs(&self) -> u64 {
        self.clock.now_secs()
    }

    /// Test helper: the number of items held (events + deliveries + destinations).
    pub fn len(&self) -> usize {
        let t = self.tables.lock().unwrap_or_else(|p| p.into_inner());
        t.events.len() + t.deliveries.len() + t.destinations.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn live_event<'a>(t: &'a Tables, key: &EventKey, now_secs: u64) -> Option<&'a EventItem> {
    t.events
        .get(&(key.pk.clone(), key.sk.clone()))
        .filter(|e| e.record.expires_at_secs >= now_secs && !e.erased)
}

impl EventStore for MemoryRecords {
    async fn claim(&self, c: &EventClaim<'_>) -> Result<ClaimResult, StoreError> {
        let now_secs = c.now_ms / 1000;
        let mut t = self.lock();
        let id = (c.key.pk.clone(), c.key.sk.clone());
        if let Some(existing) = t.events.get(&id)
            && existing.record.expires_at_secs >= now_secs
        {
            return Ok(ClaimResult::Existing(ExistingRecord {
                payload_hash: existing.record.payload_hash.clone(),
                intake_id: existing.record.intake_id.clone(),
                claimed_at_ms: existing.record.claimed_at_ms,
                lease_until_ms: existing.lease_until_ms,
                expires_at_secs: existing.record.expires_at_secs,
                generation: existing.record.generation,
                destinations: existing.record.destinations.clone(),
                erased: existing.erased,
            }));
        }
        t.events.insert(
            id,
            EventItem {
                record: EventRecord {
                    key: c.key.clone(),
                    event_id: c.event_id.to_string(),
                    event_type: c.event_type.to_string(),
                    status: c.status.map(|(s, _)| s.to_string()),
                    rank: c.status.map(|(_, r)| r),
                    payload_hash: c.payload_hash.to_string(),
                    intake_id: c.intake_id.to_string(),
                    received_at_ms: c.received_at_ms,
                    claimed_at_ms: c.now_ms,
                    expires_at_secs: c.expires_at_secs,
                    generation: 0,
                    destinations: c.destinations.to_vec(),
                    archive: c.archive_object.map(str::to_string).into_iter().collect(),
                },
                lease_until_ms: c.lease_until_ms,
                erased: false,
            },
        );
        Ok(ClaimResult::Claimed)
    }

    async fn take_over(&self, r: &RepairTakeover<'_>) -> Result<Option<u32>, StoreError> {
        let now_secs = r.now_ms / 1000;
        let mut t = self.lock();
        let Some(item) = t
            .events
            .get_mut(&(r.key.pk.clone(), r.key.sk.clone()))
            .filter(|e| e.record.expires_at_secs >= now_secs)
        else {
            return Ok(None);
        };
        if item.erased
            || item.lease_until_ms >= r.now_ms
            || !r.intake_ids.contains(&item.record.intake_id.as_str())
        {
            return Ok(None);
        }
        item.lease_until_ms = r.lease_until_ms;
        item.record.generation += 1;
        if let Some(object) = r.archive_object {
            item.record.archive.push(object.to_string());
        }
        Ok(Some(item.record.generation))
    }

    async fn attempted(&self, key: &EventKey) -> Result<Vec<String>, StoreError> {
        let now_secs = self.now_secs();
        let t = self.lock();
        let prefix = format!("{}#d#", key.sk);
        let mut out: Vec<String> = t
            .deliveries
            .range((key.pk.clone(), prefix.clone())..)
            .take_while(|((pk, sk), _)| pk == &key.pk && sk.starts_with(&prefix))
            .filter(|(_, d)| d.expires_at_secs >= now_secs)
            .map(|(_, d)| d.record.destination.clone())
            .collect();
        out.sort();
        Ok(out)
    }
}

impl DeliveryStore for MemoryRecords {
    async fn view(&self, key: &DeliveryKey) -> Result<DeliveryView, StoreError> {
        let now_secs = self.now_secs();
        let t = self.lock();
        let item = t
            .events
            .get(&(key.pk.clone(), key.event_sk.clone()))
            .filter(|e| e.record.expires_at_secs >= now_secs);
        let erased = item.is_some_and(|e| e.erased);
        let event = item.filter(|e| !e.erased);
        let delivery = t
            .deliveries
            .get(&(key.pk.clone(), key.sk.clone()))
            .filter(|d| d.expires_at_secs >= now_secs)
            .map(|d| DeliveryState {
                status: d.record.status,
                attempts: d.record.attempts,
                token: d.token.clone(),
            });
        let mut view = DeliveryView {
            event_exists: event.is_some(),
            generation: event.map_or(0, |e| e.record.generation),
            delivery,
            delivered_by_replay: None,
            erased,
        };
        // The event's other items, as the query of the DynamoDB adapter reads them.
        let from = (key.pk.clone(), key.event_sk.clone());
        for ((pk, sk), d) in t.deliveries.range(from..) {
            if *pk != key.pk || !sk.starts_with(&key.event_sk) {
                break;
            }
            if d.expires_at_secs >= now_secs && *sk != key.sk {
                view.note_replay(&key.sk, sk, Some(d.record.status.as_str()));
            }
        }
        Ok(view)
    }

    async fn record_attempt(
        &self,
        key: &DeliveryKey,
        u: &AttemptUpdate,
    ) -> Result<bool, StoreError> {
        let now_secs = self.now_secs();
        let mut t = self.lock();
        let id = (key.pk.clone(), key.sk.clone());
        if let Some(existing) = t
            .deliveries
            .get(&id)
            .filter(|d| d.expires_at_secs >= now_secs)
        {
            let movable = match existing.record.status {
                DeliveryStatus::Pending | DeliveryStatus::Retrying => true,
                DeliveryStatus::Failed => u.redrive,
                DeliveryStatus::Delivered => false,
            };
            if !movable || existing.record.attempts >= u.attempt {
                return Ok(false);
            }
        }
        t.deliveries.insert(
            id,
            DeliveryItem {
                record: DeliveryRecord {
                    destination: u.destination.clone(),
                    replay: u.replay.clone(),
                    status: u.status,
                    attempts: u.attempt,
                    last_attempt_at_ms: u.at_ms,
                    last_outcome: Some(u.outcome.clone()),
                    last_status_code: u.status_code,
                    lag_ms: u.lag_ms,
                    history: u.history.clone(),
                },
                token: None,
                expires_at_secs: u.expires_at_secs,
            },
        );
        Ok(true)
    }

    async fn mark_replay(
        &self,
        key: &DeliveryKey,
        m: &ReplayMarker<'_>,
    ) -> Result<bool, StoreError> {
        let now_secs = self.now_secs();
        let mut t = self.lock();
        let id = (key.pk.clone(), key.sk.clone());
        if let Some(existing) = t
            .deliveries
            .get(&id)
            .filter(|d| d.expires_at_secs >= now_secs)
            && existing.record.attempts > 0
        {
            return Ok(false);
        }
        t.deliveries.insert(
            id,
            DeliveryItem {
                record: DeliveryRecord {
                    destination: m.destination.to_string(),
                    replay: Some(m.replay_id.to_string()),
                    status: DeliveryStatus::Pending,
                    attempts: 0,
                    last_attempt_at_ms: m.at_ms,
                    last_outcome: None,
                    last_status_code: None,
                    lag_ms: None,
                    history: Vec::<AttemptLog>::new(),
                },
                token: Some(m.token.to_string()),
                expires_at_secs: m.expires_at_secs,
            },
        );
        Ok(true)
    }
}

impl DestinationStates for MemoryRecords {
    async fn load(&self) -> Result<BTreeMap<String, DestinationState>, StoreError> {
        Ok(self.lock().destinations.clone())
    }

    async fn apply(
        &self,
        destination: &str,
        write: &BreakerWrite,
        now_ms: u64,
    ) -> Result<Transition, StoreError> {
        let mut t = self.lock();
        let state = t.destinations.entry(destination.to_string()).or_default();
        state.updated_at_ms = now_ms;
        Ok(match write {
            BreakerWrite::Trip {
                failures,
                last,
                probe_at_ms,
            } => {
                if state.paused.is_none() {
                    state.paused = Some(Pause {
                        by: PausedBy::Breaker,
                        reason: breaker_reason(*failures, last),
                        since_ms: now_ms,
                    });
                    state.failures = *failures;
                    state.last_failure = Some(last.clone());
                    state.last_failure_at_ms = now_ms;
                    state.probe_at_ms = *probe_at_ms;
                    Transition::Paused
                } else {
                    Transition::None
                }
            }
            BreakerWrite::Recovered => {
                if state
                    .paused
                    .as_ref()
                    .is_some_and(|p| p.by == PausedBy::Breaker)
                {
                    state.paused = None;
                    state.failures = 0;
                    state.probe_at_ms = 0;
                    state.resumed_at_ms = now_ms;
                    Transition::Resumed
                } else {
                    Transition::None
                }
            }
            BreakerWrite::Gone {
                reason,
                probe_at_ms,
            } => {
                if state.paused.is_none() {
                    state.paused = Some(Pause {
                        by: PausedBy::Breaker,
                        reason: reason.clone(),
                        since_ms: now_ms,
                    });
                    state.probe_at_ms = *probe_at_ms;
                    Transition::Paused
                } else {
                    Transition::None
                }
            }
            BreakerWrite::Slow { until_ms } => {
                state.slow_until_ms = state.slow_until_ms.max(*until_ms);
                Transition::None
            }
        })
    }

    async fn claim_probe(
        &self,
        destination: &str,
        now_ms: u64,
        next_probe_ms: u64,
    ) -> Result<bool, StoreError> {
        let mut t = self.lock();
        let Some(state) = t.destinations.get_mut(destination) else {
            return Ok(false);
        };
        let breaker = state
            .paused
            .as_ref()
            .is_some_and(|p| p.by == PausedBy::Breaker);
        if breaker && state.probe_at_ms <= now_ms {
            state.probe_at_ms = next_probe_ms;
            state.updated_at_ms = now_ms;
            Ok(true)
        } else {
            Ok(false)
        }
    }

    async fn pause(&self, destination: &str, reason: &str, now_ms: u64) -> Result<(), StoreError> {
        let mut t = self.lock();
        let state = t.destinations.entry(destination.to_string()).or_default();
        state.paused = Some(Pause {
            by: PausedBy::Operator,
            reason: reason.to_string(),
            since_ms: now_ms,
        });
        state.updated_at_ms = now_ms;
        Ok(())
    }

    async fn resume(&self, destination: &str, now_ms: u64) -> Result<bool, StoreError> {
        let mut t = self.lock();
        let Some(state) = t.destinations.get_mut(destination) else {
            return Ok(false);
        };
        let was_paused = state.paused.take().is_some();
        state.failures = 0;
        state.probe_at_ms = 0;
        state.resumed_at_ms = now_ms;
        state.updated_at_ms = now_ms;
        Ok(was_paused)
    }
}

/// The reason a breaker pause records (the same text in both adapters).
pub fn breaker_reason(failures: u32, last: &str) -> String {
    format!("{failures} consecutive failures (last: {last})")
}

impl crate::rate::RateLimiter for MemoryRecords {
    async fn reserve(
        &self,
        destination: &str,
        now_us: u64,
        limit: crate::rate::RateLimit,
    ) -> Result<u64, StoreError> {
        use std::sync::atomic::Ordering;
        let failing = &self.failing_reservations;
        if failing
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(StoreError("rate limiter unavailable (injected)".into()));
        }
        let mut t = self.lock();
        let (slot, tat) = crate::rate::schedule(t.rates.get(destination).copied(), now_us, limit);
        t.rates.insert(destination.to_string(), tat);
        Ok(slot)
    }
}

impl RecordReader for MemoryRecords {
    async fn partition(&self, pk: &str) -> Result<Vec<EventWithDeliveries>, StoreError> {
        let now_secs = self.now_secs();
        let t = self.lock();
        let mut out: Vec<EventWithDeliveries> = t
            .events
            .iter()
            .filter(|((p, _), e)| p == pk && e.record.expires_at_secs >= now_secs && !e.erased)
            .map(|(_, e)| EventWithDeliveries {
                event: e.record.clone(),
                deliveries: deliveries_of(&t, &e.record.key, now_secs),
            })
            .collect();
        out.sort_by_key(|e| e.event.received_at_ms);
        Ok(out)
    }

    async fn event(&self, key: &EventKey) -> Result<Option<EventWithDeliveries>, StoreError> {
        let now_secs = self.now_secs();
        let t = self.lock();
        Ok(live_event(&t, key, now_secs).map(|e| EventWithDeliveries {
            event: e.record.clone(),
            deliveries: deliveries_of(&t, key, now_secs),
        }))
    }

    async fn archive_objects(&self, pk: &str) -> Result<Vec<String>, StoreError> {
        let t = self.lock();
        // (Tombstones name no object.)
        let objects: std::collections::BTreeSet<String> = t
            .events
            .iter()
            .filter(|((p, _), _)| p == pk)
            .flat_map(|(_, e)| e.record.archive.iter().cloned())
            .collect();
        Ok(objects.into_iter().collect())
    }

    async fn erase_partition(&self, pk: &str, now_ms: u64) -> Result<usize, StoreError> {
        let mut t = self.lock();
        let before = t.deliveries.len();
        t.deliveries.retain(|(p, _), _| p != pk);
        let mut n = before - t.deliveries.len();
        for ((p, _), e) in t.events.iter_mut() {
            if p != pk || e.erased {
                continue;
            }
            let r = &e.record;
            let expires_at_secs = tombstone_expiry(r.expires_at_secs, r.claimed_at_ms, now_ms);
            e.record = EventRecord {
                key: r.key.clone(),
                event_id: r.event_id.clone(),
                event_type: String::new(),
                status: None,
                rank: None,
                payload_hash: String::new(),
                intake_id: String::new(),
                received_at_ms: 0,
                claimed_at_ms: 0,
                expires_at_secs,
                generation: 0,
                destinations: vec![],
                archive: vec![],
            };
            e.lease_until_ms = 0;
            e.erased = true;
            n += 1;
        }
        Ok(n)
    }
}

fn deliveries_of(t: &Tables, key: &EventKey, now_secs: u64) -> Vec<DeliveryRecord> {
    let prefix = format!("{}#", key.sk);
    t.deliveries
        .range((key.pk.clone(), prefix.clone())..)
        .take_while(|((pk, sk), _)| pk == &key.pk && sk.starts_with(&prefix))
        .filter(|(_, d)| d.expires_at_secs >= now_secs)
        .map(|(_, d)| d.record.clone())
        .collect()
}
