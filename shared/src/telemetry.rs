//! Structured JSON logs (CloudWatch Logs Insights can query the fields). Log lines never carry
//! request bodies, header values or secrets: they may hold personal data.
//!
//! Levels: `LOG_LEVEL` applies to this project's code only (the library `kyc_relay` and the three
//! function binaries). Every other crate logs at `warn` unless `RUST_LOG` names it: lambda_runtime
//! logs whole invocation events at `trace` and the AWS SDK logs request and response bodies at
//! `trace`, so turning the project up to `trace` must not turn them up too. The filter is a plain
//! `Targets` list (no regex engine in the binaries).

use tracing_subscriber::Layer;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;

/// The log targets `LOG_LEVEL` governs: the library and the function binaries.
pub const PROJECT_TARGETS: [&str; 4] = ["kyc_relay", "receiver", "consumer", "dispatcher"];

/// The level of every crate that is not ours, unless `RUST_LOG` names it.
pub const LIBRARY_LEVEL: LevelFilter = LevelFilter::WARN;

/// The filter for `LOG_LEVEL` (`error`..`trace`, default `info`; an unknown value means `info`) and
/// `RUST_LOG` (`target=level` pairs, comma-separated: each named target gets its level; a bare level
/// applies to the project's targets, never to the libraries).
pub fn filter(log_level: Option<&str>, rust_log: Option<&str>) -> Targets {
    let mut project = log_level
        .and_then(|l| l.trim().parse::<LevelFilter>().ok())
        .unwrap_or(LevelFilter::INFO);
    let named = rust_log.and_then(|spec| spec.parse::<Targets>().ok());
    if let Some(level) = named.as_ref().and_then(Targets::default_level) {
        project = level;
    }
    let mut targets = Targets::new()
        .with_default(LIBRARY_LEVEL)
        .with_targets(PROJECT_TARGETS.map(|t| (t, project)));
    if let Some(named) = named {
        targets = targets.with_targets(named.iter().map(|(t, l)| (t.to_string(), l)));
    }
    targets
}

/// The JSON log subscriber writing to `writer` (stdout in Lambda; a buffer in tests).
pub fn subscriber<W>(filter: Targets, writer: W) -> impl tracing::Subscriber + Send + Sync
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::registry().with(
        tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(false)
            .with_span_list(false)
            .with_target(false)
            .without_time() // CloudWatch timestamps every line already.
            .with_writer(writer)
            .with_filter(filter),
    )
}

/// The one entry point all three functions call: `LOG_LEVEL` and `RUST_LOG` from the process.
pub fn init() {
    let log_level = std::env::var("LOG_LEVEL").ok();
    let rust_log = std::env::var("RUST_LOG").ok();
    let filter = filter(log_level.as_deref(), rust_log.as_deref());
    let _ = tracing::subscriber::set_global_default(subscriber(filter, std::io::stdout));
}

/// Per-invocation counters, emitted once as a CloudWatch Embedded Metric Format line (one log line
/// per batch, not per event: metrics without PutMetricData calls).
#[derive(Default)]
pub struct Counters(std::sync::Mutex<std::collections::BTreeMap<&'static str, u64>>);

pub const METRICS_NAMESPACE: &str = "KycWebhookRelay";

impl Counters {
    pub fn add(&self, name: &'static str, n: u64) {
        if n > 0
            && let Ok(mut m) = self.0.lock()
        {
            *m.entry(name).or_default() += n;
        }
    }

    pub fn get(&self, name: &str) -> u64 {
        self.0
            .lock()
            .map(|m| m.get(name).copied().unwrap_or(0))
            .unwrap_or(0)
    }

    pub fn emit(&self, function: &str) {
        let Ok(m) = self.0.lock() else { return };
        if m.is_empty() {
            return;
        }
        let metrics: Vec<serde_json::Value> = m
            .keys()
            .map(|k| serde_json::json!({"Name": k, "Unit": "Count"}))
            .collect();
        let mut line = serde_json::json!({
            "_aws": {
                "Timestamp": crate::clock::Clock::now_ms(&crate::clock::SystemClock),
                "CloudWatchMetrics": [{
                    "Namespace": METRICS_NAMESPACE,
                    "Dimensions": [["Function"]],
                    "Metrics": metrics,
                }]
            },
            "Function": function,
        });
        for (k, v) in m.iter() {
            line[*k] = (*v).into();
        }
        println!("{line}");
    }
}

/// Per-destination metrics of one invocation, emitted as one EMF line per destination with the
/// dimensions `Function` and `Destination`: counts (`Delivered`, `Retried`, `DeadLettered`, `Held`,
/// ...) and value lists (`AttemptLatencyMs`, `DeliveryLagMs`: provider request to destination 2xx),
/// from which CloudWatch computes p50/p99.
#[derive(Default)]
pub struct DestinationMetrics(
    std::sync::Mutex<std::collections::BTreeMap<String, DestinationStats>>,
);

#[derive(Default)]
struct DestinationStats {
    counts: std::collections::BTreeMap<&'static str, u64>,
    values: std::collections::BTreeMap<&'static str, Vec<u64>>,
}

/// EMF accepts at most 100 values per metric and line.
const EMF_MAX_VALUES: usize = 100;

impl DestinationMetrics {
    pub fn add(&self, destination: &str, name: &'static str, n: u64) {
        if let Ok(mut m) = self.0.lock() {
            *m.entry(destination.to_string())
                .or_default()
                .counts
                .entry(name)
                .or_default() += n;
        }
    }

    pub fn value(&self, destination: &str, name: &'static str, v: u64) {
        if let Ok(mut m) = self.0.lock() {
            let values = m
                .entry(destination.to_string())
                .or_default()
                .values
                .entry(name)
                .or_default();
            if values.len() < EMF_MAX_VALUES {
                values.push(v);
            }
        }
    }

    pub fn count(&self, destination: &str, name: &str) -> u64 {
        self.0
            .lock()
            .ok()
            .and_then(|m| m.get(destination).and_then(|s| s.counts.get(name).copied()))
            .unwrap_or(0)
    }

    pub fn emit(&self, function: &str) {
        let Ok(m) = self.0.lock() else { return };
        for (destination, stats) in m.iter() {
            let mut metrics: Vec<serde_json::Value> = stats
                .counts
                .keys()
                .map(|k| serde_json::json!({"Name": k, "Unit": "Count"}))
                .collect();
            metrics.extend(
                stats
                    .values
                    .keys()
                    .map(|k| serde_json::json!({"Name": k, "Unit": "Milliseconds"})),
            );
            if metrics.is_empty() {
                continue;
            }
            let mut line = serde_json::json!({
                "_aws": {
                    "Timestamp": crate::clock::Clock::now_ms(&crate::clock::SystemClock),
                    "CloudWatchMetrics": [{
                        "Namespace": METRICS_NAMESPACE,
                        "Dimensions": [["Function", "Destination"]],
                        "Metrics": metrics,
                    }]
                },
                "Function": function,
                "Destination": destination,
            });
            for (k, v) in &stats.counts {
                line[*k] = (*v).into();
            }
            for (k, v) in &stats.values {
                line[*k] = v.clone().into();
            }
            println!("{line}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::Level;
    use tracing_subscriber::filter::Targets;

    fn enabled(t: &Targets, target: &str, level: Level) -> bool {
        t.would_enable(target, &level)
    }

    #[test]
    fn log_level_is_for_the_project_libraries_stay_at_warn() {
        let t = filter(Some("trace"), None);
        for target in ["kyc_relay", "kyc_relay::intake", "receiver", "dispatcher"] {
            assert!(enabled(&t, target, Level::TRACE), "{target}");
        }
        for target in ["lambda_runtime", "aws_smithy_runtime", "hyper", "reqwest"] {
            assert!(!enabled(&t, target, Level::INFO), "{target}");
            assert!(enabled(&t, target, Level::WARN), "{target}");
        }
        let t = filter(None, None);
        assert!(enabled(&t, "kyc_relay", Level::INFO));
        assert!(!enabled(&t, "kyc_relay", Level::DEBUG));
        let t = filter(Some("nonsense"), None);
        assert!(enabled(&t, "kyc_relay", Level::INFO));
    }

    #[test]
    fn rust_log_opens_only_the_libraries_it_names() {
        let t = filter(Some("info"), Some("debug,aws_smithy_runtime=trace"));
        assert!(
            enabled(&t, "kyc_relay", Level::DEBUG),
            "bare level: the project"
        );
        assert!(
            enabled(&t, "aws_smithy_runtime", Level::TRACE),
            "named library"
        );
        assert!(
            !enabled(&t, "lambda_runtime", Level::INFO),
            "unnamed library"
        );
    }
}
