//! The vocabulary of the `rollups` table, shared by its writers (stream processor, batch
//! enricher) and its reader (query), so all three spell granularities, dimensions and layers
//! the same way.

/// The width of a rollup bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Granularity {
    /// One UTC minute.
    Minute,
    /// One UTC hour.
    Hour,
    /// One day (the batch layer's, in the site's time zone).
    Day,
}

impl Granularity {
    /// The stored name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Minute => "minute",
            Self::Hour => "hour",
            Self::Day => "day",
        }
    }

    /// The granularity stored as `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        [Self::Minute, Self::Hour, Self::Day]
            .into_iter()
            .find(|g| g.as_str() == name)
    }

    /// The UTC bucket start of a time in microseconds since the Unix epoch (minute and hour;
    /// days depend on the site's time zone and are the batch layer's).
    pub const fn truncate_us(self, t_us: i64) -> i64 {
        let width: i64 = match self {
            Self::Minute => 60_000_000,
            Self::Hour => 3_600_000_000,
            Self::Day => 86_400_000_000,
        };
        t_us.div_euclid(width) * width
    }
}

/// What a rollup row breaks its figures down by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dimension {
    /// The site as a whole (value `""`).
    Total,
    /// Normalised page path (or screen name) of pageviews.
    Page,
    /// First page of a visit.
    EntryPage,
    /// Last page of a visit.
    ExitPage,
    /// Traffic source of the visit ("Google", "Direct").
    Source,
    /// Traffic medium of the visit (search, social, direct, referral, email, paid, internal).
    Medium,
    /// `utm_source` of the visit.
    UtmSource,
    /// `utm_medium` of the visit.
    UtmMedium,
    /// `utm_campaign` of the visit.
    UtmCampaign,
    /// Browser family.
    Browser,
    /// Operating system family.
    Os,
    /// Device class.
    Device,
    /// Track event name.
    Event,
    /// Order currency (revenue in each currency, the site's included).
    Currency,
    /// Why events were classified as a bot's (`bot_events` only).
    Bot,
}

impl Dimension {
    /// Every dimension.
    pub const ALL: [Dimension; 15] = [
        Self::Total,
        Self::Page,
        Self::EntryPage,
        Self::ExitPage,
        Self::Source,
        Self::Medium,
        Self::UtmSource,
        Self::UtmMedium,
        Self::UtmCampaign,
        Self::Browser,
        Self::Os,
        Self::Device,
        Self::Event,
        Self::Currency,
        Self::Bot,
    ];

    /// The stored name (`""` for totals).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Total => "",
            Self::Page => "page",
            Self::EntryPage => "entry_page",
            Self::ExitPage => "exit_page",
            Self::Source => "source",
            Self::Medium => "medium",
            Self::UtmSource => "utm_source",
            Self::UtmMedium => "utm_medium",
            Self::UtmCampaign => "utm_campaign",
            Self::Browser => "browser",
            Self::Os => "os",
            Self::Device => "device",
            Self::Event => "event",
            Self::Currency => "currency",
            Self::Bot => "bot",
        }
    }

    /// The dimension stored as `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.as_str() == name)
    }
}

/// Who wrote a rollup row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Layer {
    /// The stream processor: recent, approximate until the batch layer replaces it.
    Speed,
    /// The batch enricher: exact, final for its day.
    Batch,
}

impl Layer {
    /// The stored name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Speed => "speed",
            Self::Batch => "batch",
        }
    }
}

/// The `writer` of the batch enricher's changes in `rollup_versions` (the stream processor's
/// are its partitions, from 0).
pub const BATCH_WRITER: i32 = -1;

/// How long after its UTC hour ended a bucket counts as past: a write to it then raises the
/// site's `past_changes` (`migrations/0011_rollup_past_changes.sql`). Readers treat an hour as
/// settled only a margin after this ([`SETTLED_MARGIN_US`]).
pub const SETTLED_AFTER_US: i64 = 10 * 60 * 1_000_000;

/// What a reader adds to [`SETTLED_AFTER_US`] before it relies on `past_changes` for an hour:
/// room for a writer's transaction between its check of the clock and its commit.
pub const SETTLED_MARGIN_US: i64 = 5 * 60 * 1_000_000;

/// A site whose rollups a transaction changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct SiteChange {
    /// The site's tenant.
    pub tenant_id: i64,
    /// The site.
    pub site_id: i64,
    /// The start of the earliest bucket the transaction writes for the site, µs.
    pub earliest_bucket_us: i64,
}

/// Records that these sites' rollups changed, inside the transaction that changed them
/// (`migrations/0009_rollup_versions.sql`): every writer of `rollups` calls it, so that readers
/// caching answers (the query service) see the change. A site whose earliest bucket's UTC hour
/// ended [`SETTLED_AFTER_US`] or more before the database's clock also counts a change to the
/// past (`migrations/0011_rollup_past_changes.sql`). Call it as the transaction's last
/// statement: the clock is read here, and the margin readers keep covers the time to commit.
pub async fn record_change(
    conn: &mut sqlx::PgConnection,
    changes: &[SiteChange],
    writer: i32,
) -> sqlx::Result<()> {
    // One row per site, with its earliest bucket.
    let mut changes = changes.to_vec();
    changes.sort_unstable();
    changes.dedup_by_key(|c| (c.tenant_id, c.site_id));
    let settled_from: Vec<chrono::DateTime<chrono::Utc>> = changes
        .iter()
        .map(|c| {
            let hour_end = Granularity::Hour.truncate_us(c.earliest_bucket_us) + 3_600_000_000;
            chrono::DateTime::from_timestamp_micros(hour_end.saturating_add(SETTLED_AFTER_US))
                .unwrap_or_default()
        })
        .collect();
    sqlx::query(
        "INSERT INTO rollup_versions (tenant_id, site_id, writer, changes, past_changes) \
         SELECT t, s, $3, 1, (past <= statement_timestamp())::int \
         FROM unnest($1::bigint[], $2::bigint[], $4::timestamptz[]) AS u(t, s, past) \
         ON CONFLICT (tenant_id, site_id, writer) \
         DO UPDATE SET changes = rollup_versions.changes + 1, \
           past_changes = rollup_versions.past_changes + excluded.past_changes",
    )
    .bind(changes.iter().map(|c| c.tenant_id).collect::<Vec<_>>())
    .bind(changes.iter().map(|c| c.site_id).collect::<Vec<_>>())
    .bind(writer)
    .bind(settled_from)
    .execute(conn)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_truncate_to_utc_boundaries_also_before_1970() {
        let t = 1_741_600_123_456_789; // 2025-03-10T09:48:43.456789Z
        assert_eq!(Granularity::Minute.truncate_us(t), 1_741_600_080_000_000);
        assert_eq!(Granularity::Hour.truncate_us(t), 1_741_597_200_000_000);
        assert_eq!(Granularity::Minute.truncate_us(-1), -60_000_000);
    }

    #[test]
    fn dimension_names_round_trip_and_are_unique() {
        for d in Dimension::ALL {
            assert_eq!(Dimension::from_name(d.as_str()), Some(d));
        }
        let mut names: Vec<_> = Dimension::ALL.iter().map(|d| d.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Dimension::ALL.len());
    }
}
