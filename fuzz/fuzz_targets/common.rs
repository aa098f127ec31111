//! Shared by the targets: the local test configuration and a queue that accepts everything.
#![allow(dead_code)] // Each target uses part of it.

use kyc_relay::clock::ManualClock;
use kyc_relay::config::Env;
use kyc_relay::envelope::Envelope;
use kyc_relay::queue::{IngestQueue, QueueError};
use std::sync::Arc;

pub struct NoopQueue;

impl IngestQueue for NoopQueue {
    async fn enqueue(&self, envelope: &Envelope) -> Result<(), QueueError> {
        // What the SQS adapter does before sending: it must not fail on anything accepted.
        serde_json::to_string(envelope).map_err(|e| QueueError(e.to_string()))?;
        Ok(())
    }
}

/// config/local.env without the JWKS (no network in a fuzz target): HS256 and every other check.
pub fn env() -> Env {
    let text = include_str!("../../config/local.env");
    let mut env = Env::from_pairs(text.lines().filter_map(|l| {
        let l = l.trim();
        if l.is_empty() || l.starts_with('#') {
            return None;
        }
        l.split_once('=').map(|(k, v)| (k.to_string(), v.to_string()))
    }));
    env.set("IDNOW_JWKS_URL", "");
    env.set("INGEST_QUEUE_URL", "http://127.0.0.1:9/q");
    env
}

/// The clock of the sample events (their tokens are valid then).
pub fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::at_ms(1_795_000_000_000))
}

/// Splits the input on 0xFF bytes into at most `n` fields (missing ones are empty).
pub fn fields(data: &[u8], n: usize) -> Vec<&[u8]> {
    let mut out: Vec<&[u8]> = data.splitn(n, |b| *b == 0xFF).collect();
    out.resize(n, &[]);
    out
}
