//! The first pass over a tenant-day's window: its raw objects fetched, the rows it reads split
//! by visitor into bucket files of a temporary folder, and chunks of consecutive buckets read
//! back (see the [module](super) overview).

use std::{
    fs::File,
    hash::BuildHasher as _,
    io::{BufReader, BufWriter, Write as _},
    ops::Range,
    path::PathBuf,
    sync::Arc,
};

use arrow::{
    array::{RecordBatch, UInt32Array},
    compute::{concat_batches, take_record_batch},
    ipc::{
        CompressionType,
        reader::StreamReader,
        writer::{IpcWriteOptions, StreamWriter},
    },
};
use bytes::Bytes;
use futures_util::{StreamExt as _, TryStreamExt as _};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use sightline_lake::{
    ObjectStore,
    layout::{RawPartition, raw_day_prefix},
    parquet::RawColumns,
    schema::raw_event_schema,
};

use super::{Sorted, Wanted, dedupe, io_error, utc_dates, window_hours};
use crate::BatchError;

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

/// Seed of the bucket hash (fixed: the same input splits the same way on every run).
const BUCKET_SEED: u64 = 0x5167_4b1e;

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

/// The bucket of a visitor of a site.
fn bucket_of(site_id: i64, visitor_id: &str) -> usize {
    let hash = foldhash::fast::FixedState::with_seed(BUCKET_SEED).hash_one((site_id, visitor_id));
    (hash % BUCKETS as u64) as usize
}

/// The rows of `batch` that `wanted` reads, by bucket.
fn split(batch: &RecordBatch, wanted: &Wanted) -> Result<Vec<(usize, RecordBatch)>, BatchError> {
    let keys = RawColumns::of(batch)?;
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

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};

    use sightline_proto::events::v1::Event;

    use super::*;
    use crate::raw::{
        events_of,
        tests::{page, wanted},
    };

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
