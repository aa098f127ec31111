//! The event archive: every accepted event's envelope (the raw body byte for byte, so a signature can
//! be checked again, and its metadata), kept for the retention configured on the bucket
//! (`ArchiveRetentionDays`, lifecycle rule) and encrypted at rest.
//!
//! One object per consumer batch, not per event: S3 bills a `PUT` like a thousand DynamoDB write
//! units would cost half as much, so per-event objects would cost $5 per million webhooks where a
//! batch of ten costs $0.50 (ARCHITECTURE.md §3). Objects are JSON Lines, one envelope per line,
//! under a time-ordered key, so a time range is a key range:
//!
//! ```text
//! events/2026/12/01/21/20261201T214715Z-<batch id>.jsonl
//! ```
//!
//! The event's record lists the objects holding it (`archive`), so one event or one session is found
//! without listing; a repair writes the event again into its own batch's object and appends it to
//! that list, so every copy can be found (and erased).

use crate::envelope::Envelope;

#[derive(Debug, thiserror::Error)]
#[error("archive unavailable: {0}")]
pub struct ArchiveError(pub String);

pub const PREFIX: &str = "events/";

/// Where the consumer writes archive objects.
pub trait Archive: Send + Sync {
    /// False when the archive is switched off (no bucket configured).
    fn enabled(&self) -> bool {
        true
    }

    fn put(
        &self,
        object: &str,
        body: Vec<u8>,
    ) -> impl Future<Output = Result<(), ArchiveError>> + Send;
}

/// What operators read (and rewrite, to erase).
pub trait ArchiveStore: Archive {
    /// `Ok(None)`: no such object (expired, or never written because the batch failed first).
    fn get(
        &self,
        object: &str,
    ) -> impl Future<Output = Result<Option<Vec<u8>>, ArchiveError>> + Send;

    /// Object keys starting with `prefix`, in key order, after `start_after` (if any).
    fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
    ) -> impl Future<Output = Result<Vec<String>, ArchiveError>> + Send;

    /// The object with its entity tag (S3's ETag), for a conditional rewrite.
    fn get_tagged(
        &self,
        object: &str,
    ) -> impl Future<Output = Result<Option<Tagged>, ArchiveError>> + Send;

    /// Replaces the object with `body` only if it still has entity tag `tag` (S3 `If-Match`), and
    /// deletes it instead when `body` is empty (conditional delete). `Ok(false)`: the object changed
    /// (or went) since it was read; read it again. Two erasures rewriting one shared object at once
    /// therefore cannot undo each other: the later write fails and re-reads the earlier's result.
    /// `keep_days`: tag the rewritten object with [`KEEP_DAYS_TAG`] so it expires no later than it
    /// would have.
    fn replace_if(
        &self,
        object: &str,
        body: Vec<u8>,
        tag: &str,
        keep_days: Option<u32>,
    ) -> impl Future<Output = Result<bool, ArchiveError>> + Send;
}

/// An archive object as read for a conditional rewrite.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tagged {
    pub body: Vec<u8>,
    pub tag: String,
}

/// The archive switched off.
#[derive(Debug, Clone, Copy, Default)]
pub struct Off;

impl Archive for Off {
    fn enabled(&self) -> bool {
        false
    }

    async fn put(&self, _object: &str, _body: Vec<u8>) -> Result<(), ArchiveError> {
        Ok(())
    }
}

/// The object a batch processed at `now_ms` writes.
pub fn object_key(now_ms: u64, batch_id: &str) -> String {
    let t = Utc::from_ms(now_ms);
    // The batch id is Lambda's request id (or a test's name): keep it key-safe.
    let id: String = batch_id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(64)
        .collect();
    format!(
        "{PREFIX}{:04}/{:02}/{:02}/{:02}/{:04}{:02}{:02}T{:02}{:02}{:02}Z-{id}.jsonl",
        t.year, t.month, t.day, t.hour, t.year, t.month, t.day, t.hour, t.minute, t.second
    )
}

/// The object tag that keeps a rewritten object's expiry: S3 lifecycle counts days from an object's
/// last write, so an erasure that rewrites a shared object would restart the retention of every other
/// session in it. The rewrite tags the object with how many days it had left (rounded down to one of
/// [`KEEP_DAYS_STEPS`]), and a lifecycle rule per step (template.yaml, `ExpireErasureRewrite{N}`)
/// expires it that many days after the rewrite: S3 applies the earliest of the rules that match.
pub const KEEP_DAYS_TAG: &str = "kyc-relay-keep-days";

/// The tag values a rewrite may carry, each with its lifecycle rule in template.yaml. Rounding down
/// to a step shortens the other sessions' retention by at most the step's gap, never extends it.
pub const KEEP_DAYS_STEPS: &[u32] = &[
    1, 2, 3, 4, 5, 6, 7, 10, 14, 21, 30, 45, 60, 90, 120, 180, 270, 365, 545, 730, 1095, 1825,
    3650, 7300, 36500,
];

/// When an object was archived, from its key (`events/YYYY/MM/DD/HH/...`: the hour's start).
pub fn archived_at_ms(key: &str) -> Option<u64> {
    let mut parts = key.strip_prefix(PREFIX)?.splitn(5, '/');
    let (y, m, d, h) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    Utc::parse_rfc3339(&format!("{y}-{m}-{d}T{h}:00:00Z"))
}

/// The tag value for an object archived at `archived_at_ms` and rewritten at `now_ms`, under a
/// retention of `retention_days`: the largest step not above the days it has left (at least 1).
pub fn keep_days(archived_at_ms: u64, now_ms: u64, retention_days: u64) -> u32 {
    let expires_ms = archived_at_ms.saturating_add(retention_days.saturating_mul(86_400_000));
    let left_days = expires_ms.saturating_sub(now_ms) / 86_400_000;
    KEEP_DAYS_STEPS
        .iter()
        .copied()
        .filter(|s| u64::from(*s) <= left_days)
        .max()
        .unwrap_or(1)
}

/// The key prefix of one hour; `list` over consecutive hours covers a time range.
pub fn hour_prefix(ms: u64) -> String {
    let t = Utc::from_ms(ms);
    format!(
        "{PREFIX}{:04}/{:02}/{:02}/{:02}/",
        t.year, t.month, t.day, t.hour
    )
}

/// One object's body: the envelopes as JSON Lines.
pub fn encode(envelopes: &[&Envelope]) -> Result<Vec<u8>, ArchiveError> {
    let mut out = Vec::with_capacity(envelopes.len() * 1024);
    for e in envelopes {
        serde_json::to_writer(&mut out, e).map_err(|e| ArchiveError(e.to_string()))?;
        out.push(b'\n');
    }
    Ok(out)
}

/// The envelopes of an object (lines that do not parse are skipped and counted).
pub fn decode(body: &[u8]) -> (Vec<Envelope>, usize) {
    let mut bad = 0;
    let envelopes = body
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .filter_map(|l| serde_json::from_slice(l).inspect_err(|_| bad += 1).ok())
        .collect();
    (envelopes, bad)
}

/// A UTC calendar time (no time-zone crate needed for key names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Utc {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
}

impl Utc {
    pub fn from_ms(ms: u64) -> Self {
        let secs = ms / 1000;
        let days = (secs / 86_400) as i64;
        let rem = secs % 86_400;
        // Howard Hinnant's civil_from_days.
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let year = yoe + era * 400 + i64::from(month <= 2);
        Self {
            year,
            month,
            day,
            hour: (rem / 3600) as u32,
            minute: (rem % 3600 / 60) as u32,
            second: (rem % 60) as u32,
        }
    }

    /// RFC 3339, to the second.
    pub fn rfc3339(ms: u64) -> String {
        let t = Self::from_ms(ms);
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            t.year, t.month, t.day, t.hour, t.minute, t.second
        )
    }

    /// Parses `YYYY-MM-DDTHH:MM:SSZ` (or a date alone, at midnight) into ms since the epoch.
    pub fn parse_rfc3339(s: &str) -> Option<u64> {
        let s = s.trim();
        let (date, time) = match s.split_once('T') {
            Some((d, t)) => (d, t.strip_suffix('Z')?),
            None => (s, "00:00:00"),
        };
        let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
        let (y, m, dd) = (d.next()??, d.next()??, d.next()??);
        if d.next().is_some() || !(1..=12).contains(&m) || !(1..=31).contains(&dd) {
            return None;
        }
        let mut t = time.split(':').map(|p| p.parse::<i64>().ok());
        let (h, mi, se) = (t.next()??, t.next()??, t.next().unwrap_or(Some(0))?);
        if t.next().is_some()
            || !(0..24).contains(&h)
            || !(0..60).contains(&mi)
            || !(0..61).contains(&se)
        {
            return None;
        }
        // days_from_civil.
        let y2 = if m <= 2 { y - 1 } else { y };
        let era = y2.div_euclid(400);
        let yoe = y2.rem_euclid(400);
        let mp = (m + 9) % 12;
        let doy = (153 * mp + 2) / 5 + dd - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        let days = era * 146_097 + doe - 719_468;
        let secs = days * 86_400 + h * 3600 + mi * 60 + se;
        u64::try_from(secs).ok().map(|s| s * 1000)
    }
}

/// The archive in memory (unit tests; `fail_puts` simulates an S3 outage).
#[derive(Default)]
pub struct MemoryArchive {
    objects: std::sync::Mutex<std::collections::BTreeMap<String, Vec<u8>>>,
    /// The [`KEEP_DAYS_TAG`] of rewritten objects.
    keep_days: std::sync::Mutex<std::collections::BTreeMap<String, u32>>,
    pub fail_puts: std::sync::atomic::AtomicBool,
    pub puts: std::sync::atomic::AtomicU64,
}

impl MemoryArchive {
    pub fn objects(&self) -> std::collections::BTreeMap<String, Vec<u8>> {
        self.objects.lock().map(|o| o.clone()).unwrap_or_default()
    }

    /// The object's [`KEEP_DAYS_TAG`], if a rewrite set one.
    pub fn keep_days_of(&self, object: &str) -> Option<u32> {
        self.keep_days.lock().ok()?.get(object).copied()
    }
}

impl Archive for MemoryArchive {
    async fn put(&self, object: &str, body: Vec<u8>) -> Result<(), ArchiveError> {
        use std::sync::atomic::Ordering;
        self.puts.fetch_add(1, Ordering::Relaxed);
        if self.fail_puts.load(Ordering::SeqCst) {
            return Err(ArchiveError("archive unavailable (test)".into()));
        }
        self.objects
            .lock()
            .map_err(|_| ArchiveError("poisoned".into()))?
            .insert(object.to_string(), body);
        Ok(())
    }
}

impl ArchiveStore for MemoryArchive {
    async fn get(&self, object: &str) -> Result<Option<Vec<u8>>, ArchiveError> {
        Ok(self
            .objects
            .lock()
            .map_err(|_| ArchiveError("poisoned".into()))?
            .get(object)
            .cloned())
    }

    async fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
    ) -> Result<Vec<String>, ArchiveError> {
        Ok(self
            .objects
            .lock()
            .map_err(|_| ArchiveError("poisoned".into()))?
            .keys()
            .filter(|k| k.starts_with(prefix) && start_after.is_none_or(|s| k.as_str() > s))
            .cloned()
            .collect())
    }

    async fn get_tagged(&self, object: &str) -> Result<Option<Tagged>, ArchiveError> {
        Ok(self.get(object).await?.map(|body| Tagged {
            tag: memory_tag(&body),
            body,
        }))
    }

    async fn replace_if(
        &self,
        object: &str,
        body: Vec<u8>,
        tag: &str,
        keep_days: Option<u32>,
    ) -> Result<bool, ArchiveError> {
        let mut objects = self
            .objects
            .lock()
            .map_err(|_| ArchiveError("poisoned".into()))?;
        if objects.get(object).map(|b| memory_tag(b)).as_deref() != Some(tag) {
            return Ok(false);
        }
        let mut tags = self
            .keep_days
            .lock()
            .map_err(|_| ArchiveError("poisoned".into()))?;
        // A write replaces the object's tags, as S3's PutObject does.
        tags.remove(object);
        if body.is_empty() {
            objects.remove(object);
        } else {
            objects.insert(object.to_string(), body);
            if let Some(days) = keep_days {
                tags.insert(object.to_string(), days);
            }
        }
        Ok(true)
    }
}

/// The in-memory archive's entity tag: its content's hash, as S3's ETag of a single-part object.
fn memory_tag(body: &[u8]) -> String {
    crate::provider::sha256_hex(&[body])
}

impl<T: Archive> Archive for std::sync::Arc<T> {
    fn enabled(&self) -> bool {
        (**self).enabled()
    }

    fn put(
        &self,
        object: &str,
        body: Vec<u8>,
    ) -> impl Future<Output = Result<(), ArchiveError>> + Send {
        (**self).put(object, body)
    }
}

impl<T: ArchiveStore> ArchiveStore for std::sync::Arc<T> {
    fn get(
        &self,
        object: &str,
    ) -> impl Future<Output = Result<Option<Vec<u8>>, ArchiveError>> + Send {
        (**self).get(object)
    }

    fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
    ) -> impl Future<Output = Result<Vec<String>, ArchiveError>> + Send {
        (**self).list(prefix, start_after)
    }

    fn get_tagged(
        &self,
        object: &str,
    ) -> impl Future<Output = Result<Option<Tagged>, ArchiveError>> + Send {
        (**self).get_tagged(object)
    }

    fn replace_if(
        &self,
        object: &str,
        body: Vec<u8>,
        tag: &str,
        keep_days: Option<u32>,
    ) -> impl Future<Output = Result<bool, ArchiveError>> + Send {
        (**self).replace_if(object, body, tag, keep_days)
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_rewrite_keeps_what_was_left_of_the_retention_never_more() {
        let key = "events/2026/12/01/21/20261201T214715Z-a1b2x.jsonl";
        let at = archived_at_ms(key).unwrap();
        assert_eq!(hour_prefix(at), "events/2026/12/01/21/");
        assert_eq!(archived_at_ms("elsewhere/2026/12/01/21/x"), None);
        let day = 86_400_000;
        // 30 days of retention, rewritten 5 days in: 25 left, kept 21 (the step below).
        assert_eq!(keep_days(at, at + 5 * day, 30), 21);
        assert_eq!(keep_days(at, at, 30), 30);
        assert_eq!(keep_days(at, at + 29 * day + 1, 30), 1);
        // Already due (S3 expires objects a little late): the shortest step.
        assert_eq!(keep_days(at, at + 40 * day, 30), 1);
        assert_eq!(keep_days(at, at, 36_500), 36_500);
        for (days, age) in [(30, 3), (400, 100), (7, 6), (36_500, 1)] {
            let kept = u64::from(keep_days(at, at + age * day, days));
            assert!(kept <= days - age && kept >= 1, "{days} {age}: {kept}");
        }
    }

    #[test]
    fn every_keep_days_step_has_its_lifecycle_rule_in_the_template() {
        let template = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../template.yaml"),
        )
        .unwrap();
        for step in KEEP_DAYS_STEPS {
            let rule = format!(
                "- Id: ExpireErasureRewrite{step}\n            Status: Enabled\n            Prefix: events/\n            TagFilters:\n              - Key: {KEEP_DAYS_TAG}\n                Value: \"{step}\"\n            ExpirationInDays: {step}\n"
            );
            assert!(template.contains(&rule), "template.yaml lacks:\n{rule}");
        }
    }

    use super::*;

    #[test]
    fn keys_are_time_ordered_and_parse_back() {
        // 2026-12-01T21:47:15Z
        let ms = 1_796_161_635_000;
        assert_eq!(Utc::rfc3339(ms), "2026-12-01T21:47:15Z");
        assert_eq!(Utc::parse_rfc3339("2026-12-01T21:47:15Z"), Some(ms));
        assert_eq!(
            object_key(ms, "a1b2/../x"),
            "events/2026/12/01/21/20261201T214715Z-a1b2x.jsonl"
        );
        assert_eq!(hour_prefix(ms), "events/2026/12/01/21/");
        assert!(object_key(ms, "a") < object_key(ms + 1000, "a"));
        assert_eq!(Utc::parse_rfc3339("2024-02-29"), Some(1_709_164_800_000));
        assert_eq!(Utc::rfc3339(1_709_164_800_000), "2024-02-29T00:00:00Z");
        assert_eq!(Utc::parse_rfc3339("2024-13-01"), None);
        assert_eq!(Utc::parse_rfc3339("yesterday"), None);
        assert_eq!(Utc::rfc3339(0), "1970-01-01T00:00:00Z");
    }
}
