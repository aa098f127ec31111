//! Counting AWS requests: an SDK interceptor that counts every call by `service.Operation`, and
//! SQS/DynamoDB clients wired with it (what the cost test and the emulator benchmarks measure).

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextRef;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// Calls made, by `service.Operation` (service lowercased, e.g. `dynamodb.PutItem`).
#[derive(Debug, Default, Clone)]
pub struct Calls(pub Arc<Mutex<BTreeMap<String, u64>>>);

impl Calls {
    pub fn get(&self, op: &str) -> u64 {
        self.0.lock().unwrap().get(op).copied().unwrap_or(0)
    }

    /// Sum over the operations of one service (`"sqs"`, `"dynamodb"`).
    pub fn service_total(&self, service: &str) -> u64 {
        let prefix = format!("{service}.");
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|(k, _)| k.starts_with(&prefix))
            .map(|(_, v)| v)
            .sum()
    }

    /// SQS and DynamoDB clients on `sdk` that count their calls here.
    pub fn clients(
        &self,
        sdk: &aws_config::SdkConfig,
    ) -> (aws_sdk_sqs::Client, aws_sdk_dynamodb::Client) {
        (
            aws_sdk_sqs::Client::from_conf(
                aws_sdk_sqs::config::Builder::from(sdk)
                    .interceptor(self.clone())
                    .build(),
            ),
            aws_sdk_dynamodb::Client::from_conf(
                aws_sdk_dynamodb::config::Builder::from(sdk)
                    .interceptor(self.clone())
                    .build(),
            ),
        )
    }
}

impl Calls {
    /// An S3 client on `sdk` that counts its calls here.
    pub fn s3_client(&self, sdk: &aws_config::SdkConfig) -> aws_sdk_s3::Client {
        aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::config::Builder::from(sdk)
                .interceptor(self.clone())
                // moto serves buckets by path, not by virtual host.
                .force_path_style(true)
                .build(),
        )
    }
}

impl Intercept for Calls {
    fn name(&self) -> &'static str {
        "CallCounter"
    }

    // Before transmit (not before execution): the operation's metadata is in the config bag by then.
    fn read_before_transmit(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(m) = cfg.load::<Metadata>() {
            *self
                .0
                .lock()
                .unwrap()
                .entry(format!("{}.{}", m.service().to_ascii_lowercase(), m.name()))
                .or_default() += 1;
        }
        Ok(())
    }
}
