//! `session`: the session's projected status and the timeline of its events, each with its
//! deliveries: one query of the session's partition.

use super::{DeliveryView, deliveries};
use crate::args::SessionArgs;
use crate::ctx::Ctx;
use crate::error::{CliError, Result};
use crate::ui::{Table, time};
use kyc_relay::records::{RecordReader, session_pk, session_status};
use serde_json::json;

pub async fn run(ctx: &Ctx, a: &SessionArgs) -> Result<()> {
    let events = ctx
        .records()?
        .partition(&session_pk(a.provider, &a.session_id))
        .await?;
    if events.is_empty() {
        return Err(CliError::not_found(format!(
            "no records of {} session {:?} (never seen, expired after RecordTtlSeconds, or erased)",
            a.provider, a.session_id
        )));
    }
    let records: Vec<_> = events.iter().map(|e| e.event.clone()).collect();
    let status = session_status(&records);
    // An event is stale when a further status had already arrived: it is relayed, but the
    // session does not move back.
    let mut furthest: Option<u16> = None;
    let mut stale = Vec::new();
    for e in &events {
        let rank = e.event.rank;
        stale.push(matches!((rank, furthest), (Some(r), Some(f)) if r < f));
        if let Some(r) = rank {
            furthest = Some(furthest.map_or(r, |f| f.max(r)));
        }
    }
    let paused = super::paused_destinations(ctx).await?;
    let views: Vec<Vec<DeliveryView>> = events
        .iter()
        .map(|e| {
            let mut v = deliveries(e);
            super::mark_held(&mut v, &paused);
            v
        })
        .collect();
    let mut counts = std::collections::BTreeMap::<&str, usize>::new();
    for v in views.iter().flatten().filter(|d| d.replay.is_none()) {
        *counts.entry(v.state).or_default() += 1;
    }

    if ctx.ui.json {
        ctx.json(json!({
            "provider": a.provider,
            "session_id": a.session_id,
            "status": status.map(|s| json!({
                "status": s.status,
                "rank": s.rank,
                "event_id": s.event_id,
                "received_at_ms": s.received_at_ms,
            })),
            "events": events.iter().zip(&views).zip(&stale).map(|((e, v), stale)| json!({
                "event_id": e.event.event_id,
                "event_type": e.event.event_type,
                "status": e.event.status,
                "rank": e.event.rank,
                "stale": stale,
                "received_at_ms": e.event.received_at_ms,
                "deliveries": v,
            })).collect::<Vec<_>>(),
            "delivery_states": counts,
        }));
        return Ok(());
    }

    println!("session     {} {}", a.provider, a.session_id);
    match status {
        Some(s) => println!(
            "status      {} (from {}, received {})",
            s.status.as_deref().unwrap_or("-"),
            s.event_id,
            time(s.received_at_ms)
        ),
        None => println!("status      - (no event of this session reports a status)"),
    }
    let stale_n = stale.iter().filter(|s| **s).count();
    println!(
        "events      {}{}",
        events.len(),
        if stale_n > 0 {
            format!(" ({stale_n} arrived after a further status: marked stale)")
        } else {
            String::new()
        }
    );
    println!(
        "deliveries  {}",
        if counts.is_empty() {
            "none".to_string()
        } else {
            counts
                .iter()
                .map(|(s, n)| format!("{n} {}", s.to_ascii_lowercase().replace('_', " ")))
                .collect::<Vec<_>>()
                .join(", ")
        }
    );
    println!();
    let mut t = Table::new(&[
        "RECEIVED",
        "TYPE",
        "STATUS",
        "EVENT",
        "DESTINATION",
        "DELIVERY",
        "ATTEMPTS",
        "LAST",
    ]);
    for ((e, v), stale) in events.iter().zip(&views).zip(&stale) {
        let r = &e.event;
        let mut head = vec![
            time(r.received_at_ms),
            r.event_type.clone(),
            match &r.status {
                Some(s) if *stale => format!("{s} (stale)"),
                Some(s) => s.clone(),
                None => "-".into(),
            },
            r.event_id.clone(),
        ];
        if v.is_empty() {
            head.extend([
                "-".into(),
                "no destination".into(),
                String::new(),
                String::new(),
            ]);
            t.row(head);
            continue;
        }
        for (i, d) in v.iter().enumerate() {
            let mut row = if i == 0 {
                std::mem::take(&mut head)
            } else {
                vec![String::new(); 4]
            };
            row.extend([
                match &d.replay {
                    Some(rp) => format!("{} (replay {rp})", d.destination),
                    None => d.destination.clone(),
                },
                d.state_text(),
                d.attempts.to_string(),
                d.last_text(),
            ]);
            t.row(row);
            if a.attempts {
                for h in &d.history {
                    let mut row = vec![String::new(); 5];
                    row.extend([
                        format!("  #{}", h.attempt),
                        String::new(),
                        format!(
                            "{} at {} ({} ms){}",
                            h.outcome,
                            time(h.at_ms),
                            h.latency_ms,
                            if h.probe { ", probe" } else { "" }
                        ),
                    ]);
                    t.row(row);
                }
            }
        }
    }
    t.print();
    Ok(())
}
