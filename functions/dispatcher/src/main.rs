//! Dispatcher Lambda: wiring only. See `kyc_relay::dispatch`.

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use kyc_relay::aws::dynamodb::DynamoEventStore;
use kyc_relay::aws::sqs::SqsDeliveryQueue;
use kyc_relay::aws::{sdk_config, sqs_event, ssm::SsmSecrets};
use kyc_relay::clock::SystemClock;
use kyc_relay::config::{ConfigError, Env};
use kyc_relay::destination::Destinations;
use kyc_relay::dispatch::Dispatcher;
use lambda_runtime::{Error, LambdaEvent, service_fn};
use std::sync::Arc;
use std::time::Duration;

async fn init() -> Result<Dispatcher<DynamoEventStore, SqsDeliveryQueue>, Error> {
    let aws = sdk_config().await;
    let env = Env::from_process();
    let ssm = SsmSecrets::new(&aws);
    let destinations = Destinations::from_env(&env, Some(&ssm)).await?;
    let timeout_ms: u64 = env.parse_or("HTTP_TIMEOUT_MS", 10_000)?;
    let connect_ms: u64 = env.parse_or("HTTP_CONNECT_TIMEOUT_MS", 3_000)?;
    if !(100..=30_000).contains(&timeout_ms) {
        return Err(ConfigError::new("HTTP_TIMEOUT_MS", "must be between 100 and 30000").into());
    }
    if !(100..=timeout_ms).contains(&connect_ms) {
        return Err(ConfigError::new(
            "HTTP_CONNECT_TIMEOUT_MS",
            "must be between 100 and HTTP_TIMEOUT_MS",
        )
        .into());
    }
    let http = kyc_relay::http_client::build(
        Duration::from_millis(connect_ms),
        Duration::from_millis(timeout_ms),
    )?;
    let queue = SqsDeliveryQueue::new(
        &aws,
        env.require("DELIVERY_QUEUE_URL")?,
        Some(env.require("DELIVERY_DLQ_URL")?.to_string()),
    );
    let events = DynamoEventStore::new(&aws, env.require("EVENTS_TABLE")?);
    Ok(Dispatcher::new(
        events,
        queue,
        destinations,
        Some(&ssm),
        http,
        Arc::new(SystemClock),
    )
    .await?)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    kyc_relay::telemetry::init();
    let dispatcher = init().await.inspect_err(|e| {
        tracing::error!(error = %e, "dispatcher init failed: refusing to start");
    })?;
    let dispatcher = &dispatcher;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        let records = sqs_event::records(&event.payload);
        let failed = dispatcher.dispatch_batch(&records).await;
        Ok::<SqsBatchResponse, Error>(sqs_event::batch_response(failed))
    }))
    .await
}
