//! Incode webhook bodies: the strict JSON parser (duplicate keys, nesting), then the parser for
//! every webhook type and the generic URL. Whatever parses must serialise into an envelope.
#![no_main]

use kyc_relay::provider::incode::{self, TypeHint, WebhookType};
use kyc_relay::provider::parse_json;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let Ok(value) = parse_json(body) else {
        return;
    };
    let hint = match selector as usize % (WebhookType::ALL.len() + 2) {
        0 => TypeHint::None,
        1 => TypeHint::Path("brand-new-type"),
        n => TypeHint::Path(WebhookType::ALL[n - 2].slug()),
    };
    if let Ok(event) = incode::parse(&value, hint) {
        assert!(event.event_id.starts_with("inc_"));
        serde_json::to_string(&event.event).unwrap();
    }
});
