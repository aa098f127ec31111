//! Configuration from environment variables, validated at cold start.
//!
//! Every function reads a snapshot of its environment into an [`Env`], resolves the secrets it names
//! (a variable `X` holds a plain value for local use; `X_SSM` names an SSM SecureString in AWS), and
//! builds typed settings from it. Anything missing or unparsable is a [`ConfigError`] that names the
//! variable: the function stops at init instead of accepting everything.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

#[derive(Debug, thiserror::Error)]
#[error("configuration error: {var}: {message}")]
pub struct ConfigError {
    pub var: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(var: impl Into<String>, message: impl fmt::Display) -> Self {
        Self {
            var: var.into(),
            message: message.to_string(),
        }
    }
}

/// A snapshot of the environment (or a map in tests). Empty values count as unset, because
/// CloudFormation passes an empty string for an unused optional parameter.
#[derive(Debug, Clone, Default)]
pub struct Env {
    vars: HashMap<String, String>,
}

impl Env {
    pub fn from_process() -> Self {
        Self {
            vars: std::env::vars().collect(),
        }
    }

    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        Self {
            vars: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    /// Every variable, as set (tests pass a configuration on to a child process).
    pub fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.vars.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    pub fn set(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.vars.insert(key.into(), value.into());
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.vars
            .get(key)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
    }

    pub fn require(&self, key: &str) -> Result<&str, ConfigError> {
        self.get(key)
            .ok_or_else(|| ConfigError::new(key, "is required but not set"))
    }

    pub fn parse_or<T>(&self, key: &str, default: T) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        match self.get(key) {
            None => Ok(default),
            Some(raw) => raw
                .parse()
                .map_err(|e| ConfigError::new(key, format!("cannot parse {raw:?}: {e}"))),
        }
    }

    pub fn flag(&self, key: &str, default: bool) -> Result<bool, ConfigError> {
        match self.get(key).map(str::to_ascii_lowercase).as_deref() {
            None => Ok(default),
            Some("true" | "1" | "yes") => Ok(true),
            Some("false" | "0" | "no") => Ok(false),
            Some(other) => Err(ConfigError::new(
                key,
                format!("expected true or false, got {other:?}"),
            )),
        }
    }

    /// Names of the SSM parameters that the given secret variables point to (`X_SSM`), by variable.
    /// A secret given both ways is an error: which one wins would be a guess.
    pub fn ssm_secret_refs(&self, keys: &[&str]) -> Result<Vec<(String, String)>, ConfigError> {
        let mut refs = Vec::new();
        for key in keys {
            let ssm_key = format!("{key}_SSM");
            match (self.get(key), self.get(&ssm_key)) {
                (Some(_), Some(_)) => {
                    return Err(ConfigError::new(
                        key.to_string(),
                        format!("set either {key} or {ssm_key}, not both"),
                    ));
                }
                (None, Some(name)) => refs.push((key.to_string(), name.to_string())),
                _ => {}
            }
        }
        Ok(refs)
    }
}

/// Where secrets named by `X_SSM` variables come from (SSM Parameter Store in AWS).
pub trait SecretSource {
    /// Fetches the decrypted values of the named parameters, in one round trip where possible.
    fn fetch(
        &self,
        names: &[String],
    ) -> impl Future<Output = Result<HashMap<String, String>, ConfigError>> + Send;
}

/// Resolves the `X_SSM` secrets among `keys` into plain `X` values of the returned [`Env`].
pub async fn resolve_secrets(
    mut env: Env,
    keys: &[&str],
    source: Option<&impl SecretSource>,
) -> Result<Env, ConfigError> {
    let refs = env.ssm_secret_refs(keys)?;
    if refs.is_empty() {
        return Ok(env);
    }
    let Some(source) = source else {
        return Err(ConfigError::new(
            format!("{}_SSM", refs[0].0),
            "SSM parameters are named but no SSM client is available",
        ));
    };
    let names: Vec<String> = refs.iter().map(|(_, name)| name.clone()).collect();
    let values = source.fetch(&names).await?;
    for (key, name) in refs {
        let value = values.get(&name).ok_or_else(|| {
            ConfigError::new(
                format!("{key}_SSM"),
                format!("SSM parameter {name} not found"),
            )
        })?;
        env.set(key, value.clone());
    }
    Ok(env)
}

/// Where outbound requests (JWKS, destinations, token endpoints) may go, beyond the address guard
/// of [`crate::http_client`] that always applies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboundPolicy {
    /// Plain `http://` to a loopback host. Off unless the local-only switch
    /// [`OutboundPolicy::LOCAL_SWITCH`] is set (config/local.env sets it for local runs and tests):
    /// in AWS nothing legitimate listens on the Lambda's loopback, and `https` is the rule.
    pub allow_http_loopback: bool,
}

impl OutboundPolicy {
    pub const LOCAL_SWITCH: &str = "OUTBOUND_ALLOW_HTTP_LOOPBACK";

    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            allow_http_loopback: env.flag(Self::LOCAL_SWITCH, false)?,
        })
    }

    /// The local runs' and tests' policy (what config/local.env sets).
    pub fn local() -> Self {
        Self {
            allow_http_loopback: true,
        }
    }
}

/// Checks a URL we will call out to: `https`, or `http` to a loopback host when `policy` allows it.
pub fn validate_outbound_url(
    var: &str,
    raw: &str,
    policy: OutboundPolicy,
) -> Result<reqwest::Url, ConfigError> {
    let url =
        reqwest::Url::parse(raw).map_err(|e| ConfigError::new(var, format!("{raw:?}: {e}")))?;
    match url.scheme() {
        "https" => {}
        "http" if is_loopback_host(&url) && policy.allow_http_loopback => {}
        "http" if is_loopback_host(&url) => {
            return Err(ConfigError::new(
                var,
                format!(
                    "scheme \"http\" not allowed: use https (http to a loopback host only with {}=true, for local runs)",
                    OutboundPolicy::LOCAL_SWITCH
                ),
            ));
        }
        other => {
            return Err(ConfigError::new(
                var,
                format!("scheme {other:?} not allowed: use https (http only for loopback hosts)"),
            ));
        }
    }
    if url.host_str().is_none() {
        return Err(ConfigError::new(var, "URL has no host"));
    }
    // An IP literal never reaches the resolver's check: refuse metadata addresses here.
    let literal = match url.host() {
        Some(url::Host::Ipv4(ip)) => Some(std::net::IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => Some(std::net::IpAddr::V6(ip)),
        _ => None,
    };
    if literal.is_some_and(crate::http_client::is_forbidden) {
        return Err(ConfigError::new(
            var,
            "link-local and metadata addresses are not allowed",
        ));
    }
    Ok(url)
}

fn is_loopback_host(url: &reqwest::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_values_count_as_unset() {
        let env = Env::from_pairs([("A", ""), ("B", "  x ")]);
        assert_eq!(env.get("A"), None);
        assert_eq!(env.get("B"), Some("x"));
        assert!(env.require("A").unwrap_err().to_string().contains("A"));
    }

    #[test]
    fn a_secret_given_twice_is_refused() {
        let env = Env::from_pairs([("S", "plain"), ("S_SSM", "/p")]);
        assert!(env.ssm_secret_refs(&["S"]).is_err());
    }

    #[test]
    fn outbound_urls_must_be_https_and_http_loopback_needs_the_local_switch() {
        let strict = OutboundPolicy::default();
        let local = OutboundPolicy::local();
        assert!(validate_outbound_url("U", "https://example.com/x", strict).is_ok());
        for url in [
            "http://127.0.0.1:9/x",
            "http://localhost:9/x",
            "http://[::1]:9/x",
        ] {
            let e = validate_outbound_url("U", url, strict).unwrap_err();
            assert!(
                e.message.contains(OutboundPolicy::LOCAL_SWITCH),
                "{url}: {e}"
            );
            assert!(validate_outbound_url("U", url, local).is_ok(), "{url}");
        }
        for policy in [strict, local] {
            assert!(validate_outbound_url("U", "http://example.com/x", policy).is_err());
            assert!(validate_outbound_url("U", "ftp://127.0.0.1/x", policy).is_err());
            assert!(validate_outbound_url("U", "not a url", policy).is_err());
            for url in [
                "https://169.254.169.254/latest",
                "https://[fd00:ec2::254]/",
                "https://0.0.0.0/",
                "https://0.1.2.3/",
                "https://[::169.254.169.254]/",
                "https://[64:ff9b::a9fe:a9fe]/",
                "https://[::ffff:169.254.169.254]/",
            ] {
                assert!(validate_outbound_url("U", url, policy).is_err(), "{url}");
            }
        }
        let env = Env::from_pairs([(OutboundPolicy::LOCAL_SWITCH, "true")]);
        assert_eq!(OutboundPolicy::from_env(&env).unwrap(), local);
        assert_eq!(OutboundPolicy::from_env(&Env::default()).unwrap(), strict);
    }

    #[test]
    fn flags_are_strict() {
        let env = Env::from_pairs([("F", "maybe")]);
        assert!(env.flag("F", true).is_err());
        assert!(env.flag("G", true).unwrap());
    }
}
