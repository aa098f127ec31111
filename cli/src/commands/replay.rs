//! `replay event|session|range`: send archived events again, to one destination or to every
//! destination the destinations document routes them to.
//!
//! **Never twice.** A replay has an id (derived from the normalised command, or `--replay-id`); each
//! (event, destination) of it has its own delivery item, keyed by the id. For each one the tool:
//! 1. writes the replay's PENDING marker with a fresh token (`DeliveryStore::mark_replay`), which
//!    fails when the item already records an attempt: that pair was sent by an earlier run and is
//!    skipped;
//! 2. queues a `DeliveryJob` carrying `ReplayInfo {id, token}` and the record's expiry on the retry
//!    lane.
//!
//! The dispatcher sends a replay job only while the marker still carries the job's token: a re-run
//! writes a new token, so a copy queued by an interrupted earlier run is dropped as superseded, and
//! once an attempt is recorded every later copy is a duplicate. So a replay can be stopped at any
//! point (Ctrl-C, `--limit`) and run again with the same id; what was sent is not sent again.
//! (As for every delivery, a crash of the dispatcher between its POST and its record can repeat a
//! POST, with the same `webhook-id`.)
//!
//! Replays go on the retry lane: a bulk replay never delays first attempts of live traffic on the
//! fast lane.

use super::{Objects, event::locate};
use crate::args::{ReplayCommand, ReplayOpts};
use crate::ctx::Ctx;
use crate::error::{CliError, Result};
use crate::target::QueueRole;
use crate::ui::{Rate, Table, is_relative_time, parse_time, time};
use kyc_relay::archive::{ArchiveStore, hour_prefix};
use kyc_relay::aws::sqs::SqsDeliveryQueue;
use kyc_relay::delivery::{
    DeliveryJob, DeliveryQueue, JOB_VERSION, Lane, ReplayInfo, Scheduled, delivery_id,
    replay_delivery_id,
};
use kyc_relay::destination::Destinations;
use kyc_relay::envelope::Envelope;
use kyc_relay::provider::{Provider, sha256_hex};
use kyc_relay::records::{
    DeliveryStore, EventKey, EventRecord, RecordReader, ReplayMarker, session_pk,
};
use serde::Serialize;
use serde_json::json;
use std::collections::HashSet;

/// Default lifetime of a replay's items when the event's own record has expired (the template's
/// default `RecordTtlSeconds`).
const DEFAULT_TTL_SECS: u64 = 30 * 86_400;
const HOUR_MS: u64 = 3_600_000;

/// What was selected, before filters.
enum Selection {
    Event {
        provider: Provider,
        event_id: String,
        session: Option<String>,
    },
    Session {
        provider: Provider,
        session_id: String,
    },
    Range {
        since: u64,
        until: u64,
        provider: Option<Provider>,
        relative: bool,
    },
}

/// One (event, destination) of the replay (JSON shape in docs/operations.md).
#[derive(Debug, Serialize)]
struct Job {
    provider: Provider,
    event_id: String,
    session_id: Option<String>,
    event_type: String,
    received_at_ms: u64,
    destination: String,
    webhook_id: String,
    /// `queued`, `already_sent` (an earlier run's attempt is recorded), `would_queue` (dry run),
    /// `not_reached` (after `--limit`) or `failed`.
    action: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// A valid replay id: it is part of the delivery items' sort keys (`...#r#{id}#{dest}`).
fn check_replay_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(CliError::usage(format!(
            "--replay-id {id:?}: 1-64 characters of [A-Za-z0-9_-]"
        )))
    }
}

/// The id of a replay: the same command (selection, filters, target, `--new-id`) gives the same id,
/// so running it again continues it. `--limit`, `--rate` and `--dry-run` are not part of it.
fn derived_id(sel: &Selection, o: &ReplayOpts) -> String {
    let mut types = o.types.clone();
    types.sort();
    types.dedup();
    let selection = match sel {
        Selection::Event {
            provider,
            event_id,
            session,
        } => json!({"event": [provider, event_id, session]}),
        Selection::Session {
            provider,
            session_id,
        } => json!({"session": [provider, session_id]}),
        Selection::Range {
            since,
            until,
            provider,
            ..
        } => json!({"range": [since, until, provider]}),
    };
    let normalised = json!({
        "selection": selection, "types": types, "destination": o.destination, "new_id": o.new_id,
    });
    format!(
        "rp-{}",
        &sha256_hex(&[normalised.to_string().as_bytes()])[..20]
    )
}

/// Which destinations receive the event: the named one if it routes the event (or, without a
/// document, as named), else every destination that routes it.
fn routes(doc: Option<&Destinations>, env: &Envelope, only: Option<&str>) -> Vec<String> {
    match (doc, only) {
        (Some(doc), Some(id)) => doc
            .get(id)
            .filter(|d| d.wants(env))
            .map(|d| vec![d.id.clone()])
            .unwrap_or_default(),
        (Some(doc), None) => doc.matching(env).map(|d| d.id.clone()).collect(),
        (None, Some(id)) => vec![id.to_string()],
        (None, None) => Vec::new(),
    }
}

pub async fn run(ctx: &Ctx, cmd: &ReplayCommand) -> Result<()> {
    let now = ctx.now_ms();
    let (sel, o) = match cmd {
        ReplayCommand::Event {
            provider,
            event_id,
            session,
            opts,
        } => (
            Selection::Event {
                provider: *provider,
                event_id: event_id.clone(),
                session: session.clone(),
            },
            opts,
        ),
        ReplayCommand::Session {
            provider,
            session_id,
            opts,
        } => (
            Selection::Session {
                provider: *provider,
                session_id: session_id.clone(),
            },
            opts,
        ),
        ReplayCommand::Range {
            since,
            until,
            provider,
            opts,
        } => {
            let (s, u) = (
                parse_time("--since", since, now)?,
                parse_time("--until", until, now)?,
            );
            if u <= s {
                return Err(CliError::usage("--until must be later than --since"));
            }
            (
                Selection::Range {
                    since: s,
                    until: u,
                    provider: *provider,
                    relative: is_relative_time(since) || is_relative_time(until),
                },
                opts,
            )
        }
    };
    let rate = Rate::parse("--rate", &o.rate)?;
    if let Some(id) = &o.replay_id {
        check_replay_id(id)?;
    }
    if o.limit == Some(0) {
        return Err(CliError::usage("--limit must be at least 1"));
    }
    let doc = ctx.destinations().await?;
    match (&doc, &o.destination) {
        (None, None) => {
            return Err(CliError::usage(
                "no destinations document (the stack's DestinationsConfigParameter, --destinations-file): name the target with --destination",
            ));
        }
        (Some((d, from)), Some(id)) if d.get(id).is_none() => {
            return Err(CliError::not_found(format!(
                "destination {id:?} is not in the destinations document ({from})"
            )));
        }
        _ => {}
    }
    let doc = doc.map(|(d, _)| d);
    let replay_id = o.replay_id.clone().unwrap_or_else(|| derived_id(&sel, o));
    let records = ctx.records()?;
    let archive = ctx.archive()?;
    let mut objects = Objects::new(&archive);

    // 1. The events, with their records (for the expiry) where they still live.
    let mut events: Vec<(Envelope, Option<EventRecord>)> = Vec::new();
    let mut not_archived: Vec<String> = Vec::new();
    match &sel {
        Selection::Event {
            provider,
            event_id,
            session,
        } => {
            let (e, _) = locate(ctx, *provider, event_id, session.as_deref()).await?;
            match objects.find(&e.event.key, &e.event.archive).await? {
                Some(env) => events.push((env, Some(e.event))),
                None => {
                    return Err(CliError::not_found(format!(
                        "event {event_id:?} has no archived copy (archive off when it arrived, expired by ArchiveRetentionDays, or erased)"
                    )));
                }
            }
        }
        Selection::Session {
            provider,
            session_id,
        } => {
            let all = records
                .partition(&session_pk(*provider, session_id))
                .await?;
            if all.is_empty() {
                return Err(CliError::not_found(format!(
                    "no records of {provider} session {session_id:?}"
                )));
            }
            for e in all {
                match objects.find(&e.event.key, &e.event.archive).await? {
                    Some(env) => events.push((env, Some(e.event))),
                    None => not_archived.push(e.event.event_id.clone()),
                }
            }
        }
        Selection::Range {
            since,
            until,
            provider,
            ..
        } => {
            // Objects are named by the hour the consumer archived them: list up to an hour past
            // `until`, for events archived shortly after they were received.
            let mut hours = Vec::new();
            let mut h = since - since % HOUR_MS;
            while h < until + HOUR_MS {
                hours.push(h);
                h += HOUR_MS;
            }
            let bar = ctx
                .ui
                .bar(Some(hours.len() as u64), "listing archive hours");
            let mut keys = Vec::new();
            for h in hours {
                keys.extend(archive.list(&hour_prefix(h), None).await?);
                bar.inc(1);
            }
            bar.finish_and_clear();
            let bar = ctx
                .ui
                .bar(Some(keys.len() as u64), "reading archive objects");
            let mut seen = HashSet::new();
            for k in &keys {
                bar.inc(1);
                let Some(envs) = objects.get(k).await? else {
                    continue;
                };
                for env in envs {
                    if env.received_at_ms < *since
                        || env.received_at_ms >= *until
                        || provider.is_some_and(|p| p != env.provider)
                        || !(o.types.is_empty() || o.types.contains(&env.event_type))
                    {
                        continue;
                    }
                    // A repaired event is archived in more than one object: once is enough.
                    if seen.insert(EventKey::of(env)) {
                        events.push((env.clone(), None));
                    }
                }
            }
            bar.finish_and_clear();
            events.sort_by_key(|(e, _)| e.received_at_ms);
            let bar = ctx
                .ui
                .bar(Some(events.len() as u64), "reading the events' records");
            for (env, record) in &mut events {
                *record = records.event(&EventKey::of(env)).await?.map(|e| e.event);
                bar.inc(1);
            }
            bar.finish_and_clear();
        }
    }
    events.retain(|(e, _)| o.types.is_empty() || o.types.contains(&e.event_type));

    // 2. The jobs.
    let mut jobs: Vec<(usize, Job)> = Vec::new();
    let mut not_routed = 0;
    for (i, (env, _)) in events.iter().enumerate() {
        let to = routes(doc.as_ref(), env, o.destination.as_deref());
        if to.is_empty() {
            not_routed += 1;
        }
        let key = EventKey::of(env);
        for dest in to {
            let webhook_id = if o.new_id {
                replay_delivery_id(&key, &dest, &replay_id)
            } else {
                delivery_id(&key, &dest)
            };
            jobs.push((
                i,
                Job {
                    provider: env.provider,
                    event_id: env.event_id.clone(),
                    session_id: env.session_id.clone(),
                    event_type: env.event_type.clone(),
                    received_at_ms: env.received_at_ms,
                    destination: dest,
                    webhook_id,
                    action: "would_queue",
                    error: None,
                },
            ));
        }
    }
    let destinations: Vec<String> = {
        let mut d: Vec<String> = jobs.iter().map(|(_, j)| j.destination.clone()).collect();
        d.sort();
        d.dedup();
        d
    };

    if o.dry_run {
        // What an earlier run of this replay already sent.
        for (i, job) in &mut jobs {
            let key = EventKey::of(&events[*i].0);
            if let Some(e) = records.event(&key).await?
                && e.deliveries.iter().any(|d| {
                    d.replay.as_deref() == Some(replay_id.as_str())
                        && d.destination == job.destination
                        && d.attempts > 0
                })
            {
                job.action = "already_sent";
            }
        }
    } else if !jobs.is_empty() {
        ctx.ui.confirm(&format!(
            "Replay {} event(s) as {} job(s) to {} (replay id {replay_id}, {})?",
            events.len(),
            jobs.len(),
            destinations.join(", "),
            if o.new_id {
                "new webhook-ids"
            } else {
                "original webhook-ids"
            }
        ))?;
        if matches!(sel, Selection::Range { relative: true, .. })
            && o.replay_id.is_none()
            && !ctx.ui.json
        {
            eprintln!(
                "kyc-relay: --since/--until are relative to now: to re-run this replay, pass --replay-id {replay_id}"
            );
        }
        send(ctx, &events, &mut jobs, &replay_id, o, rate).await?;
    }

    let count = |a: &str| jobs.iter().filter(|(_, j)| j.action == a).count();
    let failed = count("failed");
    if ctx.ui.json {
        ctx.json(json!({
            "replay_id": replay_id,
            "dry_run": o.dry_run,
            "new_id": o.new_id,
            "events": events.len(),
            "not_archived": not_archived,
            "not_routed": not_routed,
            "queued": count("queued"),
            "would_queue": count("would_queue"),
            "already_sent": count("already_sent"),
            "not_reached": count("not_reached"),
            "failed": failed,
            "jobs": jobs.iter().map(|(_, j)| j).collect::<Vec<_>>(),
        }));
    } else {
        let mut t = Table::new(&[
            "RECEIVED",
            "PROVIDER",
            "EVENT",
            "TYPE",
            "DESTINATION",
            "WEBHOOK-ID",
            "ACTION",
        ]);
        for (_, j) in &jobs {
            t.row(vec![
                time(j.received_at_ms),
                j.provider.to_string(),
                j.event_id.clone(),
                j.event_type.clone(),
                j.destination.clone(),
                j.webhook_id.clone(),
                match &j.error {
                    Some(e) => format!("failed: {e}"),
                    None => j.action.replace('_', " "),
                },
            ]);
        }
        if !t.is_empty() {
            t.print();
            println!();
        }
        println!(
            "replay {replay_id}: {} event(s); {} queued, {} already sent{}{}{}{}",
            events.len(),
            count("queued"),
            count("already_sent"),
            if o.dry_run {
                format!(", {} would be queued (dry run)", count("would_queue"))
            } else {
                String::new()
            },
            if count("not_reached") > 0 {
                format!(
                    ", {} not reached (--limit): run the same command again to continue",
                    count("not_reached")
                )
            } else {
                String::new()
            },
            if not_routed > 0 {
                format!(", {not_routed} event(s) routed to no selected destination")
            } else {
                String::new()
            },
            if not_archived.is_empty() {
                String::new()
            } else {
                format!(", {} without an archived copy", not_archived.len())
            },
        );
    }
    if failed > 0 {
        return Err(CliError::failed(format!(
            "{failed} job(s) could not be queued; run the same command again to retry them"
        )));
    }
    if events.is_empty() {
        return Err(CliError::not_found("no archived event matches".to_string()));
    }
    Ok(())
}

/// Marks and queues the jobs, at the rate, up to the limit.
async fn send(
    ctx: &Ctx,
    events: &[(Envelope, Option<EventRecord>)],
    jobs: &mut [(usize, Job)],
    replay_id: &str,
    o: &ReplayOpts,
    rate: Rate,
) -> Result<()> {
    let records = ctx.records()?;
    let retry = ctx.res.queue(QueueRole::Retry)?.to_string();
    // Only the retry lane is used; the adapter's fast lane URL is never sent to.
    let queue = SqsDeliveryQueue::new(&ctx.sdk, retry.clone(), Some(retry), None);
    let now_secs = ctx.now_ms() / 1000;
    let fallback_ttl = ctx.res.record_ttl_secs.unwrap_or(DEFAULT_TTL_SECS);
    let mut limiter = rate.limiter();
    let mut queued = 0;
    let bar = ctx.ui.bar(Some(jobs.len() as u64), "replaying");
    for (i, job) in jobs.iter_mut() {
        bar.inc(1);
        if o.limit.is_some_and(|l| queued >= l) {
            job.action = "not_reached";
            continue;
        }
        let (env, record) = &events[*i];
        let key = EventKey::of(env);
        // The record's expiry while it lives (the replay's items go with the event's); else a
        // fresh record lifetime, so the dispatcher does not refuse the job as a late arrival.
        let expires_at_secs = record
            .as_ref()
            .map(|r| r.expires_at_secs)
            .filter(|e| *e > now_secs + 3600)
            .unwrap_or(now_secs + fallback_ttl);
        let token = format!("{:016x}", fastrand::u64(..));
        let marker = ReplayMarker {
            event_id: &env.event_id,
            destination: &job.destination,
            replay_id,
            token: &token,
            at_ms: ctx.now_ms(),
            expires_at_secs,
        };
        let dkey = key.delivery(&job.destination, Some(replay_id));
        // The pace applies to marker and job together, so a marker waits for its job no longer
        // than one call.
        limiter.wait().await;
        match records.mark_replay(&dkey, &marker).await {
            Ok(false) => {
                job.action = "already_sent";
                continue;
            }
            Ok(true) => {}
            Err(e) => {
                job.action = "failed";
                job.error = Some(e.0);
                continue;
            }
        }
        let delivery_job = DeliveryJob {
            v: JOB_VERSION,
            delivery_id: job.webhook_id.clone(),
            destination_id: job.destination.clone(),
            attempt: 1,
            cycle_start: 1,
            uncharged: 0,
            due_at_ms: ctx.now_ms(),
            generation: record.as_ref().map_or(0, |r| r.generation),
            expires_at_secs,
            replay: Some(ReplayInfo {
                id: replay_id.to_string(),
                token,
            }),
            held_since_ms: None,
            rate_slot_us: None,
            history: Vec::new(),
            history_dropped: 0,
            dead_letter: None,
            envelope: env.clone(),
        };
        let sent = queue
            .schedule(vec![Scheduled {
                job: delivery_job,
                delay_secs: 0,
                lane: Lane::Retry,
            }])
            .await
            .pop()
            .unwrap_or_else(|| Err(kyc_relay::queue::QueueError("not sent".into())));
        match sent {
            Ok(()) => {
                job.action = "queued";
                queued += 1;
            }
            // The marker stays PENDING without a job: a re-run writes a new token and queues it.
            Err(e) => {
                job.action = "failed";
                job.error = Some(e.0);
            }
        }
    }
    bar.finish_and_clear();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> ReplayOpts {
        ReplayOpts {
            types: vec!["b".into(), "a".into()],
            destination: Some("crm".into()),
            new_id: false,
            replay_id: None,
            dry_run: false,
            rate: "10/s".into(),
            limit: None,
        }
    }

    #[test]
    fn the_replay_id_depends_on_what_is_sent_not_how_fast() {
        let sel = Selection::Range {
            since: 1,
            until: 2,
            provider: None,
            relative: false,
        };
        let a = derived_id(&sel, &opts());
        let mut o = opts();
        o.types.reverse();
        o.limit = Some(3);
        o.rate = "1/s".into();
        o.dry_run = true;
        assert_eq!(
            a,
            derived_id(&sel, &o),
            "order of --type, limit, rate, dry run"
        );
        o.new_id = true;
        assert_ne!(a, derived_id(&sel, &o));
        assert!(a.starts_with("rp-") && check_replay_id(&a).is_ok());
        assert!(check_replay_id("a#b").is_err() && check_replay_id("").is_err());
    }
}
