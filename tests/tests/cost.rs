//! What one webhook costs in AWS requests on the happy path, counted, not estimated: every SDK call
//! the three functions make goes through an interceptor that counts it by operation. Ten new Incode
//! webhooks with one destination flow receiver -> consumer -> dispatcher against the emulator.
//!
//! Budget per webhook: at most 3 DynamoDB write units (items under 1 KB, no transactions) and 1.6
//! SQS requests, counting the event source mapping's ReceiveMessage/DeleteMessageBatch, which Lambda
//! makes once per batch per queue (modelled here at the batch size of 10).

use integration_tests::counting::Calls;
use integration_tests::peer::{Answer, Peer};
use integration_tests::{LocalAws, item, read_json};
use kyc_relay::aws::dynamodb::{DynamoEventStore, DynamoSessionStore};
use kyc_relay::aws::sqs::{SqsDeliveryQueue, SqsIngestQueue};
use kyc_relay::aws::{apigw, ssm::SsmSecrets};
use kyc_relay::clock::SystemClock;
use kyc_relay::config::OutboundPolicy;
use kyc_relay::destination::Destinations;
use kyc_relay::dispatch::Dispatcher;
use kyc_relay::intake::Intake;
use kyc_relay::processing::{IngestRecord, Processor, ProcessorSettings};
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
async fn one_webhook_with_one_destination_costs_at_most_3_write_units_and_1_6_sqs_requests() {
    let aws = LocalAws::provision().await;
    let calls = Calls::default();
    let (sqs, ddb) = calls.clients(&aws.sdk);
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
        events: DynamoEventStore::from_client(ddb.clone(), aws.get("EVENTS_TABLE")),
        sessions: DynamoSessionStore::from_client(ddb.clone(), aws.get("SESSIONS_TABLE")),
        queue: SqsDeliveryQueue::from_client(sqs.clone(), aws.get("DELIVERY_QUEUE_URL"), None),
        destinations: Destinations::parse_with(&destinations, OutboundPolicy::local()).unwrap(),
        clock: clock.clone(),
        settings: ProcessorSettings {
            idempotency_ttl_secs: 7 * 86_400,
            session_ttl_secs: 90 * 86_400,
            orphan_after_secs: 3600,
        },
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
            .process_batch(
                &records,
                kyc_relay::clock::Clock::now_ms(&SystemClock) + 30_000
            )
            .await
            .is_empty()
    );

    // Dispatcher: one batch of the ten jobs.
    let no_ssm: Option<&SsmSecrets> = None;
    let dispatcher = Dispatcher::new(
        DynamoEventStore::from_client(ddb.clone(), aws.get("EVENTS_TABLE")),
        SqsDeliveryQueue::from_client(
            sqs.clone(),
            aws.get("DELIVERY_QUEUE_URL"),
            Some(aws.get("DELIVERY_DLQ_URL").into()),
        ),
        Destinations::parse_with(&destinations, OutboundPolicy::local()).unwrap(),
        no_ssm,
        http,
        clock,
    )
    .await
    .unwrap();
    let jobs = aws.drain(aws.get("DELIVERY_QUEUE_URL")).await;
    assert_eq!(jobs.len(), EVENTS);
    let batch: Vec<(String, String)> = jobs
        .iter()
        .map(|m| (m.message_id().unwrap().into(), m.body().unwrap().into()))
        .collect();
    assert!(dispatcher.dispatch_batch(&batch).await.is_empty());
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
    for i in 0..EVENTS {
        let session = item(&aws, aws.get("SESSIONS_TABLE"), &format!("incode#cost-{i}"))
            .await
            .unwrap();
        largest = largest.max(item_size(&session));
    }
    for m in &ingested {
        let envelope: kyc_relay::envelope::Envelope =
            serde_json::from_str(m.body().unwrap()).unwrap();
        let record = item(
            &aws,
            aws.get("EVENTS_TABLE"),
            &format!("incode#{}", envelope.event_id),
        )
        .await
        .unwrap();
        assert_eq!(
            record["deliveries"].as_m().unwrap()["crm"].as_m().unwrap()["status"]
                .as_s()
                .unwrap(),
            "DELIVERED"
        );
        largest = largest.max(item_size(&record));
    }
    assert!(
        largest < 1024,
        "items stay under 1 KB (one write unit per write): largest {largest} bytes"
    );
    let write_units_per_event = writes as f64 / EVENTS as f64;

    // --- SQS: our own requests, plus the event source mapping's per batch and queue.
    let own_sqs = calls.service_total("sqs");
    let esm_sqs = 2 /* queues */ * 2 /* ReceiveMessage + DeleteMessageBatch */;
    let sqs_per_event = (own_sqs + esm_sqs) as f64 / EVENTS as f64;
    let reads_per_event = calls.get("dynamodb.GetItem") as f64 / EVENTS as f64;

    println!("calls: {:?}", calls.0.lock().unwrap());
    println!(
        "per webhook: {write_units_per_event:.2} DynamoDB write units (largest item {largest} B), \
         {reads_per_event:.2} strongly consistent reads, {sqs_per_event:.2} SQS requests ({:.2} own + {:.2} event source mapping)",
        own_sqs as f64 / EVENTS as f64,
        esm_sqs as f64 / EVENTS as f64
    );
    assert!(
        write_units_per_event <= 3.0,
        "{write_units_per_event} write units per webhook"
    );
    assert!(
        sqs_per_event <= 1.6,
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
}
