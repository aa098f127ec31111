//! DynamoDB calls of the tool beside the library's record ports: finding an event whose session is
//! not known (a Scan), and the erasure audit item.

use crate::error::{Result, sdk};
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;
use indicatif::ProgressBar;
use kyc_relay::provider::Provider;
use kyc_relay::records::event_sk;
use std::collections::HashMap;

/// Partitions holding an event item with this id under a session of this provider.
///
/// Records are keyed by session, so without the session this reads the whole table: a paginated
/// Scan filtered on the sort key, projecting only the key. DynamoDB bills a Scan by the data it
/// reads, not what it returns: about one read request unit per 8 KB (eventually consistent), so a
/// table of 1 GB costs about 130 000 read units (a few cents on demand) and takes a minute or more.
pub async fn find_event_partitions(
    client: &Client,
    table: &str,
    provider: Provider,
    event_id: &str,
    bar: &ProgressBar,
) -> Result<Vec<String>> {
    let mut found = Vec::new();
    let mut start: Option<HashMap<String, AttributeValue>> = None;
    let mut scanned: u64 = 0;
    loop {
        let out = client
            .scan()
            .table_name(table)
            .filter_expression("#sk = :sk AND begins_with(#pk, :p)")
            .projection_expression("#pk")
            .expression_attribute_names("#pk", "pk")
            .expression_attribute_names("#sk", "sk")
            .expression_attribute_values(":sk", AttributeValue::S(event_sk(event_id)))
            .expression_attribute_values(":p", AttributeValue::S(format!("s#{provider}#")))
            .set_exclusive_start_key(start.take())
            .send()
            .await
            .map_err(|e| sdk("scan the records table", e))?;
        scanned += out.scanned_count().max(0) as u64;
        bar.set_position(scanned);
        found.extend(
            out.items()
                .iter()
                .filter_map(|i| i.get("pk")?.as_s().ok().cloned()),
        );
        match out.last_evaluated_key() {
            Some(k) if !k.is_empty() => start = Some(k.clone()),
            _ => return Ok(found),
        }
    }
}

/// The partition of erasure audit items. They never expire (no `expires_at`) and hold no personal
/// data: what was erased (counts per store), when, by whom (the caller's AWS identity), and a
/// subject only when an audit key is configured (HMAC-SHA-256 under it, which enumeration of
/// guessable session ids cannot reverse without the key).
pub const AUDIT_PK: &str = "audit#erasure";

pub struct AuditEntry<'a> {
    pub at_ms: u64,
    pub subject: Option<&'a str>,
    /// The caller's ARN (STS GetCallerIdentity).
    pub by: &'a str,
    pub provider: Provider,
    pub counts: &'a [(&'static str, u64)],
}

/// Writes the audit item; returns its sort key (`{rfc3339}#{subject or a random id}`).
pub async fn write_audit(client: &Client, table: &str, e: &AuditEntry<'_>) -> Result<String> {
    let sk = format!(
        "{}#{}",
        kyc_relay::archive::Utc::rfc3339(e.at_ms),
        e.subject
            .map(str::to_string)
            .unwrap_or_else(|| format!("erasure-{:016x}", fastrand::u64(..)))
    );
    let mut request = client
        .put_item()
        .table_name(table)
        .item("pk", AttributeValue::S(AUDIT_PK.into()))
        .item("sk", AttributeValue::S(sk.clone()))
        .item("by", AttributeValue::S(e.by.into()))
        .item("provider", AttributeValue::S(e.provider.as_str().into()))
        .item("at", AttributeValue::N(e.at_ms.to_string()));
    if let Some(subject) = e.subject {
        request = request.item("subject", AttributeValue::S(subject.into()));
    }
    for (name, n) in e.counts {
        request = request.item(*name, AttributeValue::N(n.to_string()));
    }
    request
        .send()
        .await
        .map_err(|err| sdk("write the erasure audit item", err))?;
    Ok(sk)
}
