//! The consumer against the emulator's DynamoDB and SQS: exactly-once claims, session state that
//! only moves forward, one delivery job per subscribed destination, and repair after a crash.

use aws_sdk_dynamodb::types::AttributeValue;
use integration_tests::{LocalAws, idnow_envelope, incode_envelope, item, record};
use kyc_relay::aws::dynamodb::{DynamoEventStore, DynamoSessionStore};
use kyc_relay::aws::sqs::SqsDeliveryQueue;
use kyc_relay::clock::ManualClock;
use kyc_relay::config::OutboundPolicy;
use kyc_relay::delivery::DeliveryJob;
use kyc_relay::destination::Destinations;
use kyc_relay::idempotency::{AttemptUpdate, DeliveryStatus, EventClaim, EventStore, event_key};
use kyc_relay::processing::{Processor, ProcessorSettings};
use std::sync::Arc;

type Consumer = Processor<DynamoEventStore, DynamoSessionStore, SqsDeliveryQueue>;

const T0: u64 = 1_795_000_000_000;
const DESTINATIONS: &str = r#"{"destinations": [
  {"id": "crm", "url": "http://127.0.0.1:9/crm", "retry_policy": "idnow"},
  {"id": "bi", "url": "http://127.0.0.1:9/bi", "retry_policy": "incode",
   "providers": ["idnow"], "event_types": ["session.completed"]}
]}"#;

fn consumer_with_queue(aws: &LocalAws, clock: &ManualClock, queue_url: &str) -> Consumer {
    Processor {
        events: DynamoEventStore::new(&aws.sdk, aws.get("EVENTS_TABLE")),
        sessions: DynamoSessionStore::new(&aws.sdk, aws.get("SESSIONS_TABLE")),
        queue: SqsDeliveryQueue::new(&aws.sdk, queue_url, None),
        destinations: Destinations::parse_with(DESTINATIONS, OutboundPolicy::local()).unwrap(),
        clock: Arc::new(clock.clone()),
        settings: ProcessorSettings {
            idempotency_ttl_secs: 7 * 86_400,
            session_ttl_secs: 90 * 86_400,
            orphan_after_secs: 3600,
        },
    }
}

fn delivered(at_ms: u64) -> AttemptUpdate {
    AttemptUpdate {
        attempt: 1,
        at_ms,
        status: DeliveryStatus::Delivered,
        outcome: "http_200".into(),
        status_code: Some(200),
        latency_ms: 5,
        redrive: false,
    }
}

/// Message m1 claims `e` in DynamoDB and the invocation dies right there (nothing else happened).
async fn claim_only(aws: &LocalAws, e: &kyc_relay::envelope::Envelope, destinations: &[String]) {
    let key = event_key(e.provider, &e.event_id);
    DynamoEventStore::new(&aws.sdk, aws.get("EVENTS_TABLE"))
        .claim(&EventClaim {
            key: &key,
            message_id: "m1",
            payload_hash: &e.payload_hash,
            destinations,
            now_ms: T0,
            lease_until_ms: T0 + 30_000,
            expires_at_secs: T0 / 1000 + 86_400,
        })
        .await
        .unwrap();
}

/// Message m1 claims `e` while the delivery queue is unreachable: the claim succeeds, the send
/// fails, and m1 is reported for redelivery.
async fn claim_without_sending(
    aws: &LocalAws,
    clock: &ManualClock,
    e: &kyc_relay::envelope::Envelope,
) {
    let broken = consumer_with_queue(
        aws,
        clock,
        &format!("{}-gone", aws.get("DELIVERY_QUEUE_URL")),
    );
    assert_eq!(
        broken.process_batch(&[record("m1", e)], T0 + 30_000).await,
        ["m1"]
    );
}

fn consumer(aws: &LocalAws, clock: &ManualClock) -> Consumer {
    consumer_with_queue(aws, clock, aws.get("DELIVERY_QUEUE_URL"))
}

async fn jobs(aws: &LocalAws) -> Vec<DeliveryJob> {
    aws.drain(aws.get("DELIVERY_QUEUE_URL"))
        .await
        .iter()
        .map(|m| serde_json::from_str(m.body().unwrap()).expect("delivery job"))
        .collect()
}

fn n(item: &std::collections::HashMap<String, AttributeValue>, key: &str) -> u64 {
    item[key].as_n().unwrap().parse().unwrap()
}

fn s<'a>(item: &'a std::collections::HashMap<String, AttributeValue>, key: &str) -> &'a str {
    item[key].as_s().unwrap()
}

fn delivery_status(item: &std::collections::HashMap<String, AttributeValue>, dest: &str) -> String {
    item["deliveries"].as_m().unwrap()[dest].as_m().unwrap()["status"]
        .as_s()
        .unwrap()
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_event_twice_in_one_batch_and_in_two_batches_is_processed_once() {
    let aws = LocalAws::provision().await;
    let clock = ManualClock::at_ms(T0);
    let c = consumer(&aws, &clock);
    let e = idnow_envelope("evt-dup", "session.completed", "sess-1", "COMPLETED", 4);

    let failed = c
        .process_batch(&[record("m1", &e), record("m2", &e)], T0 + 30_000)
        .await;
    assert!(failed.is_empty(), "{failed:?}");
    let first = jobs(&aws).await;
    let mut dests: Vec<&str> = first.iter().map(|j| j.destination_id.as_str()).collect();
    dests.sort();
    assert_eq!(dests, ["bi", "crm"], "one job per subscribed destination");
    assert!(
        first
            .iter()
            .all(|j| j.attempt == 1 && j.event_key == "idnow#evt-dup")
    );

    let session = item(&aws, aws.get("SESSIONS_TABLE"), "idnow#sess-1")
        .await
        .unwrap();
    assert_eq!(s(&session, "status"), "COMPLETED");
    assert_eq!(n(&session, "updated_at"), T0);
    let record_item = item(&aws, aws.get("EVENTS_TABLE"), "idnow#evt-dup")
        .await
        .unwrap();
    assert_eq!(delivery_status(&record_item, "crm"), "PENDING");
    assert_eq!(delivery_status(&record_item, "bi"), "PENDING");

    // A provider retry in a later batch, while the deliveries are still pending: deferred (it comes
    // back later), no second session update, no second job.
    clock.advance_ms(60_000);
    assert_eq!(
        c.process_batch(&[record("m3", &e)], T0 + 90_000).await,
        ["m3"]
    );
    assert!(jobs(&aws).await.is_empty(), "no second set of jobs");
    let session = item(&aws, aws.get("SESSIONS_TABLE"), "idnow#sess-1")
        .await
        .unwrap();
    assert_eq!(
        n(&session, "updated_at"),
        T0,
        "the session was updated once"
    );

    // Once the dispatcher has attempted the deliveries, the retry is acknowledged without effects.
    let store = DynamoEventStore::new(&aws.sdk, aws.get("EVENTS_TABLE"));
    for dest in ["bi", "crm"] {
        assert!(
            store
                .record_attempt("idnow#evt-dup", dest, &delivered(T0 + 61_000))
                .await
                .unwrap()
        );
    }
    clock.advance_ms(180_000);
    assert!(
        c.process_batch(&[record("m3", &e)], T0 + 270_000)
            .await
            .is_empty()
    );
    assert!(jobs(&aws).await.is_empty());
    let session = item(&aws, aws.get("SESSIONS_TABLE"), "idnow#sess-1")
        .await
        .unwrap();
    assert_eq!(n(&session, "updated_at"), T0, "still updated once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_concurrent_invocations_with_the_same_event_process_it_once() {
    let aws = LocalAws::provision().await;
    let clock = ManualClock::at_ms(T0);
    let c = Arc::new(consumer(&aws, &clock));
    let e = incode_envelope("interview-concurrent", "ONBOARDING_FINISHED");
    let handles: Vec<_> = (0..20)
        .map(|i| {
            let c = c.clone();
            let r = record(&format!("m{i}"), &e);
            tokio::spawn(async move { c.process_batch(&[r], T0 + 30_000).await })
        })
        .collect();
    let mut failures = 0;
    for h in handles {
        failures += h.await.unwrap().len();
    }
    assert_eq!(
        failures, 19,
        "the 19 concurrent duplicates come back as batch item failures"
    );
    let js = jobs(&aws).await;
    assert_eq!(js.len(), 1, "one job: Incode events go to crm only");
    assert_eq!(js[0].destination_id, "crm");
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

    // 1. The invocation dies right after its claim (the claim is all that reached DynamoDB).
    claim_only(&aws, &e, &["bi".to_string(), "crm".to_string()]).await;
    let c = consumer(&aws, &clock);

    // 2. While the lease runs, the message cannot be processed elsewhere.
    assert_eq!(
        c.process_batch(&[record("m1", &e)], T0 + 60_000).await,
        ["m1"]
    );
    assert!(jobs(&aws).await.is_empty());

    // 3. SQS redelivers the message after its visibility timeout: the lease is over, the pending
    //    deliveries are sent and the session updated.
    clock.advance_ms(180_000);
    assert!(
        c.process_batch(&[record("m1", &e)], T0 + 210_000)
            .await
            .is_empty()
    );
    assert_eq!(jobs(&aws).await.len(), 2);
    let session = item(&aws, aws.get("SESSIONS_TABLE"), "idnow#sess-crash")
        .await
        .unwrap();
    assert_eq!(s(&session, "status"), "COMPLETED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_send_is_retried_by_the_same_message_and_nothing_is_lost() {
    let aws = LocalAws::provision().await;
    let clock = ManualClock::at_ms(T0);
    let e = incode_envelope("interview-send", "ID_VALIDATION_FINISHED");
    claim_without_sending(&aws, &clock, &e).await;
    // A provider retry in between is deferred: the first message still owns the event.
    clock.advance_ms(60_000);
    let c = consumer(&aws, &clock);
    assert_eq!(
        c.process_batch(&[record("m2", &e)], T0 + 90_000).await,
        ["m2"]
    );
    assert!(jobs(&aws).await.is_empty());
    // The first message comes back and completes the fan-out.
    clock.advance_ms(120_000);
    assert!(
        c.process_batch(&[record("m1", &e)], T0 + 210_000)
            .await
            .is_empty()
    );
    assert_eq!(jobs(&aws).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_orphaned_event_is_repaired_by_a_later_duplicate() {
    let aws = LocalAws::provision().await;
    let clock = ManualClock::at_ms(T0);
    let e = incode_envelope("interview-orphan", "ONBOARDING_FINISHED");
    claim_without_sending(&aws, &clock, &e).await;
    // m1 ended in the ingest DLQ; an hour later it is redriven (SQS gives it a new message id) or
    // the provider retries: either way a new message id.
    clock.advance_ms(3_600_000);
    let c = consumer(&aws, &clock);
    assert!(
        c.process_batch(&[record("m9", &e)], T0 + 3_630_000)
            .await
            .is_empty()
    );
    assert_eq!(jobs(&aws).await.len(), 1, "the pending delivery is sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_order_idnow_events_end_in_the_furthest_state() {
    let aws = LocalAws::provision().await;
    let clock = ManualClock::at_ms(T0);
    let c = consumer(&aws, &clock);
    let completed = idnow_envelope("evt-4", "session.completed", "sess-ooo", "COMPLETED", 4);
    let created = idnow_envelope("evt-1", "session.created", "sess-ooo", "CREATED", 1);
    assert!(
        c.process_batch(&[record("m1", &completed)], T0 + 30_000)
            .await
            .is_empty()
    );
    clock.advance_ms(1000);
    assert!(
        c.process_batch(&[record("m2", &created)], T0 + 31_000)
            .await
            .is_empty()
    );

    let session = item(&aws, aws.get("SESSIONS_TABLE"), "idnow#sess-ooo")
        .await
        .unwrap();
    assert_eq!(s(&session, "status"), "COMPLETED");
    assert_eq!(s(&session, "event_id"), "evt-4");
    // The older event is still recorded and relayed: destinations decide what it means to them.
    assert!(
        item(&aws, aws.get("EVENTS_TABLE"), "idnow#evt-1")
            .await
            .is_some()
    );
    let js = jobs(&aws).await;
    assert_eq!(
        js.iter().filter(|j| j.event_key == "idnow#evt-1").count(),
        1,
        "created goes to crm"
    );
    assert_eq!(
        js.iter().filter(|j| j.event_key == "idnow#evt-4").count(),
        2,
        "completed to crm and bi"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payload_conflict_is_reported_and_not_processed() {
    let aws = LocalAws::provision().await;
    let clock = ManualClock::at_ms(T0);
    let c = consumer(&aws, &clock);
    let original = idnow_envelope("evt-c", "session.created", "sess-c", "CREATED", 1);
    let conflicting = idnow_envelope("evt-c", "session.completed", "sess-c", "COMPLETED", 1);
    assert_ne!(original.payload_hash, conflicting.payload_hash);
    assert!(
        c.process_batch(&[record("m1", &original)], T0 + 30_000)
            .await
            .is_empty()
    );
    clock.advance_ms(60_000);
    assert!(
        c.process_batch(&[record("m2", &conflicting)], T0 + 90_000)
            .await
            .is_empty(),
        "acknowledged"
    );
    let session = item(&aws, aws.get("SESSIONS_TABLE"), "idnow#sess-c")
        .await
        .unwrap();
    assert_eq!(
        s(&session, "status"),
        "CREATED",
        "the conflicting event did not move the session"
    );
    let record_item = item(&aws, aws.get("EVENTS_TABLE"), "idnow#evt-c")
        .await
        .unwrap();
    assert_eq!(s(&record_item, "payload_hash"), original.payload_hash);
    assert_eq!(jobs(&aws).await.len(), 1, "only the original's job");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_envelope_fails_alone_and_filters_exclude_destinations() {
    let aws = LocalAws::provision().await;
    let clock = ManualClock::at_ms(T0);
    let c = consumer(&aws, &clock);
    let good = incode_envelope("interview-ok", "POST_PROCESSING_FINISHED");
    let bad = kyc_relay::processing::IngestRecord {
        message_id: "m-bad".into(),
        body: "{\"not\": \"an envelope\"}".into(),
    };
    let failed = c
        .process_batch(&[bad, record("m-good", &good)], T0 + 30_000)
        .await;
    assert_eq!(
        failed,
        ["m-bad"],
        "only the malformed record comes back (and ends in the ingest DLQ)"
    );
    let js = jobs(&aws).await;
    assert_eq!(js.len(), 1);
    assert_eq!(
        js[0].destination_id, "crm",
        "bi only takes IDnow session.completed"
    );
    let record_item = item(&aws, aws.get("EVENTS_TABLE"), &js[0].event_key)
        .await
        .unwrap();
    assert!(!record_item["deliveries"].as_m().unwrap().contains_key("bi"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_record_is_claimable_again_without_waiting_for_ttl() {
    let aws = LocalAws::provision().await;
    let clock = ManualClock::at_ms(T0);
    let c = consumer(&aws, &clock);
    let e = incode_envelope("interview-ttl", "ONBOARDING_FINISHED");
    assert!(
        c.process_batch(&[record("m1", &e)], T0 + 30_000)
            .await
            .is_empty()
    );
    assert_eq!(jobs(&aws).await.len(), 1);
    clock.advance_ms(7 * 86_400_000 + 1_000);
    assert!(
        c.process_batch(&[record("m2", &e)], clock_deadline(&clock))
            .await
            .is_empty()
    );
    assert_eq!(
        jobs(&aws).await.len(),
        1,
        "outside the dedup window the event is new again"
    );
}

fn clock_deadline(clock: &ManualClock) -> u64 {
    use kyc_relay::clock::Clock;
    clock.now_ms() + 30_000
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_update_lost_in_a_crash_is_applied_by_a_later_duplicate() {
    let aws = LocalAws::provision().await;
    let clock = ManualClock::at_ms(T0);
    let e = idnow_envelope("evt-nodest", "session.created", "sess-nodest", "CREATED", 1);
    // The claiming message recorded an event with no delivery pending, then died before the
    // session update (and went to the ingest DLQ).
    claim_only(&aws, &e, &[]).await;
    assert!(
        item(&aws, aws.get("SESSIONS_TABLE"), "idnow#sess-nodest")
            .await
            .is_none()
    );
    // Its redriven copy (a new message id) is a duplicate with nothing pending: the session update
    // is re-applied, no job is sent.
    clock.advance_ms(1_000_000);
    let c = consumer(&aws, &clock);
    assert!(
        c.process_batch(&[record("m1-redriven", &e)], T0 + 1_030_000)
            .await
            .is_empty()
    );
    let session = item(&aws, aws.get("SESSIONS_TABLE"), "idnow#sess-nodest")
        .await
        .unwrap();
    assert_eq!(s(&session, "status"), "CREATED");
    assert!(jobs(&aws).await.is_empty());
    // Applying it once more changes nothing.
    clock.advance_ms(1_000);
    assert!(
        c.process_batch(&[record("m2", &e)], T0 + 1_031_000)
            .await
            .is_empty()
    );
    let again = item(&aws, aws.get("SESSIONS_TABLE"), "idnow#sess-nodest")
        .await
        .unwrap();
    assert_eq!(n(&again, "updated_at"), n(&session, "updated_at"));
}
