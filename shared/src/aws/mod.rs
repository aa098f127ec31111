//! AWS adapters: the only place where AWS SDK and Lambda event types meet the domain.

pub mod apigw;
pub mod dynamodb;
pub mod s3;
pub mod sqs;
pub mod sqs_event;
pub mod ssm;
pub mod targets;

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
        self.with_overrides(|key| std::env::var(key).ok())
    }

    /// The budget with the overrides `lookup` gives for those two variables.
    pub fn with_overrides(self, lookup: impl Fn(&str) -> Option<String>) -> Self {
        let ms = |key: &str| {
            lookup(key)
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
///
/// Cold start (BENCHMARKS.md): when `AWS_ACCESS_KEY_ID` is set (Lambda always sets it, with the
/// execution role's keys and session token), credentials come from the environment variables alone:
/// the default chain would also build an STS client for web identity (and with it a TLS connector
/// and the whole root store) and read profile files. Likewise the region is `AWS_REGION` when set
/// (Lambda sets it), so the region chain is not built. Without those variables (a developer's
/// machine, a container with an instance role, SSO profiles) the default chains apply unchanged.
/// The HTTPS client trusts [`crate::tls::roots`] and is built on the first request ([`https_client`]).
///
/// The budget applies as given: the functions pass theirs through [`CallBudget::from_env`].
pub async fn sdk_config(budget: CallBudget) -> aws_config::SdkConfig {
    let mut loader = aws_config::from_env().http_client(https_client());
    if env_set("AWS_ACCESS_KEY_ID") {
        loader = loader.credentials_provider(
            aws_config::environment::EnvironmentVariableCredentialsProvider::new(),
        );
    }
    if let Some(region) = std::env::var("AWS_REGION").ok().filter(|r| !r.is_empty()) {
        loader = loader.region(aws_config::Region::new(region));
    }
    loader
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

/// Whether `key` is set to a non-empty value.
fn env_set(key: &str) -> bool {
    std::env::var_os(key).is_some_and(|v| !v.is_empty())
}

/// The SDK's own HTTPS client (hyper 1 + rustls, aws-lc), trusting [`crate::tls::roots`], built when
/// the first request asks for a connector. The SDK's default client builds a connector, with the
/// platform's root store, every time a service client is created (to load the certificates "at
/// client initialization"), then again for its first request: five root-store parses at the
/// consumer's cold start. Here all service clients of the function share one connector per
/// timeout setting, and the roots are read once, on the first AWS call.
pub fn https_client() -> aws_smithy_runtime_api::client::http::SharedHttpClient {
    aws_smithy_runtime_api::client::http::SharedHttpClient::new(OnFirstRequest(
        std::sync::OnceLock::new(),
    ))
}

#[derive(Debug)]
struct OnFirstRequest(std::sync::OnceLock<aws_smithy_runtime_api::client::http::SharedHttpClient>);

impl aws_smithy_runtime_api::client::http::HttpClient for OnFirstRequest {
    fn http_connector(
        &self,
        settings: &aws_smithy_runtime_api::client::http::HttpConnectorSettings,
        components: &aws_smithy_runtime_api::client::runtime_components::RuntimeComponents,
    ) -> aws_smithy_runtime_api::client::http::SharedHttpConnector {
        use aws_smithy_http_client::tls;
        self.0
            .get_or_init(|| {
                let trust = tls::TrustStore::empty().with_pem_certificate(crate::tls::roots_pem());
                let context = tls::TlsContext::builder()
                    .with_trust_store(trust)
                    .build()
                    .expect("a TLS context without extra server names always builds");
                aws_smithy_http_client::Builder::new()
                    .tls_provider(tls::Provider::Rustls(
                        tls::rustls_provider::CryptoMode::AwsLc,
                    ))
                    .tls_context(context)
                    .build_https()
            })
            .http_connector(settings, components)
    }

    // `validate_base_client_config` keeps its default (nothing): the SDK's client uses it to build a
    // connector early, which is exactly what this client defers.

    fn connector_metadata(
        &self,
    ) -> Option<aws_smithy_runtime_api::client::connector_metadata::ConnectorMetadata> {
        // What the SDK's hyper client reports (it goes into the user agent).
        Some(
            aws_smithy_runtime_api::client::connector_metadata::ConnectorMetadata::new(
                "hyper",
                Some(std::borrow::Cow::Borrowed("1.x")),
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::CallBudget;
    use std::time::Duration;

    /// A lookup over `pairs`, as `std::env::var` would answer.
    fn env<'a>(pairs: &'a [(&str, &str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |key| {
            pairs
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn the_env_overrides_replace_the_attempt_and_operation_limits_only() {
        let base = CallBudget::RECEIVER;
        let set = base.with_overrides(env(&[
            ("AWS_CALL_ATTEMPT_TIMEOUT_MS", "5000"),
            ("AWS_CALL_TIMEOUT_MS", " 8000 "),
        ]));
        assert_eq!(set.attempt, Duration::from_secs(5));
        assert_eq!(set.operation, Duration::from_secs(8));
        assert_eq!(
            (set.connect, set.max_attempts),
            (base.connect, base.max_attempts)
        );
        // Unset, empty, zero or unparsable: the function's own budget.
        assert_eq!(base.with_overrides(env(&[])), base);
        for bad in ["", "0", "-5", "2s", "1e3"] {
            let pairs = [
                ("AWS_CALL_ATTEMPT_TIMEOUT_MS", bad),
                ("AWS_CALL_TIMEOUT_MS", bad),
            ];
            assert_eq!(base.with_overrides(env(&pairs)), base, "{bad:?}");
        }
    }
}
