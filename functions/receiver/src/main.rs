//! Receiver Lambda: wiring only. See `kyc_relay::intake` for what it does, and
//! `kyc_relay::aws::apigw` for why it runs on `lambda_runtime` rather than `lambda_http`.

use kyc_relay::aws::{apigw, sdk_config, sqs::SqsIngestQueue, ssm::SsmSecrets};
use kyc_relay::clock::SystemClock;
use kyc_relay::config::{Env, resolve_secrets};
use kyc_relay::intake::{Intake, RECEIVER_SECRETS, ReceiverSettings};
use lambda_runtime::{Error, LambdaEvent, service_fn};
use std::sync::Arc;
use std::time::Duration;

async fn init() -> Result<Intake<SqsIngestQueue>, Error> {
    let aws = sdk_config(kyc_relay::aws::CallBudget::RECEIVER.from_env()).await;
    let env = Env::from_process();
    // The SSM client is only built when a secret is named by SSM parameter (saves cold-start time).
    let ssm = (!env.ssm_secret_refs(RECEIVER_SECRETS)?.is_empty()).then(|| SsmSecrets::new(&aws));
    let env = resolve_secrets(env, RECEIVER_SECRETS, ssm.as_ref()).await?;
    let settings = ReceiverSettings::from_env(&env)?;
    let queue = SqsIngestQueue::new(&aws, settings.ingest_queue_url.clone());
    // JWKS fetches must leave time to answer within IDnow's 10 s.
    let http = kyc_relay::http_client::build(Duration::from_secs(2), Duration::from_secs(4))?;
    Ok(Intake::new(settings, queue, http, Arc::new(SystemClock))?)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    kyc_relay::telemetry::init();
    let intake = init().await.inspect_err(|e| {
        tracing::error!(error = %e, "receiver init failed: refusing to start");
    })?;
    let intake = &intake;
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<serde_json::Value>| async move {
            Ok::<_, Error>(apigw::handle(intake, event.payload).await)
        },
    ))
    .await
}
