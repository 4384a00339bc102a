//! Events to Arrow record batches to zstd Parquet bytes, and back.

use std::{
    borrow::{Borrow, Cow},
    sync::{Arc, LazyLock},
};

use arrow::{
    array::{
        Array, ArrayRef, AsArray, BinaryArray, Int64Array, RecordBatch, StringArray,
        TimestampMicrosecondArray,
    },
    datatypes::{Int64Type, SchemaRef, TimestampMicrosecondType},
};
use bytes::Bytes;
use parquet::{
    arrow::{ArrowWriter, arrow_reader::ParquetRecordBatchReaderBuilder},
    basic::{Compression, ZstdLevel},
    file::properties::WriterProperties,
    schema::types::ColumnPath,
};
use sightline_proto::events::v1::{Event, InvalidEvent};

use crate::{
    LakeError,
    schema::{event_type_from_name, event_type_name, invalid_event_schema, raw_event_schema},
};

/// zstd level of tables written by [`write_parquet`]: 3 is zstd's own default, a good size/speed
/// trade for data written once a day and read often.
const ZSTD_LEVEL: i32 = 3;

/// zstd level of raw-event files: the archive writes them on the stream's hot path, where
/// level 1 costs less CPU for files a little larger (`benches/archive.rs` measures both).
const RAW_ZSTD_LEVEL: i32 = 1;

/// Raw-event columns whose values rarely repeat within a file. A dictionary is only built and
/// abandoned for them, so raw files write them without one (`benches/archive.rs` measures it).
pub const UNIQUE_COLUMNS: [&str; 6] = [
    "message_id",
    "timestamp",
    "original_timestamp",
    "sent_at",
    "received_at",
    "properties",
];

/// How raw-event files are written (the archive's hot path): zstd level [`RAW_ZSTD_LEVEL`], no
/// dictionary on [`UNIQUE_COLUMNS`].
static RAW_WRITER: LazyLock<WriterProperties> = LazyLock::new(|| {
    let mut builder = WriterProperties::builder().set_compression(zstd(RAW_ZSTD_LEVEL));
    for column in UNIQUE_COLUMNS {
        builder = builder.set_column_dictionary_enabled(ColumnPath::from(column), false);
    }
    builder.build()
});

fn zstd(level: i32) -> Compression {
    Compression::ZSTD(ZstdLevel::try_new(level).expect("the levels above are valid"))
}

/// proto3 empty string → SQL NULL.
fn opt(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

/// JSON bytes → text column; ingest only emits JSON it serialised itself (valid UTF-8), so the
/// lossy conversion (which copies) never changes a byte in practice and never fails a whole
/// batch.
fn opt_json(b: &[u8]) -> Option<Cow<'_, str>> {
    (!b.is_empty()).then(|| String::from_utf8_lossy(b))
}

fn strings<'a, E: Borrow<Event>>(events: &'a [E], f: impl Fn(&'a Event) -> &'a str) -> ArrayRef {
    Arc::new(
        events
            .iter()
            .map(|e| opt(f(e.borrow())))
            .collect::<StringArray>(),
    )
}

fn required_strings<'a, E: Borrow<Event>>(
    events: &'a [E],
    f: impl Fn(&'a Event) -> &'a str,
) -> ArrayRef {
    Arc::new(StringArray::from_iter_values(
        events.iter().map(|e| f(e.borrow())),
    ))
}

fn json<'a, E: Borrow<Event>>(events: &'a [E], f: impl Fn(&'a Event) -> &'a [u8]) -> ArrayRef {
    Arc::new(
        events
            .iter()
            .map(|e| opt_json(f(e.borrow())))
            .collect::<StringArray>(),
    )
}

fn int64s<E: Borrow<Event>>(events: &[E], f: impl Fn(&Event) -> i64) -> ArrayRef {
    Arc::new(Int64Array::from_iter_values(
        events.iter().map(|e| f(e.borrow())),
    ))
}

fn times(values: impl Iterator<Item = Option<i64>>) -> ArrayRef {
    Arc::new(
        values
            .collect::<TimestampMicrosecondArray>()
            .with_timezone("UTC"),
    )
}

/// The raw-event record batch of `events` (owned or borrowed), in their order.
pub fn events_to_record_batch<E: Borrow<Event>>(events: &[E]) -> Result<RecordBatch, LakeError> {
    let time = |f: fn(&Event) -> Option<i64>| times(events.iter().map(|e| f(e.borrow())));
    let columns: Vec<ArrayRef> = vec![
        required_strings(events, |e| &e.message_id),
        int64s(events, |e| e.tenant_id),
        int64s(events, |e| e.site_id),
        required_strings(events, |e| event_type_name(e.r#type())),
        strings(events, |e| &e.name),
        strings(events, |e| &e.anonymous_id),
        strings(events, |e| &e.user_id),
        required_strings(events, |e| &e.visitor_id),
        time(|e| Some(e.timestamp_us)),
        time(|e| Some(e.original_timestamp_us)),
        time(|e| (e.sent_at_us != 0).then_some(e.sent_at_us)),
        time(|e| Some(e.received_at_us)),
        strings(events, |e| &e.ip_truncated),
        strings(events, |e| &e.user_agent),
        strings(events, |e| &e.page_url),
        strings(events, |e| &e.page_referrer),
        strings(events, |e| &e.page_title),
        strings(events, |e| &e.locale),
        strings(events, |e| &e.group_id),
        strings(events, |e| &e.previous_id),
        json(events, |e| &e.context_json),
        json(events, |e| &e.properties_json),
        json(events, |e| &e.traits_json),
    ];
    Ok(RecordBatch::try_new(raw_event_schema(), columns)?)
}

/// The error record batch of `invalid` (owned or borrowed), in their order.
pub fn invalid_to_record_batch<E: Borrow<InvalidEvent>>(
    invalid: &[E],
) -> Result<RecordBatch, LakeError> {
    let rows = || invalid.iter().map(Borrow::borrow);
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(rows().map(|e| e.tenant_id))),
        Arc::new(Int64Array::from_iter_values(rows().map(|e| e.site_id))),
        Arc::new(StringArray::from_iter_values(
            rows().map(|e| e.reason.as_str()),
        )),
        Arc::new(rows().map(|e| opt(&e.detail)).collect::<StringArray>()),
        Arc::new(
            rows()
                .map(|e| (!e.raw.is_empty()).then_some(&e.raw[..]))
                .collect::<BinaryArray>(),
        ),
        times(rows().map(|e| Some(e.received_at_us))),
        Arc::new(rows().map(|e| opt(&e.message_id)).collect::<StringArray>()),
    ];
    Ok(RecordBatch::try_new(invalid_event_schema(), columns)?)
}

/// zstd-compressed Parquet bytes of one record batch, with Parquet's other defaults.
pub fn write_parquet(batch: &RecordBatch) -> Result<Bytes, LakeError> {
    let props = WriterProperties::builder()
        .set_compression(zstd(ZSTD_LEVEL))
        .build();
    write_with(batch, props)
}

fn write_with(batch: &RecordBatch, props: WriterProperties) -> Result<Bytes, LakeError> {
    let mut writer = ArrowWriter::try_new(Vec::new(), batch.schema(), Some(props))?;
    writer.write(batch)?;
    Ok(Bytes::from(writer.into_inner()?))
}

/// Parquet bytes of raw events (owned or borrowed).
pub fn events_to_parquet<E: Borrow<Event>>(events: &[E]) -> Result<Bytes, LakeError> {
    write_with(&events_to_record_batch(events)?, RAW_WRITER.clone())
}

/// Parquet bytes of invalid events (owned or borrowed).
pub fn invalid_to_parquet<E: Borrow<InvalidEvent>>(invalid: &[E]) -> Result<Bytes, LakeError> {
    write_parquet(&invalid_to_record_batch(invalid)?)
}

/// Every record batch of a Parquet file, checked against `expected`.
fn read_batches(bytes: Bytes, expected: &SchemaRef) -> Result<Vec<RecordBatch>, LakeError> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)?.build()?;
    let batches = reader.collect::<Result<Vec<_>, _>>()?;
    for b in &batches {
        if b.schema().fields() != expected.fields() {
            return Err(LakeError::Schema(format!(
                "expected {:?}, found {:?}",
                expected.fields(),
                b.schema().fields()
            )));
        }
    }
    Ok(batches)
}

/// Column readers that turn NULL back into proto3's empty value.
struct Columns<'a>(&'a RecordBatch);

impl<'a> Columns<'a> {
    fn get(&self, name: &str) -> Result<&'a ArrayRef, LakeError> {
        self.0
            .column_by_name(name)
            .ok_or_else(|| LakeError::Schema(format!("missing column {name}")))
    }
    fn str(&self, name: &str) -> Result<Vec<String>, LakeError> {
        let a = self
            .get(name)?
            .as_string_opt::<i32>()
            .ok_or_else(|| LakeError::Schema(format!("{name} is not Utf8")))?;
        Ok(a.iter()
            .map(|v| v.unwrap_or_default().to_string())
            .collect())
    }
    fn bin(&self, name: &str) -> Result<Vec<Vec<u8>>, LakeError> {
        let a = self
            .get(name)?
            .as_binary_opt::<i32>()
            .ok_or_else(|| LakeError::Schema(format!("{name} is not Binary")))?;
        Ok(a.iter().map(|v| v.unwrap_or_default().to_vec()).collect())
    }
    fn i64(&self, name: &str) -> Result<Vec<i64>, LakeError> {
        let a = self
            .get(name)?
            .as_primitive_opt::<Int64Type>()
            .ok_or_else(|| LakeError::Schema(format!("{name} is not Int64")))?;
        Ok(a.iter().map(Option::unwrap_or_default).collect())
    }
    fn ts(&self, name: &str) -> Result<Vec<i64>, LakeError> {
        let a = self
            .get(name)?
            .as_primitive_opt::<TimestampMicrosecondType>()
            .ok_or_else(|| LakeError::Schema(format!("{name} is not Timestamp(µs)")))?;
        Ok(a.iter().map(Option::unwrap_or_default).collect())
    }
}

/// The events of a raw-event Parquet file, in file order.
pub fn events_from_parquet(bytes: Bytes) -> Result<Vec<Event>, LakeError> {
    let mut out = Vec::new();
    for batch in read_batches(bytes, &raw_event_schema())? {
        out.extend(events_from_record_batch(&batch)?);
    }
    Ok(out)
}

/// The events of a batch with the raw-event columns (a file's, or a query's over raw files),
/// in row order. Columns are found by name; others are ignored.
pub fn events_from_record_batch(batch: &RecordBatch) -> Result<Vec<Event>, LakeError> {
    let rows = RawColumns::of(batch)?;
    Ok((0..batch.num_rows())
        .map(|row| rows.event(row, Fields::All))
        .collect())
}

/// The events at `rows` (batch index, row index) of `batches`, all with the raw-event columns,
/// in the order of `rows`, with `fields` filled: a selection and reordering of rows across
/// batches, read straight into events without first gathering the rows into one batch.
pub fn events_at(
    batches: &[RecordBatch],
    rows: impl IntoIterator<Item = (usize, usize)>,
    fields: Fields,
) -> Result<Vec<Event>, LakeError> {
    let columns = batches
        .iter()
        .map(RawColumns::of)
        .collect::<Result<Vec<_>, _>>()?;
    rows.into_iter()
        .map(|(batch, row)| {
            columns
                .get(batch)
                .filter(|c| row < c.len())
                .map(|c| c.event(row, fields))
                .ok_or_else(|| LakeError::Schema(format!("no row {row} in batch {batch}")))
        })
        .collect()
}

/// Which fields of an [`Event`] a read of raw rows fills.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fields {
    /// Every field.
    All,
    /// Those that enrichment and the figures derive from: message, tenant, site and visitor
    /// ids, type, name, event and receive times, user agent, page URL and referrer, context and
    /// properties. The rest (user and anonymous ids, page title, locale, truncated IP, group and
    /// previous ids, traits, original and sent times) stay empty, for a reader that copies those
    /// columns from the rows themselves instead of through events.
    Derived,
}

/// The raw-event columns of one batch, typed once so that each row is read without looking
/// them up again. The key columns are public for readers that decide about rows before (or
/// instead of) reading them as events.
pub struct RawColumns<'a> {
    /// `message_id`.
    pub message_id: &'a StringArray,
    /// `tenant_id`.
    pub tenant_id: &'a Int64Array,
    /// `site_id`.
    pub site_id: &'a Int64Array,
    /// `type`, by name ([`event_type_from_name`]).
    pub event_type: &'a StringArray,
    /// `visitor_id`.
    pub visitor_id: &'a StringArray,
    /// `timestamp`.
    pub timestamp: &'a TimestampMicrosecondArray,
    /// `received_at`.
    pub received_at: &'a TimestampMicrosecondArray,
    name: &'a StringArray,
    anonymous_id: &'a StringArray,
    user_id: &'a StringArray,
    original_timestamp: &'a TimestampMicrosecondArray,
    sent_at: &'a TimestampMicrosecondArray,
    ip_truncated: &'a StringArray,
    user_agent: &'a StringArray,
    page_url: &'a StringArray,
    page_referrer: &'a StringArray,
    page_title: &'a StringArray,
    locale: &'a StringArray,
    group_id: &'a StringArray,
    previous_id: &'a StringArray,
    context: Json<'a>,
    properties: Json<'a>,
    traits: Json<'a>,
}

/// A JSON column whose rows become [`Bytes`] that share the column's memory instead of copies.
struct Json<'a> {
    column: &'a StringArray,
    values: Bytes,
}

/// An Arrow buffer as the owner of [`Bytes`].
struct Shared(arrow::buffer::Buffer);

impl AsRef<[u8]> for Shared {
    fn as_ref(&self) -> &[u8] {
        self.0.as_slice()
    }
}

impl<'a> Json<'a> {
    fn of(column: &'a StringArray) -> Self {
        Self {
            column,
            values: Bytes::from_owner(Shared(column.values().clone())),
        }
    }

    /// Row `row`; null reads as empty.
    fn at(&self, row: usize) -> Bytes {
        if self.column.is_null(row) {
            return Bytes::new();
        }
        let offsets = self.column.value_offsets();
        self.values
            .slice(offsets[row] as usize..offsets[row + 1] as usize)
    }
}

impl<'a> RawColumns<'a> {
    /// The raw-event columns of `batch`, found by name (others are ignored); an error names
    /// the first one missing or of a wrong type.
    pub fn of(batch: &'a RecordBatch) -> Result<Self, LakeError> {
        let column = |name: &str| {
            batch
                .column_by_name(name)
                .ok_or_else(|| LakeError::Schema(format!("missing column {name}")))
        };
        let text = |name: &str| {
            column(name)?
                .as_string_opt::<i32>()
                .ok_or_else(|| LakeError::Schema(format!("{name} is not Utf8")))
        };
        let int = |name: &str| {
            column(name)?
                .as_primitive_opt::<Int64Type>()
                .ok_or_else(|| LakeError::Schema(format!("{name} is not Int64")))
        };
        let time = |name: &str| {
            column(name)?
                .as_primitive_opt::<TimestampMicrosecondType>()
                .ok_or_else(|| LakeError::Schema(format!("{name} is not Timestamp(µs)")))
        };
        Ok(Self {
            message_id: text("message_id")?,
            tenant_id: int("tenant_id")?,
            site_id: int("site_id")?,
            event_type: text("type")?,
            name: text("name")?,
            anonymous_id: text("anonymous_id")?,
            user_id: text("user_id")?,
            visitor_id: text("visitor_id")?,
            timestamp: time("timestamp")?,
            original_timestamp: time("original_timestamp")?,
            sent_at: time("sent_at")?,
            received_at: time("received_at")?,
            ip_truncated: text("ip_truncated")?,
            user_agent: text("user_agent")?,
            page_url: text("page_url")?,
            page_referrer: text("page_referrer")?,
            page_title: text("page_title")?,
            locale: text("locale")?,
            group_id: text("group_id")?,
            previous_id: text("previous_id")?,
            context: Json::of(text("context")?),
            properties: Json::of(text("properties")?),
            traits: Json::of(text("traits")?),
        })
    }

    /// Rows in the batch.
    pub fn len(&self) -> usize {
        self.message_id.len()
    }

    /// Whether the batch has no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Row `row` (below [`len`](Self::len)) as an event with `fields` filled; nulls read as
    /// empty.
    pub fn event(&self, row: usize, fields: Fields) -> Event {
        let text =
            |a: &'a StringArray| -> &'a str { if a.is_null(row) { "" } else { a.value(row) } };
        let int = |a: &Int64Array| if a.is_null(row) { 0 } else { a.value(row) };
        let time = |a: &TimestampMicrosecondArray| if a.is_null(row) { 0 } else { a.value(row) };
        let mut e = Event {
            message_id: text(self.message_id).to_owned(),
            tenant_id: int(self.tenant_id),
            site_id: int(self.site_id),
            name: text(self.name).to_owned(),
            visitor_id: text(self.visitor_id).to_owned(),
            timestamp_us: time(self.timestamp),
            received_at_us: time(self.received_at),
            user_agent: text(self.user_agent).to_owned(),
            page_url: text(self.page_url).to_owned(),
            page_referrer: text(self.page_referrer).to_owned(),
            context_json: self.context.at(row),
            properties_json: self.properties.at(row),
            ..Default::default()
        };
        e.set_type(event_type_from_name(text(self.event_type)));
        if fields == Fields::All {
            e.anonymous_id = text(self.anonymous_id).to_owned();
            e.user_id = text(self.user_id).to_owned();
            e.original_timestamp_us = time(self.original_timestamp);
            e.sent_at_us = time(self.sent_at);
            e.ip_truncated = text(self.ip_truncated).to_owned();
            e.page_title = text(self.page_title).to_owned();
            e.locale = text(self.locale).to_owned();
            e.group_id = text(self.group_id).to_owned();
            e.previous_id = text(self.previous_id).to_owned();
            e.traits_json = self.traits.at(row);
        }
        e
    }
}

/// The invalid events of an error Parquet file, in file order.
pub fn invalid_from_parquet(bytes: Bytes) -> Result<Vec<InvalidEvent>, LakeError> {
    let mut out = Vec::new();
    for batch in read_batches(bytes, &invalid_event_schema())? {
        let c = Columns(&batch);
        let tenant_id = c.i64("tenant_id")?;
        let site_id = c.i64("site_id")?;
        let mut reason = c.str("error_reason")?.into_iter();
        let mut detail = c.str("detail")?.into_iter();
        let mut raw = c.bin("raw")?.into_iter();
        let received_at = c.ts("received_at")?;
        let mut message_id = c.str("message_id")?.into_iter();
        for i in 0..batch.num_rows() {
            out.push(InvalidEvent {
                tenant_id: tenant_id[i],
                site_id: site_id[i],
                reason: reason.next().unwrap_or_default(),
                detail: detail.next().unwrap_or_default(),
                raw: raw.next().unwrap_or_default().into(),
                received_at_us: received_at[i],
                message_id: message_id.next().unwrap_or_default(),
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use arrow::array::Array;
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use sightline_proto::events::v1::EventType;

    use super::*;

    /// An event with every field set to a distinct value.
    fn full_event(n: i64) -> Event {
        let mut e = Event {
            message_id: format!("msg-{n}"),
            tenant_id: 7,
            site_id: 70 + n,
            name: "Order Completed".into(),
            anonymous_id: format!("anon-{n}"),
            user_id: "user-1".into(),
            visitor_id: "visitor-1".into(),
            timestamp_us: 1_741_564_799_000_000 + n,
            original_timestamp_us: 1_741_564_700_000_000,
            sent_at_us: 1_741_564_701_000_000,
            received_at_us: 1_741_564_702_000_000,
            ip_truncated: "203.0.113.0".into(),
            user_agent: "Mozilla/5.0".into(),
            page_url: "https://shop.example/cart?x=1".into(),
            page_referrer: "https://www.google.com/".into(),
            page_title: "Cart — Shop ✓".into(),
            locale: "fr-FR".into(),
            group_id: "group-9".into(),
            previous_id: "prev-3".into(),
            context_json: Bytes::from_static(br#"{"library":{"name":"analytics.js"}}"#),
            properties_json: Bytes::from_static(br#"{"revenue":12.5,"currency":"EUR"}"#),
            traits_json: Bytes::from_static(br#"{"plan":"pro"}"#),
            ..Default::default()
        };
        e.set_type(EventType::Track);
        e
    }

    #[test]
    fn events_with_every_field_set_round_trip() {
        let mut events: Vec<Event> = (0..3).map(full_event).collect();
        events[1].set_type(EventType::Alias);
        let bytes = events_to_parquet(&events).unwrap();
        assert_eq!(events_from_parquet(bytes).unwrap(), events);
    }

    #[test]
    fn rows_of_several_batches_are_read_in_the_order_asked() {
        let events: Vec<Event> = (0..5).map(full_event).collect();
        let first = events_to_record_batch(&events[..2]).unwrap();
        let second = events_to_record_batch(&events[2..]).unwrap();
        let batches = [first, second];
        let picked = events_at(&batches, [(1, 2), (0, 0), (1, 0), (0, 1)], Fields::All).unwrap();
        let expected = [&events[4], &events[0], &events[2], &events[1]];
        assert_eq!(picked.iter().collect::<Vec<_>>(), expected);
        assert!(
            events_at(&batches, [(0, 2)], Fields::All).is_err(),
            "no third row in the first batch"
        );
        assert!(
            events_at(&batches, [(2, 0)], Fields::All).is_err(),
            "no third batch"
        );
    }

    #[test]
    fn a_derived_read_fills_what_figures_derive_from_and_nothing_else() {
        let event = full_event(1);
        let batch = events_to_record_batch(&[&event]).unwrap();
        let derived = events_at(&[batch], [(0, 0)], Fields::Derived).unwrap();
        let expected = Event {
            anonymous_id: String::new(),
            user_id: String::new(),
            original_timestamp_us: 0,
            sent_at_us: 0,
            ip_truncated: String::new(),
            page_title: String::new(),
            locale: String::new(),
            group_id: String::new(),
            previous_id: String::new(),
            traits_json: Bytes::new(),
            ..event
        };
        assert_eq!(derived, [expected]);
    }

    #[test]
    fn json_fields_of_a_sliced_batch_are_their_own_rows() {
        let events: Vec<Event> = (0..4)
            .map(|n| {
                let mut e = full_event(n);
                e.properties_json = Bytes::from(format!(r#"{{"n":{n}}}"#));
                e.traits_json = Bytes::from("x".repeat(n as usize));
                e
            })
            .collect();
        let batch = events_to_record_batch(&events).unwrap();
        assert_eq!(
            events_from_record_batch(&batch.slice(1, 2)).unwrap(),
            events[1..3]
        );
    }

    #[test]
    fn absent_fields_round_trip_as_nulls() {
        let mut e = Event {
            message_id: "m".into(),
            visitor_id: "v".into(),
            timestamp_us: 1,
            original_timestamp_us: 1,
            received_at_us: 2,
            ..Default::default()
        };
        e.set_type(EventType::Page);
        let batch = events_to_record_batch(std::slice::from_ref(&e)).unwrap();
        assert!(batch.column_by_name("sent_at").unwrap().is_null(0));
        assert!(batch.column_by_name("properties").unwrap().is_null(0));
        assert!(batch.column_by_name("user_id").unwrap().is_null(0));
        let bytes = write_parquet(&batch).unwrap();
        assert_eq!(events_from_parquet(bytes).unwrap(), vec![e]);
    }

    #[test]
    fn files_are_zstd_compressed() {
        let bytes = events_to_parquet(&[full_event(1)]).unwrap();
        let reader = SerializedFileReader::new(bytes).unwrap();
        let rg = reader.metadata().row_group(0);
        for col in rg.columns() {
            assert!(
                matches!(col.compression(), Compression::ZSTD(_)),
                "{:?}",
                col.compression()
            );
        }
    }

    #[test]
    fn invalid_events_round_trip_with_non_utf8_raw_bytes() {
        let invalid = vec![
            InvalidEvent {
                tenant_id: 1,
                site_id: 2,
                reason: "event_too_large".into(),
                detail: "33 KB, limit 32 KB".into(),
                raw: Bytes::from_static(&[0xff, 0xfe, b'{']),
                received_at_us: 1_741_564_702_000_000,
                message_id: "m1".into(),
            },
            InvalidEvent {
                reason: "unparseable".into(),
                received_at_us: 5,
                ..Default::default()
            },
        ];
        let bytes = invalid_to_parquet(&invalid).unwrap();
        assert_eq!(invalid_from_parquet(bytes).unwrap(), invalid);
    }

    #[test]
    fn a_file_of_the_other_schema_is_refused() {
        let bytes = invalid_to_parquet(&[InvalidEvent::default()]).unwrap();
        assert!(matches!(
            events_from_parquet(bytes),
            Err(LakeError::Schema(_))
        ));
    }
}
