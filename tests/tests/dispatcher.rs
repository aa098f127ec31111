//! The dispatcher against the emulator and real HTTP destinations on 127.0.0.1. Time is a manual
//! clock: the schedules run to exhaustion in milliseconds. The queue adapter is the real SQS one,
//! wrapped to record the `DelaySeconds` and lane the dispatcher asks for and to make each job
//! visible at once (the clock, not SQS, decides when it is due); one test uses real SQS delays.
//! (The decision logic is unit-tested in memory in `shared/src/dispatch/tests.rs`.)

use integration_tests::lanes::{self, Sent, UndelayedQueue};
use integration_tests::peer::{Answer, Peer};
use integration_tests::{
    LocalAws, TestConsumer, TestDispatcher, consumer_for, delivery_queue, dispatcher_for,
    dispatcher_with, eventually, idnow_envelope, incode_envelope, record, records, repo_root,
};
use kyc_relay::clock::{Clock, ManualClock, SystemClock};
use kyc_relay::delivery::{DeliveryJob, DeliveryQueue, Lane, Scheduled};
use kyc_relay::dispatch::{DispatcherSettings, JobRecord};
use kyc_relay::envelope::Envelope;
use kyc_relay::records::{DeliveryRecord, DeliveryStatus, EventKey, RecordReader};
use std::sync::Arc;
use std::time::Duration;

const T0: u64 = 1_795_000_000_000;

struct Rig {
    aws: LocalAws,
    clock: ManualClock,
    queue: UndelayedQueue,
    dispatcher: TestDispatcher<UndelayedQueue>,
    consumer: TestConsumer,
}

async fn rig(destinations: &str, clock: ManualClock) -> Rig {
    rig_with(destinations, clock, 10).await
}

/// `breaker_threshold`: consecutive failures that pause a destination (a schedule run to
/// exhaustion against a destination that always fails needs more than its attempts).
async fn rig_with(destinations: &str, clock: ManualClock, breaker_threshold: u32) -> Rig {
    let aws = LocalAws::provision().await;
    let queue = UndelayedQueue::new(&aws, clock.clone());
    let mut settings = DispatcherSettings {
        state_cache: Duration::ZERO,
        ..Default::default()
    };
    settings.breaker.failure_threshold = breaker_threshold;
    let dispatcher = dispatcher_with(
        &aws,
        queue.clone(),
        destinations,
        Arc::new(clock.clone()),
        settings,
    )
    .await;
    let consumer = consumer_for(&aws, destinations, Arc::new(clock.clone()));
    Rig {
        aws,
        clock,
        queue,
        dispatcher,
        consumer,
    }
}

impl Rig {
    /// The consumer takes the event in; its jobs land on the delivery queue.
    async fn ingest(&self, envelope: &Envelope) {
        let failed = self
            .consumer
            .process_batch(
                &[record(&format!("m-{}", envelope.event_id), envelope)],
                self.clock.now_ms() + 30_000,
                "batch",
            )
            .await;
        assert!(failed.is_empty());
    }

    /// Plays SQS and Lambda's two event source mappings: hands each job (from either lane) to the
    /// dispatcher once it would be visible, moving the clock there. Returns the number of jobs.
    async fn drive(&self) -> usize {
        lanes::drive(&self.aws, &self.dispatcher, &self.clock, 100, |job| {
            self.queue.visible_at(job)
        })
        .await
    }

    fn delays(&self) -> Vec<u32> {
        self.queue
            .sent
            .lock()
            .unwrap()
            .iter()
            .map(|s| s.delay_secs)
            .collect()
    }

    async fn dead_letters(&self) -> Vec<DeliveryJob> {
        self.aws
            .drain(self.aws.get("DELIVERY_DLQ_URL"))
            .await
            .iter()
            .map(|m| serde_json::from_str(m.body().unwrap()).unwrap())
            .collect()
    }

    async fn delivery(&self, envelope: &Envelope, dest: &str) -> DeliveryRecord {
        records(&self.aws, Arc::new(self.clock.clone()))
            .event(&EventKey::of(envelope))
            .await
            .unwrap()
            .expect("event record")
            .deliveries
            .into_iter()
            .find(|d| d.destination == dest && d.replay.is_none())
            .expect("delivery record")
    }
}

fn destination(id: &str, url: &str, policy: &str, extra: &str) -> String {
    format!(
        r#"{{"destinations": [{{"id": "{id}", "url": "{url}", "retry_policy": {policy}{extra}}}]}}"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_failing_twice_then_succeeding_is_delivered_on_attempt_three() {
    let peer = Peer::start(Answer::status(204)).await;
    peer.then(Answer::status(503)).then(Answer::status(502));
    let rig = rig(
        &destination("crm", &peer.url("/hook"), r#""idnow""#, ""),
        ManualClock::at_ms(T0),
    )
    .await;
    let e = idnow_envelope("evt-3", "session.completed", "s", "COMPLETED", 1);
    rig.ingest(&e).await;
    assert_eq!(rig.drive().await, 3);

    let sent = rig.queue.sent.lock().unwrap().clone();
    assert_eq!(
        sent.iter().map(|s| s.delay_secs).collect::<Vec<_>>(),
        [1, 2],
        "IDnow's 1 s, 2 s"
    );
    assert_eq!(sent.iter().map(|s| s.attempt).collect::<Vec<_>>(), [2, 3]);
    let received = peer.received();
    assert_eq!(received.len(), 3);
    let ids: Vec<_> = received
        .iter()
        .map(|r| r.headers["webhook-id"].to_str().unwrap().to_string())
        .collect();
    assert!(
        ids.iter().all(|id| id == &ids[0] && id.starts_with("dlv_")),
        "one delivery id for every attempt"
    );
    let envelope: Envelope = serde_json::from_slice(&received[2].body).unwrap();
    assert_eq!(envelope.event_id, "evt-3");
    assert!(
        sent.iter().all(|s| s.lane == Lane::Retry),
        "retries take the retry lane"
    );
    let d = rig.delivery(&e, "crm").await;
    assert_eq!((d.status, d.attempts), (DeliveryStatus::Delivered, 3));
    assert_eq!(d.last_status_code, Some(204));
    assert_eq!(d.history.len(), 3);
    assert!(d.lag_ms.is_some());
    assert!(rig.dead_letters().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_incode_schedule_runs_to_exhaustion_with_its_published_delays_then_the_dlq() {
    let peer = Peer::start(Answer::status(500)).await;
    let rig = rig(
        &destination("crm", &peer.url("/hook"), r#""incode""#, ""),
        ManualClock::at_ms(T0),
    )
    .await;
    let e = incode_envelope("interview-x", "ONBOARDING_FINISHED");
    rig.ingest(&e).await;
    // 6 attempts + one early arrival of the 1171.875 s delay chained as 900 + 272.
    assert_eq!(rig.drive().await, 7);
    assert_eq!(peer.hits(), 6, "1 attempt + 5 retries");
    assert_eq!(rig.delays(), [30, 75, 188, 469, 900, 272]);
    let sent = rig.queue.sent.lock().unwrap().clone();
    assert_eq!(
        sent[4].due_at_ms, sent[5].due_at_ms,
        "the chained hop keeps its due time"
    );
    assert_eq!(
        sent[4].attempt, sent[5].attempt,
        "an early arrival makes no attempt"
    );

    let dead = rig.dead_letters().await;
    assert_eq!(dead.len(), 1);
    let job = &dead[0];
    let info = job.dead_letter.as_ref().unwrap();
    assert_eq!(info.attempts, 6);
    assert!(info.reason.contains("retries exhausted"), "{}", info.reason);
    // Each retry is due exactly the published delay after the attempt before it (30, 75, 187.5,
    // 468.75, 1171.875 s) and made within the second after (SQS delays are whole seconds).
    let retries: Vec<&Sent> = sent.iter().filter(|s| s.delay_secs != 272).collect();
    let mut gaps = Vec::new();
    for (i, retry) in retries.iter().enumerate() {
        gaps.push(retry.due_at_ms - job.history[i].at_ms);
        let made = job.history[i + 1].at_ms;
        assert!(
            made >= retry.due_at_ms && made < retry.due_at_ms + 1000,
            "attempt {} at {made}",
            i + 2
        );
    }
    assert_eq!(gaps, [30_000, 75_000, 187_500, 468_750, 1_171_875]);
    // Cumulative: 0.5, 1.75, 4.88, 12.69, 32.22 minutes, within the rounding of each hop.
    let minutes: Vec<String> = job.history[1..]
        .iter()
        .map(|h| format!("{:.1}", (h.at_ms - T0) as f64 / 60_000.0))
        .collect();
    assert_eq!(minutes, ["0.5", "1.8", "4.9", "12.7", "32.2"]);
    assert!(
        job.history
            .iter()
            .all(|h| h.outcome == "http_500" && h.status_code == Some(500))
    );
    let d = rig.delivery(&job.envelope, "crm").await;
    assert_eq!((d.status, d.attempts), (DeliveryStatus::Failed, 6));
    assert_eq!(d.history.len(), 6, "every attempt is kept on the delivery");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_idnow_schedule_runs_to_exhaustion_then_the_dlq() {
    let peer = Peer::start(Answer::status(503)).await;
    // With the default breaker (10 consecutive failures) this destination would be paused before
    // its 11th attempt and the job held instead: shared/src/dispatch/tests.rs tests that.
    let rig = rig_with(
        &destination("crm", &peer.url("/hook"), r#""idnow""#, ""),
        ManualClock::at_ms(T0),
        100,
    )
    .await;
    rig.ingest(&idnow_envelope(
        "evt-x",
        "session.completed",
        "s",
        "COMPLETED",
        1,
    ))
    .await;
    assert_eq!(rig.drive().await, 11);
    assert_eq!(peer.hits(), 11, "1 attempt + 10 retries");
    assert_eq!(rig.delays(), [1, 2, 4, 8, 16, 32, 64, 128, 256, 512]);
    let dead = rig.dead_letters().await;
    assert_eq!(dead[0].history.len(), 11);
    assert_eq!(dead[0].dead_letter.as_ref().unwrap().attempts, 11);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_error_under_idnow_is_not_retried_and_a_redirect_is_not_followed() {
    let peer = Peer::start(Answer::status(400)).await;
    let rig = rig(
        &destination("crm", &peer.url("/hook"), r#""idnow""#, ""),
        ManualClock::at_ms(T0),
    )
    .await;
    rig.ingest(&idnow_envelope(
        "evt-400",
        "session.completed",
        "s",
        "COMPLETED",
        1,
    ))
    .await;
    assert_eq!(rig.drive().await, 1);
    assert_eq!(peer.hits(), 1);
    let dead = rig.dead_letters().await;
    assert!(
        dead[0]
            .dead_letter
            .as_ref()
            .unwrap()
            .reason
            .contains("http_400 is not retryable")
    );

    peer.set_default(Answer::status(302).header("location", &peer.url("/elsewhere")));
    rig.ingest(&idnow_envelope(
        "evt-302",
        "session.completed",
        "s",
        "COMPLETED",
        1,
    ))
    .await;
    assert_eq!(rig.drive().await, 1);
    assert_eq!(
        peer.received()
            .iter()
            .filter(|r| r.path == "/elsewhere")
            .count(),
        0,
        "redirect not followed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incode_strictness_rate_limits_and_timeouts_are_retried() {
    let peer = Peer::start(Answer::json(200, "{}")).await;
    peer.then(
        Answer::status(200)
            .header("content-type", "text/plain")
            .body("ok"),
    )
    .then(Answer::status(429).header("retry-after", "7"))
    .then(Answer::json(200, "{}").delay(Duration::from_millis(1500)));
    let rig = rig(
        &destination(
            "crm",
            &peer.url("/hook"),
            r#""incode""#,
            r#", "timeout_ms": 500"#,
        ),
        ManualClock::at_ms(T0),
    )
    .await;
    rig.ingest(&incode_envelope("interview-s", "ONBOARDING_FINISHED"))
        .await;
    assert_eq!(rig.drive().await, 4);
    // text/plain 200 -> Incode's 30 s; 429 -> Retry-After 7 s; timeout -> Incode's third delay.
    assert_eq!(rig.delays(), [30, 7, 188]);
    let d = rig
        .delivery(
            &incode_envelope("interview-s", "ONBOARDING_FINISHED"),
            "crm",
        )
        .await;
    assert_eq!((d.status, d.attempts), (DeliveryStatus::Delivered, 4));
    let outcomes: Vec<&str> = d.history.iter().map(|h| h.outcome.as_str()).collect();
    assert_eq!(outcomes, ["http_200", "http_429", "timeout", "http_200"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_final_delivery_is_not_sent_again_and_duplicate_jobs_are_dropped() {
    let peer = Peer::start(Answer::status(200)).await;
    let rig = rig(
        &destination("crm", &peer.url("/hook"), r#""idnow""#, ""),
        ManualClock::at_ms(T0),
    )
    .await;
    let e = idnow_envelope("evt-dupjob", "session.completed", "s", "COMPLETED", 1);
    rig.ingest(&e).await;
    // A duplicate of the first job (what a consumer repair produces) sits beside the original.
    let job = DeliveryJob::first(&e, "crm", T0, 0, T0 / 1000 + 30 * 86_400);
    rig.queue
        .schedule(vec![Scheduled {
            job: job.clone(),
            delay_secs: 0,
            lane: Lane::Fast,
        }])
        .await
        .pop()
        .unwrap()
        .unwrap();
    assert_eq!(rig.drive().await, 2);
    assert_eq!(peer.hits(), 1, "the destination got the event once");
    // Later copies of the job find the delivery final.
    rig.queue
        .schedule(vec![Scheduled {
            job,
            delay_secs: 0,
            lane: Lane::Fast,
        }])
        .await
        .pop()
        .unwrap()
        .unwrap();
    assert_eq!(rig.drive().await, 1);
    assert_eq!(peer.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth_tokens_are_cached_and_refreshed_once_on_401() {
    let dest = Peer::start(Answer::status(200)).await;
    let tokens = Peer::start(Answer::json(
        200,
        r#"{"access_token": "tok-1", "token_type": "Bearer", "expires_in": 3600}"#,
    ))
    .await;
    let auth = format!(
        r#", "auth": {{"type": "oauth2_client_credentials", "token_url": "{}", "client_id": "relay", "client_secret": "s3cret", "scope": "events:write"}}"#,
        tokens.url("/token")
    );
    let rig = rig(
        &destination("crm", &dest.url("/hook"), r#""idnow""#, &auth),
        ManualClock::at_ms(T0),
    )
    .await;
    for i in 0..5 {
        rig.ingest(&idnow_envelope(
            &format!("evt-o{i}"),
            "session.completed",
            "s",
            "COMPLETED",
            i,
        ))
        .await;
    }
    assert_eq!(rig.drive().await, 5);
    assert_eq!(tokens.hits(), 1, "one token for five deliveries");
    let token_request = &tokens.received()[0];
    assert_eq!(
        token_request.headers["authorization"],
        "Basic cmVsYXk6czNjcmV0"
    );
    assert_eq!(
        std::str::from_utf8(&token_request.body).unwrap(),
        "grant_type=client_credentials&scope=events%3Awrite"
    );
    assert!(
        dest.received()
            .iter()
            .all(|r| r.headers["authorization"] == "Bearer tok-1")
    );

    // The destination revokes the token: one refresh, and the same attempt goes through.
    dest.then(Answer::status(401));
    tokens.set_default(Answer::json(
        200,
        r#"{"access_token": "tok-2", "expires_in": 3600}"#,
    ));
    rig.ingest(&idnow_envelope(
        "evt-o9",
        "session.completed",
        "s",
        "COMPLETED",
        9,
    ))
    .await;
    assert_eq!(rig.drive().await, 1);
    assert_eq!(tokens.hits(), 2);
    assert_eq!(
        dest.received().last().unwrap().headers["authorization"],
        "Bearer tok-2"
    );
    let o9 = idnow_envelope("evt-o9", "session.completed", "s", "COMPLETED", 9);
    assert_eq!(rig.delivery(&o9, "crm").await.attempts, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_deliveries_verify_with_the_reference_standard_webhooks_library() {
    let peer = Peer::start(Answer::status(200)).await;
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let auth = format!(
        r#", "body": "raw", "headers": {{"X-Team": "kyc"}}, "auth": {{"type": "standard_webhooks", "secret": "{secret}"}}"#
    );
    // The reference library checks the timestamp against the real time.
    let rig = rig(
        &destination("crm", &peer.url("/hook"), r#""idnow""#, &auth),
        ManualClock::at_ms(SystemClock.now_ms()),
    )
    .await;
    let mut e = idnow_envelope("evt-signed", "session.completed", "s", "COMPLETED", 1);
    e.trace_id = Some("5759e988bd862e3fe1be46a994272793".into());
    rig.ingest(&e).await;
    assert_eq!(rig.drive().await, 1);
    let r = &peer.received()[0];
    // The webhook's trace reaches the destination as W3C trace context.
    let traceparent = r.headers["traceparent"].to_str().unwrap();
    assert!(
        traceparent.starts_with("00-5759e988bd862e3fe1be46a994272793-")
            && traceparent.ends_with("-01"),
        "{traceparent}"
    );
    assert_eq!(
        r.body,
        e.raw_body.as_bytes(),
        "raw body relayed byte for byte"
    );
    assert_eq!(r.headers["content-type"], "application/json");
    assert_eq!(r.headers["x-team"], "kyc");
    let verify = |body: &str| {
        let input = serde_json::json!({
            "secret": secret,
            "headers": {
                "webhook-id": r.headers["webhook-id"].to_str().unwrap(),
                "webhook-timestamp": r.headers["webhook-timestamp"].to_str().unwrap(),
                "webhook-signature": r.headers["webhook-signature"].to_str().unwrap(),
            },
            "body": body,
        });
        let mut child = std::process::Command::new(repo_root().join(".venv/bin/python"))
            .arg(repo_root().join("tests/reference/verify_standard_webhooks.py"))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.to_string().as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (ok, said) = verify(std::str::from_utf8(&r.body).unwrap());
    assert!(ok, "reference library refused our signature: {said}");
    let (ok, _) = verify(&format!("{} ", std::str::from_utf8(&r.body).unwrap()));
    assert!(!ok, "a tampered body must not verify (the check can fail)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_to_end_with_real_sqs_delays_on_a_second_scale_policy() {
    let peer = Peer::start(Answer::status(200)).await;
    peer.then(Answer::status(503));
    let policy = r#"{"custom": {"initial_ms": 1000, "multiplier": 2, "max_retries": 3}}"#;
    let destinations = destination("crm", &peer.url("/hook"), policy, "");
    let aws = LocalAws::provision().await;
    let clock = SystemClock;
    let dispatcher =
        dispatcher_for(&aws, delivery_queue(&aws), &destinations, Arc::new(clock)).await;
    let consumer = consumer_for(&aws, &destinations, Arc::new(clock));
    let e = incode_envelope("interview-e2e", "ONBOARDING_FINISHED");
    let mut fresh = e.clone();
    fresh.received_at_ms = clock.now_ms();
    assert!(
        consumer
            .process_batch(&[record("m1", &fresh)], clock.now_ms() + 30_000, "b")
            .await
            .is_empty()
    );

    let lanes = [
        (Lane::Fast, aws.get("DELIVERY_QUEUE_URL").to_string()),
        (Lane::Retry, aws.get("RETRY_QUEUE_URL").to_string()),
    ];
    let started = clock.now_ms();
    eventually("delivery on attempt 2", Duration::from_secs(20), || async {
        for (lane, url) in &lanes {
            let out = aws
                .sqs
                .receive_message()
                .queue_url(url)
                .max_number_of_messages(10)
                .wait_time_seconds(1)
                .send()
                .await
                .unwrap();
            for m in out.messages.unwrap_or_default() {
                lanes::hand_over(&aws, &dispatcher, *lane, url, &m, clock.now_ms() + 120_000).await;
            }
        }
        (peer.hits() == 2).then_some(())
    })
    .await;
    assert_eq!(peer.received().len(), 2);
    let d = records(&aws, Arc::new(clock))
        .event(&EventKey::of(&e))
        .await
        .unwrap()
        .unwrap()
        .deliveries
        .remove(0);
    assert_eq!((d.status, d.attempts), (DeliveryStatus::Delivered, 2));
    // SQS held the retry for its DelaySeconds (1 s): the second attempt came at least 1 s after the
    // first. (An ordering fact, not a speed assertion.)
    assert!(
        d.last_attempt_at_ms >= started + 1000,
        "retry not delayed: {} ms",
        d.last_attempt_at_ms - started
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_redriven_from_the_dlq_starts_a_new_cycle_and_can_deliver() {
    let peer = Peer::start(Answer::status(503)).await;
    let policy = r#"{"custom": {"initial_ms": 1000, "multiplier": 2, "max_retries": 1}}"#;
    let rig = rig(
        &destination("crm", &peer.url("/hook"), policy, ""),
        ManualClock::at_ms(T0),
    )
    .await;
    let e = idnow_envelope("evt-redrive", "session.completed", "s", "COMPLETED", 1);
    rig.ingest(&e).await;
    assert_eq!(rig.drive().await, 2);
    let dlq = rig.aws.drain(rig.aws.get("DELIVERY_DLQ_URL")).await;
    assert_eq!(dlq.len(), 1);
    assert_eq!(rig.delivery(&e, "crm").await.status, DeliveryStatus::Failed);

    // The operator fixes the destination and moves the message back (what a DLQ redrive does).
    peer.set_default(Answer::status(500));
    peer.then(Answer::status(503)).then(Answer::status(200));
    rig.aws
        .sqs
        .send_message()
        .queue_url(rig.aws.get("DELIVERY_QUEUE_URL"))
        .message_body(dlq[0].body().unwrap())
        .send()
        .await
        .unwrap();
    // Attempt 3 fails (a new cycle: its own retry budget), attempt 4 delivers.
    assert_eq!(rig.drive().await, 2);
    let d = rig.delivery(&e, "crm").await;
    assert_eq!((d.status, d.attempts), (DeliveryStatus::Delivered, 4));
    let cycles: Vec<u32> = d.history.iter().map(|h| h.cycle).collect();
    assert_eq!(cycles, [1, 1, 3, 3], "the redrive cycle is recorded");
    assert_eq!(peer.hits(), 4);
    assert!(rig.dead_letters().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_destination_moves_to_the_retry_lane_and_does_not_hold_up_another() {
    let slow = Peer::start(Answer::status(200).delay(Duration::from_secs(3))).await;
    let fast = Peer::start(Answer::status(200)).await;
    let destinations = format!(
        r#"{{"destinations": [
          {{"id": "slow", "url": "{}", "retry_policy": "idnow", "providers": ["idnow"]}},
          {{"id": "fast", "url": "{}", "retry_policy": "idnow", "providers": ["incode"]}}]}}"#,
        slow.url("/hook"),
        fast.url("/hook")
    );
    let rig = rig(&destinations, ManualClock::at_ms(T0)).await;
    let to_slow = idnow_envelope("evt-slow", "session.completed", "s", "COMPLETED", 1);
    let to_fast = incode_envelope("interview-fast", "ONBOARDING_FINISHED");
    rig.ingest(&to_slow).await;
    rig.ingest(&to_fast).await;
    // Both first jobs in one fast-lane batch, as Lambda would hand them over.
    let url = rig.aws.get("DELIVERY_QUEUE_URL");
    let messages = rig.aws.drain(url).await;
    assert_eq!(messages.len(), 2);
    let batch: Vec<JobRecord> = messages
        .iter()
        .map(|m| JobRecord {
            message_id: m.message_id().unwrap().into(),
            body: m.body().unwrap().into(),
            lane: Lane::Fast,
        })
        .collect();
    assert!(
        rig.dispatcher
            .dispatch_batch(&batch, rig.clock.now_ms() + 120_000)
            .await
            .is_empty()
    );
    // The healthy destination was delivered in that batch; the slow one was cut at the fast lane's
    // budget and moved to the retry lane with the same attempt number.
    assert_eq!(
        rig.delivery(&to_fast, "fast").await.status,
        DeliveryStatus::Delivered
    );
    let moved = rig.queue.sent.lock().unwrap().clone();
    assert_eq!(moved.len(), 1);
    assert_eq!((moved[0].lane, moved[0].attempt), (Lane::Retry, 1));
    // The retry lane gives it its full timeout: delivered, once recorded.
    assert_eq!(rig.drive().await, 1);
    let d = rig.delivery(&to_slow, "slow").await;
    assert_eq!((d.status, d.attempts), (DeliveryStatus::Delivered, 1));
    assert!(slow.hits() >= 1);
}
