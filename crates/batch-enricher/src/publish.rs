//! Writing `trusted/` partitions so that readers never see half of one.
//!
//! A tenant-day's partition of a dataset is `trusted/{dataset}/tenant={T}/date={D}/` and holds
//! the objects of ONE revision: `part-r{revision:06}-{n:04}.parquet`. A run writes the next
//! revision's objects beside the current ones (deterministic keys: a rerun of a killed run
//! overwrites its own leftovers), then commits the manifest (`lake_partitions`) in the same
//! transaction that closes the day's rollups, then deletes every other object of the partition.
//! Readers that follow the manifest (the query service) switch at the commit; plain Hive readers
//! (DuckDB, Spark on the prefix) may see both revisions only between that commit and the
//! deletes a moment later, and never a partial revision.

use std::collections::HashMap;

use arrow::{array::RecordBatch, datatypes::SchemaRef};
use bytes::Bytes;
use chrono::NaiveDate;
use sightline_lake::ObjectStore;
use sqlx::{PgPool, Postgres, Transaction};

use crate::BatchError;

/// Top folder of the trusted tables.
pub const TRUSTED: &str = "trusted";
/// Top folder of events the batch layer rejected.
pub const REJECTED: &str = "errors/batch";

/// The datasets of one tenant-day.
pub const DATASETS: [&str; 4] = ["events", "sessions", "daily_metrics", "rejected"];

/// The folder of a dataset's tenant-day, ending in `/`.
pub fn partition_prefix(dataset: &str, tenant_id: i64, day: NaiveDate) -> String {
    let top = if dataset == "rejected" {
        REJECTED.to_owned()
    } else {
        format!("{TRUSTED}/{dataset}")
    };
    format!("{top}/tenant={tenant_id}/date={}/", day.format("%Y-%m-%d"))
}

/// The key of part `n` of `revision`.
pub fn part_key(dataset: &str, tenant_id: i64, day: NaiveDate, revision: i32, n: usize) -> String {
    format!(
        "{}part-r{revision:06}-{n:04}.parquet",
        partition_prefix(dataset, tenant_id, day)
    )
}

/// One dataset's partition as the manifest has it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Manifest {
    /// Current revision (0: never written).
    pub revision: i32,
    /// Its objects.
    pub keys: Vec<String>,
}

/// The manifests of a tenant-day, by dataset.
pub async fn manifests(
    pool: &PgPool,
    tenant_id: i64,
    day: NaiveDate,
) -> Result<HashMap<String, Manifest>, BatchError> {
    let rows: Vec<(String, i32, Vec<String>)> = sqlx::query_as(
        "SELECT dataset, revision, keys FROM lake_partitions WHERE tenant_id = $1 AND day = $2",
    )
    .bind(tenant_id)
    .bind(day)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(dataset, revision, keys)| (dataset, Manifest { revision, keys }))
        .collect())
}

/// Records the new manifest of a dataset inside the closing transaction.
pub async fn commit_manifest(
    tx: &mut Transaction<'_, Postgres>,
    dataset: &str,
    tenant_id: i64,
    day: NaiveDate,
    manifest: &Manifest,
) -> Result<(), BatchError> {
    sqlx::query(
        "INSERT INTO lake_partitions (tenant_id, dataset, day, revision, keys) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tenant_id, dataset, day) \
         DO UPDATE SET revision = excluded.revision, keys = excluded.keys, updated_at = now()",
    )
    .bind(tenant_id)
    .bind(dataset)
    .bind(day)
    .bind(manifest.revision)
    .bind(&manifest.keys)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The objects of one dataset's revision, written as its rows come (a chunk of the day at a
/// time), at most `max_rows` rows each.
pub struct Parts<'a> {
    lake: &'a dyn ObjectStore,
    dataset: &'a str,
    tenant_id: i64,
    day: NaiveDate,
    revision: i32,
    max_rows: usize,
    schema: Option<SchemaRef>,
    /// Keys written, in order.
    pub keys: Vec<String>,
    /// Bytes written.
    pub bytes: u64,
}

impl<'a> Parts<'a> {
    /// No object yet.
    pub fn new(
        lake: &'a dyn ObjectStore,
        dataset: &'a str,
        tenant_id: i64,
        day: NaiveDate,
        revision: i32,
        max_rows: usize,
    ) -> Self {
        Self {
            lake,
            dataset,
            tenant_id,
            day,
            revision,
            max_rows: max_rows.max(1),
            schema: None,
            keys: Vec::new(),
            bytes: 0,
        }
    }

    async fn put(&mut self, body: Bytes) -> Result<(), BatchError> {
        let key = part_key(
            self.dataset,
            self.tenant_id,
            self.day,
            self.revision,
            self.keys.len(),
        );
        self.bytes += body.len() as u64;
        self.lake.put(&key, body).await?;
        self.keys.push(key);
        Ok(())
    }

    /// Writes the rows of `batch` as the next objects.
    pub async fn write(&mut self, batch: &RecordBatch) -> Result<(), BatchError> {
        self.put_all(Encoded::of(batch, self.max_rows)?).await
    }

    /// Writes objects encoded beforehand (on another thread) as the next ones.
    pub async fn put_all(&mut self, encoded: Encoded) -> Result<(), BatchError> {
        self.schema.get_or_insert(encoded.schema);
        for body in encoded.bodies {
            self.put(body).await?;
        }
        Ok(())
    }

    /// The keys and bytes written. A table without rows is one object with none, so readers
    /// find the schema.
    pub async fn finish(mut self) -> Result<(Vec<String>, u64), BatchError> {
        if self.keys.is_empty() {
            let schema = self.schema.take().ok_or_else(|| {
                BatchError::Invalid(format!("{}: no schema to write", self.dataset))
            })?;
            let empty = sightline_lake::parquet::write_parquet(&RecordBatch::new_empty(schema))?;
            self.put(empty).await?;
        }
        Ok((self.keys, self.bytes))
    }
}

/// Rows of one table as Parquet objects of at most `max_rows` rows each, not written yet: the
/// CPU-bound half of [`Parts::write`], for the blocking pool.
#[derive(Debug)]
pub struct Encoded {
    schema: SchemaRef,
    bodies: Vec<Bytes>,
}

impl Encoded {
    /// Encodes `batch`, a slice of `max_rows` rows at a time (none for an empty batch).
    pub fn of(batch: &RecordBatch, max_rows: usize) -> Result<Self, BatchError> {
        let max_rows = max_rows.max(1);
        let mut bodies = Vec::new();
        let mut offset = 0;
        while offset < batch.num_rows() {
            let len = max_rows.min(batch.num_rows() - offset);
            bodies.push(sightline_lake::parquet::write_parquet(
                &batch.slice(offset, len),
            )?);
            offset += len;
        }
        Ok(Self {
            schema: batch.schema(),
            bodies,
        })
    }
}

/// Writes `batch` as the objects of `revision`, at most `max_rows` rows each; returns the keys
/// and bytes written. An empty table is one file with no rows, so readers find the schema.
pub async fn write_dataset(
    lake: &dyn ObjectStore,
    dataset: &str,
    tenant_id: i64,
    day: NaiveDate,
    revision: i32,
    batch: &RecordBatch,
    max_rows: usize,
) -> Result<(Vec<String>, u64), BatchError> {
    let mut parts = Parts::new(lake, dataset, tenant_id, day, revision, max_rows);
    parts.write(batch).await?;
    parts.finish().await
}

/// Deletes every object of the partition that `keep` does not list: an older revision after the
/// switch, or what a killed run left behind. Returns how many were deleted.
pub async fn sweep(
    lake: &dyn ObjectStore,
    dataset: &str,
    tenant_id: i64,
    day: NaiveDate,
    keep: &[String],
) -> Result<usize, BatchError> {
    let mut deleted = 0;
    for key in lake
        .list(&partition_prefix(dataset, tenant_id, day))
        .await?
    {
        if !keep.contains(&key) {
            lake.delete(&key).await?;
            deleted += 1;
        }
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_hive_partitions_with_the_revision_in_the_name() {
        let day = NaiveDate::from_ymd_opt(2025, 3, 10).unwrap();
        assert_eq!(
            part_key("events", 7, day, 3, 1),
            "trusted/events/tenant=7/date=2025-03-10/part-r000003-0001.parquet"
        );
        assert_eq!(
            partition_prefix("rejected", 7, day),
            "errors/batch/tenant=7/date=2025-03-10/"
        );
        assert!(part_key("events", 7, day, 3, 1).len() < sightline_lake::layout::MAX_KEY_LEN);
    }
}
