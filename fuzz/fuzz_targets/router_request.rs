//! The receiver's whole request handling (`Intake::handle`, what the API Gateway adapter calls)
//! with arbitrary method, path, header and body bytes: routing on the raw path, header validation,
//! base64 bodies, every check and parser behind each route. It must answer, never panic.
#![no_main]

#[path = "common.rs"]
mod common;

use futures_util::FutureExt;
use kyc_relay::intake::{InboundRequest, Intake};
use libfuzzer_sys::fuzz_target;
use std::sync::LazyLock;

static INTAKE: LazyLock<Intake<common::NoopQueue>> = LazyLock::new(|| {
    let http = reqwest::Client::new();
    Intake::from_env(&common::env(), common::NoopQueue, http, common::clock()).unwrap()
});

fuzz_target!(|data: &[u8]| {
    // method 0xFF path 0xFF flags 0xFF three (name 0xFF value) pairs 0xFF body (the last field).
    let f = common::fields(data, 10);
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let method = text(f[0]);
    let path = text(f[1]);
    let flags = f[2].first().copied().unwrap_or(0);
    let headers: Vec<(String, String)> = f[3..9]
        .chunks(2)
        .filter(|p| p.len() == 2)
        .map(|p| (text(p[0]), text(p[1])))
        .collect();
    let body = f[9];
    let reply = INTAKE
        .handle(InboundRequest {
            method: &method,
            path: &path,
            headers: &headers,
            body,
            body_base64: flags & 1 == 1,
            source_ip: Some(if flags & 2 == 2 {
                "54.86.34.156".parse().unwrap()
            } else {
                "198.51.100.10".parse().unwrap()
            }),
            request_id: Some("fuzz"),
        })
        .now_or_never()
        .expect("no I/O without a JWKS");
    assert!((200..600).contains(&reply.status));
    serde_json::from_str::<serde_json::Value>(&reply.body).expect("a JSON answer");
});
