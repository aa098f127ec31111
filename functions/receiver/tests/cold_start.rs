//! Misconfiguration stops the receiver at cold start, before it asks the Runtime API for work,
//! with a message that names the variable. (No Runtime API is needed: init fails first.)

use integration_tests::{run_init, with_vars};

const GOOD: &[(&str, &str)] = &[
    ("INGEST_QUEUE_URL", "http://127.0.0.1:9/123456789012/q"),
    ("INCODE_ALLOWED_IPS", "incode-production"),
    ("IDNOW_ENABLED", "false"),
];

fn run(overrides: &[(&'static str, &'static str)]) -> (bool, String) {
    run_init(env!("CARGO_BIN_EXE_receiver"), &with_vars(GOOD, overrides))
}

#[test]
fn missing_queue_url_stops_init() {
    let (ok, text) = run(&[("INGEST_QUEUE_URL", "")]);
    assert!(!ok);
    assert!(text.contains("INGEST_QUEUE_URL"), "{text}");
    assert!(text.contains("receiver init failed"), "{text}");
}

#[test]
fn an_unparsable_cidr_stops_init() {
    let (ok, text) = run(&[("INCODE_ALLOWED_IPS", "54.86.34.156/40")]);
    assert!(!ok);
    assert!(text.contains("INCODE_ALLOWED_IPS"), "{text}");
}

#[test]
fn a_provider_without_verification_stops_init() {
    let (ok, text) = run(&[("INCODE_ALLOWED_IPS", "any")]);
    assert!(!ok);
    assert!(text.contains("Incode has no verification"), "{text}");
    let (ok, text) = run(&[("IDNOW_ENABLED", "true")]);
    assert!(!ok);
    assert!(text.contains("IDNOW_ALLOWED_IPS"), "{text}");
}

#[test]
fn an_invalid_key_or_url_stops_init() {
    let (ok, text) = run(&[
        ("IDNOW_ENABLED", "true"),
        ("IDNOW_ALLOWED_IPS", "any"),
        ("IDNOW_JWKS_URL", "http://idnow.example/jwks.json"),
        ("IDNOW_JWT_ISSUER", "i"),
        ("IDNOW_JWT_AUDIENCE", "a"),
    ]);
    assert!(!ok);
    assert!(text.contains("IDNOW_JWKS_URL"), "{text}");
    let (ok, text) = run(&[
        ("IDNOW_ENABLED", "true"),
        ("IDNOW_ALLOWED_IPS", "any"),
        ("IDNOW_JWT_SECRET", "too-short"),
    ]);
    assert!(!ok);
    assert!(text.contains("IDNOW_JWT_SECRET"), "{text}");
    let (ok, text) = run(&[("OAUTH_CLIENT_SECRET", "0123456789abcdef0123456789abcdef-x")]);
    assert!(!ok);
    assert!(text.contains("OAUTH_CLIENT_ID"), "{text}");
}

#[test]
fn a_valid_configuration_passes_init() {
    let (_, text) = run(&[]);
    // Init succeeded; the process then fails only because no Runtime API listens on port 9.
    assert!(!text.contains("init failed"), "{text}");
}
