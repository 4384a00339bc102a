//! Sums of rows that no longer change, kept while their writers leave them alone: the batch
//! layer's closed days, and the speed layer's hours that ended a while ago.
//!
//! The batch layer writes a site's rows only when it closes one of its days (or closes it again,
//! at a new revision), and it raises its own counter in `rollup_versions` in the same transaction
//! (`sightline_db::rollup::BATCH_WRITER`, read as [`Look::batch_version`]). So the sums of a
//! batch part of a plan (a range of closed days or hours) are the same for every answer read
//! while that counter and the part's closures stay, whatever else the answer asks and however
//! often the speed layer flushes.
//!
//! The speed layer writes the current hour on every flush, and an ended hour only for late
//! events. A write to an hour that ended ten minutes or more before raises the site's
//! `past_changes` (`migrations/0011_rollup_past_changes.sql`, read as [`Look::past_version`]),
//! so the speed rows of the hours settled by [`Look::settled_until_us`] are the same while that
//! counter stays. [`settled`] splits a speed part there: its settled hours are kept here, and
//! only its last hour or two are read again after each flush.
//!
//! An answer over the last 30 days reads 29 closed days and today: with the closed part and
//! today's settled hours kept here, summed and with their visitor sketches united into one per
//! bucket and value, what is left to read and unite is the speed layer's recent hours.
//!
//! This differs from the answer cache ([`crate::cache`]), which keeps whole answers until any
//! writer changes the site (the speed layer does about once a second under live traffic):
//! these sums outlive such changes, and serve answers that differ in metrics, filters on other
//! dimensions, or the open part of their range.

use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use quick_cache::{Weighter, sync::Cache};
use sightline_db::rollup::{Dimension, Granularity, Layer};

use crate::{
    QueryError,
    calendar::{Closure, Part},
    store::{Look, RowSum, Rows},
};

/// A part split where its rows stop changing: `settled` can be kept here, `live` must be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Split {
    /// The part's rows that change only with [`Look::batch_version`] (batch parts) or
    /// [`Look::past_version`] (speed hours settled by [`Look::settled_until_us`]).
    pub settled: Option<Part>,
    /// The rest: the speed layer's recent hours.
    pub live: Option<Part>,
}

/// `part` split at what `look` shows settled: a batch part is settled whole; a speed part up to
/// [`Look::settled_until_us`] (an hour boundary, so minute and hour rows split alike).
pub fn settled(part: &Part, look: &Look) -> Split {
    if part.layer == Layer::Batch {
        return Split {
            settled: Some(*part),
            live: None,
        };
    }
    let until = look.settled_until_us();
    let piece = |lo_us: i64, hi_us: i64| {
        (lo_us < hi_us).then_some(Part {
            lo_us,
            hi_us,
            ..*part
        })
    };
    Split {
        settled: piece(part.lo_us, part.hi_us.min(until)),
        live: piece(part.lo_us.max(until), part.hi_us),
    }
}

/// What the sums of one settled part rest on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ClosedKey {
    tenant_id: i64,
    site_id: i64,
    dimension: Dimension,
    value: Option<String>,
    by_value: bool,
    layer: Layer,
    granularity: Granularity,
    lo_us: i64,
    hi_us: i64,
    /// The counter that changes with the part's rows: the batch layer's for its parts, the
    /// changes to ended hours for the speed layer's.
    version: i64,
}

impl ClosedKey {
    fn new(rows: &Rows<'_>, part: &Part, look: &Look) -> Self {
        Self {
            tenant_id: rows.tenant_id,
            site_id: rows.site_id,
            dimension: rows.dimension,
            value: rows.value.map(str::to_owned),
            by_value: rows.by_value,
            layer: part.layer,
            granularity: part.granularity,
            lo_us: part.lo_us,
            hi_us: part.hi_us,
            version: match part.layer {
                Layer::Batch => look.batch_version,
                Layer::Speed => look.past_version,
            },
        }
    }
}

/// The closures of the days `part` covers, as `look` shows them.
fn closures_of(look: &Look, part: &Part) -> Vec<Closure> {
    look.closures
        .iter()
        .filter(|c| c.starts_at_us < part.hi_us && part.lo_us < c.ends_at_us)
        .cloned()
        .collect()
}

#[derive(Debug, Clone)]
struct Entry {
    /// The closures of the part's days when it was read: a day closed again (a new revision)
    /// makes the entry stale even for a writer that did not count its change.
    closures: Arc<[Closure]>,
    sums: Arc<[RowSum]>,
    weight: u64,
}

#[derive(Debug, Clone)]
struct ByBytes;

impl Weighter<ClosedKey, Entry> for ByBytes {
    fn weight(&self, _key: &ClosedKey, entry: &Entry) -> u64 {
        entry.weight
    }
}

/// Bytes a kept row is counted for beyond its value and sketches (the struct, the map).
const ROW_OVERHEAD: u64 = 96;

/// Summed settled parts by what they rest on, bounded by their size.
pub struct ClosedSums {
    entries: Cache<ClosedKey, Entry, ByBytes>,
    hits: Counter,
    misses: Counter,
}

impl ClosedSums {
    /// A cache of about `bytes` of sums; `None` when `bytes` is 0 (every part is read). `hits`
    /// and `misses` count the settled parts found here and those read from the database.
    pub fn new(bytes: u64, hits: Counter, misses: Counter) -> Option<Self> {
        (bytes > 0).then(|| Self {
            // A guess of the entry count only sizes the first allocation.
            entries: Cache::with_weighter(
                usize::try_from(bytes / 65_536)
                    .unwrap_or(usize::MAX)
                    .max(16),
                bytes,
                ByBytes,
            ),
            hits,
            misses,
        })
    }

    /// The kept sums of `part` (settled, see [`settled`]) for `rows`, read on what `look` shows.
    pub fn get(&self, rows: &Rows<'_>, part: &Part, look: &Look) -> Option<Arc<[RowSum]>> {
        let found = self
            .entries
            .get(&ClosedKey::new(rows, part, look))
            .filter(|e| *e.closures == *closures_of(look, part))
            .map(|e| e.sums);
        if found.is_some() {
            self.hits.inc();
        } else {
            self.misses.inc();
        }
        found
    }

    /// Keeps the sums of `part` for `rows`, read on what `look` shows, with each sum's visitor
    /// sketches united into one; returns them as kept.
    pub fn insert(
        &self,
        rows: &Rows<'_>,
        part: &Part,
        look: &Look,
        mut sums: Vec<RowSum>,
    ) -> Result<Arc<[RowSum]>, QueryError> {
        let mut weight = 0;
        for sum in &mut sums {
            sum.totals.unite()?;
            weight += ROW_OVERHEAD
                + sum.value.len() as u64
                + sum
                    .totals
                    .sketches
                    .iter()
                    .map(|s| s.len() as u64)
                    .sum::<u64>();
        }
        let sums: Arc<[RowSum]> = sums.into();
        self.entries.insert(
            ClosedKey::new(rows, part, look),
            Entry {
                closures: closures_of(look, part).into(),
                sums: sums.clone(),
                weight,
            },
        );
        Ok(sums)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Marks;

    const HOUR_US: i64 = 3_600_000_000;

    fn look_at(now_us: i64) -> Look {
        Look {
            closures: Vec::new(),
            marks: Marks::default(),
            version: 0,
            batch_version: 0,
            past_version: 0,
            now_us,
        }
    }

    fn part(layer: Layer, granularity: Granularity, lo_us: i64, hi_us: i64) -> Part {
        Part {
            layer,
            granularity,
            lo_us,
            hi_us,
        }
    }

    #[test]
    fn speed_parts_split_where_their_hours_settle() {
        // 10:20: ten minutes after an hour ends it counts as past for writers, five more for
        // readers, so hours until 10:00 are settled, and at 10:14 only those until 09:00.
        let day = 1_000 * 24 * HOUR_US;
        let look = look_at(day + 10 * HOUR_US + 20 * 60_000_000);
        assert_eq!(look.settled_until_us(), day + 10 * HOUR_US);
        assert_eq!(
            look_at(day + 10 * HOUR_US + 14 * 60_000_000).settled_until_us(),
            day + 9 * HOUR_US
        );

        let today = part(Layer::Speed, Granularity::Hour, day, day + 24 * HOUR_US);
        assert_eq!(
            settled(&today, &look),
            Split {
                settled: Some(part(
                    Layer::Speed,
                    Granularity::Hour,
                    day,
                    day + 10 * HOUR_US
                )),
                live: Some(part(
                    Layer::Speed,
                    Granularity::Hour,
                    day + 10 * HOUR_US,
                    day + 24 * HOUR_US
                )),
            }
        );
        // Minutes of an ended hour (a time zone half an hour off UTC) are settled whole.
        let minutes = part(
            Layer::Speed,
            Granularity::Minute,
            day + 8 * HOUR_US + HOUR_US / 2,
            day + 9 * HOUR_US,
        );
        assert_eq!(settled(&minutes, &look).settled, Some(minutes));
        assert_eq!(settled(&minutes, &look).live, None);
        // The current hour is live whole.
        let recent = part(
            Layer::Speed,
            Granularity::Hour,
            day + 10 * HOUR_US,
            day + 11 * HOUR_US,
        );
        assert_eq!(settled(&recent, &look).settled, None);
        // Batch parts are settled whatever the clock says.
        let batch = part(
            Layer::Batch,
            Granularity::Day,
            day + 24 * HOUR_US,
            day + 48 * HOUR_US,
        );
        assert_eq!(settled(&batch, &look).settled, Some(batch));
    }
}
