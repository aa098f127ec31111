//! The outbound HTTP client (JWKS, destinations, OAuth token endpoints): rustls, explicit
//! timeouts, no redirects (a redirect could lead a request carrying credentials somewhere else),
//! connection reuse across invocations of a warm Lambda, and a resolver that refuses link-local
//! and instance-metadata addresses, so a destination's DNS name cannot point the relay at the
//! Lambda's own credentials endpoint.

use ipnet::IpNet;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// Addresses never connected to: IPv4 link-local (169.254.0.0/16, which holds the EC2/ECS/Lambda
/// metadata and credentials endpoints), IPv6 link-local, and the IPv6 metadata address.
const FORBIDDEN: &[&str] = &["169.254.0.0/16", "fe80::/10", "fd00:ec2::254/128"];

pub fn is_forbidden(ip: IpAddr) -> bool {
    let ip = ip.to_canonical();
    FORBIDDEN
        .iter()
        .any(|n| n.parse::<IpNet>().is_ok_and(|net| net.contains(&ip)))
}

#[derive(Debug, thiserror::Error)]
#[error("{host} resolves only to link-local or metadata addresses")]
pub struct ForbiddenAddress {
    host: String,
}

struct GuardedResolver;

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        Box::pin(async move {
            let host = name.as_str().to_string();
            let resolved: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = resolved
                .iter()
                .copied()
                .filter(|a| !is_forbidden(a.ip()))
                .collect();
            if allowed.is_empty() && !resolved.is_empty() {
                return Err(
                    Box::new(ForbiddenAddress { host }) as Box<dyn std::error::Error + Send + Sync>
                );
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

pub fn build(connect_timeout: Duration, timeout: Duration) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .connect_timeout(connect_timeout)
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .pool_idle_timeout(Duration::from_secs(60))
        .dns_resolver(Arc::new(GuardedResolver))
        .user_agent(concat!("kyc-webhook-relay/", env!("CARGO_PKG_VERSION")))
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_builds_with_one_tls_provider() {
        // Two rustls crypto providers in the dependency graph make this fail at run time, not at
        // compile time: building the client is the cheapest check.
        build(Duration::from_secs(1), Duration::from_secs(1)).unwrap();
    }

    #[test]
    fn metadata_and_link_local_addresses_are_forbidden() {
        for ip in [
            "169.254.169.254",
            "169.254.170.2",
            "fd00:ec2::254",
            "fe80::1",
            "::ffff:169.254.169.254",
        ] {
            assert!(is_forbidden(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["127.0.0.1", "10.0.0.1", "8.8.8.8", "2001:db8::1"] {
            assert!(!is_forbidden(ip.parse().unwrap()), "{ip}");
        }
    }

    #[tokio::test]
    async fn names_resolving_only_to_forbidden_addresses_are_refused() {
        // "169.254.169.254" as a name goes through the resolver like any host name would.
        let name: Name = "169.254.169.254".parse().unwrap();
        assert!(GuardedResolver.resolve(name).await.is_err());
        let name: Name = "localhost".parse().unwrap();
        assert!(GuardedResolver.resolve(name).await.is_ok());
    }
}
