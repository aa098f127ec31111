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

/// The real binary, fed by a mock Runtime API with requests that panicked (`X-Forwarded-Proto`
/// with a space: lambda_http's URI rebuild) or rerouted (`%2e%2e`) the lambda_http-based receiver,
/// and other malformed ones: every invocation gets a response with its precise status, none an
/// error, and the process is still alive after the last one (a panic would abort the sandbox).
#[test]
fn hostile_requests_get_precise_answers_from_the_real_binary_without_a_panic() {
    use integration_tests::runtime_api::MockRuntime;
    use integration_tests::{read_json, repo_root};
    use std::time::{Duration, Instant};

    let base = read_json("events/receiver/hostile-incode-wrong-shared-header.json");
    let with = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut e = base.clone();
        f(&mut e);
        e
    };
    let cases: Vec<(serde_json::Value, i64)> = vec![
        // Shared header wrong: refused before any queue is needed, whatever X-Forwarded-Proto says.
        (
            with(&|e| e["headers"]["x-forwarded-proto"] = "a b".into()),
            401,
        ),
        (
            with(&|e| {
                e["rawPath"] = "/nowhere".into();
                e["headers"]["x-forwarded-proto"] = "a b".into();
                e["headers"]["host"] = "bad host/%%".into();
            }),
            404,
        ),
        (
            with(&|e| e["rawPath"] = "/webhooks/incode/%2e%2e/idnow".into()),
            404,
        ),
        (with(&|e| e["headers"]["x-bad"] = "a\u{7}b".into()), 400),
        (with(&|e| e["headers"]["bad name"] = "x".into()), 400),
        (
            with(&|e| {
                e["isBase64Encoded"] = true.into();
                e["body"] = "%%%".into();
            }),
            400,
        ),
        (
            with(&|e| e["requestContext"]["http"]["method"] = "G E T".into()),
            405,
        ),
        // No rawPath: no route.
        (serde_json::json!({"unexpected": "shape"}), 404),
        // Not an HTTP API event at all.
        (serde_json::json!([1, 2, 3]), 400),
        (serde_json::json!({"rawPath": 7}), 400),
    ];
    let expected: Vec<i64> = cases.iter().map(|(_, s)| *s).collect();
    let events: Vec<serde_json::Value> = cases.into_iter().map(|(e, _)| e).collect();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let runtime = rt.block_on(MockRuntime::start(events));
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_receiver"));
    cmd.env_clear()
        .env("AWS_REGION", "eu-central-1")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("LOG_LEVEL", "trace")
        .current_dir(repo_root())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    for (k, v) in runtime.env() {
        cmd.env(k, v);
    }
    for (k, v) in integration_tests::local_env().pairs() {
        cmd.env(k, v);
    }
    cmd.env("INGEST_QUEUE_URL", "http://127.0.0.1:9/123456789012/q");
    let mut child = cmd.spawn().expect("run the receiver binary");

    let deadline = Instant::now() + Duration::from_secs(60);
    while runtime.posted().len() < expected.len() && Instant::now() < deadline {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the receiver exited (a panic aborts it) after {} answers: {:?}",
            runtime.posted().len(),
            runtime.posted()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let alive = child.try_wait().unwrap().is_none();
    let _ = child.kill();
    let _ = child.wait();
    let posted = runtime.posted();
    assert!(
        alive,
        "the receiver is still running after the last request"
    );
    assert_eq!(posted.len(), expected.len(), "{posted:?}");
    for (i, (p, want)) in posted.iter().zip(&expected).enumerate() {
        assert_eq!(p.kind, "response", "case {i}: {p:?}");
        assert_eq!(p.body["statusCode"], *want, "case {i}: {p:?}");
        let body: serde_json::Value =
            serde_json::from_str(p.body["body"].as_str().unwrap_or_default()).unwrap();
        assert!(body["error"].is_string(), "case {i}: a JSON error: {p:?}");
    }
}
