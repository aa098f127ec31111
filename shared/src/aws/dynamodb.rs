//! DynamoDB adapter of the records ports (`crate::records`): one table, key `pk` + `sk`, TTL on
//! `expires_at`. Items (attribute names kept short: every byte counts towards the 1 KB of a write
//! unit):
//!
//! ```text
//! event     pk, sk, type, status?, rank?, hash, intake, received, claimed, lease, gen, dests (L),
//!           archive (L), expires_at
//! delivery  pk, sk, dest, replay?, status, attempts, last_at, outcome, code?, latency, lag?,
//!           history (L of M {a, t, o, c?, l, y, p?}), token? (replay marker), expires_at
//! dest      pk = "dest", sk = destination id: paused_by?, reason?, since?, probe_at?, failures,
//!           last_failure?, last_failure_at?, slow_until?, updated
//! ```
//!
//! Expired items are ignored when read (TTL deletes them up to days late).

use crate::clock::Clock;
use crate::delivery::AttemptLog;
use crate::records::memory::breaker_reason;
use crate::records::*;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{DisplayErrorContext, SdkError};
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue, ReturnValuesOnConditionCheckFailure};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

type Item = HashMap<String, AttributeValue>;

/// Every attribute an expression names goes through `#name` placeholders: DynamoDB reserves
/// hundreds of words (`status`, `archive`, `token`, ...), and a new attribute must not break an
/// expression by happening to be one.
macro_rules! names {
    ($req:expr, [$($name:literal),* $(,)?]) => {
        $req$(.expression_attribute_names(concat!("#", $name), $name))*
    };
}

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

fn get_list_s(item: &Item, key: &str) -> Vec<String> {
    item.get(key)
        .and_then(|v| v.as_l().ok())
        .map(|l| l.iter().filter_map(|v| v.as_s().ok().cloned()).collect())
        .unwrap_or_default()
}

fn store_error<
    E: std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
>(
    e: SdkError<E, R>,
) -> StoreError {
    StoreError(DisplayErrorContext(e).to_string())
}

fn is_condition_failure<E, R>(e: &SdkError<E, R>) -> bool
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata,
{
    e.as_service_error()
        .and_then(|se| se.code())
        .is_some_and(|c| c == "ConditionalCheckFailedException")
}

/// An update whose condition failed was not applied; that is an answer, not an error.
fn applied<T, E, R>(result: Result<T, SdkError<E, R>>) -> Result<Option<T>, StoreError>
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    match result {
        Ok(out) => Ok(Some(out)),
        Err(e) if is_condition_failure(&e) => Ok(None),
        Err(e) => Err(store_error(e)),
    }
}

#[derive(Clone)]
pub struct DynamoRecords {
    client: Client,
    table: String,
    clock: Arc<dyn Clock>,
}

impl DynamoRecords {
    pub fn new(
        aws: &aws_config::SdkConfig,
        table: impl Into<String>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self::from_client(Client::new(aws), table, clock)
    }

    pub fn from_client(client: Client, table: impl Into<String>, clock: Arc<dyn Clock>) -> Self {
        Self {
            client,
            table: table.into(),
            clock,
        }
    }

    fn live(&self, item: &Item) -> bool {
        get_n(item, "expires_at").is_none_or(|e| e >= self.clock.now_secs())
    }

    /// Every item of a partition whose sort key starts with `prefix` (strongly consistent), expired
    /// ones left out: correctness never waits for TTL's late deletion.
    async fn query(&self, pk: &str, prefix: Option<&str>) -> Result<Vec<Item>, StoreError> {
        let mut items = self.query_all(pk, prefix, &[]).await?;
        items.retain(|i| self.live(i));
        Ok(items)
    }

    /// Every item of a partition whose sort key starts with `prefix` (strongly consistent), expired
    /// ones included, with only the `attributes` named (all when empty).
    async fn query_all(
        &self,
        pk: &str,
        prefix: Option<&str>,
        attributes: &[&str],
    ) -> Result<Vec<Item>, StoreError> {
        let mut items = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let mut q = self
                .client
                .query()
                .table_name(&self.table)
                .consistent_read(true)
                .expression_attribute_values(":pk", s(pk))
                .set_exclusive_start_key(start.take());
            q = match prefix {
                Some(p) => names!(q, ["pk", "sk"])
                    .key_condition_expression("#pk = :pk AND begins_with(#sk, :p)")
                    .expression_attribute_values(":p", s(p)),
                None => names!(q, ["pk"]).key_condition_expression("#pk = :pk"),
            };
            if !attributes.is_empty() {
                for a in attributes {
                    q = q.expression_attribute_names(format!("#{a}"), *a);
                }
                let projection: Vec<String> = attributes.iter().map(|a| format!("#{a}")).collect();
                q = q.projection_expression(projection.join(", "));
            }
            let out = q.send().await.map_err(store_error)?;
            items.extend(out.items().iter().cloned());
            match out.last_evaluated_key() {
                Some(k) if !k.is_empty() => start = Some(k.clone()),
                _ => return Ok(items),
            }
        }
    }
}

/// Whether an item of a partition is an event item (not one of its deliveries).
fn is_event_item(item: &Item) -> bool {
    matches!(
        get_s(item, "sk").and_then(parse_sk),
        Some((_, SortKey::Event))
    )
}

fn event_record(item: &Item) -> Option<EventRecord> {
    if item.contains_key("erased") {
        // An erasure tombstone is not an event.
        return None;
    }
    let pk = get_s(item, "pk")?;
    let sk = get_s(item, "sk")?;
    let (event_id, SortKey::Event) = parse_sk(sk)? else {
        return None;
    };
    Some(EventRecord {
        key: EventKey {
            pk: pk.to_string(),
            sk: sk.to_string(),
        },
        event_id: event_id.to_string(),
        event_type: get_s(item, "type").unwrap_or_default().to_string(),
        status: get_s(item, "status").map(str::to_string),
        rank: get_n(item, "rank").map(|r| r as u16),
        payload_hash: get_s(item, "hash").unwrap_or_default().to_string(),
        intake_id: get_s(item, "intake").unwrap_or_default().to_string(),
        received_at_ms: get_n(item, "received").unwrap_or(0),
        claimed_at_ms: get_n(item, "claimed").unwrap_or(0),
        expires_at_secs: get_n(item, "expires_at").unwrap_or(0),
        generation: get_n(item, "gen").unwrap_or(0) as u32,
        destinations: get_list_s(item, "dests"),
        archive: get_list_s(item, "archive"),
    })
}

fn history_item(h: &AttemptLog) -> AttributeValue {
    let mut m = HashMap::from([
        ("a".to_string(), n(h.attempt)),
        ("t".to_string(), n(h.at_ms)),
        ("o".to_string(), s(&h.outcome)),
        ("l".to_string(), n(h.latency_ms)),
        ("y".to_string(), n(h.cycle)),
    ]);
    if let Some(c) = h.status_code {
        m.insert("c".into(), n(c));
    }
    if h.probe {
        m.insert("p".into(), AttributeValue::Bool(true));
    }
    AttributeValue::M(m)
}

fn history_from(item: &Item) -> Vec<AttemptLog> {
    item.get("history")
        .and_then(|v| v.as_l().ok())
        .map(|l| {
            l.iter()
                .filter_map(|v| {
                    let m = v.as_m().ok()?;
                    Some(AttemptLog {
                        attempt: get_n(m, "a")? as u32,
                        at_ms: get_n(m, "t")?,
                        outcome: get_s(m, "o")?.to_string(),
                        status_code: get_n(m, "c").map(|c| c as u16),
                        latency_ms: get_n(m, "l").unwrap_or(0),
                        cycle: get_n(m, "y").unwrap_or(1) as u32,
                        probe: m
                            .get("p")
                            .and_then(|p| p.as_bool().ok())
                            .copied()
                            .unwrap_or(false),
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

fn delivery_record(item: &Item) -> Option<DeliveryRecord> {
    Some(DeliveryRecord {
        destination: get_s(item, "dest")?.to_string(),
        replay: get_s(item, "replay").map(str::to_string),
        status: DeliveryStatus::parse(get_s(item, "status")?)?,
        attempts: get_n(item, "attempts").unwrap_or(0) as u32,
        last_attempt_at_ms: get_n(item, "last_at").unwrap_or(0),
        last_outcome: get_s(item, "outcome").map(str::to_string),
        last_status_code: get_n(item, "code").map(|c| c as u16),
        lag_ms: get_n(item, "lag"),
        history: history_from(item),
    })
}

impl EventStore for DynamoRecords {
    async fn claim(&self, c: &EventClaim<'_>) -> Result<ClaimResult, StoreError> {
        let mut request = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(&c.key.pk))
            .item("sk", s(&c.key.sk))
            .item("type", s(c.event_type))
            .item("hash", s(c.payload_hash))
            .item("intake", s(c.intake_id))
            .item("received", n(c.received_at_ms))
            .item("claimed", n(c.now_ms))
            .item("lease", n(c.lease_until_ms))
            .item("gen", n(0))
            .item(
                "dests",
                AttributeValue::L(c.destinations.iter().map(s).collect()),
            )
            .item("expires_at", n(c.expires_at_secs));
        if let Some((status, rank)) = c.status {
            request = request.item("status", s(status)).item("rank", n(rank));
        }
        if let Some(object) = c.archive_object {
            request = request.item("archive", AttributeValue::L(vec![s(object)]));
        }
        let result = names!(request, ["pk", "expires_at"])
            // Correctness never waits for TTL's late deletion: an expired record is claimable.
            .condition_expression("attribute_not_exists(#pk) OR #expires_at < :now")
            .expression_attribute_values(":now", n(c.now_ms / 1000))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        let err = match result {
            Ok(_) => return Ok(ClaimResult::Claimed),
            Err(e) => e,
        };
        let old = match err.as_service_error() {
            Some(aws_sdk_dynamodb::operation::put_item::PutItemError::ConditionalCheckFailedException(c)) => {
                // Without the old item the outcome cannot be decided: retry rather than guess.
                c.item().cloned().ok_or_else(|| {
                    StoreError("conditional check failed without the existing item".into())
                })?
            }
            _ => return Err(store_error(err)),
        };
        Ok(ClaimResult::Existing(ExistingRecord {
            payload_hash: get_s(&old, "hash").unwrap_or_default().to_string(),
            intake_id: get_s(&old, "intake").unwrap_or_default().to_string(),
            claimed_at_ms: get_n(&old, "claimed").unwrap_or(0),
            lease_until_ms: get_n(&old, "lease").unwrap_or(0),
            expires_at_secs: get_n(&old, "expires_at").unwrap_or(0),
            generation: get_n(&old, "gen").unwrap_or(0) as u32,
            destinations: get_list_s(&old, "dests"),
            erased: old.contains_key("erased"),
        }))
    }

    async fn take_over(&self, r: &RepairTakeover<'_>) -> Result<Option<u32>, StoreError> {
        let mut request = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(&r.key.pk))
            .key("sk", s(&r.key.sk))
            .expression_attribute_values(":now", n(r.now_ms))
            .expression_attribute_values(":now_s", n(r.now_ms / 1000))
            .expression_attribute_values(":lease", n(r.lease_until_ms))
            .expression_attribute_values(":one", n(1))
            .return_values(ReturnValue::UpdatedNew);
        let mut names = Vec::new();
        for (i, intake) in r.intake_ids.iter().enumerate() {
            let name = format!(":i{i}");
            request = request.expression_attribute_values(&name, s(*intake));
            names.push(name);
        }
        let update = match r.archive_object {
            Some(object) => {
                request = request
                    .expression_attribute_values(":obj", AttributeValue::L(vec![s(object)]))
                    .expression_attribute_values(":empty", AttributeValue::L(vec![]));
                request = names!(request, ["archive"]);
                "SET #lease = :lease, #archive = list_append(if_not_exists(#archive, :empty), :obj) ADD #gen :one"
            }
            None => "SET #lease = :lease ADD #gen :one",
        };
        let result = names!(request, ["lease", "gen", "pk", "expires_at", "intake"])
            .update_expression(update)
            .condition_expression(format!(
                "attribute_exists(#pk) AND #expires_at >= :now_s AND #lease < :now AND #intake IN ({})",
                names.join(", ")
            ))
            .send()
            .await;
        Ok(applied(result)?
            .map(|out| out.attributes().and_then(|a| get_n(a, "gen")).unwrap_or(0) as u32))
    }

    async fn attempted(&self, key: &EventKey) -> Result<Vec<String>, StoreError> {
        let mut out: Vec<String> = self
            .query(&key.pk, Some(&format!("{}#d#", key.sk)))
            .await?
            .iter()
            .filter_map(|i| get_s(i, "dest").map(str::to_string))
            .collect();
        out.sort();
        Ok(out)
    }
}

impl DeliveryStore for DynamoRecords {
    async fn view(&self, key: &DeliveryKey) -> Result<DeliveryView, StoreError> {
        // One query reads the event item and its deliveries (1 read unit while they stay under
        // 4 KB together); the event item tells the generation.
        let items = self.query(&key.pk, Some(&key.event_sk)).await?;
        let mut view = DeliveryView::default();
        for item in &items {
            match get_s(item, "sk") {
                Some(sk) if sk == key.event_sk && item.contains_key("erased") => {
                    view.erased = true;
                }
                Some(sk) if sk == key.event_sk => {
                    view.event_exists = true;
                    view.generation = get_n(item, "gen").unwrap_or(0) as u32;
                }
                Some(sk) if sk == key.sk => {
                    view.delivery =
                        DeliveryStatus::parse(get_s(item, "status").unwrap_or("")).map(|status| {
                            DeliveryState {
                                status,
                                attempts: get_n(item, "attempts").unwrap_or(0) as u32,
                                token: get_s(item, "token").map(str::to_string),
                            }
                        });
                }
                Some(sk) => view.note_replay(&key.sk, sk, get_s(item, "status")),
                None => {}
            }
        }
        Ok(view)
    }

    async fn record_attempt(
        &self,
        key: &DeliveryKey,
        u: &AttemptUpdate,
    ) -> Result<bool, StoreError> {
        let mut set = vec![
            "#dest = :dest",
            "#status = :status",
            "#attempts = :attempt",
            "#last_at = :at",
            "#outcome = :outcome",
            "#latency = :latency",
            "#history = :history",
            "#expires_at = :exp",
        ];
        let request = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(&key.pk))
            .key("sk", s(&key.sk));
        let mut request = names!(
            request,
            [
                "dest",
                "status",
                "attempts",
                "last_at",
                "outcome",
                "latency",
                "history",
                "expires_at",
                "token",
                "code",
                "sk"
            ]
        )
        .expression_attribute_values(":dest", s(&u.destination))
        .expression_attribute_values(":status", s(u.status.as_str()))
        .expression_attribute_values(":attempt", n(u.attempt))
        .expression_attribute_values(":at", n(u.at_ms))
        .expression_attribute_values(":outcome", s(&u.outcome))
        .expression_attribute_values(":latency", n(u.latency_ms))
        .expression_attribute_values(
            ":history",
            AttributeValue::L(u.history.iter().map(history_item).collect()),
        )
        .expression_attribute_values(":exp", n(u.expires_at_secs))
        .expression_attribute_values(":now_s", n(self.clock.now_secs()))
        .expression_attribute_values(":pending", s(DeliveryStatus::Pending.as_str()))
        .expression_attribute_values(":retrying", s(DeliveryStatus::Retrying.as_str()));
        let mut remove = vec!["#token"];
        if let Some(code) = u.status_code {
            set.push("#code = :code");
            request = request.expression_attribute_values(":code", n(code));
        } else {
            remove.push("#code");
        }
        if let Some(lag) = u.lag_ms {
            set.push("#lag = :lag");
            request = names!(request, ["lag"]).expression_attribute_values(":lag", n(lag));
        }
        if let Some(replay) = &u.replay {
            set.push("#replay = :replay");
            request = names!(request, ["replay"]).expression_attribute_values(":replay", s(replay));
        }
        let movable = if u.redrive {
            request =
                request.expression_attribute_values(":failed", s(DeliveryStatus::Failed.as_str()));
            "#status IN (:pending, :retrying, :failed)"
        } else {
            "#status IN (:pending, :retrying)"
        };
        let result = request
            .update_expression(format!("SET {} REMOVE {}", set.join(", "), remove.join(", ")))
            // An expired item (TTL not yet run) counts as absent.
            .condition_expression(format!(
                "attribute_not_exists(#sk) OR #expires_at < :now_s OR ({movable} AND #attempts < :attempt)"
            ))
            .send()
            .await;
        Ok(applied(result)?.is_some())
    }

    async fn mark_replay(
        &self,
        key: &DeliveryKey,
        m: &ReplayMarker<'_>,
    ) -> Result<bool, StoreError> {
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(&key.pk))
            .item("sk", s(&key.sk))
            .item("dest", s(m.destination))
            .item("replay", s(m.replay_id))
            .item("status", s(DeliveryStatus::Pending.as_str()))
            .item("attempts", n(0))
            .item("last_at", n(m.at_ms))
            .item("token", s(m.token))
            .item("expires_at", n(m.expires_at_secs))
            .condition_expression(
                "attribute_not_exists(#sk) OR #attempts = :zero OR #expires_at < :now_s",
            )
            .expression_attribute_names("#sk", "sk")
            .expression_attribute_names("#attempts", "attempts")
            .expression_attribute_names("#expires_at", "expires_at")
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":now_s", n(self.clock.now_secs()))
            .send()
            .await;
        Ok(applied(result)?.is_some())
    }
}

fn destination_state(item: &Item) -> DestinationState {
    let paused = match (
        get_s(item, "paused_by").and_then(PausedBy::parse),
        get_n(item, "since"),
    ) {
        (Some(by), Some(since_ms)) => Some(Pause {
            by,
            reason: get_s(item, "reason").unwrap_or_default().to_string(),
            since_ms,
        }),
        _ => None,
    };
    DestinationState {
        paused,
        failures: get_n(item, "failures").unwrap_or(0) as u32,
        last_failure: get_s(item, "last_failure").map(str::to_string),
        last_failure_at_ms: get_n(item, "last_failure_at").unwrap_or(0),
        slow_until_ms: get_n(item, "slow_until").unwrap_or(0),
        probe_at_ms: get_n(item, "probe_at").unwrap_or(0),
        resumed_at_ms: get_n(item, "resumed").unwrap_or(0),
        updated_at_ms: get_n(item, "updated").unwrap_or(0),
    }
}

impl DynamoRecords {
    /// An update of a destination's state item; `attrs`: the attributes its expressions name
    /// (as `#name`).
    fn destination_update(
        &self,
        destination: &str,
        now_ms: u64,
        attrs: &[&str],
    ) -> aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder {
        let mut req = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(DESTINATIONS_PK))
            .key("sk", s(destination))
            .expression_attribute_values(":now", n(now_ms));
        for a in attrs {
            req = req.expression_attribute_names(format!("#{a}"), *a);
        }
        req
    }
}

/// The rate limiters' items: pk `rate#<destination id>` (one partition each, so one busy
/// destination's writes never share a partition's throughput with another's), sk `rate`, `tat` in
/// µs.
pub const RATES_PK: &str = "rate";

/// Reservations that lose a race retry this often before the error is returned.
const RATE_RACES: usize = 4;

impl crate::rate::RateLimiter for DynamoRecords {
    /// GCRA in two conditional writes at most: while the schedule is running (`tat` at or past the
    /// floor), `ADD tat :interval` returns the new `tat`, and the slot is the old one: one write
    /// unit, no read. When it is idle (or new), `SET tat` starts it at the floor. A lost race
    /// between the two (another instance started it meanwhile) goes round again.
    async fn reserve(
        &self,
        destination: &str,
        now_us: u64,
        limit: crate::rate::RateLimit,
    ) -> Result<u64, StoreError> {
        let interval = limit.interval_us();
        let floor = now_us.saturating_sub(limit.tolerance_us());
        // Idle items go: a day after their last use (TTL, seconds).
        let expires = now_us / 1_000_000 + 86_400;
        let item =
            |req: aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder| {
                req.table_name(&self.table)
                    .key("pk", s(format!("{RATES_PK}#{destination}")))
                    .key("sk", s(RATES_PK))
                    .expression_attribute_names("#tat", "tat")
                    .expression_attribute_names("#expires_at", "expires_at")
                    .expression_attribute_values(":floor", n(floor))
                    .expression_attribute_values(":expires", n(expires))
            };
        for _ in 0..RATE_RACES {
            let busy = item(self.client.update_item())
                .update_expression("ADD #tat :interval SET #expires_at = :expires")
                .condition_expression("#tat >= :floor")
                .expression_attribute_values(":interval", n(interval))
                .return_values(aws_sdk_dynamodb::types::ReturnValue::UpdatedNew)
                .send()
                .await;
            if let Some(out) = applied(busy)? {
                let tat = out
                    .attributes()
                    .and_then(|a| get_n(a, "tat"))
                    .ok_or_else(|| StoreError("rate limiter: no tat returned".into()))?;
                return Ok(tat.saturating_sub(interval));
            }
            let idle = item(self.client.update_item())
                .update_expression("SET #tat = :start, #expires_at = :expires")
                .condition_expression("attribute_not_exists(#tat) OR #tat < :floor")
                .expression_attribute_values(":start", n(floor + interval))
                .send()
                .await;
            if applied(idle)?.is_some() {
                return Ok(floor);
            }
        }
        Err(StoreError(format!(
            "rate limiter of {destination}: {RATE_RACES} races lost in a row"
        )))
    }
}

impl DestinationStates for DynamoRecords {
    async fn load(&self) -> Result<BTreeMap<String, DestinationState>, StoreError> {
        Ok(self
            .query(DESTINATIONS_PK, None)
            .await?
            .iter()
            .filter_map(|i| Some((get_s(i, "sk")?.to_string(), destination_state(i))))
            .collect())
    }

    async fn apply(
        &self,
        destination: &str,
        write: &BreakerWrite,
        now_ms: u64,
    ) -> Result<Transition, StoreError> {
        match write {
            BreakerWrite::Trip {
                failures,
                last,
                probe_at_ms,
            } => {
                let paused = self
                    .destination_update(
                        destination,
                        now_ms,
                        &[
                            "paused_by",
                            "reason",
                            "since",
                            "probe_at",
                            "failures",
                            "last_failure",
                            "last_failure_at",
                            "updated",
                        ],
                    )
                    .update_expression(
                        "SET #paused_by = :by, #reason = :reason, #since = :now, #probe_at = :probe, \
                         #failures = :failures, #last_failure = :last, #last_failure_at = :now, #updated = :now",
                    )
                    .condition_expression("attribute_not_exists(#paused_by)")
                    .expression_attribute_values(":by", s(PausedBy::Breaker.as_str()))
                    .expression_attribute_values(":reason", s(breaker_reason(*failures, last)))
                    .expression_attribute_values(":probe", n(*probe_at_ms))
                    .expression_attribute_values(":failures", n(*failures))
                    .expression_attribute_values(":last", s(last))
                    .send()
                    .await;
                Ok(if applied(paused)?.is_some() {
                    Transition::Paused
                } else {
                    Transition::None
                })
            }
            BreakerWrite::Recovered => {
                let resumed = self
                    .destination_update(
                        destination,
                        now_ms,
                        &["paused_by", "reason", "since", "probe_at", "failures", "resumed", "updated"],
                    )
                    .update_expression(
                        "REMOVE #paused_by, #reason, #since, #probe_at SET #failures = :zero, #resumed = :now, #updated = :now",
                    )
                    .condition_expression("#paused_by = :breaker")
                    .expression_attribute_values(":breaker", s(PausedBy::Breaker.as_str()))
                    .expression_attribute_values(":zero", n(0))
                    .send()
                    .await;
                Ok(if applied(resumed)?.is_some() {
                    Transition::Resumed
                } else {
                    Transition::None
                })
            }
            BreakerWrite::Gone {
                reason,
                probe_at_ms,
            } => {
                let paused = self
                    .destination_update(destination, now_ms, &["paused_by", "reason", "since", "probe_at", "updated"])
                    .update_expression(
                        "SET #paused_by = :by, #reason = :reason, #since = :now, #probe_at = :probe, #updated = :now",
                    )
                    .condition_expression("attribute_not_exists(#paused_by)")
                    .expression_attribute_values(":by", s(PausedBy::Breaker.as_str()))
                    .expression_attribute_values(":reason", s(reason))
                    .expression_attribute_values(":probe", n(*probe_at_ms))
                    .send()
                    .await;
                Ok(if applied(paused)?.is_some() {
                    Transition::Paused
                } else {
                    Transition::None
                })
            }
            BreakerWrite::Slow { until_ms } => {
                let result = self
                    .destination_update(destination, now_ms, &["slow_until", "updated"])
                    .update_expression("SET #slow_until = :until, #updated = :now")
                    .condition_expression(
                        "attribute_not_exists(#slow_until) OR #slow_until < :until",
                    )
                    .expression_attribute_values(":until", n(*until_ms))
                    .send()
                    .await;
                applied(result)?;
                Ok(Transition::None)
            }
        }
    }

    async fn claim_probe(
        &self,
        destination: &str,
        now_ms: u64,
        next_probe_ms: u64,
    ) -> Result<bool, StoreError> {
        let result = self
            .destination_update(destination, now_ms, &["probe_at", "updated", "paused_by"])
            .update_expression("SET #probe_at = :next, #updated = :now")
            .condition_expression("#paused_by = :breaker AND #probe_at <= :now")
            .expression_attribute_values(":breaker", s(PausedBy::Breaker.as_str()))
            .expression_attribute_values(":next", n(next_probe_ms))
            .send()
            .await;
        Ok(applied(result)?.is_some())
    }

    async fn pause(&self, destination: &str, reason: &str, now_ms: u64) -> Result<(), StoreError> {
        self.destination_update(destination, now_ms, &["paused_by", "reason", "since", "updated", "probe_at"])
            .update_expression(
                "SET #paused_by = :by, #reason = :reason, #since = :now, #updated = :now REMOVE #probe_at",
            )
            .expression_attribute_values(":by", s(PausedBy::Operator.as_str()))
            .expression_attribute_values(":reason", s(reason))
            .send()
            .await
            .map_err(store_error)?;
        Ok(())
    }

    async fn resume(&self, destination: &str, now_ms: u64) -> Result<bool, StoreError> {
        let out = self
            .destination_update(destination, now_ms, &["failures", "resumed", "updated", "paused_by", "reason", "since", "probe_at"])
            .update_expression(
                "SET #failures = :zero, #resumed = :now, #updated = :now REMOVE #paused_by, #reason, #since, #probe_at",
            )
            .expression_attribute_values(":zero", n(0))
            .return_values(ReturnValue::UpdatedOld)
            .send()
            .await
            .map_err(store_error)?;
        Ok(out
            .attributes()
            .is_some_and(|a| a.contains_key("paused_by")))
    }
}

impl RecordReader for DynamoRecords {
    async fn partition(&self, pk: &str) -> Result<Vec<EventWithDeliveries>, StoreError> {
        let items = self.query(pk, Some("ev#")).await?;
        let mut events: Vec<EventWithDeliveries> = Vec::new();
        let mut deliveries: HashMap<String, Vec<DeliveryRecord>> = HashMap::new();
        for item in &items {
            let Some(sk) = get_s(item, "sk") else {
                continue;
            };
            match parse_sk(sk) {
                Some((_, SortKey::Event)) => {
                    if let Some(e) = event_record(item) {
                        events.push(EventWithDeliveries {
                            event: e,
                            deliveries: vec![],
                        });
                    }
                }
                Some((event_id, SortKey::Delivery { .. })) => {
                    if let Some(d) = delivery_record(item) {
                        deliveries.entry(event_id.to_string()).or_default().push(d);
                    }
                }
                None => {}
            }
        }
        for e in &mut events {
            e.deliveries = deliveries.remove(&e.event.event_id).unwrap_or_default();
        }
        events.sort_by_key(|e| e.event.received_at_ms);
        Ok(events)
    }

    async fn event(&self, key: &EventKey) -> Result<Option<EventWithDeliveries>, StoreError> {
        let items = self.query(&key.pk, Some(&key.sk)).await?;
        let Some(event) = items
            .iter()
            .find(|i| get_s(i, "sk") == Some(key.sk.as_str()))
            .and_then(event_record)
        else {
            return Ok(None);
        };
        let deliveries = items
            .iter()
            .filter(|i| get_s(i, "sk") != Some(key.sk.as_str()))
            .filter_map(delivery_record)
            .collect();
        Ok(Some(EventWithDeliveries { event, deliveries }))
    }

    async fn archive_objects(&self, pk: &str) -> Result<Vec<String>, StoreError> {
        // Expired items too: erasure must rewrite the objects of every item it deletes.
        let items = self.query_all(pk, Some("ev#"), &["sk", "archive"]).await?;
        let objects: std::collections::BTreeSet<String> = items
            .iter()
            .filter(|i| is_event_item(i))
            .flat_map(|i| get_list_s(i, "archive"))
            .collect();
        Ok(objects.into_iter().collect())
    }

    async fn erase_partition(&self, pk: &str, now_ms: u64) -> Result<usize, StoreError> {
        // Expired items too: erasure removes everything, not only what is still live.
        let mut keys = self
            .query_all(pk, None, &["pk", "sk", "expires_at", "claimed", "erased"])
            .await?;
        let mut count = 0;
        // Deliveries first, the events' tombstones last: an erasure interrupted in between leaves
        // live events, which the next run finds (it looks for events) and finishes.
        keys.sort_by_key(is_event_item);
        for item in &keys {
            let (Some(pk_v), Some(sk_v)) = (item.get("pk"), item.get("sk")) else {
                continue;
            };
            if is_event_item(item) {
                if item.contains_key("erased") {
                    continue;
                }
                // The whole item is replaced: nothing of the event but its key stays.
                let expires = tombstone_expiry(
                    get_n(item, "expires_at").unwrap_or(0),
                    get_n(item, "claimed").unwrap_or(0),
                    now_ms,
                );
                self.client
                    .put_item()
                    .table_name(&self.table)
                    .item("pk", pk_v.clone())
                    .item("sk", sk_v.clone())
                    .item("erased", n(now_ms))
                    .item("expires_at", n(expires))
                    .send()
                    .await
                    .map_err(store_error)?;
            } else {
                self.client
                    .delete_item()
                    .table_name(&self.table)
                    .key("pk", pk_v.clone())
                    .key("sk", sk_v.clone())
                    .send()
                    .await
                    .map_err(store_error)?;
            }
            count += 1;
        }
        Ok(count)
    }
}
