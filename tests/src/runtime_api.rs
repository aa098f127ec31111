//! A mock of the Lambda Runtime API on 127.0.0.1, to run a function's real binary: it hands out the
//! given events one by one (`GET /2018-06-01/runtime/invocation/next`) and records what the
//! function posts back (`.../response`, `.../error`, `init/error`). After the last event `next`
//! never answers, so the process waits like an idle sandbox until the test stops it.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

/// What the function posted for one invocation: `"response"` or `"error"`, and the JSON it sent.
#[derive(Debug, Clone)]
pub struct Posted {
    pub request_id: String,
    pub kind: &'static str,
    pub body: serde_json::Value,
}

#[derive(Default)]
struct Shared {
    pending: VecDeque<(String, serde_json::Value)>,
    posted: Vec<Posted>,
}

#[derive(Clone)]
pub struct MockRuntime {
    /// `host:port`, for `AWS_LAMBDA_RUNTIME_API`.
    pub address: String,
    shared: Arc<Mutex<Shared>>,
}

impl MockRuntime {
    pub async fn start(events: Vec<serde_json::Value>) -> Self {
        let shared = Arc::new(Mutex::new(Shared {
            pending: events
                .into_iter()
                .enumerate()
                .map(|(i, e)| (format!("req-{i:04}"), e))
                .collect(),
            posted: Vec::new(),
        }));
        let app = axum::Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route(
                "/2018-06-01/runtime/invocation/{id}/response",
                post(|s, p, b| posted(s, p, b, "response")),
            )
            .route(
                "/2018-06-01/runtime/invocation/{id}/error",
                post(|s, p, b| posted(s, p, b, "error")),
            )
            .route(
                "/2018-06-01/runtime/init/error",
                post(|State(s): State<Arc<Mutex<Shared>>>, b: Bytes| async move {
                    s.lock().unwrap().posted.push(Posted {
                        request_id: String::new(),
                        kind: "init_error",
                        body: serde_json::from_slice(&b).unwrap_or_default(),
                    });
                    axum::http::StatusCode::ACCEPTED
                }),
            )
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { address, shared }
    }

    pub fn posted(&self) -> Vec<Posted> {
        self.shared.lock().unwrap().posted.clone()
    }

    /// The variables the Lambda runtime client needs besides the function's own.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_LAMBDA_RUNTIME_API", self.address.clone()),
            ("AWS_LAMBDA_FUNCTION_NAME", "test-function".into()),
            ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256".into()),
            ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".into()),
        ]
    }
}

async fn next(State(shared): State<Arc<Mutex<Shared>>>) -> Response {
    let item = shared.lock().unwrap().pending.pop_front();
    let Some((id, event)) = item else {
        // No more work: hold the request open, as an idle sandbox's `next` would.
        std::future::pending::<()>().await;
        unreachable!()
    };
    let deadline = kyc_relay::clock::Clock::now_ms(&kyc_relay::clock::SystemClock) + 60_000;
    (
        [
            ("lambda-runtime-aws-request-id", id),
            ("lambda-runtime-deadline-ms", deadline.to_string()),
            (
                "lambda-runtime-invoked-function-arn",
                "arn:aws:lambda:eu-central-1:123456789012:function:test-function".into(),
            ),
            (
                "lambda-runtime-trace-id",
                "Root=1-00000000-000000000000000000000000".into(),
            ),
            ("content-type", "application/json".into()),
        ],
        event.to_string(),
    )
        .into_response()
}

async fn posted(
    State(shared): State<Arc<Mutex<Shared>>>,
    Path(id): Path<String>,
    body: Bytes,
    kind: &'static str,
) -> axum::http::StatusCode {
    shared.lock().unwrap().posted.push(Posted {
        request_id: id,
        kind,
        body: serde_json::from_slice(&body).unwrap_or_default(),
    });
    axum::http::StatusCode::ACCEPTED
}
