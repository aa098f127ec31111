//! Where the relay is: the resources of a CloudFormation stack, or those named in an env file (the
//! local pipeline's `.local/aws.env`). Env file variables are the template's logical IDs in snake
//! case, as `scripts/local_aws.py` writes them: `IngestQueue` -> `INGEST_QUEUE_URL`,
//! `RecordsTable` -> `RECORDS_TABLE`, `ArchiveBucket` -> `ARCHIVE_BUCKET`.

use crate::error::{CliError, Result};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The five queues, by their role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueRole {
    Ingest,
    Delivery,
    Retry,
    IngestDlq,
    DeliveryDlq,
}

impl QueueRole {
    pub const ALL: [QueueRole; 5] = [
        QueueRole::Ingest,
        QueueRole::Delivery,
        QueueRole::Retry,
        QueueRole::IngestDlq,
        QueueRole::DeliveryDlq,
    ];

    /// The name in output (`status`, JSON).
    pub fn name(self) -> &'static str {
        match self {
            QueueRole::Ingest => "ingest",
            QueueRole::Delivery => "delivery",
            QueueRole::Retry => "retry",
            QueueRole::IngestDlq => "ingest_dlq",
            QueueRole::DeliveryDlq => "delivery_dlq",
        }
    }

    pub fn logical_id(self) -> &'static str {
        match self {
            QueueRole::Ingest => "IngestQueue",
            QueueRole::Delivery => "DeliveryQueue",
            QueueRole::Retry => "RetryQueue",
            QueueRole::IngestDlq => "IngestDLQ",
            QueueRole::DeliveryDlq => "DeliveryDLQ",
        }
    }

    pub fn env_var(self) -> &'static str {
        match self {
            QueueRole::Ingest => "INGEST_QUEUE_URL",
            QueueRole::Delivery => "DELIVERY_QUEUE_URL",
            QueueRole::Retry => "RETRY_QUEUE_URL",
            QueueRole::IngestDlq => "INGEST_DLQ_URL",
            QueueRole::DeliveryDlq => "DELIVERY_DLQ_URL",
        }
    }

    pub fn is_dlq(self) -> bool {
        matches!(self, QueueRole::IngestDlq | QueueRole::DeliveryDlq)
    }
}

/// Where the destinations document comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DocumentSource {
    Ssm(String),
    File(PathBuf),
}

/// What was found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Resources {
    /// `stack:NAME` or `env-file:PATH`.
    pub source: String,
    pub stack: Option<String>,
    pub queues: BTreeMap<&'static str, String>,
    pub records_table: Option<String>,
    pub archive_bucket: Option<String>,
    /// Alarm names of the stack (none for an env file).
    pub alarms: Vec<String>,
    pub dashboard: Option<String>,
    pub destinations: Option<DocumentSource>,
    /// The stack's `RecordTtlSeconds` (the lifetime of a replay's marker when the event's own
    /// record has expired).
    pub record_ttl_secs: Option<u64>,
    /// The stack's `ArchiveRetentionDays` (`ARCHIVE_RETENTION_DAYS` in an env file): an erasure's
    /// rewrite keeps each object's expiry with it.
    pub archive_retention_days: Option<u64>,
    pub outputs: BTreeMap<String, String>,
}

impl Resources {
    pub fn queue(&self, role: QueueRole) -> Result<&str> {
        self.queues
            .get(role.name())
            .map(String::as_str)
            .ok_or_else(|| self.missing(role.logical_id(), role.env_var()))
    }

    pub fn table(&self) -> Result<&str> {
        self.records_table
            .as_deref()
            .ok_or_else(|| self.missing("RecordsTable", "RECORDS_TABLE"))
    }

    pub fn bucket(&self) -> Result<&str> {
        self.archive_bucket.as_deref().ok_or_else(|| {
            CliError::usage(format!(
                "{}: no archive bucket (ArchiveBucket / ARCHIVE_BUCKET): is ArchiveEnabled false?",
                self.source
            ))
        })
    }

    fn missing(&self, logical_id: &str, var: &str) -> CliError {
        if self.stack.is_some() {
            CliError::usage(format!("{}: the stack has no {logical_id}", self.source))
        } else {
            CliError::usage(format!("{}: {var} is not set", self.source))
        }
    }

    /// Resources named in an env file.
    pub fn from_env_file(path: &Path, vars: &BTreeMap<String, String>) -> Self {
        let mut r = Resources {
            source: format!("env-file:{}", path.display()),
            ..Default::default()
        };
        for role in QueueRole::ALL {
            if let Some(url) = vars.get(role.env_var()) {
                r.queues.insert(role.name(), url.clone());
            }
        }
        r.records_table = vars.get("RECORDS_TABLE").cloned();
        r.archive_bucket = vars.get("ARCHIVE_BUCKET").cloned();
        r.dashboard = vars.get("DASHBOARD").cloned();
        r.record_ttl_secs = vars.get("RECORD_TTL_SECONDS").and_then(|v| v.parse().ok());
        r.archive_retention_days = vars
            .get("ARCHIVE_RETENTION_DAYS")
            .and_then(|v| v.parse().ok());
        // The functions' own way of naming the document, if the file carries it.
        r.destinations = match (
            vars.get("DESTINATIONS_CONFIG_FILE"),
            vars.get("DESTINATIONS_CONFIG_SSM"),
        ) {
            (Some(f), _) => Some(DocumentSource::File(PathBuf::from(f))),
            (None, Some(name)) => Some(DocumentSource::Ssm(name.clone())),
            _ => None,
        };
        r
    }

    /// Resources of a stack: its resources by logical ID (physical ids: queue URL, table, bucket,
    /// alarm and dashboard names), else its outputs; the document's SSM name and the records'
    /// lifetime from its parameters.
    pub fn from_stack(stack: &crate::aws::Stack) -> Self {
        let mut r = Resources {
            source: format!("stack:{}", stack.name),
            stack: Some(stack.name.clone()),
            outputs: stack.outputs.clone(),
            ..Default::default()
        };
        let physical = |lid: &str| stack.resources.get(lid).map(|(_, id)| id.clone());
        let output = |key: &str| stack.outputs.get(key).cloned();
        for role in QueueRole::ALL {
            let url = physical(role.logical_id())
                .filter(|u| u.contains("://"))
                .or_else(|| output(&format!("{}Url", role.logical_id())));
            if let Some(url) = url {
                r.queues.insert(role.name(), url);
            }
        }
        r.records_table = physical("RecordsTable").or_else(|| output("RecordsTableName"));
        r.archive_bucket = physical("ArchiveBucket").or_else(|| output("ArchiveBucketName"));
        r.dashboard = physical("Dashboard");
        r.alarms = stack
            .resources
            .values()
            .filter(|(t, _)| t == "AWS::CloudWatch::Alarm")
            .map(|(_, id)| id.clone())
            .collect();
        r.alarms.sort();
        r.destinations = stack
            .parameters
            .get("DestinationsConfigParameter")
            .map(|p| DocumentSource::Ssm(p.clone()));
        r.record_ttl_secs = stack
            .parameters
            .get("RecordTtlSeconds")
            .and_then(|v| v.parse().ok());
        r.archive_retention_days = stack
            .parameters
            .get("ArchiveRetentionDays")
            .and_then(|v| v.parse().ok());
        r
    }
}

/// Reads `VAR=value` lines (with or without `export `, values optionally quoted as a shell writes
/// them). Comments and blank lines are skipped; a line that is not an assignment is an error.
pub fn read_env_file(path: &Path) -> Result<BTreeMap<String, String>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        CliError::usage(format!(
            "cannot read {}: {e}{}",
            path.display(),
            if path.ends_with(".local/aws.env") {
                " (start the local pipeline first: scripts/run-local.sh --background)"
            } else {
                ""
            }
        ))
    })?;
    parse_env(&text)
        .map_err(|(line, why)| CliError::usage(format!("{}, line {line}: {why}", path.display())))
}

pub fn parse_env(text: &str) -> Result<BTreeMap<String, String>, (usize, String)> {
    let mut vars = BTreeMap::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((key, value)) = line.split_once('=') else {
            return Err((i + 1, "expected VAR=value".into()));
        };
        let key = key.trim();
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err((i + 1, format!("{key:?} is not a variable name")));
        }
        vars.insert(key.to_string(), unquote(value.trim()));
    }
    Ok(vars)
}

/// Undoes shell quoting as `shlex.quote` writes it: `'it'"'"'s'` -> `it's`.
fn unquote(v: &str) -> String {
    let mut out = String::new();
    let mut chars = v.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => out.extend(chars.by_ref().take_while(|c| *c != '\'')),
            '"' => out.extend(chars.by_ref().take_while(|c| *c != '"')),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_files_as_the_scripts_write_them() {
        let vars = parse_env(
            "# comment\nexport INGEST_QUEUE_URL='http://127.0.0.1:5000/1/q'\nRECORDS_TABLE=t-records\n\nX='it'\"'\"'s'\n",
        )
        .unwrap();
        assert_eq!(vars["INGEST_QUEUE_URL"], "http://127.0.0.1:5000/1/q");
        assert_eq!(vars["RECORDS_TABLE"], "t-records");
        assert_eq!(vars["X"], "it's");
        assert_eq!(parse_env("a b\n").unwrap_err().0, 1);
        let r = Resources::from_env_file(Path::new(".local/aws.env"), &vars);
        assert_eq!(
            r.queue(QueueRole::Ingest).unwrap(),
            "http://127.0.0.1:5000/1/q"
        );
        let err = r.queue(QueueRole::Retry).unwrap_err();
        assert!(err.message.contains("RETRY_QUEUE_URL is not set"), "{err}");
    }
}
