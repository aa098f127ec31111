//! A stand-in for API Gateway's HTTP API on 127.0.0.1, for tests that drive the receiver with real
//! HTTP clients (an OAuth library, curl): each request becomes a payload 2.0 event as API Gateway
//! builds it (`rawPath` as sent, lowercased header names, repeated headers joined with `,`, a body
//! that is not UTF-8 base64-encoded, `sourceIp` = the TCP peer) and goes to the receiver's real
//! handler, `kyc_relay::aws::apigw::handle`; its response becomes the HTTP answer.

use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use kyc_relay::intake::Intake;
use kyc_relay::queue::IngestQueue;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

/// Serves `intake` on a free port; returns its base URL (`http://127.0.0.1:PORT`).
pub async fn serve<Q: IngestQueue + 'static>(intake: Arc<Intake<Q>>) -> String {
    let app = axum::Router::new().fallback(handle::<Q>).with_state(intake);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await;
    });
    format!("http://{addr}")
}

/// The payload 2.0 event API Gateway would send for this request.
pub fn event(
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
    peer: SocketAddr,
) -> serde_json::Value {
    let mut joined: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        joined
            .entry(name.as_str().to_string())
            .and_modify(|v| {
                v.push(',');
                v.push_str(&value);
            })
            .or_insert(value);
    }
    let (body, base64) = match std::str::from_utf8(body) {
        Ok(text) => (text.to_string(), false),
        Err(_) => (base64::engine::general_purpose::STANDARD.encode(body), true),
    };
    serde_json::json!({
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": uri.path(),
        "rawQueryString": uri.query().unwrap_or(""),
        "headers": joined,
        "requestContext": {
            "http": {"method": method.as_str(), "path": uri.path(), "protocol": "HTTP/1.1",
                     "sourceIp": peer.ip().to_string()},
            "requestId": format!("gw-{:016x}", fastrand::u64(..)),
            "stage": "$default",
        },
        "body": body,
        "isBase64Encoded": base64,
    })
}

async fn handle<Q: IngestQueue + 'static>(
    State(intake): State<Arc<Intake<Q>>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let response =
        kyc_relay::aws::apigw::handle(&intake, event(&method, &uri, &headers, &body, peer)).await;
    let status = StatusCode::from_u16(response.status_code as u16).unwrap();
    let body = match response.body {
        Some(aws_lambda_events::encodings::Body::Text(t)) => t.into_bytes(),
        Some(aws_lambda_events::encodings::Body::Binary(b)) => b,
        _ => Vec::new(),
    };
    let mut answer = (status, body).into_response();
    answer.headers_mut().extend(response.headers);
    answer
}
