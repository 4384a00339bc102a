//! Where objects live in the lake: Hive-style partitions that DataFusion, DuckDB, Spark, Trino
//! and Athena read as they are.
//!
//! - raw events: `raw/events/tenant={T}/date={YYYY-MM-DD}/hour={HH}/part-{id}.parquet`, by
//!   EVENT time in UTC, so late events land in their own hour;
//! - invalid events: `errors/events/date={YYYY-MM-DD}/reason={R}/part-{id}.parquet`, by RECEIPT
//!   time in UTC (an invalid event may have no usable event time).
//!
//! `{id}` is derived from the set of batch ids an object holds, so a retried write of the same
//! batches produces the same key and overwrites instead of duplicating.

use chrono::{DateTime, NaiveDate, Timelike, Utc};

use crate::LakeError;

/// Top folder of raw events.
pub const RAW_EVENTS: &str = "raw/events";
/// Top folder of invalid events.
pub const ERROR_EVENTS: &str = "errors/events";

/// Longest `reason=` segment kept; longer reasons are cut. Keeps every key short enough for
/// s3s-fs, the dev server, which puts each key base64-encoded into one file name (255 bytes).
const MAX_REASON_LEN: usize = 48;

/// Hex digits of a part id: 128 bits of BLAKE3, far beyond any collision risk.
const PART_ID_HEX: usize = 32;

/// The longest key this layout produces (see [`MAX_REASON_LEN`]).
pub const MAX_KEY_LEN: usize = 140;

/// A UTC calendar hour.
fn utc(micros: i64) -> Result<DateTime<Utc>, LakeError> {
    DateTime::from_timestamp_micros(micros).ok_or(LakeError::TimestampOutOfRange { micros })
}

/// The deterministic part id of an object: 32 hex digits of BLAKE3 over the sorted,
/// deduplicated batch ids it holds. The order in which batches were buffered does not matter.
pub fn part_id<'a>(batch_ids: impl IntoIterator<Item = &'a str>) -> String {
    let mut ids: Vec<&str> = batch_ids.into_iter().collect();
    ids.sort_unstable();
    ids.dedup();
    let mut hasher = blake3::Hasher::new();
    for id in ids {
        // Length-prefixed so that ["ab", "c"] and ["a", "bc"] differ.
        hasher.update(&(id.len() as u64).to_le_bytes());
        hasher.update(id.as_bytes());
    }
    let mut hex = hasher.finalize().to_hex().to_string();
    hex.truncate(PART_ID_HEX);
    hex
}

/// The file name of a part.
fn part_file(part_id: &str) -> String {
    format!("part-{part_id}.parquet")
}

/// One raw-event partition: a tenant's UTC hour of event time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RawPartition {
    /// The tenant.
    pub tenant_id: i64,
    /// The UTC date of the event time.
    pub date: NaiveDate,
    /// The UTC hour of the event time, 0 to 23.
    pub hour: u32,
}

impl RawPartition {
    /// The partition of an event of `tenant_id` at `timestamp_us` (event time, µs since epoch).
    pub fn of_event(tenant_id: i64, timestamp_us: i64) -> Result<Self, LakeError> {
        let t = utc(timestamp_us)?;
        Ok(Self {
            tenant_id,
            date: t.date_naive(),
            hour: t.hour(),
        })
    }

    /// The folder of this partition, ending in `/`.
    pub fn prefix(&self) -> String {
        format!(
            "{}hour={:02}/",
            raw_day_prefix(self.tenant_id, self.date),
            self.hour
        )
    }

    /// The key of the object holding `part_id` (see [`part_id`]) in this partition.
    pub fn key(&self, part_id: &str) -> String {
        format!("{}{}", self.prefix(), part_file(part_id))
    }
}

/// The folder of every raw event of a tenant, ending in `/`.
pub fn raw_tenant_prefix(tenant_id: i64) -> String {
    format!("{RAW_EVENTS}/tenant={tenant_id}/")
}

/// The folder of a tenant's UTC day of raw events, ending in `/`.
pub fn raw_day_prefix(tenant_id: i64, date: NaiveDate) -> String {
    format!(
        "{}date={}/",
        raw_tenant_prefix(tenant_id),
        date.format("%Y-%m-%d")
    )
}

/// One error partition: a UTC day of receipt and a reason.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ErrorPartition {
    /// The UTC date the event was received.
    pub date: NaiveDate,
    /// The reason, already a safe path segment (see [`sanitize_reason`]).
    pub reason: String,
}

impl ErrorPartition {
    /// The partition of an invalid event received at `received_at_us` for `reason`.
    pub fn of_invalid(received_at_us: i64, reason: &str) -> Result<Self, LakeError> {
        Ok(Self {
            date: utc(received_at_us)?.date_naive(),
            reason: sanitize_reason(reason),
        })
    }

    /// The folder of this partition, ending in `/`.
    pub fn prefix(&self) -> String {
        format!("{}reason={}/", errors_day_prefix(self.date), self.reason)
    }

    /// The key of the object holding `part_id` in this partition.
    pub fn key(&self, part_id: &str) -> String {
        format!("{}{}", self.prefix(), part_file(part_id))
    }
}

/// The folder of a UTC day of invalid events (every reason), ending in `/`.
pub fn errors_day_prefix(date: NaiveDate) -> String {
    format!("{ERROR_EVENTS}/date={}/", date.format("%Y-%m-%d"))
}

/// Makes a reason a safe Hive path segment: lowercase ASCII letters, digits, `_` and `-`; any
/// other character becomes `_`; at most 64 characters; `unknown` when nothing is left.
/// `/`, `=`, `.` and `%` never reach a key, so no reason can escape or fake a partition.
pub fn sanitize_reason(reason: &str) -> String {
    let cleaned: String = reason
        .trim()
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(MAX_REASON_LEN)
        .collect();
    if cleaned.is_empty() {
        "unknown".to_string()
    } else {
        cleaned
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    #[test]
    fn raw_keys_are_hive_partitions_of_utc_event_time() {
        // 2025-03-09T23:59:59.999999Z
        let ts = 1_741_564_799_999_999;
        let p = RawPartition::of_event(42, ts).unwrap();
        assert_eq!(p.date, date(2025, 3, 9));
        assert_eq!(p.hour, 23);
        assert_eq!(
            p.key("abc"),
            "raw/events/tenant=42/date=2025-03-09/hour=23/part-abc.parquet"
        );
        // One microsecond later is the next day, hour 00 (zero padded).
        let next = RawPartition::of_event(42, ts + 1).unwrap();
        assert_eq!(
            next.prefix(),
            "raw/events/tenant=42/date=2025-03-10/hour=00/"
        );
        assert!(
            p.prefix()
                .starts_with(&raw_day_prefix(42, date(2025, 3, 9)))
        );
        assert!(p.prefix().starts_with(&raw_tenant_prefix(42)));
        // Tenant 4's prefix must not be a prefix of tenant 42's.
        assert!(!p.prefix().starts_with(&raw_tenant_prefix(4)));
    }

    #[test]
    fn out_of_range_timestamps_are_errors() {
        assert!(matches!(
            RawPartition::of_event(1, i64::MAX),
            Err(LakeError::TimestampOutOfRange { .. })
        ));
    }

    #[test]
    fn error_keys_use_receipt_date_and_sanitised_reason() {
        let p = ErrorPartition::of_invalid(1_741_564_799_999_999, "Missing Event/Name").unwrap();
        assert_eq!(
            p.key("x"),
            "errors/events/date=2025-03-09/reason=missing_event_name/part-x.parquet"
        );
        assert!(p.prefix().starts_with(&errors_day_prefix(date(2025, 3, 9))));
    }

    #[test]
    fn reasons_cannot_escape_their_segment() {
        assert_eq!(sanitize_reason("event_too_large"), "event_too_large");
        assert_eq!(sanitize_reason("../../etc"), "______etc");
        assert_eq!(sanitize_reason("a=b/c%2f"), "a_b_c_2f");
        assert_eq!(sanitize_reason(""), "unknown");
        assert_eq!(sanitize_reason("   "), "unknown");
        assert_eq!(sanitize_reason("é"), "_");
        assert_eq!(sanitize_reason(&"x".repeat(200)).len(), MAX_REASON_LEN);
    }

    #[test]
    fn keys_stay_short_in_the_worst_case() {
        let id = part_id(["x"]);
        let raw = RawPartition::of_event(i64::MIN, 0).unwrap().key(&id);
        let err = ErrorPartition::of_invalid(0, &"r".repeat(500))
            .unwrap()
            .key(&id);
        assert!(raw.len() <= MAX_KEY_LEN, "{} {raw}", raw.len());
        assert!(err.len() <= MAX_KEY_LEN, "{} {err}", err.len());
    }

    #[test]
    fn part_ids_depend_on_the_set_of_batches_only() {
        let a = part_id(["b2", "b1", "b3"]);
        assert_eq!(a, part_id(["b1", "b2", "b3"]));
        assert_eq!(a, part_id(["b3", "b1", "b2", "b1"]));
        assert_ne!(a, part_id(["b1", "b2"]));
        assert_ne!(part_id(["ab", "c"]), part_id(["a", "bc"]));
        assert_eq!(a.len(), PART_ID_HEX);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
    }
}
