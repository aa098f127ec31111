//! The one thing the dispatcher does over the network: hand a delivery to its destination, as a
//! bounded HTTP POST ([`Post`]) or a message to an AWS service ([`Publish`]: an SQS queue, an SNS
//! topic, an EventBridge bus). Behind one small trait so the delivery logic is tested in memory
//! ([`ScriptedTransport`]) and the real clients against real peers: [`HttpTransport`] (reqwest with
//! the guarded resolver of `http_client`) against servers on 127.0.0.1 (`tests/tests/dispatcher.rs`),
//! and `aws::targets` against the emulator (`tests/tests/aws_destinations.rs`).

use super::credentials::Vault;
use crate::destination::AwsTarget;
use http::{HeaderName, HeaderValue};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Responses are read up to this size (a token endpoint's JSON; a destination's body is read only
/// so the connection can be reused) and the rest is dropped with the connection.
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone)]
pub struct Post {
    /// The destination the request is for (its TLS settings apply, also to its token endpoint).
    pub destination: String,
    pub url: reqwest::Url,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Vec<u8>,
    /// The whole exchange, connection to last byte read.
    pub timeout: Duration,
    /// Keep the response body (token endpoints); destination bodies are discarded.
    pub want_body: bool,
}

/// A delivery to an AWS-native target: the body and what the target's consumers filter, order and
/// deduplicate on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    pub destination: String,
    pub target: AwsTarget,
    /// The envelope (JSON) or the provider's body: text either way (a JWT, or JSON).
    pub body: String,
    pub webhook_id: String,
    pub provider: &'static str,
    pub event_type: String,
    pub content_type: String,
    /// FIFO targets' `MessageGroupId`: the session (or the lone event's partition).
    pub group: String,
    pub trace_id: String,
    pub traceparent: String,
    pub timeout: Duration,
}

pub use crate::retry::AwsClass;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}")]
pub struct AwsRefusal {
    /// The service's error code (`AccessDenied`, `KMS.ThrottlingException`, ...), at most 40 bytes.
    pub code: String,
    pub class: AwsClass,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error(transparent)]
    Refused(#[from] AwsRefusal),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub content_type: Option<String>,
    pub retry_after: Option<String>,
    /// Up to [`MAX_RESPONSE_BYTES`] (`None` when not asked for, or when the body was larger).
    pub body: Option<Vec<u8>>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    #[error("timeout")]
    Timeout,
    #[error("connection error")]
    Connect,
    /// Never attempted: the host resolves only to forbidden addresses.
    #[error("refused: {0}")]
    Refused(String),
    /// The server's certificate is not acceptable (untrusted issuer, expired, another host's): the
    /// destination's side, like an outage (an expired certificate is one).
    #[error("tls: {0}")]
    TlsServer(String),
    /// The server refused our client certificate (or wanted one): our configuration, the same for
    /// every attempt until someone changes it.
    #[error("tls: {0}")]
    TlsClient(String),
}

pub trait Transport: Send + Sync {
    fn post(&self, post: Post) -> impl Future<Output = Result<Reply, TransportError>> + Send;

    /// Sends one message to an AWS target; `Ok` once the service accepted it.
    fn publish(&self, publish: Publish) -> impl Future<Output = Result<(), PublishError>> + Send;
}

impl<T: Transport> Transport for std::sync::Arc<T> {
    fn post(&self, post: Post) -> impl Future<Output = Result<Reply, TransportError>> + Send {
        (**self).post(post)
    }

    fn publish(&self, publish: Publish) -> impl Future<Output = Result<(), PublishError>> + Send {
        (**self).publish(publish)
    }
}

/// reqwest, built by `http_client::build` (no redirects, no proxies, forbidden addresses refused):
/// one client for the destinations on the public roots, and one per destination with its own TLS
/// settings (private CA, client certificate), which serves its token endpoint too.
#[derive(Clone)]
pub struct HttpTransport {
    default: reqwest::Client,
    by_destination: Arc<HashMap<String, reqwest::Client>>,
}

impl HttpTransport {
    /// One client for every destination.
    pub fn new(default: reqwest::Client) -> Self {
        Self {
            default,
            by_destination: Arc::default(),
        }
    }

    /// The shared client plus a client per destination with TLS settings (from the vault, which
    /// resolved their certificates and keys), all with the same timeouts.
    pub fn build(
        connect_timeout: Duration,
        timeout: Duration,
        vault: &Vault,
    ) -> reqwest::Result<Self> {
        let default = crate::http_client::build(connect_timeout, timeout)?;
        let by_destination = vault
            .tls_configs()
            .map(|(id, config)| {
                crate::http_client::build_with(connect_timeout, timeout, config.clone())
                    .map(|client| (id.to_string(), client))
            })
            .collect::<reqwest::Result<_>>()?;
        Ok(Self {
            default,
            by_destination: Arc::new(by_destination),
        })
    }

    fn client(&self, destination: &str) -> &reqwest::Client {
        self.by_destination
            .get(destination)
            .unwrap_or(&self.default)
    }
}

impl Transport for HttpTransport {
    async fn post(&self, post: Post) -> Result<Reply, TransportError> {
        let mut request = self
            .client(&post.destination)
            .post(post.url)
            .timeout(post.timeout);
        for (name, value) in post.headers {
            request = request.header(name, value);
        }
        let response = request.body(post.body).send().await.map_err(classify)?;
        let header = |name| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let status = response.status().as_u16();
        let content_type = header(http::header::CONTENT_TYPE);
        let retry_after = header(http::header::RETRY_AFTER);
        // Read (at most MAX_RESPONSE_BYTES) so the connection goes back to the pool. A larger body,
        // or one that breaks off, leaves the reply without a body: the status line and headers
        // arrived, so the answer counts whatever the body did.
        let body = crate::http_client::read_capped(response, MAX_RESPONSE_BYTES)
            .await
            .ok();
        Ok(Reply {
            status,
            content_type,
            retry_after,
            body: body.filter(|_| post.want_body),
        })
    }

    /// HTTP only: AWS targets need `aws::targets::AwsTransport` around this one.
    async fn publish(&self, publish: Publish) -> Result<(), PublishError> {
        Err(TransportError::Refused(format!("no AWS client for {}", publish.target.kind())).into())
    }
}

fn classify(e: reqwest::Error) -> TransportError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(err) = source {
        if let Some(forbidden) = err.downcast_ref::<crate::http_client::ForbiddenAddress>() {
            return TransportError::Refused(forbidden.to_string());
        }
        if let Some(fault) = err
            .downcast_ref::<rustls::Error>()
            .and_then(certificate_fault)
        {
            return fault;
        }
        // rustls' error travels inside an `io::Error`, whose `source()` skips the error it wraps.
        source = match err.downcast_ref::<std::io::Error>() {
            Some(io) => io
                .get_ref()
                .map(|inner| inner as &(dyn std::error::Error + 'static)),
            None => err.source(),
        };
    }
    if e.is_timeout() {
        TransportError::Timeout
    } else {
        TransportError::Connect
    }
}

/// The certificate faults among rustls' errors, described briefly (the attempt history keeps 48
/// bytes, `tls: ` included). Other TLS errors (a reset mid-handshake, a protocol error) stay
/// connection errors.
fn certificate_fault(e: &rustls::Error) -> Option<TransportError> {
    use rustls::AlertDescription as Alert;
    use rustls::CertificateError as Cert;
    let server = |why: &str| Some(TransportError::TlsServer(format!("server cert {why}")));
    match e {
        rustls::Error::InvalidCertificate(why) => match why {
            Cert::UnknownIssuer => server("not trusted (unknown issuer)"),
            Cert::Expired | Cert::ExpiredContext { .. } => server("expired"),
            Cert::NotValidYet | Cert::NotValidYetContext { .. } => server("not yet valid"),
            Cert::Revoked => server("revoked"),
            Cert::NotValidForName | Cert::NotValidForNameContext { .. } => {
                server("not valid for the host")
            }
            Cert::BadSignature | Cert::UnsupportedSignatureAlgorithmContext { .. } => {
                server("badly signed")
            }
            _ => server("invalid"),
        },
        rustls::Error::NoCertificatesPresented => server("missing"),
        rustls::Error::AlertReceived(alert) => {
            let why = match alert {
                Alert::CertificateRequired => "required",
                Alert::UnknownCA => "unknown_ca",
                Alert::BadCertificate => "bad_certificate",
                Alert::CertificateUnknown => "certificate_unknown",
                Alert::CertificateExpired => "expired",
                Alert::CertificateRevoked => "revoked",
                Alert::UnsupportedCertificate => "unsupported",
                Alert::AccessDenied => "access_denied",
                _ => return None,
            };
            Some(TransportError::TlsClient(format!(
                "client cert refused: {why}"
            )))
        }
        _ => None,
    }
}

/// What a [`ScriptedTransport`] does with one request.
#[derive(Debug, Clone)]
pub enum Scripted {
    Reply(Reply),
    Fail(TransportError),
    /// Never answers (the caller's timeout decides).
    Hang,
}

impl Scripted {
    pub fn status(status: u16) -> Self {
        Scripted::Reply(Reply {
            status,
            content_type: Some("application/json".into()),
            retry_after: None,
            body: Some(b"{}".to_vec()),
        })
    }

    pub fn json(status: u16, body: &str) -> Self {
        Scripted::Reply(Reply {
            status,
            content_type: Some("application/json".into()),
            retry_after: None,
            body: Some(body.as_bytes().to_vec()),
        })
    }
}

#[derive(Default)]
struct Script {
    queued: HashMap<String, VecDeque<Scripted>>,
    default: HashMap<String, Scripted>,
    sent: Vec<Post>,
    published: Vec<Publish>,
    publish_answers: HashMap<String, VecDeque<Result<(), PublishError>>>,
}

/// A transport for unit tests: answers per URL from a script (then a default answer), records every
/// request. Unscripted URLs answer 200.
#[derive(Default)]
pub struct ScriptedTransport(Mutex<Script>);

impl ScriptedTransport {
    pub fn then(&self, url: &str, answer: Scripted) -> &Self {
        self.lock()
            .queued
            .entry(url.to_string())
            .or_default()
            .push_back(answer);
        self
    }

    pub fn always(&self, url: &str, answer: Scripted) -> &Self {
        self.lock().default.insert(url.to_string(), answer);
        self
    }

    pub fn sent(&self) -> Vec<Post> {
        self.lock().sent.clone()
    }

    /// The next answer to a publish to this destination (then: accepted).
    pub fn then_publish(&self, destination: &str, answer: Result<(), PublishError>) -> &Self {
        self.lock()
            .publish_answers
            .entry(destination.to_string())
            .or_default()
            .push_back(answer);
        self
    }

    pub fn published(&self) -> Vec<Publish> {
        self.lock().published.clone()
    }

    pub fn sent_to(&self, url: &str) -> Vec<Post> {
        self.lock()
            .sent
            .iter()
            .filter(|p| p.url.as_str() == url)
            .cloned()
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Script> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Transport for ScriptedTransport {
    async fn post(&self, post: Post) -> Result<Reply, TransportError> {
        let timeout = post.timeout;
        let answer = {
            let mut s = self.lock();
            let url = post.url.to_string();
            s.sent.push(post);
            s.queued
                .get_mut(&url)
                .and_then(VecDeque::pop_front)
                .or_else(|| s.default.get(&url).cloned())
                .unwrap_or_else(|| Scripted::status(200))
        };
        match answer {
            Scripted::Reply(r) => Ok(r),
            Scripted::Fail(e) => Err(e),
            Scripted::Hang => {
                tokio::time::sleep(timeout).await;
                Err(TransportError::Timeout)
            }
        }
    }

    async fn publish(&self, publish: Publish) -> Result<(), PublishError> {
        let mut s = self.lock();
        let answer = s
            .publish_answers
            .get_mut(&publish.destination)
            .and_then(VecDeque::pop_front)
            .unwrap_or(Ok(()));
        s.published.push(publish);
        answer
    }
}
