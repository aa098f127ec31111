//! Outbound credentials: each destination's Standard Webhooks signer or OAuth 2.0 client
//! (client credentials grant), resolved once at cold start, and the bearer-token cache.
//!
//! Token fetches are bounded: one fetch at a time per destination (a lock, so concurrent deliveries
//! share one token), each limited to `token_timeout`, and a failed fetch is remembered for
//! [`TOKEN_FAILURE_CACHE_MS`], so a hung or broken token endpoint costs one timeout per destination
//! per few seconds instead of one per delivery queued behind the lock.

use super::transport::{Post, Transport, TransportError};
use crate::clock::Clock;
use crate::config::{ConfigError, SecretSource};
use crate::destination::{Auth, ClientAuth, Destinations, Secret, TlsSettings};
use crate::signing::{Signer, SigningSecret};
use base64::Engine;
use http::{HeaderName, HeaderValue};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// How long a failed token fetch is reused before the endpoint is asked again.
pub const TOKEN_FAILURE_CACHE_MS: u64 = 10_000;

pub(crate) struct OAuthClient {
    token_url: reqwest::Url,
    client_id: String,
    client_secret: String,
    scope: Option<String>,
    audience: Option<String>,
    client_auth: ClientAuth,
}

#[derive(Default)]
pub(crate) struct Credentials {
    pub(crate) signer: Option<Signer>,
    pub(crate) oauth: Option<OAuthClient>,
}

#[derive(Default)]
struct TokenSlot {
    token: Option<(String, u64)>,
    /// A recent failure, reused until the given time.
    failure: Option<(String, u64)>,
}

/// Why no token could be had (logged and recorded as the attempt's outcome; retried).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenError(pub String);

pub struct Vault {
    credentials: HashMap<String, Credentials>,
    /// The rustls configuration of each destination with `tls` settings (its CA, its client
    /// certificate and key), for the transport's per-destination clients.
    tls: HashMap<String, rustls::ClientConfig>,
    tokens: HashMap<String, tokio::sync::Mutex<TokenSlot>>,
    clock: Arc<dyn Clock>,
}

impl Vault {
    /// Resolves the destinations' secrets (SSM names in one round trip) and validates them.
    pub async fn resolve(
        destinations: &Destinations,
        ssm: Option<&impl SecretSource>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, ConfigError> {
        let names = destinations.ssm_secret_names();
        let fetched = match (names.is_empty(), ssm) {
            (true, _) => HashMap::new(),
            (false, Some(source)) => source.fetch(&names).await?,
            (false, None) => {
                return Err(ConfigError::new(
                    "destinations",
                    "secrets are named by SSM parameter but no SSM client is available",
                ));
            }
        };
        let secret = |id: &str, field: &str, secret: &Secret| -> Result<String, ConfigError> {
            match secret {
                Secret::Plain(v) => Ok(v.clone()),
                Secret::Ssm(name) => fetched.get(name).cloned().ok_or_else(|| {
                    ConfigError::new(
                        format!("destinations[{id}].{field}"),
                        format!("SSM parameter {name} not found"),
                    )
                }),
            }
        };
        let mut credentials = HashMap::new();
        for d in destinations.iter() {
            let creds = match &d.auth {
                None => Credentials::default(),
                Some(Auth::StandardWebhooks { secrets }) => Credentials {
                    // One signature per secret during a rotation (current first).
                    signer: Some(Signer::new(
                        secrets
                            .iter()
                            .map(|s| {
                                SigningSecret::parse(&secret(&d.id, "auth", s)?).map_err(|m| {
                                    ConfigError::new(
                                        format!("destinations[{}].auth.secret", d.id),
                                        m,
                                    )
                                })
                            })
                            .collect::<Result<_, _>>()?,
                    )),
                    oauth: None,
                },
                Some(Auth::Oauth2ClientCredentials {
                    token_url,
                    client_id,
                    client_secret,
                    scope,
                    audience,
                    client_auth,
                }) => Credentials {
                    signer: None,
                    oauth: Some(OAuthClient {
                        token_url: token_url.clone(),
                        client_id: client_id.clone(),
                        client_secret: secret(&d.id, "auth", client_secret)?,
                        scope: scope.clone(),
                        audience: audience.clone(),
                        client_auth: *client_auth,
                    }),
                },
            };
            credentials.insert(d.id.clone(), creds);
        }
        let mut tls = HashMap::new();
        for d in destinations.iter() {
            if let Some(settings) = &d.tls {
                tls.insert(d.id.clone(), tls_config(&d.id, settings, &secret)?);
            }
        }
        let tokens = destinations
            .iter()
            .map(|d| (d.id.clone(), tokio::sync::Mutex::new(TokenSlot::default())))
            .collect();
        Ok(Self {
            credentials,
            tls,
            tokens,
            clock,
        })
    }

    /// The destinations with their own TLS configuration.
    pub fn tls_configs(&self) -> impl Iterator<Item = (&str, &rustls::ClientConfig)> {
        self.tls.iter().map(|(id, c)| (id.as_str(), c))
    }

    pub(crate) fn get(&self, destination: &str) -> Option<&Credentials> {
        self.credentials.get(destination)
    }

    pub fn uses_oauth(&self, destination: &str) -> bool {
        self.get(destination).is_some_and(|c| c.oauth.is_some())
    }

    /// A cached bearer token, fetched (or refreshed) from the destination's token endpoint.
    /// `refused`: a token the destination just answered 401 to; it is replaced unless another
    /// delivery already did so while this one waited for the lock.
    pub async fn token(
        &self,
        transport: &impl Transport,
        destination: &str,
        refused: Option<&str>,
        timeout: Duration,
    ) -> Result<String, TokenError> {
        let (Some(client), Some(slot)) = (
            self.get(destination).and_then(|c| c.oauth.as_ref()),
            self.tokens.get(destination),
        ) else {
            return Err(TokenError("destination has no OAuth client".into()));
        };
        let mut slot = slot.lock().await;
        let now = self.clock.now_ms();
        if let Some((token, refresh_at)) = &slot.token
            && *refresh_at > now
            && refused != Some(token.as_str())
        {
            return Ok(token.clone());
        }
        if let Some((why, until)) = &slot.failure
            && *until > now
        {
            return Err(TokenError(why.clone()));
        }
        match fetch(transport, destination, client, timeout).await {
            Ok((token, lifetime_ms)) => {
                // Refresh a minute early (or at half-life for short-lived tokens).
                let margin = (lifetime_ms / 2).min(60_000);
                slot.token = Some((token.clone(), now.saturating_add(lifetime_ms - margin)));
                slot.failure = None;
                Ok(token)
            }
            Err(e) => {
                slot.failure = Some((
                    e.0.clone(),
                    self.clock.now_ms().saturating_add(TOKEN_FAILURE_CACHE_MS),
                ));
                Err(e)
            }
        }
    }
}

/// A destination's rustls configuration from its resolved PEM documents. Errors name the field and
/// the SSM parameter, never the content.
fn tls_config(
    id: &str,
    settings: &TlsSettings,
    secret: &impl Fn(&str, &str, &Secret) -> Result<String, ConfigError>,
) -> Result<rustls::ClientConfig, ConfigError> {
    let err = |field: &str, m: String| ConfigError::new(format!("destinations[{id}].{field}"), m);
    let source = |s: &Secret| match s {
        Secret::Ssm(name) => format!("SSM parameter {name} "),
        Secret::Plain(_) => String::new(),
    };
    let extra = match &settings.ca {
        None => Vec::new(),
        Some(ca) => crate::tls::parse_certificates(&secret(id, "tls.ca", ca)?)
            .map_err(|m| err("tls.ca", format!("{}{m}", source(ca))))?,
    };
    let identity = match &settings.client_certificate {
        None => None,
        Some(c) => {
            let field = "tls.client_certificate";
            let chain = crate::tls::parse_certificates(&secret(id, field, &c.cert)?)
                .map_err(|m| err(field, format!("{}{m}", source(&c.cert))))?;
            let key = Secret::Ssm(c.key_ssm.clone());
            let key_pem = secret(id, field, &key)?;
            let key = crate::tls::parse_private_key(&key_pem)
                .map_err(|m| err(field, format!("{}{m}", source(&key))))?;
            Some(crate::tls::Identity { chain, key })
        }
    };
    crate::tls::destination_config(
        crate::tls::Trust {
            extra,
            private_only: !settings.public_roots,
        },
        identity,
    )
    .map_err(|m| err("tls", m))
}

async fn fetch(
    transport: &impl Transport,
    destination: &str,
    client: &OAuthClient,
    timeout: Duration,
) -> Result<(String, u64), TokenError> {
    let mut form: Vec<(&str, &str)> = vec![("grant_type", "client_credentials")];
    if let Some(scope) = &client.scope {
        form.push(("scope", scope));
    }
    if let Some(audience) = &client.audience {
        form.push(("audience", audience));
    }
    let mut headers: Vec<(HeaderName, HeaderValue)> = vec![(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-www-form-urlencoded"),
    )];
    match client.client_auth {
        ClientAuth::Basic => {
            // Sent as most token endpoints expect (and as before): `id:secret` as is. RFC 6749
            // §2.3.1 form-encodes both first; for ids and secrets of unreserved characters (the
            // runbooks generate those) the two forms are the same bytes.
            let pair = format!("{}:{}", client.client_id, client.client_secret);
            let value = format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(pair)
            );
            let mut value = HeaderValue::from_str(&value)
                .map_err(|_| TokenError("client credentials are not a valid header".into()))?;
            value.set_sensitive(true);
            headers.push((http::header::AUTHORIZATION, value));
        }
        ClientAuth::Body => {
            form.push(("client_id", &client.client_id));
            form.push(("client_secret", &client.client_secret));
        }
    }
    let body = serde_urlencoded::to_string(&form)
        .map_err(|_| TokenError("cannot encode the token request".into()))?;
    let reply = transport
        .post(Post {
            destination: destination.to_string(),
            url: client.token_url.clone(),
            headers,
            body: body.into_bytes(),
            timeout,
            want_body: true,
        })
        .await
        .map_err(|e| {
            TokenError(match e {
                TransportError::Timeout => "token endpoint timeout".into(),
                TransportError::Refused(why) => format!("token endpoint refused: {why}"),
                TransportError::Connect => "token endpoint unreachable".into(),
                TransportError::TlsServer(why) | TransportError::TlsClient(why) => {
                    format!("token endpoint tls: {why}")
                }
            })
        })?;
    if !(200..300).contains(&reply.status) {
        return Err(TokenError(format!(
            "token endpoint answered {}",
            reply.status
        )));
    }
    #[derive(serde::Deserialize)]
    struct TokenResponse {
        access_token: String,
        #[serde(default)]
        expires_in: Option<u64>,
    }
    let token: TokenResponse = reply
        .body
        .as_deref()
        .and_then(|b| serde_json::from_slice(b).ok())
        .ok_or_else(|| TokenError("token response is not valid JSON".into()))?;
    if token.access_token.is_empty() || HeaderValue::from_str(&token.access_token).is_err() {
        return Err(TokenError(
            "token response has no usable access_token".into(),
        ));
    }
    // Bounded: a token endpoint's expires_in is input, not trusted arithmetic.
    let lifetime_ms = token.expires_in.unwrap_or(300).clamp(1, 86_400) * 1000;
    Ok((token.access_token, lifetime_ms))
}
