//! Every SQS sample under events/consumer and events/dispatcher is a valid event for its function:
//! it deserialises as Lambda's SQS event, its envelopes match what the receiver would build, and
//! the real consumer / dispatcher (against the emulator) reports exactly the failures its manifest
//! names. (events/receiver is covered by tests/receiver.rs.)

use aws_lambda_events::event::sqs::SqsEvent;
use integration_tests::peer::{Answer, Peer};
use integration_tests::{
    LocalAws, consumer_for, delivery_queue, dispatcher_for, read_json, repo_root,
};
use kyc_relay::aws::sqs_event;
use kyc_relay::clock::{Clock, ManualClock};
use kyc_relay::delivery::{DeliveryJob, Lane};
use kyc_relay::dispatch::JobRecord;
use kyc_relay::envelope::Envelope;
use kyc_relay::processing::IngestRecord;
use kyc_relay::provider::{Provider, idnow, incode};
use kyc_relay::records::{EventKey, RecordReader, session_status};
use std::sync::Arc;

/// The samples' time (events/generate.py: IAT): the relay runs at the time the samples were made,
/// so they never go stale.
const IAT_MS: u64 = 1_795_000_000_000;

fn manifest(folder: &str) -> Vec<(String, Vec<String>)> {
    let m = read_json(&format!("events/{folder}/manifest.json"));
    let mut files: Vec<String> = std::fs::read_dir(repo_root().join("events").join(folder))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "manifest.json")
        .collect();
    files.sort();
    let mut listed: Vec<String> = m.as_object().unwrap().keys().cloned().collect();
    listed.sort();
    assert_eq!(
        files, listed,
        "every file under events/{folder} is in its manifest"
    );
    listed
        .into_iter()
        .map(|f| {
            let failures = m[&f]["failures"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_string())
                .collect();
            (f, failures)
        })
        .collect()
}

fn sqs_records(folder: &str, file: &str) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(repo_root().join("events").join(folder).join(file)).unwrap();
    let event: SqsEvent =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{file}: not an SQS event: {e}"));
    sqs_event::records(&event)
}

/// The sample's envelope is what the receiver builds from the same body.
fn check_envelope(file: &str, envelope: &Envelope) {
    let parsed = match envelope.provider {
        Provider::Incode => incode::parse(&envelope.event, incode::TypeHint::None).unwrap(),
        Provider::Idnow => idnow::parse(&envelope.event).unwrap(),
    };
    assert_eq!(parsed.event_id, envelope.event_id, "{file}: event id");
    assert_eq!(
        parsed.payload_hash, envelope.payload_hash,
        "{file}: payload hash"
    );
    assert_eq!(parsed.status, envelope.status, "{file}: status");
}

fn local_destinations(peer: &Peer) -> String {
    std::fs::read_to_string(repo_root().join("config/destinations.local.json"))
        .unwrap()
        .replace("http://127.0.0.1:9103", &peer.url(""))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_samples_are_valid_and_processed_as_documented() {
    let peer = Peer::start(Answer::status(200)).await;
    for (file, expected) in manifest("consumer") {
        // A fresh table per sample: the samples share events, and a claim's lease would otherwise
        // make the next sample a concurrent duplicate.
        let aws = LocalAws::provision().await;
        let clock = ManualClock::at_ms(IAT_MS);
        let consumer = consumer_for(&aws, &local_destinations(&peer), Arc::new(clock.clone()));
        let records: Vec<IngestRecord> = sqs_records("consumer", &file)
            .into_iter()
            .map(|(message_id, body)| IngestRecord { message_id, body })
            .collect();
        for r in &records {
            if let Ok(envelope) = serde_json::from_str::<Envelope>(&r.body) {
                check_envelope(&file, &envelope);
            }
        }
        let mut failures = consumer
            .process_batch(&records, clock.now_ms() + 30_000, "sample")
            .await;
        failures.sort();
        assert_eq!(failures, expected, "{file}");
        let jobs = aws.drain(aws.get("DELIVERY_QUEUE_URL")).await.len();
        match file.as_str() {
            // Incode events go to "demo" only; IDnow events to "demo" and "raw-idnow".
            "idnow-out-of-order.json" => {
                assert_eq!(jobs, 4);
                let first: Envelope = serde_json::from_str(&records[0].body).unwrap();
                let events: Vec<_> = integration_tests::records(&aws, Arc::new(clock.clone()))
                    .partition(&EventKey::of(&first).pk)
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|e| e.event)
                    .collect();
                assert_eq!(
                    session_status(&events).unwrap().status.as_deref(),
                    Some("COMPLETED"),
                    "{file}"
                );
            }
            _ => assert_eq!(jobs, 1, "{file}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dispatcher_samples_are_valid_and_dispatched_as_documented() {
    let aws = LocalAws::provision().await;
    let peer = Peer::start(Answer::status(200)).await;
    let clock = ManualClock::at_ms(IAT_MS);
    let destinations = local_destinations(&peer);
    let dispatcher = dispatcher_for(
        &aws,
        delivery_queue(&aws),
        &destinations,
        Arc::new(clock.clone()),
    )
    .await;
    let consumer = consumer_for(&aws, &destinations, Arc::new(clock.clone()));
    for (file, expected) in manifest("dispatcher") {
        let records = sqs_records("dispatcher", &file);
        for (i, (_, body)) in records.iter().enumerate() {
            if let Ok(job) = serde_json::from_str::<DeliveryJob>(body) {
                check_envelope(&file, &job.envelope);
                // The consumer claimed the event before its jobs existed.
                let ingest = IngestRecord {
                    message_id: format!("{file}-{i}"),
                    body: serde_json::to_string(&job.envelope).unwrap(),
                };
                assert!(
                    consumer
                        .process_batch(&[ingest], clock.now_ms() + 30_000, "sample")
                        .await
                        .is_empty()
                );
            }
        }
        aws.drain(aws.get("DELIVERY_QUEUE_URL")).await;
        let records: Vec<JobRecord> = records
            .into_iter()
            .map(|(message_id, body)| JobRecord {
                message_id,
                body,
                lane: Lane::Fast,
            })
            .collect();
        let before = peer.hits();
        let mut failures = dispatcher
            .dispatch_batch(&records, clock.now_ms() + 120_000)
            .await;
        failures.sort();
        assert_eq!(failures, expected, "{file}");
        let sent = peer.hits() - before;
        match file.as_str() {
            "first-attempt.json" | "redriven-from-dlq.json" => {
                assert_eq!(sent, 1, "{file}: one delivery")
            }
            _ => assert_eq!(sent, 0, "{file}: nothing sent"),
        }
    }
    assert_eq!(
        aws.depth(aws.get("RETRY_QUEUE_URL")).await,
        1,
        "the early job went back, delayed, on the retry lane"
    );
    // What the destination received in the envelope format matches the published schema.
    let bodies: Vec<serde_json::Value> = peer
        .received()
        .iter()
        .filter_map(|r| serde_json::from_slice(&r.body).ok())
        .filter(|b: &serde_json::Value| b.get("raw_body").is_some())
        .collect();
    assert!(!bodies.is_empty());
    integration_tests::check_envelope_schema(&bodies).unwrap();
    let redriven = peer.received().last().unwrap().headers["webhook-id"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(redriven.starts_with("dlv_"));
}
