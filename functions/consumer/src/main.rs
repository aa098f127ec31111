//! Consumer Lambda: wiring only. See `kyc_relay::processing` and `kyc_relay::idempotency`.

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use kyc_relay::aws::dynamodb::DynamoRecords;
use kyc_relay::aws::s3::ConfiguredArchive;
use kyc_relay::aws::sqs::SqsDeliveryQueue;
use kyc_relay::aws::{CallBudget, sdk_config, sqs_event, ssm::SsmSecrets};
use kyc_relay::clock::SystemClock;
use kyc_relay::config::Env;
use kyc_relay::destination::Destinations;
use kyc_relay::processing::{IngestRecord, Processor, RecordLifetime};
use lambda_runtime::{Error, LambdaEvent, service_fn};
use std::sync::Arc;

type Consumer = Processor<DynamoRecords, SqsDeliveryQueue, ConfiguredArchive>;

async fn init() -> Result<Consumer, Error> {
    let aws = sdk_config(CallBudget::CONSUMER.from_env()).await;
    let env = Env::from_process();
    let ssm = env
        .get("DESTINATIONS_CONFIG_SSM")
        .map(|_| SsmSecrets::new(&aws));
    let destinations = Destinations::from_env(&env, ssm.as_ref()).await?;
    let clock = Arc::new(SystemClock);
    Ok(Processor {
        store: DynamoRecords::new(&aws, env.require("RECORDS_TABLE")?, clock.clone()),
        queue: SqsDeliveryQueue::new(&aws, env.require("DELIVERY_QUEUE_URL")?, None, None),
        archive: ConfiguredArchive::new(&aws, env.get("ARCHIVE_BUCKET")),
        lifetime: RecordLifetime::from_env(&env, &destinations)?,
        destinations,
        clock,
    })
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    kyc_relay::telemetry::init();
    let consumer = init().await.inspect_err(|e| {
        tracing::error!(error = %e, "consumer init failed: refusing to start");
    })?;
    let consumer = &consumer;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        let records: Vec<IngestRecord> = sqs_event::records(&event.payload)
            .into_iter()
            .map(|(message_id, body)| IngestRecord { message_id, body })
            .collect();
        let failed = consumer
            .process_batch(&records, event.context.deadline, &event.context.request_id)
            .await;
        Ok::<SqsBatchResponse, Error>(sqs_event::batch_response(failed))
    }))
    .await
}
