//! Stage 1's input: a tenant's raw events around a local day, split into chunks of whole
//! visitors, each deduplicated by event id and sorted by DataFusion in the order sessionisation
//! needs.
//!
//! A day can be larger than memory, so it is read in two passes. [`spill_window`] fetches the files
//! through the lake's [`ObjectStore`](sightline_lake::ObjectStore) (local folder or S3), keeps the
//! rows the tenant-day reads ([`Wanted::reads`]: each site's rows in its own day and session
//! margins, and the rows to reject in the days) and writes them, unchanged, to [`BUCKETS`] Arrow
//! IPC files in a temporary folder, a bucket per hash of (site, visitor): every event of a visitor,
//! and every copy of an event, lands in the same bucket. [`Spill::read`] then takes consecutive
//! buckets of about `batch.chunk_rows` rows at a time and, from their key columns alone, keeps one
//! copy of each event (same site and messageId: the copy received first wins). DataFusion sorts
//! those by site, visitor and time, and only the rows that can change the day's figures go on (see
//! [`Wanted`]): about half of a day's window is margins, read for the visits that cross midnight.

mod spill;

use std::{
    collections::{HashMap, HashSet, hash_map::Entry},
    ops::Range,
    sync::Arc,
};

use arrow::{
    array::{Array, ArrayRef, AsArray, BooleanArray, RecordBatch, UInt32Array, new_empty_array},
    compute::{interleave, interleave_record_batch},
    datatypes::{DataType, Field, Schema, UInt32Type},
};
use chrono::{DateTime, NaiveDate};
use datafusion::{datasource::MemTable, prelude::SessionContext};
use sightline_lake::{
    layout::RawPartition,
    parquet::{Fields, RawColumns},
    schema::{event_type_from_name, raw_event_schema},
};
use sightline_proto::events::v1::Event;

pub use self::spill::{BUCKETS, Spill, spill_window};
use crate::{
    BatchError,
    enrich::{Role, mark_reaching},
};

/// Which raw rows a tenant-day reads ([`Wanted::reads`], when they are spilled) and which of
/// those go on (one copy of each event, then [`mark_reaching`]).
#[derive(Debug, Clone)]
pub struct Wanted {
    /// The tenant.
    pub tenant_id: i64,
    /// The event times read over all sites: the raw hours listed.
    pub window_us: Range<i64>,
    /// Per site of the tenant-day, the event times read: its local day and the session margin
    /// on both sides. A site's rows beyond its own margins change none of its figures, however
    /// far the other sites' days reach.
    pub read_us: HashMap<i64, Range<i64>>,
    /// From the first site's day start to the last one's end: rows that will be rejected count
    /// in the tenant-day when their time lies here.
    pub days_us: Range<i64>,
    /// Per site of the tenant-day, the event times that reach its outputs: the rows kept are
    /// those in reach and the whole visits with one there ([`mark_reaching`]). Rows of a known
    /// site without a day here change nothing and are left out.
    pub reach_us: HashMap<i64, Range<i64>>,
    /// Every site of the tenant. Rows that will be rejected (of another site, or without an id
    /// or a known type) are kept wherever they lie, so that they are reported.
    pub known_sites: HashSet<i64>,
}

impl Wanted {
    /// Whether row `row` of `keys` is read: of the tenant, and in its site's window, or a row
    /// that will be rejected in the tenant-day's days.
    fn reads(&self, keys: &RawColumns<'_>, row: usize) -> bool {
        if keys.tenant_id.value(row) != self.tenant_id {
            return false;
        }
        let t = keys.timestamp.value(row);
        match self.read_us.get(&keys.site_id.value(row)) {
            Some(window) if window.contains(&t) => true,
            _ => self.days_us.contains(&t) && role(keys, row, &self.known_sites) == Role::Rejected,
        }
    }
}

/// The UTC dates whose `raw/` partitions can hold events of `[from_us, to_us)`.
pub fn utc_dates(from_us: i64, to_us: i64) -> Vec<NaiveDate> {
    let date = |t| DateTime::from_timestamp_micros(t).map(|d| d.date_naive());
    let (Some(mut d), Some(last)) = (date(from_us), date(to_us.saturating_sub(1))) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    while d <= last {
        out.push(d);
        match d.succ_opt() {
            Some(next) => d = next,
            None => break,
        }
    }
    out
}

/// The raw partitions (UTC hours) of `tenant_id` that overlap `[from_us, to_us)`.
pub fn window_hours(tenant_id: i64, from_us: i64, to_us: i64) -> Vec<RawPartition> {
    const HOUR_US: i64 = 3_600_000_000;
    let mut out = Vec::new();
    let mut t = from_us - from_us.rem_euclid(HOUR_US);
    while t < to_us {
        if let Ok(partition) = RawPartition::of_event(tenant_id, t) {
            out.push(partition);
        }
        t += HOUR_US;
    }
    out
}

fn io_error(path: &std::path::Path, source: std::io::Error) -> BatchError {
    BatchError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// A chunk's rows that go on, in the order sessionisation needs, still in the batches they were
/// spilled in. What enrichment reads becomes events ([`Sorted::events`]); the columns that only
/// pass through to the outputs are copied from the batches, column by column
/// ([`Sorted::column`], [`Sorted::rows`]), without ever becoming per-row strings.
#[derive(Debug, Default)]
pub struct Sorted {
    batches: Vec<RecordBatch>,
    /// Batch and row of each, in order.
    rows: Vec<(usize, usize)>,
}

impl Sorted {
    /// The rows as events, in order, with the fields enrichment and the figures derive from
    /// ([`Fields::Derived`]).
    pub fn events(&self) -> Result<Vec<Event>, BatchError> {
        sightline_lake::parquet::events_at(
            &self.batches,
            self.rows.iter().copied(),
            Fields::Derived,
        )
        .map_err(|e| BatchError::Invalid(format!("raw events: {e}")))
    }

    /// The raw column `name` of the rows at positions `at` (in the order of [`Sorted::events`]),
    /// as stored.
    pub fn column(&self, name: &str, at: &[usize]) -> Result<ArrayRef, BatchError> {
        // Spilled batches are written with the raw schema, so its index is theirs too.
        let schema = raw_event_schema();
        let i = schema.index_of(name)?;
        if self.batches.is_empty() {
            return Ok(new_empty_array(schema.field(i).data_type()));
        }
        let columns: Vec<&dyn Array> = self.batches.iter().map(|b| b.column(i).as_ref()).collect();
        Ok(interleave(&columns, &self.indices(at))?)
    }

    /// The rows at positions `at` (in the order of [`Sorted::events`]), every raw column as
    /// stored.
    pub fn rows(&self, at: &[usize]) -> Result<RecordBatch, BatchError> {
        if self.batches.is_empty() {
            return Ok(RecordBatch::new_empty(raw_event_schema()));
        }
        let batches: Vec<&RecordBatch> = self.batches.iter().collect();
        Ok(interleave_record_batch(&batches, &self.indices(at))?)
    }

    fn indices(&self, at: &[usize]) -> Vec<(usize, usize)> {
        at.iter().map(|&i| self.rows[i]).collect()
    }

    /// Every row of `batches`, in order.
    #[cfg(test)]
    pub(crate) fn in_order(batches: Vec<RecordBatch>) -> Self {
        let rows = (batches.iter().enumerate())
            .flat_map(|(b, batch)| (0..batch.num_rows()).map(move |row| (b, row)))
            .collect();
        Self { batches, rows }
    }
}

/// The rows of `batches` that `wanted` keeps ([`first_copies`], then [`reaching`]), sorted by
/// DataFusion by site, visitor, time and messageId. The SQL sees only the sort keys and each
/// row's index across `batches`, so its sort moves a few narrow columns; the rows themselves
/// stay in the batches as they came from the spill (neither gathered into one batch nor taken
/// into another).
async fn dedupe(batches: Vec<RecordBatch>, wanted: &Wanted) -> Result<Sorted, BatchError> {
    if batches.is_empty() {
        return Ok(Sorted::default());
    }
    let keys = batches
        .iter()
        .map(RawColumns::of)
        .collect::<Result<Vec<_>, _>>()?;
    let keep = first_copies(&keys, wanted);
    // The index of the first row of each batch.
    let mut starts = Vec::with_capacity(batches.len());
    let mut sort_keys = Vec::with_capacity(batches.len());
    let mut next = 0u32;
    for (batch, keep) in batches.iter().zip(keep) {
        let end = u32::try_from(batch.num_rows())
            .ok()
            .and_then(|rows| next.checked_add(rows))
            .ok_or_else(|| BatchError::Invalid("a chunk of more than 2^32 rows".into()))?;
        starts.push(next);
        sort_keys.push(sort_columns(batch, next..end, keep)?);
        next = end;
    }
    let ctx = SessionContext::new();
    let table = MemTable::try_new(sort_keys[0].schema(), vec![sort_keys])?;
    ctx.register_table("raw", Arc::new(table))?;
    // Sort keys end in message_id so that equal timestamps keep one order on every run.
    let sql =
        "SELECT idx FROM raw WHERE keep ORDER BY site_id, visitor_id, \"timestamp\", message_id";
    let order = ctx.sql(sql).await?.collect().await?;
    drop(ctx);
    let mut rows = Vec::with_capacity(order.iter().map(RecordBatch::num_rows).sum());
    for batch in &order {
        let column = batch
            .column(0)
            .as_primitive_opt::<UInt32Type>()
            .ok_or_else(|| BatchError::Invalid("dedupe: row indices of a wrong type".into()))?;
        for &idx in column.values() {
            let b = starts.partition_point(|&start| start <= idx) - 1;
            rows.push((b, (idx - starts[b]) as usize));
        }
    }
    let reaching = reaching(&keys, &rows, wanted);
    let rows = rows
        .into_iter()
        .zip(reaching)
        .filter_map(|(row, keep)| keep.then_some(row))
        .collect();
    Ok(Sorted { batches, rows })
}

/// Which of the chunk's unique rows, sorted by site, visitor and time (`rows`: batch and row
/// in `keys`), can change the day's figures, a visitor at a time ([`mark_reaching`]).
fn reaching(keys: &[RawColumns<'_>], rows: &[(usize, usize)], wanted: &Wanted) -> Vec<bool> {
    let mut keep = vec![false; rows.len()];
    let mut visitor: Vec<(i64, Role)> = Vec::new();
    let mut start = 0;
    while start < rows.len() {
        let owner = |i: usize| {
            let (b, row) = rows[i];
            (keys[b].site_id.value(row), keys[b].visitor_id.value(row))
        };
        let first = owner(start);
        let end = (start + 1..rows.len())
            .find(|&i| owner(i) != first)
            .unwrap_or(rows.len());
        visitor.clear();
        visitor.extend(rows[start..end].iter().map(|&(b, row)| {
            let k = &keys[b];
            (k.timestamp.value(row), role(k, row, &wanted.known_sites))
        }));
        mark_reaching(
            &visitor,
            wanted.reach_us.get(&first.0),
            &mut keep[start..end],
        );
        start = end;
    }
    keep
}

/// What row `row` of `keys` is to sessionisation ([`Role::of`]), `sites` being the tenant's.
fn role(keys: &RawColumns<'_>, row: usize, sites: &HashSet<i64>) -> Role {
    Role::of(
        keys.message_id.value(row),
        keys.visitor_id.value(row),
        event_type_from_name(keys.event_type.value(row)),
        keys.site_id.value(row),
        sites,
    )
}

/// For each batch of a chunk, which of its rows are the one copy of an event that goes on:
/// rows of `wanted`'s tenant and window, one per site and messageId (the copy received first,
/// then the one with the earlier time, then by visitor, then the first read). A hash pass over
/// the key columns: about 1 % of events have a copy, so ranking every row would be wasted work.
fn first_copies(keys: &[RawColumns<'_>], wanted: &Wanted) -> Vec<BooleanArray> {
    type Rank<'k> = (i64, i64, &'k str, usize, usize);
    let in_window = |k: &RawColumns<'_>, row: usize| wanted.reads(k, row);
    let rows: usize = keys.iter().map(RawColumns::len).sum();
    let mut first: HashMap<(i64, &str), Rank<'_>, _> =
        HashMap::with_capacity_and_hasher(rows, foldhash::fast::RandomState::default());
    for (b, k) in keys.iter().enumerate() {
        for row in (0..k.len()).filter(|&row| in_window(k, row)) {
            let rank = (
                k.received_at.value(row),
                k.timestamp.value(row),
                k.visitor_id.value(row),
                b,
                row,
            );
            match first.entry((k.site_id.value(row), k.message_id.value(row))) {
                Entry::Vacant(entry) => {
                    entry.insert(rank);
                }
                Entry::Occupied(mut entry) => {
                    if rank < *entry.get() {
                        entry.insert(rank);
                    }
                }
            }
        }
    }
    keys.iter()
        .enumerate()
        .map(|(b, k)| {
            (0..k.len())
                .map(|row| {
                    in_window(k, row)
                        && first
                            .get(&(k.site_id.value(row), k.message_id.value(row)))
                            .is_some_and(|&(.., fb, frow)| (fb, frow) == (b, row))
                })
                .collect::<Vec<bool>>()
                .into()
        })
        .collect()
}

/// The columns the sort looks at, each row's index across the chunk's batches (`idx`, the
/// values of `indices`, one per row) and whether it is kept (`keep`); the key columns are
/// shared with `rows`, not copied.
fn sort_columns(
    rows: &RecordBatch,
    indices: Range<u32>,
    keep: BooleanArray,
) -> Result<RecordBatch, BatchError> {
    let mut fields = Vec::new();
    let mut columns: Vec<ArrayRef> = Vec::new();
    for name in ["site_id", "message_id", "visitor_id", "timestamp"] {
        let (i, field) = rows
            .schema_ref()
            .column_with_name(name)
            .map(|(i, f)| (i, f.clone()))
            .ok_or_else(|| BatchError::Invalid(format!("raw events: no column `{name}`")))?;
        fields.push(field);
        columns.push(rows.column(i).clone());
    }
    fields.push(Field::new("idx", DataType::UInt32, false));
    columns.push(Arc::new(UInt32Array::from_iter_values(indices)));
    fields.push(Field::new("keep", DataType::Boolean, false));
    columns.push(Arc::new(keep));
    Ok(RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns,
    )?)
}

/// The events of a raw-schema batch, in row order.
pub fn events_of(batch: &RecordBatch) -> Result<Vec<Event>, BatchError> {
    sightline_lake::parquet::events_from_record_batch(batch)
        .map_err(|e| BatchError::Invalid(format!("raw events: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_reads_every_utc_date_it_touches() {
        // 2025-03-09T18:00Z to 2025-03-11T06:00Z.
        let dates = utc_dates(1_741_543_200_000_000, 1_741_672_800_000_000);
        let names: Vec<String> = dates.iter().map(|d| d.to_string()).collect();
        assert_eq!(names, ["2025-03-09", "2025-03-10", "2025-03-11"]);
        // An end exactly at midnight does not read the next date.
        assert_eq!(
            utc_dates(1_741_564_800_000_000, 1_741_651_200_000_000).len(),
            1
        );
    }

    #[test]
    fn a_window_reads_only_the_hours_it_touches() {
        // 2025-03-09T18:30Z to 2025-03-10T19:30Z: 26 hours, the first and last in part.
        let hours = window_hours(7, 1_741_545_000_000_000, 1_741_635_000_000_000);
        assert_eq!(hours.len(), 26);
        assert_eq!(
            hours[0].prefix(),
            "raw/events/tenant=7/date=2025-03-09/hour=18/"
        );
        assert_eq!(
            hours[25].prefix(),
            "raw/events/tenant=7/date=2025-03-10/hour=19/"
        );
        // An end exactly on the hour does not read the next hour.
        assert_eq!(window_hours(7, 0, 3_600_000_000).len(), 1);
    }

    #[tokio::test]
    async fn duplicates_across_files_keep_the_first_received_copy() {
        let event = |id: &str, visitor: &str, t: i64, received: i64| Event {
            message_id: id.into(),
            tenant_id: 1,
            site_id: 2,
            visitor_id: visitor.into(),
            timestamp_us: t,
            received_at_us: received,
            ..Event::default()
        };
        let a = sightline_lake::parquet::events_to_record_batch(&[
            event("m1", "v", 100, 7),
            event("m2", "v", 50, 1),
            event("far", "v", 10_000, 1),
        ])
        .unwrap();
        let b = sightline_lake::parquet::events_to_record_batch(&[
            event("m1", "v", 100, 3),
            event("m0", "a", 60, 1),
        ])
        .unwrap();
        let events = dedupe(vec![a, b], &wanted(0..1_000))
            .await
            .unwrap()
            .events()
            .unwrap();
        let got: Vec<(&str, i64)> = events
            .iter()
            .map(|e| (e.message_id.as_str(), e.received_at_us))
            .collect();
        assert_eq!(got, [("m0", 1), ("m2", 1), ("m1", 3)]);
    }

    /// Tenant 1, window `[0, 1000)`, site 2 known and of the day with `reach`, site 3 known but
    /// not of the day.
    pub(super) fn wanted(reach: Range<i64>) -> Wanted {
        Wanted {
            tenant_id: 1,
            window_us: 0..1_000,
            read_us: HashMap::from([(2, 0..1_000)]),
            days_us: 0..1_000,
            reach_us: HashMap::from([(2, reach)]),
            known_sites: HashSet::from([2, 3]),
        }
    }

    /// A page event of tenant 1, received when it happened.
    pub(super) fn page(id: &str, site_id: i64, visitor: &str, t: i64) -> Event {
        let mut e = Event {
            message_id: id.into(),
            tenant_id: 1,
            site_id,
            visitor_id: visitor.into(),
            timestamp_us: t,
            received_at_us: t,
            ..Event::default()
        };
        e.set_type(sightline_proto::events::v1::EventType::Page);
        e
    }

    #[tokio::test]
    async fn only_rows_that_reach_the_day_and_rows_to_reject_go_on() {
        let event = page;
        let mut unknown_type = event("odd", 2, "margin", 60);
        unknown_type.set_type(sightline_proto::events::v1::EventType::Unspecified);
        let batch = sightline_lake::parquet::events_to_record_batch(&[
            // A visit that reaches the day with its last event: it stays whole, margin too.
            event("c1", 2, "crossing", 350),
            event("c2", 2, "crossing", 450),
            // A visit only in the margins: left out, but for its row that will be rejected.
            event("m1", 2, "margin", 50),
            event("m2", 2, "margin", 900),
            unknown_type,
            // Of a known site that is not of the day: nothing it does counts.
            event("s1", 3, "elsewhere", 500),
            // Of an unknown site, and without an id: kept, to be rejected.
            event("u1", 9, "stranger", 50),
            event("", 2, "nameless", 50),
        ])
        .unwrap();
        let events = dedupe(vec![batch], &wanted(400..800))
            .await
            .unwrap()
            .events()
            .unwrap();
        let got: Vec<&str> = events.iter().map(|e| e.message_id.as_str()).collect();
        assert_eq!(got, ["c1", "c2", "odd", "", "u1"]);
    }
}
