//! Dispatcher Lambda: wiring only. See `kyc_relay::dispatch`.

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use kyc_relay::aws::dynamodb::DynamoRecords;
use kyc_relay::aws::sqs::SqsDeliveryQueue;
use kyc_relay::aws::targets::AwsTransport;
use kyc_relay::aws::{CallBudget, sdk_config, sqs_event, ssm::SsmSecrets};
use kyc_relay::clock::SystemClock;
use kyc_relay::config::{ConfigError, Env};
use kyc_relay::delivery::Lane;
use kyc_relay::destination::Destinations;
use kyc_relay::dispatch::credentials::Vault;
use kyc_relay::dispatch::transport::HttpTransport;
use kyc_relay::dispatch::{Dispatcher, DispatcherSettings, JobRecord};
use kyc_relay::processing::RecordLifetime;
use lambda_runtime::{Error, LambdaEvent, service_fn};
use std::sync::Arc;
use std::time::Duration;

type Relay = Dispatcher<DynamoRecords, SqsDeliveryQueue, AwsTransport<HttpTransport>>;

async fn init() -> Result<(Relay, String), Error> {
    let aws = sdk_config(CallBudget::DISPATCHER.from_env()).await;
    let env = Env::from_process();
    let ssm = SsmSecrets::new(&aws);
    let destinations = Destinations::from_env(&env, Some(&ssm)).await?;
    let settings = DispatcherSettings::from_env(&env)?;
    RecordLifetime::from_env(&env, &destinations)?;
    let connect_ms: u64 = env.parse_or("HTTP_CONNECT_TIMEOUT_MS", 3_000)?;
    if !(100..=settings.default_timeout.as_millis() as u64).contains(&connect_ms) {
        return Err(ConfigError::new(
            "HTTP_CONNECT_TIMEOUT_MS",
            "must be between 100 and HTTP_TIMEOUT_MS",
        )
        .into());
    }
    let clock = Arc::new(SystemClock);
    let vault = Vault::resolve(&destinations, Some(&ssm), clock.clone()).await?;
    // HTTPS destinations through reqwest; SQS, SNS and EventBridge ones through the SDK, whose
    // clients are built on the first message to each.
    let transport = AwsTransport::new(
        HttpTransport::build(
            Duration::from_millis(connect_ms),
            settings.default_timeout,
            &vault,
        )?,
        &aws,
    );
    let retry_url = env.require("RETRY_QUEUE_URL")?.to_string();
    let retry_queue = sqs_event::queue_name(&retry_url).to_string();
    let queue = SqsDeliveryQueue::new(
        &aws,
        env.require("DELIVERY_QUEUE_URL")?,
        Some(retry_url),
        Some(env.require("DELIVERY_DLQ_URL")?.to_string()),
    );
    let store = DynamoRecords::new(&aws, env.require("RECORDS_TABLE")?, clock.clone());
    Ok((
        Dispatcher::new(
            store,
            queue,
            transport,
            destinations,
            vault,
            settings,
            clock,
        ),
        retry_queue,
    ))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    kyc_relay::telemetry::init();
    let (dispatcher, retry_queue) = init().await.inspect_err(|e| {
        tracing::error!(error = %e, "dispatcher init failed: refusing to start");
    })?;
    let (dispatcher, retry_queue) = (&dispatcher, &retry_queue);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        let records: Vec<JobRecord> = sqs_event::records(&event.payload)
            .into_iter()
            .map(|(message_id, body)| {
                let lane = match sqs_event::source_queue(&event.payload, &message_id) {
                    Some(q) if &q == retry_queue => Lane::Retry,
                    _ => Lane::Fast,
                };
                JobRecord {
                    message_id,
                    body,
                    lane,
                }
            })
            .collect();
        let failed = dispatcher
            .dispatch_batch(&records, event.context.deadline)
            .await;
        Ok::<SqsBatchResponse, Error>(sqs_event::batch_response(failed))
    }))
    .await
}
