//! API Gateway HTTP API (payload 2.0) adapter for the receiver, on `lambda_runtime` alone.
//!
//! Why not `lambda_http`: it rebuilds a URI from `X-Forwarded-Proto`, `Host` and the path and
//! `unwrap()`s the parse (a header value with a space panics the function), and it normalises the
//! path (`/webhooks/incode/%2e%2e/idnow` would reach the IDnow handler). aws_lambda_events'
//! request type is not used either: its header deserialiser fails the whole event on one invalid
//! header value, and its error quotes the value. Here the event is taken as JSON, the few fields
//! the receiver needs are read leniently, and everything the client controls (path, headers,
//! body) goes to [`Intake::handle`] unchecked, where it is routed on `rawPath` byte for byte and
//! validated with a precise 4xx. The response is built here (`ApiGatewayV2httpResponse`).

use crate::intake::{InboundRequest, Intake, IntakeError, Reply};
use crate::queue::IngestQueue;
use aws_lambda_events::apigw::ApiGatewayV2httpResponse;
use aws_lambda_events::encodings::Body;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::IpAddr;

/// The fields of an HTTP API payload 2.0 event that the receiver reads.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct HttpApiEvent {
    #[serde(default)]
    raw_path: Option<String>,
    #[serde(default)]
    headers: Option<BTreeMap<String, String>>,
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    is_base64_encoded: Option<bool>,
    #[serde(default)]
    request_context: Option<RequestContext>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RequestContext {
    #[serde(default)]
    request_id: Option<String>,
    #[serde(default)]
    http: Option<HttpContext>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct HttpContext {
    #[serde(default)]
    method: Option<String>,
    /// The TCP peer as API Gateway saw it. Request headers such as `X-Forwarded-For` are
    /// client-controlled and deliberately not consulted.
    #[serde(default)]
    source_ip: Option<String>,
}

/// The handler `functions/receiver` runs for every invocation: event in, response out, never an
/// error (an invocation error would be API Gateway's 500, and the provider would learn nothing).
pub async fn handle<Q: IngestQueue>(
    intake: &Intake<Q>,
    event: serde_json::Value,
) -> ApiGatewayV2httpResponse {
    let Ok(event) = serde_json::from_value::<HttpApiEvent>(event) else {
        // Not an HTTP API event at all (a test invoke, a misconfigured integration). serde's message
        // may quote the event: not logged.
        tracing::warn!(
            status = 400,
            "invocation is not an API Gateway HTTP API event"
        );
        return into_response(
            IntakeError::MalformedRequest("not an API Gateway HTTP API (2.0) event").into_reply(),
        );
    };
    let context = event.request_context.as_ref();
    let http = context.and_then(|c| c.http.as_ref());
    let headers: Vec<(String, String)> = event.headers.unwrap_or_default().into_iter().collect();
    let reply = intake
        .handle(InboundRequest {
            method: http.and_then(|h| h.method.as_deref()).unwrap_or(""),
            path: event.raw_path.as_deref().unwrap_or(""),
            headers: &headers,
            body: event.body.as_deref().unwrap_or("").as_bytes(),
            body_base64: event.is_base64_encoded.unwrap_or(false),
            source_ip: http
                .and_then(|h| h.source_ip.as_deref())
                .and_then(|ip| ip.parse::<IpAddr>().ok()),
            request_id: context.and_then(|c| c.request_id.as_deref()),
        })
        .await;
    into_response(reply)
}

fn into_response(reply: Reply) -> ApiGatewayV2httpResponse {
    let mut response = ApiGatewayV2httpResponse::default();
    response.status_code = i64::from(reply.status);
    for (name, value) in reply.headers {
        // Our own names and values: always valid; one that were not would be left out, not panic.
        if let Ok(value) = http::HeaderValue::from_str(&value) {
            response.headers.append(name, value);
        }
    }
    response.body = Some(Body::Text(reply.body));
    response.is_base64_encoded = false;
    response
}
