//! `dlq list|show|redrive`: the dead-letter queues, filtered by destination, reason, provider, event
//! and time. Redrive moves exactly the matching messages (delivery DLQ -> the retry lane, ingest
//! DLQ -> the ingest queue; sent first, deleted after) and leaves the others where they are.
//!
//! What happens to a redriven message: a delivery job that carries `dead_letter` starts a new retry
//! cycle in the dispatcher (the policy's schedule runs again, same `webhook-id`; a delivery
//! DELIVERED meanwhile is not sent again); one without (moved by SQS after 5 failed receives) is
//! processed as the same job. An envelope goes through the consumer again: its intake id still owns
//! the event, so a claimed event is repaired (its deliveries never attempted are sent), a new one is
//! processed.

use crate::args::{DlqCommand, DlqFilter, DlqName};
use crate::aws::queues::{DlqMessage, Scan, depth, scan_visibility, send_copy};
use crate::ctx::Ctx;
use crate::error::{CliError, Result};
use crate::target::QueueRole;
use crate::ui::{Rate, Table, time, time_range};
use kyc_relay::delivery::DeliveryJob;
use kyc_relay::envelope::Envelope;
use kyc_relay::provider::Provider;
use serde::Serialize;
use serde_json::json;
use std::collections::HashSet;

/// One DLQ message as listed (JSON shape in docs/operations.md).
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub message_id: String,
    /// `delivery_job`, `envelope`, or `unreadable` (not a job or envelope of this version).
    pub kind: &'static str,
    pub sent_at_ms: Option<u64>,
    pub receive_count: u32,
    pub provider: Option<Provider>,
    pub event_id: Option<String>,
    pub event_type: Option<String>,
    pub session_id: Option<String>,
    pub received_at_ms: Option<u64>,
    pub destination: Option<String>,
    pub delivery_id: Option<String>,
    pub attempts: Option<u32>,
    pub replay: Option<String>,
    pub reason: Option<String>,
    pub dead_lettered_at_ms: Option<u64>,
}

impl Summary {
    pub fn of(queue: DlqName, m: &DlqMessage) -> (Self, Option<serde_json::Value>) {
        let mut s = Summary {
            message_id: m.message_id.clone(),
            kind: "unreadable",
            sent_at_ms: m.sent_at_ms,
            receive_count: m.receive_count,
            provider: None,
            event_id: None,
            event_type: None,
            session_id: None,
            received_at_ms: None,
            destination: m.attribute("destination").map(str::to_string),
            delivery_id: m.attribute("delivery_id").map(str::to_string),
            attempts: None,
            replay: None,
            reason: m.attribute("reason").map(str::to_string),
            dead_lettered_at_ms: None,
        };
        let mut envelope = None;
        match queue {
            DlqName::Delivery => {
                if let Ok(job) = serde_json::from_str::<DeliveryJob>(&m.body) {
                    s.kind = "delivery_job";
                    s.destination = Some(job.destination_id.clone());
                    s.delivery_id = Some(job.delivery_id.clone());
                    s.attempts = Some(job.attempt);
                    s.replay = job.replay.as_ref().map(|r| r.id.clone());
                    if let Some(d) = &job.dead_letter {
                        s.reason = Some(d.reason.clone());
                        s.dead_lettered_at_ms = Some(d.at_ms);
                        s.attempts = Some(d.attempts);
                    } else {
                        s.reason = Some("failed 5 receives (moved by SQS)".into());
                    }
                    envelope = Some(job.envelope);
                }
            }
            DlqName::Ingest => {
                if let Ok(e) = serde_json::from_str::<Envelope>(&m.body) {
                    s.kind = "envelope";
                    envelope = Some(e);
                }
            }
        }
        let body = envelope.as_ref().map(|e| e.event.clone());
        if let Some(e) = envelope {
            s.provider = Some(e.provider);
            s.event_id = Some(e.event_id);
            s.event_type = Some(e.event_type);
            s.session_id = e.session_id;
            s.received_at_ms = Some(e.received_at_ms);
        }
        (s, body)
    }

    /// When it went to the DLQ (delivery) or was received (ingest), for `--since/--until`.
    fn at_ms(&self) -> Option<u64> {
        self.dead_lettered_at_ms
            .or(self.received_at_ms)
            .or(self.sent_at_ms)
    }
}

/// A filter, checked once against the queue.
pub struct Filter {
    pub queue: DlqName,
    destination: Option<String>,
    reason: Option<String>,
    provider: Option<Provider>,
    event_id: Option<String>,
    /// Erase: the session's messages.
    pub session: Option<(Provider, String)>,
    since: Option<u64>,
    until: Option<u64>,
}

impl Filter {
    pub fn from_args(f: &DlqFilter, now_ms: u64) -> Result<Self> {
        if f.queue == DlqName::Ingest && (f.destination.is_some() || f.reason.is_some()) {
            return Err(CliError::usage(
                "--destination and --reason filter the delivery DLQ (ingest DLQ messages are envelopes, with no destination or reason)",
            ));
        }
        let (since, until) = time_range(f.since.as_deref(), f.until.as_deref(), now_ms)?;
        Ok(Self {
            queue: f.queue,
            destination: f.destination.clone(),
            reason: f.reason.as_ref().map(|r| r.to_lowercase()),
            provider: f.provider,
            event_id: f.event_id.clone(),
            session: None,
            since,
            until,
        })
    }

    pub fn session(queue: DlqName, provider: Provider, session: &str) -> Self {
        Self {
            queue,
            destination: None,
            reason: None,
            provider: None,
            event_id: None,
            session: Some((provider, session.to_string())),
            since: None,
            until: None,
        }
    }

    fn by_content(&self) -> bool {
        self.destination.is_some()
            || self.reason.is_some()
            || self.provider.is_some()
            || self.event_id.is_some()
            || self.session.is_some()
    }

    pub fn matches(&self, s: &Summary) -> bool {
        // An unreadable message matches only filters that do not look inside it.
        if s.kind == "unreadable" && self.by_content() {
            return false;
        }
        let eq = |want: &Option<String>, have: &Option<String>| {
            want.as_ref().is_none_or(|w| have.as_ref() == Some(w))
        };
        eq(&self.destination, &s.destination)
            && eq(&self.event_id, &s.event_id)
            && self.provider.is_none_or(|p| s.provider == Some(p))
            && self.reason.as_ref().is_none_or(|r| {
                s.reason
                    .as_ref()
                    .is_some_and(|have| have.to_lowercase().contains(r))
            })
            && self.session.as_ref().is_none_or(|(p, id)| {
                s.provider == Some(*p) && s.session_id.as_deref() == Some(id.as_str())
            })
            && self.since.is_none_or(|t| s.at_ms().is_some_and(|a| a >= t))
            && self.until.is_none_or(|t| s.at_ms().is_some_and(|a| a < t))
    }
}

pub fn dlq_url(ctx: &Ctx, q: DlqName) -> Result<&str> {
    ctx.res.queue(match q {
        DlqName::Ingest => QueueRole::IngestDlq,
        DlqName::Delivery => QueueRole::DeliveryDlq,
    })
}

pub async fn run(ctx: &Ctx, cmd: &DlqCommand) -> Result<()> {
    match cmd {
        DlqCommand::List(f) => list(ctx, f).await,
        DlqCommand::Show {
            queue,
            message_id,
            body,
        } => show(ctx, *queue, message_id, *body).await,
        DlqCommand::Redrive {
            filter,
            rate,
            dry_run,
        } => redrive(ctx, filter, rate, *dry_run).await,
    }
}

/// What a pass did with the messages.
#[derive(Default)]
pub struct Pass {
    pub scanned: usize,
    pub matched: Vec<Summary>,
    pub moved: Vec<String>,
    pub failed: Vec<(String, String)>,
    pub unreleased: usize,
    /// Messages that are neither a delivery job nor an envelope: no filter can match them (their
    /// session, if any, is unknown), so callers say how many there were.
    pub unreadable: Vec<String>,
}

/// What to do with a matching message.
pub enum Action<'a> {
    /// Leave it (list, dry run).
    Keep,
    /// Send it to this queue (at this rate), then delete it.
    MoveTo(&'a str, Rate),
    /// Delete it (erase).
    Delete,
}

/// One pass over a DLQ: every matching message (up to `limit`, and only ids in `only` if given)
/// gets `action`; every other message is released at the end.
pub async fn pass(
    ctx: &Ctx,
    filter: &Filter,
    limit: Option<usize>,
    only: Option<&HashSet<String>>,
    action: Action<'_>,
    what: &str,
) -> Result<Pass> {
    let sqs = ctx.sqs();
    let url = dlq_url(ctx, filter.queue)?;
    let d = depth(&sqs, url).await?;
    let per_sec = match &action {
        Action::MoveTo(_, rate) => Some(rate.per_sec()),
        _ => None,
    };
    let mut limiter = match &action {
        Action::MoveTo(_, rate) => Some(rate.limiter()),
        _ => None,
    };
    let mut scan = Scan::new(&sqs, url, scan_visibility(d.visible, per_sec));
    let bar = ctx.ui.bar(Some(d.visible), what);
    let mut out = Pass::default();
    let work = async {
        loop {
            let batch = scan.next_batch().await?;
            if batch.is_empty() {
                return Ok(());
            }
            for m in batch {
                out.scanned += 1;
                bar.inc(1);
                let (summary, _) = Summary::of(filter.queue, &m);
                if summary.kind == "unreadable" {
                    out.unreadable.push(m.message_id.clone());
                }
                let wanted = filter.matches(&summary)
                    && only.is_none_or(|ids| ids.contains(&m.message_id))
                    && limit.is_none_or(|l| out.matched.len() < l);
                if !wanted {
                    scan.keep(&m);
                    continue;
                }
                out.matched.push(summary);
                match &action {
                    Action::Keep => scan.keep(&m),
                    Action::Delete => match scan.delete(&m).await {
                        Ok(()) => out.moved.push(m.message_id.clone()),
                        Err(e) => out.failed.push((m.message_id.clone(), e.message)),
                    },
                    Action::MoveTo(target, _) => {
                        if let Some(l) = limiter.as_mut() {
                            l.wait().await;
                        }
                        match send_copy(&sqs, target, &m).await {
                            Err(e) => {
                                scan.keep(&m);
                                out.failed.push((m.message_id.clone(), e.message));
                            }
                            Ok(_) => match scan.delete(&m).await {
                                Ok(()) => out.moved.push(m.message_id.clone()),
                                // Sent but still in the DLQ: a second copy, which the consumer
                                // or dispatcher drops; say so rather than hide it.
                                Err(e) => out.failed.push((
                                    m.message_id.clone(),
                                    format!(
                                        "sent, but not deleted from the DLQ (a copy stays): {}",
                                        e.message
                                    ),
                                )),
                            },
                        }
                    }
                }
            }
        }
    };
    // Ctrl-C stops the pass between two calls and still releases what it held (else those
    // messages would stay invisible for the rest of the pass's visibility timeout).
    let result: Result<()> = tokio::select! {
        r = work => r,
        _ = tokio::signal::ctrl_c() => Err(CliError::failed(
            "interrupted: the messages held were released; what was moved stays moved",
        )),
    };
    out.unreleased = scan.release().await;
    bar.finish_and_clear();
    if out.unreleased > 0 && !ctx.ui.json {
        eprintln!(
            "kyc-relay: {} message(s) could not be made visible again; they reappear within {} s",
            out.unreleased,
            scan.visibility_secs()
        );
    }
    result?;
    if let Some(left) = scan.left() {
        // Never report a partial pass as complete: the caller exits non-zero and says what is left.
        return Err(CliError::failed(format!(
            "partial pass: scanned {}, matched {}, acted on {}, but about {left} message(s) of the \
             {} DLQ were not reached (SQS returned none: its in-flight limit, about 120,000 per \
             queue). What was done stays done; run the same command again to cover the rest",
            out.scanned,
            out.matched.len(),
            out.moved.len(),
            filter.queue.as_str()
        )));
    }
    Ok(out)
}

fn table(summaries: &[Summary]) {
    let mut t = Table::new(&[
        "MESSAGE ID",
        "AT",
        "PROVIDER",
        "EVENT",
        "TYPE",
        "DESTINATION",
        "ATTEMPTS",
        "REASON",
    ]);
    let o = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    for s in summaries {
        t.row(vec![
            s.message_id.clone(),
            s.at_ms().map(time).unwrap_or_else(|| "-".into()),
            s.provider
                .map(|p| p.to_string())
                .unwrap_or_else(|| "-".into()),
            o(&s.event_id),
            o(&s.event_type),
            o(&s.destination),
            s.attempts
                .map(|a| a.to_string())
                .unwrap_or_else(|| "-".into()),
            if s.kind == "unreadable" {
                "unreadable body".into()
            } else {
                o(&s.reason)
            },
        ]);
    }
    t.print();
}

async fn list(ctx: &Ctx, f: &DlqFilter) -> Result<()> {
    let filter = Filter::from_args(f, ctx.now_ms())?;
    let p = pass(ctx, &filter, f.limit, None, Action::Keep, "reading the DLQ").await?;
    if ctx.ui.json {
        ctx.json(json!({
            "queue": f.queue.as_str(),
            "scanned": p.scanned,
            "matched": p.matched.len(),
            "messages": p.matched,
        }));
        return Ok(());
    }
    if p.matched.is_empty() {
        println!(
            "{} DLQ: no matching message ({} scanned)",
            f.queue.as_str(),
            p.scanned
        );
        return Ok(());
    }
    table(&p.matched);
    println!(
        "\n{} of {} message(s) match; they stay in the DLQ",
        p.matched.len(),
        p.scanned
    );
    Ok(())
}

async fn show(ctx: &Ctx, queue: DlqName, message_id: &str, with_body: bool) -> Result<()> {
    let sqs = ctx.sqs();
    let url = dlq_url(ctx, queue)?;
    let d = depth(&sqs, url).await?;
    let mut scan = Scan::new(&sqs, url, scan_visibility(d.visible, None));
    let bar = ctx.ui.bar(Some(d.visible), "reading the DLQ");
    let mut found = None;
    let result: Result<()> = async {
        while found.is_none() {
            let batch = scan.next_batch().await?;
            if batch.is_empty() {
                break;
            }
            for m in batch {
                bar.inc(1);
                scan.keep(&m);
                if m.message_id == message_id {
                    found = Some(m);
                }
            }
        }
        Ok(())
    }
    .await;
    scan.release().await;
    bar.finish_and_clear();
    result?;
    let m = found.ok_or_else(|| {
        CliError::not_found(format!(
            "no message {message_id:?} in the {} DLQ",
            queue.as_str()
        ))
    })?;
    let (summary, _) = Summary::of(queue, &m);
    let body: serde_json::Value =
        serde_json::from_str(&m.body).unwrap_or_else(|_| serde_json::Value::String(m.body.clone()));
    if ctx.ui.json {
        // The same rule as the table: the body (the webhook, personal data) only with --body;
        // without it, what the table shows (the summary and the attempts).
        let mut doc = json!({"queue": queue.as_str(), "message": summary});
        if let Some(history) = body.get("history") {
            doc["history"] = history.clone();
        }
        if with_body {
            doc["body"] = body;
        }
        ctx.json(doc);
        return Ok(());
    }
    table(std::slice::from_ref(&summary));
    if let Some(s) = &summary.session_id {
        println!("\nsession: {s}");
    }
    if let Some(history) = body.get("history").and_then(|h| h.as_array()) {
        println!("\nattempts:");
        let mut t = Table::new(&["#", "AT", "OUTCOME", "CODE", "LATENCY", "CYCLE"]);
        for h in history {
            let n = |k: &str| h.get(k).and_then(|v| v.as_u64());
            t.row(vec![
                n("attempt").map(|v| v.to_string()).unwrap_or_default(),
                n("at_ms").map(time).unwrap_or_default(),
                h.get("outcome")
                    .and_then(|v| v.as_str())
                    .unwrap_or("-")
                    .into(),
                n("status_code")
                    .map(|v| v.to_string())
                    .unwrap_or_else(|| "-".into()),
                n("latency_ms")
                    .map(|v| format!("{v} ms"))
                    .unwrap_or_default(),
                n("cycle")
                    .map(|v| v.to_string())
                    .unwrap_or_else(|| "1".into()),
            ]);
        }
        t.print();
    }
    let envelope = body.get("envelope").unwrap_or(&body);
    if with_body {
        println!(
            "\nraw body ({}):",
            envelope
                .get("content_type")
                .and_then(|v| v.as_str())
                .unwrap_or("?")
        );
        println!(
            "{}",
            envelope
                .get("raw_body")
                .and_then(|v| v.as_str())
                .unwrap_or(&m.body)
        );
    } else {
        println!("\n(the webhook body is personal data: add --body to print it)");
    }
    Ok(())
}

async fn redrive(ctx: &Ctx, f: &DlqFilter, rate: &str, dry_run: bool) -> Result<()> {
    let rate = Rate::parse("--rate", rate)?;
    let filter = Filter::from_args(f, ctx.now_ms())?;
    let target = ctx.res.queue(match f.queue {
        DlqName::Ingest => QueueRole::Ingest,
        DlqName::Delivery => QueueRole::Retry,
    })?;
    // Ask first, with the messages named; then move only those (a message arriving in between
    // is not moved without being shown).
    let confirmed: Option<HashSet<String>> = if dry_run || !ctx.ui.yes {
        let p = pass(ctx, &filter, f.limit, None, Action::Keep, "reading the DLQ").await?;
        if dry_run {
            if ctx.ui.json {
                ctx.json(json!({
                    "queue": f.queue.as_str(), "target": target, "dry_run": true,
                    "scanned": p.scanned, "matched": p.matched.len(), "moved": 0,
                    "messages": p.matched, "failed": [],
                }));
            } else {
                table(&p.matched);
                println!(
                    "\ndry run: {} of {} message(s) would move to {target}",
                    p.matched.len(),
                    p.scanned
                );
            }
            return Ok(());
        }
        if p.matched.is_empty() {
            return Err(CliError::not_found(format!(
                "no matching message in the {} DLQ ({} scanned)",
                f.queue.as_str(),
                p.scanned
            )));
        }
        if !ctx.ui.json {
            table(&p.matched);
        }
        ctx.ui.confirm(&format!(
            "Move these {} message(s) to {target}?",
            p.matched.len()
        ))?;
        Some(p.matched.into_iter().map(|s| s.message_id).collect())
    } else {
        None
    };
    let p = pass(
        ctx,
        &filter,
        f.limit,
        confirmed.as_ref(),
        Action::MoveTo(target, rate),
        "moving",
    )
    .await?;
    if ctx.ui.json {
        ctx.json(json!({
            "queue": f.queue.as_str(), "target": target, "dry_run": false,
            "scanned": p.scanned, "matched": p.matched.len(), "moved": p.moved.len(),
            "messages": p.matched,
            "failed": p.failed.iter().map(|(id, e)| json!({"message_id": id, "error": e})).collect::<Vec<_>>(),
        }));
    } else {
        println!(
            "moved {} message(s) to {target}; {} left in the DLQ",
            p.moved.len(),
            p.scanned - p.moved.len()
        );
        for (id, e) in &p.failed {
            eprintln!("kyc-relay: {id}: {e}");
        }
    }
    if !p.failed.is_empty() {
        return Err(CliError::failed(format!(
            "{} message(s) not moved",
            p.failed.len()
        )));
    }
    if p.matched.is_empty() {
        return Err(CliError::not_found(format!(
            "no matching message in the {} DLQ",
            f.queue.as_str()
        )));
    }
    Ok(())
}
