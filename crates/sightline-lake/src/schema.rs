//! The Arrow schemas of the lake's Parquet files.
//!
//! Raw events mirror `sightline.events.v1.Event`, one column per field, with analytics-friendly
//! types: timestamps are `Timestamp(Microsecond, "UTC")` without the `_us` suffix, the event type
//! is a string such as `track`, free-form JSON stays a `Utf8` column, and proto3's "empty means
//! absent" becomes SQL `NULL` for optional fields (empty strings, `sent_at` = 0).
//!
//! No file column is called `tenant`, `date`, `hour` or `reason`: those names belong to the
//! Hive partitions of the path, and engines that add partition columns would clash with them.

use std::sync::{Arc, LazyLock};

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use sightline_proto::events::v1::EventType;

/// The Arrow type of every timestamp column.
pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

static RAW_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let ts = timestamp_type;
    Arc::new(Schema::new(vec![
        Field::new("message_id", DataType::Utf8, false),
        Field::new("tenant_id", DataType::Int64, false),
        Field::new("site_id", DataType::Int64, false),
        Field::new("type", DataType::Utf8, false),
        Field::new("name", DataType::Utf8, true),
        Field::new("anonymous_id", DataType::Utf8, true),
        Field::new("user_id", DataType::Utf8, true),
        Field::new("visitor_id", DataType::Utf8, false),
        Field::new("timestamp", ts(), false),
        Field::new("original_timestamp", ts(), false),
        Field::new("sent_at", ts(), true),
        Field::new("received_at", ts(), false),
        Field::new("ip_truncated", DataType::Utf8, true),
        Field::new("user_agent", DataType::Utf8, true),
        Field::new("page_url", DataType::Utf8, true),
        Field::new("page_referrer", DataType::Utf8, true),
        Field::new("page_title", DataType::Utf8, true),
        Field::new("locale", DataType::Utf8, true),
        Field::new("group_id", DataType::Utf8, true),
        Field::new("previous_id", DataType::Utf8, true),
        Field::new("context", DataType::Utf8, true),
        Field::new("properties", DataType::Utf8, true),
        Field::new("traits", DataType::Utf8, true),
    ]))
});

static INVALID_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("tenant_id", DataType::Int64, false),
        Field::new("site_id", DataType::Int64, false),
        // The reason as ingest wrote it; the path's `reason=` is its sanitised form.
        Field::new("error_reason", DataType::Utf8, false),
        Field::new("detail", DataType::Utf8, true),
        // Binary, not Utf8: what was received is kept byte for byte, even when it is not UTF-8
        // (which may be why it was refused).
        Field::new("raw", DataType::Binary, true),
        Field::new("received_at", timestamp_type(), false),
        Field::new("message_id", DataType::Utf8, true),
    ]))
});

/// The schema of `raw/events` files.
pub fn raw_event_schema() -> SchemaRef {
    RAW_SCHEMA.clone()
}

/// The schema of `errors/events` files.
pub fn invalid_event_schema() -> SchemaRef {
    INVALID_SCHEMA.clone()
}

/// The `type` column's value for an event type.
pub fn event_type_name(t: EventType) -> &'static str {
    t.segment_name()
}

/// The event type of a `type` column value (`unspecified` for anything unknown).
pub fn event_type_from_name(name: &str) -> EventType {
    EventType::from_segment_name(name).unwrap_or(EventType::Unspecified)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_type_round_trips_through_its_name() {
        for t in [
            EventType::Unspecified,
            EventType::Track,
            EventType::Page,
            EventType::Screen,
            EventType::Identify,
            EventType::Group,
            EventType::Alias,
        ] {
            assert_eq!(event_type_from_name(event_type_name(t)), t);
        }
    }

    #[test]
    fn no_file_column_shadows_a_partition_column() {
        for schema in [raw_event_schema(), invalid_event_schema()] {
            for reserved in ["tenant", "date", "hour", "reason"] {
                assert!(schema.field_with_name(reserved).is_err(), "{reserved}");
            }
        }
    }
}
