//! `status`: queue depths and ages, DLQ counts, paused destinations, alarms in ALARM.

use crate::aws::{metrics, queue_name, queues};
use crate::ctx::Ctx;
use crate::error::Result;
use crate::target::QueueRole;
use crate::ui::{Table, age, time};
use kyc_relay::records::{DestinationStates, PausedBy};
use serde_json::json;

pub async fn run(ctx: &Ctx) -> Result<()> {
    let sqs = ctx.sqs();
    let roles: Vec<(QueueRole, &str)> = QueueRole::ALL
        .into_iter()
        .filter_map(|r| Some((r, ctx.res.queue(r).ok()?)))
        .collect();
    let depths =
        futures_util::future::join_all(roles.iter().map(|(_, url)| queues::depth(&sqs, url))).await;
    let names: Vec<&str> = roles.iter().map(|(_, url)| queue_name(url)).collect();
    // SQS publishes the age once a minute to CloudWatch; locally nothing does, so "n/a".
    let (ages, ages_note) = match metrics::oldest_ages(&ctx.sdk, &names, ctx.now_ms()).await {
        Ok(a) => (a, None),
        Err(e) => (Default::default(), Some(e.message)),
    };
    let mut queue_rows = Vec::new();
    for ((role, url), depth) in roles.iter().zip(depths) {
        let d = depth?;
        queue_rows.push((*role, *url, d, ages.get(queue_name(url)).copied()));
    }

    let states = ctx.records()?.load().await?;
    let now = ctx.now_ms();
    let paused: Vec<_> = states
        .iter()
        .filter_map(|(id, s)| Some((id, s, s.paused.as_ref()?)))
        .collect();

    let (alarms, alarms_note) = if ctx.res.alarms.is_empty() {
        (
            Vec::new(),
            Some(if ctx.res.stack.is_some() {
                "the stack has no alarms".to_string()
            } else {
                "no stack: alarms are known only with --stack".to_string()
            }),
        )
    } else {
        match metrics::firing(&ctx.sdk, &ctx.res.alarms).await {
            Ok(a) => (a, None),
            Err(e) => (Vec::new(), Some(e.message)),
        }
    };

    if ctx.ui.json {
        ctx.json(json!({
            "queues": queue_rows.iter().map(|(role, url, d, age)| json!({
                "queue": role.name(),
                "url": url,
                "dlq": role.is_dlq(),
                "visible": d.visible,
                "in_flight": d.in_flight,
                "delayed": d.delayed,
                "oldest_age_secs": age,
            })).collect::<Vec<_>>(),
            "ages_note": ages_note,
            "paused_destinations": paused.iter().map(|(id, s, p)| json!({
                "destination": id,
                "paused_by": p.by.as_str(),
                "reason": p.reason,
                "since_ms": p.since_ms,
                "next_probe_ms": (p.by == PausedBy::Breaker).then_some(s.probe_at_ms),
                "failures": s.failures,
            })).collect::<Vec<_>>(),
            "alarms_in_alarm": alarms,
            "alarms_checked": ctx.res.alarms.len(),
            "alarms_note": alarms_note,
        }));
        return Ok(());
    }

    let mut t = Table::new(&["QUEUE", "VISIBLE", "IN FLIGHT", "DELAYED", "OLDEST"]);
    for (role, _, d, age_secs) in &queue_rows {
        t.row(vec![
            role.name().into(),
            d.visible.to_string(),
            d.in_flight.to_string(),
            d.delayed.to_string(),
            age_secs.map(age).unwrap_or_else(|| "n/a".into()),
        ]);
    }
    t.print();
    if let Some(note) = &ages_note {
        println!("(oldest message age unavailable: {note})");
    }
    let dlq = |r: QueueRole| {
        queue_rows
            .iter()
            .find(|(role, ..)| *role == r)
            .map(|(_, _, d, _)| d.visible + d.in_flight + d.delayed)
    };
    println!();
    for (r, q) in [
        (QueueRole::IngestDlq, "ingest"),
        (QueueRole::DeliveryDlq, "delivery"),
    ] {
        match dlq(r) {
            Some(0) => println!("{q} DLQ: empty"),
            Some(n) => println!("{q} DLQ: {n} message(s): kyc-relay dlq list --queue {q}"),
            None => {}
        }
    }
    println!();
    if paused.is_empty() {
        println!("paused destinations: none");
    } else {
        println!("paused destinations:");
        let mut t = Table::new(&[
            "DESTINATION",
            "PAUSED BY",
            "SINCE",
            "FOR",
            "NEXT PROBE",
            "REASON",
        ]);
        for (id, s, p) in &paused {
            t.row(vec![
                id.to_string(),
                p.by.as_str().into(),
                time(p.since_ms),
                age(now.saturating_sub(p.since_ms) / 1000),
                match p.by {
                    PausedBy::Breaker => time(s.probe_at_ms),
                    PausedBy::Operator => "never (resume by hand)".into(),
                },
                p.reason.clone(),
            ]);
        }
        t.print();
    }
    println!();
    match (&alarms_note, alarms.is_empty()) {
        (Some(note), _) => println!("alarms: n/a ({note})"),
        (None, true) => println!("alarms in ALARM: none (of {})", ctx.res.alarms.len()),
        (None, false) => {
            println!("alarms in ALARM:");
            let mut t = Table::new(&["ALARM", "SINCE", "REASON"]);
            for a in &alarms {
                t.row(vec![
                    a.name.clone(),
                    a.since_ms.map(time).unwrap_or_else(|| "-".into()),
                    a.reason.clone(),
                ]);
            }
            t.print();
        }
    }
    Ok(())
}
