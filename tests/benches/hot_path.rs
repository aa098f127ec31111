//! Receiver hot path (route, verify, parse, build the envelope) in microseconds, without the network.
//!
//! `cargo bench -p integration-tests --bench hot_path` (no emulator needed). Plain `Instant` timing:
//! a warm-up, then every iteration timed on its own; median, p99 and mean in ns per request.
//!
//! Variants per case:
//! - `core`:    `Intake::handle` on a prebuilt `InboundRequest`, queue = no-op.
//! - `core+ser`: the same, the queue serializes the envelope to JSON as the SQS adapter does
//!   (everything the receiver does on the CPU except the SDK's request signing and I/O).
//! - `adapter`: parsing the API Gateway event JSON + `apigw::handle` (+ serialization): what one
//!   invocation costs inside the process, minus the Runtime API.
//!
//! Logging: the production JSON subscriber (info level, like `telemetry::init`) writing to a sink,
//! so the accepted/refused log line's formatting is included. `BENCH_NO_LOG=1` leaves it out.
//! `BENCH_SECS` (default 1.5) is the time budget per line.

use integration_tests::{local_env, repo_root};
use kyc_relay::aws::apigw;
use kyc_relay::clock::SystemClock;
use kyc_relay::envelope::Envelope;
use kyc_relay::intake::{InboundRequest, Intake};
use kyc_relay::queue::{IngestQueue, QueueError};
use std::hint::black_box;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

struct NoopQueue;

impl IngestQueue for NoopQueue {
    async fn enqueue(&self, envelope: &Envelope) -> Result<(), QueueError> {
        black_box(envelope);
        Ok(())
    }
}

/// What `SqsIngestQueue::enqueue` does before the SDK call.
struct SerializingQueue;

impl IngestQueue for SerializingQueue {
    async fn enqueue(&self, envelope: &Envelope) -> Result<(), QueueError> {
        let body = serde_json::to_string(envelope).map_err(|e| QueueError(e.to_string()))?;
        black_box(kyc_relay::aws::sqs::sqs_safe_json(body));
        Ok(())
    }
}

/// A JWKS endpoint: answers every request with events/keys/jwks.json; counts the requests.
fn serve_jwks() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
    let body = std::fs::read(repo_root().join("events/keys/jwks.json")).expect("jwks.json");
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            counter.fetch_add(1, Ordering::SeqCst);
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(&body);
        }
    });
    (url, hits)
}

struct Case {
    name: &'static str,
    file: &'static str,
    status: u16,
}

const CASES: &[Case] = &[
    Case {
        name: "incode onboarding: IP + shared header + bearer",
        file: "incode-onboarding-status.json",
        status: 200,
    },
    Case {
        name: "idnow JWT body RS256 (JWKS cached)",
        file: "idnow-jwt-body-rs256.json",
        status: 200,
    },
    Case {
        name: "idnow JWT body HS256",
        file: "idnow-jwt-body-hs256.json",
        status: 200,
    },
    Case {
        name: "refused: 403 disallowed source IP",
        file: "hostile-spoofed-x-forwarded-for.json",
        status: 403,
    },
];

struct Stats {
    n: usize,
    median: u64,
    p99: u64,
    mean: f64,
}

fn stats(mut ns: Vec<u64>) -> Stats {
    ns.sort_unstable();
    let n = ns.len();
    Stats {
        n,
        median: ns[n / 2],
        p99: ns[(n * 99 / 100).min(n - 1)],
        mean: ns.iter().sum::<u64>() as f64 / n as f64,
    }
}

/// Runs `op` for a warm-up, then times each call until `budget` is spent (at least 1,000 calls).
async fn measure<F, Fut>(budget: Duration, mut op: F) -> Stats
where
    F: FnMut() -> Fut,
    Fut: Future<Output = u16>,
{
    let warm = Instant::now();
    while warm.elapsed() < budget / 5 {
        black_box(op().await);
    }
    let mut samples = Vec::with_capacity(200_000);
    let start = Instant::now();
    while samples.len() < 1_000 || (start.elapsed() < budget && samples.len() < 2_000_000) {
        let t = Instant::now();
        let status = op().await;
        samples.push(t.elapsed().as_nanos() as u64);
        black_box(status);
    }
    stats(samples)
}

fn intake<Q: IngestQueue>(queue: Q, jwks_url: &str) -> Intake<Q> {
    let mut env = local_env();
    env.set("IDNOW_JWKS_URL", jwks_url);
    let http = kyc_relay::http_client::build(Duration::from_secs(2), Duration::from_secs(4))
        .expect("http client");
    Intake::from_env(&env, queue, http, Arc::new(SystemClock)).expect("config/local.env is valid")
}

/// The parts of a sample event that `apigw::handle` hands to `Intake::handle`.
struct Parts {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: String,
    base64: bool,
    source_ip: Option<std::net::IpAddr>,
}

fn parts(event: &serde_json::Value) -> Parts {
    let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
    Parts {
        method: text(&event["requestContext"]["http"]["method"]),
        path: text(&event["rawPath"]),
        headers: event["headers"]
            .as_object()
            .map(|h| h.iter().map(|(k, v)| (k.clone(), text(v))).collect())
            .unwrap_or_default(),
        body: text(&event["body"]),
        base64: event["isBase64Encoded"].as_bool().unwrap_or(false),
        source_ip: event["requestContext"]["http"]["sourceIp"]
            .as_str()
            .and_then(|ip| ip.parse().ok()),
    }
}

fn inbound(p: &Parts) -> InboundRequest<'_> {
    InboundRequest {
        method: &p.method,
        path: &p.path,
        headers: &p.headers,
        body: p.body.as_bytes(),
        body_base64: p.base64,
        source_ip: p.source_ip,
        request_id: Some("sample-request-id"),
    }
}

async fn core<Q: IngestQueue>(intake: &Intake<Q>, p: &Parts, budget: Duration) -> Stats {
    measure(budget, || async {
        intake.handle(black_box(inbound(p))).await.status
    })
    .await
}

fn main() {
    if std::env::var_os("BENCH_NO_LOG").is_none() {
        // As kyc_relay::telemetry::init, but into a sink.
        tracing_subscriber::fmt()
            .json()
            .with_max_level(tracing_subscriber::filter::LevelFilter::INFO)
            .with_current_span(false)
            .with_span_list(false)
            .with_target(false)
            .without_time()
            .with_writer(std::io::sink)
            .init();
    }
    let budget = Duration::from_secs_f64(
        std::env::var("BENCH_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(1.5),
    );
    let (jwks_url, jwks_hits) = serve_jwks();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let noop = intake(NoopQueue, &jwks_url);
        let ser = intake(SerializingQueue, &jwks_url);
        println!(
            "hot_path: {} | logging: {} | budget {:?}/line",
            std::env::consts::ARCH,
            if std::env::var_os("BENCH_NO_LOG").is_none() {
                "JSON to sink"
            } else {
                "off"
            },
            budget
        );
        println!(
            "{:<48} {:<9} {:>9} {:>11} {:>11} {:>11}",
            "case", "variant", "n", "median ns", "p99 ns", "mean ns"
        );
        for case in CASES {
            let text = std::fs::read_to_string(repo_root().join("events/receiver").join(case.file))
                .expect("event");
            let event: serde_json::Value = serde_json::from_str(&text).expect("API Gateway event");
            let req = parts(&event);
            // Checks the expected status on both paths (and fills the JWKS cache) before timing.
            let status = noop.handle(inbound(&req)).await.status;
            assert_eq!(status, case.status, "{}", case.file);
            let probe = apigw::handle(&ser, event.clone()).await;
            assert_eq!(probe.status_code as u16, case.status, "{}", case.file);

            let lines = [
                ("core", core(&noop, &req, budget).await),
                ("core+ser", core(&ser, &req, budget).await),
                (
                    "adapter",
                    measure(budget, || async {
                        let event: serde_json::Value =
                            serde_json::from_str(black_box(&text)).unwrap();
                        apigw::handle(&ser, event).await.status_code as u16
                    })
                    .await,
                ),
            ];
            for (variant, s) in lines {
                println!(
                    "{:<48} {:<9} {:>9} {:>11} {:>11} {:>11.0}",
                    case.name, variant, s.n, s.median, s.p99, s.mean
                );
            }
        }
        println!(
            "JWKS fetched {} time(s) over the whole run: once per Intake (two), then cached",
            jwks_hits.load(Ordering::SeqCst)
        );
    });
}
