//! The outbound HTTP client (JWKS, destinations, OAuth token endpoints): rustls, explicit
//! timeouts, no redirects (a redirect could lead a request carrying credentials somewhere else),
//! and connection reuse across invocations of a warm Lambda.

use std::time::Duration;

pub fn build(connect_timeout: Duration, timeout: Duration) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .connect_timeout(connect_timeout)
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .pool_idle_timeout(Duration::from_secs(60))
        .user_agent(concat!("kyc-webhook-relay/", env!("CARGO_PKG_VERSION")))
        .build()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_client_builds_with_one_tls_provider() {
        // Two rustls crypto providers in the dependency graph make this fail at run time, not at
        // compile time: building the client is the cheapest check.
        super::build(
            std::time::Duration::from_secs(1),
            std::time::Duration::from_secs(1),
        )
        .unwrap();
    }
}
