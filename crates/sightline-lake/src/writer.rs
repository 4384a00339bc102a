//! Writing broker batches to the lake at their deterministic keys.

use std::collections::BTreeMap;

use bytes::Bytes;

use sightline_proto::events::v1::{Event, EventBatch, InvalidEvent, InvalidEventBatch};

use crate::{
    LakeError, ObjectStore,
    layout::{ErrorPartition, RawPartition, part_id},
    parquet::{events_to_parquet, invalid_to_parquet},
};

/// Events of one partition (borrowed from their batches) and the batches they came from.
struct Part<'a, T> {
    batch_ids: BatchIds<'a>,
    rows: Vec<&'a T>,
}

impl<T> Default for Part<'_, T> {
    fn default() -> Self {
        Self {
            batch_ids: BatchIds::default(),
            rows: Vec::new(),
        }
    }
}

/// The batches a partition's rows came from, each once. Rows arrive batch by batch, so a batch
/// id is recorded when it differs from the last one recorded: one comparison a row, not a set
/// insertion (whose string comparisons were about 6 % of the archive group's profile).
#[derive(Default)]
struct BatchIds<'a>(Vec<&'a str>);

impl<'a> BatchIds<'a> {
    fn add(&mut self, id: &'a str) {
        if self.0.last() != Some(&id) {
            self.0.push(id);
        }
    }

    /// The partition's part id ([`part_id`] sorts and dedups).
    fn part_id(&self) -> String {
        part_id(self.0.iter().copied())
    }
}

/// `batches` in id order, each batch id once (the first of duplicates).
fn unique_sorted<'a, B>(batches: &'a [B], id: &impl Fn(&B) -> &str) -> Vec<&'a B> {
    let mut sorted: Vec<&B> = batches.iter().collect();
    // Stable: of two batches with one id, the first given is kept.
    sorted.sort_by(|a, b| id(a).cmp(id(b)));
    sorted.dedup_by(|b, a| id(a) == id(b));
    sorted
}

/// Groups the rows of `batches` by partition, each batch id once, batches in id order so the
/// same set of batches gives byte-identical objects however it was buffered.
fn group<'a, B, R: 'a, P: Ord>(
    batches: &'a [B],
    id: impl Fn(&B) -> &str,
    rows: impl Fn(&'a B) -> &'a [R],
    partition_of: impl Fn(&R) -> Result<P, LakeError>,
) -> Result<BTreeMap<P, Part<'a, R>>, LakeError> {
    let mut parts: BTreeMap<P, Part<'a, R>> = BTreeMap::new();
    for batch in unique_sorted(batches, &id) {
        let batch_id = id(batch);
        for row in rows(batch) {
            let part = parts.entry(partition_of(row)?).or_default();
            part.batch_ids.add(batch_id);
            part.rows.push(row);
        }
    }
    Ok(parts)
}

/// The batch ids of each partition `batches` fill, as [`group`] sees them, without copying rows.
fn plan<'a, B, R: 'a, P: Ord>(
    batches: &'a [B],
    id: impl Fn(&B) -> &str,
    rows: impl Fn(&'a B) -> &'a [R],
    partition_of: impl Fn(&R) -> Result<P, LakeError>,
) -> Result<BTreeMap<P, BatchIds<'a>>, LakeError> {
    let mut parts: BTreeMap<P, BatchIds<'a>> = BTreeMap::new();
    for batch in unique_sorted(batches, &id) {
        let batch_id = id(batch);
        for row in rows(batch) {
            parts.entry(partition_of(row)?).or_default().add(batch_id);
        }
    }
    Ok(parts)
}

/// The keys [`write_raw_batches`] writes for `batches`, in the same order, without writing
/// anything: what a writer records as its intent before it writes.
pub fn raw_keys(batches: &[EventBatch]) -> Result<Vec<String>, LakeError> {
    let parts = plan(
        batches,
        |b| &b.batch_id,
        |b| &b.events,
        |e: &Event| RawPartition::of_event(e.tenant_id, e.timestamp_us),
    )?;
    Ok(parts
        .into_iter()
        .map(|(partition, ids)| partition.key(&ids.part_id()))
        .collect())
}

/// The keys [`write_invalid_batches`] writes for `batches`, in the same order, without writing
/// anything.
pub fn invalid_keys(batches: &[InvalidEventBatch]) -> Result<Vec<String>, LakeError> {
    let parts = plan(
        batches,
        |b| &b.batch_id,
        |b| &b.events,
        |e: &InvalidEvent| ErrorPartition::of_invalid(e.received_at_us, &e.reason),
    )?;
    Ok(parts
        .into_iter()
        .map(|(partition, ids)| partition.key(&ids.part_id()))
        .collect())
}

/// The Parquet objects of `batches`, one per tenant and UTC hour of event time, each keyed by
/// the batches that contributed to it, in [`raw_keys`]' order. CPU-bound: an async caller runs it
/// off its runtime's workers (`spawn_blocking`).
///
/// A batch id that appears twice (a redelivery inside one buffer) is encoded once.
pub fn encode_raw_batches(batches: &[EventBatch]) -> Result<Vec<(String, Bytes)>, LakeError> {
    let parts = group(
        batches,
        |b| &b.batch_id,
        |b| &b.events,
        |e: &Event| RawPartition::of_event(e.tenant_id, e.timestamp_us),
    )?;
    parts
        .into_iter()
        .map(|(partition, part)| {
            let key = partition.key(&part.batch_ids.part_id());
            Ok((key, events_to_parquet(&part.rows)?))
        })
        .collect()
}

/// Writes the events of `batches` as one Parquet object per tenant and UTC hour of event time
/// ([`encode_raw_batches`]) and returns the keys written. Writing the same batches again
/// overwrites the same keys.
pub async fn write_raw_batches(
    store: &dyn ObjectStore,
    batches: &[EventBatch],
) -> Result<Vec<String>, LakeError> {
    put_all(store, encode_raw_batches(batches)?).await
}

/// Stores `objects` in order; returns their keys.
pub async fn put_all(
    store: &dyn ObjectStore,
    objects: Vec<(String, Bytes)>,
) -> Result<Vec<String>, LakeError> {
    let mut keys = Vec::with_capacity(objects.len());
    for (key, body) in objects {
        store.put(&key, body).await?;
        keys.push(key);
    }
    Ok(keys)
}

/// The Parquet objects of the invalid events of `batches`, one per UTC day of receipt and
/// reason, keyed like [`encode_raw_batches`], in [`invalid_keys`]' order.
pub fn encode_invalid_batches(
    batches: &[InvalidEventBatch],
) -> Result<Vec<(String, Bytes)>, LakeError> {
    let parts = group(
        batches,
        |b| &b.batch_id,
        |b| &b.events,
        |e: &InvalidEvent| ErrorPartition::of_invalid(e.received_at_us, &e.reason),
    )?;
    parts
        .into_iter()
        .map(|(partition, part)| {
            let key = partition.key(&part.batch_ids.part_id());
            Ok((key, invalid_to_parquet(&part.rows)?))
        })
        .collect()
}

/// Writes the invalid events of `batches` ([`encode_invalid_batches`]) and returns the keys
/// written.
pub async fn write_invalid_batches(
    store: &dyn ObjectStore,
    batches: &[InvalidEventBatch],
) -> Result<Vec<String>, LakeError> {
    put_all(store, encode_invalid_batches(batches)?).await
}
