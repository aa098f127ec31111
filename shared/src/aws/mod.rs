//! AWS adapters: the only place where AWS SDK and Lambda event types meet the domain.

pub mod apigw;
pub mod dynamodb;
pub mod s3;
pub mod sqs;
pub mod sqs_event;
pub mod ssm;

use std::time::Duration;

/// How long a function lets one AWS call take, and how often it is retried (the SDK's standard
/// retry mode: exponential backoff with jitter, throttling and transient errors only). Each
/// function's budget fits its own deadline (docs/configuration.md, "AWS calls").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallBudget {
    pub connect: Duration,
    /// One attempt of a call.
    pub attempt: Duration,
    /// All attempts of a call together.
    pub operation: Duration,
    pub max_attempts: u32,
}

impl CallBudget {
    /// The receiver answers IDnow within its 10 s: one SendMessage may take 5 s in all.
    pub const RECEIVER: Self = Self {
        connect: Duration::from_secs(1),
        attempt: Duration::from_millis(1_500),
        operation: Duration::from_secs(5),
        max_attempts: 3,
    };
    /// The consumer (30 s timeout): claims, archive and sends of a batch, each bounded.
    pub const CONSUMER: Self = Self {
        connect: Duration::from_secs(2),
        attempt: Duration::from_secs(3),
        operation: Duration::from_secs(8),
        max_attempts: 3,
    };
    /// The dispatcher: reads and records around attempts that may take up to a minute; its
    /// deadline planning keeps 3 s after an attempt, enough for one record or enqueue attempt.
    pub const DISPATCHER: Self = Self {
        connect: Duration::from_secs(1),
        attempt: Duration::from_millis(2_500),
        operation: Duration::from_secs(6),
        max_attempts: 3,
    };
}

impl CallBudget {
    /// The budget with `AWS_CALL_ATTEMPT_TIMEOUT_MS` / `AWS_CALL_TIMEOUT_MS` applied when set: for a
    /// local emulator that answers in seconds on a loaded machine (config/local.env sets them),
    /// never needed in AWS. Unparsable values are ignored (the function's own budget applies).
    pub fn from_env(self) -> Self {
        let ms = |key: &str| {
            std::env::var(key)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .filter(|v| *v > 0)
                .map(Duration::from_millis)
        };
        Self {
            attempt: ms("AWS_CALL_ATTEMPT_TIMEOUT_MS").unwrap_or(self.attempt),
            operation: ms("AWS_CALL_TIMEOUT_MS").unwrap_or(self.operation),
            ..self
        }
    }
}

/// Loads the SDK configuration from the environment (region, credentials, `AWS_ENDPOINT_URL` for
/// the local emulator) with the function's call budget.
pub async fn sdk_config(budget: CallBudget) -> aws_config::SdkConfig {
    let budget = budget.from_env();
    aws_config::from_env()
        .timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .connect_timeout(budget.connect)
                .operation_attempt_timeout(budget.attempt)
                .operation_timeout(budget.operation)
                .build(),
        )
        .retry_config(
            aws_config::retry::RetryConfig::standard().with_max_attempts(budget.max_attempts),
        )
        .load()
        .await
}
