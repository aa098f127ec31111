//! Misconfiguration stops the receiver at cold start, before it asks the Runtime API for work,
//! with a message that names the variable. (No Runtime API is needed: init fails first.)

use std::process::Command;

fn run_with(vars: &[(&str, &str)]) -> (bool, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_receiver"));
    cmd.env_clear()
        .env("AWS_REGION", "eu-central-1")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        // Nothing listens here: if init wrongly succeeded, the runtime would fail to connect, which
        // the assertions on the message below would still catch.
        .env("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9");
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run receiver");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

const GOOD: &[(&str, &str)] = &[
    ("INGEST_QUEUE_URL", "http://127.0.0.1:9/123456789012/q"),
    ("INCODE_ALLOWED_IPS", "incode-production"),
    ("IDNOW_ENABLED", "false"),
];

fn with(overrides: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
    let mut vars: Vec<_> = GOOD
        .iter()
        .filter(|(k, _)| !overrides.iter().any(|(o, _)| o == k))
        .copied()
        .collect();
    vars.extend(overrides.iter().filter(|(_, v)| !v.is_empty()).copied());
    vars
}

#[test]
fn missing_queue_url_stops_init() {
    let (ok, text) = run_with(&with(&[("INGEST_QUEUE_URL", "")]));
    assert!(!ok);
    assert!(text.contains("INGEST_QUEUE_URL"), "{text}");
    assert!(text.contains("receiver init failed"), "{text}");
}

#[test]
fn an_unparsable_cidr_stops_init() {
    let (ok, text) = run_with(&with(&[("INCODE_ALLOWED_IPS", "54.86.34.156/40")]));
    assert!(!ok);
    assert!(text.contains("INCODE_ALLOWED_IPS"), "{text}");
}

#[test]
fn a_provider_without_verification_stops_init() {
    let (ok, text) = run_with(&with(&[("INCODE_ALLOWED_IPS", "any")]));
    assert!(!ok);
    assert!(text.contains("Incode has no verification"), "{text}");
    let (ok, text) = run_with(&with(&[("IDNOW_ENABLED", "true")]));
    assert!(!ok);
    assert!(text.contains("IDNOW_ALLOWED_IPS"), "{text}");
}

#[test]
fn an_invalid_key_or_url_stops_init() {
    let (ok, text) = run_with(&with(&[
        ("IDNOW_ENABLED", "true"),
        ("IDNOW_ALLOWED_IPS", "any"),
        ("IDNOW_JWKS_URL", "http://idnow.example/jwks.json"),
        ("IDNOW_JWT_ISSUER", "i"),
        ("IDNOW_JWT_AUDIENCE", "a"),
    ]));
    assert!(!ok);
    assert!(text.contains("IDNOW_JWKS_URL"), "{text}");
    let (ok, text) = run_with(&with(&[
        ("IDNOW_ENABLED", "true"),
        ("IDNOW_ALLOWED_IPS", "any"),
        ("IDNOW_JWT_SECRET", "too-short"),
    ]));
    assert!(!ok);
    assert!(text.contains("IDNOW_JWT_SECRET"), "{text}");
}

#[test]
fn a_valid_configuration_passes_init_and_reaches_the_runtime_api() {
    let (ok, text) = run_with(GOOD);
    // Init succeeded; the process then fails only because no Runtime API listens on port 9.
    assert!(!text.contains("receiver init failed"), "{text}");
    let _ = ok;
}
