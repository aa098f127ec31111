//! The tool's own AWS calls: stack discovery (CloudFormation), queue ages and alarms (CloudWatch),
//! queue depths and DLQ peek/move (SQS), the search for an event's partition and the erasure audit
//! item (DynamoDB). Everything else (records, archive, delivery queues, SSM) goes through the
//! library's adapters.

pub mod metrics;
pub mod queues;
pub mod stack;
pub mod table;

pub use stack::Stack;

use crate::error::{CliError, Result};
use aws_config::BehaviorVersion;
use std::collections::BTreeMap;
use std::time::Duration;

/// What the command line says about credentials and region.
pub struct Connection<'a> {
    pub profile: Option<&'a str>,
    pub region: Option<&'a str>,
    /// Settings of an env file (`AWS_ENDPOINT_URL`, `AWS_REGION`, keys), which win over the
    /// environment, as for the local emulator they must.
    pub env_file: Option<&'a BTreeMap<String, String>>,
}

/// The SDK configuration: the default chain as the AWS CLI resolves it (environment, profile with
/// SSO or credential_process, container and instance roles), with the tool's time limits: an
/// operator waits for one call at most a minute (three attempts).
pub async fn sdk_config(c: &Connection<'_>) -> Result<aws_config::SdkConfig> {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(5))
                .operation_attempt_timeout(Duration::from_secs(20))
                .operation_timeout(Duration::from_secs(60))
                .build(),
        )
        .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(3));
    if let Some(p) = c.profile {
        loader = loader.profile_name(p);
    }
    let file = |k: &str| c.env_file.and_then(|v| v.get(k)).map(String::as_str);
    if let Some(url) = file("AWS_ENDPOINT_URL") {
        loader = loader.endpoint_url(url);
    }
    let region = c
        .region
        .or_else(|| file("AWS_REGION"))
        .or_else(|| file("AWS_DEFAULT_REGION"));
    if let Some(r) = region {
        loader = loader.region(aws_config::Region::new(r.to_string()));
    }
    if let (Some(id), Some(secret)) = (file("AWS_ACCESS_KEY_ID"), file("AWS_SECRET_ACCESS_KEY")) {
        loader = loader.credentials_provider(aws_sdk_sqs::config::Credentials::new(
            id,
            secret,
            file("AWS_SESSION_TOKEN").map(str::to_string),
            None,
            "env-file",
        ));
    }
    let config = loader.load().await;
    if config.region().is_none() {
        return Err(CliError::usage(
            "no AWS region: pass --region, set AWS_REGION, or use a profile with a region",
        ));
    }
    Ok(config)
}

/// The queue's name: the last segment of its URL.
pub fn queue_name(url: &str) -> &str {
    url.rsplit('/').next().unwrap_or(url)
}
