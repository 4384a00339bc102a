//! Writing broker batches to the lake at their deterministic keys.

use std::collections::{BTreeMap, BTreeSet};

use sightline_proto::events::v1::{Event, EventBatch, InvalidEvent, InvalidEventBatch};

use crate::{
    LakeError, ObjectStore,
    layout::{ErrorPartition, RawPartition, part_id},
    parquet::{events_to_parquet, invalid_to_parquet},
};

/// Events of one partition and the batches they came from.
struct Part<'a, T> {
    batch_ids: BTreeSet<&'a str>,
    rows: Vec<T>,
}

impl<T> Default for Part<'_, T> {
    fn default() -> Self {
        Self {
            batch_ids: BTreeSet::new(),
            rows: Vec::new(),
        }
    }
}

/// Batches sorted by id, so the same set of batches gives byte-identical objects however it was
/// buffered.
fn sorted_by_id<B>(batches: &[B], id: impl Fn(&B) -> &str) -> Vec<&B> {
    let mut sorted: Vec<&B> = batches.iter().collect();
    sorted.sort_by(|a, b| id(a).cmp(id(b)));
    sorted
}

/// Writes the events of `batches` as one Parquet object per tenant and UTC hour of event time,
/// each keyed by the batches that contributed to it, and returns the keys written. Writing the
/// same batches again overwrites the same keys.
///
/// A batch id that appears twice (a redelivery inside one buffer) is written once.
pub async fn write_raw_batches(
    store: &dyn ObjectStore,
    batches: &[EventBatch],
) -> Result<Vec<String>, LakeError> {
    let mut parts: BTreeMap<RawPartition, Part<'_, Event>> = BTreeMap::new();
    let mut seen = BTreeSet::new();
    for batch in sorted_by_id(batches, |b| &b.batch_id) {
        if !seen.insert(batch.batch_id.as_str()) {
            continue;
        }
        for event in &batch.events {
            let part = parts
                .entry(RawPartition::of_event(event.tenant_id, event.timestamp_us)?)
                .or_default();
            part.batch_ids.insert(&batch.batch_id);
            part.rows.push(event.clone());
        }
    }
    let mut keys = Vec::with_capacity(parts.len());
    for (partition, part) in parts {
        let key = partition.key(&part_id(part.batch_ids.iter().copied()));
        store.put(&key, events_to_parquet(&part.rows)?).await?;
        keys.push(key);
    }
    Ok(keys)
}

/// Writes the invalid events of `batches` as one Parquet object per UTC day of receipt and
/// reason, keyed like [`write_raw_batches`], and returns the keys written.
pub async fn write_invalid_batches(
    store: &dyn ObjectStore,
    batches: &[InvalidEventBatch],
) -> Result<Vec<String>, LakeError> {
    let mut parts: BTreeMap<ErrorPartition, Part<'_, InvalidEvent>> = BTreeMap::new();
    let mut seen = BTreeSet::new();
    for batch in sorted_by_id(batches, |b| &b.batch_id) {
        if !seen.insert(batch.batch_id.as_str()) {
            continue;
        }
        for event in &batch.events {
            let part = parts
                .entry(ErrorPartition::of_invalid(
                    event.received_at_us,
                    &event.reason,
                )?)
                .or_default();
            part.batch_ids.insert(&batch.batch_id);
            part.rows.push(event.clone());
        }
    }
    let mut keys = Vec::with_capacity(parts.len());
    for (partition, part) in parts {
        let key = partition.key(&part_id(part.batch_ids.iter().copied()));
        store.put(&key, invalid_to_parquet(&part.rows)?).await?;
        keys.push(key);
    }
    Ok(keys)
}
