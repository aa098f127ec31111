//! A static header the provider sends with every webhook (Incode's "custom headers", an optional
//! IDnow setting), compared in constant time.

use super::{Rejection, digests_equal, secret_digest};
use crate::config::ConfigError;
use http::{HeaderMap, HeaderName};

#[derive(Clone)]
pub struct SharedHeader {
    name: HeaderName,
    digest: [u8; 32],
}

impl std::fmt::Debug for SharedHeader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedHeader")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl SharedHeader {
    pub fn new(name_var: &str, name: &str, value: &str) -> Result<Self, ConfigError> {
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
            ConfigError::new(name_var, format!("{name:?} is not a valid header name"))
        })?;
        if value.len() < 16 {
            return Err(ConfigError::new(
                name_var.replace("_NAME", "_VALUE"),
                "shared header value must be at least 16 bytes (use a random secret)",
            ));
        }
        Ok(Self {
            name,
            digest: secret_digest(value.as_bytes()),
        })
    }

    pub fn verify(&self, headers: &HeaderMap) -> Result<(), Rejection> {
        let mut values = headers.get_all(&self.name).iter();
        let (Some(value), None) = (values.next(), values.next()) else {
            return Err(Rejection::Unauthorized("shared header missing or repeated"));
        };
        if digests_equal(&secret_digest(value.as_bytes()), &self.digest) {
            Ok(())
        } else {
            Err(Rejection::Unauthorized("shared header mismatch"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn compares_the_value_exactly() {
        let s = SharedHeader::new("N", "X-Webhook-Secret", "0123456789abcdef-secret").unwrap();
        assert!(
            s.verify(&headers(&[("x-webhook-secret", "0123456789abcdef-secret")]))
                .is_ok()
        );
        assert!(
            s.verify(&headers(&[("x-webhook-secret", "0123456789abcdef-secreT")]))
                .is_err()
        );
        assert!(
            s.verify(&headers(&[(
                "x-webhook-secret",
                "0123456789abcdef-secret "
            )]))
            .is_err()
        );
        assert!(s.verify(&headers(&[])).is_err());
        assert!(
            s.verify(&headers(&[
                ("x-webhook-secret", "0123456789abcdef-secret"),
                ("x-webhook-secret", "other")
            ]))
            .is_err()
        );
    }

    #[test]
    fn weak_or_invalid_configuration_is_refused() {
        assert!(SharedHeader::new("N", "X-A", "short").is_err());
        assert!(SharedHeader::new("N", "bad header", "0123456789abcdef").is_err());
    }
}
