//! The per-destination rate limit measured: several dispatcher instances (as concurrent Lambda
//! invocations would be, two per lane) share the records table in the emulator and a queue that
//! honours SQS's delays in real time; one destination is limited, a neighbour is not. The limited destination's
//! arrivals are counted per sliding second; every job is delivered once, none dead-lettered, none
//! charged an attempt for waiting, and the neighbour is not held up.
//! Its figures are in BENCHMARKS.md (§7): `scripts/with-local-aws.sh cargo test -p integration-tests
//! --test rate_limit -- --nocapture`.

use integration_tests::peer::{Answer, Peer};
use integration_tests::{LocalAws, consumer_for, dispatcher_with, idnow_envelope, record};
use kyc_relay::clock::{Clock, SystemClock};
use kyc_relay::delivery::{DeliveryJob, DeliveryQueue, Lane, Scheduled};
use kyc_relay::dispatch::{DispatcherSettings, JobRecord};
use kyc_relay::queue::QueueError;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const LIMIT: usize = 20;
const EVENTS: usize = 160;
const INSTANCES: usize = 4;

/// The two lanes in memory, each job visible once its delay has passed (real time).
#[derive(Clone, Default)]
struct TimedQueue {
    jobs: Arc<Mutex<Vec<(Instant, Lane, DeliveryJob)>>>,
    dead: Arc<Mutex<Vec<DeliveryJob>>>,
}

impl TimedQueue {
    fn push(&self, lane: Lane, job: DeliveryJob, delay: Duration) {
        self.jobs
            .lock()
            .unwrap()
            .push((Instant::now() + delay, lane, job));
    }

    /// Up to ten visible jobs of the lane, as one event source mapping batch.
    fn batch(&self, lane: Lane) -> Vec<JobRecord> {
        let now = Instant::now();
        let mut jobs = self.jobs.lock().unwrap();
        let mut taken = Vec::new();
        let mut i = 0;
        while i < jobs.len() && taken.len() < 10 {
            if jobs[i].0 <= now && jobs[i].1 == lane {
                let (_, lane, job) = jobs.swap_remove(i);
                taken.push(JobRecord {
                    message_id: format!("m-{}-{}", job.delivery_id, fastrand::u64(..)),
                    body: serde_json::to_string(&job).unwrap(),
                    lane,
                });
            } else {
                i += 1;
            }
        }
        taken
    }

    fn is_empty(&self) -> bool {
        self.jobs.lock().unwrap().is_empty()
    }
}

impl DeliveryQueue for TimedQueue {
    async fn schedule(&self, jobs: Vec<Scheduled>) -> Vec<Result<(), QueueError>> {
        jobs.into_iter()
            .map(|s| {
                self.push(s.lane, s.job, Duration::from_secs(u64::from(s.delay_secs)));
                Ok(())
            })
            .collect()
    }

    async fn dead_letter(&self, job: &DeliveryJob) -> Result<(), QueueError> {
        self.dead.lock().unwrap().push(job.clone());
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_limited_destination_gets_at_most_its_rate_from_concurrent_dispatchers() {
    let aws = LocalAws::provision().await;
    let limited = Peer::start(Answer::status(200)).await;
    let neighbour = Peer::start(Answer::status(200)).await;
    let doc = format!(
        r#"{{"destinations": [
          {{"id": "limited", "url": "{}", "retry_policy": "idnow", "rate_limit": {{"per_second": {LIMIT}}}}},
          {{"id": "neighbour", "url": "{}", "retry_policy": "idnow"}}
        ]}}"#,
        limited.url("/h"),
        neighbour.url("/h")
    );
    let clock = Arc::new(SystemClock);
    // The consumer claims the events and queues one job per destination on the (real) fast lane.
    let consumer = consumer_for(&aws, &doc, clock.clone());
    let envelopes: Vec<_> = (0..EVENTS)
        .map(|i| {
            idnow_envelope(
                &format!("evt-{i}"),
                "session.completed",
                &format!("s-{i}"),
                "COMPLETED",
                1,
            )
        })
        .collect();
    for chunk in envelopes.chunks(10) {
        let records: Vec<_> = chunk
            .iter()
            .map(|e| record(&format!("m-{}", e.event_id), e))
            .collect();
        assert!(
            consumer
                .process_batch(&records, clock.now_ms() + 30_000, "b")
                .await
                .is_empty()
        );
    }
    let queue = TimedQueue::default();
    for m in aws.drain(aws.get("DELIVERY_QUEUE_URL")).await {
        let job: DeliveryJob = serde_json::from_str(m.body().unwrap()).unwrap();
        queue.push(Lane::Fast, job, Duration::ZERO);
    }
    assert_eq!(queue.jobs.lock().unwrap().len(), 2 * EVENTS);

    let mut instances = Vec::new();
    for _ in 0..INSTANCES {
        instances.push(Arc::new(
            dispatcher_with(
                &aws,
                queue.clone(),
                &doc,
                clock.clone(),
                DispatcherSettings {
                    state_cache: Duration::ZERO,
                    ..Default::default()
                },
            )
            .await,
        ));
    }
    let started = Instant::now();
    let deadline = started + Duration::from_secs(90);
    // Half the instances poll the fast lane, half the retry lane: each lane has its own event
    // source mapping and concurrency in AWS.
    let workers: Vec<_> = instances
        .into_iter()
        .enumerate()
        .map(|(i, dispatcher)| {
            let queue = queue.clone();
            let limited = limited.clone();
            let lane = if i % 2 == 0 { Lane::Fast } else { Lane::Retry };
            tokio::spawn(async move {
                while Instant::now() < deadline && (!queue.is_empty() || limited.hits() < EVENTS) {
                    let batch = queue.batch(lane);
                    if batch.is_empty() {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                    let failed = dispatcher
                        .dispatch_batch(&batch, SystemClock.now_ms() + 60_000)
                        .await;
                    assert!(failed.is_empty(), "{failed:?}");
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }
    let elapsed = started.elapsed();

    // Every job delivered exactly once, nothing dead-lettered.
    assert_eq!(limited.hits(), EVENTS, "limited: every event once");
    assert_eq!(neighbour.hits(), EVENTS, "neighbour: every event once");
    assert!(queue.dead.lock().unwrap().is_empty());
    let mut ids: Vec<String> = limited
        .received()
        .iter()
        .map(|r| r.headers["webhook-id"].to_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), EVENTS);

    // Arrivals per sliding second at the limited destination.
    let mut at: Vec<Instant> = limited.received().iter().map(|r| r.at).collect();
    at.sort();
    let busiest = (0..at.len())
        .map(|i| {
            at[i..]
                .iter()
                .take_while(|t| **t < at[i] + Duration::from_secs(1))
                .count()
        })
        .max()
        .unwrap();
    let span = at.last().unwrap().duration_since(at[0]).as_secs_f64();
    let mean = (at.len() - 1) as f64 / span;
    let neighbour_done = neighbour.received().iter().map(|r| r.at).max().unwrap();
    println!(
        "rate limit {LIMIT}/s, burst 1, {INSTANCES} dispatchers, {EVENTS} events: busiest second \
         {busiest} arrivals, mean {mean:.2}/s over {span:.2} s; all delivered in {:.2} s; the \
         unlimited neighbour's last arrival at {:.2} s",
        elapsed.as_secs_f64(),
        neighbour_done.duration_since(started).as_secs_f64()
    );
    // The schedule admits LIMIT + burst per window; a stalled worker waking late can only push
    // sends later, rarely together. Gross failures (no limit) would show EVENTS at once.
    assert!(
        busiest <= LIMIT + 1 + LIMIT / 10,
        "busiest second: {busiest}"
    );
    assert!(mean <= LIMIT as f64 * 1.05, "mean rate {mean:.2}/s");
    // The neighbour went on the first passes, not behind the limited destination's backlog: all of
    // its deliveries arrived before the limited one had received three quarters of its events.
    assert!(
        neighbour_done < at[EVENTS * 3 / 4],
        "the neighbour waited behind the limited destination"
    );
}
