//! The source IP policy parser (`*_ALLOWED_IPS`: CIDRs, addresses, named sets, `any`) and the
//! outbound address guard (`is_forbidden`), with addresses taken from the input.
#![no_main]

use kyc_relay::http_client::is_forbidden;
use kyc_relay::verification::ip::SourcePolicy;
use libfuzzer_sys::fuzz_target;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

fuzz_target!(|data: &[u8]| {
    let mut v6 = [0u8; 16];
    let n = data.len().min(16);
    v6[..n].copy_from_slice(&data[..n]);
    let addresses = [
        IpAddr::V6(Ipv6Addr::from(v6)),
        IpAddr::V4(Ipv4Addr::new(v6[0], v6[1], v6[2], v6[3])),
    ];
    for ip in addresses {
        let _ = is_forbidden(ip);
    }
    if let Ok(spec) = std::str::from_utf8(data)
        && let Ok(policy) = SourcePolicy::parse("FUZZ_ALLOWED_IPS", spec)
    {
        for ip in addresses {
            let _ = policy.allows(Some(ip));
        }
        assert!(!policy.allows(None) || !policy.is_restricted());
    }
});
