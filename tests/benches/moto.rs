//! Benchmarks against the local AWS emulator (moto). Run through `bench/run.sh`, which starts moto
//! and exports `AWS_ENDPOINT_URL`; directly: `cargo bench -p integration-tests --bench moto -- [receiver] [consumer]`.
//!
//! - `receiver`: N sequential `apigw::handle` calls with the real `SqsIngestQueue` against N raw
//!   `SendMessage` calls with a body of the same size (and N more with the adapter's three message
//!   attributes too), interleaved in rotating order on one SDK client and one queue so all arms see
//!   the same emulator state. moto is slow (milliseconds per send), so the
//!   result is a ratio against the emulator itself plus the absolute overhead in µs.
//! - `consumer`: `Processor::process_batch` with the real DynamoDB/SQS adapters over N Incode events
//!   in batches of B (after one warm-up batch): CPU time of this process (CLOCK_PROCESS_CPUTIME_ID,
//!   i.e. the client side only: moto runs in its own process) per event, and AWS calls per event
//!   counted by an SDK interceptor (as tests/tests/cost.rs). The records are written to
//!   `target/bench/consumer-records.json` so `bench/powertools_consumer.py` processes the same input.
//!
//! `BENCH_N` (default 200) and `BENCH_BATCH` (default 10) size the runs.

use integration_tests::counting::Calls;
use integration_tests::{LocalAws, incode_envelope, read_json, repo_root};
use kyc_relay::aws::apigw;
use kyc_relay::aws::dynamodb::DynamoRecords;
use kyc_relay::aws::sqs::{SqsDeliveryQueue, SqsIngestQueue};
use kyc_relay::clock::{Clock, SystemClock};
use kyc_relay::destination::Destinations;
use kyc_relay::intake::Intake;
use kyc_relay::processing::{IngestRecord, Processor, RecordLifetime};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// CPU time of the whole process (all threads), as Python's `time.process_time()` measures it.
fn process_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec; CLOCK_PROCESS_CPUTIME_ID is always available on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// (user, system) CPU time of the process.
fn rusage() -> (Duration, Duration) {
    // SAFETY: getrusage writes into the zeroed struct we own.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    (tv(ru.ru_utime), tv(ru.ru_stime))
}

struct Summary {
    median_us: f64,
    p90_us: f64,
    p99_us: f64,
    mean_us: f64,
}

fn summary(mut v: Vec<Duration>) -> Summary {
    v.sort_unstable();
    let n = v.len();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    Summary {
        median_us: us(v[n / 2]),
        p90_us: us(v[(n * 90 / 100).min(n - 1)]),
        p99_us: us(v[(n * 99 / 100).min(n - 1)]),
        mean_us: v.iter().map(|d| us(*d)).sum::<f64>() / n as f64,
    }
}

async fn receiver_latency(n: usize) {
    let aws = LocalAws::provision().await;
    let url = aws.get("INGEST_QUEUE_URL").to_string();
    let mut env = aws.env();
    env.set("IDNOW_ENABLED", "false");
    let http =
        kyc_relay::http_client::build(Duration::from_secs(2), Duration::from_secs(4)).unwrap();
    let intake = Intake::from_env(
        &env,
        SqsIngestQueue::from_client(aws.sqs.clone(), url.clone()),
        http,
        Arc::new(SystemClock),
    )
    .unwrap();
    let template = read_json("events/receiver/incode-onboarding-status.json");
    // Fixed-width ids: every envelope has the same size.
    let event = |i: usize| {
        let mut raw = template.clone();
        raw["body"] =
            format!(r#"{{"interviewId":"lat-{i:06}","onboardingStatus":"ONBOARDING_FINISHED"}}"#)
                .into();
        raw.to_string()
    };
    let warm = 10;
    // Warm-up (connections, endpoint resolution), and one envelope to size the raw messages.
    for i in 0..warm {
        let r = apigw::handle(&intake, serde_json::from_str(&event(i)).unwrap()).await;
        assert_eq!(r.status_code, 200);
    }
    let sample = aws
        .sqs
        .receive_message()
        .queue_url(&url)
        .send()
        .await
        .unwrap()
        .messages
        .unwrap_or_default()
        .into_iter()
        .next()
        .and_then(|m| m.body)
        .expect("an envelope on the ingest queue");
    let raw_send = || {
        aws.sqs
            .send_message()
            .queue_url(&url)
            .message_body(sample.clone())
            .send()
    };
    // The same request the adapter makes: body plus its three message attributes.
    let attr = |v: &str| {
        aws_sdk_sqs::types::MessageAttributeValue::builder()
            .data_type("String")
            .string_value(v)
            .build()
            .unwrap()
    };
    let raw_send_attrs = || {
        aws.sqs
            .send_message()
            .queue_url(&url)
            .message_body(sample.clone())
            .message_attributes("provider", attr("incode"))
            .message_attributes("event_type", attr("onboarding_status"))
            .message_attributes("event_id", attr("0123456789abcdef0123456789abcdef"))
            .send()
    };
    for _ in 0..warm {
        raw_send().await.unwrap();
        raw_send_attrs().await.unwrap();
    }

    // Three arms, interleaved in a rotating order so each sees the same emulator state.
    let mut wall: [Vec<Duration>; 3] = [Vec::new(), Vec::new(), Vec::new()];
    let mut cpu = [Duration::ZERO; 3];
    for i in 0..n {
        let text = event(warm + i);
        for k in 0..3 {
            let arm = (i + k) % 3;
            let (c, t) = (process_cpu(), Instant::now());
            match arm {
                0 => raw_send().await.map(|_| ()).unwrap(),
                1 => raw_send_attrs().await.map(|_| ()).unwrap(),
                _ => {
                    let event = serde_json::from_str(&text).unwrap();
                    let r = apigw::handle(&intake, event).await;
                    assert_eq!(r.status_code, 200);
                }
            }
            wall[arm].push(t.elapsed());
            cpu[arm] += process_cpu() - c;
        }
    }
    let [raw_wall, attrs_wall, recv_wall] = wall;
    let [raw_cpu, attrs_cpu, recv_cpu] = cpu;
    let a = summary(attrs_wall);
    let (r, w) = (summary(recv_wall), summary(raw_wall));
    println!(
        "receiver_latency: n={n} interleaved, envelope {} bytes (raw SendMessage body of the same size, no attributes)",
        sample.len()
    );
    println!(
        "{:<34} {:>10} {:>10} {:>10} {:>10} {:>14}",
        "", "median µs", "p90 µs", "p99 µs", "mean µs", "client CPU µs"
    );
    for (name, s, cpu) in [
        ("raw SendMessage", &w, raw_cpu),
        ("raw SendMessage + 3 attributes", &a, attrs_cpu),
        ("receiver (JSON event + apigw::handle)", &r, recv_cpu),
    ] {
        println!(
            "{:<34} {:>10.0} {:>10.0} {:>10.0} {:>10.0} {:>14.1}",
            name,
            s.median_us,
            s.p90_us,
            s.p99_us,
            s.mean_us,
            cpu.as_secs_f64() * 1e6 / n as f64
        );
    }
    println!(
        "ratio receiver/raw: median {:.3}, mean {:.3}; overhead: median {:+.0} µs, mean {:+.0} µs, client CPU {:+.1} µs/request",
        r.median_us / w.median_us,
        r.mean_us / w.mean_us,
        r.median_us - w.median_us,
        r.mean_us - w.mean_us,
        (recv_cpu.as_secs_f64() - raw_cpu.as_secs_f64()) * 1e6 / n as f64
    );
    println!(
        "ratio receiver/(raw + same attributes): median {:.3}, mean {:.3}; overhead: median {:+.0} µs, client CPU {:+.1} µs/request",
        r.median_us / a.median_us,
        r.mean_us / a.mean_us,
        r.median_us - a.median_us,
        (recv_cpu.as_secs_f64() - attrs_cpu.as_secs_f64()) * 1e6 / n as f64
    );
}

async fn consumer_cpu(n: usize, batch: usize) {
    let aws = LocalAws::provision().await;
    let calls = Calls::default();
    let (sqs, ddb) = calls.clients(&aws.sdk);
    let destinations = r#"{"destinations": [{"id": "crm", "url": "https://crm.internal.example/hook", "retry_policy": "incode"}]}"#;
    let consumer = Processor {
        store: DynamoRecords::from_client(
            ddb.clone(),
            aws.get("RECORDS_TABLE"),
            Arc::new(SystemClock),
        ),
        queue: SqsDeliveryQueue::from_client(
            sqs.clone(),
            aws.get("DELIVERY_QUEUE_URL"),
            None,
            None,
        ),
        // The Python peer keeps no archive either.
        archive: kyc_relay::archive::Off,
        destinations: Destinations::parse_with(
            destinations,
            kyc_relay::config::OutboundPolicy::local(),
        )
        .unwrap(),
        clock: Arc::new(SystemClock),
        lifetime: RecordLifetime {
            ttl_secs: 30 * 86_400,
        },
    };
    // One warm-up batch, then n events: each a new Incode interview reaching ONBOARDING_FINISHED
    // (claim + one delivery job).
    let records: Vec<IngestRecord> = (0..batch + n)
        .map(|i| {
            let e = incode_envelope(&format!("cpu-{i:06}"), "ONBOARDING_FINISHED");
            IngestRecord {
                message_id: format!("00000000-0000-4000-8000-{i:012}"),
                body: serde_json::to_string(&e).unwrap(),
            }
        })
        .collect();
    let out = repo_root().join("target/bench");
    std::fs::create_dir_all(&out).unwrap();
    let json: Vec<serde_json::Value> = records
        .iter()
        .map(|r| serde_json::json!({"messageId": r.message_id, "body": r.body}))
        .collect();
    std::fs::write(
        out.join("consumer-records.json"),
        serde_json::to_string(
            &serde_json::json!({"warmup": batch, "batch": batch, "records": json}),
        )
        .unwrap(),
    )
    .unwrap();

    let deadline = || SystemClock.now_ms() + 60_000;
    let (warmup, measured) = records.split_at(batch);
    assert!(
        consumer
            .process_batch(warmup, deadline(), "warmup")
            .await
            .is_empty()
    );
    calls.0.lock().unwrap().clear();

    let (cpu0, ru0, t0) = (process_cpu(), rusage(), Instant::now());
    for chunk in measured.chunks(batch) {
        let failed = consumer.process_batch(chunk, deadline(), "bench").await;
        assert!(failed.is_empty(), "{failed:?}");
    }
    let (wall, cpu, ru1) = (t0.elapsed(), process_cpu() - cpu0, rusage());
    let depth = aws.depth(aws.get("DELIVERY_QUEUE_URL")).await;
    assert_eq!(depth, batch + n, "one delivery job per event");

    let calls = calls.0.lock().unwrap().clone();
    let total: u64 = calls.values().sum();
    println!(
        "consumer_cpu (Rust, kyc_relay::processing): {n} events in batches of {batch}, current_thread runtime"
    );
    println!(
        "  CPU: {:.1} µs/event (user {:.1} + sys {:.1}); wall {:.2} ms/event ({:.1} ms/batch)",
        cpu.as_secs_f64() * 1e6 / n as f64,
        (ru1.0 - ru0.0).as_secs_f64() * 1e6 / n as f64,
        (ru1.1 - ru0.1).as_secs_f64() * 1e6 / n as f64,
        wall.as_secs_f64() * 1e3 / n as f64,
        wall.as_secs_f64() * 1e3 / n.div_ceil(batch) as f64
    );
    println!(
        "  AWS calls: {:.2}/event: {:?}",
        total as f64 / n as f64,
        calls
    );
    for (op, c) in &calls {
        println!("    {op}: {:.2}/event", *c as f64 / n as f64);
    }
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let all = args.is_empty();
    let want = |name: &str| all || args.iter().any(|a| a == name);
    let n = env_usize("BENCH_N", 200);
    let batch = env_usize("BENCH_BATCH", 10);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        if want("receiver") {
            receiver_latency(n).await;
        }
        if want("consumer") {
            consumer_cpu(n, batch).await;
        }
    });
}
