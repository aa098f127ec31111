//! Test harness: the local AWS emulator (moto, started by `scripts/test.sh`), the sample events, the
//! local configuration, and real HTTP peers on 127.0.0.1.

pub mod counting;
pub mod gateway;
pub mod lanes;
pub mod peer;
pub mod runtime_api;
pub mod tls_peer;

use aws_sdk_sqs::types::QueueAttributeName;
use kyc_relay::config::Env;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lives in the repository")
        .to_path_buf()
}

fn parse_env_file(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let l = l.strip_prefix("export ").unwrap_or(l);
            let (k, v) = l.split_once('=')?;
            Some((
                k.trim().to_string(),
                v.trim().trim_matches(['\'', '"']).to_string(),
            ))
        })
        .collect()
}

/// `config/local.env`: the TEST configuration shared by the local run and the tests.
pub fn local_env() -> Env {
    let text =
        std::fs::read_to_string(repo_root().join("config/local.env")).expect("config/local.env");
    Env::from_pairs(parse_env_file(&text))
}

/// A sample API Gateway event from `events/`, as the Lambda runtime hands it to the receiver.
/// Validates envelopes against the published schemas (schemas/v1) with the reference JSON Schema
/// implementation (scripts/check_schemas.py, Python `jsonschema`). `Err`: what it reported.
pub fn check_envelope_schema(envelopes: &[serde_json::Value]) -> Result<(), String> {
    use std::io::Write;
    let mut child = std::process::Command::new(repo_root().join(".venv/bin/python"))
        .arg(repo_root().join("scripts/check_schemas.py"))
        .args(["--envelopes", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run scripts/check_schemas.py (is .venv bootstrapped?)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(
            serde_json::Value::from(envelopes.to_vec())
                .to_string()
                .as_bytes(),
        )
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(())
    } else {
        Err(said)
    }
}

pub fn apigw_event(relative: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(repo_root().join("events").join(relative))
        .unwrap_or_else(|e| panic!("events/{relative}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("events/{relative}: {e}"))
}

pub fn read_json(relative: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(repo_root().join(relative)).expect(relative);
    serde_json::from_str(&text).expect(relative)
}

/// Polls `check` until it returns `Some`, or panics after `deadline`.
pub async fn eventually<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(start.elapsed() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Queues and tables of template.yaml, created under a fresh stack name in the emulator so tests
/// running in parallel never share a resource.
pub struct LocalAws {
    pub sdk: aws_config::SdkConfig,
    pub sqs: aws_sdk_sqs::Client,
    pub ddb: aws_sdk_dynamodb::Client,
    pub resources: HashMap<String, String>,
    pub stack: String,
}

impl LocalAws {
    pub async fn provision() -> Self {
        let endpoint = std::env::var("AWS_ENDPOINT_URL").unwrap_or_else(|_| {
            panic!("AWS_ENDPOINT_URL is not set: run the tests with scripts/test.sh, which starts the emulator")
        });
        let stack = format!("t{:08x}", fastrand::u32(..));
        let env_file = std::env::temp_dir().join(format!("kyc-relay-{stack}.env"));
        let root = repo_root();
        let out = tokio::process::Command::new(root.join(".venv/bin/python"))
            .arg(root.join("scripts/local_aws.py"))
            .args([
                "create",
                "--endpoint",
                &endpoint,
                "--stack-name",
                &stack,
                "--env-file",
            ])
            .arg(&env_file)
            .output()
            .await
            .expect("run scripts/local_aws.py (is .venv bootstrapped?)");
        assert!(
            out.status.success(),
            "local_aws.py create failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let resources: HashMap<String, String> =
            parse_env_file(&std::fs::read_to_string(&env_file).expect("env file"))
                .into_iter()
                .collect();
        let _ = std::fs::remove_file(env_file);
        let sdk = aws_config::load_from_env().await;
        Self {
            sqs: aws_sdk_sqs::Client::new(&sdk),
            ddb: aws_sdk_dynamodb::Client::new(&sdk),
            sdk,
            resources,
            stack,
        }
    }

    pub fn get(&self, key: &str) -> &str {
        self.resources.get(key).unwrap_or_else(|| {
            panic!(
                "{key} not among the provisioned resources: {:?}",
                self.resources
            )
        })
    }

    /// `config/local.env` with this stack's queue URLs and table names.
    pub fn env(&self) -> Env {
        let mut env = local_env();
        for (k, v) in &self.resources {
            env.set(k.clone(), v.clone());
        }
        env
    }

    /// Stores an SSM SecureString (a key or secret the code under test reads by name).
    pub async fn put_secure_string(&self, name: &str, value: &str) {
        aws_sdk_ssm::Client::new(&self.sdk)
            .put_parameter()
            .name(name)
            .value(value)
            .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
            .overwrite(true)
            .send()
            .await
            .expect("put SSM parameter");
    }

    /// Receives and deletes every message currently visible on the queue.
    pub async fn drain(&self, queue_url: &str) -> Vec<aws_sdk_sqs::types::Message> {
        let mut all = Vec::new();
        loop {
            let out = self
                .sqs
                .receive_message()
                .queue_url(queue_url)
                .max_number_of_messages(10)
                .message_attribute_names("All")
                .message_system_attribute_names(aws_sdk_sqs::types::MessageSystemAttributeName::All)
                .send()
                .await
                .expect("receive");
            let batch = out.messages.unwrap_or_default();
            if batch.is_empty() {
                return all;
            }
            for m in &batch {
                self.sqs
                    .delete_message()
                    .queue_url(queue_url)
                    .receipt_handle(m.receipt_handle().unwrap())
                    .send()
                    .await
                    .expect("delete");
            }
            all.extend(batch);
        }
    }

    /// Visible + in flight + delayed messages.
    pub async fn depth(&self, queue_url: &str) -> usize {
        let out = self
            .sqs
            .get_queue_attributes()
            .queue_url(queue_url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesDelayed)
            .send()
            .await
            .expect("attributes");
        out.attributes()
            .map(|a| a.values().map(|v| v.parse::<usize>().unwrap_or(0)).sum())
            .unwrap_or(0)
    }
}

/// An IDnow envelope as the receiver would build it.
pub fn idnow_envelope(
    event_id: &str,
    event_name: &str,
    session_id: &str,
    status: &str,
    sequence: u64,
) -> kyc_relay::envelope::Envelope {
    let event = serde_json::json!({
        "eventId": event_id, "eventDeliverId": format!("d-{event_id}"), "eventVersion": "1.0",
        "eventName": event_name, "eventSequence": sequence, "createdAt": "2026-11-18T08:53:20Z",
        "environment": "test", "payload": {"flowId": "flow-1", "sessionId": session_id, "sessionStatus": status}
    });
    let parsed = kyc_relay::provider::idnow::parse(&event).expect("valid IDnow event");
    let raw = event.to_string();
    kyc_relay::envelope::Envelope::new(
        parsed,
        kyc_relay::envelope::Received {
            provider: kyc_relay::provider::Provider::Idnow,
            received_at_ms: 1_795_000_000_000,
            verified_by: vec![kyc_relay::verification::Check::JwtRs256],
            type_hint: None,
            request_id: None,
            content_type: "application/json",
            raw_body: &raw,
        },
    )
}

/// An Incode onboarding-status envelope as the receiver would build it.
pub fn incode_envelope(interview_id: &str, status: &str) -> kyc_relay::envelope::Envelope {
    let body = serde_json::json!({"interviewId": interview_id, "onboardingStatus": status});
    let parsed =
        kyc_relay::provider::incode::parse(&body, kyc_relay::provider::incode::TypeHint::None)
            .expect("valid Incode webhook");
    let raw = body.to_string();
    kyc_relay::envelope::Envelope::new(
        parsed,
        kyc_relay::envelope::Received {
            provider: kyc_relay::provider::Provider::Incode,
            received_at_ms: 1_795_000_000_000,
            verified_by: vec![kyc_relay::verification::Check::SourceIp],
            type_hint: None,
            request_id: None,
            content_type: "application/json",
            raw_body: &raw,
        },
    )
}

pub fn record(
    message_id: &str,
    envelope: &kyc_relay::envelope::Envelope,
) -> kyc_relay::processing::IngestRecord {
    kyc_relay::processing::IngestRecord {
        message_id: message_id.to_string(),
        body: serde_json::to_string(envelope).unwrap(),
    }
}

/// Reads one item of the records table by its key.
pub async fn item(
    aws: &LocalAws,
    pk: &str,
    sk: &str,
) -> Option<HashMap<String, aws_sdk_dynamodb::types::AttributeValue>> {
    aws.ddb
        .get_item()
        .table_name(aws.get("RECORDS_TABLE"))
        .key(
            "pk",
            aws_sdk_dynamodb::types::AttributeValue::S(pk.to_string()),
        )
        .key(
            "sk",
            aws_sdk_dynamodb::types::AttributeValue::S(sk.to_string()),
        )
        .consistent_read(true)
        .send()
        .await
        .expect("get_item")
        .item
}

/// Runs a function binary with only `vars` (plus dummy credentials and an unreachable Runtime API)
/// and returns whether it exited successfully and everything it printed. Used to check that
/// misconfiguration stops a function at init, with the variable named.
pub fn run_init(binary: &str, vars: &[(&str, &str)]) -> (bool, String) {
    let mut cmd = std::process::Command::new(binary);
    cmd.env_clear()
        .env("AWS_REGION", "eu-central-1")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        // Nothing listens here: a binary whose init wrongly succeeded fails to reach the Runtime API,
        // and the callers' assertions on the message still catch it.
        .env("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9");
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run function binary");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// `base` with `overrides` applied (an empty value removes the variable).
pub fn with_vars(
    base: &[(&'static str, &'static str)],
    overrides: &[(&'static str, &'static str)],
) -> Vec<(&'static str, &'static str)> {
    let mut vars: Vec<_> = base
        .iter()
        .filter(|(k, _)| !overrides.iter().any(|(o, _)| o == k))
        .copied()
        .collect();
    vars.extend(overrides.iter().filter(|(_, v)| !v.is_empty()).copied());
    vars
}

/// The records' lifetime as deployed (30 days).
pub fn test_lifetime() -> kyc_relay::processing::RecordLifetime {
    kyc_relay::processing::RecordLifetime {
        ttl_secs: 30 * 86_400,
    }
}

/// The records table of this stack.
pub fn records(
    aws: &LocalAws,
    clock: std::sync::Arc<dyn kyc_relay::clock::Clock>,
) -> kyc_relay::aws::dynamodb::DynamoRecords {
    kyc_relay::aws::dynamodb::DynamoRecords::new(&aws.sdk, aws.get("RECORDS_TABLE"), clock)
}

/// The archive bucket of this stack.
pub fn archive(aws: &LocalAws) -> kyc_relay::aws::s3::S3Archive {
    kyc_relay::aws::s3::S3Archive::new(&aws.sdk, aws.get("ARCHIVE_BUCKET"))
}

pub type TestConsumer = kyc_relay::processing::Processor<
    kyc_relay::aws::dynamodb::DynamoRecords,
    kyc_relay::aws::sqs::SqsDeliveryQueue,
    kyc_relay::aws::s3::S3Archive,
>;

/// The consumer with the real adapters on this stack's table, bucket and delivery queue.
pub fn consumer_for(
    aws: &LocalAws,
    destinations: &str,
    clock: std::sync::Arc<dyn kyc_relay::clock::Clock>,
) -> TestConsumer {
    kyc_relay::processing::Processor {
        store: records(aws, clock.clone()),
        queue: kyc_relay::aws::sqs::SqsDeliveryQueue::new(
            &aws.sdk,
            aws.get("DELIVERY_QUEUE_URL"),
            None,
            None,
        ),
        archive: archive(aws),
        destinations: kyc_relay::destination::Destinations::parse_with(
            destinations,
            kyc_relay::config::OutboundPolicy::local(),
        )
        .expect("valid destinations"),
        clock,
        lifetime: test_lifetime(),
    }
}

/// The delivery queues (both lanes) with the delivery DLQ, as the dispatcher uses them.
pub fn delivery_queue(aws: &LocalAws) -> kyc_relay::aws::sqs::SqsDeliveryQueue {
    kyc_relay::aws::sqs::SqsDeliveryQueue::new(
        &aws.sdk,
        aws.get("DELIVERY_QUEUE_URL"),
        Some(aws.get("RETRY_QUEUE_URL").to_string()),
        Some(aws.get("DELIVERY_DLQ_URL").to_string()),
    )
}

pub type TestDispatcher<Q> = kyc_relay::dispatch::Dispatcher<
    kyc_relay::aws::dynamodb::DynamoRecords,
    Q,
    kyc_relay::aws::targets::AwsTransport<kyc_relay::dispatch::transport::HttpTransport>,
>;

/// The dispatcher with the real records table, the given queue adapter, real HTTP and plain-value
/// secrets. It reads the destinations' state on every batch (tests change it between batches).
pub async fn dispatcher_for<Q: kyc_relay::delivery::DeliveryQueue>(
    aws: &LocalAws,
    queue: Q,
    destinations: &str,
    clock: std::sync::Arc<dyn kyc_relay::clock::Clock>,
) -> TestDispatcher<Q> {
    dispatcher_with(
        aws,
        queue,
        destinations,
        clock,
        kyc_relay::dispatch::DispatcherSettings {
            state_cache: Duration::ZERO,
            ..Default::default()
        },
    )
    .await
}

/// [`dispatcher_for`] with other settings.
pub async fn dispatcher_with<Q: kyc_relay::delivery::DeliveryQueue>(
    aws: &LocalAws,
    queue: Q,
    destinations: &str,
    clock: std::sync::Arc<dyn kyc_relay::clock::Clock>,
    settings: kyc_relay::dispatch::DispatcherSettings,
) -> TestDispatcher<Q> {
    let destinations = kyc_relay::destination::Destinations::parse_with(
        destinations,
        kyc_relay::config::OutboundPolicy::local(),
    )
    .expect("valid destinations");
    // Secrets, CA bundles and client keys named by SSM parameter come from the emulator's SSM, as
    // the dispatcher's cold start reads them.
    let ssm = kyc_relay::aws::ssm::SsmSecrets::new(&aws.sdk);
    let vault =
        kyc_relay::dispatch::credentials::Vault::resolve(&destinations, Some(&ssm), clock.clone())
            .await
            .expect("secrets");
    kyc_relay::dispatch::Dispatcher::new(
        records(aws, clock.clone()),
        queue,
        kyc_relay::aws::targets::AwsTransport::new(
            kyc_relay::dispatch::transport::HttpTransport::build(
                Duration::from_secs(2),
                Duration::from_secs(5),
                &vault,
            )
            .unwrap(),
            &aws.sdk,
        ),
        destinations,
        vault,
        settings,
        clock,
    )
}
