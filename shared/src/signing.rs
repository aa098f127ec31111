//! Standard Webhooks signing of outgoing requests (<https://www.standardwebhooks.com>): headers
//! `webhook-id`, `webhook-timestamp` (Unix seconds) and `webhook-signature: v1,<base64 sig>` where
//! sig = HMAC-SHA256(key, "{id}.{timestamp}.{body}") and the key is the base64 part of a
//! `whsec_...` secret. Destinations verify with any Standard Webhooks library.
//!
//! During a rotation a destination has several secrets ([`Signer`]): every request then carries one
//! `v1,` signature per secret, space-separated, as the specification allows, so the destination
//! verifies with whichever secret it holds.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

#[derive(Clone)]
pub struct SigningSecret(Vec<u8>);

impl std::fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningSecret(..)")
    }
}

impl SigningSecret {
    pub fn parse(secret: &str) -> Result<Self, String> {
        let encoded = secret
            .strip_prefix("whsec_")
            .ok_or_else(|| "must start with whsec_".to_string())?;
        let key = STANDARD
            .decode(encoded)
            .map_err(|_| "the part after whsec_ must be base64".to_string())?;
        if !(24..=64).contains(&key.len()) {
            return Err("the key must be 24 to 64 bytes".into());
        }
        Ok(Self(key))
    }

    /// The `webhook-signature` header value.
    pub fn sign(&self, msg_id: &str, timestamp: u64, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(msg_id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }
}

/// The secrets one destination is signed with: one, or several during a rotation (current first).
#[derive(Clone, Debug)]
pub struct Signer(Vec<SigningSecret>);

impl Signer {
    pub fn new(secrets: Vec<SigningSecret>) -> Self {
        Self(secrets)
    }

    /// The `webhook-signature` header value: `v1,<sig>` for each secret, separated by spaces.
    pub fn sign(&self, msg_id: &str, timestamp: u64, body: &[u8]) -> String {
        self.0
            .iter()
            .map(|s| s.sign(msg_id, timestamp, body))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_specifications_example() {
        // The example of the Standard Webhooks specification.
        let s = SigningSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let sig = s.sign(
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn refuses_malformed_secrets() {
        assert!(SigningSecret::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_err());
        assert!(SigningSecret::parse("whsec_!!!").is_err());
        assert!(SigningSecret::parse("whsec_c2hvcnQ=").is_err());
    }

    #[test]
    fn several_secrets_give_one_signature_each_space_separated() {
        let a = SigningSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let b = SigningSecret::parse("whsec_c2VjcmV0LWtleS0wMTIzNDU2Nzg5YWJjZGVm").unwrap();
        let body = br#"{"test": 2432232314}"#;
        let one = Signer::new(vec![a.clone()]).sign("msg_1", 1614265330, body);
        assert_eq!(one, a.sign("msg_1", 1614265330, body));
        let two = Signer::new(vec![a.clone(), b.clone()]).sign("msg_1", 1614265330, body);
        assert_eq!(
            two,
            format!(
                "{} {}",
                a.sign("msg_1", 1614265330, body),
                b.sign("msg_1", 1614265330, body)
            )
        );
    }
}
