//! Stage 1's input: a tenant's raw events around a local day, deduplicated by event id with
//! DataFusion, in the order sessionisation needs them.
//!
//! The files are fetched through the lake's [`ObjectStore`] (local folder or S3) and registered
//! in DataFusion as one in-memory table; the SQL keeps the window's events, drops duplicates
//! across files (same site and messageId: the copy received first wins) and sorts them by site,
//! visitor and time.

use std::sync::Arc;

use arrow::{
    array::{AsArray, RecordBatch},
    datatypes::Int64Type,
};
use bytes::Bytes;
use chrono::{DateTime, NaiveDate};
use datafusion::{datasource::MemTable, prelude::SessionContext};
use futures_util::{StreamExt as _, TryStreamExt as _};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use sightline_lake::{ObjectStore, layout::raw_day_prefix, schema::raw_event_schema};
use sightline_proto::events::v1::Event;

use crate::BatchError;

/// Objects fetched at the same time.
const FETCH_CONCURRENCY: usize = 8;

/// What was read for one tenant-day.
#[derive(Debug, Default)]
pub struct RawWindow {
    /// Unique events in the window, sorted by site, visitor, time and messageId.
    pub events: Vec<Event>,
    /// Rows in the files read (duplicates and events outside the window included).
    pub rows_read: u64,
    /// Duplicate rows dropped.
    pub duplicates: u64,
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

/// Reads the events of `tenant_id` with event time in `[from_us, to_us)`.
pub async fn read_window(
    lake: &dyn ObjectStore,
    tenant_id: i64,
    from_us: i64,
    to_us: i64,
) -> Result<RawWindow, BatchError> {
    let mut keys = Vec::new();
    for date in utc_dates(from_us, to_us) {
        keys.extend(
            lake.list(&raw_day_prefix(tenant_id, date))
                .await?
                .into_iter()
                .filter(|k| k.ends_with(".parquet")),
        );
    }
    // Owned keys: a stream over borrowed ones cannot be spawned (higher-ranked lifetimes).
    let bodies: Vec<Bytes> = futures_util::stream::iter(keys.clone())
        .map(|key| async move { lake.get(&key).await })
        .buffered(FETCH_CONCURRENCY)
        .try_collect()
        .await?;
    let mut window = RawWindow {
        objects: keys.len(),
        bytes_read: bodies.iter().map(|b| b.len() as u64).sum(),
        ..RawWindow::default()
    };
    let mut batches = Vec::new();
    for body in bodies {
        let reader = ParquetRecordBatchReaderBuilder::try_new(body)?.build()?;
        for batch in reader {
            let batch = batch?;
            window.rows_read += batch.num_rows() as u64;
            batches.push(batch);
        }
    }
    let (events, in_window) = dedupe(batches, tenant_id, from_us, to_us).await?;
    window.duplicates = in_window.saturating_sub(events.len() as u64);
    window.events = events;
    Ok(window)
}

/// The DataFusion part: window filter, dedupe, sort. Returns the events and how many rows lay
/// in the window before dedupe.
async fn dedupe(
    batches: Vec<RecordBatch>,
    tenant_id: i64,
    from_us: i64,
    to_us: i64,
) -> Result<(Vec<Event>, u64), BatchError> {
    if batches.is_empty() {
        return Ok((Vec::new(), 0));
    }
    let ctx = SessionContext::new();
    let table = MemTable::try_new(raw_event_schema(), vec![batches])?;
    ctx.register_table("raw", Arc::new(table))?;
    let window = format!(
        "tenant_id = {tenant_id} AND CAST(\"timestamp\" AS BIGINT) >= {from_us} \
         AND CAST(\"timestamp\" AS BIGINT) < {to_us}"
    );
    let in_window = ctx
        .sql(&format!("SELECT count(*) AS n FROM raw WHERE {window}"))
        .await?
        .collect()
        .await?;
    let in_window = in_window
        .first()
        .and_then(|b| b.column(0).as_primitive_opt::<Int64Type>())
        .map_or(0, |a| a.value(0)) as u64;
    let columns = raw_event_schema()
        .fields()
        .iter()
        .map(|f| format!("\"{}\"", f.name()))
        .collect::<Vec<_>>()
        .join(", ");
    // Sort keys end in message_id so that equal timestamps keep one order on every run.
    let sql = format!(
        "SELECT {columns} FROM (
           SELECT *, row_number() OVER (
             PARTITION BY site_id, message_id
             ORDER BY received_at, \"timestamp\", visitor_id) AS copy
           FROM raw WHERE {window})
         WHERE copy = 1
         ORDER BY site_id, visitor_id, \"timestamp\", message_id"
    );
    let out = ctx.sql(&sql).await?.collect().await?;
    let mut events = Vec::new();
    for batch in &out {
        events.extend(events_of(batch)?);
    }
    Ok((events, in_window))
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
        let (events, in_window) = dedupe(vec![a, b], 1, 0, 1_000).await.unwrap();
        let got: Vec<(&str, i64)> = events
            .iter()
            .map(|e| (e.message_id.as_str(), e.received_at_us))
            .collect();
        assert_eq!(got, [("m0", 1), ("m2", 1), ("m1", 3)]);
        assert_eq!(in_window, 4);
    }
}
