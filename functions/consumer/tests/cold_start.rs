//! Misconfiguration stops the consumer at cold start with the offending variable or field named.

use integration_tests::{run_init, with_vars};

const GOOD: &[(&str, &str)] = &[
    ("RECORDS_TABLE", "records"),
    (
        "DELIVERY_QUEUE_URL",
        "http://127.0.0.1:9/123456789012/delivery",
    ),
    (
        "DESTINATIONS_CONFIG",
        r#"{"destinations": [{"id": "crm", "url": "https://crm.example/hook", "retry_policy": "idnow"}]}"#,
    ),
];

fn run(overrides: &[(&'static str, &'static str)]) -> (bool, String) {
    run_init(env!("CARGO_BIN_EXE_consumer"), &with_vars(GOOD, overrides))
}

#[test]
fn missing_resources_stop_init() {
    for var in ["RECORDS_TABLE", "DELIVERY_QUEUE_URL"] {
        let (ok, text) = run(&[(var, "")]);
        assert!(!ok, "{var}");
        assert!(
            text.contains(var) && text.contains("consumer init failed"),
            "{text}"
        );
    }
}

#[test]
fn an_invalid_destinations_document_stops_init_naming_the_field() {
    let (ok, text) = run(&[(
        "DESTINATIONS_CONFIG",
        r#"{"destinations": [{"id": "crm", "url": "http://crm.example/hook", "retry_policy": "idnow"}]}"#,
    )]);
    assert!(!ok);
    assert!(text.contains("destinations[0].url"), "{text}");
    let (ok, text) = run(&[("DESTINATIONS_CONFIG", "")]);
    assert!(!ok);
    assert!(text.contains("no destinations configured"), "{text}");
    // Records that would expire before a message in the ingest DLQ does.
    let (ok, text) = run(&[("RECORD_TTL_SECONDS", "604800")]);
    assert!(!ok);
    assert!(
        text.contains("RECORD_TTL_SECONDS") && text.contains("ingest"),
        "{text}"
    );
    // A destination whose retry chain cannot fit in the records' lifetime.
    let (ok, text) = run(&[(
        "DESTINATIONS_CONFIG",
        r#"{"destinations": [{"id": "slowpoke", "url": "https://crm.example/hook",
            "retry_policy": {"custom": {"initial_ms": 86400000, "multiplier": 1, "max_retries": 20, "max_interval_ms": 86400000}}}]}"#,
    )]);
    assert!(!ok);
    assert!(text.contains("slowpoke"), "{text}");
}

#[test]
fn a_valid_configuration_passes_init() {
    let (_, text) = run(&[]);
    assert!(!text.contains("init failed"), "{text}");
}
