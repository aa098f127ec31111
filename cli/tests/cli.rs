//! The `kyc-relay` binary against the local emulator: data seeded by the library's real consumer and
//! dispatcher (moto through the SDK, destinations are HTTP servers on 127.0.0.1), then the tool run
//! as an operator runs it, with an env file naming this test's resources.
//!
//! Run with `scripts/with-local-aws.sh cargo test -p kyc-relay-cli`.

use integration_tests::lanes::{self, UndelayedQueue};
use integration_tests::peer::{Answer, Peer};
use integration_tests::{
    LocalAws, TestConsumer, TestDispatcher, archive, consumer_for, delivery_queue, dispatcher_for,
    idnow_envelope, incode_envelope, record,
};
use kyc_relay::archive::{ArchiveStore, Utc, decode};
use kyc_relay::clock::{Clock, ManualClock, SystemClock};
use kyc_relay::delivery::{DeliveryJob, DeliveryQueue, Lane, delivery_id};
use kyc_relay::dispatch::JobRecord;
use kyc_relay::envelope::Envelope;
use kyc_relay::records::EventKey;
use serde_json::Value;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;

const BIN: &str = env!("CARGO_BIN_EXE_kyc-relay");

struct Rig {
    aws: LocalAws,
    clock: ManualClock,
    consumer: TestConsumer,
    dispatcher: TestDispatcher<UndelayedQueue>,
    env_file: PathBuf,
    _dir: TempDir,
}

/// A directory removed when the test ends.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Now, to the second: record expiry and archive keys follow the tests' manual clock, which starts
/// at the real time so that the tool (on the system clock) sees the records as live.
fn t0() -> u64 {
    SystemClock.now_ms() / 1000 * 1000
}

impl Rig {
    async fn new(destinations: &str) -> Self {
        let aws = LocalAws::provision().await;
        let clock = ManualClock::at_ms(t0());
        let dir = std::env::temp_dir().join(format!("kyc-relay-cli-{}", aws.stack));
        std::fs::create_dir_all(&dir).unwrap();
        let doc = dir.join("destinations.json");
        std::fs::write(&doc, destinations).unwrap();
        let mut lines: Vec<String> = aws
            .resources
            .iter()
            .map(|(k, v)| format!("{k}='{v}'"))
            .collect();
        lines.push(format!("DESTINATIONS_CONFIG_FILE={}", doc.display()));
        // The destinations are test servers on 127.0.0.1, as in config/local.env.
        lines.push("OUTBOUND_ALLOW_HTTP_LOOPBACK=true".into());
        // The stack's ArchiveRetentionDays (erase keeps rewritten objects' expiry with it).
        lines.push("ARCHIVE_RETENTION_DAYS=30".into());
        lines.sort();
        let env_file = dir.join("aws.env");
        std::fs::write(&env_file, lines.join("\n") + "\n").unwrap();
        let consumer = consumer_for(&aws, destinations, Arc::new(clock.clone()));
        let dispatcher = dispatcher_for(
            &aws,
            UndelayedQueue::new(&aws, clock.clone()),
            destinations,
            Arc::new(clock.clone()),
        )
        .await;
        Self {
            aws,
            clock,
            consumer,
            dispatcher,
            env_file,
            _dir: TempDir(dir),
        }
    }

    /// One consumer batch (one archive object).
    async fn ingest(&self, envelopes: &[&Envelope]) {
        let records: Vec<_> = envelopes
            .iter()
            .map(|e| record(&format!("m-{}", e.event_id), e))
            .collect();
        let failed = self
            .consumer
            .process_batch(
                &records,
                self.clock.now_ms() + 30_000,
                &format!("b{}", fastrand::u32(..)),
            )
            .await;
        assert!(failed.is_empty(), "consumer failed {failed:?}");
    }

    /// Plays Lambda's two SQS triggers: hands every job of either lane to the dispatcher, one at a
    /// time, moving the clock to its due time. Returns how many jobs were handled.
    async fn drive(&self) -> usize {
        lanes::drive(&self.aws, &self.dispatcher, &self.clock, 200, |job| {
            Some(job.due_at_ms)
        })
        .await
    }

    /// Runs the tool with this test's env file; stdin is not a terminal (as in a script).
    async fn kyc(&self, args: &[&str]) -> Run {
        kyc_with(&[&["--env-file", self.env_file.to_str().unwrap()], args].concat()).await
    }

    async fn kyc_json(&self, args: &[&str]) -> Value {
        let r = self.kyc(&[args, &["--json"]].concat()).await;
        assert_eq!(r.code, 0, "kyc-relay {args:?}: {}{}", r.stdout, r.stderr);
        r.json()
    }
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.stdout))
    }
}

async fn kyc_with(args: &[&str]) -> Run {
    let out = tokio::process::Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .env_remove("KYC_RELAY_STACK")
        .output()
        .await
        .expect("run kyc-relay");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn destinations(list: &[(&str, &str, &str)]) -> String {
    let items: Vec<String> = list
        .iter()
        .map(|(id, url, extra)| {
            format!(r#"{{"id": "{id}", "url": "{url}", "retry_policy": "idnow"{extra}}}"#)
        })
        .collect();
    format!(r#"{{"destinations": [{}]}}"#, items.join(", "))
}

fn idnow_at(id: &str, name: &str, session: &str, status: &str, at_ms: u64) -> Envelope {
    let mut e = idnow_envelope(id, name, session, status, 1);
    e.received_at_ms = at_ms;
    e
}

fn deliveries_of(event: &Value) -> &Vec<Value> {
    event["deliveries"].as_array().expect("deliveries")
}

fn find<'a>(list: &'a [Value], key: &str, value: &str) -> &'a Value {
    list.iter()
        .find(|v| v[key] == value)
        .unwrap_or_else(|| panic!("no {key} = {value} in {list:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_and_session_show_out_of_order_events_a_retry_and_a_dead_letter() {
    let crm = Peer::start(Answer::status(204)).await;
    crm.then(Answer::status(503));
    let audit = Peer::start(Answer::status(400)).await;
    let rig = Rig::new(&destinations(&[
        ("crm", &crm.url("/hook"), ""),
        (
            "audit",
            &audit.url("/hook"),
            r#", "event_types": ["session.completed"]"#,
        ),
    ]))
    .await;
    let t = rig.clock.now_ms();
    let s = "sess-cli-1";
    let created = idnow_at("evt-created", "session.created", s, "CREATED", t - 30_000);
    let completed = idnow_at(
        "evt-completed",
        "session.completed",
        s,
        "COMPLETED",
        t - 20_000,
    );
    // Arrives after the completion: relayed, but the session stays COMPLETED.
    let started = idnow_at("evt-started", "session.started", s, "STARTED", t - 10_000);
    rig.ingest(&[&created]).await;
    rig.ingest(&[&completed]).await;
    rig.ingest(&[&started]).await;
    // 3 crm jobs + 1 crm retry + 1 audit job (dead-lettered at once: 400 is not retried by idnow).
    assert_eq!(rig.drive().await, 5);
    // A fourth event whose job is not handled yet.
    let review = idnow_at("evt-review", "session.review", s, "REVIEW", t - 5_000);
    rig.ingest(&[&review]).await;

    let session = rig.kyc_json(&["session", "idnow", s]).await;
    assert_eq!(session["status"]["status"], "COMPLETED");
    assert_eq!(session["status"]["event_id"], "evt-completed");
    let events = session["events"].as_array().unwrap();
    let ids: Vec<&str> = events
        .iter()
        .map(|e| e["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        ["evt-created", "evt-completed", "evt-started", "evt-review"]
    );
    let stale: Vec<bool> = events
        .iter()
        .map(|e| e["stale"].as_bool().unwrap())
        .collect();
    assert_eq!(stale, [false, false, true, false]);
    // Exactly one crm delivery needed a retry: 503, then 204.
    let crm_deliveries: Vec<&Value> = events[..3]
        .iter()
        .map(|e| find(deliveries_of(e), "destination", "crm"))
        .collect();
    assert!(crm_deliveries.iter().all(|d| d["state"] == "DELIVERED"));
    let retried: Vec<&&Value> = crm_deliveries
        .iter()
        .filter(|d| d["attempts"] == 2)
        .collect();
    assert_eq!(retried.len(), 1, "{crm_deliveries:?}");
    let outcomes: Vec<&str> = retried[0]["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["http_503", "http_204"]);
    let dead = find(deliveries_of(&events[1]), "destination", "audit");
    assert_eq!(
        (dead["state"].as_str(), dead["attempts"].as_u64()),
        (Some("FAILED"), Some(1))
    );
    assert_eq!(dead["last_status_code"], 400);
    assert_eq!(
        find(deliveries_of(&events[3]), "destination", "crm")["state"],
        "NOT_ATTEMPTED"
    );

    // The same as an operator reads it.
    let human = rig.kyc(&["session", "idnow", s]).await;
    assert_eq!(human.code, 0, "{}", human.stderr);
    assert!(
        human
            .stdout
            .contains("status      COMPLETED (from evt-completed"),
        "{}",
        human.stdout
    );
    assert!(human.stdout.contains("STARTED (stale)"), "{}", human.stdout);
    assert!(
        human.stdout.contains("not attempted yet"),
        "{}",
        human.stdout
    );
    println!("{}", human.stdout);

    // One event, found without its session (a Scan), with its attempt history and archive copy.
    let event = rig.kyc_json(&["event", "idnow", "evt-completed"]).await;
    assert_eq!(event["found_by"], "scan");
    assert_eq!(event["session_id"], s);
    assert_eq!(event["archived"], true);
    assert_eq!(event["archive"][0]["state"], "present");
    assert_eq!(
        find(deliveries_of(&event), "destination", "audit")["history"][0]["outcome"],
        "http_400"
    );
    let human = rig
        .kyc(&["event", "idnow", "evt-completed", "--session", s])
        .await;
    assert_eq!(human.code, 0, "{}", human.stderr);
    assert!(human.stdout.contains("archived   yes"), "{}", human.stdout);
    assert!(
        human.stdout.contains("attempts of audit:"),
        "{}",
        human.stdout
    );

    // Unknown ids: a clear message and exit 3, as JSON too.
    let missing = rig
        .kyc(&["event", "idnow", "evt-nope", "--session", s])
        .await;
    assert_eq!(missing.code, 3);
    assert!(
        missing
            .stderr
            .contains("no record of idnow event \"evt-nope\""),
        "{}",
        missing.stderr
    );
    let missing = rig
        .kyc(&["session", "idnow", "no-such-session", "--json"])
        .await;
    assert_eq!(missing.code, 3);
    assert_eq!(missing.json()["error"]["kind"], "not_found");
    let scanned = rig.kyc(&["event", "idnow", "evt-nope"]).await;
    assert_eq!(scanned.code, 3, "{}", scanned.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incode_body_finds_its_event_as_the_receiver_would_identify_it() {
    let crm = Peer::start(Answer::status(200)).await;
    let rig = Rig::new(&destinations(&[("crm", &crm.url("/hook"), "")])).await;
    let e = incode_envelope("interview-cli", "ONBOARDING_FINISHED");
    rig.ingest(&[&e]).await;
    let body = rig._dir.0.join("body.json");
    std::fs::write(&body, &e.raw_body).unwrap();
    let found = rig
        .kyc_json(&[
            "event",
            "incode",
            "--body",
            body.to_str().unwrap(),
            "--type",
            "onboarding-status",
        ])
        .await;
    assert_eq!(found["event_id"], e.event_id.as_str());
    assert_eq!(found["found_by"], "session", "the body names the session");
    assert_eq!(
        find(deliveries_of(&found), "destination", "crm")["state"],
        "NOT_ATTEMPTED"
    );
    let bad = rig
        .kyc(&["event", "incode", "--body", "/nonexistent/body.json"])
        .await;
    assert_eq!(bad.code, 2);
    std::fs::write(&body, "{\"onboardingStatus\": \"X\"}").unwrap();
    let bad = rig
        .kyc(&["event", "incode", "--body", body.to_str().unwrap()])
        .await;
    assert_eq!(bad.code, 2);
    assert!(
        bad.stderr.contains("missing required field `interviewId`"),
        "{}",
        bad.stderr
    );
}

/// A job as the dispatcher dead-letters it.
fn dead_job(e: &Envelope, destination: &str, reason: &str, at_ms: u64) -> DeliveryJob {
    let mut job = DeliveryJob::first(e, destination, at_ms, 0, at_ms / 1000 + 86_400);
    job.dead_letter = Some(kyc_relay::delivery::DeadLetterInfo {
        reason: reason.into(),
        at_ms,
        attempts: 1,
    });
    job
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlq_redrive_moves_exactly_the_matching_messages_and_the_dispatcher_retries_them() {
    // A real dead letter: crm answers 400 (not retried under idnow).
    let crm = Peer::start(Answer::status(400)).await;
    let rig = Rig::new(&destinations(&[
        ("crm", &crm.url("/hook"), ""),
        ("bi", &crm.url("/bi"), ""),
    ]))
    .await;
    let real = idnow_at(
        "evt-dl",
        "session.completed",
        "s-dl",
        "COMPLETED",
        rig.clock.now_ms(),
    );
    rig.ingest(&[&real]).await;
    assert_eq!(rig.drive().await, 2, "crm and bi jobs");
    // Seeded ones beside it: other destinations and reasons.
    let q = delivery_queue(&rig.aws);
    let t = rig.clock.now_ms();
    for (i, (dest, reason)) in [
        ("bi", "http_500 after 11 attempts: retries exhausted"),
        ("crm", "timeout after 11 attempts: retries exhausted"),
        ("bi", "http_410 is not retryable"),
    ]
    .iter()
    .enumerate()
    {
        let e = idnow_at(
            &format!("evt-seed-{i}"),
            "session.completed",
            "s-x",
            "COMPLETED",
            t,
        );
        q.dead_letter(&dead_job(&e, dest, reason, t)).await.unwrap();
    }
    // The dead letters of crm: the real one (400) and one seeded (timeout); bi has 3 (its own 400
    // and two seeded).
    let listed = rig
        .kyc_json(&["dlq", "list", "--queue", "delivery", "--destination", "crm"])
        .await;
    assert_eq!(listed["scanned"], 5);
    assert_eq!(listed["matched"], 2);
    let by_reason = rig
        .kyc_json(&[
            "dlq",
            "list",
            "--queue",
            "delivery",
            "--reason",
            "RETRIES EXHAUSTED",
        ])
        .await;
    assert_eq!(by_reason["matched"], 2);

    // Without a terminal and without --yes: refused, nothing moved.
    let refused = rig
        .kyc(&[
            "dlq",
            "redrive",
            "--queue",
            "delivery",
            "--destination",
            "crm",
        ])
        .await;
    assert_eq!(refused.code, 4, "{}", refused.stderr);
    let dlq_url = rig.aws.get("DELIVERY_DLQ_URL").to_string();
    let retry_url = rig.aws.get("RETRY_QUEUE_URL").to_string();
    assert_eq!(rig.aws.depth(&retry_url).await, 0);

    crm.set_default(Answer::status(204));
    let moved = rig
        .kyc_json(&[
            "dlq",
            "redrive",
            "--queue",
            "delivery",
            "--destination",
            "crm",
            "--yes",
            "--rate",
            "100/s",
        ])
        .await;
    assert_eq!(moved["moved"], 2);
    assert_eq!(rig.aws.depth(&dlq_url).await, 3, "the others stay");
    let left = rig.kyc_json(&["dlq", "list", "--queue", "delivery"]).await;
    assert!(
        left["messages"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["destination"] == "bi"),
        "{left}"
    );
    // The redriven jobs: a new retry cycle each. The real one is delivered now; the seeded one has
    // no event record, so the dispatcher parks it again.
    assert_eq!(rig.drive().await, 2);
    let event = rig
        .kyc_json(&["event", "idnow", "evt-dl", "--session", "s-dl"])
        .await;
    let d = find(deliveries_of(&event), "destination", "crm");
    assert_eq!(
        (d["state"].as_str(), d["attempts"].as_u64()),
        (Some("DELIVERED"), Some(2))
    );
    assert_eq!(d["history"][1]["cycle"], 2, "a new retry cycle");

    // The ingest DLQ: envelopes, filtered by provider, moved back to the ingest queue.
    let ingest_dlq =
        kyc_relay::aws::sqs::SqsIngestQueue::new(&rig.aws.sdk, rig.aws.get("INGEST_DLQ_URL"));
    use kyc_relay::queue::IngestQueue;
    ingest_dlq
        .enqueue(&incode_envelope("iv-1", "ONBOARDING_FINISHED"))
        .await
        .unwrap();
    ingest_dlq
        .enqueue(&idnow_at("evt-i", "session.created", "s-i", "CREATED", t))
        .await
        .unwrap();
    let bad = rig
        .kyc(&[
            "dlq", "redrive", "--queue", "ingest", "--reason", "x", "--yes",
        ])
        .await;
    assert_eq!(bad.code, 2, "{}", bad.stderr);
    let moved = rig
        .kyc_json(&[
            "dlq",
            "redrive",
            "--queue",
            "ingest",
            "--provider",
            "incode",
            "--yes",
        ])
        .await;
    assert_eq!(moved["moved"], 1);
    let back = rig.aws.drain(rig.aws.get("INGEST_QUEUE_URL")).await;
    assert_eq!(back.len(), 1);
    let env: Envelope = serde_json::from_str(back[0].body().unwrap()).unwrap();
    assert_eq!(env.session_id.as_deref(), Some("iv-1"));
    assert_eq!(rig.aws.depth(rig.aws.get("INGEST_DLQ_URL")).await, 1);

    let shown = rig
        .kyc(&["dlq", "show", "--queue", "delivery", "no-such-id"])
        .await;
    assert_eq!(shown.code, 3, "{}", shown.stderr);

    // `dlq show` in JSON follows the table's rule: the webhook body only with --body.
    let listed = rig.kyc_json(&["dlq", "list", "--queue", "ingest"]).await;
    let id = listed["messages"][0]["message_id"]
        .as_str()
        .unwrap()
        .to_string();
    let show = ["dlq", "show", "--queue", "ingest", id.as_str()];
    let plain = rig.kyc_json(&show).await;
    let text = plain.to_string();
    assert!(plain.get("body").is_none(), "{text}");
    assert!(
        !text.contains("raw_body") && !text.contains("flow-1"),
        "{text}"
    );
    assert_eq!(plain["message"]["session_id"], "s-i");
    let with_body = rig.kyc_json(&[&show[..], &["--body"]].concat()).await;
    assert!(
        with_body["body"].to_string().contains("flow-1"),
        "{with_body}"
    );
}

/// The destination's requests carrying a replay of `events` (the envelope body names the event).
fn replayed(peer: &Peer, from: usize) -> Vec<(String, String)> {
    peer.received()[from..]
        .iter()
        .map(|r| {
            let e: Envelope = serde_json::from_slice(&r.body).unwrap();
            (
                e.event_id,
                r.headers["webhook-id"].to_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_time_range_replay_sends_each_matching_event_once_even_when_interrupted_and_run_again() {
    let crm = Peer::start(Answer::status(204)).await;
    let other = Peer::start(Answer::status(204)).await;
    let rig = Rig::new(&destinations(&[
        ("crm", &crm.url("/hook"), ""),
        ("other", &other.url("/hook"), ""),
    ]))
    .await;
    let t = rig.clock.now_ms();
    let before = idnow_at(
        "evt-before",
        "session.created",
        "s-r0",
        "CREATED",
        t - 40 * 60_000,
    );
    let inside: Vec<Envelope> = (0..4)
        .map(|i| {
            idnow_at(
                &format!("evt-r{i}"),
                if i == 3 {
                    "session.aborted"
                } else {
                    "session.created"
                },
                &format!("s-r{i}"),
                "CREATED",
                t - (20 - i) * 60_000,
            )
        })
        .collect();
    rig.ingest(&[&before, &inside[0], &inside[1]]).await;
    rig.ingest(&[&inside[2], &inside[3]]).await;
    assert_eq!(rig.drive().await, 10);
    let originals: std::collections::HashMap<String, String> =
        replayed(&crm, 0).into_iter().collect();
    let sent_before = crm.hits();
    let since = Utc::rfc3339(t - 30 * 60_000);
    let until = Utc::rfc3339(t);
    let range = |extra: &[&'static str]| -> Vec<String> {
        [
            "replay",
            "range",
            "--since",
            &since,
            "--until",
            &until,
            "--destination",
            "crm",
            "--type",
            "session.created",
            "--rate",
            "1000/s",
        ]
        .iter()
        .chain(extra)
        .map(|s| s.to_string())
        .collect()
    };

    // A dry run sends nothing and names the three matching events (evt-r3 is another type).
    let args = range(&["--dry-run"]);
    let dry = rig.kyc_json(&refs(&args)).await;
    assert_eq!(dry["would_queue"], 3);
    let replay_id = dry["replay_id"].as_str().unwrap().to_string();

    // Interrupted halfway: only the first 2 jobs are queued...
    let args = range(&["--limit", "2", "--yes"]);
    let first = rig.kyc_json(&refs(&args)).await;
    assert_eq!(
        (first["queued"].as_u64(), first["not_reached"].as_u64()),
        (Some(2), Some(1))
    );
    assert_eq!(
        first["replay_id"],
        replay_id.as_str(),
        "same command, same replay"
    );
    // ...and run again before the dispatcher took them: all 3 queued, the first two again with
    // new tokens, so the older copies are dropped as superseded.
    let args = range(&["--yes"]);
    let second = rig.kyc_json(&refs(&args)).await;
    assert_eq!(second["queued"], 3);
    assert_eq!(rig.drive().await, 5, "3 jobs + 2 superseded copies");
    let sent = replayed(&crm, sent_before);
    let mut got: Vec<&str> = sent.iter().map(|(id, _)| id.as_str()).collect();
    got.sort();
    assert_eq!(
        got,
        ["evt-r0", "evt-r1", "evt-r2"],
        "each matching event once"
    );
    for (id, webhook_id) in &sent {
        assert_eq!(
            webhook_id, &originals[id],
            "the original webhook-id is kept"
        );
    }
    assert_eq!(other.hits(), 5, "the other destination got nothing more");

    // A third run finds every job attempted: nothing is sent.
    let third = rig.kyc_json(&refs(&args)).await;
    assert_eq!(
        (third["queued"].as_u64(), third["already_sent"].as_u64()),
        (Some(0), Some(3))
    );
    assert_eq!(rig.drive().await, 0);
    assert_eq!(crm.hits(), sent_before + 3);

    // The replay shows on the event; --new-id gives another webhook-id.
    let event = rig
        .kyc_json(&["event", "idnow", "evt-r1", "--session", "s-r1"])
        .await;
    let d = deliveries_of(&event)
        .iter()
        .find(|d| d["replay"] == replay_id.as_str())
        .expect("the replay's delivery");
    assert_eq!(d["state"], "DELIVERED");
    let args = range(&["--new-id", "--dry-run"]);
    let fresh = rig.kyc_json(&refs(&args)).await;
    assert_ne!(fresh["replay_id"], replay_id.as_str());
    let key = EventKey::of(&inside[1]);
    let job = find(fresh["jobs"].as_array().unwrap(), "event_id", "evt-r1");
    assert_ne!(job["webhook_id"], delivery_id(&key, "crm").as_str());

    // Bad arguments: a clear message, exit 2; an unknown destination, exit 3.
    let bad = rig
        .kyc(&["replay", "range", "--since", "yesterday", "--until", "now"])
        .await;
    assert_eq!(bad.code, 2);
    assert!(
        bad.stderr.contains("--since \"yesterday\""),
        "{}",
        bad.stderr
    );
    let bad = rig
        .kyc(&[
            "replay",
            "range",
            "--since",
            &since,
            "--until",
            &until,
            "--destination",
            "nope",
        ])
        .await;
    assert_eq!(bad.code, 3, "{}", bad.stderr);
}

/// Every line of every archive object of this stack.
async fn archived_lines(rig: &Rig) -> Vec<(String, Envelope)> {
    let store = archive(&rig.aws);
    let mut out = Vec::new();
    for k in store.list("events/", None).await.unwrap() {
        let body = store.get(&k).await.unwrap().unwrap();
        out.extend(decode(&body).0.into_iter().map(|e| (k.clone(), e)));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erase_leaves_nothing_of_the_session_readable_and_logs_without_personal_data() {
    let crm = Peer::start(Answer::status(400)).await;
    let rig = Rig::new(&destinations(&[("crm", &crm.url("/hook"), "")])).await;
    let t = rig.clock.now_ms();
    let gone = "person-to-forget";
    let a = idnow_at("evt-e1", "session.created", gone, "CREATED", t - 3000);
    let b = idnow_at("evt-e2", "session.completed", gone, "COMPLETED", t - 2000);
    let keep = idnow_at(
        "evt-k1",
        "session.created",
        "someone-else",
        "CREATED",
        t - 1000,
    );
    // One object shared with another session (rewritten), one of this session alone (deleted).
    rig.ingest(&[&a, &keep]).await;
    rig.ingest(&[&b]).await;
    // crm answers 400: both of the session's deliveries (and the other's) are dead-lettered.
    assert_eq!(rig.drive().await, 3);

    // A DLQ message no filter can read is reported, never skipped silently.
    rig.aws
        .sqs
        .send_message()
        .queue_url(rig.aws.get("DELIVERY_DLQ_URL"))
        .message_body("not a job")
        .send()
        .await
        .unwrap();

    let refused = rig.kyc(&["erase", "--session", "idnow", gone]).await;
    assert_eq!(refused.code, 4, "{}", refused.stderr);
    let dry = rig
        .kyc_json(&["erase", "--session", "idnow", gone, "--dry-run"])
        .await;
    assert_eq!(
        (dry["archive_lines"].as_u64(), dry["dlq_messages"].as_u64()),
        (Some(2), Some(2))
    );
    assert!(
        dry["warnings"]
            .to_string()
            .contains("1 message(s) in the delivery DLQ are neither"),
        "{dry}"
    );

    let audit_key = "4f1c2d9e8b7a6f5e4d3c2b1a0f9e8d7c";
    rig.aws
        .put_secure_string("/kyc-relay-test/audit-key", audit_key)
        .await;
    let erased = rig
        .kyc_json(&[
            "erase",
            "--session",
            "idnow",
            gone,
            "--yes",
            "--audit-key-ssm",
            "/kyc-relay-test/audit-key",
        ])
        .await;
    assert_eq!(erased["archive_lines"], 2);
    assert_eq!(
        (
            erased["objects_rewritten"].as_u64(),
            erased["objects_deleted"].as_u64()
        ),
        (Some(1), Some(1))
    );
    assert_eq!(erased["record_items"], 4, "2 events + 2 deliveries");
    assert_eq!(erased["dlq_messages"], 2);

    // Nothing of the session is readable: records, archive lines, DLQ copies.
    assert_eq!(rig.kyc(&["session", "idnow", gone]).await.code, 3);
    assert_eq!(rig.kyc(&["event", "idnow", "evt-e1"]).await.code, 3);
    let lines = archived_lines(&rig).await;
    assert!(
        lines
            .iter()
            .all(|(_, e)| e.session_id.as_deref() != Some(gone)),
        "{lines:?}"
    );
    assert_eq!(lines.len(), 1, "the other session's line stays");
    assert_eq!(lines[0].1, keep, "byte for byte");
    // The rewritten object keeps its expiry: tagged with the days it had left (S3 would count the
    // retention again from the rewrite).
    let tags = aws_sdk_s3::Client::new(&rig.aws.sdk)
        .get_object_tagging()
        .bucket(rig.aws.get("ARCHIVE_BUCKET"))
        .key(&lines[0].0)
        .send()
        .await
        .unwrap();
    let kept = kyc_relay::archive::keep_days(
        kyc_relay::archive::archived_at_ms(&lines[0].0).unwrap(),
        SystemClock.now_ms(),
        30,
    );
    assert_eq!(
        tags.tag_set()
            .iter()
            .map(|t| (t.key(), t.value()))
            .collect::<Vec<_>>(),
        [(kyc_relay::archive::KEEP_DAYS_TAG, kept.to_string().as_str())]
    );
    let dlq = rig.aws.drain(rig.aws.get("DELIVERY_DLQ_URL")).await;
    assert_eq!(
        dlq.len(),
        2,
        "the other session's job and the unreadable message"
    );
    assert!(dlq.iter().all(|m| !m.body().unwrap().contains(gone)));

    // Nothing brings it back: a provider retry of one of its events is refused by the consumer
    // (no claim, no archive line, no job), and a job of the session still on a delivery lane is
    // dropped by the dispatcher (no request, no DLQ copy with its webhook, no delivery item).
    let hits = crm.hits();
    rig.ingest(&[&a]).await;
    let job = DeliveryJob::first(
        &b,
        "crm",
        rig.clock.now_ms(),
        0,
        rig.clock.now_secs() + 86_400,
    );
    let sent = delivery_queue(&rig.aws)
        .schedule(vec![kyc_relay::delivery::Scheduled {
            job,
            delay_secs: 0,
            lane: Lane::Fast,
        }])
        .await;
    assert!(sent.iter().all(Result::is_ok));
    assert_eq!(rig.drive().await, 1, "only the queued job");
    assert_eq!(crm.hits(), hits);
    assert_eq!(rig.aws.depth(rig.aws.get("DELIVERY_DLQ_URL")).await, 0);
    assert_eq!(archived_lines(&rig).await.len(), 1);
    assert_eq!(rig.kyc(&["session", "idnow", gone]).await.code, 3);

    // Another erasure, without an audit key: its item names no subject at all.
    let other = rig
        .kyc_json(&["erase", "--session", "idnow", "someone-else", "--yes"])
        .await;
    assert!(other["subject"].is_null(), "{other}");

    // The audit items: who, when, the counts, a keyed subject or none; no session id.
    let audit = rig
        .aws
        .ddb
        .query()
        .table_name(rig.aws.get("RECORDS_TABLE"))
        .key_condition_expression("pk = :pk")
        .expression_attribute_values(
            ":pk",
            aws_sdk_dynamodb::types::AttributeValue::S("audit#erasure".into()),
        )
        .send()
        .await
        .unwrap();
    let items = audit.items();
    assert_eq!(items.len(), 2);
    let text = format!("{items:?}");
    assert!(
        !text.contains(gone) && !text.contains("someone-else"),
        "{text}"
    );
    let keyed = items.iter().find(|i| i.contains_key("subject")).unwrap();
    assert_eq!(
        keyed["subject"].as_s().unwrap(),
        &kyc_relay::provider::keyed_hex(audit_key.as_bytes(), &[b"idnow", gone.as_bytes()])
    );
    assert_eq!(keyed["archive_lines"].as_n().unwrap(), "2");
    assert!(
        items
            .iter()
            .all(|i| i["by"].as_s().unwrap().starts_with("arn:aws")),
        "the caller's identity: {text}"
    );
    // A second erasure finds nothing.
    assert_eq!(
        rig.kyc(&["erase", "--session", "idnow", gone, "--yes"])
            .await
            .code,
        3
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_destinations_and_bad_arguments() {
    let crm = Peer::start(Answer::status(204)).await;
    let rig = Rig::new(&destinations(&[("crm", &crm.url("/hook"), "")])).await;

    let status = rig.kyc_json(&["status"]).await;
    let queues = status["queues"].as_array().unwrap();
    assert_eq!(queues.len(), 5);
    assert!(
        queues.iter().all(|q| q["oldest_age_secs"].is_null()),
        "no CloudWatch data locally"
    );
    assert!(status["alarms_note"].as_str().unwrap().contains("no stack"));
    let human = rig.kyc(&["status"]).await;
    assert!(human.stdout.contains("n/a"), "{}", human.stdout);

    let resources = rig.kyc_json(&["resources"]).await;
    assert_eq!(resources["records_table"], rig.aws.get("RECORDS_TABLE"));

    // Pause and resume share the circuit breaker's state items.
    let paused = rig
        .kyc_json(&["destinations", "pause", "crm", "--reason", "maintenance"])
        .await;
    assert_eq!(paused["paused_by"], "operator");
    let status = rig.kyc_json(&["status"]).await;
    assert_eq!(status["paused_destinations"][0]["destination"], "crm");
    assert!(
        status["paused_destinations"][0]["reason"]
            .as_str()
            .unwrap()
            .starts_with("maintenance")
    );
    let list = rig.kyc_json(&["destinations", "list"]).await;
    assert_eq!(list["destinations"][0]["state"]["paused"]["by"], "operator");
    // The dispatcher holds the destination's jobs.
    let e = idnow_at(
        "evt-p",
        "session.created",
        "s-p",
        "CREATED",
        rig.clock.now_ms(),
    );
    rig.ingest(&[&e]).await;
    rig.drive_once_without_holding().await;
    assert_eq!(crm.hits(), 0, "held while paused");
    // Shown as the docs name it: RETRYING (held), not "not attempted yet".
    let held = rig
        .kyc_json(&["event", "idnow", "evt-p", "--session", "s-p"])
        .await;
    let d = find(deliveries_of(&held), "destination", "crm");
    assert_eq!(
        (d["state"].as_str(), d["last_outcome"].as_str()),
        (Some("RETRYING"), Some("held: destination paused"))
    );
    let session = rig.kyc(&["session", "idnow", "s-p"]).await;
    assert!(
        session.stdout.contains("held: destination paused"),
        "{}",
        session.stdout
    );
    let resumed = rig.kyc_json(&["destinations", "resume", "crm"]).await;
    assert_eq!(
        (
            resumed["was_paused"].as_bool(),
            resumed["was_paused_by"].as_str()
        ),
        (Some(true), Some("operator"))
    );
    let unknown = rig
        .kyc(&["destinations", "pause", "nope", "--reason", "x"])
        .await;
    assert_eq!(unknown.code, 3, "{}", unknown.stderr);

    // Where is the relay? Nowhere said: exit 2.
    let nowhere = kyc_with(&["status"]).await;
    assert_eq!(nowhere.code, 2);
    assert!(
        nowhere.stderr.contains("--stack NAME"),
        "{}",
        nowhere.stderr
    );
    let no_file = kyc_with(&["--env-file", "/nonexistent/aws.env", "status", "--json"]).await;
    assert_eq!(no_file.code, 2);
    assert_eq!(no_file.json()["error"]["kind"], "usage");
    // clap's own usage errors: exit 2.
    assert_eq!(rig.kyc(&["event", "acme", "x"]).await.code, 2);
    assert_eq!(
        rig.kyc(&["dlq", "list"]).await.code,
        2,
        "--queue is required"
    );
    assert_eq!(
        rig.kyc(&["dlq", "redrive", "--queue", "delivery", "--rate", "fast"])
            .await
            .code,
        2
    );
    assert_eq!(rig.kyc(&["no-such-command"]).await.code, 2);
}

impl Rig {
    /// Hands the queued jobs to the dispatcher once each (a held job goes back to the retry lane
    /// with a delay, and is left there).
    async fn drive_once_without_holding(&self) {
        let url = self.aws.get("DELIVERY_QUEUE_URL");
        let msgs = self.aws.drain(url).await;
        assert!(!msgs.is_empty());
        let records: Vec<JobRecord> = msgs
            .iter()
            .map(|m| JobRecord {
                message_id: m.message_id().unwrap().to_string(),
                body: m.body().unwrap().to_string(),
                lane: Lane::Fast,
            })
            .collect();
        let failed = self
            .dispatcher
            .dispatch_batch(&records, self.clock.now_ms() + 120_000)
            .await;
        assert!(failed.is_empty());
    }
}

fn refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}
