//! `resources`: what `--stack` or the env file resolved to.

use crate::ctx::Ctx;
use crate::error::Result;
use crate::ui::Table;
use serde_json::json;

pub fn run(ctx: &Ctx) -> Result<()> {
    let r = &ctx.res;
    let document = ctx.document_source();
    if ctx.ui.json {
        ctx.json(json!({
            "source": r.source,
            "stack": r.stack,
            "region": ctx.sdk.region().map(|r| r.to_string()),
            "endpoint": ctx.sdk.endpoint_url(),
            "queues": r.queues,
            "records_table": r.records_table,
            "archive_bucket": r.archive_bucket,
            "alarms": r.alarms,
            "dashboard": r.dashboard,
            "destinations_document": document,
            "record_ttl_secs": r.record_ttl_secs,
            "outputs": r.outputs,
        }));
        return Ok(());
    }
    println!("source    {}", r.source);
    if let Some(region) = ctx.sdk.region() {
        println!("region    {region}");
    }
    if let Some(endpoint) = ctx.sdk.endpoint_url() {
        println!("endpoint  {endpoint}");
    }
    println!();
    let mut t = Table::new(&["RESOURCE", "NAME"]);
    for (name, url) in &r.queues {
        t.row(vec![format!("queue {name}"), url.clone()]);
    }
    let or_none = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    t.row(vec!["records table".into(), or_none(&r.records_table)]);
    t.row(vec!["archive bucket".into(), or_none(&r.archive_bucket)]);
    t.row(vec!["dashboard".into(), or_none(&r.dashboard)]);
    t.row(vec![
        "destinations document".into(),
        match &document {
            Some(crate::target::DocumentSource::Ssm(n)) => format!("ssm:{n}"),
            Some(crate::target::DocumentSource::File(p)) => p.display().to_string(),
            None => "-".into(),
        },
    ]);
    t.row(vec!["alarms".into(), r.alarms.len().to_string()]);
    t.print();
    for a in &r.alarms {
        println!("  {a}");
    }
    Ok(())
}
