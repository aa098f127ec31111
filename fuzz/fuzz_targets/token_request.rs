//! `/oauth/token`: the Basic header (both readings: raw and form-decoded) and the form body of a
//! token request, and the bearer tokens checked on every Incode webhook.
#![no_main]

#[path = "common.rs"]
mod common;

use kyc_relay::verification::oauth::{OAuthSettings, TokenIssuer, parse_basic};
use libfuzzer_sys::fuzz_target;
use std::sync::LazyLock;

static ISSUER: LazyLock<TokenIssuer> = LazyLock::new(|| {
    let env = common::env();
    let get = |k: &str| env.get(k).unwrap().to_string();
    TokenIssuer::new(
        OAuthSettings {
            client_id: get("OAUTH_CLIENT_ID"),
            client_secrets: vec![("OAUTH_CLIENT_SECRET".into(), get("OAUTH_CLIENT_SECRET"))],
            signing_keys: vec![(
                "OAUTH_TOKEN_SIGNING_KEY".into(),
                get("OAUTH_TOKEN_SIGNING_KEY"),
            )],
            issuer: get("OAUTH_ISSUER"),
            audience: get("OAUTH_AUDIENCE"),
            ttl_secs: 3600,
        },
        common::clock(),
    )
    .unwrap()
});

fuzz_target!(|data: &[u8]| {
    let f = common::fields(data, 2);
    let authorization = std::str::from_utf8(f[0]).ok();
    if let Some(header) = authorization {
        let _ = parse_basic(header);
        let _ = ISSUER.verify_bearer(Some(header));
    }
    if let Ok(token) = ISSUER.issue(authorization, f[1]) {
        // A token we issue verifies.
        let bearer = format!("Bearer {}", token.access_token);
        assert!(ISSUER.verify_bearer(Some(&bearer)).is_ok());
    }
});
