//! The real receiver handler against the emulator's SQS, with the JWKS served over HTTP on
//! 127.0.0.1: every sample under events/receiver/ gets the status its manifest names, accepted ones
//! land on the ingest queue exactly as received, refused ones leave nothing behind.

use aws_lambda_events::apigw::ApiGatewayV2httpResponse;
use aws_lambda_events::encodings::Body;
use integration_tests::peer::{Answer, Peer};
use integration_tests::{LocalAws, apigw_event, read_json, repo_root};
use kyc_relay::aws::{apigw, sqs::SqsIngestQueue};
use kyc_relay::clock::{ManualClock, SystemClock};
use kyc_relay::config::Env;
use kyc_relay::envelope::Envelope;
use kyc_relay::intake::Intake;
use kyc_relay::verification::Check;
use std::sync::Arc;
use std::time::Duration;

async fn jwks_peer() -> Peer {
    let jwks = std::fs::read_to_string(repo_root().join("events/keys/jwks.json")).unwrap();
    Peer::start(Answer::json(200, jwks)).await
}

fn intake(
    env: &Env,
    aws: &LocalAws,
    clock: Arc<dyn kyc_relay::clock::Clock>,
) -> Intake<SqsIngestQueue> {
    let http =
        kyc_relay::http_client::build(Duration::from_secs(2), Duration::from_secs(4)).unwrap();
    let queue = SqsIngestQueue::new(&aws.sdk, env.require("INGEST_QUEUE_URL").unwrap());
    Intake::from_env(env, queue, http, clock).expect("valid test configuration")
}

fn body_text(response: &ApiGatewayV2httpResponse) -> String {
    match &response.body {
        Some(Body::Text(t)) => t.clone(),
        Some(Body::Binary(b)) => String::from_utf8_lossy(b).into_owned(),
        _ => String::new(),
    }
}

fn request_body(event: &serde_json::Value) -> String {
    let body = event["body"].as_str().unwrap_or_default();
    if event["isBase64Encoded"].as_bool().unwrap_or(false) {
        use base64::Engine;
        String::from_utf8_lossy(
            &base64::engine::general_purpose::STANDARD
                .decode(body)
                .unwrap(),
        )
        .into_owned()
    } else {
        body.to_string()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sample_event_gets_its_documented_answer_and_only_accepted_ones_are_enqueued() {
    let aws = LocalAws::provision().await;
    let jwks = jwks_peer().await;
    let mut env = aws.env();
    env.set("IDNOW_JWKS_URL", jwks.url("/jwks.json"));
    let intake = intake(&env, &aws, Arc::new(SystemClock));
    let queue_url = aws.get("INGEST_QUEUE_URL").to_string();

    let manifest = read_json("events/receiver/manifest.json");
    let manifest = manifest.as_object().unwrap();
    let mut on_disk: Vec<String> = std::fs::read_dir(repo_root().join("events/receiver"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "manifest.json")
        .collect();
    on_disk.sort();
    let mut listed: Vec<String> = manifest.keys().cloned().collect();
    listed.sort();
    assert_eq!(
        on_disk, listed,
        "every file under events/receiver is listed in its manifest"
    );

    let mut failures = Vec::new();
    let mut envelopes = Vec::new();
    for (file, expected) in manifest {
        let want = expected["status"].as_u64().unwrap() as u16;
        let raw = read_json(&format!("events/receiver/{file}"));
        let response = apigw::handle(&intake, apigw_event(&format!("receiver/{file}"))).await;
        let status = response.status_code as u16;
        let body = body_text(&response);
        let content_type = response
            .headers
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string());
        if status != want {
            failures.push(format!("{file}: expected {want}, got {status} {body}"));
            continue;
        }
        assert_eq!(
            content_type.as_deref(),
            Some("application/json"),
            "{file}: JSON answer"
        );
        let json: serde_json::Value = serde_json::from_str(&body).expect("JSON body");
        let messages = aws.drain(&queue_url).await;
        let is_webhook = raw["rawPath"].as_str().unwrap().starts_with("/webhooks/");
        if status == 200 && is_webhook {
            assert_eq!(json, serde_json::json!({"success": true}), "{file}");
            assert_eq!(
                messages.len(),
                1,
                "{file}: one message per accepted webhook"
            );
            let m = &messages[0];
            let envelope: Envelope = serde_json::from_str(m.body().unwrap()).expect("envelope");
            assert_eq!(
                envelope.raw_body,
                request_body(&raw),
                "{file}: raw body kept byte for byte"
            );
            let attrs = m.message_attributes().unwrap();
            assert_eq!(
                attrs["event_id"].string_value(),
                Some(envelope.event_id.as_str())
            );
            assert_eq!(
                attrs["provider"].string_value(),
                Some(envelope.provider.as_str())
            );
            assert_eq!(
                attrs["event_type"].string_value(),
                Some(envelope.event_type.as_str())
            );
            assert!(!envelope.verified_by.is_empty());
            envelopes.push(serde_json::from_str(m.body().unwrap()).unwrap());
        } else {
            assert!(
                messages.is_empty(),
                "{file}: nothing enqueued for a refused request"
            );
            if status != 200 {
                assert!(json.get("error").is_some(), "{file}: error named in {body}");
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // Every accepted sample's envelope matches the published schema (schemas/v1).
    assert!(envelopes.len() > 10);
    integration_tests::check_envelope_schema(&envelopes).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envelopes_carry_the_parsed_event_and_how_it_was_verified() {
    let aws = LocalAws::provision().await;
    let jwks = jwks_peer().await;
    let mut env = aws.env();
    env.set("IDNOW_JWKS_URL", jwks.url("/jwks.json"));
    let intake = intake(&env, &aws, Arc::new(SystemClock));
    let queue = aws.get("INGEST_QUEUE_URL").to_string();

    // API Gateway's trace header is continued; without one (IDnow here) the intake id starts it.
    let mut incode_request = apigw_event("receiver/incode-onboarding-status.json");
    incode_request["headers"]["x-amzn-trace-id"] =
        "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1".into();
    let r = apigw::handle(&intake, incode_request).await;
    assert_eq!(r.status_code, 200);
    let r = apigw::handle(&intake, apigw_event("receiver/idnow-jwt-body-rs256.json")).await;
    assert_eq!(r.status_code, 200);
    let msgs = aws.drain(&queue).await;
    let envs: Vec<Envelope> = msgs
        .iter()
        .map(|m| serde_json::from_str(m.body().unwrap()).unwrap())
        .collect();
    let incode = envs
        .iter()
        .find(|e| e.provider.as_str() == "incode")
        .unwrap();
    assert_eq!(incode.event_type, "onboarding_status");
    assert_eq!(
        incode.session_id.as_deref(),
        Some("6571d4f2e0a1b2c3d4e5f601")
    );
    assert_eq!(incode.status.as_deref(), Some("ONBOARDING_FINISHED"));
    assert_eq!(
        incode.verified_by,
        vec![Check::SourceIp, Check::SharedHeader, Check::BearerToken]
    );
    let idnow = envs
        .iter()
        .find(|e| e.provider.as_str() == "idnow")
        .unwrap();
    assert_eq!(idnow.event_id, "5b0f1c8e-6d2a-4f3e-9a51-0c1d2e3f4a5b");
    assert_eq!(idnow.event_type, "session.completed");
    assert_eq!(idnow.status.as_deref(), Some("COMPLETED"));
    assert_eq!(idnow.content_type, "application/jwt");
    assert_eq!(idnow.event["payload"]["sessionId"], "sess-7f3a");
    assert_eq!(idnow.verified_by, vec![Check::SourceIp, Check::JwtRs256]);
    assert_eq!(
        incode.trace_id.as_deref(),
        Some("5759e988bd862e3fe1be46a994272793")
    );
    assert_eq!(idnow.trace_id.as_deref(), Some(idnow.intake_id.as_str()));
    assert!(kyc_relay::trace::is_trace_id(idnow.trace_id()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_incode_webhook_gets_the_same_event_id() {
    let aws = LocalAws::provision().await;
    let env = aws.env();
    let mut env = env;
    env.set("IDNOW_ENABLED", "false");
    let intake = intake(&env, &aws, Arc::new(SystemClock));
    for _ in 0..2 {
        let r = apigw::handle(
            &intake,
            apigw_event("receiver/incode-onboarding-status.json"),
        )
        .await;
        assert_eq!(r.status_code, 200);
    }
    let msgs = aws.drain(aws.get("INGEST_QUEUE_URL")).await;
    assert_eq!(
        msgs.len(),
        2,
        "the receiver acknowledges and enqueues duplicates; the consumer dedups"
    );
    let ids: Vec<String> = msgs
        .iter()
        .map(|m| {
            serde_json::from_str::<Envelope>(m.body().unwrap())
                .unwrap()
                .event_id
        })
        .collect();
    assert_eq!(ids[0], ids[1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unavailable_queue_is_a_503_and_nothing_is_acknowledged() {
    let aws = LocalAws::provision().await;
    let mut env = aws.env();
    env.set("IDNOW_ENABLED", "false");
    env.set(
        "INGEST_QUEUE_URL",
        format!("{}-missing", aws.get("INGEST_QUEUE_URL")),
    );
    let intake = intake(&env, &aws, Arc::new(SystemClock));
    let r = apigw::handle(
        &intake,
        apigw_event("receiver/incode-onboarding-status.json"),
    )
    .await;
    assert_eq!(r.status_code, 503);
    assert!(body_text(&r).contains("unavailable"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_is_cached_refreshed_on_unknown_kid_at_most_once_a_minute_and_outages_are_503() {
    let aws = LocalAws::provision().await;
    let jwks = jwks_peer().await;
    let mut env = aws.env();
    env.set("IDNOW_JWKS_URL", jwks.url("/jwks.json"));
    let clock = ManualClock::at_ms(1_795_000_000_000);
    let intake = intake(&env, &aws, Arc::new(clock.clone()));
    let send = |file: &'static str| {
        let intake = &intake;
        async move { apigw::handle(intake, apigw_event(file)).await.status_code as u16 }
    };

    assert_eq!(send("receiver/idnow-jwt-body-rs256.json").await, 200);
    assert_eq!(send("receiver/idnow-jwt-body-rs256.json").await, 200);
    assert_eq!(jwks.hits(), 1, "keys are cached");

    // Fetched a moment ago: an unknown kid does not trigger another fetch yet.
    assert_eq!(send("receiver/hostile-idnow-unknown-kid.json").await, 401);
    assert_eq!(jwks.hits(), 1, "refreshes are rate-limited");
    clock.advance_ms(61_000);
    assert_eq!(send("receiver/hostile-idnow-unknown-kid.json").await, 401);
    assert_eq!(
        jwks.hits(),
        2,
        "an unknown kid triggers a refresh once the minimum interval passed"
    );
    assert_eq!(send("receiver/hostile-idnow-unknown-kid.json").await, 401);
    assert_eq!(send("receiver/hostile-idnow-unknown-kid.json").await, 401);
    assert_eq!(
        jwks.hits(),
        2,
        "a flood of unknown kids causes no flood of fetches"
    );

    // IDnow rotates its keys: the token signed with the new key is accepted after the next refresh.
    let rotated =
        std::fs::read_to_string(repo_root().join("events/keys/rotated-jwks.json")).unwrap();
    jwks.set_default(Answer::json(200, rotated));
    clock.advance_ms(61_000);
    assert_eq!(send("receiver/hostile-idnow-unknown-kid.json").await, 200);
    assert_eq!(jwks.hits(), 3);

    // The JWKS host fails: cached keys keep working; an unknown kid is a 503 (the provider retries),
    // not a 401 (IDnow drops a 4xx): it may be a rotated key we cannot fetch yet.
    jwks.set_default(Answer::status(500));
    clock.advance_ms(61_000);
    assert_eq!(send("receiver/idnow-jwt-body-rs256.json").await, 200);
    assert_eq!(send("receiver/hostile-idnow-alg-none.json").await, 401);
    let mut raw = read_json("events/receiver/hostile-idnow-unknown-kid.json");
    let token = raw["body"].as_str().unwrap().to_string();
    use base64::Engine;
    let header = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(r#"{"alg":"RS256","typ":"JWT","kid":"test-key-9"}"#);
    let rest = token.split_once('.').unwrap().1;
    raw["body"] = format!("{header}.{rest}").into();
    let r = apigw::handle(&intake, raw).await;
    assert_eq!(
        r.status_code, 503,
        "unknown kid while the JWKS host is down"
    );

    // A receiver that never fetched the keys cannot verify while the host is down: 503, retry later.
    let fresh = intake_with_clock(&env, &aws, clock.clone());
    let r = apigw::handle(&fresh, apigw_event("receiver/idnow-jwt-body-rs256.json")).await;
    assert_eq!(r.status_code, 503);
    assert_eq!(
        aws.drain(aws.get("INGEST_QUEUE_URL")).await.len(),
        4,
        "only the four accepted events"
    );
}

fn intake_with_clock(env: &Env, aws: &LocalAws, clock: ManualClock) -> Intake<SqsIngestQueue> {
    intake(env, aws, Arc::new(clock))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_from_the_token_endpoint_authenticates_a_webhook() {
    let aws = LocalAws::provision().await;
    let mut env = aws.env();
    env.set("IDNOW_ENABLED", "false");
    let intake = intake(&env, &aws, Arc::new(SystemClock));
    let r = apigw::handle(&intake, apigw_event("receiver/oauth-token-basic.json")).await;
    assert_eq!(r.status_code, 200);
    assert_eq!(r.headers["cache-control"], "no-store");
    let token: serde_json::Value = serde_json::from_str(&body_text(&r)).unwrap();
    assert_eq!(token["token_type"], "Bearer");
    assert_eq!(token["expires_in"], 3600);
    let access = token["access_token"].as_str().unwrap();

    let mut raw = read_json("events/receiver/incode-onboarding-status.json");
    raw["headers"]["authorization"] = format!("Bearer {access}").into();
    assert_eq!(apigw::handle(&intake, raw.clone()).await.status_code, 200);

    raw["headers"]["authorization"] = format!("Bearer {}x", access).into();
    assert_eq!(apigw::handle(&intake, raw).await.status_code, 401);
    assert_eq!(aws.drain(aws.get("INGEST_QUEUE_URL")).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_only_rs256_configured_an_hs256_token_is_refused_for_its_algorithm() {
    let aws = LocalAws::provision().await;
    let jwks = jwks_peer().await;
    let mut env = aws.env();
    env.set("IDNOW_JWKS_URL", jwks.url("/jwks.json"));
    env.set("IDNOW_JWT_SECRET", "");
    env.set("INCODE_ENABLED", "false");
    let intake = intake(&env, &aws, Arc::new(SystemClock));
    for file in [
        "receiver/hostile-idnow-alg-confusion.json",
        "receiver/idnow-jwt-body-hs256.json",
    ] {
        let r = apigw::handle(&intake, apigw_event(file)).await;
        assert_eq!(r.status_code, 401, "{file}");
        assert!(
            body_text(&r).contains("JWT algorithm not accepted"),
            "{file}"
        );
    }
    assert_eq!(jwks.hits(), 0, "refused before any key lookup");
    let r = apigw::handle(&intake, apigw_event("receiver/hostile-idnow-alg-none.json")).await;
    assert_eq!(r.status_code, 401);
    assert!(aws.drain(aws.get("INGEST_QUEUE_URL")).await.is_empty());
}

fn response_json(r: &ApiGatewayV2httpResponse) -> serde_json::Value {
    serde_json::from_str(&body_text(r)).expect("JSON answer")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_largest_body_in_its_worst_encoding_is_enqueued_and_parses_back() {
    let aws = LocalAws::provision().await;
    let mut env = aws.env();
    env.set("IDNOW_ENABLED", "false");
    let intake = intake(&env, &aws, Arc::new(SystemClock));
    let queue_url = aws.get("INGEST_QUEUE_URL").to_string();

    // Every queue of the template declares the 1 MiB limit, and the emulator's queue has it.
    let template = std::fs::read_to_string(repo_root().join("template.yaml")).unwrap();
    assert_eq!(
        template.matches("Type: AWS::SQS::Queue").count(),
        template.matches("MaximumMessageSize: 1048576").count(),
        "every queue sets MaximumMessageSize explicitly"
    );
    let attrs = aws
        .sqs
        .get_queue_attributes()
        .queue_url(&queue_url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::MaximumMessageSize)
        .send()
        .await
        .unwrap();
    assert_eq!(
        attrs.attributes().unwrap()[&aws_sdk_sqs::types::QueueAttributeName::MaximumMessageSize],
        "1048576"
    );

    let file = "receiver/incode-largest-body-worst-encoding.json";
    let raw = read_json(&format!("events/{file}"));
    assert_eq!(request_body(&raw).len(), 65536, "the largest accepted body");
    let r = apigw::handle(&intake, apigw_event(file)).await;
    assert_eq!(r.status_code, 200, "{}", body_text(&r));
    let messages = aws.drain(&queue_url).await;
    assert_eq!(messages.len(), 1);
    let body = messages[0].body().unwrap();
    assert!(
        body.len() > 256 * 1024,
        "the envelope ({} bytes) would not fit SQS's default 256 KiB",
        body.len()
    );
    let envelope: Envelope = serde_json::from_str(body).expect("the envelope parses back");
    assert_eq!(envelope.raw_body, request_body(&raw));
    assert_eq!(envelope.event["interviewId"], "6571d4f2e0a1b2c3d4e5f601");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nesting_and_key_lengths_are_enforced_to_the_documented_number() {
    let aws = LocalAws::provision().await;
    let mut env = aws.env();
    env.set("IDNOW_ENABLED", "false");
    let intake = intake(&env, &aws, Arc::new(SystemClock));
    let base = read_json("events/receiver/incode-face-authentication.json");
    let send = |body: String| {
        let mut e = base.clone();
        e["body"] = body.into();
        let intake = &intake;
        async move { apigw::handle(intake, e).await }
    };
    let max = kyc_relay::provider::MAX_JSON_DEPTH;
    // The outer object is level 1.
    let nested = |levels: usize| {
        format!(
            r#"{{"interviewId": "i", "a": {}{}}}"#,
            "[".repeat(levels - 1),
            "]".repeat(levels - 1)
        )
    };
    assert_eq!(send(nested(max)).await.status_code, 200);
    let r = send(nested(max + 1)).await;
    assert_eq!(r.status_code, 400);
    assert!(
        response_json(&r)["message"]
            .as_str()
            .unwrap()
            .contains("deeper than 64")
    );

    let id = |n: usize| format!(r#"{{"interviewId": "{}"}}"#, "é".repeat(n));
    // Counted in characters (é is 2 bytes): MAX_ID_CHARS pass, one more does not.
    let max_id = kyc_relay::provider::MAX_ID_CHARS;
    assert_eq!(send(id(max_id)).await.status_code, 200);
    let r = send(id(max_id + 1)).await;
    assert_eq!(r.status_code, 400);
    assert!(
        response_json(&r)["message"]
            .as_str()
            .unwrap()
            .contains("`interviewId`")
    );
    for bad in [
        "a\u{202E}b",
        "a\u{200B}b",
        "a\u{FDD0}b",
        "a\u{10FFFF}b",
        "a\u{7}b",
        "a\u{85}b",
    ] {
        let r = send(serde_json::json!({"interviewId": bad}).to_string()).await;
        assert_eq!(r.status_code, 400, "{bad:?}");
    }
    // A lone surrogate escape is not JSON text the parser accepts.
    assert_eq!(
        send(r#"{"interviewId": "\ud800"}"#.into())
            .await
            .status_code,
        400
    );
    assert_eq!(aws.drain(aws.get("INGEST_QUEUE_URL")).await.len(), 2);
}

/// A client secret with every character form-encoding changes (`+` `/` `=` `%`).
const AWKWARD_SECRET: &str = "Zk+9/aQ=%41%zz+0123456789abcdefghijklmnop=";

fn form_encode(s: &str) -> String {
    url_encode(s)
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => {
                (b as char).to_string()
            }
            b' ' => "+".into(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn basic(id: &str, secret: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_endpoint_accepts_a_secret_raw_percent_encoded_or_in_the_form() {
    let aws = LocalAws::provision().await;
    let mut env = aws.env();
    env.set("IDNOW_ENABLED", "false");
    env.set("OAUTH_CLIENT_SECRET", AWKWARD_SECRET);
    let intake = intake(&env, &aws, Arc::new(SystemClock));
    let id = env.get("OAUTH_CLIENT_ID").unwrap().to_string();
    let base = read_json("events/receiver/oauth-token-basic.json");
    let token_request = |authorization: Option<String>, body: String| {
        let mut e = base.clone();
        match authorization {
            Some(a) => e["headers"]["authorization"] = a.into(),
            None => {
                e["headers"]
                    .as_object_mut()
                    .unwrap()
                    .remove("authorization");
            }
        }
        e["body"] = body.into();
        let intake = &intake;
        async move { apigw::handle(intake, e).await }
    };
    let grant = "grant_type=client_credentials".to_string();
    let wrong = AWKWARD_SECRET.replace('Z', "Y");
    for (secret, ok) in [(AWKWARD_SECRET, true), (wrong.as_str(), false)] {
        let cases = [
            ("raw Basic", Some(basic(&id, secret)), grant.clone()),
            (
                "percent-encoded Basic",
                Some(basic(&form_encode(&id), &form_encode(secret))),
                grant.clone(),
            ),
            (
                "form body",
                None,
                format!(
                    "grant_type=client_credentials&client_id={}&client_secret={}",
                    form_encode(&id),
                    form_encode(secret)
                ),
            ),
        ];
        for (how, authorization, body) in cases {
            let r = token_request(authorization, body).await;
            let json = response_json(&r);
            if ok {
                assert_eq!(r.status_code, 200, "{how}: {json}");
                assert!(json["access_token"].is_string(), "{how}");
            } else {
                assert_eq!(r.status_code, 401, "{how}: {json}");
                assert_eq!(json["error"], "invalid_client", "{how}");
            }
        }
    }
}

/// Real OAuth clients (authlib, requests) against the receiver behind a local stand-in for API
/// Gateway: the token each fetched authenticates a webhook.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_oauth_clients_get_tokens_that_authenticate_webhooks() {
    use base64::Engine;
    let aws = LocalAws::provision().await;
    let mut env = aws.env();
    env.set("IDNOW_ENABLED", "false");
    env.set("OAUTH_CLIENT_SECRET", AWKWARD_SECRET);
    // The stand-in's source address is 127.0.0.1, in config/local.env's allowlist.
    let intake = Arc::new(intake(&env, &aws, Arc::new(SystemClock)));
    let base = integration_tests::gateway::serve(intake.clone()).await;
    let id = env.get("OAUTH_CLIENT_ID").unwrap().to_string();
    let client = |name: &str, secret: &str| {
        let out = std::process::Command::new(repo_root().join(".venv/bin/python"))
            .arg(repo_root().join("tests/reference/oauth_client.py"))
            .args([&format!("{base}/oauth/token"), &id, secret, name])
            .output()
            .expect("run tests/reference/oauth_client.py");
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let wrong = AWKWARD_SECRET.replace('Z', "Y");
    for name in ["authlib-basic", "authlib-post", "requests-basic"] {
        let got = client(name, AWKWARD_SECRET);
        assert_eq!(got["status"], 200, "{name}: {got}");
        if let Some(auth) = got["authorization"].as_str() {
            // Record how the client encodes: these send the secret raw (no percent-encoding).
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(auth.trim_start_matches("Basic "))
                .unwrap();
            assert_eq!(
                String::from_utf8(decoded).unwrap(),
                format!("{id}:{AWKWARD_SECRET}"),
                "{name} sends the credentials unencoded"
            );
        }
        let token = got["access_token"].as_str().unwrap();
        let mut webhook = read_json("events/receiver/incode-onboarding-status.json");
        webhook["headers"]["authorization"] = format!("Bearer {token}").into();
        assert_eq!(
            apigw::handle(&intake, webhook).await.status_code,
            200,
            "{name}"
        );
        let refused = client(name, &wrong);
        assert_eq!(refused["status"], 401, "{name}: {refused}");
        assert!(refused["access_token"].is_null());
    }
    assert_eq!(aws.drain(aws.get("INGEST_QUEUE_URL")).await.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_secrets_rotate_without_downtime() {
    let aws = LocalAws::provision().await;
    let local = aws.env();
    let old = |k: &str| local.get(k).unwrap().to_string();
    async fn status(intake: &Intake<SqsIngestQueue>, file: &str) -> i64 {
        apigw::handle(intake, apigw_event(file)).await.status_code
    }
    let jwks = jwks_peer().await;
    let rotated = |previous: bool| {
        let mut env = local.clone();
        env.set("IDNOW_JWKS_URL", jwks.url("/jwks.json"));
        for var in [
            "INCODE_SHARED_HEADER_VALUE",
            "OAUTH_CLIENT_SECRET",
            "IDNOW_JWT_SECRET",
        ] {
            env.set(
                var,
                format!("new-{}-0123456789abcdefghijklmnopqrstuvwxyz", var.len()),
            );
            if previous {
                env.set(format!("{var}_PREVIOUS"), old(var));
            }
        }
        intake(&env, &aws, Arc::new(SystemClock))
    };
    // The samples carry the old values (config/local.env).
    let during = rotated(true);
    let after = rotated(false);
    for (file, refused) in [
        ("receiver/incode-onboarding-status.json", 401), // shared header
        ("receiver/oauth-token-basic.json", 401),        // client secret
        ("receiver/idnow-jwt-body-hs256.json", 401),     // IDnow HS256 secret
    ] {
        assert_eq!(
            status(&during, file).await,
            200,
            "{file} during the rotation"
        );
        assert_eq!(status(&after, file).await, refused, "{file} after it");
    }

    // Token signing keys: a token issued under the old key stays valid while it is the previous key.
    let mut env = local.clone();
    env.set("IDNOW_ENABLED", "false");
    let before = intake(&env, &aws, Arc::new(SystemClock));
    let r = apigw::handle(&before, apigw_event("receiver/oauth-token-basic.json")).await;
    let token = response_json(&r)["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let new_key = "new-token-signing-key-0123456789abcdefghij";
    env.set("OAUTH_TOKEN_SIGNING_KEY", new_key);
    env.set(
        "OAUTH_TOKEN_SIGNING_KEY_PREVIOUS",
        old("OAUTH_TOKEN_SIGNING_KEY"),
    );
    let during = intake(&env, &aws, Arc::new(SystemClock));
    env.set("OAUTH_TOKEN_SIGNING_KEY_PREVIOUS", "");
    let after = intake(&env, &aws, Arc::new(SystemClock));
    let mut webhook = read_json("events/receiver/incode-onboarding-status.json");
    webhook["headers"]["authorization"] = format!("Bearer {token}").into();
    assert_eq!(
        apigw::handle(&during, webhook.clone()).await.status_code,
        200
    );
    assert_eq!(apigw::handle(&after, webhook).await.status_code, 401);
    aws.drain(aws.get("INGEST_QUEUE_URL")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jwks_without_a_usable_key_or_too_large_means_keys_unavailable() {
    let aws = LocalAws::provision().await;
    let mut env = aws.env();
    env.set("INCODE_ENABLED", "false");
    let cases = [
        // No key at all, only keys of other types, and a document over the 64 KiB cap.
        Answer::json(200, r#"{"keys": []}"#),
        Answer::json(
            200,
            r#"{"keys": [{"kty": "EC", "kid": "test-key-1", "crv": "P-256", "x": "AA", "y": "AA"}]}"#,
        ),
        Answer::json(
            200,
            std::fs::read_to_string(repo_root().join("events/keys/jwks.json"))
                .unwrap()
                .replacen(
                    '{',
                    &format!("{{\"padding\": \"{}\", ", "x".repeat(70_000)),
                    1,
                ),
        ),
    ];
    for answer in cases {
        let jwks = Peer::start(answer).await;
        env.set("IDNOW_JWKS_URL", jwks.url("/jwks.json"));
        let intake = intake(&env, &aws, Arc::new(SystemClock));
        let r = apigw::handle(&intake, apigw_event("receiver/idnow-jwt-body-rs256.json")).await;
        assert_eq!(r.status_code, 503, "IDnow retries a 503, drops a 401");
        assert_eq!(response_json(&r)["message"], "signing keys unavailable");
        assert_eq!(jwks.hits(), 1);
    }
    // The same document within the cap works (the check can fail).
    let jwks = jwks_peer().await;
    env.set("IDNOW_JWKS_URL", jwks.url("/jwks.json"));
    let intake = intake(&env, &aws, Arc::new(SystemClock));
    let r = apigw::handle(&intake, apigw_event("receiver/idnow-jwt-body-rs256.json")).await;
    assert_eq!(r.status_code, 200);
}
