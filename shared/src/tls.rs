//! The trusted root certificates, loaded at most once per process and only when a TLS connection
//! first needs them, for both HTTPS clients (the AWS SDK's and reqwest's).
//!
//! Why: left to themselves, the SDK and reqwest each loaded the platform store at cold start
//! (`rustls-native-certs`: the bundle file *and* every file of the certificate directory), and the
//! SDK parsed it again for every client it built. That was most of the functions' cold start
//! (BENCHMARKS.md). Here one bundle file is read and parsed once, on the first TLS handshake; a
//! function that never opens a TLS connection (a receiver without IDnow's JWKS never uses reqwest)
//! never loads it for that client.
//!
//! Which file: `SSL_CERT_FILE` if set, else the first of [`BUNDLES`] that exists. `provided.al2023`
//! is built from the Amazon Linux 2023 minimal container image, whose `ca-certificates` package
//! follows the Fedora layout (update-ca-trust(8)): the consolidated bundle
//! `/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem`, linked from `/etc/pki/tls/certs/ca-bundle.crt`.
//! If none exists, or the file holds no usable certificate, the platform loader
//! (`rustls-native-certs`, what both clients used before) is the fallback, with a warning. The
//! trust set is the same: on these layouts the certificate directories hold the bundle's
//! certificates (and, on Fedora, `ca-bundle.trust.crt`, whose `TRUSTED CERTIFICATE` blocks neither
//! loader reads).

use rustls::RootCertStore;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

/// CA bundle files, in order of preference (after `SSL_CERT_FILE`).
pub const BUNDLES: &[&str] = &[
    // Amazon Linux 2023 (provided.al2023), Fedora, RHEL: the consolidated output of update-ca-trust.
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    // The same file under its legacy name on those systems.
    "/etc/pki/tls/certs/ca-bundle.crt",
    // Debian, Ubuntu (local runs and CI).
    "/etc/ssl/certs/ca-certificates.crt",
];

/// Where the trusted roots came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Bundle(PathBuf),
    /// `rustls-native-certs`: `SSL_CERT_FILE`/`SSL_CERT_DIR`, or its probe of the usual locations.
    Platform,
}

/// The trusted roots: the store rustls verifies with, and the accepted certificates themselves
/// (the SDK's TLS connector takes PEM, see `aws::sdk_config`).
pub struct Roots {
    pub store: Arc<RootCertStore>,
    pub certs: Vec<CertificateDer<'static>>,
    pub source: Source,
}

/// Loads the roots from the first readable bundle of `candidates` holding at least one usable
/// certificate, else from the platform loader.
pub fn load(candidates: &[PathBuf]) -> Roots {
    for path in candidates {
        let Ok(pem) = std::fs::read(path) else {
            continue;
        };
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
            .filter_map(Result::ok)
            .collect();
        if let Some(roots) = accept(certs, Source::Bundle(path.clone())) {
            return roots;
        }
        tracing::warn!(path = %path.display(), "CA bundle holds no usable certificate: trying the next");
    }
    let loaded = rustls_native_certs::load_native_certs();
    for error in &loaded.errors {
        tracing::warn!(%error, "loading the platform's CA certificates");
    }
    accept(loaded.certs, Source::Platform).unwrap_or_else(|| {
        tracing::error!("no trusted root certificate found: every TLS connection will fail");
        Roots {
            store: Arc::new(RootCertStore::empty()),
            certs: Vec::new(),
            source: Source::Platform,
        }
    })
}

/// The store of the certificates rustls can use as trust anchors (others are skipped, as the
/// platform loader does), or `None` if there is none.
fn accept(certs: Vec<CertificateDer<'static>>, source: Source) -> Option<Roots> {
    let mut store = RootCertStore::empty();
    let mut accepted = Vec::with_capacity(certs.len());
    for cert in certs {
        if store.add(cert.clone()).is_ok() {
            accepted.push(cert);
        }
    }
    (!accepted.is_empty()).then(|| Roots {
        store: Arc::new(store),
        certs: accepted,
        source,
    })
}

/// `SSL_CERT_FILE` (if set), then [`BUNDLES`].
pub fn candidates() -> Vec<PathBuf> {
    std::env::var_os("SSL_CERT_FILE")
        .map(PathBuf::from)
        .into_iter()
        .chain(BUNDLES.iter().map(PathBuf::from))
        .collect()
}

/// This process's roots, loaded on first call.
pub fn roots() -> &'static Roots {
    static ROOTS: OnceLock<Roots> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let roots = load(&candidates());
        match &roots.source {
            Source::Bundle(path) => tracing::debug!(path = %path.display(), certificates = roots.certs.len(), "trusted roots loaded"),
            Source::Platform => tracing::warn!(
                certificates = roots.certs.len(),
                candidates = ?BUNDLES,
                "no CA bundle at the expected paths: trusted roots loaded from the platform's store"
            ),
        }
        roots
    })
}

/// The roots as one PEM document, for clients that take PEM.
pub fn roots_pem() -> Vec<u8> {
    use base64::Engine;
    let mut out = Vec::with_capacity(roots().certs.iter().map(|c| c.len() * 4 / 3 + 64).sum());
    for cert in &roots().certs {
        out.extend_from_slice(b"-----BEGIN CERTIFICATE-----\n");
        out.extend_from_slice(
            base64::engine::general_purpose::STANDARD
                .encode(cert.as_ref())
                .as_bytes(),
        );
        out.extend_from_slice(b"\n-----END CERTIFICATE-----\n");
    }
    out
}

/// The crypto provider of every TLS connection (aws-lc-rs, as the SDK and jsonwebtoken use).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A rustls client configuration (TLS 1.3 as the workspace's rustls features allow, ALPN
/// `http/1.1`) whose certificate verifier loads the roots on the first handshake.
pub fn client_config() -> rustls::ClientConfig {
    destination_config(Trust::default(), None).expect("public roots and no client certificate")
}

/// Which certificates a destination's server certificate may chain to.
#[derive(Debug, Clone, Default)]
pub struct Trust {
    /// The destination's own CA bundle (a private CA), if any.
    pub extra: Vec<CertificateDer<'static>>,
    /// Whether the public roots ([`roots`]) are trusted as well. `false` needs `extra`.
    pub private_only: bool,
}

/// A client certificate chain (end entity first) and its private key.
pub struct Identity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

/// The rustls configuration of one destination: its trust anchors and, for mTLS, the identity
/// presented on every connection. Errors name what is wrong without quoting key material.
pub fn destination_config(
    trust: Trust,
    identity: Option<Identity>,
) -> Result<rustls::ClientConfig, String> {
    if trust.private_only && trust.extra.is_empty() {
        return Err("trusting only a private CA needs its certificate".into());
    }
    let provider = provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("the provider supports the default protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(DeferredVerifier::with_trust(provider, trust)));
    let mut config = match identity {
        None => builder.with_no_client_auth(),
        // Checks that the key is usable and that it belongs to the certificate.
        Some(Identity { chain, key }) => {
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| match e {
                    rustls::Error::InconsistentKeys(_) => {
                        "the private key does not belong to the certificate".to_string()
                    }
                    other => format!("unusable client certificate or key: {other}"),
                })?
        }
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The certificates of a PEM document: at least one, and every `CERTIFICATE` block well-formed.
pub fn parse_certificates(pem: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| "not a PEM certificate bundle".to_string())?;
    if certs.is_empty() {
        return Err("holds no PEM certificate".into());
    }
    // A trust anchor rustls cannot use would only fail at the first handshake: refuse it here.
    for (i, cert) in certs.iter().enumerate() {
        webpki_anchor(cert)
            .map_err(|_| format!("certificate {} is not a valid X.509 certificate", i + 1))?;
    }
    Ok(certs)
}

fn webpki_anchor(cert: &CertificateDer<'_>) -> Result<(), rustls::Error> {
    RootCertStore::empty().add(cert.clone().into_owned())
}

/// A PEM private key (PKCS#8, PKCS#1 RSA or SEC1 EC). The error never quotes the input.
pub fn parse_private_key(pem: &str) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes())
        .map_err(|_| "holds no PEM private key (PKCS#8, PKCS#1 or SEC1)".to_string())
}

/// rustls' WebPKI verifier over [`roots`] (and a destination's own CA), built on first use.
/// Signature checks of the handshake need no roots and are answered at once, exactly as
/// `WebPkiServerVerifier` answers them.
#[derive(Debug)]
pub struct DeferredVerifier {
    provider: Arc<CryptoProvider>,
    trust: Trust,
    inner: OnceLock<Result<Arc<WebPkiServerVerifier>, String>>,
}

impl DeferredVerifier {
    pub fn new(provider: Arc<CryptoProvider>) -> Self {
        Self::with_trust(provider, Trust::default())
    }

    pub fn with_trust(provider: Arc<CryptoProvider>, trust: Trust) -> Self {
        Self {
            provider,
            trust,
            inner: OnceLock::new(),
        }
    }

    fn inner(&self) -> Result<&Arc<WebPkiServerVerifier>, rustls::Error> {
        self.inner
            .get_or_init(|| {
                let store = if self.trust.extra.is_empty() {
                    roots().store.clone()
                } else {
                    // A private CA: the public roots are loaded (once per process) only when
                    // trusted as well.
                    let mut store = if self.trust.private_only {
                        RootCertStore::empty()
                    } else {
                        (*roots().store).clone()
                    };
                    // Every one was checked when the document was read (`parse_certificates`).
                    store.add_parsable_certificates(self.trust.extra.iter().cloned());
                    Arc::new(store)
                };
                WebPkiServerVerifier::builder_with_provider(store, self.provider.clone())
                    .build()
                    .map_err(|e| e.to_string())
            })
            .as_ref()
            .map_err(|e| rustls::Error::General(format!("no trusted root certificates: {e}")))
    }
}

impl ServerCertVerifier for DeferredVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner()?
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn system_bundle() -> PathBuf {
        BUNDLES
            .iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .expect("a CA bundle at one of the expected paths on the test machine")
    }

    #[test]
    fn the_first_readable_bundle_is_used() {
        let bundle = system_bundle();
        let roots = load(&[PathBuf::from("/nonexistent/ca.pem"), bundle.clone()]);
        assert_eq!(roots.source, Source::Bundle(bundle));
        assert!(roots.certs.len() > 50, "{}", roots.certs.len());
        assert_eq!(roots.store.len(), roots.certs.len());
    }

    #[test]
    fn without_a_bundle_the_platform_store_is_loaded() {
        // The fallback provided.al2023 would take if its image ever moved the bundle.
        let roots = load(&[PathBuf::from("/nonexistent/ca.pem")]);
        assert_eq!(roots.source, Source::Platform);
        assert!(roots.certs.len() > 50, "{}", roots.certs.len());
    }

    #[test]
    fn a_bundle_without_certificates_is_skipped() {
        let dir = std::env::temp_dir().join(format!("kyc-relay-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, b"not a certificate\n").unwrap();
        let garbled = dir.join("garbled.pem");
        std::fs::write(
            &garbled,
            b"-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let bundle = system_bundle();
        let roots = load(&[empty, garbled, bundle.clone()]);
        assert_eq!(roots.source, Source::Bundle(bundle));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn the_pem_for_the_sdk_holds_exactly_the_accepted_roots() {
        let pem = roots_pem();
        let parsed: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(parsed, roots().certs);
    }

    #[test]
    fn the_verifier_checks_against_the_roots() {
        let verifier = DeferredVerifier::new(provider());
        // Not a certificate of any trusted root: refused (after loading the roots), never accepted.
        let err = verifier
            .verify_server_cert(
                &CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x01]),
                &[],
                &ServerName::try_from("example.com").unwrap(),
                &[],
                UnixTime::now(),
            )
            .unwrap_err();
        assert!(!matches!(err, rustls::Error::General(_)), "{err}");
        assert!(!verifier.supported_verify_schemes().is_empty());
    }
}
