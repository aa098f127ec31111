//! The functions' AWS call budgets (`CallBudget`, docs/configuration.md "AWS calls") as the SDK
//! applies them, against a peer on 127.0.0.1 that accepts connections and never answers (a hung
//! endpoint): a call ends with a timeout after exactly `max_attempts` attempts instead of holding the
//! invocation, and the operation timeout cuts the retries short. (`CallBudget::with_overrides`, the
//! local env overrides, is unit-tested in `shared/src/aws/mod.rs`.)

use aws_sdk_sqs::error::SdkError;
use kyc_relay::aws::{CallBudget, sdk_config};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// Accepts connections, keeps them open and never answers. Returns its URL and a connection count.
async fn silent_peer() -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let connections = Arc::new(AtomicUsize::new(0));
    let count = connections.clone();
    tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            open.push(socket);
        }
    });
    (url, connections)
}

/// One SendMessage with the functions' SDK configuration and `budget` to a peer that never answers:
/// checks that it ends in a timeout, and returns how many connections (attempts) it made.
async fn timed_out_call(budget: CallBudget) -> usize {
    let (url, connections) = silent_peer().await;
    let sdk = sdk_config(budget).await;
    let sqs = aws_sdk_sqs::Client::from_conf(
        aws_sdk_sqs::config::Builder::from(&sdk)
            .endpoint_url(&url)
            .region(aws_sdk_sqs::config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_sqs::config::Credentials::new(
                "test", "test", None, None, "test",
            ))
            .build(),
    );
    // A guard against a hang (the failure this test is about), not a speed assertion.
    let err = tokio::time::timeout(
        Duration::from_secs(60),
        sqs.send_message()
            .queue_url(format!("{url}/123456789012/ingest"))
            .message_body("{}")
            .send(),
    )
    .await
    .expect("the call ended within its budget instead of hanging")
    .unwrap_err();
    assert!(matches!(err, SdkError::TimeoutError(_)), "{err:?}");
    connections.load(Ordering::SeqCst)
}

#[tokio::test]
async fn a_hung_endpoint_costs_max_attempts_attempts_then_a_timeout() {
    // Not the SDK's default of 3 attempts: the count shows the budget's setting is the one applied.
    let budget = CallBudget {
        connect: Duration::from_secs(1),
        attempt: Duration::from_millis(200),
        operation: Duration::from_secs(30),
        max_attempts: 2,
    };
    assert_eq!(
        timed_out_call(budget).await,
        2,
        "one connection per attempt"
    );
}

#[tokio::test]
async fn the_operation_timeout_cuts_the_retries_short() {
    let budget = CallBudget {
        connect: Duration::from_secs(1),
        attempt: Duration::from_secs(20),
        operation: Duration::from_millis(300),
        max_attempts: 3,
    };
    assert_eq!(
        timed_out_call(budget).await,
        1,
        "no retry after the operation timeout"
    );
}

#[test]
fn each_function_budget_fits_its_deadline() {
    // The worst case of one call: every attempt runs to its timeout, bounded by the operation's.
    let call = |b: CallBudget| b.operation.min(b.attempt * b.max_attempts);
    for b in [
        CallBudget::RECEIVER,
        CallBudget::CONSUMER,
        CallBudget::DISPATCHER,
    ] {
        assert!(
            b.connect <= b.attempt,
            "{b:?}: the connection within the attempt"
        );
        assert!(b.max_attempts >= 2, "{b:?}: transient errors are retried");
    }
    // IDnow waits 10 s for the receiver's answer, which follows one SendMessage.
    assert!(call(CallBudget::RECEIVER) < Duration::from_secs(10));
    // The consumer's 30 s timeout: a claim, an archive write and a send, one after the other.
    assert!(call(CallBudget::CONSUMER) * 3 < Duration::from_secs(30));
    // The dispatcher plans its deadline with DEADLINE_MARGIN after an attempt: room for one
    // attempt of the record or enqueue call that follows it.
    assert!(CallBudget::DISPATCHER.attempt <= kyc_relay::dispatch::plan::DEADLINE_MARGIN);
}
