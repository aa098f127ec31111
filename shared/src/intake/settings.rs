//! The receiver's configuration, parsed and validated in one place ([`ReceiverSettings::from_env`]):
//! every variable of docs/configuration.md § Receiver, each error naming its variable. What is
//! built from it ([`super::Intake::new`]) cannot fail on configuration any more.

use crate::config::{ConfigError, Env, OutboundPolicy, validate_outbound_url};
use crate::verification::ip::SourcePolicy;
use crate::verification::jwt::MIN_HS256_SECRET_LEN;
use crate::verification::oauth::OAuthSettings;
use crate::verification::shared_header::SharedHeader;

/// Secret variables of the receiver (each may instead be given as `<NAME>_SSM`). The `_PREVIOUS`
/// ones hold the value being rotated out (docs/deploy.md § Rotating secrets).
pub const RECEIVER_SECRETS: &[&str] = &[
    "INCODE_SHARED_HEADER_VALUE",
    "INCODE_SHARED_HEADER_VALUE_PREVIOUS",
    "OAUTH_CLIENT_SECRET",
    "OAUTH_CLIENT_SECRET_PREVIOUS",
    "OAUTH_TOKEN_SIGNING_KEY",
    "OAUTH_TOKEN_SIGNING_KEY_PREVIOUS",
    "IDNOW_JWT_SECRET",
    "IDNOW_JWT_SECRET_PREVIOUS",
    "IDNOW_SHARED_HEADER_VALUE",
    "IDNOW_SHARED_HEADER_VALUE_PREVIOUS",
];

/// The JWKS must not be fetched more often than this, whatever `IDNOW_JWKS_MIN_REFRESH_SECONDS`
/// says: an unknown `kid` triggers a fetch, and a flood of made-up `kid`s must not become a flood of
/// requests to IDnow.
pub const MIN_JWKS_REFRESH_SECS: u64 = 10;

#[derive(Debug)]
pub struct ReceiverSettings {
    pub ingest_queue_url: String,
    pub incode: Option<IncodeSettings>,
    pub idnow: Option<IdnowSettings>,
    /// The token endpoint (Incode's OAuth client credentials).
    pub oauth: Option<OAuthSettings>,
}

#[derive(Debug)]
pub struct IncodeSettings {
    pub source: SourcePolicy,
    pub shared_header: Option<SharedHeader>,
    pub require_bearer: bool,
}

#[derive(Debug)]
pub struct IdnowSettings {
    pub source: SourcePolicy,
    pub shared_header: Option<SharedHeader>,
    pub jwt: Option<JwtSettings>,
}

pub struct JwtSettings {
    pub jwks: Option<JwksSettings>,
    /// The current HS256 secret, then the previous one during a rotation.
    pub hs256_secrets: Vec<String>,
    pub issuer: String,
    pub audience: String,
    pub leeway_secs: u64,
}

impl std::fmt::Debug for JwtSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtSettings")
            .field("jwks", &self.jwks)
            .field("hs256_secrets", &self.hs256_secrets.len())
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("leeway_secs", &self.leeway_secs)
            .finish()
    }
}

#[derive(Debug)]
pub struct JwksSettings {
    pub url: reqwest::Url,
    pub min_refresh_secs: u64,
    pub max_age_secs: u64,
}

/// A secret and, during a rotation, its previous value: `(variable, value)` pairs, current first.
fn with_previous(env: &Env, var: &str) -> Vec<(String, String)> {
    let previous = format!("{var}_PREVIOUS");
    [var, previous.as_str()]
        .into_iter()
        .filter_map(|v| env.get(v).map(|value| (v.to_string(), value.to_string())))
        .collect()
}

fn shared_header(env: &Env, prefix: &str) -> Result<Option<SharedHeader>, ConfigError> {
    let name_var = format!("{prefix}_SHARED_HEADER_NAME");
    let value_var = format!("{prefix}_SHARED_HEADER_VALUE");
    let values = with_previous(env, &value_var);
    if env.get(&value_var).is_none() && !values.is_empty() {
        return Err(ConfigError::new(
            format!("{value_var}_PREVIOUS"),
            format!(
                "is set without {value_var}: the previous value only accompanies a current one"
            ),
        ));
    }
    match (env.get(&name_var), values.is_empty()) {
        (None, true) => Ok(None),
        (Some(name), false) => {
            let values: Vec<(&str, &str)> = values
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            SharedHeader::new(&name_var, name, &values).map(Some)
        }
        (None, false) => Err(ConfigError::new(
            name_var,
            "is required when the header value is set",
        )),
        (Some(_), true) => Err(ConfigError::new(
            value_var,
            "is required when the header name is set (or its _SSM form)",
        )),
    }
}

impl ReceiverSettings {
    /// Reads and validates the receiver's (secret-resolved) environment; see docs/configuration.md.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let ingest_queue_url = env.require("INGEST_QUEUE_URL")?.to_string();
        let outbound = OutboundPolicy::from_env(env)?;

        for var in [
            "OAUTH_CLIENT_SECRET",
            "OAUTH_TOKEN_SIGNING_KEY",
            "IDNOW_JWT_SECRET",
        ] {
            if env.get(&format!("{var}_PREVIOUS")).is_some() && env.get(var).is_none() {
                return Err(ConfigError::new(
                    format!("{var}_PREVIOUS"),
                    format!(
                        "is set without {var}: the previous value only accompanies a current one"
                    ),
                ));
            }
        }

        let oauth = match env.get("OAUTH_CLIENT_ID") {
            // Secrets without a client id would silently switch bearer checks off.
            None if env.get("OAUTH_CLIENT_SECRET").is_some()
                || env.get("OAUTH_TOKEN_SIGNING_KEY").is_some() =>
            {
                return Err(ConfigError::new(
                    "OAUTH_CLIENT_ID",
                    "is required when OAUTH_CLIENT_SECRET or OAUTH_TOKEN_SIGNING_KEY is set",
                ));
            }
            None => None,
            Some(client_id) => {
                env.require("OAUTH_CLIENT_SECRET")?;
                env.require("OAUTH_TOKEN_SIGNING_KEY")?;
                let ttl_secs = env.parse_or("OAUTH_TOKEN_TTL_SECONDS", 3600)?;
                if !(60..=86_400).contains(&ttl_secs) {
                    return Err(ConfigError::new(
                        "OAUTH_TOKEN_TTL_SECONDS",
                        "must be between 60 and 86400",
                    ));
                }
                Some(OAuthSettings {
                    client_id: client_id.to_string(),
                    client_secrets: with_previous(env, "OAUTH_CLIENT_SECRET"),
                    signing_keys: with_previous(env, "OAUTH_TOKEN_SIGNING_KEY"),
                    issuer: env
                        .get("OAUTH_ISSUER")
                        .unwrap_or("kyc-webhook-relay")
                        .to_string(),
                    audience: env
                        .get("OAUTH_AUDIENCE")
                        .unwrap_or("incode-webhooks")
                        .to_string(),
                    ttl_secs,
                })
            }
        };

        let incode = if env.flag("INCODE_ENABLED", true)? {
            let source = SourcePolicy::parse(
                "INCODE_ALLOWED_IPS",
                env.get("INCODE_ALLOWED_IPS").unwrap_or("incode-production"),
            )?;
            let require_bearer = env.flag("INCODE_REQUIRE_BEARER_TOKEN", oauth.is_some())?;
            if require_bearer && oauth.is_none() {
                return Err(ConfigError::new(
                    "INCODE_REQUIRE_BEARER_TOKEN",
                    "bearer tokens are required but OAUTH_CLIENT_ID is not set",
                ));
            }
            let shared_header = shared_header(env, "INCODE")?;
            if !source.is_restricted() && shared_header.is_none() && !require_bearer {
                return Err(ConfigError::new(
                    "INCODE_ALLOWED_IPS",
                    "Incode has no verification: with `any` source IP, configure INCODE_SHARED_HEADER_* or OAuth (or set INCODE_ENABLED=false)",
                ));
            }
            Some(IncodeSettings {
                source,
                shared_header,
                require_bearer,
            })
        } else {
            None
        };

        let idnow = if env.flag("IDNOW_ENABLED", true)? {
            let source = SourcePolicy::parse(
                "IDNOW_ALLOWED_IPS",
                env.get("IDNOW_ALLOWED_IPS").ok_or_else(|| {
                    ConfigError::new(
                        "IDNOW_ALLOWED_IPS",
                        "is required: the CIDRs IDnow gave for your account, or `any` (or set IDNOW_ENABLED=false)",
                    )
                })?,
            )?;
            let jwks_url = env
                .get("IDNOW_JWKS_URL")
                .map(|u| validate_outbound_url("IDNOW_JWKS_URL", u, outbound))
                .transpose()?;
            let secrets = with_previous(env, "IDNOW_JWT_SECRET");
            for (var, secret) in &secrets {
                if secret.len() < MIN_HS256_SECRET_LEN {
                    return Err(ConfigError::new(
                        var.as_str(),
                        format!("must be at least {MIN_HS256_SECRET_LEN} bytes for HS256"),
                    ));
                }
            }
            let jwt = if jwks_url.is_some() || !secrets.is_empty() {
                let leeway_secs: u64 = env.parse_or("IDNOW_JWT_LEEWAY_SECONDS", 60)?;
                if leeway_secs > 300 {
                    return Err(ConfigError::new(
                        "IDNOW_JWT_LEEWAY_SECONDS",
                        "must be at most 300",
                    ));
                }
                let jwks = match jwks_url {
                    None => None,
                    Some(url) => {
                        let min_refresh_secs =
                            env.parse_or("IDNOW_JWKS_MIN_REFRESH_SECONDS", 60)?;
                        if min_refresh_secs < MIN_JWKS_REFRESH_SECS {
                            return Err(ConfigError::new(
                                "IDNOW_JWKS_MIN_REFRESH_SECONDS",
                                format!("must be at least {MIN_JWKS_REFRESH_SECS}"),
                            ));
                        }
                        let max_age_secs = env.parse_or("IDNOW_JWKS_MAX_AGE_SECONDS", 3600)?;
                        if max_age_secs < min_refresh_secs {
                            return Err(ConfigError::new(
                                "IDNOW_JWKS_MAX_AGE_SECONDS",
                                "must be at least IDNOW_JWKS_MIN_REFRESH_SECONDS",
                            ));
                        }
                        Some(JwksSettings {
                            url,
                            min_refresh_secs,
                            max_age_secs,
                        })
                    }
                };
                Some(JwtSettings {
                    jwks,
                    hs256_secrets: secrets.into_iter().map(|(_, v)| v).collect(),
                    issuer: env.require("IDNOW_JWT_ISSUER")?.to_string(),
                    audience: env.require("IDNOW_JWT_AUDIENCE")?.to_string(),
                    leeway_secs,
                })
            } else {
                None
            };
            let shared_header = shared_header(env, "IDNOW")?;
            if !source.is_restricted() && shared_header.is_none() && jwt.is_none() {
                return Err(ConfigError::new(
                    "IDNOW_ALLOWED_IPS",
                    "IDnow has no verification: with `any` source IP, configure IDNOW_JWKS_URL, IDNOW_JWT_SECRET or IDNOW_SHARED_HEADER_* (or set IDNOW_ENABLED=false)",
                ));
            }
            Some(IdnowSettings {
                source,
                shared_header,
                jwt,
            })
        } else {
            None
        };

        if incode.is_none() && idnow.is_none() {
            return Err(ConfigError::new(
                "INCODE_ENABLED",
                "both providers are disabled: the receiver would refuse everything",
            ));
        }
        Ok(Self {
            ingest_queue_url,
            incode,
            idnow,
            oauth,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Env {
        Env::from_pairs([
            ("INGEST_QUEUE_URL", "http://127.0.0.1:9/q"),
            ("INCODE_ALLOWED_IPS", "incode-production"),
            ("IDNOW_ENABLED", "false"),
        ])
    }

    #[test]
    fn a_previous_value_without_a_current_one_is_refused() {
        for var in [
            "OAUTH_CLIENT_SECRET_PREVIOUS",
            "IDNOW_JWT_SECRET_PREVIOUS",
            "INCODE_SHARED_HEADER_VALUE_PREVIOUS",
        ] {
            let mut env = base();
            env.set(var, "0123456789abcdef0123456789abcdef-x");
            assert_eq!(ReceiverSettings::from_env(&env).unwrap_err().var, var);
        }
    }

    #[test]
    fn jwks_refresh_has_a_floor() {
        let mut env = base();
        for (k, v) in [
            ("IDNOW_ENABLED", "true"),
            ("IDNOW_ALLOWED_IPS", "any"),
            ("IDNOW_JWKS_URL", "https://idnow.example/jwks.json"),
            ("IDNOW_JWT_ISSUER", "i"),
            ("IDNOW_JWT_AUDIENCE", "a"),
            ("IDNOW_JWKS_MIN_REFRESH_SECONDS", "1"),
        ] {
            env.set(k, v);
        }
        let e = ReceiverSettings::from_env(&env).unwrap_err();
        assert_eq!(e.var, "IDNOW_JWKS_MIN_REFRESH_SECONDS");
        env.set("IDNOW_JWKS_MIN_REFRESH_SECONDS", "60");
        env.set("IDNOW_JWKS_MAX_AGE_SECONDS", "30");
        let e = ReceiverSettings::from_env(&env).unwrap_err();
        assert_eq!(e.var, "IDNOW_JWKS_MAX_AGE_SECONDS");
        env.set("IDNOW_JWKS_MAX_AGE_SECONDS", "3600");
        assert!(ReceiverSettings::from_env(&env).is_ok());
    }
}
