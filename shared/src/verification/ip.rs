//! Source IP allowlists. The address is API Gateway's `requestContext.http.sourceIp`, which API
//! Gateway takes from the TCP connection; a client's `X-Forwarded-For` is never consulted.

use crate::config::ConfigError;
use ipnet::IpNet;
use std::net::IpAddr;

/// Incode's documented source addresses, by environment.
const INCODE_US_PRODUCTION: &[&str] = &[
    "54.86.34.156/32",
    "3.142.125.52/32",
    // Announced for 2026-02-02.
    "54.85.117.182/32",
    "3.233.40.153/32",
];
const INCODE_US_DEMO: &[&str] = &[
    "34.198.171.165/32",
    // The previous demo address, kept until Incode confirms it is retired.
    "18.210.119.234/32",
];
/// EU production and demo share one address.
const INCODE_EU: &[&str] = &["18.158.116.18/32"];

/// Named lists usable in `*_ALLOWED_IPS` beside plain CIDRs.
fn named_set(name: &str) -> Option<Vec<&'static str>> {
    let sets: &[&[&str]] = match name {
        "incode-us-production" => &[INCODE_US_PRODUCTION],
        "incode-us-demo" => &[INCODE_US_DEMO],
        "incode-eu" => &[INCODE_EU],
        "incode-production" => &[INCODE_US_PRODUCTION, INCODE_EU],
        "incode-demo" => &[INCODE_US_DEMO, INCODE_EU],
        "incode-all" => &[INCODE_US_PRODUCTION, INCODE_US_DEMO, INCODE_EU],
        _ => return None,
    };
    Some(sets.iter().flat_map(|s| s.iter().copied()).collect())
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourcePolicy {
    /// Explicitly configured as `any`: another check must authenticate the request.
    Any,
    Only(Vec<IpNet>),
}

impl SourcePolicy {
    /// Parses a comma-separated list of CIDRs, single addresses and named sets, or `any`.
    pub fn parse(var: &str, spec: &str) -> Result<Self, ConfigError> {
        let items: Vec<&str> = spec
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        if items.is_empty() {
            return Err(ConfigError::new(var, "empty allowlist"));
        }
        if items == ["any"] {
            return Ok(SourcePolicy::Any);
        }
        let mut nets = Vec::new();
        for item in items {
            if item == "any" {
                return Err(ConfigError::new(
                    var,
                    "`any` cannot be combined with addresses",
                ));
            }
            if let Some(set) = named_set(item) {
                nets.extend(
                    set.into_iter()
                        .map(|c| c.parse::<IpNet>().expect("built-in CIDR")),
                );
                continue;
            }
            let net = item
                .parse::<IpNet>()
                .or_else(|_| item.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    ConfigError::new(
                        var,
                        format!("{item:?} is neither a CIDR, an IP address nor a known list (incode-production, incode-demo, incode-us-production, incode-us-demo, incode-eu, incode-all)"),
                    )
                })?;
            nets.push(net.trunc());
        }
        Ok(SourcePolicy::Only(nets))
    }

    pub fn is_restricted(&self) -> bool {
        matches!(self, SourcePolicy::Only(_))
    }

    /// IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) are compared as the IPv4 address they carry.
    pub fn allows(&self, ip: Option<IpAddr>) -> bool {
        match self {
            SourcePolicy::Any => true,
            SourcePolicy::Only(nets) => {
                let Some(ip) = ip else { return false };
                let ip = ip.to_canonical();
                nets.iter().any(|n| n.contains(&ip))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn named_sets_and_cidrs() {
        let p = SourcePolicy::parse(
            "V",
            "incode-production, 10.0.0.0/8, 2001:db8::/32, 192.0.2.7",
        )
        .unwrap();
        assert!(p.allows(ip("54.86.34.156")));
        assert!(p.allows(ip("18.158.116.18")));
        assert!(
            !p.allows(ip("34.198.171.165")),
            "demo address is not production"
        );
        assert!(p.allows(ip("10.1.2.3")));
        assert!(p.allows(ip("192.0.2.7")));
        assert!(!p.allows(ip("192.0.2.8")));
        assert!(p.allows(ip("2001:db8::1")));
        assert!(!p.allows(ip("2001:db9::1")));
        assert!(!p.allows(None));
    }

    #[test]
    fn ipv4_mapped_ipv6_is_compared_as_ipv4() {
        let p = SourcePolicy::parse("V", "incode-eu").unwrap();
        assert!(p.allows(ip("::ffff:18.158.116.18")));
        assert!(!p.allows(ip("::ffff:18.158.116.19")));
    }

    #[test]
    fn bad_entries_fail_with_the_variable_named() {
        let e = SourcePolicy::parse("INCODE_ALLOWED_IPS", "10.0.0.0/33").unwrap_err();
        assert_eq!(e.var, "INCODE_ALLOWED_IPS");
        assert!(SourcePolicy::parse("V", "incode-mars").is_err());
        assert!(SourcePolicy::parse("V", " , ").is_err());
        assert!(SourcePolicy::parse("V", "any,10.0.0.1").is_err());
        assert_eq!(SourcePolicy::parse("V", "any").unwrap(), SourcePolicy::Any);
    }
}
