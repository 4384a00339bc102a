//! Local days: the unit the batch layer closes. A site's day runs from its local midnight to the
//! next, in the site's time zone; a tenant-day is one date for the tenant's sites.

use std::collections::HashSet;

use chrono::{DateTime, Duration, NaiveDate, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use sightline_db::Site;

use crate::BatchError;

/// One site's local day, as UTC instants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteDay {
    /// The tenant.
    pub tenant_id: i64,
    /// The site.
    pub site_id: i64,
    /// The local date.
    pub day: NaiveDate,
    /// The site's time zone.
    pub zone: Tz,
    /// The site's ISO 4217 currency.
    pub currency: String,
    /// Local midnight starting the day, µs since the Unix epoch.
    pub starts_us: i64,
    /// Local midnight ending it (exclusive).
    pub ends_us: i64,
}

impl SiteDay {
    /// The day `day` of `site`.
    pub fn of(site: &Site, day: NaiveDate) -> Result<Self, BatchError> {
        let zone: Tz = site.time_zone.parse().map_err(|_| {
            BatchError::Invalid(format!(
                "site {} has an unknown time zone `{}`",
                site.id, site.time_zone
            ))
        })?;
        let next = day
            .succ_opt()
            .ok_or_else(|| BatchError::Invalid(format!("no day after {day}")))?;
        Ok(Self {
            tenant_id: site.tenant_id,
            site_id: site.id,
            day,
            zone,
            currency: site.currency.clone(),
            starts_us: local_midnight(zone, day).timestamp_micros(),
            ends_us: local_midnight(zone, next).timestamp_micros(),
        })
    }

    /// Whether an instant lies in the day.
    pub fn contains(&self, t_us: i64) -> bool {
        (self.starts_us..self.ends_us).contains(&t_us)
    }
}

/// The first instant of `day` in `zone`. Where a DST change skips midnight (Santiago, Beirut…)
/// the day starts at the first local time that exists.
pub fn local_midnight(zone: Tz, day: NaiveDate) -> DateTime<Utc> {
    let mut local = day.and_time(NaiveTime::MIN);
    // Gaps are at most a few hours; 15-minute steps find the first valid time.
    for _ in 0..16 {
        if let Some(t) = zone.from_local_datetime(&local).earliest() {
            return t.with_timezone(&Utc);
        }
        local += Duration::minutes(15);
    }
    Utc.from_utc_datetime(&day.and_time(NaiveTime::MIN))
}

/// The local date before the one `now` falls on in `zone`: the day `daily` closes.
pub fn previous_local_day(zone: Tz, now: DateTime<Utc>) -> NaiveDate {
    let today = now.with_timezone(&zone).date_naive();
    today.pred_opt().unwrap_or(today)
}

/// One tenant's sites on one local date: the unit of work a run schedules and shards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantDay {
    /// The tenant.
    pub tenant_id: i64,
    /// The local date.
    pub day: NaiveDate,
    /// Its sites' days (every site of the tenant closed on this date).
    pub sites: Vec<SiteDay>,
    /// Every site of the tenant: events of other sites are rejected as `unknown_site`.
    pub known_sites: HashSet<i64>,
}

impl TenantDay {
    /// Whether shard `shard` of `shards` owns this tenant-day (a stable hash, so every pod of an
    /// Indexed Job agrees without talking to the others).
    pub fn in_shard(&self, shard: u32, shards: u32) -> bool {
        shards <= 1 || shard_of(self.tenant_id, self.day, shards) == shard
    }

    /// The UTC instants to read: the sites' days widened by `margin_us` on both sides.
    pub fn window_us(&self, margin_us: i64) -> (i64, i64) {
        let start = self.sites.iter().map(|s| s.starts_us).min().unwrap_or(0);
        let end = self.sites.iter().map(|s| s.ends_us).max().unwrap_or(0);
        (
            start.saturating_sub(margin_us),
            end.saturating_add(margin_us),
        )
    }

    /// The site's day, if the site belongs to this tenant-day.
    pub fn site(&self, site_id: i64) -> Option<&SiteDay> {
        self.sites.iter().find(|s| s.site_id == site_id)
    }
}

/// The shard of a tenant-day: BLAKE3 of tenant and date, modulo `shards`.
pub fn shard_of(tenant_id: i64, day: NaiveDate, shards: u32) -> u32 {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&tenant_id.to_le_bytes());
    hasher.update(day.format("%Y-%m-%d").to_string().as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&hasher.finalize().as_bytes()[..8]);
    (u64::from_le_bytes(first) % u64::from(shards.max(1))) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(zone: &str) -> Site {
        Site {
            tenant_id: 1,
            id: 2,
            domain: "d".into(),
            time_zone: zone.into(),
            currency: "EUR".into(),
            created_at: Utc::now(),
        }
    }

    fn date(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    #[test]
    fn a_day_is_local_midnight_to_midnight_also_across_dst() {
        let paris = SiteDay::of(&site("Europe/Paris"), date(2025, 3, 30)).unwrap();
        // 2025-03-29T23:00Z to 2025-03-30T22:00Z: 23 hours, the clocks went forward.
        assert_eq!(paris.starts_us, 1_743_289_200_000_000);
        assert_eq!(paris.ends_us - paris.starts_us, 23 * 3_600_000_000);
        let kolkata = SiteDay::of(&site("Asia/Kolkata"), date(2025, 3, 10)).unwrap();
        assert_eq!(
            kolkata.starts_us % 3_600_000_000,
            30 * 60_000_000,
            "half-hour offsets start days between UTC hours"
        );
    }

    #[test]
    fn a_midnight_skipped_by_dst_starts_the_day_at_the_first_valid_time() {
        // Santiago moved from 00:00 to 01:00 on 2024-09-08.
        let t = local_midnight("America/Santiago".parse().unwrap(), date(2024, 9, 8));
        assert_eq!(t.to_rfc3339(), "2024-09-08T04:00:00+00:00");
    }

    #[test]
    fn shards_split_tenant_days_exactly_once() {
        let days: Vec<TenantDay> = (1..200)
            .map(|t| TenantDay {
                tenant_id: t,
                day: date(2025, 3, 10),
                sites: Vec::new(),
                known_sites: HashSet::new(),
            })
            .collect();
        for d in &days {
            assert_eq!((0..4).filter(|s| d.in_shard(*s, 4)).count(), 1);
        }
        assert!((0..4).all(|s| days.iter().any(|d| d.in_shard(s, 4))));
    }

    #[test]
    fn yesterday_is_local() {
        let now = DateTime::parse_from_rfc3339("2025-03-10T03:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            previous_local_day("America/Los_Angeles".parse().unwrap(), now),
            date(2025, 3, 8)
        );
        assert_eq!(
            previous_local_day("Asia/Tokyo".parse().unwrap(), now),
            date(2025, 3, 9)
        );
    }
}
