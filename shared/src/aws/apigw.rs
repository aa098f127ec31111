//! API Gateway HTTP API (payload v2) adapter for the receiver, via lambda_http.

use crate::intake::{InboundRequest, Intake, Reply};
use crate::queue::IngestQueue;
use lambda_http::request::RequestContext;
use lambda_http::{Body, Request, RequestExt, Response};
use std::net::IpAddr;

/// The client address as API Gateway saw the TCP connection. Request headers such as
/// `X-Forwarded-For` are client-controlled and deliberately not consulted.
pub fn source_ip(req: &Request) -> Option<IpAddr> {
    match req.request_context_ref()? {
        RequestContext::ApiGatewayV2(ctx) => ctx.http.source_ip.as_deref()?.parse().ok(),
        _ => None,
    }
}

fn request_id(req: &Request) -> Option<&str> {
    match req.request_context_ref()? {
        RequestContext::ApiGatewayV2(ctx) => ctx.request_id.as_deref(),
        _ => None,
    }
}

pub async fn handle<Q: IngestQueue>(intake: &Intake<Q>, req: Request) -> Response<Body> {
    let body: &[u8] = match req.body() {
        Body::Empty => &[],
        Body::Text(t) => t.as_bytes(),
        Body::Binary(b) => b,
        _ => &[],
    };
    let reply = intake
        .handle(InboundRequest {
            method: req.method(),
            path: req.uri().path(),
            headers: req.headers(),
            body,
            source_ip: source_ip(&req),
            request_id: request_id(&req),
        })
        .await;
    into_response(reply)
}

fn into_response(reply: Reply) -> Response<Body> {
    let mut builder = Response::builder().status(reply.status);
    for (name, value) in reply.headers {
        builder = builder.header(name, value);
    }
    builder
        .body(Body::Text(reply.body))
        .unwrap_or_else(|_| Response::new(Body::Empty))
}
