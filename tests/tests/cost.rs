//! What one webhook costs in AWS requests on the happy path, counted, not estimated: every SDK call
//! the three functions make goes through an interceptor that counts it by operation. Ten new Incode
//! webhooks with one destination flow receiver -> consumer -> dispatcher against the emulator, then
//! the same ten arrive again as provider retries.
//!
//! Budget per webhook (ARCHITECTURE.md §3): 2 DynamoDB write units (the claim and the delivery's
//! outcome; items under 1 KB, no transactions), 1.1 strongly consistent reads, 0.1 S3 PUT (one
//! archive object per consumer batch) and 1.5 SQS requests, counting the event source mapping's
//! ReceiveMessage/DeleteMessageBatch, which Lambda makes once per batch per queue (modelled here at
//! the batch size of 10). A duplicate costs one call and one write unit.

use integration_tests::counting::Calls;
use integration_tests::peer::{Answer, Peer};
use integration_tests::{LocalAws, item, read_json, test_lifetime};
use kyc_relay::aws::dynamodb::DynamoRecords;
use kyc_relay::aws::s3::S3Archive;
use kyc_relay::aws::sqs::{SqsDeliveryQueue, SqsIngestQueue};
use kyc_relay::aws::{apigw, ssm::SsmSecrets};
use kyc_relay::clock::{Clock, SystemClock};
use kyc_relay::delivery::Lane;
use kyc_relay::destination::Destinations;
use kyc_relay::dispatch::credentials::Vault;
use kyc_relay::dispatch::transport::HttpTransport;
use kyc_relay::dispatch::{Dispatcher, DispatcherSettings, JobRecord};
use kyc_relay::envelope::Envelope;
use kyc_relay::intake::Intake;
use kyc_relay::processing::{IngestRecord, Processor};
use kyc_relay::records::EventKey;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// DynamoDB's item size: attribute names plus values (strings as UTF-8, numbers about one byte per
/// two digits plus one, maps and lists 3 bytes plus their elements).
fn item_size(item: &HashMap<String, aws_sdk_dynamodb::types::AttributeValue>) -> usize {
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

const EVENTS: usize = 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_webhook_with_one_destination_costs_2_write_units_and_a_duplicate_one_call() {
    let aws = LocalAws::provision().await;
    let calls = Calls::default();
    let (sqs, ddb) = calls.clients(&aws.sdk);
    let s3 = calls.s3_client(&aws.sdk);
    let destination = Peer::start(Answer::json(200, "{}")).await;
    let destinations = format!(
        r#"{{"destinations": [{{"id": "crm", "url": "{}", "retry_policy": "incode"}}]}}"#,
        destination.url("/hook")
    );
    let http =
        kyc_relay::http_client::build(Duration::from_secs(2), Duration::from_secs(5)).unwrap();
    let clock = Arc::new(SystemClock);

    // Receiver: ten distinct webhooks.
    let mut env = aws.env();
    env.set("IDNOW_ENABLED", "false");
    let intake = Intake::from_env(
        &env,
        SqsIngestQueue::from_client(sqs.clone(), aws.get("INGEST_QUEUE_URL")),
        http.clone(),
        clock.clone(),
    )
    .unwrap();
    let template = read_json("events/receiver/incode-onboarding-status.json");
    for i in 0..EVENTS {
        let mut raw = template.clone();
        raw["body"] =
            format!(r#"{{"interviewId":"cost-{i}","onboardingStatus":"ONBOARDING_FINISHED"}}"#)
                .into();
        let response = apigw::handle(&intake, raw).await;
        assert_eq!(response.status_code, 200);
    }

    // Consumer: one batch, as the event source mapping would deliver it.
    let consumer = Processor {
        store: DynamoRecords::from_client(ddb.clone(), aws.get("RECORDS_TABLE"), clock.clone()),
        queue: SqsDeliveryQueue::from_client(
            sqs.clone(),
            aws.get("DELIVERY_QUEUE_URL"),
            None,
            None,
        ),
        archive: S3Archive::from_client(s3.clone(), aws.get("ARCHIVE_BUCKET")),
        destinations: Destinations::parse_with(
            &destinations,
            kyc_relay::config::OutboundPolicy::local(),
        )
        .unwrap(),
        clock: clock.clone(),
        lifetime: test_lifetime(),
    };
    let ingested = aws.drain(aws.get("INGEST_QUEUE_URL")).await;
    assert_eq!(ingested.len(), EVENTS);
    let records: Vec<IngestRecord> = ingested
        .iter()
        .map(|m| IngestRecord {
            message_id: m.message_id().unwrap().into(),
            body: m.body().unwrap().into(),
        })
        .collect();
    assert!(
        consumer
            .process_batch(&records, SystemClock.now_ms() + 30_000, "cost")
            .await
            .is_empty()
    );

    // Dispatcher: one batch of the ten jobs.
    let no_ssm: Option<&SsmSecrets> = None;
    let parsed =
        Destinations::parse_with(&destinations, kyc_relay::config::OutboundPolicy::local())
            .unwrap();
    let vault = Vault::resolve(&parsed, no_ssm, clock.clone())
        .await
        .unwrap();
    let dispatcher = Dispatcher::new(
        DynamoRecords::from_client(ddb.clone(), aws.get("RECORDS_TABLE"), clock.clone()),
        SqsDeliveryQueue::from_client(
            sqs.clone(),
            aws.get("DELIVERY_QUEUE_URL"),
            Some(aws.get("RETRY_QUEUE_URL").into()),
            Some(aws.get("DELIVERY_DLQ_URL").into()),
        ),
        HttpTransport::new(http),
        parsed,
        vault,
        DispatcherSettings::default(),
        clock.clone(),
    );
    let jobs = aws.drain(aws.get("DELIVERY_QUEUE_URL")).await;
    assert_eq!(jobs.len(), EVENTS);
    let batch: Vec<JobRecord> = jobs
        .iter()
        .map(|m| JobRecord {
            message_id: m.message_id().unwrap().into(),
            body: m.body().unwrap().into(),
            lane: Lane::Fast,
        })
        .collect();
    assert!(
        dispatcher
            .dispatch_batch(&batch, SystemClock.now_ms() + 120_000)
            .await
            .is_empty()
    );
    assert_eq!(destination.hits(), EVENTS, "every event delivered once");

    // --- DynamoDB: writes, and the size of what they wrote.
    let writes = [
        "PutItem",
        "UpdateItem",
        "DeleteItem",
        "BatchWriteItem",
        "TransactWriteItems",
    ]
    .iter()
    .map(|op| calls.get(&format!("dynamodb.{op}")))
    .sum::<u64>();
    assert_eq!(
        calls.get("dynamodb.TransactWriteItems"),
        0,
        "no transactions (they cost double)"
    );
    let mut largest = 0;
    for m in &ingested {
        let envelope: Envelope = serde_json::from_str(m.body().unwrap()).unwrap();
        let key = EventKey::of(&envelope);
        let event = item(&aws, &key.pk, &key.sk).await.unwrap();
        let delivery_key = key.delivery("crm", None);
        let delivery = item(&aws, &delivery_key.pk, &delivery_key.sk)
            .await
            .unwrap();
        assert_eq!(delivery["status"].as_s().unwrap(), "DELIVERED");
        largest = largest.max(item_size(&event)).max(item_size(&delivery));
    }
    assert!(
        largest < 1024,
        "items stay under 1 KB (one write unit per write): largest {largest} bytes"
    );
    let write_units_per_event = writes as f64 / EVENTS as f64;
    // Every read is a strongly consistent Query of at most 4 KB: one read unit each.
    let reads_per_event = calls.get("dynamodb.Query") as f64 / EVENTS as f64;
    let puts_per_event = calls.get("s3.PutObject") as f64 / EVENTS as f64;

    // --- SQS: our own requests, plus the event source mapping's per batch and queue.
    let own_sqs = calls.service_total("sqs");
    let esm_sqs = 2 /* queues */ * 2 /* ReceiveMessage + DeleteMessageBatch */;
    let sqs_per_event = (own_sqs + esm_sqs) as f64 / EVENTS as f64;

    println!("calls: {:?}", calls.0.lock().unwrap());
    println!(
        "per webhook: {write_units_per_event:.2} DynamoDB write units (largest item {largest} B), \
         {reads_per_event:.2} strongly consistent reads, {puts_per_event:.2} S3 PUT, \
         {sqs_per_event:.2} SQS requests ({:.2} own + {:.2} event source mapping)",
        own_sqs as f64 / EVENTS as f64,
        esm_sqs as f64 / EVENTS as f64
    );
    assert!(
        write_units_per_event <= 2.0,
        "{write_units_per_event} write units per webhook"
    );
    assert!(
        reads_per_event <= 1.1,
        "{reads_per_event} reads per webhook"
    );
    assert!(
        puts_per_event <= 0.1,
        "{puts_per_event} S3 PUTs per webhook"
    );
    assert!(
        sqs_per_event <= 1.5,
        "{sqs_per_event} SQS requests per webhook"
    );
    assert_eq!(
        calls.get("sqs.SendMessage"),
        EVENTS as u64,
        "one SendMessage per webhook"
    );
    assert_eq!(
        calls.get("sqs.SendMessageBatch"),
        1,
        "one batch send for the ten delivery jobs"
    );

    // --- Duplicates: the ten again as provider retries (other requests, so other intake ids).
    calls.0.lock().unwrap().clear();
    let retries: Vec<IngestRecord> = ingested
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let mut e: Envelope = serde_json::from_str(m.body().unwrap()).unwrap();
            e.intake_id = kyc_relay::envelope::new_intake_id();
            IngestRecord {
                message_id: format!("retry-{i}"),
                body: serde_json::to_string(&e).unwrap(),
            }
        })
        .collect();
    assert!(
        consumer
            .process_batch(&retries, SystemClock.now_ms() + 30_000, "cost-retries")
            .await
            .is_empty()
    );
    let duplicate_calls = calls.0.lock().unwrap().clone();
    println!("duplicates: {duplicate_calls:?}");
    assert_eq!(
        duplicate_calls.get("dynamodb.PutItem").copied(),
        Some(EVENTS as u64)
    );
    assert_eq!(
        duplicate_calls.values().sum::<u64>(),
        EVENTS as u64,
        "a duplicate costs one call (a refused conditional put: one write unit)"
    );
}
