//! Real HTTP servers on 127.0.0.1 for the tests: a JWKS host and scriptable webhook destinations.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A request a peer received.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: Method,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// When it arrived (the rate-limit measurement counts arrivals per second).
    pub at: std::time::Instant,
}

/// What the peer answers to the next request.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub delay: Duration,
}

impl Answer {
    pub fn status(status: u16) -> Self {
        Self {
            status,
            headers: vec![],
            body: String::new(),
            delay: Duration::ZERO,
        }
    }

    pub fn json(status: u16, body: impl Into<String>) -> Self {
        Self::status(status)
            .header("content-type", "application/json")
            .body(body)
    }

    pub fn header(mut self, k: &str, v: &str) -> Self {
        self.headers.push((k.into(), v.into()));
        self
    }

    pub fn body(mut self, b: impl Into<String>) -> Self {
        self.body = b.into();
        self
    }

    pub fn delay(mut self, d: Duration) -> Self {
        self.delay = d;
        self
    }
}

#[derive(Default)]
struct Script {
    queue: VecDeque<Answer>,
    default: Option<Answer>,
    received: Vec<Received>,
}

/// An HTTP server that records every request and answers from a script (then a default answer).
#[derive(Clone)]
pub struct Peer {
    pub addr: SocketAddr,
    script: Arc<Mutex<Script>>,
}

impl Peer {
    pub async fn start(default: Answer) -> Self {
        let script = Arc::new(Mutex::new(Script {
            default: Some(default),
            ..Default::default()
        }));
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(script.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, script }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Answers for the next requests, in order, before the default applies again.
    pub fn then(&self, answer: Answer) -> &Self {
        self.script.lock().unwrap().queue.push_back(answer);
        self
    }

    pub fn set_default(&self, answer: Answer) {
        self.script.lock().unwrap().default = Some(answer);
    }

    pub fn received(&self) -> Vec<Received> {
        self.script.lock().unwrap().received.clone()
    }

    pub fn hits(&self) -> usize {
        self.script.lock().unwrap().received.len()
    }
}

async fn handle(
    State(script): State<Arc<Mutex<Script>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let answer = {
        let mut s = script.lock().unwrap();
        s.received.push(Received {
            method,
            path: uri.path().to_string(),
            headers,
            body,
            at: std::time::Instant::now(),
        });
        s.queue
            .pop_front()
            .or_else(|| s.default.clone())
            .unwrap_or(Answer::status(500))
    };
    if !answer.delay.is_zero() {
        tokio::time::sleep(answer.delay).await;
    }
    let mut response = (
        StatusCode::from_u16(answer.status).unwrap(),
        answer.body.clone(),
    )
        .into_response();
    for (k, v) in &answer.headers {
        response.headers_mut().insert(
            axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    response
}
