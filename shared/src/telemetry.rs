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
