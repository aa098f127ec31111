//! Outbound rules: a destination signed with two secrets during a rotation verifies with either
//! (checked by the reference `standardwebhooks` library), and proxy variables in the environment do
//! not route requests around the address guard.

use integration_tests::peer::{Answer, Peer};
use integration_tests::{
    LocalAws, consumer_for, delivery_queue, dispatcher_for, incode_envelope, record, repo_root,
};
use kyc_relay::clock::{Clock, SystemClock};
use kyc_relay::delivery::DeliveryJob;
use kyc_relay::delivery::Lane;
use kyc_relay::dispatch::JobRecord;
use std::sync::Arc;
use std::time::Duration;

const OLD: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const NEW: &str = "whsec_c2VjcmV0LWtleS0wMTIzNDU2Nzg5YWJjZGVm";
const OTHER: &str = "whsec_b3RoZXItc2VjcmV0LTAxMjM0NTY3ODlhYmNk";

fn verify(secret: &str, headers: &http::HeaderMap, body: &str) -> bool {
    let input = serde_json::json!({
        "secret": secret,
        "headers": {
            "webhook-id": headers["webhook-id"].to_str().unwrap(),
            "webhook-timestamp": headers["webhook-timestamp"].to_str().unwrap(),
            "webhook-signature": headers["webhook-signature"].to_str().unwrap(),
        },
        "body": body,
    });
    let mut child = std::process::Command::new(repo_root().join(".venv/bin/python"))
        .arg(repo_root().join("tests/reference/verify_standard_webhooks.py"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.to_string().as_bytes())
        .unwrap();
    child.wait_with_output().unwrap().status.success()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn during_a_rotation_every_request_verifies_with_either_secret() {
    let aws = LocalAws::provision().await;
    let peer = Peer::start(Answer::status(200)).await;
    let destinations = serde_json::json!({"destinations": [{
        "id": "crm", "url": peer.url("/hook"), "retry_policy": "idnow",
        "auth": {"type": "standard_webhooks", "secret": [NEW, OLD]}
    }]})
    .to_string();
    let dispatcher = dispatcher_for(
        &aws,
        delivery_queue(&aws),
        &destinations,
        Arc::new(SystemClock),
    )
    .await;
    let mut envelope = incode_envelope("rotation-1", "ONBOARDING_FINISHED");
    envelope.received_at_ms = SystemClock.now_ms();
    // The consumer claims the event first (a job needs its record).
    consumer_for(&aws, &destinations, Arc::new(SystemClock))
        .process_batch(
            &[record("m0", &envelope)],
            SystemClock.now_ms() + 30_000,
            "rotation",
        )
        .await;
    let job = DeliveryJob::first(
        &envelope,
        "crm",
        SystemClock.now_ms(),
        0,
        SystemClock.now_secs() + 86_400,
    );
    let failures = dispatcher
        .dispatch_batch(
            &[JobRecord {
                message_id: "m1".into(),
                body: serde_json::to_string(&job).unwrap(),
                lane: Lane::Fast,
            }],
            SystemClock.now_ms() + 120_000,
        )
        .await;
    assert!(failures.is_empty());
    let received = peer.received();
    assert_eq!(received.len(), 1);
    let r = &received[0];
    let signature = r.headers["webhook-signature"].to_str().unwrap();
    assert_eq!(
        signature.split(' ').count(),
        2,
        "one signature per secret: {signature}"
    );
    assert!(signature.split(' ').all(|s| s.starts_with("v1,")));
    let body = std::str::from_utf8(&r.body).unwrap();
    assert!(verify(NEW, &r.headers, body), "the new secret verifies");
    assert!(verify(OLD, &r.headers, body), "the old secret verifies");
    assert!(!verify(OTHER, &r.headers, body), "another secret does not");
}

/// Runs in a child process of this test binary with proxy variables pointing at a recording peer
/// (`proxy_variables_do_not_route_around_the_guard` starts it): setting variables in this process
/// would race the other tests.
#[tokio::test]
#[ignore = "run by proxy_variables_do_not_route_around_the_guard in a child process"]
async fn child_with_proxy_variables() {
    let destination = std::env::var("TEST_DESTINATION").unwrap();
    let client =
        kyc_relay::http_client::build(Duration::from_secs(2), Duration::from_secs(4)).unwrap();
    let response = client.get(&destination).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let body = kyc_relay::http_client::read_capped(response, 1024)
        .await
        .unwrap();
    assert_eq!(body, b"destination");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_variables_do_not_route_around_the_guard() {
    let proxy = Peer::start(Answer::status(200).body("proxy")).await;
    let destination = Peer::start(Answer::status(200).body("destination")).await;
    let mut cmd = tokio::process::Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", "child_with_proxy_variables", "--ignored"])
        .env("TEST_DESTINATION", destination.url("/hook"))
        .env_remove("NO_PROXY")
        .env_remove("no_proxy");
    for var in [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ] {
        cmd.env(var, proxy.url(""));
    }
    let out = cmd.output().await.unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("1 passed"),
        "the child ran the request"
    );
    assert_eq!(proxy.hits(), 0, "nothing went through the proxy");
    assert_eq!(destination.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_are_read_with_a_cap() {
    let big = Peer::start(Answer::status(200).body("x".repeat(10_000))).await;
    let client =
        kyc_relay::http_client::build(Duration::from_secs(2), Duration::from_secs(4)).unwrap();
    let response = client.get(big.url("/")).send().await.unwrap();
    let e = kyc_relay::http_client::read_capped(response, 9_999)
        .await
        .unwrap_err();
    assert!(
        matches!(e, kyc_relay::http_client::ReadError::TooLarge(9_999)),
        "{e}"
    );
    let response = client.get(big.url("/")).send().await.unwrap();
    let body = kyc_relay::http_client::read_capped(response, 10_000)
        .await
        .unwrap();
    assert_eq!(body.len(), 10_000);
}
