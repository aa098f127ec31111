//! `erase --session PROVIDER SESSION_ID`: the right to erasure. Removes
//! 1. the session's lines from every archive object its records list (expired records included,
//!    which TTL has not deleted yet), and, with `--since/--until`, from every object of those
//!    archive hours and the hour after `--until` (copies of events whose records are gone, and
//!    repair or backlog copies archived later), rewriting each object without them and deleting an
//!    object left empty. Records that name archive objects with no archive bucket configured are
//!    refused (exit 2), never deleted with their envelopes left behind;
//! 2. the session's messages in both DLQs (their bodies are the webhooks);
//! 3. its records (`RecordReader::erase_partition`): every delivery item deleted, every event item
//!    replaced by a tombstone that keeps only its key for the record's lifetime, so later copies of
//!    the events (provider retries, redeliveries, queued or held jobs, replays) are refused rather
//!    than bringing the session back.
//!
//! Records go last: they list the archive objects, so an erasure interrupted halfway finds them
//! again when run again. The erasure is logged without personal data: an audit item in the records
//! table (partition `audit#erasure`, never expiring) with who erased (the caller's ARN), the counts,
//! the time, and a subject only under an audit key (HMAC-SHA-256(key, provider, session id)).
//!
//! A job still queued carries the webhook until the dispatcher handles it and drops it (the tool
//! warns): SQS messages cannot be rewritten.

use super::dlq::{Action, Filter, pass};
use crate::args::{DlqName, EraseArgs};
use crate::aws::table::{AUDIT_PK, AuditEntry, write_audit};
use crate::ctx::Ctx;
use crate::error::{CliError, Result};
use crate::target::QueueRole;
use crate::ui::time_range;
use kyc_relay::archive::{ArchiveStore, archived_at_ms, hour_prefix, keep_days};
use kyc_relay::provider::{Provider, keyed_hex};
use kyc_relay::records::{DeliveryStatus, RecordReader, session_pk};
use serde_json::json;
use std::collections::BTreeSet;

const HOUR_MS: u64 = 3_600_000;

#[derive(serde::Deserialize)]
struct Who {
    provider: Provider,
    #[serde(default)]
    session_id: Option<String>,
}

/// The object's lines without the session's; `(kept body, removed, unreadable)`.
fn without_session(body: &[u8], provider: Provider, session: &str) -> (Vec<u8>, usize, usize) {
    let mut kept = Vec::with_capacity(body.len());
    let (mut removed, mut unreadable) = (0, 0);
    for line in body.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        match serde_json::from_slice::<Who>(line) {
            Ok(w) if w.provider == provider && w.session_id.as_deref() == Some(session) => {
                removed += 1;
                continue;
            }
            Ok(_) => {}
            // Kept (it cannot be told whose it is) and counted, so the operator can look.
            Err(_) => unreadable += 1,
        }
        kept.extend_from_slice(line);
        kept.push(b'\n');
    }
    (kept, removed, unreadable)
}

pub async fn run(ctx: &Ctx, a: &EraseArgs) -> Result<()> {
    let [provider, session] = a.session.as_slice() else {
        return Err(CliError::usage("--session takes PROVIDER SESSION_ID"));
    };
    let provider: Provider = provider.parse().map_err(CliError::usage)?;
    let session = session.as_str();
    let now = ctx.now_ms();
    let (since, until) = time_range(a.since.as_deref(), a.until.as_deref(), now)?;
    let pk = session_pk(provider, session);
    let records = ctx.records()?;
    let events = records.partition(&pk).await?;
    let mut warnings = Vec::new();
    let open = events
        .iter()
        .flat_map(|e| {
            super::deliveries(e).into_iter().filter(|d| {
                d.state != DeliveryStatus::Delivered.as_str()
                    && d.state != DeliveryStatus::Failed.as_str()
            })
        })
        .count();
    if open > 0 {
        warnings.push(format!(
            "{open} delivery(ies) of this session are not final: their jobs still on a delivery queue carry the webhook until the dispatcher drops them (held jobs: when their destination resumes or their hold limit ends)"
        ));
    }

    // 1. Which archive objects hold the session's lines: those every event item names, expired
    // items included (TTL deletes them days late, and they are deleted below).
    let mut objects: BTreeSet<String> = records.archive_objects(&pk).await?.into_iter().collect();
    let archive = match ctx.res.archive_bucket {
        Some(_) => Some(ctx.archive()?),
        None if !objects.is_empty() => {
            // Deleting the records would leave their envelopes in S3 with nothing pointing at them.
            return Err(CliError::usage(format!(
                "the session's records name {} archive object(s), but no archive bucket is configured \
                 (ARCHIVE_BUCKET / --stack): nothing was erased",
                objects.len()
            )));
        }
        None => {
            warnings.push("no archive bucket: nothing archived to erase".into());
            None
        }
    };
    if let (Some(store), Some(s), Some(u)) = (&archive, since, until) {
        // One hour past `--until`, as `replay` reads: a repair or a backlog copy of an event
        // received before `--until` is archived in a later hour.
        let end = u + HOUR_MS;
        let mut h = s - s % HOUR_MS;
        let bar = ctx
            .ui
            .bar(Some((end - h).div_ceil(HOUR_MS)), "listing archive hours");
        while h < end {
            objects.extend(store.list(&hour_prefix(h), None).await?);
            h += HOUR_MS;
            bar.inc(1);
        }
        bar.finish_and_clear();
    }
    let mut plan: Vec<(String, usize, bool)> = Vec::new(); // object, lines removed, emptied
    let mut unreadable = 0;
    if let Some(store) = &archive {
        let bar = ctx
            .ui
            .bar(Some(objects.len() as u64), "reading archive objects");
        for object in &objects {
            bar.inc(1);
            let Some(body) = store.get(object).await? else {
                continue;
            };
            let (kept, removed, bad) = without_session(&body, provider, session);
            unreadable += bad;
            if removed > 0 {
                plan.push((object.clone(), removed, kept.is_empty()));
            }
        }
        bar.finish_and_clear();
    }
    if unreadable > 0 {
        warnings.push(format!(
            "{unreadable} archive line(s) could not be read and were kept"
        ));
    }
    let lines: usize = plan.iter().map(|p| p.1).sum();
    if plan.iter().any(|p| !p.2) && ctx.res.archive_retention_days.is_none() {
        warnings.push(
            "ArchiveRetentionDays is unknown (no --stack, no ARCHIVE_RETENTION_DAYS in the env file): rewritten archive objects restart their retention for the other sessions in them".into(),
        );
    }

    // 2. DLQ copies (listed now, deleted below).
    let mut dlq_found = Vec::new();
    for q in [DlqName::Ingest, DlqName::Delivery] {
        let role = match q {
            DlqName::Ingest => QueueRole::IngestDlq,
            DlqName::Delivery => QueueRole::DeliveryDlq,
        };
        if ctx.res.queue(role).is_err() {
            continue;
        }
        let p = pass(
            ctx,
            &Filter::session(q, provider, session),
            None,
            None,
            Action::Keep,
            "reading the DLQ",
        )
        .await?;
        if !p.unreadable.is_empty() {
            // Never skipped silently: they may hold the session's webhook in a form no filter reads.
            warnings.push(format!(
                "{} message(s) in the {} DLQ are neither a delivery job nor an envelope and were not checked for this session (`kyc-relay dlq show --queue {} ID --body` to inspect): {}",
                p.unreadable.len(),
                q.as_str(),
                q.as_str(),
                p.unreadable.join(", ")
            ));
        }
        dlq_found.push((q, p.matched.len()));
    }
    let dlq_n: usize = dlq_found.iter().map(|(_, n)| n).sum();
    let items: usize = events.iter().map(|e| 1 + e.deliveries.len()).sum();

    if events.is_empty() && lines == 0 && dlq_n == 0 {
        return Err(CliError::not_found(format!(
            "nothing of {provider} session {session:?} found: no records{}, no DLQ message (nothing erased)",
            if since.is_some() {
                ", no archived line in the hours searched"
            } else {
                " (pass --since/--until to search the archive for copies older than the records)"
            }
        )));
    }
    // A keyed subject, or none: an unkeyed hash of a short or guessable session id is reversed by
    // enumeration.
    let subject = match &a.audit_key_ssm {
        Some(name) => {
            let key = ctx.secret(name).await?;
            Some(keyed_hex(
                key.as_bytes(),
                &[provider.as_str().as_bytes(), session.as_bytes()],
            ))
        }
        None => None,
    };
    let summary = format!(
        "{} event(s) ({} record item(s)), {lines} archive line(s) in {} object(s) ({} to delete, {} to rewrite), {dlq_n} DLQ message(s)",
        events.len(),
        items,
        plan.len(),
        plan.iter().filter(|p| p.2).count(),
        plan.iter().filter(|p| !p.2).count(),
    );
    if !ctx.ui.json {
        for w in &warnings {
            eprintln!("kyc-relay: warning: {w}");
        }
    }
    if a.dry_run {
        if ctx.ui.json {
            ctx.json(json!({
                "dry_run": true, "subject": subject, "events": events.len(), "record_items": items,
                "archive_lines": lines, "archive_objects": plan.iter().map(|p| json!({"object": p.0, "lines": p.1, "delete": p.2})).collect::<Vec<_>>(),
                "dlq_messages": dlq_n, "warnings": warnings,
            }));
        } else {
            println!("dry run: erasing {provider} session {session} would remove {summary}");
        }
        return Ok(());
    }
    ctx.ui
        .confirm(&format!("Erase {provider} session {session}: {summary}?"))?;

    // 1. Archive.
    let (mut rewritten, mut deleted, mut removed_lines) = (0u64, 0u64, 0u64);
    if let Some(store) = &archive {
        let bar = ctx.ui.bar(Some(plan.len() as u64), "erasing archive lines");
        for (object, _, _) in &plan {
            bar.inc(1);
            // Read again and rewrite (or delete) only if the object is still what was read
            // (`If-Match`): another erasure of another session in the same object, at the same time,
            // makes this write fail, and the object is read again with that erasure's result.
            let mut tries = 0;
            loop {
                tries += 1;
                let Some(current) = store.get_tagged(object).await? else {
                    break;
                };
                let (kept, removed, _) = without_session(&current.body, provider, session);
                if removed == 0 {
                    break;
                }
                let emptied = kept.is_empty();
                // The rewrite keeps the object's expiry for the other sessions in it (S3 would
                // count its retention again from now).
                let keep = match (archived_at_ms(object), ctx.res.archive_retention_days) {
                    (Some(at), Some(days)) if !emptied => Some(keep_days(at, now, days)),
                    _ => None,
                };
                if store.replace_if(object, kept, &current.tag, keep).await? {
                    if emptied {
                        deleted += 1;
                    } else {
                        rewritten += 1;
                    }
                    removed_lines += removed as u64;
                    break;
                }
                if tries >= 10 {
                    return Err(CliError::failed(format!(
                        "archive object {object} kept changing during the erasure; run erase again"
                    )));
                }
            }
        }
        bar.finish_and_clear();
    }
    // 2. DLQs.
    let mut dlq_deleted = 0u64;
    for (q, n) in &dlq_found {
        if *n == 0 {
            continue;
        }
        let p = pass(
            ctx,
            &Filter::session(*q, provider, session),
            None,
            None,
            Action::Delete,
            "erasing DLQ messages",
        )
        .await?;
        dlq_deleted += p.moved.len() as u64;
        if !p.failed.is_empty() {
            return Err(CliError::failed(format!(
                "{} DLQ message(s) of the session could not be deleted; run erase again",
                p.failed.len()
            )));
        }
    }
    // 3. Records.
    let record_items = records.erase_partition(&pk, ctx.now_ms()).await? as u64;
    // 4. The audit item.
    let counts = [
        ("events", events.len() as u64),
        ("record_items", record_items),
        ("archive_lines", removed_lines),
        ("objects_rewritten", rewritten),
        ("objects_deleted", deleted),
        ("dlq_messages", dlq_deleted),
    ];
    let by = ctx.caller().await;
    let sk = write_audit(
        &ctx.ddb(),
        ctx.res.table()?,
        &AuditEntry {
            at_ms: now,
            subject: subject.as_deref(),
            by: &by,
            provider,
            counts: &counts,
        },
    )
    .await?;
    if ctx.ui.json {
        let mut doc = json!({
            "dry_run": false, "subject": subject, "by": by, "audit": {"pk": AUDIT_PK, "sk": sk}, "warnings": warnings,
        });
        for (k, v) in counts {
            doc[k] = json!(v);
        }
        ctx.json(doc);
    } else {
        println!(
            "erased {provider} session {session}: {record_items} record item(s), {removed_lines} archive line(s) ({rewritten} object(s) rewritten, {deleted} deleted), {dlq_deleted} DLQ message(s)"
        );
        println!(
            "logged as {AUDIT_PK} / {sk} by {by} ({})",
            if subject.is_some() {
                "subject = HMAC-SHA-256 of provider and session id under the audit key"
            } else {
                "no subject: pass --audit-key-ssm to record a keyed one"
            }
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_sessions_lines_go_and_the_others_stay_byte_for_byte() {
        let a = br#"{"provider":"idnow","session_id":"s1","x":1}"#;
        let b = br#"{"provider":"idnow", "session_id":"s2","raw_body":"{\"a\": 1}"}"#;
        let c = br#"{"provider":"incode","session_id":"s1"}"#;
        let body = [&a[..], b"\n", b, b"\n", c, b"\nnot json\n"].concat();
        let (kept, removed, bad) = without_session(&body, Provider::Idnow, "s1");
        assert_eq!((removed, bad), (1, 1));
        assert_eq!(kept, [&b[..], b"\n", c, b"\nnot json\n"].concat());
        let (kept, removed, _) = without_session(&[&a[..], b"\n"].concat(), Provider::Idnow, "s1");
        assert_eq!((kept.len(), removed), (0, 1));
    }
}
