//! IDnow bodies, both kinds: a JSON event (strict parser, then `idnow::parse`) and a JWT body
//! (`JwtVerifier::verify` with the HS256 secret of config/local.env: header, `crit`, claims,
//! issuer and time checks, then the `data` event). The first byte picks the kind.
#![no_main]

#[path = "common.rs"]
mod common;

use futures_util::FutureExt;
use kyc_relay::provider::{idnow, parse_json};
use kyc_relay::verification::jwt::JwtVerifier;
use libfuzzer_sys::fuzz_target;
use std::sync::LazyLock;

static VERIFIER: LazyLock<JwtVerifier> = LazyLock::new(|| {
    let env = common::env();
    JwtVerifier::new(
        None,
        &[env.get("IDNOW_JWT_SECRET").unwrap().as_bytes()],
        env.get("IDNOW_JWT_ISSUER").unwrap().to_string(),
        env.get("IDNOW_JWT_AUDIENCE").unwrap().to_string(),
        60,
        common::clock(),
    )
});

fuzz_target!(|data: &[u8]| {
    let Some((&kind, rest)) = data.split_first() else {
        return;
    };
    if kind & 1 == 0 {
        if let Ok(value) = parse_json(rest) {
            let _ = idnow::parse(&value);
        }
    } else if let Ok(token) = std::str::from_utf8(rest) {
        let verified = VERIFIER.verify(token).now_or_never().expect("HS256 needs no I/O");
        if let Ok(jwt) = verified
            && let Some(data) = jwt.claims.get("data")
        {
            let _ = idnow::parse(data);
        }
    }
});
