//! AWS-native destinations against the emulator: an SQS queue (standard and FIFO), an SNS topic
//! (standard and FIFO, read through an SQS subscription) and an EventBridge bus (read through a rule
//! that targets an SQS queue). The dispatcher delivers through the real SDK clients
//! (`aws::targets::AwsTransport`); what arrives is read back and checked field by field, and an
//! unusable target is classified without a message being lost.

use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};
use integration_tests::lanes::{self, UndelayedQueue};
use integration_tests::{
    LocalAws, check_envelope_schema, consumer_for, dispatcher_for, idnow_envelope, record, records,
};
use kyc_relay::aws::targets::AwsTransport;
use kyc_relay::clock::{Clock, ManualClock};
use kyc_relay::destination::AwsTarget;
use kyc_relay::dispatch::transport::{AwsClass, HttpTransport, Publish, PublishError, Transport};
use kyc_relay::records::{DeliveryStatus, EventKey, RecordReader};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

const ACCOUNT: &str = "123456789012";

/// A queue of the emulator: its URL and ARN.
async fn queue(aws: &LocalAws, name: &str) -> (String, String) {
    let mut create = aws.sqs.create_queue().queue_name(name);
    if name.ends_with(".fifo") {
        create = create.attributes(QueueAttributeName::FifoQueue, "true");
    }
    let url = create.send().await.unwrap().queue_url.unwrap();
    let arn = aws
        .sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap()[&QueueAttributeName::QueueArn]
        .clone();
    (url, arn)
}

/// Every message on a queue: body, message attributes (string values), system attributes.
struct Received {
    body: String,
    attributes: HashMap<String, String>,
    system: HashMap<String, String>,
}

async fn receive(aws: &LocalAws, url: &str, want: usize) -> Vec<Received> {
    integration_tests::eventually(
        "messages on the target queue",
        Duration::from_secs(20),
        || async {
            let out = aws
                .sqs
                .receive_message()
                .queue_url(url)
                .max_number_of_messages(10)
                .message_attribute_names("All")
                .message_system_attribute_names(MessageSystemAttributeName::All)
                .send()
                .await
                .unwrap();
            let got: Vec<Received> = out
                .messages()
                .iter()
                .map(|m| Received {
                    body: m.body().unwrap_or_default().to_string(),
                    attributes: m
                        .message_attributes()
                        .map(|a| {
                            a.iter()
                                .map(|(k, v)| {
                                    (k.clone(), v.string_value().unwrap_or_default().to_string())
                                })
                                .collect()
                        })
                        .unwrap_or_default(),
                    system: m
                        .attributes()
                        .map(|a| {
                            a.iter()
                                .map(|(k, v)| (k.as_str().to_string(), v.clone()))
                                .collect()
                        })
                        .unwrap_or_default(),
                })
                .collect();
            (got.len() >= want).then_some(got)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_webhook_reaches_an_sqs_fifo_queue_an_sns_topic_and_an_eventbridge_bus() {
    let aws = LocalAws::provision().await;
    let s = &aws.stack;
    let (fifo_url, _) = queue(&aws, &format!("{s}-kyc.fifo")).await;
    // SNS, read through an SQS subscription (the notification JSON carries the attributes).
    let sns = aws_sdk_sns::Client::new(&aws.sdk);
    let topic_arn = sns
        .create_topic()
        .name(format!("{s}-kyc"))
        .send()
        .await
        .unwrap()
        .topic_arn
        .unwrap();
    let (sns_url, sns_queue_arn) = queue(&aws, &format!("{s}-from-sns")).await;
    sns.subscribe()
        .topic_arn(&topic_arn)
        .protocol("sqs")
        .endpoint(&sns_queue_arn)
        .send()
        .await
        .unwrap();
    // EventBridge, read through a rule on the relay's source that targets an SQS queue.
    let events = aws_sdk_eventbridge::Client::new(&aws.sdk);
    let bus = format!("{s}-kyc");
    events.create_event_bus().name(&bus).send().await.unwrap();
    let (eb_url, eb_queue_arn) = queue(&aws, &format!("{s}-from-eventbridge")).await;
    events
        .put_rule()
        .name(format!("{s}-kyc-idnow"))
        .event_bus_name(&bus)
        .event_pattern(json!({"source": ["kyc-relay.idnow"]}).to_string())
        .send()
        .await
        .unwrap();
    events
        .put_targets()
        .rule(format!("{s}-kyc-idnow"))
        .event_bus_name(&bus)
        .targets(
            aws_sdk_eventbridge::types::Target::builder()
                .id("queue")
                .arn(&eb_queue_arn)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();

    let doc = json!({"destinations": [
        {"id": "audit-fifo", "sqs": {"queue_url": fifo_url}, "retry_policy": "idnow"},
        {"id": "fanout", "sns": {"topic_arn": topic_arn}, "retry_policy": "idnow", "body": "raw"},
        {"id": "bus", "eventbridge": {"bus": bus}, "retry_policy": "incode"},
    ]})
    .to_string();
    let clock = ManualClock::at_ms(1_795_000_000_000);
    let queue_adapter = UndelayedQueue::new(&aws, clock.clone());
    let dispatcher =
        dispatcher_for(&aws, queue_adapter.clone(), &doc, Arc::new(clock.clone())).await;
    let consumer = consumer_for(&aws, &doc, Arc::new(clock.clone()));
    let mut envelope = idnow_envelope("evt-aws", "session.completed", "s-aws", "COMPLETED", 1);
    // The trace API Gateway started (X-Amzn-Trace-Id), as the receiver records it.
    envelope.trace_id = Some("6a2f0e1c9d3b4e5f8a7b6c5d4e3f2a1b".into());
    assert!(
        consumer
            .process_batch(&[record("m-aws", &envelope)], clock.now_ms() + 30_000, "b")
            .await
            .is_empty()
    );
    let handled = lanes::drive(&aws, &dispatcher, &clock, 100, |job| {
        queue_adapter.visible_at(job)
    })
    .await;
    assert_eq!(handled, 3, "one job per destination, none retried");

    let event = records(&aws, Arc::new(clock.clone()))
        .event(&EventKey::of(&envelope))
        .await
        .unwrap()
        .expect("event record");
    let mut webhook_ids = HashMap::new();
    for d in &event.deliveries {
        assert_eq!(d.status, DeliveryStatus::Delivered, "{d:?}");
        assert_eq!(d.last_outcome.as_deref(), Some("published"), "{d:?}");
        assert_eq!(d.attempts, 1);
        webhook_ids.insert(
            d.destination.clone(),
            kyc_relay::delivery::delivery_id(&EventKey::of(&envelope), &d.destination),
        );
    }
    let trace_id = envelope.trace_id().to_string();

    // SQS FIFO: the envelope, the attributes, the session as the group, the webhook-id as the
    // deduplication id, and the trace as X-Ray's header.
    let fifo = receive(&aws, &fifo_url, 1).await;
    assert_eq!(fifo.len(), 1);
    let m = &fifo[0];
    let body: Value = serde_json::from_str(&m.body).unwrap();
    check_envelope_schema(std::slice::from_ref(&body)).unwrap();
    assert_eq!(body["event_id"], "evt-aws");
    assert_eq!(m.attributes["webhook-id"], webhook_ids["audit-fifo"]);
    assert_eq!(m.attributes["provider"], "idnow");
    assert_eq!(m.attributes["event-type"], "session.completed");
    assert_eq!(m.attributes["content-type"], "application/json");
    assert!(
        m.attributes["traceparent"].contains(&trace_id),
        "{:?}",
        m.attributes
    );
    assert_eq!(m.system["MessageGroupId"], EventKey::of(&envelope).pk);
    assert_eq!(
        m.system["MessageDeduplicationId"],
        webhook_ids["audit-fifo"]
    );
    assert_eq!(
        m.system["AWSTraceHeader"],
        format!("Root=1-{}-{};Sampled=1", &trace_id[..8], &trace_id[8..])
    );

    // SNS: the raw body, attributes a subscription filter can use.
    let from_sns = receive(&aws, &sns_url, 1).await;
    let note: Value = serde_json::from_str(&from_sns[0].body).unwrap();
    assert_eq!(note["Message"].as_str().unwrap(), envelope.raw_body);
    let attr = |name: &str| {
        note["MessageAttributes"][name]["Value"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(attr("webhook-id"), webhook_ids["fanout"]);
    assert_eq!(attr("provider"), "idnow");
    assert_eq!(attr("event-type"), "session.completed");
    assert!(attr("traceparent").contains(&trace_id));

    // EventBridge: source and detail-type, the envelope with its webhook_id as detail.
    let from_bus = receive(&aws, &eb_url, 1).await;
    let event: Value = serde_json::from_str(&from_bus[0].body).unwrap();
    assert_eq!(event["source"], "kyc-relay.idnow");
    assert_eq!(event["detail-type"], "session.completed");
    let mut detail = event["detail"].clone();
    assert_eq!(detail["webhook_id"], webhook_ids["bus"].as_str());
    assert_eq!(detail["trace_id"], trace_id.as_str());
    detail.as_object_mut().unwrap().remove("webhook_id");
    check_envelope_schema(&[detail]).unwrap();
    // What each kind carried of the trace (shown with --nocapture).
    println!("trace {trace_id}:");
    println!(
        "  sqs fifo: traceparent={} AWSTraceHeader={} group={} dedup={}",
        m.attributes["traceparent"],
        m.system["AWSTraceHeader"],
        m.system["MessageGroupId"],
        m.system["MessageDeduplicationId"]
    );
    println!("  sns: traceparent={}", attr("traceparent"));
    println!(
        "  eventbridge: source={} detail-type={} detail.trace_id={} detail.webhook_id={}",
        event["source"],
        event["detail-type"],
        event["detail"]["trace_id"],
        event["detail"]["webhook_id"]
    );
}

fn publish(target: AwsTarget) -> Publish {
    Publish {
        destination: "d".into(),
        target,
        body: r#"{"v":1}"#.into(),
        webhook_id: "dlv_00000000000000000000000000000001".into(),
        provider: "idnow",
        event_type: "session.completed".into(),
        content_type: "application/json".into(),
        group: "idnow#s".into(),
        trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
        traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
        timeout: Duration::from_secs(10),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_targets_are_unavailable_and_a_fifo_retry_is_deduplicated() {
    let aws = LocalAws::provision().await;
    let transport = AwsTransport::new(
        HttpTransport::new(
            kyc_relay::http_client::build(Duration::from_secs(1), Duration::from_secs(2)).unwrap(),
        ),
        &aws.sdk,
    );
    let endpoint = std::env::var("AWS_ENDPOINT_URL").unwrap();
    let unavailable = |r: Result<(), PublishError>| match r {
        Err(PublishError::Refused(refusal)) => {
            assert_eq!(refusal.class, AwsClass::Unavailable, "{refusal:?}");
            refusal.code
        }
        other => panic!("{other:?}"),
    };
    let gone_queue = AwsTarget::Sqs {
        queue_url: format!("{endpoint}/{ACCOUNT}/{}-missing", aws.stack),
        region: None,
        fifo: false,
    };
    let code = unavailable(transport.publish(publish(gone_queue)).await);
    assert!(
        code.contains("NonExistentQueue") || code.contains("QueueDoesNotExist"),
        "{code}"
    );
    let gone_topic = AwsTarget::Sns {
        topic_arn: format!("arn:aws:sns:eu-central-1:{ACCOUNT}:{}-missing", aws.stack),
        region: None,
        fifo: false,
    };
    unavailable(transport.publish(publish(gone_topic)).await);

    // A retry of a FIFO delivery inside the deduplication window is one message.
    let (url, _) = queue(&aws, &format!("{}-dedup.fifo", aws.stack)).await;
    let fifo = AwsTarget::Sqs {
        queue_url: url.clone(),
        region: None,
        fifo: true,
    };
    transport.publish(publish(fifo.clone())).await.unwrap();
    transport.publish(publish(fifo)).await.unwrap();
    let got = receive(&aws, &url, 1).await;
    assert_eq!(got.len(), 1, "deduplicated on the webhook-id");
    // Nothing else on the queue: the first message is in flight, the second never existed.
    let depth = aws
        .sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap();
    assert_eq!(depth[&QueueAttributeName::ApproximateNumberOfMessages], "0");
    assert_eq!(
        depth[&QueueAttributeName::ApproximateNumberOfMessagesNotVisible],
        "1"
    );
}
