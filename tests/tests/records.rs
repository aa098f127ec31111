//! The records ports, one set of checks, two implementations: the DynamoDB adapter against the
//! emulator and the in-memory one the unit tests use. Both must answer every conditional write the
//! same way, or the fast unit tests of the consumer and dispatcher would prove nothing about AWS.

use integration_tests::{LocalAws, idnow_envelope};
use kyc_relay::clock::{Clock, ManualClock};
use kyc_relay::delivery::AttemptLog;
use kyc_relay::records::memory::MemoryRecords;
use kyc_relay::records::*;
use std::sync::Arc;

const T0: u64 = 1_795_000_000_000;
const TTL: u64 = 30 * 86_400;

trait Records: EventStore + DeliveryStore + DestinationStates + RecordReader {}
impl<T: EventStore + DeliveryStore + DestinationStates + RecordReader> Records for T {}

fn claim<'a>(key: &'a EventKey, intake: &'a str, hash: &'a str, now: u64) -> EventClaim<'a> {
    EventClaim {
        key,
        event_id: "evt-1",
        event_type: "session.completed",
        status: Some(("COMPLETED", 1000)),
        payload_hash: hash,
        intake_id: intake,
        received_at_ms: now,
        now_ms: now,
        lease_until_ms: now + 30_000,
        expires_at_secs: now / 1000 + TTL,
        destinations: &[],
        archive_object: Some("events/a.jsonl"),
    }
}

fn attempt(n: u32, status: DeliveryStatus, redrive: bool, expires: u64) -> AttemptUpdate {
    AttemptUpdate {
        event_id: "evt-1".into(),
        destination: "crm".into(),
        replay: None,
        attempt: n,
        at_ms: T0 + u64::from(n),
        status,
        outcome: format!("attempt {n}"),
        status_code: Some(503),
        latency_ms: 12,
        lag_ms: None,
        history: (1..=n)
            .map(|a| AttemptLog {
                attempt: a,
                at_ms: T0 + u64::from(a),
                outcome: "http_503".into(),
                status_code: Some(503),
                latency_ms: 12,
                cycle: 1,
                probe: false,
            })
            .collect(),
        redrive,
        expires_at_secs: expires,
    }
}

async fn conformance(store: impl Records, clock: ManualClock) {
    let e = idnow_envelope("evt-1", "session.completed", "sess-1", "COMPLETED", 3);
    let key = EventKey::of(&e);
    let expires = T0 / 1000 + TTL;

    // --- claim ---------------------------------------------------------------------------------
    let first = claim(&key, "i1", "h", T0);
    let claimed_with = vec!["bi".to_string(), "crm".to_string()];
    let first = EventClaim {
        destinations: &claimed_with,
        ..first
    };
    assert_eq!(store.claim(&first).await.unwrap(), ClaimResult::Claimed);
    match store
        .claim(&claim(&key, "i2", "other", T0 + 5))
        .await
        .unwrap()
    {
        ClaimResult::Existing(x) => {
            assert_eq!(x.payload_hash, "h");
            assert_eq!(x.intake_id, "i1");
            assert_eq!(x.lease_until_ms, T0 + 30_000);
            assert_eq!(x.claimed_at_ms, T0);
            assert_eq!(x.generation, 0);
            assert_eq!(x.expires_at_secs, expires);
            assert_eq!(x.destinations, claimed_with);
        }
        other => panic!("{other:?}"),
    }

    // --- takeover --------------------------------------------------------------------------------
    let takeover = |now: u64, intakes: &'static [&'static str]| RepairTakeover {
        key: &key,
        intake_ids: intakes,
        now_ms: now,
        lease_until_ms: now + 30_000,
        archive_object: Some("events/b.jsonl"),
    };
    // The lease is still running, or the intake is not the owner: no takeover.
    assert_eq!(
        store.take_over(&takeover(T0 + 1, &["i1"])).await.unwrap(),
        None
    );
    assert_eq!(
        store
            .take_over(&takeover(T0 + 60_000, &["i2"]))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .take_over(&takeover(T0 + 60_000, &["i2", "i1"]))
            .await
            .unwrap(),
        Some(1)
    );
    // The new lease holds off a second takeover.
    assert_eq!(
        store
            .take_over(&takeover(T0 + 60_001, &["i1"]))
            .await
            .unwrap(),
        None
    );
    let read = store.event(&key).await.unwrap().unwrap();
    assert_eq!(read.event.generation, 1);
    assert_eq!(read.event.archive, ["events/a.jsonl", "events/b.jsonl"]);
    assert_eq!(read.event.status.as_deref(), Some("COMPLETED"));
    assert_eq!(read.event.rank, Some(1000));
    assert_eq!(read.event.event_id, "evt-1");
    assert!(store.attempted(&key).await.unwrap().is_empty());

    // --- attempts --------------------------------------------------------------------------------
    let crm = key.delivery("crm", None);
    assert_eq!(
        store.view(&crm).await.unwrap(),
        DeliveryView {
            event_exists: true,
            generation: 1,
            delivery: None,
            delivered_by_replay: None,
            erased: false,
        }
    );
    assert!(
        store
            .record_attempt(&crm, &attempt(1, DeliveryStatus::Retrying, false, expires))
            .await
            .unwrap()
    );
    // The same attempt again (a duplicate job) is not applied; neither is an earlier one.
    assert!(
        !store
            .record_attempt(&crm, &attempt(1, DeliveryStatus::Retrying, false, expires))
            .await
            .unwrap()
    );
    assert!(
        store
            .record_attempt(&crm, &attempt(3, DeliveryStatus::Failed, false, expires))
            .await
            .unwrap()
    );
    assert!(
        !store
            .record_attempt(&crm, &attempt(2, DeliveryStatus::Retrying, false, expires))
            .await
            .unwrap()
    );
    // FAILED is final, except for a redriven cycle.
    assert!(
        !store
            .record_attempt(&crm, &attempt(4, DeliveryStatus::Retrying, false, expires))
            .await
            .unwrap()
    );
    assert!(
        store
            .record_attempt(&crm, &attempt(4, DeliveryStatus::Delivered, true, expires))
            .await
            .unwrap()
    );
    assert!(
        !store
            .record_attempt(&crm, &attempt(5, DeliveryStatus::Delivered, true, expires))
            .await
            .unwrap()
    );
    let view = store.view(&crm).await.unwrap();
    assert_eq!(
        view.delivery.map(|d| (d.status, d.attempts)),
        Some((DeliveryStatus::Delivered, 4))
    );
    assert_eq!(store.attempted(&key).await.unwrap(), ["crm"]);
    let read = store.event(&key).await.unwrap().unwrap();
    let d = &read.deliveries[0];
    assert_eq!(d.destination, "crm");
    assert_eq!(d.history.len(), 4);
    assert_eq!(d.history[3].outcome, "http_503");
    assert_eq!(d.last_outcome.as_deref(), Some("attempt 4"));

    // --- replays ---------------------------------------------------------------------------------
    let replay = key.delivery("crm", Some("r1"));
    let marker = |token: &'static str| ReplayMarker {
        event_id: "evt-1",
        destination: "crm",
        replay_id: "r1",
        token,
        at_ms: T0,
        expires_at_secs: expires,
    };
    assert!(store.mark_replay(&replay, &marker("t1")).await.unwrap());
    assert!(
        store.mark_replay(&replay, &marker("t2")).await.unwrap(),
        "a re-run replaces the token"
    );
    assert_eq!(
        store
            .view(&replay)
            .await
            .unwrap()
            .delivery
            .unwrap()
            .token
            .as_deref(),
        Some("t2")
    );
    let mut replayed = attempt(1, DeliveryStatus::Delivered, false, expires);
    replayed.replay = Some("r1".into());
    assert!(store.record_attempt(&replay, &replayed).await.unwrap());
    assert!(
        !store.mark_replay(&replay, &marker("t3")).await.unwrap(),
        "attempted: kept"
    );
    // The replay's item is not one of the event's own deliveries...
    assert_eq!(store.attempted(&key).await.unwrap(), ["crm"]);
    // ...but the view of the event's own delivery to crm reads that a replay delivered it (and
    // the view of another destination's delivery does not).
    assert_eq!(
        store
            .view(&crm)
            .await
            .unwrap()
            .delivered_by_replay
            .as_deref(),
        Some("r1")
    );
    assert_eq!(
        store
            .view(&key.delivery("bi", None))
            .await
            .unwrap()
            .delivered_by_replay,
        None
    );

    // --- the session's partition -----------------------------------------------------------------
    let other = idnow_envelope("evt-2", "session.created", "sess-1", "CREATED", 1);
    let other_key = EventKey::of(&other);
    assert_eq!(other_key.pk, key.pk);
    let mut c2 = claim(&other_key, "i9", "h2", T0 + 10);
    c2.event_id = "evt-2";
    c2.status = Some(("CREATED", 10));
    assert_eq!(store.claim(&c2).await.unwrap(), ClaimResult::Claimed);
    let session = store.partition(&key.pk).await.unwrap();
    assert_eq!(session.len(), 2);
    assert_eq!(session[0].event.event_id, "evt-1");
    assert_eq!(session[0].deliveries.len(), 2);
    let events: Vec<_> = session.iter().map(|e| e.event.clone()).collect();
    assert_eq!(session_status(&events).unwrap().event_id, "evt-1");

    // --- expiry: logically gone before TTL deletes it; claimable again ----------------------------
    clock.set_ms((expires + 1) * 1000);
    assert!(store.event(&key).await.unwrap().is_none());
    // Erasure still finds the archive objects of expired items (TTL deletes them days later).
    assert!(store.partition(&key.pk).await.unwrap().is_empty());
    assert_eq!(
        store.archive_objects(&key.pk).await.unwrap(),
        ["events/a.jsonl", "events/b.jsonl"]
    );
    assert_eq!(store.view(&crm).await.unwrap(), DeliveryView::default());
    let late = (expires + 1) * 1000;
    assert_eq!(
        store.claim(&claim(&key, "i5", "h", late)).await.unwrap(),
        ClaimResult::Claimed
    );
    assert!(
        store.attempted(&key).await.unwrap().is_empty(),
        "the old life's deliveries are gone"
    );
    clock.set_ms(T0);

    // --- erasure ---------------------------------------------------------------------------------
    assert_eq!(store.erase_partition(&key.pk, T0).await.unwrap(), 4);
    assert!(store.partition(&key.pk).await.unwrap().is_empty());
    assert!(store.event(&key).await.unwrap().is_none());
    assert!(store.archive_objects(&key.pk).await.unwrap().is_empty());
    // The events stay as tombstones: a later copy of one (a provider retry, a redelivery) is refused,
    // a repair cannot take it over, and the dispatcher's view says so.
    match store.claim(&claim(&key, "i7", "h", T0 + 1)).await.unwrap() {
        ClaimResult::Existing(x) => assert!(x.erased, "{x:?}"),
        other => panic!("an erased event was claimed again: {other:?}"),
    }
    assert_eq!(
        store
            .take_over(&takeover(T0 + 120_000, &["i5"]))
            .await
            .unwrap(),
        None
    );
    let erased_view = store.view(&crm).await.unwrap();
    assert!(erased_view.erased && !erased_view.event_exists && erased_view.delivery.is_none());
    // Erasing again finds nothing more to remove.
    assert_eq!(store.erase_partition(&key.pk, T0 + 5).await.unwrap(), 0);

    // --- destinations ----------------------------------------------------------------------------
    let trip = |failures| BreakerWrite::Trip {
        failures,
        last: "http_503".into(),
        probe_at_ms: T0 + 60_000,
    };
    assert_eq!(
        store.apply("crm", &trip(10), T0).await.unwrap(),
        Transition::Paused
    );
    assert_eq!(
        store.apply("crm", &trip(12), T0).await.unwrap(),
        Transition::None,
        "already paused"
    );
    let states = store.load().await.unwrap();
    let crm_state = &states["crm"];
    assert_eq!(crm_state.failures, 10);
    let pause = crm_state.paused.as_ref().unwrap();
    assert_eq!(pause.by, PausedBy::Breaker);
    assert_eq!(pause.reason, "10 consecutive failures (last: http_503)");
    assert_eq!(crm_state.probe_at_ms, T0 + 60_000);
    // One probe per interval.
    assert!(
        !store
            .claim_probe("crm", T0 + 59_999, T0 + 120_000)
            .await
            .unwrap()
    );
    assert!(
        store
            .claim_probe("crm", T0 + 60_000, T0 + 120_000)
            .await
            .unwrap()
    );
    assert!(
        !store
            .claim_probe("crm", T0 + 60_000, T0 + 120_000)
            .await
            .unwrap()
    );
    assert_eq!(
        store
            .apply("crm", &BreakerWrite::Recovered, T0)
            .await
            .unwrap(),
        Transition::Resumed
    );
    let states = store.load().await.unwrap();
    assert_eq!(
        (
            states["crm"].failures,
            states["crm"].paused.is_none(),
            states["crm"].resumed_at_ms
        ),
        (0, true, T0)
    );
    assert_eq!(
        store
            .apply(
                "bi",
                &BreakerWrite::Gone {
                    reason: "410 Gone".into(),
                    probe_at_ms: 5
                },
                T0
            )
            .await
            .unwrap(),
        Transition::Paused
    );
    store
        .apply("bi", &BreakerWrite::Slow { until_ms: T0 + 9 }, T0)
        .await
        .unwrap();
    store
        .apply("bi", &BreakerWrite::Slow { until_ms: T0 + 3 }, T0)
        .await
        .unwrap();
    assert_eq!(store.load().await.unwrap()["bi"].slow_until_ms, T0 + 9);
    // An operator's pause replaces the breaker's and is not ended by a success.
    store.pause("bi", "maintenance", T0).await.unwrap();
    assert_eq!(
        store
            .apply("bi", &BreakerWrite::Recovered, T0)
            .await
            .unwrap(),
        Transition::None
    );
    assert!(!store.claim_probe("bi", T0 + 100, T0 + 200).await.unwrap());
    let bi = store.load().await.unwrap()["bi"].clone();
    assert_eq!(
        bi.paused.map(|p| (p.by, p.reason)),
        Some((PausedBy::Operator, "maintenance".into()))
    );
    assert!(store.resume("bi", T0 + 7).await.unwrap());
    assert!(!store.resume("bi", T0 + 8).await.unwrap());
    let bi = store.load().await.unwrap()["bi"].clone();
    assert!(bi.paused.is_none());
    assert_eq!(bi.resumed_at_ms, T0 + 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dynamodb_adapter_behaves_like_the_in_memory_store() {
    let aws = LocalAws::provision().await;
    let clock = ManualClock::at_ms(T0);
    let store = integration_tests::records(&aws, Arc::new(clock.clone()));
    conformance(store, clock).await;
}

#[tokio::test]
async fn the_in_memory_store_passes_the_same_checks() {
    let clock = ManualClock::at_ms(T0);
    conformance(MemoryRecords::new(Arc::new(clock.clone())), clock.clone()).await;
    assert_eq!(clock.now_ms(), T0);
}

/// The rate limiter's reservations (`kyc_relay::rate`): the same slots from both adapters, and
/// from the DynamoDB one under concurrent callers, each slot exactly once.
async fn rate_limiter_conformance(store: impl kyc_relay::rate::RateLimiter) {
    use kyc_relay::rate::RateLimit;
    let limit = RateLimit {
        per_second: 10,
        burst: 3,
    };
    let now = T0 * 1000;
    let mut slots = Vec::new();
    for _ in 0..4 {
        slots.push(store.reserve("api", now, limit).await.unwrap());
    }
    // From idle: the burst (slots up to now), then one per 100 ms.
    assert_eq!(slots, [now - 200_000, now - 100_000, now, now + 100_000]);
    // Another destination has its own schedule.
    assert_eq!(
        store.reserve("other", now, limit).await.unwrap(),
        now - 200_000
    );
    // After an idle spell the schedule starts again.
    let later = now + 60_000_000;
    assert_eq!(
        store.reserve("api", later, limit).await.unwrap(),
        later - 200_000
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_rate_limiters_reserve_the_same_slots_and_dynamodb_each_slot_once_under_contention() {
    let aws = LocalAws::provision().await;
    let clock = ManualClock::at_ms(T0);
    let store = integration_tests::records(&aws, Arc::new(clock.clone()));
    rate_limiter_conformance(store.clone()).await;
    rate_limiter_conformance(MemoryRecords::new(Arc::new(clock.clone()))).await;

    use kyc_relay::rate::{RateLimit, RateLimiter};
    let limit = RateLimit {
        per_second: 50,
        burst: 1,
    };
    let now = (T0 + 3_600_000) * 1000;
    let store = Arc::new(store);
    let tasks: Vec<_> = (0..24)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.reserve("contended", now, limit).await.unwrap() })
        })
        .collect();
    let mut slots = Vec::new();
    for t in tasks {
        slots.push(t.await.unwrap());
    }
    slots.sort_unstable();
    let expected: Vec<u64> = (0..24).map(|i| now + i * 20_000).collect();
    assert_eq!(slots, expected, "24 distinct slots, 20 ms apart");
}
