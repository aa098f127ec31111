//! The dispatcher's logic in memory: records, queues and a scripted transport, time controlled by the
//! test (a manual clock for the relay, tokio's paused clock for timeouts). The same behaviours run
//! against the emulator and real HTTP servers in `tests/tests/dispatcher.rs`.

use super::transport::{Scripted, ScriptedTransport, TransportError};
use super::*;
use crate::clock::ManualClock;
use crate::delivery::memory::MemoryDeliveryQueue;
use crate::envelope::tests_support::idnow;
use crate::records::memory::MemoryRecords;
use crate::records::{DestinationStates, PausedBy, RecordReader};
use std::sync::atomic::Ordering;

const T0: u64 = 1_800_000_000_000;
const CRM: &str = "https://crm.example/h";
const BI: &str = "https://bi.example/h";

fn destinations(extra: &str) -> Destinations {
    Destinations::parse(&format!(
        r#"{{"destinations": [
          {{"id": "crm", "url": "{CRM}", "retry_policy": "idnow"}},
          {{"id": "bi", "url": "{BI}", "retry_policy": {{"custom": {{"initial_ms": 1000, "max_retries": 2}}}}}}
          {extra}
        ]}}"#
    ))
    .unwrap()
}

struct Rig {
    dispatcher: Dispatcher<Arc<MemoryRecords>, Arc<MemoryDeliveryQueue>, Arc<ScriptedTransport>>,
    store: Arc<MemoryRecords>,
    queue: Arc<MemoryDeliveryQueue>,
    http: Arc<ScriptedTransport>,
    clock: ManualClock,
}

async fn rig_with(destinations: Destinations) -> Rig {
    let clock = ManualClock::at_ms(T0);
    let store = Arc::new(MemoryRecords::new(Arc::new(clock.clone())));
    let queue = Arc::new(MemoryDeliveryQueue::default());
    let http = Arc::new(ScriptedTransport::default());
    let no_ssm: Option<&crate::aws::ssm::SsmSecrets> = None;
    let vault = Vault::resolve(&destinations, no_ssm, Arc::new(clock.clone()))
        .await
        .unwrap();
    let settings = DispatcherSettings {
        // Every batch reads the current state: the tests change it between batches.
        state_cache: Duration::ZERO,
        ..Default::default()
    };
    Rig {
        dispatcher: Dispatcher::new(
            store.clone(),
            queue.clone(),
            http.clone(),
            destinations,
            vault,
            settings,
            Arc::new(clock.clone()),
        ),
        store,
        queue,
        http,
        clock,
    }
}

async fn rig() -> Rig {
    rig_with(destinations("")).await
}

/// An event claimed by the consumer, and its first job to `destination`.
async fn claimed(r: &Rig, event_id: &str, destination: &str) -> DeliveryJob {
    use crate::records::{EventClaim, EventKey, EventStore};
    let e = idnow(event_id, "s1");
    let key = EventKey::of(&e);
    let expires = T0 / 1000 + 30 * 86_400;
    r.store
        .claim(&EventClaim {
            key: &key,
            event_id: &e.event_id,
            event_type: &e.event_type,
            status: None,
            payload_hash: &e.payload_hash,
            intake_id: &e.intake_id,
            received_at_ms: e.received_at_ms,
            now_ms: r.clock.now_ms(),
            lease_until_ms: r.clock.now_ms(),
            expires_at_secs: expires,
            destinations: &[destination.to_string()],
            archive_object: None,
        })
        .await
        .unwrap();
    DeliveryJob::first(&e, destination, r.clock.now_ms(), 0, expires)
}

/// A copy of the job for replay run "r1", carrying `token` (the operator's run that queued it).
fn replay_of(job: &DeliveryJob, token: &str) -> DeliveryJob {
    let mut replay = job.clone();
    replay.replay = Some(crate::delivery::ReplayInfo {
        id: "r1".into(),
        token: token.into(),
    });
    replay
}

/// Writes the replay's marker with the copy's token, as `kyc-relay replay` does before queueing it.
async fn mark(r: &Rig, replay: &DeliveryJob) {
    use crate::records::{DeliveryStore, ReplayMarker};
    let info = replay.replay.as_ref().unwrap();
    r.store
        .mark_replay(
            &replay.delivery_key(),
            &ReplayMarker {
                event_id: &replay.envelope.event_id,
                destination: &replay.destination_id,
                replay_id: &info.id,
                token: &info.token,
                at_ms: T0,
                expires_at_secs: replay.expires_at_secs,
            },
        )
        .await
        .unwrap();
}

/// A repair takes the job's event over (as the consumer does for an interrupted event); returns the
/// new generation.
async fn repair(r: &Rig, job: &DeliveryJob) -> Option<u32> {
    use crate::records::{EventKey, EventStore, RepairTakeover};
    let intake = job.envelope.intake_id.clone();
    r.clock.advance_ms(1);
    r.store
        .take_over(&RepairTakeover {
            key: &EventKey::of(&job.envelope),
            intake_ids: &[intake.as_str()],
            now_ms: r.clock.now_ms(),
            lease_until_ms: r.clock.now_ms(),
            archive_object: None,
        })
        .await
        .unwrap()
}

fn rec(id: &str, job: &DeliveryJob, lane: Lane) -> JobRecord {
    JobRecord {
        message_id: id.into(),
        body: serde_json::to_string(job).unwrap(),
        lane,
    }
}

impl Rig {
    async fn run(&self, records: &[JobRecord]) -> Vec<String> {
        self.dispatcher
            .dispatch_batch(records, self.clock.now_ms() + 120_000)
            .await
    }

    async fn delivery(&self, job: &DeliveryJob) -> Option<crate::records::DeliveryRecord> {
        self.store
            .event(&job.event_key())
            .await
            .unwrap()
            .and_then(|e| {
                e.deliveries
                    .into_iter()
                    .find(|d| d.destination == job.destination_id && d.replay.is_none())
            })
    }

    async fn state(&self, destination: &str) -> DestinationState {
        self.store
            .load()
            .await
            .unwrap()
            .remove(destination)
            .unwrap_or_default()
    }
}

#[tokio::test]
async fn a_delivery_costs_one_read_and_one_write() {
    let r = rig().await;
    let job = claimed(&r, "e1", "crm").await;
    let calls = r.store.calls.load(Ordering::Relaxed);
    assert!(r.run(&[rec("j1", &job, Lane::Fast)]).await.is_empty());
    // One state read (destination states), one view, one record.
    assert_eq!(r.store.calls.load(Ordering::Relaxed) - calls, 3);
    let sent = r.http.sent_to(CRM);
    assert_eq!(sent.len(), 1);
    let header = |name: &str| {
        sent[0]
            .headers
            .iter()
            .find(|(n, _)| n.as_str() == name)
            .map(|(_, v)| v.to_str().unwrap().to_string())
    };
    assert_eq!(
        header(WEBHOOK_ID).as_deref(),
        Some(job.delivery_id.as_str())
    );
    // The webhook's trace (an envelope of an earlier version has none: its intake id stands in).
    let traceparent = header(crate::trace::TRACEPARENT).unwrap();
    assert_eq!(
        crate::trace::from_traceparent(&traceparent).as_deref(),
        Some(job.envelope.intake_id.as_str())
    );
    let d = r.delivery(&job).await.unwrap();
    assert_eq!((d.status, d.attempts), (DeliveryStatus::Delivered, 1));
    assert_eq!(d.history.len(), 1);
    assert!(r.queue.is_empty());
}

#[tokio::test]
async fn failures_retry_on_the_retry_lane_then_deliver() {
    let r = rig().await;
    let job = claimed(&r, "e1", "bi").await;
    r.http
        .then(BI, Scripted::status(503))
        .then(BI, Scripted::Fail(TransportError::Connect));
    assert!(r.run(&[rec("j1", &job, Lane::Fast)]).await.is_empty());
    let next = r.queue.take();
    assert_eq!(next.len(), 1);
    assert_eq!((next[0].lane, next[0].delay_secs), (Lane::Retry, 1));
    assert_eq!(next[0].job.attempt, 2);
    r.clock.advance_ms(1_000);
    assert!(
        r.run(&[rec("j2", &next[0].job, Lane::Retry)])
            .await
            .is_empty()
    );
    let next = r.queue.take();
    assert_eq!((next[0].delay_secs, next[0].job.attempt), (2, 3));
    r.clock.advance_ms(2_000);
    assert!(
        r.run(&[rec("j3", &next[0].job, Lane::Retry)])
            .await
            .is_empty()
    );
    let d = r.delivery(&job).await.unwrap();
    assert_eq!((d.status, d.attempts), (DeliveryStatus::Delivered, 3));
    let outcomes: Vec<_> = d.history.iter().map(|h| h.outcome.as_str()).collect();
    assert_eq!(outcomes, ["http_503", "connect_error", "http_200"]);
}

#[tokio::test]
async fn two_copies_of_a_job_in_one_batch_make_one_attempt() {
    let r = rig().await;
    let job = claimed(&r, "e1", "crm").await;
    assert!(
        r.run(&[rec("a", &job, Lane::Fast), rec("b", &job, Lane::Fast)])
            .await
            .is_empty()
    );
    assert_eq!(r.http.sent_to(CRM).len(), 1);
    // Two DLQ copies redriven together: one new cycle, one POST.
    let mut dead = job.clone();
    dead.attempt = 2;
    dead.dead_letter = Some(DeadLetterInfo {
        reason: "x".into(),
        at_ms: T0,
        attempts: 2,
    });
    let r = rig().await;
    claimed(&r, "e1", "crm").await;
    assert!(
        r.run(&[rec("a", &dead, Lane::Retry), rec("b", &dead, Lane::Retry)])
            .await
            .is_empty()
    );
    assert_eq!(r.http.sent_to(CRM).len(), 1);
}

#[tokio::test]
async fn copies_superseded_by_a_repair_and_final_deliveries_are_not_sent() {
    let r = rig().await;
    let job = claimed(&r, "e1", "crm").await;
    // A repair took the event over (generation 1) and re-sent the job: the old copy is dropped.
    assert_eq!(repair(&r, &job).await, Some(1));
    assert!(r.run(&[rec("old", &job, Lane::Fast)]).await.is_empty());
    assert!(r.http.sent().is_empty());
    let mut copy = job.clone();
    copy.generation = 1;
    assert!(r.run(&[rec("new", &copy, Lane::Fast)]).await.is_empty());
    assert_eq!(r.http.sent_to(CRM).len(), 1);
    // Delivered: later copies of any generation are not sent again.
    assert!(r.run(&[rec("again", &copy, Lane::Fast)]).await.is_empty());
    assert_eq!(r.http.sent_to(CRM).len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_slow_destination_is_cut_on_the_fast_lane_and_moved_while_others_deliver() {
    let r = rig().await;
    let slow = claimed(&r, "e1", "crm").await;
    let healthy = claimed(&r, "e2", "bi").await;
    r.http.then(CRM, Scripted::Hang);
    let started = tokio::time::Instant::now();
    assert!(
        r.run(&[rec("a", &slow, Lane::Fast), rec("b", &healthy, Lane::Fast)])
            .await
            .is_empty()
    );
    // The batch waited for the fast lane's budget, not for the destination's 10 s timeout.
    assert_eq!(started.elapsed(), Duration::from_secs(2));
    let b = r.delivery(&healthy).await.unwrap();
    assert_eq!(b.status, DeliveryStatus::Delivered);
    let moved = r.queue.take();
    assert_eq!(moved.len(), 1);
    assert_eq!(
        (moved[0].lane, moved[0].job.attempt, moved[0].delay_secs),
        (Lane::Retry, 1, 0)
    );
    assert!(r.delivery(&slow).await.is_none(), "no attempt recorded");
    assert!(r.state("crm").await.slow_until_ms > T0);
    // Its next first attempt skips the fast lane without a request.
    let later = claimed(&r, "e3", "crm").await;
    assert!(r.run(&[rec("c", &later, Lane::Fast)]).await.is_empty());
    assert_eq!(r.http.sent_to(CRM).len(), 1);
    assert_eq!(r.queue.take()[0].lane, Lane::Retry);
    // On the retry lane the full timeout applies.
    assert!(
        r.run(&[rec("d", &moved[0].job, Lane::Retry)])
            .await
            .is_empty()
    );
    assert_eq!(
        r.delivery(&slow).await.unwrap().status,
        DeliveryStatus::Delivered
    );
}

#[tokio::test]
async fn the_breaker_pauses_holds_without_spending_retries_probes_and_resumes() {
    let r = rig().await;
    r.http.always(CRM, Scripted::status(503));
    // Ten consecutive failures (ten events, one batch each) pause the destination.
    let mut retries = Vec::new();
    for i in 0..10 {
        let job = claimed(&r, &format!("e{i}"), "crm").await;
        assert!(
            r.run(&[rec(&format!("j{i}"), &job, Lane::Fast)])
                .await
                .is_empty()
        );
        retries.extend(r.queue.take());
    }
    let state = r.state("crm").await;
    let pause = state.paused.clone().expect("paused");
    assert_eq!(pause.by, PausedBy::Breaker);
    assert!(
        pause.reason.contains("10 consecutive failures"),
        "{pause:?}"
    );
    // While paused: held on the retry lane, no request, no attempt spent.
    let posts = r.http.sent_to(CRM).len();
    let held = &retries[0].job;
    r.clock.advance_ms(1_000);
    assert!(r.run(&[rec("h", held, Lane::Retry)]).await.is_empty());
    assert_eq!(r.http.sent_to(CRM).len(), posts);
    let again = r.queue.take();
    assert_eq!(again[0].job.attempt, held.attempt);
    assert_eq!(again[0].lane, Lane::Retry);
    assert!((270..=330).contains(&again[0].delay_secs));
    // The probe: one held job after the probe interval; it fails, is held again, uncharged.
    r.clock.advance_ms(60_000);
    assert!(r.run(&[rec("p", held, Lane::Retry)]).await.is_empty());
    assert_eq!(r.http.sent_to(CRM).len(), posts + 1);
    let after_probe = r.queue.take();
    assert_eq!(after_probe[0].job.attempt, held.attempt + 1);
    assert_eq!(after_probe[0].job.policy_attempt(), held.policy_attempt());
    assert!(r.state("crm").await.paused.is_some());
    // A second job right away does not probe again (one probe per interval).
    assert!(
        r.run(&[rec("q", &retries[1].job, Lane::Retry)])
            .await
            .is_empty()
    );
    assert_eq!(r.http.sent_to(CRM).len(), posts + 1);
    r.queue.take();
    // The destination answers again: the next probe (the held job is due after the hold) delivers
    // and resumes it.
    r.http.always(CRM, Scripted::status(200));
    r.clock.advance_ms(300_000);
    assert!(
        r.run(&[rec("r", &after_probe[0].job, Lane::Retry)])
            .await
            .is_empty()
    );
    assert!(r.state("crm").await.paused.is_none());
    assert_eq!(r.state("crm").await.failures, 0);
    assert!(
        r.run(&[rec("s", &retries[1].job, Lane::Retry)])
            .await
            .is_empty()
    );
    assert_eq!(r.http.sent_to(CRM).len(), posts + 3);
    assert!(r.queue.take_dead().is_empty(), "nothing dead-lettered");
}

#[tokio::test]
async fn gone_pauses_at_once_and_an_operator_pause_holds_until_resumed() {
    let r = rig().await;
    let job = claimed(&r, "e1", "crm").await;
    r.http.then(CRM, Scripted::status(410));
    assert!(r.run(&[rec("a", &job, Lane::Fast)]).await.is_empty());
    assert_eq!(
        r.state("crm").await.paused.map(|p| p.reason),
        Some("410 Gone".to_string())
    );
    let held = r.queue.take();
    assert_eq!(held[0].job.policy_attempt(), 1, "a 410 spends no retry");
    assert!(r.queue.take_dead().is_empty());

    let r = rig().await;
    r.store.pause("bi", "maintenance", T0).await.unwrap();
    let job = claimed(&r, "e1", "bi").await;
    r.clock.advance_ms(120_000);
    assert!(r.run(&[rec("a", &job, Lane::Fast)]).await.is_empty());
    assert!(
        r.http.sent().is_empty(),
        "an operator's pause is never probed"
    );
    let held = r.queue.take();
    r.store.resume("bi", r.clock.now_ms()).await.unwrap();
    assert!(
        r.run(&[rec("b", &held[0].job, Lane::Retry)])
            .await
            .is_empty()
    );
    assert_eq!(r.http.sent_to(BI).len(), 1);
    // A job held for longer than MAX_HOLD_SECONDS: dead-lettered with that reason.
    r.store
        .pause("bi", "forgotten", r.clock.now_ms())
        .await
        .unwrap();
    let job = claimed(&r, "e2", "bi").await;
    assert!(r.run(&[rec("c", &job, Lane::Retry)]).await.is_empty());
    let held = r.queue.take();
    assert_eq!(held[0].job.held_since_ms, Some(r.clock.now_ms()));
    r.clock.advance_ms(8 * 86_400_000);
    assert!(
        r.run(&[rec("d", &held[0].job, Lane::Retry)])
            .await
            .is_empty()
    );
    let dead = r.queue.take_dead();
    assert!(
        dead[0]
            .dead_letter
            .as_ref()
            .unwrap()
            .reason
            .contains("held for more than 604800 s"),
        "{dead:?}"
    );
    // The pause is now older than the limit, but a job that just arrived is held, not
    // dead-lettered: the limit is per job.
    let fresh = claimed(&r, "e3", "bi").await;
    assert!(r.run(&[rec("e", &fresh, Lane::Fast)]).await.is_empty());
    assert!(r.queue.take_dead().is_empty());
    assert_eq!(r.queue.take().len(), 1);
}

/// Pauses the destination through its breaker (ten failed first attempts); returns their retries.
async fn trip(r: &Rig, destination: &str, url: &str) -> Vec<Scheduled> {
    r.http.always(url, Scripted::status(503));
    let mut retries = Vec::new();
    for i in 0..10 {
        let job = claimed(r, &format!("trip{i}"), destination).await;
        assert!(
            r.run(&[rec(&format!("t{i}"), &job, Lane::Fast)])
                .await
                .is_empty()
        );
        retries.extend(r.queue.take());
    }
    assert!(r.state(destination).await.paused.is_some());
    retries
}

#[tokio::test]
async fn a_stale_copy_first_in_a_batch_does_not_drop_the_live_one() {
    let r = rig().await;
    let job = claimed(&r, "e1", "crm").await;
    assert_eq!(repair(&r, &job).await, Some(1));
    let mut repaired = job.clone();
    repaired.generation = 1;
    // Generation 0 (superseded) first, then its repair copy, in one batch.
    assert!(
        r.run(&[
            rec("old", &job, Lane::Fast),
            rec("new", &repaired, Lane::Fast)
        ])
        .await
        .is_empty()
    );
    assert_eq!(r.http.sent_to(CRM).len(), 1);
    assert_eq!(
        r.delivery(&job).await.unwrap().status,
        DeliveryStatus::Delivered
    );

    // Two runs of one replay: the old token's copy first, the live one second.
    let r = rig().await;
    let job = claimed(&r, "e1", "crm").await;
    let replay = replay_of(&job, "t1");
    let rerun = replay_of(&job, "t2");
    mark(&r, &rerun).await;
    assert!(
        r.run(&[
            rec("t1", &replay, Lane::Retry),
            rec("t2", &rerun, Lane::Retry)
        ])
        .await
        .is_empty()
    );
    assert_eq!(
        r.http.sent_to(CRM).len(),
        1,
        "the live token's copy is sent"
    );
}

#[tokio::test]
async fn a_pause_longer_than_the_hold_limit_is_still_probed_and_ends() {
    let r = rig().await;
    trip(&r, "crm", CRM).await;
    // Down for eight days: longer than MAX_HOLD_SECONDS (7 days).
    r.clock.advance_ms(8 * 86_400_000);
    r.http.always(CRM, Scripted::status(200));
    let job = claimed(&r, "late", "crm").await;
    assert!(r.run(&[rec("p", &job, Lane::Retry)]).await.is_empty());
    assert!(r.queue.take_dead().is_empty(), "nothing dead-lettered");
    assert!(
        r.state("crm").await.paused.is_none(),
        "the probe resumed it"
    );
    assert_eq!(
        r.delivery(&job).await.unwrap().status,
        DeliveryStatus::Delivered
    );
}

#[tokio::test(start_paused = true)]
async fn a_probe_never_runs_on_the_fast_lane() {
    let r = rig().await;
    trip(&r, "crm", CRM).await;
    let posts = r.http.sent_to(CRM).len();
    r.http.always(CRM, Scripted::Hang);
    r.clock.advance_ms(60_000);
    let job = claimed(&r, "e1", "crm").await;
    let started = tokio::time::Instant::now();
    assert!(r.run(&[rec("f", &job, Lane::Fast)]).await.is_empty());
    assert_eq!(started.elapsed(), Duration::ZERO, "no fast-lane time spent");
    assert_eq!(r.http.sent_to(CRM).len(), posts);
    let moved = r.queue.take();
    assert_eq!((moved[0].lane, moved[0].delay_secs), (Lane::Retry, 0));
    // On the retry lane it probes, with the destination's full timeout.
    assert!(
        r.run(&[rec("p", &moved[0].job, Lane::Retry)])
            .await
            .is_empty()
    );
    assert_eq!(r.http.sent_to(CRM).len(), posts + 1);
    assert_eq!(started.elapsed(), Duration::from_secs(10));
}

#[tokio::test]
async fn a_resume_ends_every_streak_so_the_destination_does_not_flap() {
    let r = rig().await;
    r.http.always(CRM, Scripted::status(503));
    // Nine failures: one short of the threshold in this (warm) instance.
    for i in 0..9 {
        let job = claimed(&r, &format!("e{i}"), "crm").await;
        assert!(
            r.run(&[rec(&format!("j{i}"), &job, Lane::Fast)])
                .await
                .is_empty()
        );
        r.queue.take();
    }
    // Another instance paused it, and an operator resumed it; the destination still fails now
    // and then, but one failure must not pause it again.
    r.clock.advance_ms(1_000);
    r.store
        .pause("crm", "elsewhere", r.clock.now_ms())
        .await
        .unwrap();
    r.clock.advance_ms(1_000);
    r.store.resume("crm", r.clock.now_ms()).await.unwrap();
    r.clock.advance_ms(1_000);
    let job = claimed(&r, "after", "crm").await;
    assert!(r.run(&[rec("a", &job, Lane::Fast)]).await.is_empty());
    assert!(
        r.state("crm").await.paused.is_none(),
        "re-paused on the first failure after the resume"
    );
    // Failed probes while paused do not count either: after the probe that resumes it, a streak
    // starts from zero.
    let r = rig().await;
    trip(&r, "crm", CRM).await;
    for i in 0..12 {
        r.clock.advance_ms(60_000);
        let job = claimed(&r, &format!("p{i}"), "crm").await;
        assert!(r.run(&[rec("p", &job, Lane::Retry)]).await.is_empty());
        r.queue.take();
    }
    r.http.always(CRM, Scripted::status(200));
    r.clock.advance_ms(60_000);
    let job = claimed(&r, "ok", "crm").await;
    assert!(r.run(&[rec("ok", &job, Lane::Retry)]).await.is_empty());
    assert!(r.state("crm").await.paused.is_none());
    r.http.always(CRM, Scripted::status(503));
    let job = claimed(&r, "one", "crm").await;
    assert!(r.run(&[rec("one", &job, Lane::Fast)]).await.is_empty());
    assert!(r.state("crm").await.paused.is_none());
}

#[tokio::test]
async fn a_held_jobs_history_stays_bounded_through_a_long_pause() {
    let r = rig().await;
    let held = trip(&r, "crm", CRM).await;
    let mut job = held[0].job.clone();
    // A day of failed probes (one a minute, each with this job).
    for i in 0..1_440 {
        r.clock
            .advance_ms(job.due_at_ms.saturating_sub(r.clock.now_ms()).max(60_000));
        assert!(
            r.run(&[rec(&format!("p{i}"), &job, Lane::Retry)])
                .await
                .is_empty()
        );
        job = r.queue.take().pop().unwrap().job;
    }
    let probes = job.history.iter().filter(|h| h.probe).count();
    assert!(probes > 0);
    assert!(job.history.len() <= crate::delivery::JOB_HISTORY_CAP);
    assert!(
        !job.history[0].probe,
        "the real attempt is kept, probes go first"
    );
    assert!(job.history_dropped > 0);
    assert!(serde_json::to_vec(&job).unwrap().len() < 16 * 1024);
    assert!(r.queue.take_dead().is_empty());
}

#[tokio::test]
async fn a_redrive_after_a_delivered_replay_does_not_send_again() {
    use crate::records::{AttemptUpdate, DeliveryStore};
    let r = rig().await;
    let job = claimed(&r, "e1", "bi").await;
    r.http.always(BI, Scripted::status(400));
    assert!(r.run(&[rec("a", &job, Lane::Fast)]).await.is_empty());
    let mut dead = r.queue.take_dead().pop().expect("dead-lettered");
    // An operator replays the event (same webhook-id); the replay is delivered.
    let replay = replay_of(&job, "t1");
    let key = replay.delivery_key();
    mark(&r, &replay).await;
    r.store
        .record_attempt(
            &key,
            &AttemptUpdate {
                event_id: "e1".into(),
                destination: "bi".into(),
                replay: Some("r1".into()),
                attempt: 1,
                at_ms: T0,
                status: DeliveryStatus::Delivered,
                outcome: "http_200".into(),
                status_code: Some(200),
                latency_ms: 1,
                lag_ms: None,
                history: vec![],
                redrive: false,
                expires_at_secs: job.expires_at_secs,
            },
        )
        .await
        .unwrap();
    // Then the original job is redriven from the DLQ: nothing is sent, the delivery says so.
    let posts = r.http.sent_to(BI).len();
    assert!(dead.dead_letter.is_some());
    dead.due_at_ms = r.clock.now_ms();
    assert!(
        r.run(&[rec("redrive", &dead, Lane::Retry)])
            .await
            .is_empty()
    );
    assert_eq!(r.http.sent_to(BI).len(), posts);
    let d = r.delivery(&job).await.unwrap();
    assert_eq!(d.status, DeliveryStatus::Delivered);
    assert_eq!(d.last_outcome.as_deref(), Some("delivered_by_replay"));
}

#[test]
fn replays_and_redrives_do_not_report_delivery_lag() {
    let env = idnow("e1", "s1");
    let live = DeliveryJob::first(&env, "crm", T0, 0, T0 / 1000 + 86_400);
    assert_eq!(lag_metric(&live), Some("DeliveryLagMs"));
    let mut retried = live.clone();
    retried.attempt = 4;
    assert_eq!(lag_metric(&retried), Some("DeliveryLagMs"));
    let mut replay = live.clone();
    replay.replay = Some(crate::delivery::ReplayInfo {
        id: "r".into(),
        token: "t".into(),
    });
    assert_eq!(lag_metric(&replay), None);
    let mut redriven = live.clone();
    redriven.attempt = 3;
    redriven.cycle_start = 3;
    assert_eq!(lag_metric(&redriven), None);
}

#[tokio::test]
async fn deadlines_late_jobs_and_removed_destinations() {
    let r = rig().await;
    let job = claimed(&r, "e1", "crm").await;
    // 5 s left: a 10 s retry-lane attempt would not finish; handed back untouched.
    let failed = r
        .dispatcher
        .dispatch_batch(&[rec("a", &job, Lane::Retry)], r.clock.now_ms() + 5_000)
        .await;
    assert!(failed.is_empty());
    assert!(r.http.sent().is_empty());
    let back = r.queue.take();
    assert_eq!((back[0].lane, back[0].job.attempt), (Lane::Retry, 1));
    // The event's records expired: refused into the DLQ, not delivered without a record.
    let mut late = job.clone();
    late.expires_at_secs = r.clock.now_secs() - 1;
    assert!(r.run(&[rec("b", &late, Lane::Retry)]).await.is_empty());
    let mut gone = job.clone();
    gone.destination_id = "removed".into();
    assert!(r.run(&[rec("c", &gone, Lane::Retry)]).await.is_empty());
    let reasons: Vec<String> = r
        .queue
        .take_dead()
        .into_iter()
        .map(|j| j.dead_letter.unwrap().reason)
        .collect();
    assert!(reasons[0].contains("expired"), "{reasons:?}");
    assert!(reasons[1].contains("no longer configured"), "{reasons:?}");
    assert!(r.http.sent().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_hung_token_endpoint_costs_one_timeout_per_batch_not_one_per_job() {
    let token_url = "https://auth.example/token";
    let r = rig_with(destinations(&format!(
        r#", {{"id": "api", "url": "https://api.example/h", "retry_policy": "idnow",
             "auth": {{"type": "oauth2_client_credentials", "token_url": "{token_url}",
                       "client_id": "relay", "client_secret": "s3cret-s3cret-s3cret"}}}}"#
    )))
    .await;
    r.http.always(token_url, Scripted::Hang);
    let mut records = Vec::new();
    for i in 0..10 {
        let job = claimed(&r, &format!("e{i}"), "api").await;
        records.push(rec(&format!("j{i}"), &job, Lane::Retry));
    }
    let started = tokio::time::Instant::now();
    assert!(r.run(&records).await.is_empty());
    // One fetch timed out (5 s); the nine others waiting for the lock reused its failure.
    assert_eq!(r.http.sent_to(token_url).len(), 1);
    assert_eq!(started.elapsed(), Duration::from_secs(5));
    let retries = r.queue.take();
    assert_eq!(retries.len(), 10);
    assert!(retries.iter().all(|s| s.job.attempt == 2));
    assert_eq!(
        retries[0].job.history[0].outcome,
        "token_error: token endpoint timeout"
    );
}

#[tokio::test]
async fn jobs_of_an_erased_session_are_dropped_not_sent_recorded_or_dead_lettered() {
    use crate::records::RecordReader;
    let r = rig().await;
    let queued = claimed(&r, "e1", "crm").await;
    let bi_job = claimed(&r, "e2", "bi").await;
    // A job held for a paused destination since long before the erasure.
    r.store.pause("bi", "maintenance", T0).await.unwrap();
    assert!(r.run(&[rec("h", &bi_job, Lane::Fast)]).await.is_empty());
    let held = r.queue.take().pop().unwrap().job;
    r.store
        .erase_partition(&queued.event_key().pk, r.clock.now_ms())
        .await
        .unwrap();
    // The queued job: no request, nothing recorded, nothing in the DLQ.
    assert!(r.run(&[rec("q", &queued, Lane::Fast)]).await.is_empty());
    assert!(r.http.sent().is_empty());
    assert!(r.delivery(&queued).await.is_none());
    // The held job past the hold limit: dropped instead of dead-lettered with its webhook.
    r.clock.advance_ms(8 * 86_400_000);
    assert!(r.run(&[rec("h2", &held, Lane::Retry)]).await.is_empty());
    assert!(r.queue.take_dead().is_empty());
    assert!(r.queue.take().is_empty());
    assert!(
        r.store
            .partition(&queued.event_key().pk)
            .await
            .unwrap()
            .is_empty()
    );
}

/// An SQS FIFO destination on the same decision tables: published is delivered (under the strict
/// Incode policy too), a rejected message goes to the DLQ at once, and an unusable target pauses the
/// destination and holds its jobs instead of dead-lettering them.
#[tokio::test]
async fn an_aws_target_is_decided_like_an_http_one() {
    use super::transport::{AwsClass, AwsRefusal, PublishError};
    let queue_url = "https://sqs.eu-west-1.amazonaws.com/123456789012/kyc.fifo";
    let r = rig_with(destinations(&format!(
        r#", {{"id": "audit", "sqs": {{"queue_url": "{queue_url}"}}, "retry_policy": "incode"}}"#
    )))
    .await;
    let refuse = |code: &str, class| {
        Err(PublishError::Refused(AwsRefusal {
            code: code.into(),
            class,
        }))
    };

    let job = claimed(&r, "e1", "audit").await;
    assert!(r.run(&[rec("j1", &job, Lane::Fast)]).await.is_empty());
    let sent = r.http.published();
    assert_eq!(sent.len(), 1);
    let p = &sent[0];
    assert_eq!(p.webhook_id, job.delivery_id);
    assert_eq!(p.group, crate::records::EventKey::of(&job.envelope).pk);
    assert_eq!(
        (p.provider, p.event_type.as_str()),
        ("idnow", job.envelope.event_type.as_str())
    );
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&p.body).unwrap()["event_id"],
        "e1"
    );
    assert!(p.traceparent.contains(job.envelope.trace_id()));
    let d = r.delivery(&job).await.unwrap();
    assert_eq!((d.status, d.attempts), (DeliveryStatus::Delivered, 1));
    assert_eq!(d.history[0].outcome, "published");
    assert!(r.http.sent().is_empty(), "no HTTP request");

    // Rejected: not retried, whatever the policy retries.
    let job = claimed(&r, "e2", "audit").await;
    r.http
        .then_publish("audit", refuse("InvalidParameterValue", AwsClass::Rejected));
    assert!(r.run(&[rec("j2", &job, Lane::Fast)]).await.is_empty());
    let dead = r.queue.take_dead();
    assert_eq!(dead.len(), 1);
    assert!(
        dead[0]
            .dead_letter
            .as_ref()
            .unwrap()
            .reason
            .contains("aws: InvalidParameterValue"),
        "{:?}",
        dead[0].dead_letter
    );
    assert!(r.queue.take().is_empty());

    // Unavailable (access denied): retried and counted; ten in a row pause the destination, and
    // the next job is held on the retry lane, not dead-lettered.
    for i in 0..10 {
        r.http
            .then_publish("audit", refuse("AccessDenied", AwsClass::Unavailable));
        let job = claimed(&r, &format!("u{i}"), "audit").await;
        assert!(
            r.run(&[rec(&format!("u{i}"), &job, Lane::Fast)])
                .await
                .is_empty()
        );
        let next = r.queue.take();
        assert_eq!(next.len(), 1, "retried");
        assert_eq!(next[0].lane, Lane::Retry);
    }
    assert_eq!(r.state("audit").await.paused.unwrap().by, PausedBy::Breaker);
    let published = r.http.published().len();
    let job = claimed(&r, "held", "audit").await;
    assert!(r.run(&[rec("held", &job, Lane::Fast)]).await.is_empty());
    assert_eq!(r.http.published().len(), published, "held: no message");
    assert!(r.queue.take_dead().is_empty());
    assert_eq!(r.queue.take().len(), 1, "held on the retry lane");
}

fn rate_limited(per_second: u32, burst: u32) -> Destinations {
    destinations(&format!(
        r#", {{"id": "slow-api", "url": "https://slow.example/h", "retry_policy": "idnow",
              "rate_limit": {{"per_second": {per_second}, "burst": {burst}}}}}"#
    ))
}

/// Over the limit on the fast lane: deferred to the retry lane with a reserved slot, due a little
/// before it; no attempt spent, nothing recorded, nothing dead-lettered.
#[tokio::test(start_paused = true)]
async fn over_the_rate_limit_jobs_wait_in_the_retry_lane_for_their_slots() {
    let r = rig_with(rate_limited(1, 1)).await;
    let mut jobs = Vec::new();
    for i in 0..3 {
        jobs.push(claimed(&r, &format!("e{i}"), "slow-api").await);
    }
    let records: Vec<JobRecord> = jobs
        .iter()
        .enumerate()
        .map(|(i, j)| rec(&format!("j{i}"), j, Lane::Fast))
        .collect();
    assert!(r.run(&records).await.is_empty());
    assert_eq!(
        r.http.sent_to("https://slow.example/h").len(),
        1,
        "one at once"
    );
    let mut deferred = r.queue.take();
    assert_eq!(deferred.len(), 2);
    assert!(r.queue.take_dead().is_empty());
    deferred.sort_by_key(|s| s.job.rate_slot_us);
    let now_us = T0 * 1000;
    for (n, s) in deferred.iter().enumerate() {
        let slot = now_us + (n as u64 + 1) * 1_000_000;
        assert_eq!(s.lane, Lane::Retry);
        assert_eq!(s.job.rate_slot_us, Some(slot));
        assert_eq!(s.job.attempt, 1, "no attempt spent");
        assert_eq!(s.job.due_at_ms, (slot / 1000 - RATE_EARLY_MS).max(T0));
        let d = r.delivery(&s.job).await;
        assert!(
            d.as_ref().is_none_or(|d| d.attempts == 0),
            "nothing recorded: {d:?}"
        );
    }

    // Back on the retry lane before its slot: it waits for it in the invocation and keeps it (no
    // new reservation: the next job's slot is not taken).
    r.clock.advance_ms(500);
    assert!(
        r.run(&[rec("k0", &deferred[0].job, Lane::Retry)])
            .await
            .is_empty()
    );
    assert_eq!(r.http.sent_to("https://slow.example/h").len(), 2);
    assert!(r.queue.take().is_empty());
    // Back after its slot passed: it reserves a new one, after the slot another job took meanwhile.
    r.clock.advance_ms(1_000);
    let mut late = deferred[1].job.clone();
    late.rate_slot_us = Some(now_us + 1_000_000);
    let held = claimed(&r, "e9", "slow-api").await;
    assert!(r.run(&[rec("k9", &held, Lane::Fast)]).await.is_empty());
    let taken = r.queue.take()[0].job.rate_slot_us.unwrap();
    assert_eq!(
        taken,
        now_us + 3_000_000,
        "the slot after the three reserved"
    );
    // Its new slot, T0 + 4 s, is 2.5 s away: within the retry lane's wait, so it waits here for it.
    let before = tokio::time::Instant::now();
    assert!(r.run(&[rec("k1", &late, Lane::Retry)]).await.is_empty());
    assert_eq!(before.elapsed(), Duration::from_millis(2_500));
    assert!(r.queue.take().is_empty());
    assert_eq!(r.http.sent_to("https://slow.example/h").len(), 3);
    // Other destinations are not limited.
    let other = claimed(&r, "crm-1", "crm").await;
    assert!(r.run(&[rec("c", &other, Lane::Fast)]).await.is_empty());
    assert_eq!(r.http.sent_to(CRM).len(), 1);
}

/// After an idle spell the burst goes at once: slots up to `burst - 1` intervals before now are
/// used, not taken for late ones (GCRA's tolerance), on the fast lane too.
#[tokio::test(start_paused = true)]
async fn an_idle_limited_destination_takes_its_burst_at_once() {
    let r = rig_with(rate_limited(20, 5)).await;
    let mut records = Vec::new();
    for i in 0..7 {
        let job = claimed(&r, &format!("b{i}"), "slow-api").await;
        records.push(rec(&format!("b{i}"), &job, Lane::Fast));
    }
    let before = tokio::time::Instant::now();
    assert!(r.run(&records).await.is_empty());
    // Five at once, then the next two 50 ms apart: within the fast lane's 250 ms wait.
    assert_eq!(r.http.sent_to("https://slow.example/h").len(), 7);
    assert_eq!(before.elapsed(), Duration::from_millis(100));
    assert!(r.queue.take().is_empty(), "nothing deferred");
}

/// The store failing to reserve a slot is neither an attempt nor a reason to dead-letter: the job
/// comes back on the retry lane 5 s later, unchanged, and then goes.
#[tokio::test(start_paused = true)]
async fn a_failed_reservation_defers_the_job_without_spending_an_attempt() {
    let r = rig_with(rate_limited(5, 1)).await;
    let job = claimed(&r, "f1", "slow-api").await;
    r.store
        .failing_reservations
        .store(1, std::sync::atomic::Ordering::SeqCst);
    assert!(r.run(&[rec("f1", &job, Lane::Fast)]).await.is_empty());
    assert!(r.http.sent_to("https://slow.example/h").is_empty());
    assert!(r.queue.take_dead().is_empty());
    let back = r.queue.take();
    assert_eq!(back.len(), 1);
    assert_eq!((back[0].lane, back[0].delay_secs), (Lane::Retry, 5));
    assert_eq!(back[0].job.attempt, 1, "no attempt spent");
    assert!(r.delivery(&job).await.is_none_or(|d| d.attempts == 0));
    r.clock.advance_ms(5_000);
    assert!(
        r.run(&[rec("f2", &back[0].job, Lane::Retry)])
            .await
            .is_empty()
    );
    assert_eq!(r.http.sent_to("https://slow.example/h").len(), 1);
    let d = r.delivery(&job).await.unwrap();
    assert_eq!((d.status, d.attempts), (DeliveryStatus::Delivered, 1));
}
