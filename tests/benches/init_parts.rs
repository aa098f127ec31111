//! Where the receiver's init time goes: each step of `functions/receiver/src/main.rs::init` timed
//! once in a fresh process (a cold start happens once per process), repeated in N child processes.
//!
//! `cargo bench -p integration-tests --bench init_parts` (no emulator, no network: nothing here makes
//! an AWS call). Variants, each in its own children:
//! - `default`: as main.rs today: `aws_config::load_from_env()`;
//! - `env-credentials`: `aws_config::defaults(..)` with the environment credentials provider (what
//!   Lambda provides) instead of the default chain, which builds an STS client for web identity;
//! - `amazon-roots`: as `env-credentials`, and the SDK's HTTPS client trusts only the Amazon Trust
//!   Services roots (5 PEMs, read here from /etc/ssl/certs; a build would embed them) instead of
//!   loading the whole system store.
//!
//! Steps: tokio runtime, tracing init, SDK config, SQS client, reqwest client
//! (`kyc_relay::http_client::build`), `Intake::from_env`. The children get a Lambda-like environment
//! (config/local.env, no SSL_CERT_* variables unless `BENCH_SSL_CERT_FILE` is set).
//! `BENCH_N` (default 30) children per variant.

use integration_tests::repo_root;
use kyc_relay::aws::sqs::SqsIngestQueue;
use kyc_relay::clock::SystemClock;
use kyc_relay::config::Env;
use kyc_relay::intake::Intake;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

const STEPS: &[&str] = &[
    "tokio runtime",
    "tracing init",
    "SDK config",
    "SQS client",
    "reqwest client",
    "Intake::from_env",
    "total",
];

fn child(variant: &str) {
    let start = Instant::now();
    let mut marks = Vec::new();
    let mut lap = Instant::now();
    let mut mark = |marks: &mut Vec<u128>| {
        marks.push(lap.elapsed().as_micros());
        lap = Instant::now();
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    mark(&mut marks);
    rt.block_on(async {
        kyc_relay::telemetry::init();
        mark(&mut marks);
        let sdk = match variant {
            "default" => aws_config::load_from_env().await,
            "env-credentials" => {
                aws_config::defaults(aws_config::BehaviorVersion::latest())
                    .credentials_provider(
                        aws_config::environment::EnvironmentVariableCredentialsProvider::new(),
                    )
                    .load()
                    .await
            }
            "amazon-roots" => {
                use aws_smithy_http_client::tls;
                let mut store = tls::TrustStore::empty();
                for name in [
                    "Amazon_Root_CA_1",
                    "Amazon_Root_CA_2",
                    "Amazon_Root_CA_3",
                    "Amazon_Root_CA_4",
                    "Starfield_Services_Root_Certificate_Authority_-_G2",
                ] {
                    store = store.with_pem_certificate(
                        std::fs::read(format!("/etc/ssl/certs/{name}.pem")).unwrap(),
                    );
                }
                let http = aws_smithy_http_client::Builder::new()
                    .tls_provider(tls::Provider::Rustls(
                        tls::rustls_provider::CryptoMode::AwsLc,
                    ))
                    .tls_context(
                        tls::TlsContext::builder()
                            .with_trust_store(store)
                            .build()
                            .unwrap(),
                    )
                    .build_https();
                aws_config::defaults(aws_config::BehaviorVersion::latest())
                    .credentials_provider(
                        aws_config::environment::EnvironmentVariableCredentialsProvider::new(),
                    )
                    .http_client(http)
                    .load()
                    .await
            }
            other => panic!("unknown variant {other}"),
        };
        mark(&mut marks);
        let env = Env::from_process();
        let queue = SqsIngestQueue::new(&sdk, env.require("INGEST_QUEUE_URL").unwrap());
        mark(&mut marks);
        let http =
            kyc_relay::http_client::build(Duration::from_secs(2), Duration::from_secs(4)).unwrap();
        mark(&mut marks);
        let intake = Intake::from_env(&env, queue, http, Arc::new(SystemClock)).unwrap();
        mark(&mut marks);
        std::hint::black_box(intake);
    });
    marks.push(start.elapsed().as_micros());
    println!(
        "{}",
        marks
            .iter()
            .map(u128::to_string)
            .collect::<Vec<_>>()
            .join(" ")
    );
}

fn lambda_env() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(repo_root().join("config/local.env")).unwrap();
    let mut vars: Vec<(String, String)> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().into(), v.trim().into()))
        .collect();
    for (k, v) in [
        ("AWS_SESSION_TOKEN", "test"),
        ("AWS_LAMBDA_FUNCTION_NAME", "receiver"),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256"),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST"),
        ("AWS_EXECUTION_ENV", "AWS_Lambda_provided.al2023"),
        ("LAMBDA_TASK_ROOT", "/var/task"),
        ("TZ", ":UTC"),
        ("PATH", "/usr/local/bin:/usr/bin/:/bin"),
        (
            "INGEST_QUEUE_URL",
            "https://sqs.eu-central-1.amazonaws.com/123456789012/kyc-relay-ingest",
        ),
    ] {
        vars.push((k.into(), v.into()));
    }
    if let Ok(file) = std::env::var("BENCH_SSL_CERT_FILE") {
        vars.push(("SSL_CERT_FILE".into(), file));
    }
    vars
}

fn main() {
    if let Ok(variant) = std::env::var("INIT_PARTS_CHILD") {
        child(&variant);
        return;
    }
    let n: usize = std::env::var("BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let exe = std::env::current_exe().unwrap();
    let env = lambda_env();
    println!(
        "init_parts: receiver init steps, first call in a fresh process, median (p90) µs over {n} processes{}",
        std::env::var("BENCH_SSL_CERT_FILE")
            .map(|f| format!("; SSL_CERT_FILE={f}"))
            .unwrap_or_default()
    );
    for variant in ["default", "env-credentials", "amazon-roots"] {
        let mut samples: Vec<Vec<u64>> = vec![Vec::new(); STEPS.len()];
        for i in 0..n + 2 {
            let out = Command::new(&exe)
                .env_clear()
                .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .env("INIT_PARTS_CHILD", variant)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let line = String::from_utf8_lossy(&out.stdout);
            let line = line.lines().last().unwrap_or_default();
            if i < 2 {
                continue; // warm-up (page cache)
            }
            for (s, v) in samples.iter_mut().zip(line.split_whitespace()) {
                s.push(v.parse().unwrap());
            }
        }
        println!("variant {variant}:");
        for (name, mut s) in STEPS.iter().zip(samples) {
            s.sort_unstable();
            println!(
                "  {name:<18} {:>7} ({:>7})",
                s[s.len() / 2],
                s[(s.len() * 9 / 10).min(s.len() - 1)]
            );
        }
    }
}
