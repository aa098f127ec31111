//! Logs never carry secrets, tokens, header values or body fragments, at any level: every sample
//! under events/receiver goes through the receiver's handler, and the consumer and dispatcher samples
//! through theirs, with the project at `trace` (the most verbose `LOG_LEVEL`) and the production
//! subscriber (`telemetry::subscriber`) writing into a buffer. Then nothing the requests carried may
//! appear in it, except the fields that are logged by design and validated at intake (ARCHITECTURE.md
//! § 1.2): the event id, the event type or name and the session status.

use integration_tests::peer::{Answer, Peer};
use integration_tests::{
    LocalAws, consumer_for, delivery_queue, dispatcher_for, local_env, read_json, repo_root,
};
use kyc_relay::aws::{apigw, sqs_event};
use kyc_relay::clock::{Clock, ManualClock, SystemClock};
use kyc_relay::delivery::Lane;
use kyc_relay::dispatch::JobRecord;
use kyc_relay::intake::Intake;
use kyc_relay::processing::IngestRecord;
use kyc_relay::telemetry;
use serde_json::Value;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing_subscriber::util::SubscriberInitExt;

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Capture {
        self.clone()
    }
}

/// Body fields that are log fields by design (validated at intake; not personal data).
const LOGGED_FIELDS: &[&str] = &[
    "eventId",
    "eventName",
    "sessionStatus",
    "onboardingStatus",
    "eventType",
    "event_type",
];

const MIN_FRAGMENT: usize = 6;

fn strings(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Array(a) => a.iter().for_each(|x| strings(x, out)),
        Value::Object(o) => {
            for (k, x) in o {
                if !LOGGED_FIELDS.contains(&k.as_str()) {
                    strings(x, out);
                }
            }
        }
        _ => {}
    }
}

/// What a body holds that must not be logged.
fn body_fragments(body: &str) -> Vec<String> {
    use base64::Engine;
    let mut out = Vec::new();
    if let Ok(v) = serde_json::from_str::<Value>(body) {
        strings(&v, &mut out);
    } else if body.split('.').count() == 3 {
        // A compact JWT: the token, its segments, and the event inside.
        out.push(body.to_string());
        out.extend(body.split('.').map(str::to_string));
        if let Some(claims) = body
            .split('.')
            .nth(1)
            .and_then(|p| {
                base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(p)
                    .ok()
            })
            .and_then(|p| serde_json::from_slice::<Value>(&p).ok())
        {
            strings(&claims["data"], &mut out);
        }
    } else if body.contains('=') {
        // A form: its values, except the protocol constant `grant_type`.
        for pair in body.split('&') {
            if let Some((k, v)) = pair.split_once('=')
                && k != "grant_type"
            {
                out.push(v.to_string());
            }
        }
    } else {
        out.extend(
            body.as_bytes()
                .chunks(16)
                .map(|c| String::from_utf8_lossy(c).into_owned()),
        );
    }
    out
}

fn request_body(event: &Value) -> String {
    use base64::Engine;
    let body = event["body"].as_str().unwrap_or_default();
    if event["isBase64Encoded"].as_bool().unwrap_or(false) {
        base64::engine::general_purpose::STANDARD
            .decode(body)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_else(|_| body.to_string())
    } else {
        body.to_string()
    }
}

fn files(folder: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(repo_root().join("events").join(folder))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "manifest.json")
        .collect();
    names.sort();
    names
}

/// The subscriber is per thread: a current-thread runtime keeps every task on this one.
#[tokio::test(flavor = "current_thread")]
async fn logs_hold_no_secret_token_header_value_or_body_fragment_at_trace() {
    let capture = Capture::default();
    let _guard = telemetry::subscriber(telemetry::filter(Some("trace"), None), capture.clone())
        .set_default();

    let mut forbidden: Vec<String> = Vec::new();
    let local = local_env();
    for (k, v) in local.pairs() {
        if ["SECRET", "KEY", "VALUE", "TOKEN"]
            .iter()
            .any(|s| k.contains(s))
        {
            forbidden.push(v.to_string());
        }
    }
    let destinations_doc =
        std::fs::read_to_string(repo_root().join("config/destinations.local.json")).unwrap();
    let mut doc_strings = Vec::new();
    strings(
        &serde_json::from_str(&destinations_doc).unwrap(),
        &mut doc_strings,
    );
    forbidden.extend(doc_strings.into_iter().filter(|s| s.starts_with("whsec_")));

    // Receiver.
    let aws = LocalAws::provision().await;
    let jwks = Peer::start(Answer::json(
        200,
        std::fs::read_to_string(repo_root().join("events/keys/jwks.json")).unwrap(),
    ))
    .await;
    let mut env = aws.env();
    env.set("IDNOW_JWKS_URL", jwks.url("/jwks.json"));
    let http =
        kyc_relay::http_client::build(Duration::from_secs(2), Duration::from_secs(4)).unwrap();
    let queue = kyc_relay::aws::sqs::SqsIngestQueue::new(&aws.sdk, aws.get("INGEST_QUEUE_URL"));
    let intake = Intake::from_env(&env, queue, http, Arc::new(SystemClock)).unwrap();
    for file in files("receiver") {
        let event = read_json(&format!("events/receiver/{file}"));
        for (name, value) in event["headers"].as_object().unwrap() {
            if name != "content-type" {
                forbidden.push(value.as_str().unwrap().to_string());
            }
        }
        forbidden.extend(body_fragments(&request_body(&event)));
        let r = apigw::handle(&intake, event).await;
        if let Some(aws_lambda_events::encodings::Body::Text(t)) = &r.body
            && let Ok(v) = serde_json::from_str::<Value>(t)
            && let Some(token) = v["access_token"].as_str()
        {
            forbidden.push(token.to_string());
        }
    }
    aws.drain(aws.get("INGEST_QUEUE_URL")).await;

    // Consumer and dispatcher, with the local destinations on a real HTTP peer.
    let peer = Peer::start(Answer::status(200)).await;
    let destinations = destinations_doc.replace("http://127.0.0.1:9103", &peer.url(""));
    // At the samples' time (events/generate.py), so they never go stale.
    let clock = ManualClock::at_ms(1_795_000_000_000);
    let consumer = consumer_for(&aws, &destinations, Arc::new(clock.clone()));
    let dispatcher = dispatcher_for(
        &aws,
        delivery_queue(&aws),
        &destinations,
        Arc::new(clock.clone()),
    )
    .await;
    for (folder, consume) in [("consumer", true), ("dispatcher", false)] {
        for file in files(folder) {
            let text = std::fs::read_to_string(repo_root().join("events").join(folder).join(&file))
                .unwrap();
            let event: aws_lambda_events::event::sqs::SqsEvent =
                serde_json::from_str(&text).unwrap();
            let records = sqs_event::records(&event);
            for (_, body) in &records {
                let mut v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
                // A delivery job wraps the envelope.
                if v.get("envelope").is_some() {
                    v = v["envelope"].take();
                }
                if let Some(raw) = v["raw_body"].as_str() {
                    forbidden.extend(body_fragments(raw));
                }
                strings(&v["event"], &mut forbidden);
                if let Some(session) = v["session_id"].as_str() {
                    forbidden.push(session.to_string());
                }
            }
            if consume {
                let records: Vec<IngestRecord> = records
                    .into_iter()
                    .map(|(message_id, body)| IngestRecord { message_id, body })
                    .collect();
                consumer
                    .process_batch(&records, clock.now_ms() + 30_000, "logs")
                    .await;
            } else {
                let records: Vec<JobRecord> = records
                    .into_iter()
                    .map(|(message_id, body)| JobRecord {
                        message_id,
                        body,
                        lane: Lane::Fast,
                    })
                    .collect();
                dispatcher
                    .dispatch_batch(&records, clock.now_ms() + 120_000)
                    .await;
            }
        }
    }
    assert!(peer.hits() > 0, "the dispatcher delivered something");

    let logged = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    for line in ["webhook accepted", "webhook refused", "delivery attempt"] {
        assert!(
            logged.contains(line),
            "the capture works: {line:?} was logged"
        );
    }
    forbidden.retain(|f| f.chars().count() >= MIN_FRAGMENT);
    forbidden.sort();
    forbidden.dedup();
    let leaks: Vec<&String> = forbidden
        .iter()
        .filter(|f| logged.contains(f.as_str()))
        .collect();
    assert!(
        leaks.is_empty(),
        "logged: {:?}\n(in {} bytes of logs)",
        leaks,
        logged.len()
    );
}
