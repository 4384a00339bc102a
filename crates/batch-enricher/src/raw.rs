//! Stage 1's input: a tenant's raw events around a local day, split into chunks of whole
//! visitors, each deduplicated by event id and sorted by DataFusion in the order sessionisation
//! needs.
//!
//! A day can be larger than memory, so it is read in two passes. [`spill_window`] fetches the
//! files through the lake's [`ObjectStore`] (local folder or S3), keeps the rows the tenant-day
//! reads ([`Wanted::reads`]: each site's rows in its own day and session margins, and the rows
//! to reject in the days) and writes them, unchanged, to [`BUCKETS`] Arrow IPC files in a
//! temporary folder, a bucket per hash of (site, visitor): every event of a visitor, and every
//! copy of an event, lands in the same bucket. [`Spill::read`] then takes consecutive buckets of
//! about `batch.chunk_rows` rows at a time and, from their key columns alone, keeps one copy of
//! each event (same site and messageId: the copy received first wins). DataFusion sorts those
//! by site, visitor and time, and only the rows that can change the day's figures go on (see
//! [`Wanted`]): about half of a day's window is margins, read for the visits that cross
//! midnight.

use std::{
    collections::{HashMap, HashSet, hash_map::Entry},
    fs::File,
    hash::BuildHasher as _,
    io::{BufReader, BufWriter, Write as _},
    ops::Range,
    path::PathBuf,
    sync::Arc,
};

use arrow::{
    array::{
        ArrayRef, AsArray, BooleanArray, Int64Array, RecordBatch, StringArray,
        TimestampMicrosecondArray, UInt32Array,
    },
    compute::{concat_batches, take_record_batch},
    datatypes::{DataType, Field, Int64Type, Schema, TimestampMicrosecondType, UInt32Type},
    ipc::{
        CompressionType,
        reader::StreamReader,
        writer::{IpcWriteOptions, StreamWriter},
    },
};
use bytes::Bytes;
use chrono::{DateTime, NaiveDate};
use datafusion::{datasource::MemTable, prelude::SessionContext};
use futures_util::{StreamExt as _, TryStreamExt as _};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use sightline_lake::{
    ObjectStore,
    layout::{RawPartition, raw_day_prefix},
    schema::{event_type_from_name, raw_event_schema},
};
use sightline_proto::events::v1::Event;

use crate::{
    BatchError,
    enrich::{Role, mark_reaching},
};

/// Objects fetched and decoded at the same time (each decoded object is in memory).
const FETCH_CONCURRENCY: usize = 2;

/// Rows a bucket gathers before they are written to its file as one batch. An object's rows
/// split over every bucket, a few dozen each: written as they come, each would be a batch of
/// its own, and every batch costs its IPC framing, a compressed frame per column, and, when
/// read back, DataFusion's per-batch bookkeeping. At most `BUCKETS` times this many rows wait
/// in memory (about 250 MB of typical events), whatever the size of the day.
const SPILL_BATCH_ROWS: usize = 2_048;

/// Rows the Parquet reader decodes at a time (an object written by the archive holds a few
/// thousand).
const READ_BATCH_ROWS: usize = 65_536;

/// Visitor buckets of a spilled window: the finest split a chunk can have.
pub const BUCKETS: usize = 128;

impl Wanted {
    /// Whether row `row` of `keys` is read: of the tenant, and in its site's window, or a row
    /// that will be rejected in the tenant-day's days.
    fn reads(&self, keys: &Keys<'_>, row: usize) -> bool {
        if keys.tenant_id.value(row) != self.tenant_id {
            return false;
        }
        let t = keys.timestamp.value(row);
        match self.read_us.get(&keys.site_id.value(row)) {
            Some(window) if window.contains(&t) => true,
            _ => self.days_us.contains(&t) && keys.role(row, &self.known_sites) == Role::Rejected,
        }
    }
}

/// Seed of the bucket hash (fixed: the same input splits the same way on every run).
const BUCKET_SEED: u64 = 0x5167_4b1e;

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

/// A tenant-day's window, split by visitor into bucket files of a temporary folder (deleted
/// when dropped).
#[derive(Debug)]
pub struct Spill {
    dir: tempfile::TempDir,
    /// Rows in the window per bucket.
    rows: Vec<u64>,
    /// Rows in the files read (duplicates and events outside the window included).
    pub rows_read: u64,
    /// Bytes of the objects read.
    pub bytes_read: u64,
    /// Objects read.
    pub objects: usize,
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

/// The bucket of a visitor of a site.
fn bucket_of(site_id: i64, visitor_id: &str) -> usize {
    let hash = foldhash::fast::FixedState::with_seed(BUCKET_SEED).hash_one((site_id, visitor_id));
    (hash % BUCKETS as u64) as usize
}

/// The rows of `batch` that `wanted` reads, by bucket.
fn split(batch: &RecordBatch, wanted: &Wanted) -> Result<Vec<(usize, RecordBatch)>, BatchError> {
    let keys = Keys::of(batch)?;
    let mut rows: Vec<Vec<u32>> = vec![Vec::new(); BUCKETS];
    for row in (0..batch.num_rows()).filter(|&row| wanted.reads(&keys, row)) {
        let bucket = bucket_of(keys.site_id.value(row), keys.visitor_id.value(row));
        rows[bucket].push(row as u32);
    }
    let mut out = Vec::new();
    for (bucket, rows) in rows.into_iter().enumerate() {
        if !rows.is_empty() {
            out.push((bucket, take_record_batch(batch, &UInt32Array::from(rows))?));
        }
    }
    Ok(out)
}

/// Decodes one raw object and splits its rows by bucket.
fn decode(body: Bytes, wanted: &Wanted) -> Result<(u64, Vec<(usize, RecordBatch)>), BatchError> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(body)?
        .with_batch_size(READ_BATCH_ROWS)
        .build()?;
    let (mut rows, mut pieces) = (0, Vec::new());
    for batch in reader {
        let batch = batch?;
        rows += batch.num_rows() as u64;
        pieces.extend(split(&batch, wanted)?);
    }
    Ok((rows, pieces))
}

/// Reads the rows `wanted` reads into bucket files. Objects are fetched and decoded two at a
/// time on the blocking pool, and their rows go, in the order of the objects, to one writer
/// thread that batches and compresses each bucket's file: three threads keep both cores busy,
/// and the same input always spills the same way.
pub async fn spill_window(
    lake: &dyn ObjectStore,
    wanted: &Arc<Wanted>,
) -> Result<Spill, BatchError> {
    let (tenant_id, from_us, to_us) = (
        wanted.tenant_id,
        wanted.window_us.start,
        wanted.window_us.end,
    );
    // Objects hold the events of one UTC hour: only the window's hours are read, not every
    // hour of the dates it touches.
    let hours: Vec<String> = window_hours(tenant_id, from_us, to_us)
        .iter()
        .map(RawPartition::prefix)
        .collect();
    let mut keys = Vec::new();
    for date in utc_dates(from_us, to_us) {
        keys.extend(
            lake.list(&raw_day_prefix(tenant_id, date))
                .await?
                .into_iter()
                .filter(|k| k.ends_with(".parquet") && hours.iter().any(|h| k.starts_with(h))),
        );
    }
    let dir = tempfile::Builder::new()
        .prefix("sightline-batch-")
        .tempdir()
        .map_err(|e| io_error(&std::env::temp_dir(), e))?;
    let objects = keys.len();
    let (pieces_tx, mut pieces_rx) = tokio::sync::mpsc::channel(FETCH_CONCURRENCY);
    let mut buckets = BucketFiles::new(dir.path().to_owned());
    let writer = tokio::task::spawn_blocking(move || {
        while let Some(pieces) = pieces_rx.blocking_recv() {
            buckets.add(pieces)?;
        }
        buckets.finish()
    });
    // Owned keys: a stream over borrowed ones cannot be spawned (higher-ranked lifetimes).
    let mut decoded = futures_util::stream::iter(keys)
        .map(|key| async move {
            let body = lake.get(&key).await?;
            let bytes = body.len() as u64;
            let wanted = wanted.clone();
            let (rows, pieces) =
                tokio::task::spawn_blocking(move || decode(body, &wanted)).await??;
            Ok::<_, BatchError>((bytes, rows, pieces))
        })
        .buffered(FETCH_CONCURRENCY);
    let (mut rows_read, mut bytes_read) = (0, 0);
    let read = async {
        while let Some((bytes, rows, pieces)) = decoded.try_next().await? {
            bytes_read += bytes;
            rows_read += rows;
            if pieces_tx.send(pieces).await.is_err() {
                // The writer stopped on an error, which awaiting it returns.
                break;
            }
        }
        Ok::<_, BatchError>(())
    };
    let read = read.await;
    drop(pieces_tx);
    let rows = writer.await??;
    read?;
    Ok(Spill {
        dir,
        rows,
        rows_read,
        bytes_read,
        objects,
    })
}

/// The bucket files of a spill being written.
struct BucketFiles {
    dir: PathBuf,
    writers: Vec<Option<StreamWriter<BufWriter<File>>>>,
    pending: Vec<Pending>,
    /// Rows per bucket so far.
    rows: Vec<u64>,
}

impl BucketFiles {
    fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            writers: (0..BUCKETS).map(|_| None).collect(),
            pending: (0..BUCKETS).map(|_| Pending::default()).collect(),
            rows: vec![0; BUCKETS],
        }
    }

    /// Adds an object's rows, by bucket; a bucket's rows are written once enough wait.
    fn add(&mut self, pieces: Vec<(usize, RecordBatch)>) -> Result<(), BatchError> {
        for (bucket, piece) in pieces {
            self.rows[bucket] += piece.num_rows() as u64;
            if self.pending[bucket].add(piece) >= SPILL_BATCH_ROWS {
                self.write(bucket)?;
            }
        }
        Ok(())
    }

    /// Writes what waits and closes the files; returns the rows per bucket.
    fn finish(mut self) -> Result<Vec<u64>, BatchError> {
        for bucket in 0..BUCKETS {
            self.write(bucket)?;
        }
        for (bucket, writer) in self.writers.into_iter().enumerate() {
            if let Some(writer) = writer {
                writer
                    .into_inner()?
                    .flush()
                    .map_err(|e| io_error(&bucket_path(&self.dir, bucket), e))?;
            }
        }
        Ok(self.rows)
    }

    /// Writes the pending rows of `bucket` as one batch, opening its file on first use.
    fn write(&mut self, bucket: usize) -> Result<(), BatchError> {
        let pending = std::mem::take(&mut self.pending[bucket]);
        if pending.rows == 0 {
            return Ok(());
        }
        let batch = concat_batches(&raw_event_schema(), &pending.pieces)?;
        let writer = match &mut self.writers[bucket] {
            Some(writer) => writer,
            empty => empty.insert(bucket_writer(&bucket_path(&self.dir, bucket))?),
        };
        writer.write(&batch)?;
        Ok(())
    }
}

/// The file of `bucket` in a spill folder.
fn bucket_path(dir: &std::path::Path, bucket: usize) -> PathBuf {
    dir.join(format!("bucket-{bucket:03}.arrows"))
}

fn bucket_writer(path: &std::path::Path) -> Result<StreamWriter<BufWriter<File>>, BatchError> {
    let file = File::create(path).map_err(|e| io_error(path, e))?;
    // LZ4: the spilled rows are mostly JSON and URLs, which it shrinks several times over.
    let options =
        IpcWriteOptions::default().try_with_compression(Some(CompressionType::LZ4_FRAME))?;
    Ok(StreamWriter::try_new_with_options(
        BufWriter::new(file),
        &raw_event_schema(),
        options,
    )?)
}

/// A bucket's rows not yet written.
#[derive(Default)]
struct Pending {
    pieces: Vec<RecordBatch>,
    rows: usize,
}

impl Pending {
    /// Adds a piece; returns the rows now pending.
    fn add(&mut self, piece: RecordBatch) -> usize {
        self.rows += piece.num_rows();
        self.pieces.push(piece);
        self.rows
    }
}

impl Spill {
    fn path(&self, bucket: usize) -> PathBuf {
        bucket_path(self.dir.path(), bucket)
    }

    /// Rows in the window (duplicates included).
    pub fn rows(&self) -> u64 {
        self.rows.iter().sum()
    }

    /// Consecutive buckets grouped into chunks of at most `max_rows` rows (a bucket alone may
    /// hold more); empty buckets are left out.
    pub fn chunks(&self, max_rows: u64) -> Vec<Range<usize>> {
        let mut chunks: Vec<Range<usize>> = Vec::new();
        let mut rows = 0;
        for (bucket, &n) in self.rows.iter().enumerate() {
            if n == 0 {
                continue;
            }
            match chunks.last_mut() {
                Some(chunk) if rows + n <= max_rows => {
                    chunk.end = bucket + 1;
                    rows += n;
                }
                _ => {
                    chunks.push(bucket..bucket + 1);
                    rows = n;
                }
            }
        }
        chunks
    }

    /// The rows of `buckets` read back, as they were spilled.
    fn load(&self, buckets: Range<usize>) -> Result<Vec<RecordBatch>, BatchError> {
        let mut batches = Vec::new();
        for bucket in buckets.filter(|&b| self.rows[b] > 0) {
            let path = self.path(bucket);
            let file = File::open(&path).map_err(|e| io_error(&path, e))?;
            for batch in StreamReader::try_new(BufReader::new(file), None)? {
                batches.push(batch?);
            }
        }
        Ok(batches)
    }

    /// The unique rows of `buckets` that `wanted` keeps, sorted by site, visitor, time and
    /// messageId. The files are read and decompressed on the blocking pool.
    pub async fn read(
        self: &Arc<Self>,
        buckets: Range<usize>,
        wanted: &Wanted,
    ) -> Result<Sorted, BatchError> {
        let spill = self.clone();
        let batches = tokio::task::spawn_blocking(move || spill.load(buckets)).await??;
        dedupe(batches, wanted).await
    }
}

/// A chunk's rows that go on, in the order sessionisation needs, still in the batches they were
/// spilled in: each row is read once, into an [`Event`], by [`Sorted::events`].
#[derive(Debug, Default)]
pub struct Sorted {
    batches: Vec<RecordBatch>,
    /// Batch and row of each, in order.
    rows: Vec<(usize, usize)>,
}

impl Sorted {
    /// The rows as events, in order.
    pub fn events(&self) -> Result<Vec<Event>, BatchError> {
        sightline_lake::parquet::events_at(&self.batches, self.rows.iter().copied())
            .map_err(|e| BatchError::Invalid(format!("raw events: {e}")))
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
        .map(Keys::of)
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
fn reaching(keys: &[Keys<'_>], rows: &[(usize, usize)], wanted: &Wanted) -> Vec<bool> {
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
            (k.timestamp.value(row), k.role(row, &wanted.known_sites))
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

/// The columns of a raw batch that decide its row's bucket and whether it is kept, typed once.
struct Keys<'a> {
    tenant_id: &'a Int64Array,
    site_id: &'a Int64Array,
    message_id: &'a StringArray,
    visitor_id: &'a StringArray,
    event_type: &'a StringArray,
    timestamp: &'a TimestampMicrosecondArray,
    received_at: &'a TimestampMicrosecondArray,
}

impl<'a> Keys<'a> {
    fn of(batch: &'a RecordBatch) -> Result<Self, BatchError> {
        let column = |name: &str| {
            batch
                .column_by_name(name)
                .ok_or_else(|| BatchError::Invalid(format!("raw events: no column `{name}`")))
        };
        let invalid =
            |name: &str| BatchError::Invalid(format!("raw events: `{name}` has a wrong type"));
        let int = |name: &str| {
            column(name)?
                .as_primitive_opt::<Int64Type>()
                .ok_or_else(|| invalid(name))
        };
        let text = |name: &str| {
            column(name)?
                .as_string_opt::<i32>()
                .ok_or_else(|| invalid(name))
        };
        let time = |name: &str| {
            column(name)?
                .as_primitive_opt::<TimestampMicrosecondType>()
                .ok_or_else(|| invalid(name))
        };
        Ok(Self {
            tenant_id: int("tenant_id")?,
            site_id: int("site_id")?,
            message_id: text("message_id")?,
            visitor_id: text("visitor_id")?,
            event_type: text("type")?,
            timestamp: time("timestamp")?,
            received_at: time("received_at")?,
        })
    }

    fn len(&self) -> usize {
        self.site_id.len()
    }

    /// What row `row` is to sessionisation ([`Role::of`]), `sites` being the tenant's.
    fn role(&self, row: usize, sites: &HashSet<i64>) -> Role {
        Role::of(
            self.message_id.value(row),
            self.visitor_id.value(row),
            event_type_from_name(self.event_type.value(row)),
            self.site_id.value(row),
            sites,
        )
    }
}

/// For each batch of a chunk, which of its rows are the one copy of an event that goes on:
/// rows of `wanted`'s tenant and window, one per site and messageId (the copy received first,
/// then the one with the earlier time, then by visitor, then the first read). A hash pass over
/// the key columns: about 1 % of events have a copy, so ranking every row would be wasted work.
fn first_copies(keys: &[Keys<'_>], wanted: &Wanted) -> Vec<BooleanArray> {
    type Rank<'k> = (i64, i64, &'k str, usize, usize);
    let in_window = |k: &Keys<'_>, row: usize| wanted.reads(k, row);
    let rows: usize = keys.iter().map(Keys::len).sum();
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
    fn wanted(reach: Range<i64>) -> Wanted {
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
    fn page(id: &str, site_id: i64, visitor: &str, t: i64) -> Event {
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

    #[test]
    fn a_visitor_and_every_copy_of_its_events_share_a_bucket() {
        let event = |id: &str, tenant_id: i64, visitor: &str, t: i64| Event {
            message_id: id.into(),
            tenant_id,
            site_id: 2,
            visitor_id: visitor.into(),
            timestamp_us: t,
            ..Event::default()
        };
        let mut events: Vec<Event> = (0..200)
            .map(|i| event(&format!("m{i}"), 1, &format!("v{}", i % 50), 10 + i))
            .collect();
        events.push(event("m7", 1, "v7", 17));
        events.push(event("other-tenant", 9, "v1", 11));
        events.push(event("too-late", 1, "v1", 5_000));
        let batch = sightline_lake::parquet::events_to_record_batch(&events).unwrap();
        let pieces = split(&batch, &wanted(0..1_000)).unwrap();
        let mut bucket_of_visitor = std::collections::HashMap::new();
        let mut rows = 0;
        for (bucket, piece) in &pieces {
            for e in events_of(piece).unwrap() {
                assert_eq!(e.tenant_id, 1);
                assert!(e.timestamp_us < 1_000, "{}", e.message_id);
                let first = *bucket_of_visitor
                    .entry(e.visitor_id.clone())
                    .or_insert(*bucket);
                assert_eq!(first, *bucket, "{} split across buckets", e.visitor_id);
                rows += 1;
            }
        }
        assert_eq!(rows, 201);
        assert!(pieces.len() > 10, "50 visitors spread over buckets");
    }

    #[test]
    fn a_sites_rows_beyond_its_own_margins_are_not_read() {
        let event = |id: &str, site_id: i64, t: i64| page(id, site_id, "v", t);
        // Site 2 reads [0, 1000) and site 4 [500, 2000), so the tenant reads [0, 2000); the
        // days run from 200 to 1800. Site 3 is known but has no day here.
        let wanted = Wanted {
            tenant_id: 1,
            window_us: 0..2_000,
            read_us: HashMap::from([(2, 0..1_000), (4, 500..2_000)]),
            days_us: 200..1_800,
            reach_us: HashMap::new(),
            known_sites: HashSet::from([2, 3, 4]),
        };
        let batch = sightline_lake::parquet::events_to_record_batch(&[
            event("in-2", 2, 100),
            // In the tenant's window, but past site 2's own margin.
            event("late-2", 2, 1_500),
            event("in-4", 4, 1_500),
            event("early-4", 4, 100),
            event("no-day", 3, 600),
            // To be rejected: read where they lie in the days.
            event("stranger", 9, 600),
            event("stranger-outside", 9, 100),
            event("", 2, 1_500),
        ])
        .unwrap();
        let mut read: Vec<String> = split(&batch, &wanted)
            .unwrap()
            .iter()
            .flat_map(|(_, piece)| events_of(piece).unwrap())
            .map(|e| e.message_id)
            .collect();
        read.sort();
        assert_eq!(read, ["", "in-2", "in-4", "stranger"]);
    }

    #[test]
    fn chunks_group_consecutive_buckets_up_to_the_limit() {
        let mut rows = vec![0; BUCKETS];
        rows[..5].copy_from_slice(&[3, 0, 4, 9, 1]);
        let spill = Spill {
            dir: tempfile::tempdir().unwrap(),
            rows,
            rows_read: 0,
            bytes_read: 0,
            objects: 0,
        };
        assert_eq!(spill.chunks(7), [0..3, 3..4, 4..5]);
        let everything: Range<usize> = 0..5;
        assert_eq!(spill.chunks(100), [everything]);
        assert_eq!(spill.rows(), 17);
    }
}
