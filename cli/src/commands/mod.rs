//! One module per command; helpers the commands share (delivery views, archive look-ups).

pub mod destinations;
pub mod dlq;
pub mod erase;
pub mod event;
pub mod replay;
pub mod resources;
pub mod session;
pub mod status;

use crate::error::Result;
use kyc_relay::archive::{ArchiveStore, decode};
use kyc_relay::delivery::AttemptLog;
use kyc_relay::envelope::Envelope;
use kyc_relay::provider::Provider;
use kyc_relay::records::{DeliveryRecord, EventKey, EventWithDeliveries};
use serde::Serialize;
use std::collections::HashMap;

/// A delivery as the operator sees it (JSON shape documented in docs/operations.md).
#[derive(Debug, Clone, Serialize)]
pub struct DeliveryView {
    pub destination: String,
    /// The replay run this delivery belongs to (`None`: the event's own delivery).
    pub replay: Option<String>,
    /// `DELIVERED`, `RETRYING`, `FAILED` (in the delivery DLQ), `PENDING` (a queued replay) or
    /// `NOT_ATTEMPTED` (routed to the destination, no attempt recorded yet).
    pub state: &'static str,
    pub attempts: u32,
    pub last_attempt_at_ms: Option<u64>,
    pub last_outcome: Option<String>,
    pub last_status_code: Option<u16>,
    pub lag_ms: Option<u64>,
    pub history: Vec<AttemptLog>,
}

impl DeliveryView {
    fn of(d: &DeliveryRecord) -> Self {
        Self {
            destination: d.destination.clone(),
            replay: d.replay.clone(),
            state: d.status.as_str(),
            attempts: d.attempts,
            last_attempt_at_ms: (d.attempts > 0).then_some(d.last_attempt_at_ms),
            last_outcome: d.last_outcome.clone(),
            last_status_code: d.last_status_code,
            lag_ms: d.lag_ms,
            history: d.history.clone(),
        }
    }

    fn not_attempted(destination: &str) -> Self {
        Self {
            destination: destination.to_string(),
            replay: None,
            state: "NOT_ATTEMPTED",
            attempts: 0,
            last_attempt_at_ms: None,
            last_outcome: None,
            last_status_code: None,
            lag_ms: None,
            history: Vec::new(),
        }
    }

    /// The state in words for the tables.
    pub fn state_text(&self) -> String {
        match (self.state, &self.replay) {
            ("NOT_ATTEMPTED", _) => "not attempted yet".into(),
            ("RETRYING", _) if self.attempts == 0 => "RETRYING (held: destination paused)".into(),
            ("PENDING", Some(_)) => "replay queued".into(),
            (s, _) => s.into(),
        }
    }

    pub fn last_text(&self) -> String {
        match (&self.last_outcome, self.last_attempt_at_ms) {
            (Some(o), Some(at)) => format!("{o} at {}", crate::ui::time(at)),
            _ => "-".into(),
        }
    }
}

/// The event's deliveries: every destination the claim routed it to (an absent item is a delivery
/// not attempted yet), then any other delivery items (a destination no longer routed), then replays.
pub fn deliveries(e: &EventWithDeliveries) -> Vec<DeliveryView> {
    let mut out: Vec<DeliveryView> = e
        .event
        .destinations
        .iter()
        .map(|d| {
            e.deliveries
                .iter()
                .find(|x| &x.destination == d && x.replay.is_none())
                .map(DeliveryView::of)
                .unwrap_or_else(|| DeliveryView::not_attempted(d))
        })
        .collect();
    let mut rest: Vec<&DeliveryRecord> = e
        .deliveries
        .iter()
        .filter(|x| x.replay.is_some() || !e.event.destinations.contains(&x.destination))
        .collect();
    rest.sort_by(|a, b| (&a.replay, &a.destination).cmp(&(&b.replay, &b.destination)));
    out.extend(rest.into_iter().map(DeliveryView::of));
    out
}

/// Shows a delivery never attempted whose destination is paused as what it is: its job is held
/// on the retry lane (docs/operations.md §4 lists it under RETRYING), not waiting for a first try.
pub fn mark_held(views: &mut [DeliveryView], paused: &std::collections::BTreeSet<String>) {
    for v in views {
        if v.state == "NOT_ATTEMPTED" && paused.contains(&v.destination) {
            v.state = "RETRYING";
            v.last_outcome = Some("held: destination paused".into());
        }
    }
}

/// Destinations paused now (one query of the destinations' state items).
pub async fn paused_destinations(
    ctx: &crate::ctx::Ctx,
) -> Result<std::collections::BTreeSet<String>> {
    use kyc_relay::records::DestinationStates;
    Ok(ctx
        .records()?
        .load()
        .await?
        .into_iter()
        .filter(|(_, s)| s.paused.is_some())
        .map(|(d, _)| d)
        .collect())
}

/// The provider and session (or lone event) a partition key names: `s#{provider}#{session}` or
/// `e#{provider}#{event}`.
pub fn partition_parts(pk: &str) -> Option<(Provider, Option<&str>)> {
    let (kind, rest) = pk.split_once('#')?;
    let (provider, id) = rest.split_once('#')?;
    let provider = provider.parse().ok()?;
    match kind {
        "s" => Some((provider, Some(id))),
        "e" => Some((provider, None)),
        _ => None,
    }
}

/// Archive objects read once per command.
pub struct Objects<'a, A> {
    archive: &'a A,
    cache: HashMap<String, Option<Vec<Envelope>>>,
}

impl<'a, A: ArchiveStore> Objects<'a, A> {
    pub fn new(archive: &'a A) -> Self {
        Self {
            archive,
            cache: HashMap::new(),
        }
    }

    /// The envelopes of an object; `None` when the object does not exist (expired by the
    /// lifecycle rule, or erased).
    pub async fn get(&mut self, object: &str) -> Result<Option<&[Envelope]>> {
        if !self.cache.contains_key(object) {
            let envelopes = self.archive.get(object).await?.map(|body| decode(&body).0);
            self.cache.insert(object.to_string(), envelopes);
        }
        Ok(self.cache[object].as_deref())
    }

    /// The event's envelope from the first of its objects that holds it.
    pub async fn find(&mut self, key: &EventKey, objects: &[String]) -> Result<Option<Envelope>> {
        for object in objects {
            if let Some(envs) = self.get(object).await?
                && let Some(e) = envs.iter().find(|e| &EventKey::of(e) == key)
            {
                return Ok(Some(e.clone()));
            }
        }
        Ok(None)
    }
}
