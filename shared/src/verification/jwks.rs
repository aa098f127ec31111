//! The provider's JSON Web Key Set, fetched over HTTPS and cached.
//!
//! Keys are looked up by `kid`. An unknown `kid` triggers a refresh (the provider rotated its keys),
//! at most once per `min_refresh` so a flood of tokens with made-up `kid`s cannot turn the receiver
//! into a traffic amplifier against the JWKS host. Cached keys are also refreshed after `max_age`,
//! so a key the provider withdrew stops being accepted.
//!
//! A fetch is bounded in size ([`MAX_JWKS_BYTES`], read with `http_client::read_capped`) and in
//! time (the client's timeouts). A document without one usable key counts as a failed fetch: the
//! previous keys stay in use, and a `kid` that cannot be looked up is "keys unavailable" (503, IDnow
//! retries), never "unauthorized" (401, which IDnow drops).

use crate::clock::Clock;
use jsonwebtoken::DecodingKey;
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, KeyAlgorithm, PublicKeyUse};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::Mutex;

/// Largest JWKS document read. A JWKS holds a few keys of under 2 KB each.
pub const MAX_JWKS_BYTES: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    #[error("JWKS endpoint unreachable or answered an error: {0}")]
    Fetch(String),
    #[error("JWKS document is invalid: {0}")]
    Invalid(String),
}

#[derive(Default)]
struct Cache {
    keys: HashMap<String, DecodingKey>,
    fetched_at_ms: Option<u64>,
    last_attempt_ms: Option<u64>,
    last_fetch_failed: bool,
}

pub struct JwksCache {
    url: reqwest::Url,
    http: reqwest::Client,
    clock: Arc<dyn Clock>,
    min_refresh_ms: u64,
    max_age_ms: u64,
    cache: Mutex<Cache>,
}

impl JwksCache {
    pub fn new(
        url: reqwest::Url,
        http: reqwest::Client,
        clock: Arc<dyn Clock>,
        min_refresh_secs: u64,
        max_age_secs: u64,
    ) -> Self {
        Self {
            url,
            http,
            clock,
            min_refresh_ms: min_refresh_secs * 1000,
            max_age_ms: max_age_secs * 1000,
            cache: Mutex::new(Cache::default()),
        }
    }

    /// The key for `kid`, refreshing the set when the key is unknown or the set is stale.
    /// `Ok(None)`: the provider does not publish that key (the token is not theirs).
    pub async fn key(&self, kid: &str) -> Result<Option<DecodingKey>, JwksError> {
        // One lock over lookup and refresh: concurrent requests with a new kid share one fetch.
        let mut cache = self.cache.lock().await;
        let now = self.clock.now_ms();
        let stale = cache
            .fetched_at_ms
            .is_none_or(|t| now.saturating_sub(t) >= self.max_age_ms);
        if !stale && let Some(key) = cache.keys.get(kid) {
            return Ok(Some(key.clone()));
        }
        let may_fetch = cache
            .last_attempt_ms
            .is_none_or(|t| now.saturating_sub(t) >= self.min_refresh_ms);
        if may_fetch {
            cache.last_attempt_ms = Some(now);
            match self.fetch().await {
                Ok(keys) => {
                    tracing::info!(keys = keys.len(), "JWKS refreshed");
                    cache.keys = keys;
                    cache.fetched_at_ms = Some(now);
                    cache.last_fetch_failed = false;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "JWKS fetch failed");
                    cache.last_fetch_failed = true;
                }
            }
        }
        match cache.keys.get(kid) {
            // A stale key beats none while the JWKS host has a bad moment.
            Some(key) => Ok(Some(key.clone())),
            // Without a current key set we cannot tell a forged kid from a rotated key: answer
            // "unavailable" (the provider retries), never "unauthorized" (IDnow drops a 4xx).
            None if cache.last_fetch_failed || cache.fetched_at_ms.is_none() => Err(
                JwksError::Fetch("no current key set (the last fetch failed)".into()),
            ),
            None => Ok(None),
        }
    }

    async fn fetch(&self) -> Result<HashMap<String, DecodingKey>, JwksError> {
        let response = self
            .http
            .get(self.url.clone())
            .header(http::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| JwksError::Fetch(e.without_url().to_string()))?;
        if !response.status().is_success() {
            return Err(JwksError::Fetch(format!("HTTP {}", response.status())));
        }
        let body = crate::http_client::read_capped(response, MAX_JWKS_BYTES)
            .await
            .map_err(|e| JwksError::Fetch(e.to_string()))?;
        let doc: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| JwksError::Invalid(format!("not JSON ({:?} error)", e.classify())))?;
        let keys = parse_jwks(&doc)?;
        if keys.is_empty() {
            return Err(JwksError::Invalid("no usable RS256 signing key".into()));
        }
        Ok(keys)
    }
}

/// Keeps the RSA signing keys usable for RS256. Keys of other types are skipped, not fatal: a JWKS
/// may legitimately carry encryption or EC keys beside the one we need.
pub fn parse_jwks(doc: &serde_json::Value) -> Result<HashMap<String, DecodingKey>, JwksError> {
    let keys = doc
        .get("keys")
        .and_then(|k| k.as_array())
        .ok_or_else(|| JwksError::Invalid("no `keys` array".into()))?;
    let mut out = HashMap::new();
    for raw in keys {
        let Ok(jwk) = serde_json::from_value::<Jwk>(raw.clone()) else {
            continue;
        };
        let usable = matches!(jwk.algorithm, AlgorithmParameters::RSA(_))
            && matches!(jwk.common.key_algorithm, None | Some(KeyAlgorithm::RS256))
            && matches!(
                jwk.common.public_key_use,
                None | Some(PublicKeyUse::Signature)
            );
        let Some(kid) = jwk.common.key_id.clone() else {
            continue;
        };
        if usable && let Ok(key) = DecodingKey::from_jwk(&jwk) {
            out.insert(kid, key);
        }
    }
    Ok(out)
}
