//! A static header the provider sends with every webhook (Incode's "custom headers", an optional
//! IDnow setting), compared in constant time. During a rotation two values are accepted: the current
//! one and the previous one (`*_SHARED_HEADER_VALUE_PREVIOUS`), so the provider's dashboard and the
//! relay need not change at the same instant.

use super::{Rejection, digests_equal, secret_digest};
use crate::config::ConfigError;
use http::{HeaderMap, HeaderName};

#[derive(Clone)]
pub struct SharedHeader {
    name: HeaderName,
    /// The current value's digest, then the previous value's during a rotation.
    digests: Vec<[u8; 32]>,
}

impl std::fmt::Debug for SharedHeader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedHeader")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl SharedHeader {
    /// `values`: (variable, value) pairs, the current value first, then the previous one.
    pub fn new(name_var: &str, name: &str, values: &[(&str, &str)]) -> Result<Self, ConfigError> {
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
            ConfigError::new(name_var, format!("{name:?} is not a valid header name"))
        })?;
        let mut digests = Vec::with_capacity(values.len());
        for (var, value) in values {
            if value.len() < 16 {
                return Err(ConfigError::new(
                    *var,
                    "shared header value must be at least 16 bytes (use a random secret)",
                ));
            }
            digests.push(secret_digest(value.as_bytes()));
        }
        Ok(Self { name, digests })
    }

    pub fn verify(&self, headers: &HeaderMap) -> Result<(), Rejection> {
        let mut values = headers.get_all(&self.name).iter();
        let (Some(value), None) = (values.next(), values.next()) else {
            return Err(Rejection::Unauthorized("shared header missing or repeated"));
        };
        let digest = secret_digest(value.as_bytes());
        // Every accepted value is compared (no early exit): the timing does not tell which matched.
        let matched = self
            .digests
            .iter()
            .fold(false, |acc, d| acc | digests_equal(&digest, d));
        if matched {
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
        let s = SharedHeader::new("N", "X-Webhook-Secret", &[("V", "0123456789abcdef-secret")])
            .unwrap();
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
    fn during_a_rotation_the_current_and_the_previous_value_pass() {
        let s = SharedHeader::new(
            "N",
            "X-Webhook-Secret",
            &[
                ("V", "new-0123456789abcdef"),
                ("V_PREVIOUS", "old-0123456789abcdef"),
            ],
        )
        .unwrap();
        assert!(
            s.verify(&headers(&[("x-webhook-secret", "new-0123456789abcdef")]))
                .is_ok()
        );
        assert!(
            s.verify(&headers(&[("x-webhook-secret", "old-0123456789abcdef")]))
                .is_ok()
        );
        assert!(
            s.verify(&headers(&[("x-webhook-secret", "other-0123456789abcdef")]))
                .is_err()
        );
    }

    #[test]
    fn weak_or_invalid_configuration_is_refused() {
        assert!(SharedHeader::new("N", "X-A", &[("V", "short")]).is_err());
        let e = SharedHeader::new(
            "N",
            "X-A",
            &[("V", "0123456789abcdef"), ("V_PREVIOUS", "short")],
        )
        .unwrap_err();
        assert_eq!(e.var, "V_PREVIOUS");
        assert!(SharedHeader::new("N", "bad header", &[("V", "0123456789abcdef")]).is_err());
    }
}
