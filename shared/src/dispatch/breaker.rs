//! The circuit breaker and the slow lane: the rules, as pure functions over what a batch observed.
//!
//! **Rule.** A destination is paused after `failure_threshold` (default 10) consecutive counted
//! failures across all dispatchers: timeouts, connection errors, token-endpoint failures, `5xx`,
//! `408` and `429`. Other `4xx` and refused addresses say something about one event, not about the
//! destination, and do not count. A success ends the streak. `410 Gone` pauses at once.
//!
//! **While paused** its jobs are held on the retry lane (re-enqueued every `hold`, default 300 s)
//! without an attempt, so no retry is spent and nothing reaches the DLQ because the destination was
//! down. Once per `probe_interval` (default 60 s) one held job is sent as a probe (one dispatcher
//! wins a conditional write): a success resumes the destination (its held jobs follow within one
//! `hold`); a failure keeps it paused and is not counted against that job's retries. A pause that
//! lasts longer than `max_hold` (default 7 days, bounded by the records' lifetime) dead-letters the
//! jobs that arrive after it, with that reason. Every transition is logged (`destination paused` /
//! `destination resumed`) and counted (EMF `DestinationPaused` / `DestinationResumed` with the
//! `Destination` dimension).
//!
//! **Slow lane.** On the fast lane an attempt may take at most `fast_lane_timeout` (default 2 s). One
//! that takes longer is abandoned, the job moves to the retry lane with the same attempt number
//! (the destination may have received it: the next POST carries the same `webhook-id`), and the
//! destination's first attempts skip the fast lane for `slow_hold` (default 10 min). So a slow
//! destination delays the others' deliveries by at most `fast_lane_timeout`, once per dispatcher
//! state refresh, and not at all once it is marked.

use crate::records::{BreakerWrite, DestinationState, PausedBy};
use crate::retry::AttemptOutcome;
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
        AttemptOutcome::Timeout | AttemptOutcome::ConnectError | AttemptOutcome::TokenError(_) => {
            true
        }
        AttemptOutcome::Refused(_) => false,
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

/// The writes a batch's observations call for, per destination, given the state the dispatcher
/// read. Nothing is written for a healthy destination whose attempts all succeeded: the happy path
/// costs no breaker write.
pub fn writes(
    observations: &[(String, Observation)],
    states: &BTreeMap<String, DestinationState>,
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
        if obs.iter().any(|o| matches!(o, Observation::Gone)) {
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
        // Attempts of one batch ran concurrently; a success among them ends the streak only if it
        // is the last word. Order within the batch is unknown, so failures win when both occur: a
        // destination that fails half the time keeps a streak short anyway (every success after
        // this batch resets it).
        let failures: Vec<&str> = obs
            .iter()
            .filter_map(|o| match o {
                Observation::Failure(why) => Some(why.as_str()),
                _ => None,
            })
            .collect();
        if let Some(last) = failures.last() {
            out.push((
                destination.to_string(),
                BreakerWrite::Failures {
                    n: failures.len() as u32,
                    last: last.to_string(),
                    threshold: settings.failure_threshold,
                    probe_at_ms,
                },
            ));
        } else if obs.iter().any(|o| matches!(o, Observation::Success))
            && state.is_some_and(|s| {
                s.failures > 0 || s.paused.as_ref().is_some_and(|p| p.by == PausedBy::Breaker)
            })
        {
            out.push((destination.to_string(), BreakerWrite::Recovered));
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
        ] {
            assert!(counts_as_failure(&o), "{o:?}");
        }
        for o in [
            response(400),
            response(404),
            response(410),
            AttemptOutcome::Refused("x".into()),
        ] {
            assert!(!counts_as_failure(&o), "{o:?}");
        }
        assert_eq!(Observation::of(&response(410), false), Observation::Gone);
        assert_eq!(Observation::of(&response(400), false), Observation::Neutral);
    }

    #[test]
    fn a_healthy_destination_costs_no_write() {
        let s = BreakerSettings::default();
        let obs = vec![("crm".to_string(), Observation::Success); 10];
        assert!(writes(&obs, &BTreeMap::new(), &s, 0).is_empty());
        // ...but a success after failures ends the streak, and ends a breaker pause.
        let mut states = BTreeMap::new();
        states.insert(
            "crm".to_string(),
            DestinationState {
                failures: 3,
                ..Default::default()
            },
        );
        assert_eq!(
            writes(&obs, &states, &s, 0),
            vec![("crm".to_string(), BreakerWrite::Recovered)]
        );
        states.insert(
            "crm".to_string(),
            DestinationState {
                paused: Some(Pause {
                    by: PausedBy::Operator,
                    reason: "x".into(),
                    since_ms: 0,
                }),
                ..Default::default()
            },
        );
        assert!(writes(&obs, &states, &s, 0).is_empty());
    }

    #[test]
    fn failures_gone_and_slow_are_written_once_per_destination() {
        let s = BreakerSettings::default();
        let obs = vec![
            ("a".to_string(), Observation::Failure("http_503".into())),
            ("a".to_string(), Observation::Success),
            ("a".to_string(), Observation::Failure("timeout".into())),
            ("b".to_string(), Observation::Gone),
            ("c".to_string(), Observation::Slow),
            ("d".to_string(), Observation::Neutral),
        ];
        let w = writes(&obs, &BTreeMap::new(), &s, 1_000);
        assert_eq!(
            w,
            vec![
                (
                    "a".to_string(),
                    BreakerWrite::Failures {
                        n: 2,
                        last: "timeout".into(),
                        threshold: 10,
                        probe_at_ms: 61_000
                    }
                ),
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
