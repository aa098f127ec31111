//! AWS adapters: the only place where AWS SDK and Lambda event types meet the domain.

pub mod apigw;
pub mod dynamodb;
pub mod sqs;
pub mod sqs_event;
pub mod ssm;

/// Loads the SDK configuration from the environment (region, credentials, `AWS_ENDPOINT_URL` for
/// the local emulator).
pub async fn sdk_config() -> aws_config::SdkConfig {
    aws_config::load_from_env().await
}
