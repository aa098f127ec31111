//! `destinations list|pause|resume`: the destinations' shared state, the same items the dispatcher's
//! circuit breaker reads and writes (`records::DestinationStates`). An operator pause holds the
//! destination's jobs until `resume` and is never probed; `resume` also ends a breaker pause.

use crate::args::DestinationsCommand;
use crate::ctx::Ctx;
use crate::error::{CliError, Result};
use crate::ui::{Table, age, time};
use kyc_relay::records::{DestinationState, DestinationStates, PausedBy};
use serde_json::json;

pub async fn run(ctx: &Ctx, cmd: &DestinationsCommand) -> Result<()> {
    match cmd {
        DestinationsCommand::List => list(ctx).await,
        DestinationsCommand::Pause { id, reason } => pause(ctx, id, reason).await,
        DestinationsCommand::Resume { id } => resume(ctx, id).await,
    }
}

/// The document, or a note why there is none (listing still shows the state items).
async fn document(ctx: &Ctx) -> (Option<kyc_relay::destination::Destinations>, Option<String>) {
    match ctx.destinations().await {
        Ok(Some((d, from))) => (Some(d), Some(from)),
        Ok(None) => (None, None),
        Err(e) => {
            if !ctx.ui.json {
                eprintln!("kyc-relay: warning: {e}");
            }
            (None, None)
        }
    }
}

fn state_text(s: Option<&DestinationState>, now: u64) -> String {
    let Some(s) = s else {
        return "active".into();
    };
    match &s.paused {
        Some(p) => format!(
            "paused by {} for {} ({}){}",
            p.by.as_str(),
            age(now.saturating_sub(p.since_ms) / 1000),
            p.reason,
            match p.by {
                PausedBy::Breaker => format!(", next probe {}", time(s.probe_at_ms)),
                PausedBy::Operator => String::new(),
            }
        ),
        None if s.slow_until_ms > now => format!("active, slow until {}", time(s.slow_until_ms)),
        None => "active".into(),
    }
}

async fn list(ctx: &Ctx) -> Result<()> {
    let (doc, from) = document(ctx).await;
    let states = ctx.records()?.load().await?;
    let now = ctx.now_ms();
    let mut ids: Vec<String> = doc
        .as_ref()
        .map(|d| d.iter().map(|x| x.id.clone()).collect())
        .unwrap_or_default();
    for id in states.keys() {
        if !ids.contains(id) {
            ids.push(id.clone());
        }
    }
    if ctx.ui.json {
        ctx.json(json!({
            "document": from,
            "destinations": ids.iter().map(|id| {
                let d = doc.as_ref().and_then(|d| d.get(id));
                json!({
                    "id": id,
                    "configured": doc.as_ref().map(|_| d.is_some()),
                    // `url` for HTTPS destinations; `target` for every kind (`sqs:<queue url>`, ...).
                    "url": d.and_then(|d| match &d.target {
                        kyc_relay::destination::Target::Https(url) => Some(url.to_string()),
                        kyc_relay::destination::Target::Aws(_) => None,
                    }),
                    "target": d.map(|d| d.target.to_string()),
                    "providers": d.and_then(|d| d.providers.clone()),
                    "event_types": d.and_then(|d| d.event_types.as_ref().map(|t| {
                        let mut t: Vec<_> = t.iter().cloned().collect();
                        t.sort();
                        t
                    })),
                    "state": states.get(id),
                })
            }).collect::<Vec<_>>(),
        }));
        return Ok(());
    }
    match &from {
        Some(f) => println!("document: {f}"),
        None => println!(
            "document: not available (pass --destinations-file; showing the state items only)"
        ),
    }
    let mut t = Table::new(&["DESTINATION", "TARGET", "ROUTES", "FAILURES", "STATE"]);
    for id in &ids {
        let d = doc.as_ref().and_then(|d| d.get(id));
        let routes = match d {
            None if doc.is_some() => "NOT CONFIGURED".into(),
            None => "-".into(),
            Some(d) => {
                let p = d.providers.as_ref().map_or("all providers".into(), |p| {
                    p.iter().map(|p| p.as_str()).collect::<Vec<_>>().join(",")
                });
                let t = d.event_types.as_ref().map_or("all types".into(), |t| {
                    let mut t: Vec<_> = t.iter().map(String::as_str).collect();
                    t.sort();
                    t.join(",")
                });
                format!("{p}; {t}")
            }
        };
        let s = states.get(id);
        t.row(vec![
            id.clone(),
            d.map(|d| d.target.to_string())
                .unwrap_or_else(|| "-".into()),
            routes,
            s.map(|s| s.failures.to_string())
                .unwrap_or_else(|| "0".into()),
            state_text(s, now),
        ]);
    }
    t.print();
    Ok(())
}

/// A destination the document does not name is refused (a typo would pause nothing useful);
/// without a document the id is taken as given.
async fn check_known(ctx: &Ctx, id: &str) -> Result<()> {
    if let (Some(doc), from) = document(ctx).await
        && doc.get(id).is_none()
    {
        return Err(CliError::not_found(format!(
            "destination {id:?} is not in the destinations document ({}); configured: {}",
            from.unwrap_or_default(),
            doc.iter()
                .map(|d| d.id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    Ok(())
}

async fn pause(ctx: &Ctx, id: &str, reason: &str) -> Result<()> {
    check_known(ctx, id).await?;
    if reason.trim().is_empty() {
        return Err(CliError::usage("--reason must say why"));
    }
    // Who: the operator's login, so `status` tells who paused it (the AWS principal is in
    // CloudTrail).
    let who = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into());
    let reason = format!("{} (by {who})", reason.trim());
    let now = ctx.now_ms();
    ctx.records()?.pause(id, &reason, now).await?;
    if ctx.ui.json {
        ctx.json(json!({"destination": id, "paused": true, "paused_by": "operator", "reason": reason, "since_ms": now}));
    } else {
        println!(
            "{id}: paused by operator ({reason}); its jobs are held on the retry lane until `kyc-relay destinations resume {id}`"
        );
    }
    Ok(())
}

async fn resume(ctx: &Ctx, id: &str) -> Result<()> {
    check_known(ctx, id).await?;
    let records = ctx.records()?;
    let before = records.load().await?.remove(id);
    let was = records.resume(id, ctx.now_ms()).await?;
    let by = before
        .and_then(|s| s.paused)
        .map(|p| (p.by.as_str(), p.reason));
    if ctx.ui.json {
        ctx.json(json!({
            "destination": id,
            "was_paused": was,
            "was_paused_by": by.as_ref().map(|b| b.0),
            "reason": by.as_ref().map(|b| &b.1),
        }));
    } else if was {
        let (b, r) = by.unwrap_or(("?", String::new()));
        println!(
            "{id}: resumed (was paused by {b}: {r}); held jobs go out within one hold interval (HOLD_SECONDS, 300 s by default)"
        );
    } else {
        println!("{id}: was not paused; its failure streak is reset");
    }
    Ok(())
}
