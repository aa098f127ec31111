//! The consumer against the emulator's DynamoDB, S3 and SQS: exactly-once claims, the archive, one
//! delivery job per subscribed destination, repair after a crash, and item sizes within the write
//! units ARCHITECTURE.md §3 claims. (The decision logic is unit-tested in memory in
//! `shared/src/processing.rs`; here the real adapters are exercised end to end.)

use integration_tests::{
    LocalAws, TestConsumer, archive, consumer_for, idnow_envelope, incode_envelope, item, record,
    records,
};
use kyc_relay::archive::ArchiveStore;
use kyc_relay::clock::{Clock, ManualClock};
use kyc_relay::delivery::DeliveryJob;
use kyc_relay::envelope::{Envelope, new_intake_id};
use kyc_relay::records::{EventKey, RecordReader, session_status};
use std::collections::HashMap;
use std::sync::Arc;

const T0: u64 = 1_795_000_000_000;
const DESTINATIONS: &str = r#"{"destinations": [
  {"id": "crm", "url": "http://127.0.0.1:9/crm", "retry_policy": "idnow"},
  {"id": "bi", "url": "http://127.0.0.1:9/bi", "retry_policy": "incode",
   "providers": ["idnow"], "event_types": ["session.completed"]}
]}"#;

fn consumer(aws: &LocalAws, clock: &ManualClock) -> TestConsumer {
    consumer_for(aws, DESTINATIONS, Arc::new(clock.clone()))
}

async fn jobs(aws: &LocalAws) -> Vec<DeliveryJob> {
    aws.drain(aws.get("DELIVERY_QUEUE_URL"))
        .await
        .iter()
        .map(|m| serde_json::from_str(m.body().unwrap()).unwrap())
        .collect()
}

/// A provider retry: the same event in another request (another intake id).
fn retry_of(e: &Envelope) -> Envelope {
    let mut r = e.clone();
    r.intake_id = new_intake_id();
    r
}

async fn archived(aws: &LocalAws) -> Vec<Envelope> {
    let a = archive(aws);
    let mut out = Vec::new();
    for key in a.list("events/", None).await.unwrap() {
        out.extend(kyc_relay::archive::decode(&a.get(&key).await.unwrap().unwrap()).0);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_event_in_one_batch_and_as_a_provider_retry_is_processed_once() {
    let aws = LocalAws::provision().await;
    let clock = ManualClock::at_ms(T0);
    let c = consumer(&aws, &clock);
    let e = idnow_envelope("evt-dup", "session.completed", "sess-1", "COMPLETED", 4);

    let failed = c
        .process_batch(&[record("m1", &e), record("m2", &e)], T0 + 30_000, "b1")
        .await;
    assert!(failed.is_empty(), "{failed:?}");
    let first = jobs(&aws).await;
    let mut dests: Vec<&str> = first.iter().map(|j| j.destination_id.as_str()).collect();
    dests.sort();
    assert_eq!(dests, ["bi", "crm"], "one job per subscribed destination");
    assert!(first.iter().all(|j| j.attempt == 1 && j.generation == 0));

    // The archive holds the envelope once, the raw body byte for byte, and the record names it.
    let kept = archived(&aws).await;
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].raw_body, e.raw_body);
    let store = records(&aws, Arc::new(clock.clone()));
    let read = store.event(&EventKey::of(&e)).await.unwrap().unwrap();
    assert_eq!(read.event.archive.len(), 1);
    assert!(
        archive(&aws)
            .get(&read.event.archive[0])
            .await
            .unwrap()
            .is_some()
    );

    // A provider retry later, its deliveries still waiting in a backlog: acknowledged at once (it
    // would otherwise come back until it reached the DLQ), nothing sent, nothing archived again.
    clock.advance_ms(3_600_000);
    assert!(
        c.process_batch(
            &[record("m3", &retry_of(&e))],
            clock.now_ms() + 30_000,
            "b2"
        )
        .await
        .is_empty()
    );
    assert!(jobs(&aws).await.is_empty(), "no second set of jobs");
    assert_eq!(archived(&aws).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_concurrent_invocations_with_the_same_message_process_it_once() {
    let aws = LocalAws::provision().await;
    let clock = ManualClock::at_ms(T0);
    let c = Arc::new(consumer(&aws, &clock));
    let e = incode_envelope("interview-concurrent", "ONBOARDING_FINISHED");
    let handles: Vec<_> = (0..20)
        .map(|i| {
            let c = c.clone();
            let r = record("m1", &e);
            tokio::spawn(async move { c.process_batch(&[r], T0 + 30_000, &format!("b{i}")).await })
        })
        .collect();
    let mut failures = 0;
    for h in handles {
        failures += h.await.unwrap().len();
    }
    assert_eq!(
        failures, 19,
        "the 19 concurrent copies come back as batch item failures"
    );
    let js = jobs(&aws).await;
    assert_eq!(js.len(), 1, "one job: Incode events go to crm only");
    assert_eq!(js[0].destination_id, "crm");
    assert_eq!(archived(&aws).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_the_claim_is_repaired_by_the_redelivered_message() {
    let aws = LocalAws::provision().await;
    let clock = ManualClock::at_ms(T0);
    let e = idnow_envelope(
        "evt-crash",
        "session.completed",
        "sess-crash",
        "COMPLETED",
        2,
    );
    // The invocation claims, then dies before the archive and the jobs: here the delivery queue
    // is unreachable, so the claim and the archive object are all that happen.
    let mut broken = consumer(&aws, &clock);
    broken.queue = kyc_relay::aws::sqs::SqsDeliveryQueue::new(
        &aws.sdk,
        format!("{}-gone", aws.get("DELIVERY_QUEUE_URL")),
        None,
        None,
    );
    assert_eq!(
        broken
            .process_batch(&[record("m1", &e)], T0 + 30_000, "b1")
            .await,
        ["m1"]
    );
    let c = consumer(&aws, &clock);
    // While the lease runs, the message cannot be processed elsewhere.
    assert_eq!(
        c.process_batch(&[record("m1", &e)], T0 + 30_000, "b2")
            .await,
        ["m1"]
    );
    assert!(jobs(&aws).await.is_empty());
    // SQS redelivers after the visibility timeout: a repair, generation 1, both jobs sent, the
    // event archived again and both copies listed on the record.
    clock.advance_ms(180_000);
    assert!(
        c.process_batch(&[record("m1", &e)], clock.now_ms() + 30_000, "b3")
            .await
            .is_empty()
    );
    let js = jobs(&aws).await;
    assert_eq!(js.len(), 2);
    assert!(js.iter().all(|j| j.generation == 1));
    let read = records(&aws, Arc::new(clock.clone()))
        .event(&EventKey::of(&e))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(read.event.archive.len(), 2);
    assert_eq!(archived(&aws).await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_order_idnow_events_end_in_the_furthest_state() {
    let aws = LocalAws::provision().await;
    let clock = ManualClock::at_ms(T0);
    let c = consumer(&aws, &clock);
    let created = idnow_envelope("evt-1", "session.created", "sess-ooo", "CREATED", 1);
    let started = idnow_envelope("evt-2", "session.started", "sess-ooo", "STARTED", 2);
    let completed = idnow_envelope("evt-3", "session.completed", "sess-ooo", "COMPLETED", 3);
    for (i, e) in [&completed, &created, &started].into_iter().enumerate() {
        clock.advance_ms(1_000);
        assert!(
            c.process_batch(&[record(&format!("m{i}"), e)], clock.now_ms() + 30_000, "b")
                .await
                .is_empty()
        );
    }
    let session = records(&aws, Arc::new(clock.clone()))
        .partition(&EventKey::of(&completed).pk)
        .await
        .unwrap();
    assert_eq!(session.len(), 3);
    let events: Vec<_> = session.into_iter().map(|e| e.event).collect();
    assert_eq!(
        session_status(&events).unwrap().status.as_deref(),
        Some("COMPLETED")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicts_malformed_envelopes_and_filters() {
    let aws = LocalAws::provision().await;
    let clock = ManualClock::at_ms(T0);
    let c = consumer(&aws, &clock);
    let e = idnow_envelope("evt-c", "session.started", "sess-c", "STARTED", 1);
    assert!(
        c.process_batch(&[record("m1", &e)], T0 + 30_000, "b")
            .await
            .is_empty()
    );
    assert_eq!(jobs(&aws).await.len(), 1, "bi only takes session.completed");
    let mut conflicting = retry_of(&e);
    conflicting.payload_hash = "f".repeat(64);
    let bad = kyc_relay::processing::IngestRecord {
        message_id: "m3".into(),
        body: "{\"v\": 1, \"provider\": \"idnow\"".into(),
    };
    let failed = c
        .process_batch(&[record("m2", &conflicting), bad], T0 + 30_000, "b")
        .await;
    assert_eq!(failed, ["m3"], "the malformed record fails alone");
    assert!(jobs(&aws).await.is_empty(), "the conflict is not processed");
}

/// DynamoDB's item size: attribute names plus values (strings as UTF-8, numbers about one byte per
/// two digits plus one, maps and lists 3 bytes plus their elements).
pub fn item_size(item: &HashMap<String, aws_sdk_dynamodb::types::AttributeValue>) -> usize {
    fn value(v: &aws_sdk_dynamodb::types::AttributeValue) -> usize {
        use aws_sdk_dynamodb::types::AttributeValue as A;
        match v {
            A::S(s) => s.len(),
            A::N(n) => n.len().div_ceil(2) + 1,
            A::Bool(_) | A::Null(_) => 1,
            A::M(m) => 3 + m.iter().map(|(k, v)| k.len() + value(v) + 1).sum::<usize>(),
            A::L(l) => 3 + l.iter().map(|v| value(v) + 1).sum::<usize>(),
            _ => 0,
        }
    }
    item.iter().map(|(k, v)| k.len() + value(v)).sum()
}

/// ARCHITECTURE.md §3: with one destination and typical ids the event item is under 1 KB (1 write
/// unit); with the most destinations allowed and the longest ids and names the receiver accepts (in
/// 4-byte characters), the event item and a delivery item holding the longest history kept stay
/// under 4 KB (4 write units).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn items_stay_within_the_write_units_architecture_claims() {
    use kyc_relay::provider::{MAX_ID_CHARS, MAX_NAME_CHARS};
    use kyc_relay::records::{AttemptUpdate, DeliveryStatus, DeliveryStore, HISTORY_CAP};
    let aws = LocalAws::provision().await;
    let clock = ManualClock::at_ms(T0);
    let max_id = "x".repeat(64);
    let ids: Vec<String> = (0..kyc_relay::destination::MAX_DESTINATIONS)
        .map(|i| format!("{i}{}", &max_id[1..]))
        .collect();
    let destinations = format!(
        r#"{{"destinations": [{}]}}"#,
        ids.iter()
            .map(|id| format!(
                r#"{{"id": "{id}", "url": "http://127.0.0.1:9/x", "retry_policy": "idnow"}}"#
            ))
            .collect::<Vec<_>>()
            .join(",")
    );
    // The longest ids, event names and statuses intake accepts, in 4-byte characters.
    let long_id = "\u{1F600}".repeat(MAX_ID_CHARS);
    let long_name = "\u{1F600}".repeat(MAX_NAME_CHARS);
    let mut e = idnow_envelope(&long_id, "session.completed", &long_id, "COMPLETED", 1);
    e.event_type = long_name.clone();
    e.status = Some(long_name.clone());
    let c = consumer_for(&aws, &destinations, Arc::new(clock.clone()));
    assert!(
        c.process_batch(&[record("m1", &e)], T0 + 30_000, "b")
            .await
            .is_empty()
    );
    let key = EventKey::of(&e);
    let claim = item(&aws, &key.pk, &key.sk).await.unwrap();
    let worst = item_size(&claim);
    assert!(worst <= 4096, "worst-case claim item is {worst} bytes");

    let typical = idnow_envelope(
        "0b2f1c9e-5d7a-4e8b-9c3d-2a1f6e8b7c4d",
        "session.completed",
        "9f8e7d6c-5b4a-4c3d-8e2f-1a0b9c8d7e6f",
        "COMPLETED",
        1,
    );
    let one = consumer_for(
        &aws,
        r#"{"destinations": [{"id": "crm", "url": "http://127.0.0.1:9/x", "retry_policy": "idnow"}]}"#,
        Arc::new(clock.clone()),
    );
    assert!(
        one.process_batch(&[record("m2", &typical)], T0 + 30_000, "b")
            .await
            .is_empty()
    );
    let tkey = EventKey::of(&typical);
    let small = item_size(&item(&aws, &tkey.pk, &tkey.sk).await.unwrap());
    assert!(small <= 1024, "typical claim item is {small} bytes");

    // A delivery item with the longest history kept, the longest outcome texts and ids.
    let store = records(&aws, Arc::new(clock.clone()));
    let history: Vec<_> = (1..=HISTORY_CAP as u32)
        .map(|a| kyc_relay::delivery::AttemptLog {
            attempt: a + 40,
            at_ms: T0 + u64::from(a) * 1_000_000,
            outcome: "x".repeat(kyc_relay::retry::MAX_OUTCOME_BYTES),
            status_code: Some(503),
            latency_ms: 29_999,
            cycle: 41,
            probe: true,
        })
        .collect();
    let dkey = key.delivery(&ids[9], None);
    let update = AttemptUpdate {
        event_id: long_id.clone(),
        destination: ids[9].clone(),
        replay: None,
        attempt: 57,
        at_ms: T0,
        status: DeliveryStatus::Retrying,
        outcome: "x".repeat(kyc_relay::retry::MAX_OUTCOME_BYTES),
        status_code: Some(503),
        latency_ms: 29_999,
        lag_ms: None,
        history,
        redrive: false,
        expires_at_secs: T0 / 1000 + 86_400,
    };
    assert!(store.record_attempt(&dkey, &update).await.unwrap());
    let delivery = item_size(&item(&aws, &dkey.pk, &dkey.sk).await.unwrap());
    assert!(
        delivery <= 4096,
        "worst-case delivery item is {delivery} bytes"
    );
    println!(
        "item sizes: worst claim {worst} B, typical claim {small} B, worst delivery {delivery} B"
    );
}
