//! Structured JSON logs (CloudWatch Logs Insights can query the fields). Log lines never carry
//! request bodies or header values: they may hold personal data.

use tracing_subscriber::EnvFilter;

/// `LOG_LEVEL` (default `info`) or a full `RUST_LOG` filter.
pub fn init() {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .or_else(|| std::env::var("LOG_LEVEL").ok())
        .unwrap_or_else(|| "info".into());
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(EnvFilter::try_new(&filter).unwrap_or_else(|_| EnvFilter::new("info")))
        .with_current_span(false)
        .with_span_list(false)
        .with_target(false)
        .without_time() // CloudWatch timestamps every line already.
        .try_init();
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
