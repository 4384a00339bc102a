//! Sums of the batch layer's rows, kept while the batch layer leaves the site alone.
//!
//! The batch layer writes a site's rows only when it closes one of its days (or closes it again,
//! at a new revision), and it raises its own counter in `rollup_versions` in the same transaction
//! (`sightline_db::rollup::BATCH_WRITER`, read as [`Look::batch_version`]). So the sums of a
//! batch part of a plan (a range of closed days or hours) are the same for every answer read
//! while that counter and the part's closures stay, whatever else the answer asks and however often the speed layer
//! flushes. An answer over the last 30 days reads 29 closed days and today: with the closed part
//! kept here, summed and with its visitor sketches united into one per bucket and value, what is
//! left to read and unite is the speed layer's part.
//!
//! This differs from the answer cache ([`crate::cache`]), which keeps whole answers until any
//! writer changes the site (the speed layer does about once a second under live traffic):
//! these sums outlive such changes, and serve answers that differ in metrics, filters on other
//! dimensions, or the open part of their range.

use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use quick_cache::{Weighter, sync::Cache};
use sightline_db::rollup::{Dimension, Granularity};

use crate::{
    QueryError,
    calendar::{Closure, Part},
    store::{Look, RowSum, Rows},
};

/// What the sums of one batch part rest on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ClosedKey {
    tenant_id: i64,
    site_id: i64,
    dimension: Dimension,
    value: Option<String>,
    by_value: bool,
    granularity: Granularity,
    lo_us: i64,
    hi_us: i64,
    batch_version: i64,
}

impl ClosedKey {
    fn new(rows: &Rows<'_>, part: &Part, look: &Look) -> Self {
        Self {
            tenant_id: rows.tenant_id,
            site_id: rows.site_id,
            dimension: rows.dimension,
            value: rows.value.map(str::to_owned),
            by_value: rows.by_value,
            granularity: part.granularity,
            lo_us: part.lo_us,
            hi_us: part.hi_us,
            batch_version: look.batch_version,
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

/// Summed batch parts by what they rest on, bounded by their size.
pub struct ClosedSums {
    entries: Cache<ClosedKey, Entry, ByBytes>,
    hits: Counter,
    misses: Counter,
}

impl ClosedSums {
    /// A cache of about `bytes` of sums; `None` when `bytes` is 0 (every part is read). `hits`
    /// and `misses` count the batch parts found here and those read from the database.
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

    /// The kept sums of `part` (a batch part) for `rows`, read on what `look` shows.
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
