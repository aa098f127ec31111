//! `event`: one event's record, its deliveries with their attempts, and whether it is archived.
//!
//! Records are partitioned by session. With `--session` (or a body, which names it) the event is one
//! query; without, the lone-event partition (events without a session) is tried, then a Scan of the
//! table filtered on the event's sort key (see `aws::table::find_event_partitions` for its cost).

use super::{DeliveryView, Objects, deliveries, partition_parts};
use crate::args::EventArgs;
use crate::aws::table::find_event_partitions;
use crate::ctx::Ctx;
use crate::error::{CliError, Result};
use crate::ui::{Table, time};
use kyc_relay::provider::{Provider, idnow, incode, parse_json};
use kyc_relay::records::{EventKey, EventWithDeliveries, RecordReader};
use serde::Serialize;
use serde_json::json;
use std::io::Read;

/// The id (and session) of the event a webhook body is, computed as the receiver computes it.
pub fn id_from_body(
    provider: Provider,
    path: &std::path::Path,
    slug: Option<&str>,
) -> Result<(String, Option<String>)> {
    let mut bytes = Vec::new();
    let read = if path.as_os_str() == "-" {
        std::io::stdin().read_to_end(&mut bytes).map(|_| ())
    } else {
        std::fs::File::open(path).and_then(|mut f| f.read_to_end(&mut bytes).map(|_| ()))
    };
    read.map_err(|e| CliError::usage(format!("cannot read {}: {e}", path.display())))?;
    id_of_body(provider, &bytes, slug)
}

/// [`id_from_body`] on the bytes: every body the receiver accepts, IDnow's `application/jwt` (a
/// compact JWT whose `data` claim is the event; its signature is not checked here) included.
pub fn id_of_body(
    provider: Provider,
    bytes: &[u8],
    slug: Option<&str>,
) -> Result<(String, Option<String>)> {
    let value = match (parse_json(bytes), provider) {
        (Ok(v), _) => v,
        (Err(e), Provider::Idnow) if !bytes.trim_ascii_start().starts_with(b"{") => {
            let token = std::str::from_utf8(bytes)
                .map_err(|_| CliError::usage(format!("body: {}", e.0)))?;
            kyc_relay::verification::jwt::unverified_event(token)
                .map_err(|e| CliError::usage(format!("body: {}", e.0)))?
        }
        (Err(e), _) => return Err(CliError::usage(format!("body: {}", e.0))),
    };
    let parsed = match provider {
        Provider::Incode => {
            let hint = match slug {
                Some(s) if incode::is_valid_slug(s) => incode::TypeHint::Path(s),
                Some(s) => {
                    return Err(CliError::usage(format!(
                        "--type {s:?}: not a webhook type path segment (e.g. onboarding-status)"
                    )));
                }
                None => incode::TypeHint::None,
            };
            incode::parse(&value, hint)
        }
        Provider::Idnow => {
            if slug.is_some() {
                return Err(CliError::usage("--type applies to Incode bodies only"));
            }
            idnow::parse(&value)
        }
    }
    .map_err(|e| CliError::usage(format!("body: {}", e.0)))?;
    Ok((parsed.event_id, parsed.session_id))
}

/// Finds an event: in its session, else as a lone event, else by scanning. `found_by` says which.
pub async fn locate(
    ctx: &Ctx,
    provider: Provider,
    event_id: &str,
    session: Option<&str>,
) -> Result<(EventWithDeliveries, &'static str)> {
    let records = ctx.records()?;
    if let Some(s) = session {
        let key = EventKey::new(provider, Some(s), event_id);
        return match records.event(&key).await? {
            Some(e) => Ok((e, "session")),
            None => Err(CliError::not_found(format!(
                "no record of {provider} event {event_id:?} in session {s:?} (never received, expired after RecordTtlSeconds, or erased)"
            ))),
        };
    }
    if let Some(e) = records
        .event(&EventKey::new(provider, None, event_id))
        .await?
    {
        return Ok((e, "lone"));
    }
    let bar = ctx.ui.bar(
        None,
        "searching the records table (no --session given): items read",
    );
    let pks = find_event_partitions(&ctx.ddb(), ctx.res.table()?, provider, event_id, &bar).await;
    bar.finish_and_clear();
    let pks = pks?;
    match pks.as_slice() {
        [] => Err(CliError::not_found(format!(
            "no record of {provider} event {event_id:?} (never received, expired after RecordTtlSeconds, or erased)"
        ))),
        [pk] => {
            let key = EventKey {
                pk: pk.clone(),
                sk: kyc_relay::records::event_sk(event_id),
            };
            records
                .event(&key)
                .await?
                .map(|e| (e, "scan"))
                .ok_or_else(|| {
                    CliError::not_found(format!("event {event_id:?} vanished while read"))
                })
        }
        many => Err(CliError::usage(format!(
            "{provider} event {event_id:?} is recorded in {} sessions; pass --session with one of: {}",
            many.len(),
            many.iter()
                .filter_map(|pk| partition_parts(pk).and_then(|(_, s)| s))
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

#[derive(Serialize)]
struct ArchiveCheck {
    object: String,
    /// `present` (the object holds the event), `line_missing` (the object exists without it: erased),
    /// `object_missing` (expired by the lifecycle rule, erased, or never written).
    state: &'static str,
}

pub async fn run(ctx: &Ctx, a: &EventArgs) -> Result<()> {
    let (event_id, session) = match (&a.event_id, &a.body) {
        (Some(id), None) => (id.clone(), a.session.clone()),
        (None, Some(path)) => {
            let (id, s) = id_from_body(a.provider, path, a.type_slug.as_deref())?;
            (id, a.session.clone().or(s))
        }
        _ => {
            return Err(CliError::usage(
                "give the event id, or the webhook body with --body FILE (\"-\" for stdin)",
            ));
        }
    };
    let (e, found_by) = locate(ctx, a.provider, &event_id, session.as_deref()).await?;
    let session = partition_parts(&e.event.key.pk).and_then(|(_, s)| s.map(str::to_string));
    let mut views = deliveries(&e);
    super::mark_held(&mut views, &super::paused_destinations(ctx).await?);

    let archive = match ctx.res.archive_bucket {
        Some(_) => {
            let store = ctx.archive()?;
            let mut objects = Objects::new(&store);
            let mut checks = Vec::new();
            for object in &e.event.archive {
                let state = match objects.get(object).await? {
                    None => "object_missing",
                    Some(envs) if envs.iter().any(|x| EventKey::of(x) == e.event.key) => "present",
                    Some(_) => "line_missing",
                };
                checks.push(ArchiveCheck {
                    object: object.clone(),
                    state,
                });
            }
            Some(checks)
        }
        None => None,
    };
    let archived = archive
        .as_ref()
        .map(|c| c.iter().any(|x| x.state == "present"));

    if ctx.ui.json {
        ctx.json(json!({
            "provider": a.provider,
            "event_id": e.event.event_id,
            "session_id": session,
            "found_by": found_by,
            "record": e.event,
            "deliveries": views,
            "archived": archived,
            "archive": archive,
        }));
        return Ok(());
    }
    let r = &e.event;
    println!(
        "event      {} {}{}",
        a.provider,
        r.event_id,
        session
            .as_deref()
            .map(|s| format!(" (session {s})"))
            .unwrap_or_else(|| " (no session)".into())
    );
    println!("type       {}", r.event_type);
    match (&r.status, r.rank) {
        (Some(s), Some(rank)) => println!("status     {s} (rank {rank})"),
        (Some(s), None) => println!("status     {s}"),
        _ => println!("status     -"),
    }
    println!("received   {}", time(r.received_at_ms));
    println!(
        "claimed    {} (generation {})",
        time(r.claimed_at_ms),
        r.generation
    );
    println!("expires    {}", time(r.expires_at_secs * 1000));
    println!("hash       {}", r.payload_hash);
    match &archive {
        None => println!("archived   unknown (no archive bucket)"),
        Some(checks) if checks.is_empty() => println!("archived   no (no archive object recorded)"),
        Some(checks) => {
            let yes = checks.iter().any(|c| c.state == "present");
            println!("archived   {}", if yes { "yes" } else { "NO" });
            for c in checks {
                println!("           {} ({})", c.object, c.state.replace('_', " "));
            }
        }
    }
    println!();
    if views.is_empty() {
        println!("no destination was routed this event");
        return Ok(());
    }
    let mut t = Table::new(&["DESTINATION", "DELIVERY", "ATTEMPTS", "LAST", "CODE", "LAG"]);
    for d in &views {
        t.row(delivery_row(d));
    }
    t.print();
    for d in views.iter().filter(|d| !d.history.is_empty()) {
        println!();
        println!(
            "attempts of {}{}:",
            d.destination,
            d.replay
                .as_deref()
                .map(|r| format!(" (replay {r})"))
                .unwrap_or_default()
        );
        let mut t = Table::new(&["#", "AT", "OUTCOME", "CODE", "LATENCY", "CYCLE"]);
        for h in &d.history {
            t.row(vec![
                format!("{}{}", h.attempt, if h.probe { " (probe)" } else { "" }),
                time(h.at_ms),
                h.outcome.clone(),
                h.status_code
                    .map(|c| c.to_string())
                    .unwrap_or_else(|| "-".into()),
                format!("{} ms", h.latency_ms),
                h.cycle.to_string(),
            ]);
        }
        t.print();
        if d.attempts as usize > d.history.len() {
            println!(
                "  ({} earlier attempts not kept on the item; the dispatcher logs each `delivery attempt`)",
                d.attempts as usize - d.history.len()
            );
        }
    }
    Ok(())
}

pub fn delivery_row(d: &DeliveryView) -> Vec<String> {
    vec![
        match &d.replay {
            Some(r) => format!("{} (replay {r})", d.destination),
            None => d.destination.clone(),
        },
        d.state_text(),
        d.attempts.to_string(),
        d.last_text(),
        d.last_status_code
            .map(|c| c.to_string())
            .unwrap_or_else(|| "-".into()),
        d.lag_ms
            .map(|l| format!("{:.1} s", l as f64 / 1000.0))
            .unwrap_or_else(|| "-".into()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    fn jwt(claims: &serde_json::Value) -> String {
        let b64 = |v: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
        format!(
            "{}.{}.{}",
            b64(br#"{"alg":"RS256","typ":"JWT"}"#),
            b64(claims.to_string().as_bytes()),
            b64(b"not-checked")
        )
    }

    #[test]
    fn an_idnow_jwt_body_names_its_event_like_a_json_one() {
        let event = json!({
            "eventId": "evt-jwt", "eventDeliverId": "d-1", "eventVersion": "1.0",
            "eventName": "session.completed", "eventSequence": 3,
            "createdAt": "2026-11-18T08:53:20Z", "environment": "test",
            "payload": {"flowId": "f", "sessionId": "sess-jwt", "sessionStatus": "COMPLETED"}
        });
        let from_json = id_of_body(Provider::Idnow, event.to_string().as_bytes(), None).unwrap();
        let token = jwt(&json!({"iss": "idnow", "sub": "evt-jwt", "data": event}));
        let from_jwt = id_of_body(Provider::Idnow, format!("{token}\n").as_bytes(), None).unwrap();
        assert_eq!(from_jwt, from_json);
        assert_eq!(from_jwt, ("evt-jwt".into(), Some("sess-jwt".into())));
        // Precise errors for what is neither.
        let no_data = jwt(&json!({"iss": "idnow"}));
        let e = id_of_body(Provider::Idnow, no_data.as_bytes(), None).unwrap_err();
        assert!(e.to_string().contains("no `data` object claim"), "{e}");
        let e = id_of_body(Provider::Idnow, b"not a body", None).unwrap_err();
        assert!(
            e.to_string().contains("neither JSON nor a compact JWT"),
            "{e}"
        );
        // Broken JSON keeps its JSON error; Incode bodies are JSON only.
        let e = id_of_body(Provider::Idnow, b"{\"eventId\":", None).unwrap_err();
        assert!(!e.to_string().contains("JWT"), "{e}");
        assert!(id_of_body(Provider::Incode, token.as_bytes(), None).is_err());
    }
}
