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
