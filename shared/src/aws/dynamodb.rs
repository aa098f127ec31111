//! DynamoDB adapters for the idempotency and session ports.
//!
//! Events table item (key `pk` = `{provider}#{event_id}`), kept under 1 KB so each write costs one
//! write unit:
//!
//! ```text
//! pk, payload_hash, claimed_by (SQS message id), created_at (ms), expires_at (s, TTL attribute),
//! lease_until (ms),
//! deliveries: { <destination id>: { status, attempts, last_attempt_at, last_outcome,
//!                                   last_status_code, latency_ms } }
//! ```
//!
//! Sessions table item (key `pk` = `{provider}#{session_id}`): `status`, `status_rank`, `event_id`
//! (the event that set it), `first_seen_at`, `updated_at` (ms), `expires_at` (s, TTL).

use crate::idempotency::{
    AttemptUpdate, ClaimResult, DeliveryRecord, DeliveryStatus, EventClaim, EventStore,
    ExistingRecord, SessionStore, SessionUpdate, StoreError,
};
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{DisplayErrorContext, SdkError};
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValuesOnConditionCheckFailure};
use std::collections::HashMap;

type Item = HashMap<String, AttributeValue>;

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn get_n(item: &Item, key: &str) -> Option<u64> {
    item.get(key)?.as_n().ok()?.parse().ok()
}

fn get_s<'a>(item: &'a Item, key: &str) -> Option<&'a str> {
    item.get(key)?.as_s().ok().map(String::as_str)
}

fn store_error<
    E: std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
>(
    e: SdkError<E, R>,
) -> StoreError {
    StoreError(DisplayErrorContext(e).to_string())
}

/// An update whose condition failed was not applied; that is an answer, not an error.
fn applied<T>(
    result: Result<
        T,
        SdkError<
            aws_sdk_dynamodb::operation::update_item::UpdateItemError,
            aws_sdk_dynamodb::config::http::HttpResponse,
        >,
    >,
) -> Result<bool, StoreError> {
    match result {
        Ok(_) => Ok(true),
        Err(e)
            if e.as_service_error()
                .is_some_and(|se| se.is_conditional_check_failed_exception()) =>
        {
            Ok(false)
        }
        Err(e) => Err(store_error(e)),
    }
}

#[derive(Clone)]
pub struct DynamoEventStore {
    client: Client,
    table: String,
}

impl DynamoEventStore {
    pub fn new(aws: &aws_config::SdkConfig, table: impl Into<String>) -> Self {
        Self::from_client(Client::new(aws), table)
    }

    pub fn from_client(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }
}

fn delivery_from(entry: &AttributeValue) -> Option<DeliveryRecord> {
    let m = entry.as_m().ok()?;
    Some(DeliveryRecord {
        status: DeliveryStatus::parse(get_s(m, "status")?)?,
        attempts: get_n(m, "attempts").unwrap_or(0) as u32,
    })
}

impl EventStore for DynamoEventStore {
    async fn claim(&self, claim: &EventClaim<'_>) -> Result<ClaimResult, StoreError> {
        let deliveries: Item = claim
            .destinations
            .iter()
            .map(|d| {
                (
                    d.clone(),
                    AttributeValue::M(HashMap::from([(
                        "status".to_string(),
                        s(DeliveryStatus::Pending.as_str()),
                    )])),
                )
            })
            .collect();
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(claim.key))
            .item("payload_hash", s(claim.payload_hash))
            .item("claimed_by", s(claim.message_id))
            .item("created_at", n(claim.now_ms))
            .item("expires_at", n(claim.expires_at_secs))
            .item("lease_until", n(claim.lease_until_ms))
            .item("deliveries", AttributeValue::M(deliveries))
            // Correctness never waits for TTL's late deletion: an expired record is claimable.
            .condition_expression("attribute_not_exists(pk) OR expires_at < :now")
            .expression_attribute_values(":now", n(claim.now_ms / 1000))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        let err = match result {
            Ok(_) => return Ok(ClaimResult::Claimed),
            Err(e) => e,
        };
        let old = match err.as_service_error() {
            Some(se) if se.is_conditional_check_failed_exception() => {
                let aws_sdk_dynamodb::operation::put_item::PutItemError::ConditionalCheckFailedException(c) = se
                else {
                    unreachable!("checked above")
                };
                // Without the old item the outcome cannot be decided: retry rather than guess.
                c.item().cloned().ok_or_else(|| {
                    StoreError("conditional check failed without the existing item".into())
                })?
            }
            _ => return Err(store_error(err)),
        };
        let mut pending: Vec<String> = old
            .get("deliveries")
            .and_then(|d| d.as_m().ok())
            .map(|m| {
                m.iter()
                    .filter(|(_, v)| {
                        delivery_from(v).is_some_and(|r| r.status == DeliveryStatus::Pending)
                    })
                    .map(|(k, _)| k.clone())
                    .collect()
            })
            .unwrap_or_default();
        pending.sort();
        Ok(ClaimResult::Existing(ExistingRecord {
            payload_hash: get_s(&old, "payload_hash").unwrap_or_default().to_string(),
            claimed_by: get_s(&old, "claimed_by").unwrap_or_default().to_string(),
            created_at_ms: get_n(&old, "created_at").unwrap_or(0),
            lease_until_ms: get_n(&old, "lease_until").unwrap_or(0),
            pending,
        }))
    }

    async fn delivery(
        &self,
        key: &str,
        destination: &str,
    ) -> Result<Option<DeliveryRecord>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(key))
            .consistent_read(true)
            .projection_expression("deliveries.#d")
            .expression_attribute_names("#d", destination)
            .send()
            .await
            .map_err(store_error)?;
        Ok(out
            .item()
            .and_then(|i| i.get("deliveries"))
            .and_then(|d| d.as_m().ok())
            .and_then(|m| m.get(destination))
            .and_then(delivery_from))
    }

    async fn record_attempt(
        &self,
        key: &str,
        destination: &str,
        u: &AttemptUpdate,
    ) -> Result<bool, StoreError> {
        let mut set = vec![
            "deliveries.#d.#status = :status",
            "deliveries.#d.attempts = :attempt",
            "deliveries.#d.last_attempt_at = :at",
            "deliveries.#d.last_outcome = :outcome",
            "deliveries.#d.latency_ms = :latency",
        ];
        let mut request = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(key))
            .expression_attribute_names("#d", destination)
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":status", s(u.status.as_str()))
            .expression_attribute_values(":attempt", n(u.attempt))
            .expression_attribute_values(":at", n(u.at_ms))
            .expression_attribute_values(":outcome", s(&u.outcome))
            .expression_attribute_values(":latency", n(u.latency_ms))
            .expression_attribute_values(":pending", s(DeliveryStatus::Pending.as_str()))
            .expression_attribute_values(":retrying", s(DeliveryStatus::Retrying.as_str()));
        if let Some(code) = u.status_code {
            set.push("deliveries.#d.last_status_code = :code");
            request = request.expression_attribute_values(":code", n(code));
        }
        let movable = if u.redrive {
            request =
                request.expression_attribute_values(":failed", s(DeliveryStatus::Failed.as_str()));
            "deliveries.#d.#status IN (:pending, :retrying, :failed)"
        } else {
            "deliveries.#d.#status IN (:pending, :retrying)"
        };
        let result = request
            .update_expression(format!("SET {}", set.join(", ")))
            .condition_expression(format!(
                "attribute_exists(deliveries.#d) AND {movable} AND (attribute_not_exists(deliveries.#d.attempts) OR deliveries.#d.attempts < :attempt)"
            ))
            .send()
            .await;
        applied(result)
    }
}

#[derive(Clone)]
pub struct DynamoSessionStore {
    client: Client,
    table: String,
}

impl DynamoSessionStore {
    pub fn new(aws: &aws_config::SdkConfig, table: impl Into<String>) -> Self {
        Self::from_client(Client::new(aws), table)
    }

    pub fn from_client(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }
}

impl SessionStore for DynamoSessionStore {
    async fn advance(&self, u: &SessionUpdate<'_>) -> Result<bool, StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(format!("{}#{}", u.provider, u.session_id)))
            .update_expression(
                "SET #status = :status, status_rank = :rank, event_id = :event, updated_at = :at, \
                 first_seen_at = if_not_exists(first_seen_at, :at), expires_at = :exp",
            )
            // Forward only. The same event again fails the condition and changes nothing, so a
            // repair or duplicate may re-apply it freely; of two events of equal rank (two terminal
            // statuses), the first recorded stays.
            .condition_expression("attribute_not_exists(pk) OR status_rank < :rank")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":status", s(u.status))
            .expression_attribute_values(":rank", n(u.rank))
            .expression_attribute_values(":event", s(u.event_id))
            .expression_attribute_values(":at", n(u.at_ms))
            .expression_attribute_values(":exp", n(u.expires_at_secs))
            .send()
            .await;
        applied(result)
    }
}
