//! The circuit breaker and the slow lane: the rules, as pure functions over what a batch observed.
//!
//! **Rule.** A destination is paused when one dispatcher sees `failure_threshold` (default 10)
//! consecutive counted failures: timeouts, connection errors, token-endpoint failures, `5xx`, `408`
//! and `429`. Other `4xx` and refused addresses say something about one event, not about the
//! destination, and do not count. A success ends the streak; within one batch (attempts run
//! concurrently, their order unknown) any success ends it. Each dispatcher instance keeps its own
//! streak in memory, so counting costs no write: a destination that is down fails every attempt of
//! every instance and trips within one instance's next `failure_threshold` attempts, while one that
//! fails 30 % of the time has a streak of 10 about once in 170 000 attempts. The pause itself is
//! shared state (one conditional write). `410 Gone` pauses at once.
//!
//! **While paused** its jobs are held on the retry lane (re-enqueued every `hold`, default 300 s)
//! without an attempt, so no retry is spent and nothing reaches the DLQ because the destination was
//! down. Once per `probe_interval` (default 60 s) one held job is sent as a probe, on the retry lane
//! only (one dispatcher wins a conditional write): a success resumes the destination (its held jobs
//! follow within one `hold`); a failure keeps it paused and is not counted against that job's
//! retries, nor in any instance's streak. Probing goes on for as long as the pause lasts. One job
//! held for longer than `max_hold` (default 7 days, bounded by the records' lifetime), counted from
//! when that job was first held, is dead-lettered with that reason; jobs that arrive later are held
//! for their own `max_hold`. Every transition is logged (`destination paused` / `destination
//! resumed`) and counted (EMF `DestinationPaused` / `DestinationResumed` with the `Destination`
//! dimension). A pause or a resume ends every instance's streak: an instance forgets a streak begun
//! before the destination's last resume (`resumed_at_ms`).
//!
//! **Slow lane.** On the fast lane an attempt may take at most `fast_lane_timeout` (default 2 s). One
//! that takes longer is abandoned, the job moves to the retry lane with the same attempt number
//! (the destination may have received it: the next POST carries the same `webhook-id`), and the
//! destination's first attempts skip the fast lane for `slow_hold` (default 10 min). So a slow
//! destination delays the others' deliveries by at most `fast_lane_timeout`, once per dispatcher
//! state refresh, and not at all once it is marked.

use crate::records::{BreakerWrite, DestinationState, PausedBy};
use crate::retry::{AttemptOutcome, AwsClass};
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq)]
pub struct BreakerSettings {
    pub failure_threshold: u32,
    pub probe_interval: Duration,
    pub hold: Duration,
    pub max_hold: Duration,
    pub fast_lane_timeout: Duration,
    pub slow_hold: Duration,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        Self {
            failure_threshold: 10,
            probe_interval: Duration::from_secs(60),
            hold: Duration::from_secs(300),
            max_hold: Duration::from_secs(7 * 86_400),
            fast_lane_timeout: Duration::from_secs(2),
            slow_hold: Duration::from_secs(600),
        }
    }
}

/// Whether an outcome says the destination (not the event) is failing.
pub fn counts_as_failure(outcome: &AttemptOutcome) -> bool {
    match outcome {
        AttemptOutcome::Timeout
        | AttemptOutcome::ConnectError
        | AttemptOutcome::TokenError(_)
        // An unacceptable server certificate is the destination's fault, like an outage: counted,
        // so a destination whose certificate expired is paused and its jobs held.
        | AttemptOutcome::TlsServer(_) => true,
        // A refused client certificate is our configuration, like a refused request: the DLQ
        // (with its alarm) says so at once.
        AttemptOutcome::Refused(_) | AttemptOutcome::TlsClient(_) | AttemptOutcome::Published => {
            false
        }
        // Throttling, service errors and an unusable target (access denied, queue or key gone)
        // say the target is failing; a refused message says nothing about it.
        AttemptOutcome::Aws { class, .. } => *class != AwsClass::Rejected,
        AttemptOutcome::Response { status, .. } => {
            *status >= 500 || *status == 408 || *status == 429
        }
    }
}

pub fn is_gone(outcome: &AttemptOutcome) -> bool {
    outcome.status() == Some(410)
}

/// What one attempt (or abandoned attempt) told about its destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observation {
    Success,
    Failure(String),
    /// Neither (a 4xx about the event, a refused address).
    Neutral,
    Gone,
    /// Abandoned on the fast lane.
    Slow,
}

impl Observation {
    pub fn of(outcome: &AttemptOutcome, success: bool) -> Self {
        if success {
            Observation::Success
        } else if is_gone(outcome) {
            Observation::Gone
        } else if counts_as_failure(outcome) {
            Observation::Failure(outcome.describe())
        } else {
            Observation::Neutral
        }
    }
}

/// Consecutive counted failures of one destination as one dispatcher instance saw them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Streak {
    pub failures: u32,
    pub last: String,
    /// When the streak's first failure was observed: a streak begun before the destination's last
    /// resume is forgotten, so a warm instance does not re-pause a resumed destination on its first
    /// failure.
    pub started_ms: u64,
}

/// The writes a batch's observations call for, per destination, given the state the dispatcher
/// read and its own streaks (updated here). Nothing is written for a destination whose streak stays
/// under the threshold and that is not paused: the happy path costs no breaker write.
pub fn writes(
    observations: &[(String, Observation)],
    states: &BTreeMap<String, DestinationState>,
    streaks: &mut BTreeMap<String, Streak>,
    settings: &BreakerSettings,
    now_ms: u64,
) -> Vec<(String, BreakerWrite)> {
    let mut by_destination: BTreeMap<&str, Vec<&Observation>> = BTreeMap::new();
    for (d, o) in observations {
        by_destination.entry(d.as_str()).or_default().push(o);
    }
    let probe_at_ms = now_ms + settings.probe_interval.as_millis() as u64;
    let mut out = Vec::new();
    for (destination, obs) in by_destination {
        let state = states.get(destination);
        let paused = state.and_then(|s| s.paused.as_ref());
        if obs.iter().any(|o| matches!(o, Observation::Gone)) && paused.is_none() {
            out.push((
                destination.to_string(),
                BreakerWrite::Gone {
                    reason: "410 Gone".into(),
                    probe_at_ms,
                },
            ));
        }
        if obs.iter().any(|o| matches!(o, Observation::Slow)) {
            out.push((
                destination.to_string(),
                BreakerWrite::Slow {
                    until_ms: now_ms + settings.slow_hold.as_millis() as u64,
                },
            ));
        }
        let streak = streaks.entry(destination.to_string()).or_default();
        // Failures seen while paused (failed probes) say nothing new, and a pause or resume since
        // the streak began ends it: streaks count afresh after every transition.
        if paused.is_some()
            || (streak.failures > 0 && state.is_some_and(|s| s.resumed_at_ms >= streak.started_ms))
        {
            *streak = Streak::default();
        }
        if obs.iter().any(|o| matches!(o, Observation::Success)) {
            *streak = Streak::default();
            if paused.is_some_and(|p| p.by == PausedBy::Breaker) {
                out.push((destination.to_string(), BreakerWrite::Recovered));
            }
            continue;
        }
        if paused.is_some() {
            continue;
        }
        for o in &obs {
            if let Observation::Failure(why) = o {
                if streak.failures == 0 {
                    streak.started_ms = now_ms;
                }
                streak.failures += 1;
                streak.last = why.clone();
            }
        }
        if streak.failures >= settings.failure_threshold {
            out.push((
                destination.to_string(),
                BreakerWrite::Trip {
                    failures: streak.failures,
                    last: streak.last.clone(),
                    probe_at_ms,
                },
            ));
            *streak = Streak::default();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::Pause;

    fn response(status: u16) -> AttemptOutcome {
        AttemptOutcome::Response {
            status,
            content_type: None,
            retry_after: None,
        }
    }

    #[test]
    fn what_counts() {
        for o in [
            AttemptOutcome::Timeout,
            AttemptOutcome::ConnectError,
            AttemptOutcome::TokenError("x".into()),
            response(500),
            response(503),
            response(429),
            response(408),
            AttemptOutcome::TlsServer("server cert expired".into()),
        ] {
            assert!(counts_as_failure(&o), "{o:?}");
        }
        for o in [
            response(400),
            response(404),
            response(410),
            AttemptOutcome::Refused("x".into()),
            AttemptOutcome::TlsClient("client cert refused: unknown_ca".into()),
        ] {
            assert!(!counts_as_failure(&o), "{o:?}");
        }
        assert_eq!(Observation::of(&response(410), false), Observation::Gone);
        assert_eq!(Observation::of(&response(400), false), Observation::Neutral);
    }

    #[test]
    fn a_healthy_destination_costs_no_write() {
        let s = BreakerSettings::default();
        let mut streaks = BTreeMap::new();
        let obs = vec![("crm".to_string(), Observation::Success); 10];
        assert!(writes(&obs, &BTreeMap::new(), &mut streaks, &s, 0).is_empty());
        // A success while paused by the breaker (the probe passed) resumes; an operator's pause stays.
        let mut states = BTreeMap::new();
        states.insert(
            "crm".to_string(),
            DestinationState {
                paused: Some(Pause {
                    by: PausedBy::Breaker,
                    reason: "x".into(),
                    since_ms: 0,
                }),
                ..Default::default()
            },
        );
        assert_eq!(
            writes(&obs, &states, &mut streaks, &s, 0),
            vec![("crm".to_string(), BreakerWrite::Recovered)]
        );
        states.get_mut("crm").unwrap().paused.as_mut().unwrap().by = PausedBy::Operator;
        assert!(writes(&obs, &states, &mut streaks, &s, 0).is_empty());
    }

    #[test]
    fn consecutive_failures_trip_once_and_a_success_ends_the_streak() {
        let s = BreakerSettings::default();
        let mut streaks = BTreeMap::new();
        let fail = |n| vec![("a".to_string(), Observation::Failure("http_503".into())); n];
        assert!(writes(&fail(6), &BTreeMap::new(), &mut streaks, &s, 0).is_empty());
        // A batch with a success in it ends the streak, whatever order its attempts ran in.
        let mut mixed = fail(3);
        mixed.push(("a".to_string(), Observation::Success));
        assert!(writes(&mixed, &BTreeMap::new(), &mut streaks, &s, 0).is_empty());
        assert!(writes(&fail(9), &BTreeMap::new(), &mut streaks, &s, 0).is_empty());
        // Neutral outcomes (a 400 about one event) neither count nor end the streak.
        let neutral = vec![("a".to_string(), Observation::Neutral); 5];
        assert!(writes(&neutral, &BTreeMap::new(), &mut streaks, &s, 0).is_empty());
        assert_eq!(
            writes(&fail(1), &BTreeMap::new(), &mut streaks, &s, 1_000),
            vec![(
                "a".to_string(),
                BreakerWrite::Trip {
                    failures: 10,
                    last: "http_503".into(),
                    probe_at_ms: 61_000
                }
            )]
        );
        assert_eq!(
            streaks["a"],
            Streak::default(),
            "counted afresh after a trip"
        );
    }

    #[test]
    fn gone_and_slow_are_written_once_per_destination() {
        let s = BreakerSettings::default();
        let obs = vec![
            ("b".to_string(), Observation::Gone),
            ("b".to_string(), Observation::Gone),
            ("c".to_string(), Observation::Slow),
            ("d".to_string(), Observation::Neutral),
        ];
        let w = writes(&obs, &BTreeMap::new(), &mut BTreeMap::new(), &s, 1_000);
        assert_eq!(
            w,
            vec![
                (
                    "b".to_string(),
                    BreakerWrite::Gone {
                        reason: "410 Gone".into(),
                        probe_at_ms: 61_000
                    }
                ),
                ("c".to_string(), BreakerWrite::Slow { until_ms: 601_000 }),
            ]
        );
    }
}
