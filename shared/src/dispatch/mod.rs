//! The dispatcher's work: make one delivery attempt per job and decide what follows, by the
//! destination's retry policy, its shared state (circuit breaker, slow lane) and the invocation's
//! deadline.
//!
//! - [`plan`]: what to do with a job (a decision table, pure);
//! - [`breaker`]: when a destination is paused, probed, resumed or marked slow (pure);
//! - [`transport`]: the HTTP POST behind a small trait;
//! - [`credentials`]: signing secrets and OAuth tokens.
//!
//! For each job that is due and whose destination is usable, the delivery's state is read (strongly
//! consistent): a delivery already final, an attempt already recorded, or a copy superseded by a
//! repair is acknowledged without sending. Then the request is sent and:
//!
//! - delivered: the delivery item says DELIVERED (the only write on the happy path);
//! - retry: the next job is enqueued first (retry lane, with its delay and due time), then the
//!   attempt recorded;
//! - give up: the job goes to the delivery DLQ with its reason and attempt history, then the record
//!   says FAILED.
//!
//! Enqueue before record: a crash in between repeats an attempt (at-least-once towards the
//! destination, which deduplicates on `webhook-id`), never loses the delivery.

pub mod breaker;
pub mod credentials;
pub mod plan;
pub mod transport;

use crate::clock::Clock;
use crate::config::{ConfigError, Env};
use crate::delivery::{
    AttemptLog, DeadLetterInfo, DeliveryJob, DeliveryQueue, Lane, Scheduled, sqs_delay_secs,
};
use crate::destination::{BodyFormat, Destination, Destinations, Target};
use crate::rate::{RateLimit, RateLimiter};
use crate::records::{
    AttemptUpdate, DeliveryStatus, DeliveryStore, DestinationState, DestinationStates, Transition,
};
use crate::retry::{AttemptOutcome, Verdict, parse_retry_after};
use crate::telemetry::{Counters, DestinationMetrics};
use breaker::{BreakerSettings, Observation};
use credentials::Vault;
use futures_util::future::join_all;
use http::{HeaderName, HeaderValue};
use plan::{After, Before};
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use transport::{Post, Transport, TransportError};

pub const WEBHOOK_ID: &str = "webhook-id";
pub const WEBHOOK_TIMESTAMP: &str = "webhook-timestamp";
pub const WEBHOOK_SIGNATURE: &str = "webhook-signature";

/// The dispatcher's settings, validated at cold start (docs/configuration.md).
#[derive(Debug, Clone, PartialEq)]
pub struct DispatcherSettings {
    /// Per-request timeout of destinations that set no `timeout_ms` (`HTTP_TIMEOUT_MS`).
    pub default_timeout: Duration,
    /// One OAuth token fetch (`TOKEN_TIMEOUT_MS`).
    pub token_timeout: Duration,
    pub breaker: BreakerSettings,
    /// How long a dispatcher reuses the destinations' state it read (`DESTINATION_STATE_CACHE_MS`).
    pub state_cache: Duration,
}

impl Default for DispatcherSettings {
    fn default() -> Self {
        Self {
            default_timeout: Duration::from_secs(10),
            token_timeout: Duration::from_secs(5),
            breaker: BreakerSettings::default(),
            state_cache: Duration::from_secs(5),
        }
    }
}

fn ranged(
    env: &Env,
    key: &str,
    default: u64,
    range: std::ops::RangeInclusive<u64>,
) -> Result<u64, ConfigError> {
    let v: u64 = env.parse_or(key, default)?;
    if !range.contains(&v) {
        return Err(ConfigError::new(
            key,
            format!("must be between {} and {}", range.start(), range.end()),
        ));
    }
    Ok(v)
}

impl DispatcherSettings {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let timeout_ms = ranged(env, "HTTP_TIMEOUT_MS", 10_000, 100..=30_000)?;
        let fast_ms = ranged(env, "FAST_LANE_TIMEOUT_MS", 2_000, 100..=30_000)?;
        Ok(Self {
            default_timeout: Duration::from_millis(timeout_ms),
            token_timeout: Duration::from_millis(ranged(
                env,
                "TOKEN_TIMEOUT_MS",
                5_000,
                100..=30_000,
            )?),
            breaker: BreakerSettings {
                failure_threshold: ranged(env, "BREAKER_FAILURE_THRESHOLD", 10, 1..=10_000)? as u32,
                probe_interval: Duration::from_secs(ranged(
                    env,
                    "BREAKER_PROBE_SECONDS",
                    60,
                    5..=3_600,
                )?),
                hold: Duration::from_secs(ranged(env, "HOLD_SECONDS", 300, 1..=900)?),
                max_hold: Duration::from_secs(ranged(
                    env,
                    "MAX_HOLD_SECONDS",
                    7 * 86_400,
                    3_600..=30 * 86_400,
                )?),
                fast_lane_timeout: Duration::from_millis(fast_ms),
                slow_hold: Duration::from_secs(ranged(env, "SLOW_HOLD_SECONDS", 600, 10..=86_400)?),
            },
            state_cache: Duration::from_millis(ranged(
                env,
                "DESTINATION_STATE_CACHE_MS",
                5_000,
                0..=60_000,
            )?),
        })
    }
}

/// One record of the SQS event, with the lane (queue) it came from.
pub struct JobRecord {
    pub message_id: String,
    pub body: String,
    pub lane: Lane,
}

pub struct Dispatcher<S, Q, T> {
    store: S,
    queue: Q,
    transport: T,
    destinations: Destinations,
    vault: Vault,
    settings: DispatcherSettings,
    clock: Arc<dyn Clock>,
    states: tokio::sync::Mutex<Option<(u64, States)>>,
    /// This instance's consecutive failures per destination (the circuit breaker counts them in
    /// memory: no write on the happy path).
    streaks: std::sync::Mutex<BTreeMap<String, breaker::Streak>>,
}

/// The destinations' shared state as one dispatcher last read it.
type States = Arc<BTreeMap<String, DestinationState>>;

enum Step {
    Ack,
    Fail,
}

/// What the invocation's metrics and the breaker need to know of one job.
struct Outcome {
    step: Step,
    observation: Option<(String, Observation)>,
}

impl From<Step> for Outcome {
    fn from(step: Step) -> Self {
        Self {
            step,
            observation: None,
        }
    }
}

impl<S, Q, T> Dispatcher<S, Q, T>
where
    S: DeliveryStore + DestinationStates + RateLimiter,
    Q: DeliveryQueue,
    T: Transport,
{
    pub fn new(
        store: S,
        queue: Q,
        transport: T,
        destinations: Destinations,
        vault: Vault,
        settings: DispatcherSettings,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            store,
            queue,
            transport,
            destinations,
            vault,
            settings,
            clock,
            states: tokio::sync::Mutex::new(None),
            streaks: Default::default(),
        }
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    /// Processes a batch of jobs concurrently; returns the message ids to report as failures.
    pub async fn dispatch_batch(&self, records: &[JobRecord], deadline_ms: u64) -> Vec<String> {
        let counters = &Counters::default();
        let metrics = &DestinationMetrics::default();
        let states = self.states().await;
        let mut failed = Vec::new();
        let mut seen = HashSet::new();
        let mut jobs = Vec::new();
        for record in records {
            let job: DeliveryJob = match serde_json::from_str(&record.body) {
                Ok(j) => j,
                Err(e) => {
                    // Left to SQS: after maxReceiveCount receives it lands in the delivery DLQ.
                    // serde's message may quote the offending value: log only where and what kind.
                    tracing::error!(message_id = record.message_id, error = ?e.classify(), line = e.line(), column = e.column(), "malformed delivery job");
                    counters.add("MalformedJobs", 1);
                    failed.push(record.message_id.clone());
                    continue;
                }
            };
            if job.v != crate::delivery::JOB_VERSION {
                tracing::error!(
                    message_id = record.message_id,
                    version = job.v,
                    "delivery job of another format version"
                );
                counters.add("MalformedJobs", 1);
                failed.push(record.message_id.clone());
                continue;
            }
            // Copies of one job in one batch (DLQ copies redriven together, or copies of a chain
            // aligned to the same due time): one attempt, the others acknowledged. First-attempt
            // copies that differ in what decides which one is live (the generation a repair bumps,
            // the replay run's token) are all dispatched, and the stored state picks the live one:
            // dropping one here could drop the live copy while a stale one is superseded.
            // (Generation and token decide only a first attempt: `plan::after`.)
            let first = job.attempt == 1;
            let key = (
                job.delivery_id.clone(),
                job.attempt,
                job.replay.as_ref().map(|r| r.id.clone()),
                first.then_some(job.generation),
                first
                    .then(|| job.replay.as_ref().map(|r| r.token.clone()))
                    .flatten(),
            );
            if !seen.insert(key) {
                counters.add("DuplicateJobsInBatch", 1);
                tracing::info!(
                    delivery_id = job.delivery_id,
                    attempt = job.attempt,
                    "copy of a job already in this batch; dropped"
                );
                continue;
            }
            jobs.push((record, job));
        }

        let outcomes = join_all(jobs.into_iter().map(|(record, job)| {
            self.dispatch(record, job, &states, deadline_ms, counters, metrics)
        }))
        .await;
        let mut observations = Vec::new();
        for Tagged(id, outcome) in outcomes {
            if let Some(o) = outcome.observation {
                observations.push(o);
            }
            if let Step::Fail = outcome.step {
                failed.push(id);
            }
        }
        self.update_breaker(&observations, &states, metrics).await;
        counters.add("RecordsFailed", failed.len() as u64);
        counters.emit("dispatcher");
        metrics.emit("dispatcher");
        failed
    }

    /// The destinations' shared state, read at most once per `state_cache` per dispatcher.
    async fn states(&self) -> States {
        let mut cache = self.states.lock().await;
        let now = self.clock.now_ms();
        if let Some((at, states)) = cache.as_ref()
            && now.saturating_sub(*at) < self.settings.state_cache.as_millis() as u64
        {
            return states.clone();
        }
        match self.store.load().await {
            Ok(states) => {
                let states = Arc::new(states);
                *cache = Some((now, states.clone()));
                states
            }
            Err(e) => {
                // Deliveries go on with what was known; a pause is missed for a moment at most.
                tracing::error!(error = %e, "cannot read destination states");
                cache.as_ref().map(|(_, s)| s.clone()).unwrap_or_default()
            }
        }
    }

    async fn update_breaker(
        &self,
        observations: &[(String, Observation)],
        states: &BTreeMap<String, DestinationState>,
        metrics: &DestinationMetrics,
    ) {
        let now = self.clock.now_ms();
        let writes = {
            let mut streaks = self.streaks.lock().unwrap_or_else(|p| p.into_inner());
            breaker::writes(
                observations,
                states,
                &mut streaks,
                &self.settings.breaker,
                now,
            )
        };
        if writes.is_empty() {
            return;
        }
        for (destination, write) in &writes {
            match self.store.apply(destination, write, now).await {
                Ok(Transition::Paused) => {
                    metrics.add(destination, "DestinationPaused", 1);
                    tracing::warn!(destination, cause = ?write, "destination paused: its jobs are held, a probe resumes it");
                }
                Ok(Transition::Resumed) => {
                    metrics.add(destination, "DestinationResumed", 1);
                    tracing::info!(destination, "destination resumed: the probe was delivered");
                }
                Ok(Transition::None) => {}
                Err(e) => {
                    tracing::error!(destination, error = %e, "cannot record destination state")
                }
            }
        }
        // This dispatcher sees its own writes at once.
        *self.states.lock().await = None;
    }

    async fn dispatch(
        &self,
        record: &JobRecord,
        mut job: DeliveryJob,
        states: &BTreeMap<String, DestinationState>,
        deadline_ms: u64,
        counters: &Counters,
        metrics: &DestinationMetrics,
    ) -> Tagged {
        let id = record.message_id.clone();
        let now = self.clock.now_ms();
        if job.dead_letter.take().is_some() {
            // An operator moved the job back from the DLQ: a new retry cycle, numbered on.
            job.attempt += 1;
            job.cycle_start = job.attempt;
            job.uncharged = 0;
            // `MAX_HOLD_SECONDS` counts per retry cycle: a cycle lasts at most its chain plus the
            // hold limit, as the records' lifetime check assumes (ARCHITECTURE §2.2).
            job.held_since_ms = None;
            job.due_at_ms = now;
            tracing::info!(
                delivery_id = job.delivery_id,
                attempt = job.attempt,
                "redriven job: new retry cycle"
            );
        }
        let destination = self.destinations.get(&job.destination_id);
        let ctx = plan::Context {
            now_ms: now,
            deadline_ms,
            lane: record.lane,
            destination,
            state: states.get(&job.destination_id),
            breaker: &self.settings.breaker,
            default_timeout: self.settings.default_timeout,
            token_timeout: self.settings.token_timeout,
            uses_oauth: self.vault.uses_oauth(&job.destination_id),
        };
        let (timeout, abandon_after, probe) = match plan::before(&job, &ctx) {
            Before::Chain { delay_secs } => {
                counters.add("DelaysChained", 1);
                return Tagged(id, self.enqueue(job, delay_secs, Lane::Retry).await.into());
            }
            Before::DeadLetter {
                reason,
                record_failed,
            } => {
                let update = record_failed.then(|| {
                    self.update(
                        &job,
                        DeliveryStatus::Failed,
                        "dead_lettered",
                        None,
                        0,
                        now,
                        None,
                    )
                });
                return Tagged(
                    id,
                    self.give_up(job, reason, update, now, counters, metrics)
                        .await
                        .into(),
                );
            }
            Before::Hold { delay_secs } => {
                counters.add("Held", 1);
                metrics.add(&job.destination_id, "Held", 1);
                job.held_since_ms.get_or_insert(now);
                return Tagged(id, self.enqueue(job, delay_secs, Lane::Retry).await.into());
            }
            Before::ToRetryLane => {
                counters.add("MovedToRetryLane", 1);
                return Tagged(id, self.enqueue(job, 0, Lane::Retry).await.into());
            }
            Before::HandBack => {
                counters.add("HandedBack", 1);
                tracing::info!(
                    delivery_id = job.delivery_id,
                    "too little time left in this invocation; job handed back"
                );
                return Tagged(id, self.enqueue(job, 0, record.lane).await.into());
            }
            Before::Probe { timeout } => {
                let next = now + self.settings.breaker.probe_interval.as_millis() as u64;
                match self.store.claim_probe(&job.destination_id, now, next).await {
                    Ok(true) => {
                        counters.add("Probes", 1);
                        tracing::info!(
                            destination = job.destination_id,
                            delivery_id = job.delivery_id,
                            "probing a paused destination"
                        );
                        (timeout, None, true)
                    }
                    Ok(false) | Err(_) => {
                        counters.add("Held", 1);
                        metrics.add(&job.destination_id, "Held", 1);
                        job.held_since_ms.get_or_insert(now);
                        let delay = self.settings.breaker.hold.as_secs().clamp(1, 900) as u32;
                        return Tagged(id, self.enqueue(job, delay, Lane::Retry).await.into());
                    }
                }
            }
            Before::Attempt {
                timeout,
                abandon_after,
            } => (timeout, abandon_after, false),
        };
        let destination = destination.expect("plan checked the destination exists");

        let view = match self.store.view(&job.delivery_key()).await {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(delivery_id = job.delivery_id, error = %e, "cannot read delivery state");
                return Tagged(id, Step::Fail.into());
            }
        };
        match plan::after(&job, &view) {
            After::Go => {}
            After::AlreadyFinal(status) => {
                counters.add("AlreadyFinal", 1);
                tracing::info!(
                    delivery_id = job.delivery_id,
                    status = status.as_str(),
                    "delivery already final; not sent again"
                );
                return Tagged(id, Step::Ack.into());
            }
            After::DuplicateJob { recorded } => {
                counters.add("DuplicateJobs", 1);
                tracing::info!(
                    delivery_id = job.delivery_id,
                    attempt = job.attempt,
                    recorded,
                    "attempt already made by another job; dropped"
                );
                return Tagged(id, Step::Ack.into());
            }
            After::Superseded => {
                counters.add("SupersededJobs", 1);
                tracing::info!(
                    delivery_id = job.delivery_id,
                    generation = job.generation,
                    "copy replaced by a newer one (repair or replay re-run); dropped"
                );
                return Tagged(id, Step::Ack.into());
            }
            After::Erased => return Tagged(id, self.drop_erased(&job, counters, metrics).into()),
            After::DeliveredByReplay(replay) => {
                counters.add("DeliveredByReplay", 1);
                tracing::info!(
                    delivery_id = job.delivery_id,
                    replay,
                    "a replay delivered the event meanwhile; not sent again"
                );
                let update = self.update(
                    &job,
                    DeliveryStatus::Delivered,
                    "delivered_by_replay",
                    None,
                    0,
                    now,
                    None,
                );
                return Tagged(id, self.record_delivered(&job, &update).await.into());
            }
            After::MissingRecord(reason) => {
                return Tagged(
                    id,
                    self.give_up(job, reason.to_string(), None, now, counters, metrics)
                        .await
                        .into(),
                );
            }
        }

        // The destination's rate limit: send at the reserved slot, waiting for it here when it is
        // close and the lane can afford it, else on the retry lane in SQS (no attempt spent).
        if let Some(limit) = destination.rate_limit.filter(|_| !probe) {
            let wait = match record.lane {
                Lane::Fast => RATE_FAST_LANE_WAIT_MS,
                Lane::Retry => RATE_MAX_WAIT_MS,
            };
            let spare = wait.min(plan::spare_ms(&ctx, abandon_after.unwrap_or(timeout)));
            match self.pace(&mut job, limit, spare).await {
                Ok(None) => {}
                Ok(Some(delay_secs)) => {
                    counters.add("RateDeferred", 1);
                    metrics.add(&job.destination_id, "RateDeferred", 1);
                    return Tagged(id, self.enqueue(job, delay_secs, Lane::Retry).await.into());
                }
                Err(e) => {
                    // Not a failed attempt, and no reason to dead-letter: try again shortly on the
                    // retry lane (an SQS redelivery would take the visibility timeout, and after
                    // five of them the job would reach the DLQ without a reason).
                    tracing::error!(delivery_id = job.delivery_id, error = %e, "cannot reserve a rate-limit slot; retried in 5 s");
                    counters.add("RateDeferred", 1);
                    job.due_at_ms = self.clock.now_ms() + 5_000;
                    return Tagged(id, self.enqueue(job, 5, Lane::Retry).await.into());
                }
            }
        }

        let started = Instant::now();
        let outcome = match abandon_after {
            None => self.attempt(destination, &job, timeout).await,
            Some(budget) => {
                match tokio::time::timeout(budget, self.attempt(destination, &job, timeout)).await {
                    Ok(o) => o,
                    Err(_) => {
                        // Too slow for the fast lane: the same attempt goes on the retry lane with
                        // its full timeout (the destination may have received this one: the next
                        // carries the same webhook-id), and the destination is marked slow.
                        counters.add("MovedToRetryLane", 1);
                        metrics.add(&job.destination_id, "MovedToRetryLane", 1);
                        tracing::warn!(
                            delivery_id = job.delivery_id,
                            destination = job.destination_id,
                            budget_ms = budget.as_millis() as u64,
                            "attempt abandoned on the fast lane; moved to the retry lane"
                        );
                        let observation = Some((job.destination_id.clone(), Observation::Slow));
                        let step = self.enqueue(job, 0, Lane::Retry).await;
                        return Tagged(id, Outcome { step, observation });
                    }
                }
            }
        };
        let latency_ms = started.elapsed().as_millis() as u64;
        let at_ms = self.clock.now_ms();
        job.log(AttemptLog {
            attempt: job.attempt,
            at_ms,
            outcome: outcome.describe(),
            status_code: outcome.status(),
            latency_ms,
            cycle: job.cycle_start,
            probe,
        });

        metrics.value(&job.destination_id, "AttemptLatencyMs", latency_ms);
        let verdict = destination.retry.verdict(job.policy_attempt(), &outcome);
        let delivered = matches!(verdict, Verdict::Delivered);
        let observation = Some((
            job.destination_id.clone(),
            Observation::of(&outcome, delivered),
        ));
        tracing::info!(
            delivery_id = job.delivery_id,
            destination = job.destination_id,
            attempt = job.attempt,
            cycle = job.cycle_start,
            probe,
            // The SQS message: tells two copies of one job apart when a destination sees a repeat.
            message_id = id,
            trace_id = job.envelope.trace_id(),
            outcome = outcome.describe(),
            latency_ms,
            verdict = ?verdict,
            "delivery attempt"
        );
        let step = if !delivered && (probe || breaker::is_gone(&outcome)) {
            // A failed probe, or 410 Gone (which pauses the destination): the job is held without
            // spending one of its retries.
            counters.add("Held", 1);
            metrics.add(&job.destination_id, "Held", 1);
            let recorded = self.update(
                &job,
                DeliveryStatus::Retrying,
                &outcome.describe(),
                outcome.status(),
                latency_ms,
                at_ms,
                None,
            );
            let mut next = job;
            next.attempt += 1;
            next.uncharged += 1;
            next.held_since_ms.get_or_insert(at_ms);
            let hold = self.settings.breaker.hold.as_secs().clamp(1, 900) as u32;
            next.due_at_ms = at_ms + u64::from(hold) * 1000;
            self.schedule_then_record(next, hold, recorded).await
        } else {
            match verdict {
                Verdict::Delivered => {
                    counters.add("Delivered", 1);
                    metrics.add(&job.destination_id, "Delivered", 1);
                    let lag = at_ms.saturating_sub(job.envelope.received_at_ms);
                    // DeliveryLagMs (and its alarm) measure how far behind live traffic is: a
                    // replay or a redrive of an old event is an operator's choice, not lag, and
                    // is counted apart.
                    match lag_metric(&job) {
                        Some(name) => metrics.value(&job.destination_id, name, lag),
                        None if job.replay.is_some() => {
                            metrics.add(&job.destination_id, "ReplayDelivered", 1)
                        }
                        None => metrics.add(&job.destination_id, "RedriveDelivered", 1),
                    }
                    let update = self.update(
                        &job,
                        DeliveryStatus::Delivered,
                        &outcome.describe(),
                        outcome.status(),
                        latency_ms,
                        at_ms,
                        Some(lag),
                    );
                    self.record_delivered(&job, &update).await
                }
                Verdict::RetryAfter(delay) => {
                    counters.add("Retries", 1);
                    metrics.add(&job.destination_id, "Retried", 1);
                    let recorded = self.update(
                        &job,
                        DeliveryStatus::Retrying,
                        &outcome.describe(),
                        outcome.status(),
                        latency_ms,
                        at_ms,
                        None,
                    );
                    let mut next = job;
                    next.attempt += 1;
                    next.due_at_ms = at_ms + delay.as_millis() as u64;
                    let delay_secs = sqs_delay_secs(next.due_at_ms, at_ms);
                    self.schedule_then_record(next, delay_secs, recorded).await
                }
                Verdict::GiveUp(reason) => {
                    let recorded = self.update(
                        &job,
                        DeliveryStatus::Failed,
                        &outcome.describe(),
                        outcome.status(),
                        latency_ms,
                        at_ms,
                        None,
                    );
                    self.give_up(job, reason, Some(recorded), at_ms, counters, metrics)
                        .await
                }
            }
        };
        Tagged(id, Outcome { step, observation })
    }

    #[allow(clippy::too_many_arguments)]
    fn update(
        &self,
        job: &DeliveryJob,
        status: DeliveryStatus,
        outcome: &str,
        status_code: Option<u16>,
        latency_ms: u64,
        at_ms: u64,
        lag_ms: Option<u64>,
    ) -> AttemptUpdate {
        AttemptUpdate {
            event_id: job.envelope.event_id.clone(),
            destination: job.destination_id.clone(),
            replay: job.replay.as_ref().map(|r| r.id.clone()),
            attempt: job.attempt,
            at_ms,
            status,
            outcome: outcome.to_string(),
            status_code,
            latency_ms,
            lag_ms,
            history: job.history_tail(),
            redrive: job.is_redrive(),
            expires_at_secs: job.expires_at_secs,
        }
    }

    /// Records a delivery as DELIVERED. Without the record a later duplicate job would send again: on
    /// failure SQS retries the job (the destination deduplicates a repeat on `webhook-id`).
    async fn record_delivered(&self, job: &DeliveryJob, update: &AttemptUpdate) -> Step {
        match self.store.record_attempt(&job.delivery_key(), update).await {
            Ok(_) => Step::Ack,
            Err(e) => {
                tracing::error!(delivery_id = job.delivery_id, error = %e, "cannot record delivery");
                Step::Fail
            }
        }
    }

    /// Enqueues the next job (retry lane), then records the attempt that led to it.
    async fn schedule_then_record(
        &self,
        next: DeliveryJob,
        delay_secs: u32,
        recorded: AttemptUpdate,
    ) -> Step {
        let key = next.delivery_key();
        let delivery_id = next.delivery_id.clone();
        if let Step::Fail = self.enqueue(next, delay_secs, Lane::Retry).await {
            return Step::Fail;
        }
        if let Err(e) = self.store.record_attempt(&key, &recorded).await {
            // The next attempt is scheduled; only the record lags behind.
            tracing::error!(delivery_id, error = %e, "cannot record attempt");
        }
        Step::Ack
    }

    async fn enqueue(&self, job: DeliveryJob, delay_secs: u32, lane: Lane) -> Step {
        let id = job.delivery_id.clone();
        match self
            .queue
            .schedule(vec![Scheduled {
                job,
                delay_secs,
                lane,
            }])
            .await
            .pop()
        {
            Some(Ok(())) => Step::Ack,
            other => {
                tracing::error!(delivery_id = id, error = ?other, "cannot enqueue job; SQS will redeliver it");
                Step::Fail
            }
        }
    }

    /// A job of an erased session: acknowledged and counted, never sent, recorded or dead-lettered
    /// (its webhook would outlive the erasure in the DLQ). Logged without personal data.
    fn drop_erased(
        &self,
        job: &DeliveryJob,
        counters: &Counters,
        metrics: &DestinationMetrics,
    ) -> Step {
        counters.add("ErasedJobsDropped", 1);
        metrics.add(&job.destination_id, "ErasedJobsDropped", 1);
        tracing::info!(
            delivery_id = job.delivery_id,
            destination = job.destination_id,
            "job of an erased session; dropped"
        );
        Step::Ack
    }

    async fn give_up(
        &self,
        mut job: DeliveryJob,
        reason: String,
        recorded: Option<AttemptUpdate>,
        at_ms: u64,
        counters: &Counters,
        metrics: &DestinationMetrics,
    ) -> Step {
        // The rare path reads the event's state once more: a job whose session was erased must not
        // carry its webhook into the DLQ, nor write a delivery item back into the erased partition.
        // If that read fails, the job is dead-lettered as before: failing it would repeat an attempt
        // already made (and the erasure's next run removes the DLQ copy).
        match self.store.view(&job.delivery_key()).await {
            Ok(v) if v.erased => return self.drop_erased(&job, counters, metrics),
            Ok(_) => {}
            Err(e) => {
                tracing::error!(delivery_id = job.delivery_id, error = %e, "cannot read delivery state; dead-lettering without the erasure check");
            }
        }
        counters.add("DeadLettered", 1);
        metrics.add(&job.destination_id, "DeadLettered", 1);
        tracing::warn!(
            delivery_id = job.delivery_id,
            destination = job.destination_id,
            reason,
            "delivery failed: to the DLQ"
        );
        job.dead_letter = Some(DeadLetterInfo {
            reason,
            at_ms,
            attempts: job.history.len() as u32 + job.history_dropped,
        });
        if let Err(e) = self.queue.dead_letter(&job).await {
            tracing::error!(delivery_id = job.delivery_id, error = %e, "cannot dead-letter job");
            return Step::Fail;
        }
        if let Some(update) = recorded
            && let Err(e) = self
                .store
                .record_attempt(&job.delivery_key(), &update)
                .await
        {
            tracing::error!(delivery_id = job.delivery_id, error = %e, "cannot record failure");
        }
        Step::Ack
    }

    /// One HTTP attempt, with one token refresh on a 401 when the destination uses OAuth.
    async fn attempt(
        &self,
        destination: &Destination,
        job: &DeliveryJob,
        timeout: Duration,
    ) -> AttemptOutcome {
        let (body, content_type) = match destination.body {
            BodyFormat::Raw => (
                job.envelope.raw_body.as_bytes().to_vec(),
                job.envelope.content_type.clone(),
            ),
            BodyFormat::Envelope => match serde_json::to_vec(&job.envelope) {
                Ok(b) => (b, "application/json".to_string()),
                Err(e) => {
                    return AttemptOutcome::Refused(format!("cannot serialise envelope: {e}"));
                }
            },
        };
        let url = match &destination.target {
            Target::Https(url) => url,
            Target::Aws(target) => {
                return self
                    .publish(destination, target, job, body, content_type, timeout)
                    .await;
            }
        };
        let Ok(content_type) = HeaderValue::from_str(&content_type) else {
            return AttemptOutcome::Refused("content type is not a valid header value".into());
        };
        let Ok(webhook_id) = HeaderValue::from_str(&job.delivery_id) else {
            return AttemptOutcome::Refused("delivery id is not a valid header value".into());
        };
        let signer = self
            .vault
            .get(&destination.id)
            .and_then(|c| c.signer.as_ref());
        let oauth = self.vault.uses_oauth(&destination.id);
        let mut refused: Option<String> = None;
        loop {
            let bearer = if oauth {
                match self
                    .vault
                    .token(
                        &self.transport,
                        &destination.id,
                        refused.as_deref(),
                        self.settings.token_timeout,
                    )
                    .await
                {
                    Ok(t) => Some(t),
                    Err(e) => return AttemptOutcome::TokenError(e.0),
                }
            } else {
                None
            };
            let timestamp = self.clock.now_secs();
            let mut headers: Vec<(HeaderName, HeaderValue)> = vec![
                (http::header::CONTENT_TYPE, content_type.clone()),
                (HeaderName::from_static(WEBHOOK_ID), webhook_id.clone()),
                (
                    HeaderName::from_static(WEBHOOK_TIMESTAMP),
                    HeaderValue::from(timestamp),
                ),
            ];
            if let Ok(v) = HeaderValue::from_str(&crate::trace::traceparent(
                job.envelope.trace_id(),
                &job.delivery_id,
                job.attempt,
            )) {
                headers.push((HeaderName::from_static(crate::trace::TRACEPARENT), v));
            }
            headers.extend(destination.headers.iter().cloned());
            if let Some(signer) = signer
                && let Ok(v) =
                    HeaderValue::from_str(&signer.sign(&job.delivery_id, timestamp, &body))
            {
                headers.push((HeaderName::from_static(WEBHOOK_SIGNATURE), v));
            }
            if let Some(token) = &bearer
                && let Ok(mut v) = HeaderValue::from_str(&format!("Bearer {token}"))
            {
                v.set_sensitive(true);
                headers.push((http::header::AUTHORIZATION, v));
            }
            let outcome = match self
                .transport
                .post(Post {
                    destination: destination.id.clone(),
                    url: url.clone(),
                    headers,
                    body: body.clone(),
                    timeout,
                    want_body: false,
                })
                .await
            {
                Ok(reply) => AttemptOutcome::Response {
                    status: reply.status,
                    content_type: reply.content_type,
                    retry_after: reply
                        .retry_after
                        .and_then(|v| parse_retry_after(&v, self.clock.now_secs())),
                },
                Err(e) => failed_outcome(e),
            };
            if refused.is_none()
                && outcome.status() == Some(401)
                && let Some(token) = bearer
            {
                // The destination may have rotated or revoked the token before its expiry.
                refused = Some(token);
                continue;
            }
            return outcome;
        }
    }
}

impl<S, Q, T> Dispatcher<S, Q, T>
where
    S: DeliveryStore + DestinationStates + RateLimiter,
    Q: DeliveryQueue,
    T: Transport,
{
    /// One attempt to an AWS target: the message, with what its consumers filter, order and
    /// deduplicate on, and the service's answer classified.
    async fn publish(
        &self,
        destination: &Destination,
        target: &crate::destination::AwsTarget,
        job: &DeliveryJob,
        body: Vec<u8>,
        content_type: String,
        timeout: Duration,
    ) -> AttemptOutcome {
        let Ok(body) = String::from_utf8(body) else {
            return AttemptOutcome::Refused("body is not UTF-8 text".into());
        };
        let publish = transport::Publish {
            destination: destination.id.clone(),
            target: target.clone(),
            body,
            webhook_id: job.delivery_id.clone(),
            provider: job.envelope.provider.as_str(),
            event_type: job.envelope.event_type.clone(),
            content_type,
            group: crate::records::EventKey::of(&job.envelope).pk,
            trace_id: job.envelope.trace_id().to_string(),
            traceparent: crate::trace::traceparent(
                job.envelope.trace_id(),
                &job.delivery_id,
                job.attempt,
            ),
            timeout,
        };
        match self.transport.publish(publish).await {
            Ok(()) => AttemptOutcome::Published,
            Err(transport::PublishError::Refused(r)) => AttemptOutcome::Aws {
                code: r.code,
                class: r.class,
            },
            Err(transport::PublishError::Transport(e)) => failed_outcome(e),
        }
    }
}

/// Longest wait for a rate-limit slot inside a retry-lane invocation; further slots wait in SQS.
pub const RATE_MAX_WAIT_MS: u64 = 3_000;
/// The same on the fast lane, whose attempts are cut at 2 s: only a slot just ahead is waited for.
pub const RATE_FAST_LANE_WAIT_MS: u64 = 250;
/// A job deferred to its slot is due this much before it (SQS delays are whole seconds, rounded
/// up), so it is visible one to two seconds early and waits for the slot, rather than arriving
/// after it (it would then need a new slot, at the back of the schedule).
pub const RATE_EARLY_MS: u64 = 2_000;
/// How late (beyond the burst allowance) a slot may still be used: the clock's millisecond and a
/// send's own jitter. A slot further past is given up for a new one.
pub const RATE_LATE_US: u64 = 10_000;

impl<S, Q, T> Dispatcher<S, Q, T>
where
    S: DeliveryStore + DestinationStates + RateLimiter,
    Q: DeliveryQueue,
    T: Transport,
{
    /// When the job may be sent under its destination's limit: `None`, now (after waiting up to
    /// `spare_ms` for its slot), or the SQS delay of its deferral to the retry lane with the slot.
    async fn pace(
        &self,
        job: &mut DeliveryJob,
        limit: RateLimit,
        spare_ms: u64,
    ) -> Result<Option<u32>, crate::records::StoreError> {
        let now_us = || self.clock.now_ms().saturating_mul(1000);
        // A slot may lie before now by the burst allowance (GCRA's tolerance: those go at once);
        // one further past is late: sending then would crowd the slots after it.
        let late = |slot: u64, now: u64| slot + limit.tolerance_us() + RATE_LATE_US < now;
        let mut slot = match job.rate_slot_us.take() {
            // Deferred to this slot and back in time: it is still this job's.
            Some(slot) if !late(slot, now_us()) => slot,
            // Never deferred, or back after its slot passed: a new slot.
            _ => {
                self.store
                    .reserve(&job.destination_id, now_us(), limit)
                    .await?
            }
        };
        // The store answered after the slot (a slow or contended write): one new reservation, at
        // the schedule's end. Should that one be late too (the store keeps answering slower than
        // the tolerance), it is used: the job is sent rather than deferred for ever, and the
        // destination sees at most one send early per such slow answer.
        if late(slot, now_us()) {
            slot = self
                .store
                .reserve(&job.destination_id, now_us(), limit)
                .await?;
        }
        // Measured after the reservation: from before it, the wait would end late by the store's
        // latency, onto the next slot.
        let wait_us = slot.saturating_sub(now_us());
        if wait_us <= spare_ms.saturating_mul(1000) {
            if wait_us > 0 {
                tokio::time::sleep(Duration::from_micros(wait_us)).await;
            }
            return Ok(None);
        }
        let now_ms = self.clock.now_ms();
        job.rate_slot_us = Some(slot);
        job.due_at_ms = (slot / 1000).saturating_sub(RATE_EARLY_MS).max(now_ms);
        Ok(Some(sqs_delay_secs(job.due_at_ms, now_ms)))
    }
}

/// The outcome of an attempt the transport could not complete, for every destination kind.
fn failed_outcome(e: TransportError) -> AttemptOutcome {
    match e {
        TransportError::Timeout => AttemptOutcome::Timeout,
        TransportError::Connect => AttemptOutcome::ConnectError,
        TransportError::Refused(why) => AttemptOutcome::Refused(why),
        TransportError::TlsServer(why) => AttemptOutcome::TlsServer(why),
        TransportError::TlsClient(why) => AttemptOutcome::TlsClient(why),
    }
}

/// The lag metric a delivered job reports: live deliveries only (not replays, not redriven cycles).
fn lag_metric(job: &DeliveryJob) -> Option<&'static str> {
    (job.replay.is_none() && !job.is_redrive()).then_some("DeliveryLagMs")
}

/// An outcome with the message id it belongs to.
struct Tagged(String, Outcome);

#[cfg(test)]
mod tests;
