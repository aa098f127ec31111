//! Verification of a webhook's source. Each provider has a set of configured checks; all of them must
//! pass. A check that fails answers 403 (source IP) or 401 (credentials); a check that cannot be
//! performed right now (the JWKS endpoint is down) answers 503 so the provider retries later.

pub mod ip;
pub mod jwks;
pub mod jwt;
pub mod oauth;
pub mod shared_header;

use serde::{Deserialize, Serialize};

/// A check that passed, recorded in the envelope (`verified_by`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Check {
    SourceIp,
    SharedHeader,
    BearerToken,
    JwtRs256,
    JwtHs256,
}

/// Why a request was refused. The reason is logged and returned; it never contains request data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("forbidden: {0}")]
    Forbidden(&'static str),
    #[error("unauthorized: {0}")]
    Unauthorized(&'static str),
    #[error("unavailable: {0}")]
    Unavailable(&'static str),
}

impl Rejection {
    pub fn status(self) -> u16 {
        match self {
            Rejection::Forbidden(_) => 403,
            Rejection::Unauthorized(_) => 401,
            Rejection::Unavailable(_) => 503,
        }
    }

    pub fn reason(self) -> &'static str {
        match self {
            Rejection::Forbidden(r) | Rejection::Unauthorized(r) | Rejection::Unavailable(r) => r,
        }
    }
}

/// Digest used for constant-time comparison of secrets: comparing fixed-size digests hides the
/// secret's length as well as its content.
pub(crate) fn secret_digest(value: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(value).into()
}

pub(crate) fn digests_equal(a: &[u8; 32], b: &[u8; 32]) -> bool {
    use subtle::ConstantTimeEq;
    a.ct_eq(b).into()
}
