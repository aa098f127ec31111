//! Destinations: the internal services each event is relayed to, from one JSON document validated
//! at cold start (`DESTINATIONS_CONFIG` inline, `DESTINATIONS_CONFIG_FILE`, or
//! `DESTINATIONS_CONFIG_SSM` naming an SSM parameter). Example:
//!
//! ```json
//! {"destinations": [{
//!   "id": "crm",
//!   "url": "https://crm.internal.example/kyc-events",
//!   "providers": ["incode", "idnow"],
//!   "event_types": ["onboarding_status", "session.completed"],
//!   "retry_policy": "incode",
//!   "body": "envelope",
//!   "headers": {"X-Team": "kyc"},
//!   "auth": {"type": "standard_webhooks", "secret_ssm": "/kyc-relay/destinations/crm/signing-secret"}
//! }]}
//! ```
//!
//! Secrets are named by SSM parameter (`*_ssm`) in AWS; plain values (`secret`, `client_secret`) are
//! for local use. A document that does not validate stops the function with the offending field.

use crate::config::{ConfigError, Env, OutboundPolicy, SecretSource, validate_outbound_url};
use crate::envelope::Envelope;
use crate::provider::Provider;
use crate::retry::{PolicySpec, RetryPolicy};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap, HashSet};

mod target;
pub use target::{AwsTarget, Target};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum BodyFormat {
    /// The provider's request body, byte for byte, with its content type.
    Raw,
    /// The envelope as JSON (provider, event type and id, session, status, parsed event).
    #[default]
    Envelope,
}

/// One value, or a list of them (a destination's signing secrets during a rotation).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(v) => vec![v],
            OneOrMany::Many(v) => v,
        }
    }
}

/// At most this many signing secrets at once (a rotation needs two; a third allows an overlap).
pub const MAX_SIGNING_SECRETS: usize = 3;

/// The `auth` field as written in the document.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum AuthSpec {
    /// Standard Webhooks signing with one `whsec_...` secret, or a list during a rotation.
    StandardWebhooks {
        #[serde(default)]
        secret: Option<OneOrMany>,
        #[serde(default)]
        secret_ssm: Option<OneOrMany>,
    },
    /// OAuth 2.0 client credentials against the destination's token endpoint.
    Oauth2ClientCredentials {
        token_url: String,
        client_id: String,
        #[serde(default)]
        client_secret: Option<String>,
        #[serde(default)]
        client_secret_ssm: Option<String>,
        #[serde(default)]
        scope: Option<String>,
        #[serde(default)]
        audience: Option<String>,
        /// `basic` (default) or `body`.
        #[serde(default)]
        client_auth: ClientAuth,
    },
}

/// A secret as the document names it: a plain value (local use) or an SSM parameter name.
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    Plain(String),
    Ssm(String),
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Secret::Plain(_) => f.write_str("Secret::Plain(..)"),
            Secret::Ssm(name) => write!(f, "Secret::Ssm({name:?})"),
        }
    }
}

impl Secret {
    /// Exactly one of the two forms.
    fn from_pair(plain: Option<String>, ssm: Option<String>) -> Option<Self> {
        match (plain, ssm) {
            (Some(v), None) => Some(Secret::Plain(v)),
            (None, Some(name)) => Some(Secret::Ssm(name)),
            _ => None,
        }
    }

    pub fn ssm_name(&self) -> Option<&str> {
        match self {
            Secret::Ssm(name) => Some(name),
            Secret::Plain(_) => None,
        }
    }
}

/// A destination's validated authentication.
#[derive(Debug, Clone)]
pub enum Auth {
    /// Standard Webhooks signing: one `whsec_...` secret, or several during a rotation (every
    /// request then carries one signature per secret). Current secret first.
    StandardWebhooks { secrets: Vec<Secret> },
    /// OAuth 2.0 client credentials against the destination's token endpoint.
    Oauth2ClientCredentials {
        token_url: reqwest::Url,
        client_id: String,
        client_secret: Secret,
        scope: Option<String>,
        audience: Option<String>,
        client_auth: ClientAuth,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    #[default]
    Basic,
    Body,
}

/// The `tls` field as written in the document.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsSpec {
    #[serde(default)]
    ca_pem: Option<String>,
    #[serde(default)]
    ca_ssm: Option<String>,
    #[serde(default = "yes")]
    public_roots: bool,
    #[serde(default)]
    client_certificate: Option<ClientCertificateSpec>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientCertificateSpec {
    #[serde(default)]
    cert_pem: Option<String>,
    #[serde(default)]
    cert_ssm: Option<String>,
    /// Only by SSM name: a private key never appears in the document (nor in a log).
    key_ssm: String,
}

/// A destination's validated TLS settings (HTTPS only): its own trust anchors and, for mTLS, the
/// client certificate presented on every connection to it and to its token endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// A PEM bundle of the CA certificates its server certificate may chain to.
    pub ca: Option<Secret>,
    /// Whether the public roots are trusted besides `ca` (default `true`).
    pub public_roots: bool,
    pub client_certificate: Option<ClientCertificate>,
}

/// A client certificate chain (PEM, end entity first) and the SSM name of its private key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertificate {
    pub cert: Secret,
    pub key_ssm: String,
}

impl TlsSettings {
    /// SSM parameter names this destination's TLS settings are read from.
    fn ssm_names(&self) -> impl Iterator<Item = &str> {
        let client = self.client_certificate.as_ref();
        self.ca
            .as_ref()
            .and_then(Secret::ssm_name)
            .into_iter()
            .chain(client.and_then(|c| c.cert.ssm_name()))
            .chain(client.map(|c| c.key_ssm.as_str()))
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDestination {
    id: String,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    sqs: Option<target::SqsSpec>,
    #[serde(default)]
    sns: Option<target::SnsSpec>,
    #[serde(default)]
    eventbridge: Option<target::EventBridgeSpec>,
    #[serde(default)]
    providers: Option<Vec<Provider>>,
    #[serde(default)]
    event_types: Option<Vec<String>>,
    retry_policy: PolicySpec,
    #[serde(default)]
    body: BodyFormat,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    timeout_ms: Option<u64>,
    #[serde(default)]
    auth: Option<AuthSpec>,
    #[serde(default)]
    tls: Option<TlsSpec>,
    #[serde(default)]
    rate_limit: Option<crate::rate::RateLimit>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDocument {
    destinations: Vec<RawDestination>,
}

#[derive(Debug, Clone)]
pub struct Destination {
    pub id: String,
    pub target: Target,
    pub providers: Option<Vec<Provider>>,
    pub event_types: Option<HashSet<String>>,
    pub retry: RetryPolicy,
    pub body: BodyFormat,
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
    pub timeout_ms: Option<u64>,
    pub auth: Option<Auth>,
    pub tls: Option<TlsSettings>,
    /// At most this rate, across every dispatcher instance and both lanes (`crate::rate`).
    pub rate_limit: Option<crate::rate::RateLimit>,
}

impl Destination {
    pub fn wants(&self, envelope: &Envelope) -> bool {
        self.providers
            .as_ref()
            .is_none_or(|p| p.contains(&envelope.provider))
            && self
                .event_types
                .as_ref()
                .is_none_or(|t| t.contains(&envelope.event_type))
    }

    /// SSM parameter names of this destination's secrets.
    pub fn ssm_secret_names(&self) -> Vec<String> {
        let secrets: Vec<&Secret> = match &self.auth {
            Some(Auth::StandardWebhooks { secrets }) => secrets.iter().collect(),
            Some(Auth::Oauth2ClientCredentials { client_secret, .. }) => vec![client_secret],
            None => vec![],
        };
        secrets
            .into_iter()
            .filter_map(|s| s.ssm_name())
            .chain(self.tls.iter().flat_map(TlsSettings::ssm_names))
            .map(str::to_string)
            .collect()
    }
}

const SSM_NAME_RULE: &str = "must name an SSM parameter: 1 to 2048 characters of A-Z a-z 0-9 _ . - / (the value is not shown)";

/// An SSM parameter name (so a PEM pasted into a `*_ssm` field is refused without being quoted).
fn is_ssm_name(name: &str) -> bool {
    (1..=2048).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-/".contains(&b))
}

/// Validates a `tls` field: PEM given inline must parse; `public_roots: false` needs a CA.
fn tls_settings(
    spec: TlsSpec,
    target: &Target,
    err: impl Fn(&str, String) -> ConfigError,
) -> Result<TlsSettings, ConfigError> {
    if !matches!(target, Target::Https(url) if url.scheme() == "https") {
        return Err(err("tls", "applies to https URLs only".into()));
    }
    // A PEM document given inline (checked now) or by SSM name (checked at cold start).
    let pem =
        |field: &str, names: &str, plain: Option<String>, ssm: Option<String>| match (plain, ssm) {
            (Some(text), None) => {
                crate::tls::parse_certificates(&text).map_err(|m| err(field, m))?;
                Ok(Some(Secret::Plain(text)))
            }
            (None, Some(name)) if !is_ssm_name(&name) => Err(err(field, SSM_NAME_RULE.into())),
            (None, Some(name)) => Ok(Some(Secret::Ssm(name))),
            (None, None) => Ok(None),
            (Some(_), Some(_)) => Err(err(field, format!("set at most one of {names}"))),
        };
    let ca = pem("tls.ca", "ca_pem and ca_ssm", spec.ca_pem, spec.ca_ssm)?;
    if !spec.public_roots && ca.is_none() {
        return Err(err(
            "tls.public_roots",
            "false needs the destination's CA (ca_pem or ca_ssm)".into(),
        ));
    }
    let client_certificate = match spec.client_certificate {
        None => None,
        Some(c) => {
            if !is_ssm_name(&c.key_ssm) {
                // Never echoed: a key pasted here by mistake must not reach a log.
                return Err(err("tls.client_certificate.key_ssm", SSM_NAME_RULE.into()));
            }
            let field = "tls.client_certificate";
            let cert = pem(field, "cert_pem and cert_ssm", c.cert_pem, c.cert_ssm)?
                .ok_or_else(|| err(field, "set one of cert_pem and cert_ssm".into()))?;
            Some(ClientCertificate {
                cert,
                key_ssm: c.key_ssm,
            })
        }
    };
    if ca.is_none() && client_certificate.is_none() {
        return Err(err(
            "tls",
            "set a CA (ca_pem or ca_ssm), a client_certificate, or both".into(),
        ));
    }
    Ok(TlsSettings {
        ca,
        public_roots: spec.public_roots,
        client_certificate,
    })
}

/// Headers the relay sets itself; a destination may not override them.
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "content-type",
    "transfer-encoding",
    "connection",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "traceparent",
];

/// At most this many destinations (ARCHITECTURE.md §3: the claim item lists them, and its size
/// decides its write units).
pub const MAX_DESTINATIONS: usize = 10;

#[derive(Debug, Clone, Default)]
pub struct Destinations {
    list: Vec<Destination>,
}

impl Destinations {
    /// Parses with the production outbound rules (`https` only): see [`Destinations::parse_with`].
    pub fn parse(json: &str) -> Result<Self, ConfigError> {
        Self::parse_with(json, OutboundPolicy::default())
    }

    /// Parses a destinations document; URLs are checked against `outbound` (plain `http` to a
    /// loopback host only with the local switch).
    pub fn parse_with(json: &str, outbound: OutboundPolicy) -> Result<Self, ConfigError> {
        let err =
            |field: String, msg: String| ConfigError::new(format!("destinations{field}"), msg);
        let doc: RawDocument = serde_json::from_str(json).map_err(|e| {
            err(
                String::new(),
                format!(
                    "invalid document (line {} column {}): {e}",
                    e.line(),
                    e.column()
                ),
            )
        })?;
        if doc.destinations.len() > MAX_DESTINATIONS {
            return Err(err(
                String::new(),
                format!("at most {MAX_DESTINATIONS} destinations"),
            ));
        }
        let mut seen = HashSet::new();
        let mut list = Vec::with_capacity(doc.destinations.len());
        for (i, raw) in doc.destinations.into_iter().enumerate() {
            let at = |field: &str| format!("[{i}].{field}");
            let id_ok = !raw.id.is_empty()
                && raw.id.len() <= 64
                && raw
                    .id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !id_ok {
                return Err(err(
                    at("id"),
                    "must be 1-64 characters of [A-Za-z0-9_-]".into(),
                ));
            }
            if !seen.insert(raw.id.clone()) {
                return Err(err(at("id"), format!("duplicate id {:?}", raw.id)));
            }
            let target = target::TargetFields {
                url: raw.url,
                sqs: raw.sqs,
                sns: raw.sns,
                eventbridge: raw.eventbridge,
            }
            .parse(&at, outbound)?;
            if let Target::Aws(aws) = &target {
                // Headers, signatures, tokens and TLS settings are HTTP's; an AWS target is
                // authorised by the dispatcher's role (and the target's resource policy).
                let http_only = [
                    ("headers", !raw.headers.is_empty()),
                    ("auth", raw.auth.is_some()),
                    ("tls", raw.tls.is_some()),
                ];
                if let Some((field, _)) = http_only.iter().find(|(_, set)| *set) {
                    return Err(err(
                        at(field),
                        format!("applies to https destinations only, not to {}", aws.kind()),
                    ));
                }
                if matches!(aws, AwsTarget::EventBridge { .. }) && raw.body == BodyFormat::Raw {
                    return Err(err(
                        at("body"),
                        "eventbridge sends the envelope as the event's detail: use \"envelope\""
                            .into(),
                    ));
                }
            }
            if let Some(types) = &raw.event_types
                && (types.is_empty() || types.iter().any(|t| t.trim().is_empty()))
            {
                return Err(err(
                    at("event_types"),
                    "must be a non-empty list of event types (omit it for all)".into(),
                ));
            }
            if raw.providers.as_ref().is_some_and(|p| p.is_empty()) {
                return Err(err(
                    at("providers"),
                    "must not be empty (omit it for all)".into(),
                ));
            }
            let retry = raw
                .retry_policy
                .build()
                .map_err(|m| err(at("retry_policy"), m))?;
            let mut headers = Vec::new();
            for (name, value) in &raw.headers {
                let n = http::HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| err(at("headers"), format!("{name:?} is not a header name")))?;
                if RESERVED_HEADERS.contains(&n.as_str())
                    || (raw.auth.is_some() && n == http::header::AUTHORIZATION)
                {
                    return Err(err(at("headers"), format!("{name:?} is set by the relay")));
                }
                let v = http::HeaderValue::from_str(value).map_err(|_| {
                    err(
                        at("headers"),
                        format!("value of {name:?} is not a valid header value"),
                    )
                })?;
                headers.push((n, v));
            }
            if let Some(t) = raw.timeout_ms
                && !(100..=30_000).contains(&t)
            {
                return Err(err(
                    at("timeout_ms"),
                    "must be between 100 and 30000".into(),
                ));
            }
            let auth = match raw.auth {
                None => None,
                Some(AuthSpec::StandardWebhooks { secret, secret_ssm }) => {
                    let secrets: Vec<Secret> = match (secret, secret_ssm) {
                        (Some(plain), None) => {
                            plain.into_vec().into_iter().map(Secret::Plain).collect()
                        }
                        (None, Some(names)) => {
                            names.into_vec().into_iter().map(Secret::Ssm).collect()
                        }
                        _ => {
                            return Err(err(
                                at("auth"),
                                "set exactly one of secret and secret_ssm".into(),
                            ));
                        }
                    };
                    if secrets.is_empty() || secrets.len() > MAX_SIGNING_SECRETS {
                        return Err(err(
                            at("auth"),
                            format!("give 1 to {MAX_SIGNING_SECRETS} signing secrets"),
                        ));
                    }
                    if (1..secrets.len()).any(|i| secrets[..i].contains(&secrets[i])) {
                        return Err(err(at("auth"), "a signing secret is listed twice".into()));
                    }
                    for secret in &secrets {
                        if let Secret::Plain(s) = secret {
                            crate::signing::SigningSecret::parse(s)
                                .map_err(|m| err(at("auth.secret"), m))?;
                        }
                    }
                    Some(Auth::StandardWebhooks { secrets })
                }
                Some(AuthSpec::Oauth2ClientCredentials {
                    token_url,
                    client_id,
                    client_secret,
                    client_secret_ssm,
                    scope,
                    audience,
                    client_auth,
                }) => Some(Auth::Oauth2ClientCredentials {
                    token_url: validate_outbound_url(
                        &format!("destinations{}", at("auth.token_url")),
                        &token_url,
                        outbound,
                    )?,
                    client_id,
                    client_secret: Secret::from_pair(client_secret, client_secret_ssm).ok_or_else(
                        || {
                            err(
                                at("auth"),
                                "set exactly one of client_secret and client_secret_ssm".into(),
                            )
                        },
                    )?,
                    scope,
                    audience,
                    client_auth,
                }),
            };
            if let Some(limit) = &raw.rate_limit {
                limit.validate().map_err(|m| err(at("rate_limit"), m))?;
            }
            let tls = raw
                .tls
                .map(|spec| tls_settings(spec, &target, |field, m| err(at(field), m)))
                .transpose()?;
            list.push(Destination {
                id: raw.id,
                target,
                providers: raw.providers,
                event_types: raw.event_types.map(|t| t.into_iter().collect()),
                retry,
                body: raw.body,
                headers,
                timeout_ms: raw.timeout_ms,
                auth,
                tls,
                rate_limit: raw.rate_limit,
            });
        }
        Ok(Self { list })
    }

    /// Reads the document from the environment: exactly one of `DESTINATIONS_CONFIG`,
    /// `DESTINATIONS_CONFIG_FILE` or `DESTINATIONS_CONFIG_SSM`.
    pub async fn from_env(env: &Env, ssm: Option<&impl SecretSource>) -> Result<Self, ConfigError> {
        let sources = [
            env.get("DESTINATIONS_CONFIG"),
            env.get("DESTINATIONS_CONFIG_FILE"),
            env.get("DESTINATIONS_CONFIG_SSM"),
        ];
        let text = match sources {
            [Some(inline), None, None] => inline.to_string(),
            [None, Some(path), None] => std::fs::read_to_string(path).map_err(|e| {
                ConfigError::new(
                    "DESTINATIONS_CONFIG_FILE",
                    format!("cannot read {path}: {e}"),
                )
            })?,
            [None, None, Some(name)] => {
                let source = ssm.ok_or_else(|| {
                    ConfigError::new("DESTINATIONS_CONFIG_SSM", "no SSM client available")
                })?;
                let mut values = source.fetch(&[name.to_string()]).await?;
                values.remove(name).ok_or_else(|| {
                    ConfigError::new(
                        "DESTINATIONS_CONFIG_SSM",
                        format!("SSM parameter {name} not found"),
                    )
                })?
            }
            [None, None, None] => {
                return Err(ConfigError::new(
                    "DESTINATIONS_CONFIG",
                    "no destinations configured: set DESTINATIONS_CONFIG, DESTINATIONS_CONFIG_FILE or DESTINATIONS_CONFIG_SSM",
                ));
            }
            _ => {
                return Err(ConfigError::new(
                    "DESTINATIONS_CONFIG",
                    "set only one of DESTINATIONS_CONFIG, DESTINATIONS_CONFIG_FILE and DESTINATIONS_CONFIG_SSM",
                ));
            }
        };
        let parsed = Self::parse_with(&text, OutboundPolicy::from_env(env)?)?;
        if parsed.list.is_empty() {
            tracing::warn!(
                "destinations document lists no destination: events are recorded but relayed nowhere"
            );
        }
        Ok(parsed)
    }

    pub fn matching<'a>(
        &'a self,
        envelope: &'a Envelope,
    ) -> impl Iterator<Item = &'a Destination> + 'a {
        self.list.iter().filter(|d| d.wants(envelope))
    }

    pub fn get(&self, id: &str) -> Option<&Destination> {
        self.list.iter().find(|d| d.id == id)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Destination> {
        self.list.iter()
    }

    /// The destination with the longest retry schedule, and its length.
    pub fn longest_chain(&self) -> Option<(&str, std::time::Duration)> {
        self.list
            .iter()
            .map(|d| (d.id.as_str(), d.retry.total_schedule()))
            .max_by_key(|(_, t)| *t)
    }

    /// All SSM parameter names the destinations' secrets live in.
    /// Each once: a CA bundle or key shared by several destinations is fetched once.
    pub fn ssm_secret_names(&self) -> Vec<String> {
        let mut seen = HashSet::new();
        self.list
            .iter()
            .flat_map(Destination::ssm_secret_names)
            .filter(|n| seen.insert(n.clone()))
            .collect()
    }
}

/// Resolved secret values by SSM name (dispatcher only).
pub type ResolvedSecrets = HashMap<String, String>;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc(d: serde_json::Value) -> Result<Destinations, ConfigError> {
        Destinations::parse(&json!({"destinations": [d]}).to_string())
    }

    fn minimal() -> serde_json::Value {
        json!({"id": "crm", "url": "https://crm.example/hook", "retry_policy": "idnow"})
    }

    #[test]
    fn a_minimal_destination_receives_everything() {
        let d = doc(minimal()).unwrap();
        let dest = d.get("crm").unwrap();
        assert_eq!(dest.body, BodyFormat::Envelope);
        assert_eq!(dest.retry.name, "idnow");
    }

    #[test]
    fn invalid_fields_are_named() {
        let cases = [
            (
                json!({"id": "a b", "url": "https://x.example", "retry_policy": "idnow"}),
                "destinations[0].id",
            ),
            (
                json!({"id": "a", "url": "http://x.example", "retry_policy": "idnow"}),
                "destinations[0].url",
            ),
            (
                json!({"id": "a", "url": "https://x.example", "retry_policy": "often"}),
                "destinations[0].retry_policy",
            ),
            (
                json!({"id": "a", "url": "https://x.example", "retry_policy": "idnow", "event_types": []}),
                "destinations[0].event_types",
            ),
            (
                json!({"id": "a", "url": "https://x.example", "retry_policy": "idnow", "headers": {"webhook-id": "x"}}),
                "destinations[0].headers",
            ),
            (
                json!({"id": "a", "url": "https://x.example", "retry_policy": "idnow", "auth": {"type": "standard_webhooks"}}),
                "destinations[0].auth",
            ),
            (
                json!({"id": "a", "url": "https://x.example", "retry_policy": "idnow", "auth": {"type": "standard_webhooks", "secret": "nope"}}),
                "destinations[0].auth.secret",
            ),
            (
                json!({"id": "a", "url": "https://x.example", "retry_policy": "idnow", "timeout_ms": 60000}),
                "destinations[0].timeout_ms",
            ),
            (
                json!({"id": "a", "url": "https://x.example", "retry_policy": "idnow", "auth": {"type": "standard_webhooks", "secret": []}}),
                "destinations[0].auth",
            ),
            (
                json!({"id": "a", "url": "https://x.example", "retry_policy": "idnow", "auth": {"type": "standard_webhooks", "secret_ssm": ["/a", "/a"]}}),
                "destinations[0].auth",
            ),
            (
                json!({"id": "a", "url": "https://x.example", "retry_policy": "idnow", "auth": {"type": "standard_webhooks", "secret": ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "nope"]}}),
                "destinations[0].auth.secret",
            ),
            (
                json!({"id": "a", "url": "http://127.0.0.1:9/x", "retry_policy": "idnow"}),
                "destinations[0].url",
            ),
            (
                json!({"id": "a", "url": "https://x.example", "retry_policy": "idnow", "rate_limit": {"per_second": 0}}),
                "destinations[0].rate_limit",
            ),
            (
                json!({"id": "a", "url": "https://x.example", "retry_policy": "idnow", "rate_limit": {"per_second": 5, "burst": 6}}),
                "destinations[0].rate_limit",
            ),
        ];
        for (d, var) in cases {
            let e = doc(d.clone()).unwrap_err();
            assert_eq!(e.var, var, "{d}: {e}");
        }
        let e = Destinations::parse(r#"{"destinations": [{"id": "a"}]}"#).unwrap_err();
        assert!(e.message.contains("missing field"), "{e}");
        let two = json!({"destinations": [minimal(), minimal()]}).to_string();
        assert!(
            Destinations::parse(&two)
                .unwrap_err()
                .message
                .contains("duplicate")
        );
    }

    #[test]
    fn signing_secrets_are_one_or_a_list() {
        let one = doc(
            json!({"id": "a", "url": "https://x.example", "retry_policy": "idnow",
            "auth": {"type": "standard_webhooks", "secret_ssm": "/kyc/a"}}),
        )
        .unwrap();
        assert_eq!(one.ssm_secret_names(), ["/kyc/a"]);
        let two = doc(
            json!({"id": "a", "url": "https://x.example", "retry_policy": "idnow",
            "auth": {"type": "standard_webhooks", "secret_ssm": ["/kyc/new", "/kyc/old"]}}),
        )
        .unwrap();
        assert_eq!(two.ssm_secret_names(), ["/kyc/new", "/kyc/old"]);
        let local = Destinations::parse_with(
            &json!({"destinations": [{"id": "a", "url": "http://127.0.0.1:9/x", "retry_policy": "idnow"}]})
                .to_string(),
            OutboundPolicy::local(),
        );
        assert!(local.is_ok(), "http to loopback with the local switch");
    }

    /// A real CA certificate (the first of the machine's bundle) as inline PEM.
    fn some_ca_pem() -> String {
        let bundle = crate::tls::BUNDLES
            .iter()
            .find_map(|p| std::fs::read_to_string(p).ok())
            .expect("a CA bundle on the test machine");
        let end = "-----END CERTIFICATE-----\n";
        bundle[bundle.find("-----BEGIN CERTIFICATE-----").unwrap()..]
            .split_inclusive(end)
            .next()
            .unwrap()
            .to_string()
    }

    #[test]
    fn tls_settings_are_validated_and_name_their_ssm_parameters() {
        let ca = some_ca_pem();
        let with = |tls: serde_json::Value| {
            doc(
                json!({"id": "bank", "url": "https://bank.example/hook", "retry_policy": "idnow", "tls": tls}),
            )
        };
        let ok = with(json!({"ca_ssm": "/kyc/bank/ca", "public_roots": false,
            "client_certificate": {"cert_ssm": "/kyc/bank/cert", "key_ssm": "/kyc/bank/key"}}))
        .unwrap();
        assert_eq!(
            ok.ssm_secret_names(),
            ["/kyc/bank/ca", "/kyc/bank/cert", "/kyc/bank/key"]
        );
        let tls = ok.get("bank").unwrap().tls.clone().unwrap();
        assert!(!tls.public_roots);
        let inline = with(json!({"ca_pem": ca})).unwrap();
        assert!(
            inline
                .get("bank")
                .unwrap()
                .tls
                .as_ref()
                .unwrap()
                .public_roots
        );
        assert!(inline.ssm_secret_names().is_empty());

        let cases = [
            (json!({}), "destinations[0].tls", "set a CA"),
            (
                json!({"public_roots": false}),
                "destinations[0].tls.public_roots",
                "needs the destination's CA",
            ),
            (
                json!({"ca_pem": ca, "ca_ssm": "/x"}),
                "destinations[0].tls.ca",
                "at most one",
            ),
            (
                json!({"ca_pem": "not a certificate"}),
                "destinations[0].tls.ca",
                "no PEM certificate",
            ),
            (
                json!({"ca_pem": "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n"}),
                "destinations[0].tls.ca",
                "not a valid X.509 certificate",
            ),
            (
                json!({"client_certificate": {"key_ssm": "/k"}}),
                "destinations[0].tls.client_certificate",
                "set one of cert_pem and cert_ssm",
            ),
            (
                json!({"client_certificate": {"cert_ssm": "/c", "key_ssm": " "}}),
                "destinations[0].tls.client_certificate.key_ssm",
                "must name",
            ),
            (
                json!({"client_certificate": {"cert_ssm": "/c", "key_ssm": "-----BEGIN PRIVATE KEY-----\nMIIE"}}),
                "destinations[0].tls.client_certificate.key_ssm",
                "the value is not shown",
            ),
            (
                json!({"ca_ssm": "-----BEGIN CERTIFICATE-----"}),
                "destinations[0].tls.ca",
                "must name an SSM parameter",
            ),
        ];
        for (tls, var, message) in cases {
            let e = with(tls.clone()).unwrap_err();
            assert_eq!(e.var, var, "{tls}: {e}");
            assert!(e.message.contains(message), "{tls}: {e}");
        }
        // A private key is never accepted in the document, only by SSM name.
        let e = with(json!({"client_certificate": {"cert_ssm": "/c", "key_pem": "-----BEGIN PRIVATE KEY-----"}}))
            .unwrap_err();
        assert!(e.message.contains("unknown field `key_pem`"), "{e}");
        assert!(!e.message.contains("BEGIN PRIVATE KEY"), "{e}");
        // TLS settings need an https URL (plain http to loopback is for local runs only).
        let e = Destinations::parse_with(
            &json!({"destinations": [{"id": "a", "url": "http://127.0.0.1:9/x", "retry_policy": "idnow", "tls": {"ca_pem": ca}}]})
                .to_string(),
            OutboundPolicy::local(),
        )
        .unwrap_err();
        assert_eq!(e.var, "destinations[0].tls", "{e}");
    }

    #[test]
    fn filters_select_by_provider_and_event_type() {
        let d = doc(
            json!({"id": "a", "url": "https://x.example", "retry_policy": "incode",
            "providers": ["idnow"], "event_types": ["session.completed"]}),
        )
        .unwrap();
        let mut env: Envelope = serde_json::from_value(json!({
            "v": 1, "provider": "idnow", "event_type": "session.completed", "event_id": "e",
            "payload_hash": "h", "received_at_ms": 0, "verified_by": [], "content_type": "application/json",
            "raw_body": "{}", "event": {}
        }))
        .unwrap();
        assert_eq!(d.matching(&env).count(), 1);
        env.event_type = "session.created".into();
        assert_eq!(d.matching(&env).count(), 0);
        env.event_type = "session.completed".into();
        env.provider = Provider::Incode;
        assert_eq!(d.matching(&env).count(), 0);
    }

    #[cfg(feature = "aws")]
    #[test]
    fn exactly_one_source_is_required() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let none: Option<&crate::aws::ssm::SsmSecrets> = None;
        let e = rt
            .block_on(Destinations::from_env(&Env::default(), none))
            .unwrap_err();
        assert_eq!(e.var, "DESTINATIONS_CONFIG");
        let env = Env::from_pairs([
            ("DESTINATIONS_CONFIG", "{\"destinations\": []}"),
            ("DESTINATIONS_CONFIG_FILE", "/x"),
        ]);
        assert!(rt.block_on(Destinations::from_env(&env, none)).is_err());
    }
}
