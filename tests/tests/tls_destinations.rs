//! HTTPS destinations behind a private CA that require a client certificate (mTLS): the real
//! transport (reqwest + rustls, built per destination from the vault) against a real TLS server on
//! 127.0.0.1 with its own CAs, the client keys and CA bundles read from the emulator's SSM as the
//! dispatcher's cold start reads them, and the dispatcher's classification of every refusal.

use integration_tests::lanes::{self, UndelayedQueue};
use integration_tests::tls_peer::{Ca, Leaf, MtlsPeer, der};
use integration_tests::{LocalAws, consumer_for, dispatcher_for, idnow_envelope, record, records};
use kyc_relay::clock::{Clock, ManualClock, SystemClock};
use kyc_relay::config::OutboundPolicy;
use kyc_relay::delivery::DeliveryJob;
use kyc_relay::destination::Destinations;
use kyc_relay::dispatch::credentials::Vault;
use kyc_relay::dispatch::transport::{HttpTransport, Post, Transport, TransportError};
use kyc_relay::records::{DeliveryStatus, EventKey, RecordReader};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

/// The server's CA, the CA the server accepts client certificates from, and a stranger to both.
struct Pki {
    server_ca: Ca,
    client_ca: Ca,
    other_ca: Ca,
}

impl Pki {
    fn new() -> Self {
        Self {
            server_ca: Ca::new("KYC test server CA"),
            client_ca: Ca::new("KYC test client CA"),
            other_ca: Ca::new("Someone else's CA"),
        }
    }
}

/// The emulator, the PKI, the mTLS server, our client certificate and a stranger's (issued by a CA
/// the server does not trust), their keys stored as SecureStrings under `prefix`.
struct Setup {
    aws: LocalAws,
    pki: Pki,
    peer: MtlsPeer,
    mine: Leaf,
    stranger: Leaf,
    prefix: String,
}

async fn setup() -> Setup {
    let aws = LocalAws::provision().await;
    let pki = Pki::new();
    let peer = MtlsPeer::start(&pki.server_ca.server(), &pki.client_ca).await;
    let mine = pki.client_ca.client("kyc-relay");
    let stranger = pki.other_ca.client("kyc-relay");
    let prefix = format!("/{}/tls", aws.stack);
    aws.put_secure_string(&format!("{prefix}/key"), &mine.key_pem)
        .await;
    aws.put_secure_string(&format!("{prefix}/stranger-key"), &stranger.key_pem)
        .await;
    Setup {
        aws,
        pki,
        peer,
        mine,
        stranger,
        prefix,
    }
}

async fn vault(aws: &LocalAws, doc: &serde_json::Value) -> Result<Vault, String> {
    let destinations = Destinations::parse_with(&doc.to_string(), OutboundPolicy::local())
        .map_err(|e| e.to_string())?;
    let ssm = kyc_relay::aws::ssm::SsmSecrets::new(&aws.sdk);
    Vault::resolve(&destinations, Some(&ssm), Arc::new(SystemClock))
        .await
        .map_err(|e| e.to_string())
}

fn post(destination: &str, url: &str) -> Post {
    Post {
        destination: destination.into(),
        url: url.parse().unwrap(),
        headers: vec![(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        )],
        body: b"{}".to_vec(),
        timeout: Duration::from_secs(5),
        want_body: true,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_is_accepted_with_the_right_pair_and_every_other_pairing_is_refused_as_tls() {
    let Setup {
        aws,
        pki,
        peer,
        mine,
        stranger,
        prefix,
    } = setup().await;
    let url = peer.url("/kyc-events");
    // The CA bundle by SSM name too (a String would do; the same GetParameters reads both).
    aws.put_secure_string(&format!("{prefix}/ca"), &pki.server_ca.pem)
        .await;
    let dest = |id: &str, tls: serde_json::Value| {
        let mut d = json!({"id": id, "url": url, "retry_policy": "idnow"});
        if !tls.is_null() {
            d["tls"] = tls;
        }
        d
    };
    let doc = json!({"destinations": [
        dest("bank", json!({"ca_ssm": format!("{prefix}/ca"), "public_roots": false,
            "client_certificate": {"cert_pem": mine.cert_pem, "key_ssm": format!("{prefix}/key")}})),
        dest("no-cert", json!({"ca_pem": pki.server_ca.pem})),
        dest("wrong-cert", json!({"ca_pem": pki.server_ca.pem,
            "client_certificate": {"cert_pem": stranger.cert_pem, "key_ssm": format!("{prefix}/stranger-key")}})),
        dest("wrong-ca", json!({"ca_pem": pki.other_ca.pem, "public_roots": false,
            "client_certificate": {"cert_pem": mine.cert_pem, "key_ssm": format!("{prefix}/key")}})),
        dest("public-roots", serde_json::Value::Null),
    ]});
    let vault = vault(&aws, &doc).await.expect("vault");
    let transport =
        HttpTransport::build(Duration::from_secs(2), Duration::from_secs(5), &vault).unwrap();

    let reply = transport.post(post("bank", &url)).await.expect("accepted");
    assert_eq!(reply.status, 200);
    assert_eq!(
        peer.accepted(),
        vec![der(&mine.cert_pem)],
        "our certificate was presented"
    );

    let refusal = |id: &'static str| {
        let transport = transport.clone();
        let url = url.clone();
        async move { transport.post(post(id, &url)).await.unwrap_err() }
    };
    // Ours refused: our configuration (not retried); the server's untrusted: its side (retried
    // and counted, like an outage).
    assert_eq!(
        refusal("no-cert").await,
        TransportError::TlsClient("client cert refused: required".into())
    );
    match refusal("wrong-cert").await {
        TransportError::TlsClient(why) => {
            assert!(why.starts_with("client cert refused: "), "{why}")
        }
        other => panic!("{other:?}"),
    }
    for id in ["wrong-ca", "public-roots"] {
        assert_eq!(
            refusal(id).await,
            TransportError::TlsServer("server cert not trusted (unknown issuer)".into()),
            "{id}"
        );
    }
    assert_eq!(
        peer.accepted().len(),
        1,
        "no refused pairing reached the handler"
    );
    assert!(
        peer.refused() >= 2,
        "the server refused the two client certificates"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_key_or_bundle_stops_the_cold_start_naming_the_field_never_the_key() {
    let aws = LocalAws::provision().await;
    let pki = Pki::new();
    let mine = pki.client_ca.client("kyc-relay");
    let other = pki.client_ca.client("someone-else");
    let prefix = format!("/{}/tls", aws.stack);
    aws.put_secure_string(&format!("{prefix}/other-key"), &other.key_pem)
        .await;
    aws.put_secure_string(&format!("{prefix}/not-a-key"), "hunter2")
        .await;
    aws.put_secure_string(&format!("{prefix}/not-a-ca"), "hunter3")
        .await;
    let doc = |tls: serde_json::Value| {
        json!({"destinations": [{"id": "bank", "url": "https://bank.example/hook",
            "retry_policy": "idnow", "tls": tls}]})
    };
    let cases = [
        (
            json!({"client_certificate": {"cert_pem": mine.cert_pem, "key_ssm": format!("{prefix}/other-key")}}),
            "destinations[bank].tls: the private key does not belong to the certificate"
                .to_string(),
        ),
        (
            json!({"client_certificate": {"cert_pem": mine.cert_pem, "key_ssm": format!("{prefix}/not-a-key")}}),
            format!(
                "destinations[bank].tls.client_certificate: SSM parameter {prefix}/not-a-key holds no PEM private key"
            ),
        ),
        (
            json!({"client_certificate": {"cert_pem": mine.cert_pem, "key_ssm": format!("{prefix}/missing")}}),
            format!(
                "destinations[bank].tls.client_certificate: SSM parameter {prefix}/missing not found"
            ),
        ),
        (
            json!({"ca_ssm": format!("{prefix}/not-a-ca")}),
            format!(
                "destinations[bank].tls.ca: SSM parameter {prefix}/not-a-ca holds no PEM certificate"
            ),
        ),
    ];
    for (tls, expected) in cases {
        let err = vault(&aws, &doc(tls.clone()))
            .await
            .err()
            .unwrap_or_else(|| panic!("{tls}"));
        assert!(err.contains(&expected), "{tls}: {err}");
        for secret in [&other.key_pem, "hunter2", "hunter3"] {
            assert!(!err.contains(secret), "the error quotes a secret: {err}");
        }
        assert!(!err.contains("PRIVATE KEY-----"), "{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dispatcher_delivers_over_mtls_and_dead_letters_a_refused_certificate_at_once() {
    let Setup {
        aws,
        pki,
        peer,
        mine,
        stranger,
        prefix,
    } = setup().await;
    let doc = json!({"destinations": [
        {"id": "bank", "url": peer.url("/bank"), "retry_policy": "idnow",
         "tls": {"ca_pem": pki.server_ca.pem, "public_roots": false,
                 "client_certificate": {"cert_pem": mine.cert_pem, "key_ssm": format!("{prefix}/key")}}},
        {"id": "misconfigured", "url": peer.url("/misconfigured"), "retry_policy": "idnow",
         "tls": {"ca_pem": pki.server_ca.pem,
                 "client_certificate": {"cert_pem": stranger.cert_pem, "key_ssm": format!("{prefix}/stranger-key")}}},
    ]})
    .to_string();
    let clock = ManualClock::at_ms(1_795_000_000_000);
    let queue = UndelayedQueue::new(&aws, clock.clone());
    let dispatcher = dispatcher_for(&aws, queue.clone(), &doc, Arc::new(clock.clone())).await;
    let consumer = consumer_for(&aws, &doc, Arc::new(clock.clone()));
    let envelope = idnow_envelope("evt-mtls", "session.completed", "s-mtls", "COMPLETED", 1);
    let failed = consumer
        .process_batch(&[record("m-mtls", &envelope)], clock.now_ms() + 30_000, "b")
        .await;
    assert!(failed.is_empty());

    let handled = lanes::drive(&aws, &dispatcher, &clock, 100, |job| queue.visible_at(job)).await;
    assert_eq!(handled, 2, "one job each, no retry");
    assert_eq!(peer.accepted(), vec![der(&mine.cert_pem)]);

    let event = records(&aws, Arc::new(clock.clone()))
        .event(&EventKey::of(&envelope))
        .await
        .unwrap()
        .expect("event record");
    let delivery = |id: &str| {
        event
            .deliveries
            .iter()
            .find(|d| d.destination == id)
            .unwrap_or_else(|| panic!("{id}"))
            .clone()
    };
    assert_eq!(delivery("bank").status, DeliveryStatus::Delivered);
    let refused = delivery("misconfigured");
    assert_eq!(refused.status, DeliveryStatus::Failed, "{refused:?}");
    assert_eq!(refused.attempts, 1, "{refused:?}");
    assert!(
        refused
            .last_outcome
            .as_deref()
            .is_some_and(|o| o.starts_with("tls: client cert refused: ")),
        "{refused:?}"
    );

    let dead: Vec<DeliveryJob> = aws
        .drain(aws.get("DELIVERY_DLQ_URL"))
        .await
        .iter()
        .map(|m| serde_json::from_str(m.body().unwrap()).unwrap())
        .collect();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].destination_id, "misconfigured");
    let reason = &dead[0].dead_letter.as_ref().unwrap().reason;
    assert!(reason.contains("tls"), "{reason}");
}
