//! Misconfiguration stops the dispatcher at cold start with the offending variable or field named.

use integration_tests::{run_init, with_vars};

const GOOD: &[(&str, &str)] = &[
    ("RECORDS_TABLE", "records"),
    (
        "DELIVERY_QUEUE_URL",
        "http://127.0.0.1:9/123456789012/delivery",
    ),
    (
        "RETRY_QUEUE_URL",
        "http://127.0.0.1:9/123456789012/delivery-retry",
    ),
    (
        "DELIVERY_DLQ_URL",
        "http://127.0.0.1:9/123456789012/delivery-dlq",
    ),
    (
        "DESTINATIONS_CONFIG",
        r#"{"destinations": [{"id": "crm", "url": "https://crm.example/hook", "retry_policy": "incode"}]}"#,
    ),
];

fn run(overrides: &[(&'static str, &'static str)]) -> (bool, String) {
    run_init(
        env!("CARGO_BIN_EXE_dispatcher"),
        &with_vars(GOOD, overrides),
    )
}

#[test]
fn missing_resources_stop_init() {
    for var in [
        "RECORDS_TABLE",
        "DELIVERY_QUEUE_URL",
        "RETRY_QUEUE_URL",
        "DELIVERY_DLQ_URL",
    ] {
        let (ok, text) = run(&[(var, "")]);
        assert!(!ok, "{var}");
        assert!(
            text.contains(var) && text.contains("dispatcher init failed"),
            "{text}"
        );
    }
}

#[test]
fn bad_secrets_and_timeouts_stop_init() {
    let (ok, text) = run(&[(
        "DESTINATIONS_CONFIG",
        r#"{"destinations": [{"id": "crm", "url": "https://crm.example/hook", "retry_policy": "incode",
            "auth": {"type": "standard_webhooks", "secret": "not-a-whsec-secret"}}]}"#,
    )]);
    assert!(!ok);
    assert!(text.contains("destinations[0].auth.secret"), "{text}");
    let (ok, text) = run(&[(
        "DESTINATIONS_CONFIG",
        r#"{"destinations": [{"id": "meta", "url": "https://169.254.169.254/latest", "retry_policy": "incode"}]}"#,
    )]);
    assert!(!ok);
    assert!(text.contains("metadata"), "{text}");
    let (ok, text) = run(&[("HTTP_TIMEOUT_MS", "60000")]);
    assert!(!ok);
    assert!(text.contains("HTTP_TIMEOUT_MS"), "{text}");
    for var in [
        "FAST_LANE_TIMEOUT_MS",
        "BREAKER_FAILURE_THRESHOLD",
        "HOLD_SECONDS",
    ] {
        let (ok, text) = run(&[(var, "0")]);
        assert!(!ok, "{var}");
        assert!(text.contains(var), "{text}");
    }
    let (ok, text) = run(&[("MAX_HOLD_SECONDS", "2592000")]);
    assert!(!ok, "a 30-day hold cannot fit in 30 days of records");
    assert!(text.contains("RECORD_TTL_SECONDS"), "{text}");
}

#[test]
fn a_valid_configuration_passes_init() {
    let (_, text) = run(&[]);
    assert!(!text.contains("init failed"), "{text}");
}
