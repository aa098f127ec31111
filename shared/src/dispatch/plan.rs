//! What to do with a delivery job, as a decision table over what the dispatcher knows: the job, the
//! lane it came from, its destination's configuration and shared state, the time and the
//! invocation's deadline ([`before`]); then the delivery's stored state ([`after`]). Pure: every row
//! has a unit test, and the dispatcher only carries the decision out.

use super::breaker::BreakerSettings;
use crate::delivery::{DeliveryJob, Lane, is_due, sqs_delay_secs};
use crate::destination::Destination;
use crate::records::{DeliveryStatus, DeliveryView, DestinationState, PausedBy};
use std::time::Duration;

/// Time kept free after an attempt for recording its outcome and enqueueing what follows.
pub const DEADLINE_MARGIN: Duration = Duration::from_secs(3);

pub struct Context<'a> {
    pub now_ms: u64,
    /// The invocation's deadline.
    pub deadline_ms: u64,
    pub lane: Lane,
    pub destination: Option<&'a Destination>,
    pub state: Option<&'a DestinationState>,
    pub breaker: &'a BreakerSettings,
    /// Per-request timeout of destinations that set none.
    pub default_timeout: Duration,
    /// Limit of one token fetch (OAuth destinations).
    pub token_timeout: Duration,
    pub uses_oauth: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Before {
    /// Not due yet (a delay longer than SQS's 900 s): re-enqueue the remainder on the retry lane.
    Chain { delay_secs: u32 },
    /// Cannot be delivered: to the DLQ (with a FAILED record if the delivery has one to move).
    DeadLetter { reason: String, record_failed: bool },
    /// The destination is paused: hold the job on the retry lane, no attempt.
    Hold { delay_secs: u32 },
    /// Paused by the breaker and a probe is due: probe with this job if this dispatcher wins it.
    Probe { timeout: Duration },
    /// First attempt on the fast lane for a destination marked slow: move it.
    ToRetryLane,
    /// Too little of this invocation is left for the attempt: hand the job back (re-enqueued now).
    HandBack,
    /// Read the delivery's state, then attempt with this request timeout; on the fast lane the
    /// attempt is abandoned (and the job moved to the retry lane) after `abandon_after`.
    Attempt {
        timeout: Duration,
        abandon_after: Option<Duration>,
    },
}

/// The decision before the delivery's state is read.
pub fn before(job: &DeliveryJob, ctx: &Context<'_>) -> Before {
    if ctx.now_ms / 1000 > job.expires_at_secs {
        return Before::DeadLetter {
            reason:
                "the event's records expired: late arrival refused (replay it from the archive)"
                    .into(),
            record_failed: false,
        };
    }
    if !is_due(job.due_at_ms, ctx.now_ms) {
        return Before::Chain {
            delay_secs: sqs_delay_secs(job.due_at_ms, ctx.now_ms),
        };
    }
    let Some(destination) = ctx.destination else {
        return Before::DeadLetter {
            reason: format!(
                "destination {:?} is no longer configured",
                job.destination_id
            ),
            record_failed: true,
        };
    };
    let full_timeout = destination
        .timeout_ms
        .map_or(ctx.default_timeout, Duration::from_millis);
    if let Some(pause) = ctx.state.and_then(|s| s.paused.as_ref()) {
        let probe_due =
            pause.by == PausedBy::Breaker && ctx.state.is_some_and(|s| s.probe_at_ms <= ctx.now_ms);
        // Probes run on the retry lane only: there the full timeout (and token fetches) may be
        // spent, while a fast-lane slot is bounded by the lane's budget (ARCHITECTURE §1.6). The
        // job moves at once, so the probe is not later than it would have been.
        if probe_due && ctx.lane == Lane::Fast {
            return Before::ToRetryLane;
        }
        // The probe comes before the hold limit: however long the pause, the destination keeps
        // being probed, so it resumes by itself when it answers again.
        if probe_due && fits(ctx, full_timeout) {
            return Before::Probe {
                timeout: full_timeout,
            };
        }
        // `max_hold` bounds how long one job waits for a paused destination (since it was first
        // held), not how long the destination may stay paused: jobs that arrive later are held
        // for their own `max_hold`.
        let max_hold_ms = ctx.breaker.max_hold.as_millis() as u64;
        if let Some(held_since) = job.held_since_ms
            && ctx.now_ms.saturating_sub(held_since) > max_hold_ms
        {
            return Before::DeadLetter {
                reason: format!(
                    "held for more than {} s while the destination was paused ({}: {})",
                    ctx.breaker.max_hold.as_secs(),
                    pause.by.as_str(),
                    pause.reason
                ),
                record_failed: true,
            };
        }
        return Before::Hold {
            delay_secs: hold_secs(ctx.breaker.hold),
        };
    }
    let fast = ctx.lane == Lane::Fast;
    if fast && ctx.state.is_some_and(|s| s.slow_until_ms > ctx.now_ms) {
        return Before::ToRetryLane;
    }
    // On the fast lane the whole attempt (token fetch included) is cut at the lane's budget.
    let abandon_after = fast.then(|| full_timeout.min(ctx.breaker.fast_lane_timeout));
    let fits = match abandon_after {
        Some(budget) => {
            ctx.now_ms
                .saturating_add((budget + DEADLINE_MARGIN).as_millis() as u64)
                <= ctx.deadline_ms
        }
        None => fits(ctx, full_timeout),
    };
    if !fits {
        return Before::HandBack;
    }
    Before::Attempt {
        timeout: full_timeout,
        abandon_after,
    }
}

/// Whether an attempt with this request timeout can finish before the deadline: the request, for
/// OAuth destinations a token fetch and a resend after one 401, and the margin for the outcome.
fn fits(ctx: &Context<'_>, timeout: Duration) -> bool {
    ctx.now_ms
        .saturating_add(attempt_budget(ctx, timeout).as_millis() as u64)
        <= ctx.deadline_ms
}

fn attempt_budget(ctx: &Context<'_>, timeout: Duration) -> Duration {
    let requests = if ctx.uses_oauth {
        2 * timeout + 2 * ctx.token_timeout
    } else {
        timeout
    };
    requests + DEADLINE_MARGIN
}

/// How long a job may wait in this invocation before its attempt (for its rate-limit slot) and
/// still finish it before the deadline.
pub fn spare_ms(ctx: &Context<'_>, timeout: Duration) -> u64 {
    ctx.deadline_ms.saturating_sub(
        ctx.now_ms
            .saturating_add(attempt_budget(ctx, timeout).as_millis() as u64),
    )
}

/// Whole seconds of a hold, within SQS's delay limit, with ±10 % jitter so held jobs spread out.
fn hold_secs(hold: Duration) -> u32 {
    let base = hold.as_secs().clamp(1, 900) as f64;
    let jittered = base * (0.9 + 0.2 * fastrand::f64());
    (jittered.round() as u32).clamp(1, 900)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum After {
    /// Delivered or given up already: acknowledge without sending.
    AlreadyFinal(DeliveryStatus),
    /// Another copy of this job made the attempt.
    DuplicateJob {
        recorded: u32,
    },
    /// A copy a repair (or a re-run replay) replaced with a newer one.
    Superseded,
    /// Nothing to record the attempt against: to the DLQ with this reason.
    MissingRecord(&'static str),
    /// A replay (this id) delivered the event to the destination meanwhile: record the original
    /// delivery as DELIVERED without sending again.
    DeliveredByReplay(String),
    /// The event's session was erased: drop the job (no request, no record, no DLQ copy).
    Erased,
    Go,
}

/// The decision once the delivery's state is read.
pub fn after(job: &DeliveryJob, view: &DeliveryView) -> After {
    if view.erased {
        return After::Erased;
    }
    match &view.delivery {
        Some(state) => {
            let moves_again = job.is_redrive()
                && state.status == DeliveryStatus::Failed
                && state.attempts < job.cycle_start;
            if state.status.is_final() && !moves_again {
                return After::AlreadyFinal(state.status);
            }
            if job.replay.is_none()
                && let Some(replay) = &view.delivered_by_replay
            {
                return After::DeliveredByReplay(replay.clone());
            }
            if state.attempts >= job.attempt {
                return After::DuplicateJob {
                    recorded: state.attempts,
                };
            }
            if let Some(replay) = &job.replay
                && state.attempts == 0
                && state.token.as_deref() != Some(replay.token.as_str())
            {
                return After::Superseded;
            }
            After::Go
        }
        None if job.replay.is_some() => After::MissingRecord("the replay's record is gone"),
        None if view.event_exists && view.delivered_by_replay.is_some() => {
            After::DeliveredByReplay(view.delivered_by_replay.clone().unwrap_or_default())
        }
        None if !view.event_exists => After::MissingRecord("no event record"),
        None if job.attempt == 1 && job.generation < view.generation => After::Superseded,
        None => After::Go,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::destination::Destinations;
    use crate::records::{DeliveryState, Pause};

    const NOW: u64 = 1_800_000_000_000;

    fn destinations() -> Destinations {
        Destinations::parse(
            r#"{"destinations": [{"id": "crm", "url": "https://crm.example/h", "retry_policy": "idnow"},
                {"id": "slow", "url": "https://slow.example/h", "retry_policy": "idnow", "timeout_ms": 8000}]}"#,
        )
        .unwrap()
    }

    fn job() -> DeliveryJob {
        let env = crate::envelope::tests_support::idnow("e1", "s1");
        DeliveryJob::first(&env, "crm", NOW, 0, NOW / 1000 + 86_400)
    }

    fn ctx<'a>(
        d: &'a Destinations,
        state: Option<&'a DestinationState>,
        lane: Lane,
        s: &'a BreakerSettings,
    ) -> Context<'a> {
        Context {
            now_ms: NOW,
            deadline_ms: NOW + 120_000,
            lane,
            destination: d.get("crm"),
            state,
            breaker: s,
            default_timeout: Duration::from_secs(10),
            token_timeout: Duration::from_secs(5),
            uses_oauth: false,
        }
    }

    #[test]
    fn a_healthy_destination_is_attempted_with_the_lane_timeout() {
        let (d, s) = (destinations(), BreakerSettings::default());
        assert_eq!(
            before(&job(), &ctx(&d, None, Lane::Fast, &s)),
            Before::Attempt {
                timeout: Duration::from_secs(10),
                abandon_after: Some(Duration::from_secs(2))
            }
        );
        assert_eq!(
            before(&job(), &ctx(&d, None, Lane::Retry, &s)),
            Before::Attempt {
                timeout: Duration::from_secs(10),
                abandon_after: None
            }
        );
    }

    #[test]
    fn late_early_and_removed_jobs() {
        let (d, s) = (destinations(), BreakerSettings::default());
        let mut late = job();
        late.expires_at_secs = NOW / 1000 - 1;
        assert!(matches!(
            before(&late, &ctx(&d, None, Lane::Fast, &s)),
            Before::DeadLetter {
                record_failed: false,
                ..
            }
        ));
        let mut early = job();
        early.due_at_ms = NOW + 1_171_875;
        assert_eq!(
            before(&early, &ctx(&d, None, Lane::Retry, &s)),
            Before::Chain { delay_secs: 900 }
        );
        let mut gone = job();
        gone.destination_id = "removed".into();
        let mut c = ctx(&d, None, Lane::Fast, &s);
        c.destination = None;
        assert!(matches!(
            before(&gone, &c),
            Before::DeadLetter {
                record_failed: true,
                ..
            }
        ));
    }

    fn paused(by: PausedBy, since_ms: u64, probe_at_ms: u64) -> DestinationState {
        DestinationState {
            paused: Some(Pause {
                by,
                reason: "test".into(),
                since_ms,
            }),
            probe_at_ms,
            ..Default::default()
        }
    }

    #[test]
    fn paused_destinations_hold_probe_and_finally_dead_letter() {
        let (d, s) = (destinations(), BreakerSettings::default());
        let held = paused(PausedBy::Breaker, NOW - 1_000, NOW + 30_000);
        assert!(matches!(
            before(&job(), &ctx(&d, Some(&held), Lane::Fast, &s)),
            Before::Hold { delay_secs } if (270..=330).contains(&delay_secs)
        ));
        let probe = paused(PausedBy::Breaker, NOW - 1_000, NOW);
        assert_eq!(
            before(&job(), &ctx(&d, Some(&probe), Lane::Retry, &s)),
            Before::Probe {
                timeout: Duration::from_secs(10)
            }
        );
        // An operator's pause is never probed.
        let operator = paused(PausedBy::Operator, NOW - 1_000, 0);
        assert!(matches!(
            before(&job(), &ctx(&d, Some(&operator), Lane::Retry, &s)),
            Before::Hold { .. }
        ));
        // The hold limit is per job: a pause of eight days holds a job that just arrived...
        let too_long = paused(PausedBy::Operator, NOW - 8 * 86_400_000, 0);
        assert!(matches!(
            before(&job(), &ctx(&d, Some(&too_long), Lane::Retry, &s)),
            Before::Hold { .. }
        ));
        // ...and dead-letters one held for longer than MAX_HOLD_SECONDS.
        let mut held = job();
        held.held_since_ms = Some(NOW - 7 * 86_400_000 - 1);
        assert!(matches!(
            before(&held, &ctx(&d, Some(&too_long), Lane::Retry, &s)),
            Before::DeadLetter { record_failed: true, reason } if reason.contains("held for more than 604800 s")
        ));
        // A breaker pause is probed however old it is (even with a job past its limit)...
        let old_breaker = paused(PausedBy::Breaker, NOW - 30 * 86_400_000, NOW);
        assert_eq!(
            before(&held, &ctx(&d, Some(&old_breaker), Lane::Retry, &s)),
            Before::Probe {
                timeout: Duration::from_secs(10)
            }
        );
        // ...but never on the fast lane, whose budget a probe's full timeout would break.
        assert_eq!(
            before(&job(), &ctx(&d, Some(&probe), Lane::Fast, &s)),
            Before::ToRetryLane
        );
    }

    #[test]
    fn slow_destinations_skip_the_fast_lane_and_deadlines_are_kept() {
        let (d, s) = (destinations(), BreakerSettings::default());
        let slow = DestinationState {
            slow_until_ms: NOW + 1,
            ..Default::default()
        };
        assert_eq!(
            before(&job(), &ctx(&d, Some(&slow), Lane::Fast, &s)),
            Before::ToRetryLane
        );
        assert!(matches!(
            before(&job(), &ctx(&d, Some(&slow), Lane::Retry, &s)),
            Before::Attempt {
                abandon_after: None,
                ..
            }
        ));
        // 10 s request + 3 s margin do not fit in 12 s.
        let mut c = ctx(&d, None, Lane::Retry, &s);
        c.deadline_ms = NOW + 12_000;
        assert_eq!(before(&job(), &c), Before::HandBack);
        c.deadline_ms = NOW + 13_000;
        assert!(matches!(before(&job(), &c), Before::Attempt { .. }));
        // OAuth: a token fetch and a resend after a 401 must fit too.
        c.uses_oauth = true;
        assert_eq!(before(&job(), &c), Before::HandBack);
    }

    fn view(delivery: Option<(DeliveryStatus, u32)>, generation: u32) -> DeliveryView {
        DeliveryView {
            event_exists: true,
            generation,
            delivery: delivery.map(|(status, attempts)| DeliveryState {
                status,
                attempts,
                token: None,
            }),
            delivered_by_replay: None,
            erased: false,
        }
    }

    #[test]
    fn stored_state_decides_duplicates_and_superseded_copies() {
        let j = job();
        assert_eq!(after(&j, &view(None, 0)), After::Go);
        assert_eq!(
            after(&j, &view(Some((DeliveryStatus::Delivered, 1)), 0)),
            After::AlreadyFinal(DeliveryStatus::Delivered)
        );
        assert_eq!(
            after(&j, &view(Some((DeliveryStatus::Retrying, 1)), 0)),
            After::DuplicateJob { recorded: 1 }
        );
        // A repair bumped the generation: this never-attempted copy was replaced.
        assert_eq!(after(&j, &view(None, 1)), After::Superseded);
        // ...but a retry of an older generation is the delivery's own chain.
        let mut retry = j.clone();
        retry.attempt = 2;
        assert_eq!(
            after(&retry, &view(Some((DeliveryStatus::Retrying, 1)), 3)),
            After::Go
        );
        let mut missing = view(None, 0);
        missing.event_exists = false;
        assert!(matches!(after(&j, &missing), After::MissingRecord(_)));
        // A redriven cycle may move a delivery an earlier cycle left FAILED.
        let mut redriven = j.clone();
        redriven.attempt = 7;
        redriven.cycle_start = 7;
        assert_eq!(
            after(&redriven, &view(Some((DeliveryStatus::Failed, 6)), 0)),
            After::Go
        );
        redriven.attempt = 8;
        assert_eq!(
            after(&redriven, &view(Some((DeliveryStatus::Failed, 6)), 0)),
            After::Go
        );
        assert_eq!(
            after(&redriven, &view(Some((DeliveryStatus::Failed, 7)), 0)),
            After::AlreadyFinal(DeliveryStatus::Failed)
        );
    }

    #[test]
    fn a_delivered_replay_makes_the_original_delivery_final() {
        let mut v = view(Some((DeliveryStatus::Failed, 3)), 0);
        v.delivered_by_replay = Some("r1".into());
        let mut redriven = job();
        redriven.attempt = 4;
        redriven.cycle_start = 4;
        assert_eq!(after(&redriven, &v), After::DeliveredByReplay("r1".into()));
        // A retry of a delivery never recorded (an event whose first job was held) too.
        let mut none = view(None, 0);
        none.delivered_by_replay = Some("r1".into());
        assert_eq!(after(&job(), &none), After::DeliveredByReplay("r1".into()));
        // Delivered already: stays what it is.
        let mut done = view(Some((DeliveryStatus::Delivered, 1)), 0);
        done.delivered_by_replay = Some("r1".into());
        assert_eq!(
            after(&job(), &done),
            After::AlreadyFinal(DeliveryStatus::Delivered)
        );
    }

    #[test]
    fn replay_copies_carry_the_markers_token() {
        let mut j = job();
        j.replay = Some(crate::delivery::ReplayInfo {
            id: "r1".into(),
            token: "t2".into(),
        });
        let marker = |token: &str| DeliveryView {
            event_exists: false,
            generation: 0,
            delivery: Some(DeliveryState {
                status: DeliveryStatus::Pending,
                attempts: 0,
                token: Some(token.into()),
            }),
            delivered_by_replay: None,
            erased: false,
        };
        assert_eq!(after(&j, &marker("t2")), After::Go);
        assert_eq!(after(&j, &marker("t1")), After::Superseded);
        assert!(matches!(
            after(&j, &DeliveryView::default()),
            After::MissingRecord(_)
        ));
    }
}
