//! The outbound HTTP client (JWKS, destinations, OAuth token endpoints): rustls, explicit
//! timeouts, no redirects (a redirect could lead a request carrying credentials somewhere else),
//! no proxy (a `HTTPS_PROXY`/`HTTP_PROXY`/`ALL_PROXY` variable would send every request to the
//! proxy's address, past the address guard), connection reuse across invocations of a warm Lambda,
//! and a resolver that refuses link-local and instance-metadata addresses in every spelling, so a
//! destination's DNS name cannot point the relay at the Lambda's own credentials endpoint.
//! Responses are read with [`read_capped`], never whole: a peer decides how much it sends.

use ipnet::{IpNet, Ipv4Net};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// IPv4 ranges never connected to: "this network" (0.0.0.0/8: connecting to 0.0.0.0 reaches the
/// local host) and link-local (169.254.0.0/16, which holds the EC2/ECS/Lambda metadata and
/// credentials endpoints).
const FORBIDDEN_V4: &[&str] = &["0.0.0.0/8", "169.254.0.0/16"];
/// IPv6 ranges never connected to: the unspecified address (like 0.0.0.0, it reaches the local
/// host), link-local and the EC2 IPv6 metadata address.
const FORBIDDEN_V6: &[&str] = &["::/128", "fe80::/10", "fd00:ec2::254/128"];

/// The IPv4 address an IPv6 address carries, in the forms that reach it: IPv4-mapped
/// (`::ffff:a.b.c.d`), IPv4-compatible (`::a.b.c.d`, deprecated but still routed by some stacks),
/// NAT64 (`64:ff9b::/96` and the local-use `64:ff9b:1::/48`) and 6to4 (`2002:AABB:CCDD::/48`).
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let last32 = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    // IPv4-compatible: 96 zero bits; `::` and `::1` are not IPv4 addresses.
    if s[..6] == [0; 6] && !(s[6] == 0 && s[7] <= 1) {
        return Some(last32);
    }
    if s[0] == 0x64 && s[1] == 0xff9b && (s[2..6] == [0; 4] || s[2] == 1) {
        return Some(last32);
    }
    if s[0] == 0x2002 {
        return Some(Ipv4Addr::new(
            (s[1] >> 8) as u8,
            s[1] as u8,
            (s[2] >> 8) as u8,
            s[2] as u8,
        ));
    }
    None
}

fn v4_forbidden(ip: Ipv4Addr) -> bool {
    FORBIDDEN_V4
        .iter()
        .any(|n| n.parse::<Ipv4Net>().is_ok_and(|net| net.contains(&ip)))
}

pub fn is_forbidden(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4_forbidden(v4),
        IpAddr::V6(v6) => {
            embedded_v4(v6).is_some_and(v4_forbidden)
                || FORBIDDEN_V6.iter().any(|n| {
                    n.parse::<IpNet>()
                        .is_ok_and(|net| net.contains(&IpAddr::V6(v6)))
                })
        }
    }
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
    // Roots loaded on the first handshake, shared with the SDK (`crate::tls`); reqwest's own
    // rustls set-up loads the platform store (bundle and directory) when the client is built.
    build_with(connect_timeout, timeout, crate::tls::client_config())
}

/// [`build`] with a given TLS configuration (a destination's CA and client certificate).
pub fn build_with(
    connect_timeout: Duration,
    timeout: Duration,
    tls: rustls::ClientConfig,
) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .connect_timeout(connect_timeout)
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        // Proxy variables in the environment are ignored: a proxy would connect on our behalf to
        // an address the resolver never sees.
        .no_proxy()
        .pool_idle_timeout(Duration::from_secs(60))
        .dns_resolver(Arc::new(GuardedResolver))
        .user_agent(concat!("kyc-webhook-relay/", env!("CARGO_PKG_VERSION")))
        .build()
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("response body larger than {0} bytes")]
    TooLarge(usize),
    #[error("reading the response body failed: {0}")]
    Http(#[source] reqwest::Error),
}

impl ReadError {
    pub fn is_timeout(&self) -> bool {
        matches!(self, ReadError::Http(e) if e.is_timeout())
    }
}

/// Reads a response body of at most `max_bytes`: a `Content-Length` above it is refused before
/// reading, and a body that grows past it (chunked, or a lying length) is cut off there. The
/// client's timeout still bounds the time.
pub async fn read_capped(
    mut response: reqwest::Response,
    max_bytes: usize,
) -> Result<Vec<u8>, ReadError> {
    if response
        .content_length()
        .is_some_and(|n| n > max_bytes as u64)
    {
        return Err(ReadError::TooLarge(max_bytes));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| ReadError::Http(e.without_url()))?
    {
        if body.len() + chunk.len() > max_bytes {
            return Err(ReadError::TooLarge(max_bytes));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
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
    fn metadata_and_link_local_addresses_are_forbidden_in_every_spelling() {
        for ip in [
            "169.254.169.254",
            "169.254.170.2",
            "0.0.0.0",
            "0.1.2.3",
            "fd00:ec2::254",
            "fe80::1",
            "::ffff:169.254.169.254",
            "::169.254.169.254",
            "::",
            "64:ff9b::169.254.169.254",
            "64:ff9b:1::a9fe:a9fe",
            "2002:a9fe:a9fe::1",
            "::ffff:0.0.0.0",
        ] {
            assert!(is_forbidden(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "127.0.0.1",
            "10.0.0.1",
            "8.8.8.8",
            "2001:db8::1",
            "::1",
            "64:ff9b::8.8.8.8",
            "::ffff:127.0.0.1",
            "2002:0808:0808::1",
        ] {
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
