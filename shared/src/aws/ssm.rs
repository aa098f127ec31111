//! Secrets from SSM Parameter Store, fetched once at cold start.

use crate::config::{ConfigError, SecretSource};
use std::collections::HashMap;

/// The SSM client is built on the first fetch: a function whose secrets are all plain values never
/// builds it (building an SDK client is a measurable part of a cold start, BENCHMARKS.md).
pub struct SsmSecrets {
    aws: aws_config::SdkConfig,
    client: std::sync::OnceLock<aws_sdk_ssm::Client>,
}

impl SsmSecrets {
    pub fn new(aws: &aws_config::SdkConfig) -> Self {
        Self {
            aws: aws.clone(),
            client: std::sync::OnceLock::new(),
        }
    }

    fn client(&self) -> &aws_sdk_ssm::Client {
        self.client
            .get_or_init(|| aws_sdk_ssm::Client::new(&self.aws))
    }
}

impl SecretSource for SsmSecrets {
    async fn fetch(&self, names: &[String]) -> Result<HashMap<String, String>, ConfigError> {
        let mut values = HashMap::new();
        // GetParameters takes at most 10 names per call.
        for chunk in names.chunks(10) {
            let out = self
                .client()
                .get_parameters()
                .set_names(Some(chunk.to_vec()))
                .with_decryption(true)
                .send()
                .await
                .map_err(|e| {
                    ConfigError::new(
                        "SSM",
                        format!(
                            "cannot read parameters {chunk:?}: {}",
                            aws_sdk_ssm::error::DisplayErrorContext(e)
                        ),
                    )
                })?;
            for p in out.parameters() {
                if let (Some(name), Some(value)) = (p.name(), p.value()) {
                    values.insert(name.to_string(), value.to_string());
                }
            }
        }
        Ok(values)
    }
}
