//! CloudWatch: the queues' `ApproximateAgeOfOldestMessage` (SQS publishes it once a minute; locally
//! nothing does) and the stack's alarms in ALARM.

use crate::error::{CliError, Result};
use aws_sdk_cloudwatch::Client;
use aws_sdk_cloudwatch::config::http::HttpResponse;
use aws_sdk_cloudwatch::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_cloudwatch::primitives::DateTime;
use aws_sdk_cloudwatch::types::{Dimension, Metric, MetricDataQuery, MetricStat, StateValue};
use std::collections::BTreeMap;

/// The latest `ApproximateAgeOfOldestMessage` (seconds) of each queue over the last 15 minutes,
/// by queue name; a queue without a datapoint is absent.
pub async fn oldest_ages(
    sdk_config: &aws_config::SdkConfig,
    queue_names: &[&str],
    now_ms: u64,
) -> Result<BTreeMap<String, u64>> {
    let cw = Client::new(sdk_config);
    let mut request = cw
        .get_metric_data()
        .start_time(DateTime::from_millis((now_ms - 15 * 60_000) as i64))
        .end_time(DateTime::from_millis(now_ms as i64));
    for (i, name) in queue_names.iter().enumerate() {
        request = request.metric_data_queries(
            MetricDataQuery::builder()
                .id(format!("q{i}"))
                .return_data(true)
                .metric_stat(
                    MetricStat::builder()
                        .metric(
                            Metric::builder()
                                .namespace("AWS/SQS")
                                .metric_name("ApproximateAgeOfOldestMessage")
                                .dimensions(
                                    Dimension::builder().name("QueueName").value(*name).build(),
                                )
                                .build(),
                        )
                        .period(60)
                        .stat("Maximum")
                        .build(),
                )
                .build(),
        );
    }
    let out = request
        .send()
        .await
        .map_err(|e| brief("CloudWatch GetMetricData", e))?;
    let mut ages = BTreeMap::new();
    for result in out.metric_data_results() {
        let Some(i) = result
            .id()
            .and_then(|id| id.strip_prefix('q'))
            .and_then(|i| i.parse::<usize>().ok())
            .filter(|i| *i < queue_names.len())
        else {
            continue;
        };
        // The newest datapoint (results come newest first by default; do not rely on it).
        let latest = result
            .timestamps()
            .iter()
            .zip(result.values())
            .max_by_key(|(t, _)| t.to_millis().unwrap_or(0));
        if let Some((_, v)) = latest {
            ages.insert(queue_names[i].to_string(), v.max(0.0) as u64);
        }
    }
    Ok(ages)
}

/// An alarm in ALARM.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FiringAlarm {
    pub name: String,
    pub reason: String,
    pub since_ms: Option<u64>,
}

impl FiringAlarm {
    /// Metric and composite alarms are different SDK types with the same three fields.
    fn new(name: Option<&str>, reason: Option<&str>, since: Option<&DateTime>) -> Self {
        Self {
            name: name.unwrap_or_default().to_string(),
            reason: reason.unwrap_or_default().to_string(),
            since_ms: since
                .and_then(|t| t.to_millis().ok())
                .map(|t| t.max(0) as u64),
        }
    }
}

/// Which of these alarms are in ALARM.
pub async fn firing(
    sdk_config: &aws_config::SdkConfig,
    names: &[String],
) -> Result<Vec<FiringAlarm>> {
    let cw = Client::new(sdk_config);
    let mut firing = Vec::new();
    // DescribeAlarms takes at most 100 names per call.
    for chunk in names.chunks(100) {
        let mut request = cw.describe_alarms().state_value(StateValue::Alarm);
        for n in chunk {
            request = request.alarm_names(n);
        }
        let out = request
            .send()
            .await
            .map_err(|e| brief("CloudWatch DescribeAlarms", e))?;
        for a in out.metric_alarms() {
            firing.push(FiringAlarm::new(
                a.alarm_name(),
                a.state_reason(),
                a.state_updated_timestamp(),
            ));
        }
        for a in out.composite_alarms() {
            firing.push(FiringAlarm::new(
                a.alarm_name(),
                a.state_reason(),
                a.state_updated_timestamp(),
            ));
        }
    }
    firing.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(firing)
}

/// A one-line reason: `status` shows it as a note (ages and alarms are optional there), and an
/// emulator that does not serve CloudWatch answers with a whole HTML page.
fn brief<E>(what: &str, e: SdkError<E, HttpResponse>) -> CliError
where
    E: ProvideErrorMetadata + std::error::Error,
{
    let status = e.raw_response().map(|r| r.status().as_u16());
    let detail = match (e.code(), e.message(), status) {
        (Some(c), Some(m), _) => format!("{c}: {m}"),
        (Some(c), None, _) => c.to_string(),
        (None, _, Some(s)) => format!("HTTP {s} (not served at this endpoint?)"),
        _ => e.to_string(),
    };
    CliError::failed(format!("{what}: {detail}"))
}
