//! Stage 1's output: the Arrow tables of `trusted/` for one tenant-day.
//!
//! - `events`: the day's unique, valid events with every enrichment, the visit they belong to,
//!   the site's reference data (time zone, currency) and, one struct column per
//!   `batch.reference_joins` rule, the matching row of the tenant's reference dataset;
//! - `sessions`: the visits that started in the day, whole (also when they cross midnight);
//! - `daily_metrics`: one row per site and day, computed with DataFusion SQL from the two
//!   tables above joined with the sites (exact unique visitors, not a sketch).
//!
//! No column is named `tenant` or `date`: those are the Hive partitions of the path.

use std::sync::{Arc, LazyLock};

use arrow::{
    array::{
        Array, ArrayRef, AsArray, BooleanArray, Date32Array, Int64Array, RecordBatch, StringArray,
        StringBuilder, TimestampMicrosecondArray,
    },
    buffer::{BooleanBuffer, NullBuffer},
    datatypes::{DataType, Field, Schema, SchemaRef},
};
use chrono::NaiveDate;
use datafusion::{datasource::MemTable, prelude::SessionContext};
use sightline_lake::schema::{event_type_name, timestamp_type};
use stream_processor::rollup::fact::Kind;
use uuid::{Uuid, fmt::Hyphenated};

use crate::{
    BatchError,
    days::TenantDay,
    enrich::{Prepared, Rejected, Visit},
    raw::Sorted,
    reference::Table,
};

fn utf8(name: &str, nullable: bool) -> Field {
    Field::new(name, DataType::Utf8, nullable)
}

static EVENTS: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        utf8("message_id", false),
        Field::new("site_id", DataType::Int64, false),
        utf8("type", false),
        utf8("name", true),
        utf8("visitor_id", false),
        utf8("user_id", true),
        utf8("anonymous_id", true),
        Field::new("timestamp", timestamp_type(), false),
        Field::new("received_at", timestamp_type(), false),
        utf8("session_id", true),
        Field::new("is_pageview", DataType::Boolean, false),
        utf8("page", true),
        utf8("host", true),
        utf8("path", true),
        utf8("page_url", true),
        utf8("page_referrer", true),
        utf8("page_title", true),
        utf8("browser", false),
        utf8("browser_major", true),
        utf8("os", false),
        utf8("os_major", true),
        utf8("device", false),
        utf8("bot_reason", true),
        utf8("source", false),
        utf8("medium", false),
        utf8("utm_source", true),
        utf8("utm_medium", true),
        utf8("utm_campaign", true),
        utf8("utm_term", true),
        utf8("utm_content", true),
        Field::new("revenue_micros", DataType::Int64, true),
        utf8("order_currency", true),
        utf8("site_currency", false),
        utf8("time_zone", false),
        utf8("locale", true),
        utf8("context", true),
        utf8("properties", true),
    ]))
});

static SESSIONS: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        utf8("session_id", false),
        Field::new("site_id", DataType::Int64, false),
        utf8("visitor_id", false),
        Field::new("started_at", timestamp_type(), false),
        Field::new("ended_at", timestamp_type(), false),
        Field::new("duration_us", DataType::Int64, false),
        Field::new("events", DataType::Int64, false),
        Field::new("pageviews", DataType::Int64, false),
        Field::new("is_bounce", DataType::Boolean, false),
        utf8("entry_page", true),
        utf8("exit_page", true),
        utf8("source", false),
        utf8("medium", false),
        utf8("utm_source", true),
        utf8("utm_medium", true),
        utf8("utm_campaign", true),
        utf8("browser", false),
        utf8("os", false),
        utf8("device", false),
    ]))
});

static REJECTED: LazyLock<SchemaRef> = LazyLock::new(|| {
    let mut fields: Vec<Field> = sightline_lake::schema::raw_event_schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields.push(utf8("error_reason", false));
    Arc::new(Schema::new(fields))
});

/// The schema of `trusted/events`.
pub fn events_schema() -> SchemaRef {
    EVENTS.clone()
}

/// The schema of `errors/batch`: the raw schema and `error_reason`.
pub fn rejected_schema() -> SchemaRef {
    REJECTED.clone()
}

/// The schema of `trusted/sessions`.
pub fn sessions_schema() -> SchemaRef {
    SESSIONS.clone()
}

fn opt(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

fn strings<'a, T: 'a>(rows: &'a [T], f: impl Fn(&'a T) -> Option<&'a str>) -> ArrayRef {
    Arc::new(rows.iter().map(f).collect::<StringArray>())
}

fn times<T>(rows: &[T], f: impl Fn(&T) -> i64) -> ArrayRef {
    Arc::new(
        rows.iter()
            .map(|r| Some(f(r)))
            .collect::<TimestampMicrosecondArray>()
            .with_timezone("UTC"),
    )
}

fn ints<T>(rows: &[T], f: impl Fn(&T) -> Option<i64>) -> ArrayRef {
    Arc::new(rows.iter().map(f).collect::<Int64Array>())
}

/// Ids as hyphenated lowercase text, written straight into the column.
fn uuids(ids: impl ExactSizeIterator<Item = Option<Uuid>>) -> ArrayRef {
    let mut column = StringBuilder::with_capacity(ids.len(), ids.len() * Hyphenated::LENGTH);
    let mut text = Uuid::encode_buffer();
    for id in ids {
        match id {
            Some(id) => column.append_value(id.hyphenated().encode_lower(&mut text)),
            None => column.append_null(),
        }
    }
    Arc::new(column.finish())
}

/// A text column with its empty values null, as the lake writes optional fields: a column
/// copied from raw rows then reads the same whichever writer wrote them.
fn empty_as_null(column: ArrayRef) -> Result<ArrayRef, BatchError> {
    let text = column
        .as_string_opt::<i32>()
        .ok_or_else(|| BatchError::Invalid("raw events: a text column of a wrong type".into()))?;
    let offsets = text.value_offsets();
    let filled = BooleanBuffer::collect_bool(text.len(), |i| offsets[i + 1] > offsets[i]);
    let nulls = NullBuffer::union(text.nulls(), Some(&NullBuffer::new(filled)));
    if nulls.as_ref().map(NullBuffer::null_count) == text.nulls().map(NullBuffer::null_count) {
        return Ok(column);
    }
    Ok(Arc::new(StringArray::new(
        text.offsets().clone(),
        text.values().clone(),
        nulls,
    )))
}

/// `trusted/events` of the day: `events` already filtered to their site's day, joined with
/// `references`. The columns that pass through unchanged are copied from `rows`, which the
/// events were read from.
pub fn events_batch(
    events: &[&Prepared],
    rows: &Sorted,
    day: &TenantDay,
    references: &[Table],
) -> Result<RecordBatch, BatchError> {
    let at: Vec<usize> = events.iter().map(|p| p.row).collect();
    let required = |name: &str| rows.column(name, &at);
    let optional = |name: &str| rows.column(name, &at).and_then(empty_as_null);
    let site = |p: &Prepared| day.site(p.event.site_id);
    let zone: Vec<&str> = events
        .iter()
        .map(|p| site(p).map_or("", |s| s.zone.name()))
        .collect();
    let currency: Vec<&str> = events
        .iter()
        .map(|p| site(p).map_or("", |s| s.currency.as_str()))
        .collect();
    let mut columns: Vec<ArrayRef> = vec![
        required("message_id")?,
        ints(events, |p| Some(p.event.site_id)),
        strings(events, |p| Some(event_type_name(p.event.r#type()))),
        optional("name")?,
        required("visitor_id")?,
        optional("user_id")?,
        optional("anonymous_id")?,
        times(events, |p| p.event.timestamp_us),
        times(events, |p| p.event.received_at_us),
        uuids(events.iter().map(|p| p.session_id)),
        Arc::new(
            events
                .iter()
                .map(|p| Some(p.fact.kind == Kind::Pageview))
                .collect::<BooleanArray>(),
        ),
        strings(events, |p| opt(&p.fact.page)),
        strings(events, |p| opt(&p.detail.host)),
        strings(events, |p| opt(&p.detail.path)),
        optional("page_url")?,
        optional("page_referrer")?,
        optional("page_title")?,
        strings(events, |p| Some(p.fact.attrs.browser.as_str())),
        strings(events, |p| opt(&p.detail.browser_major)),
        strings(events, |p| Some(p.fact.attrs.os.as_str())),
        strings(events, |p| opt(&p.detail.os_major)),
        strings(events, |p| Some(p.fact.attrs.device.as_str())),
        strings(events, |p| p.fact.bot.map(|b| b.as_str())),
        strings(events, |p| Some(p.fact.attrs.source.as_str())),
        strings(events, |p| Some(p.fact.attrs.medium.as_str())),
        strings(events, |p| opt(&p.fact.attrs.utm_source)),
        strings(events, |p| opt(&p.fact.attrs.utm_medium)),
        strings(events, |p| opt(&p.fact.attrs.utm_campaign)),
        strings(events, |p| opt(&p.detail.utm_term)),
        strings(events, |p| opt(&p.detail.utm_content)),
        ints(events, |p| p.fact.order.as_ref().map(|o| o.revenue_micros)),
        Arc::new(
            events
                .iter()
                .zip(&currency)
                .map(|(p, site)| {
                    p.fact
                        .order
                        .as_ref()
                        .map(|o| o.currency.as_deref().unwrap_or(site))
                })
                .collect::<StringArray>(),
        ),
        Arc::new(StringArray::from_iter_values(currency.iter())),
        Arc::new(StringArray::from_iter_values(zone.iter())),
        optional("locale")?,
        optional("context")?,
        optional("properties")?,
    ];
    let mut fields: Vec<Field> = EVENTS.fields().iter().map(|f| f.as_ref().clone()).collect();
    for table in references {
        let (field, column) =
            table.column(events.iter().map(|p| p.event.properties_json.as_ref()))?;
        fields.push(field);
        columns.push(column);
    }
    Ok(RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns,
    )?)
}

/// `trusted/sessions` of the day: `visits` already filtered to those starting in it.
pub fn sessions_batch(visits: &[&Visit]) -> Result<RecordBatch, BatchError> {
    let columns: Vec<ArrayRef> = vec![
        uuids(visits.iter().map(|v| Some(v.session_id))),
        ints(visits, |v| Some(v.site_id)),
        strings(visits, |v| Some(v.visitor_id.as_str())),
        times(visits, |v| v.start_us),
        times(visits, |v| v.end_us),
        ints(visits, |v| Some(v.end_us - v.start_us)),
        ints(visits, |v| Some(i64::from(v.events))),
        ints(visits, |v| Some(i64::from(v.pageviews))),
        Arc::new(
            visits
                .iter()
                .map(|v| Some(v.pageviews == 1))
                .collect::<BooleanArray>(),
        ),
        strings(visits, |v| v.entry_page.as_deref()),
        strings(visits, |v| v.exit_page.as_deref()),
        strings(visits, |v| Some(v.attrs.source.as_str())),
        strings(visits, |v| Some(v.attrs.medium.as_str())),
        strings(visits, |v| opt(&v.attrs.utm_source)),
        strings(visits, |v| opt(&v.attrs.utm_medium)),
        strings(visits, |v| opt(&v.attrs.utm_campaign)),
        strings(visits, |v| Some(v.attrs.browser.as_str())),
        strings(visits, |v| Some(v.attrs.os.as_str())),
        strings(visits, |v| Some(v.attrs.device.as_str())),
    ];
    Ok(RecordBatch::try_new(sessions_schema(), columns)?)
}

/// The rejected events, their raw rows as stored (copied from `rows`, which they were read
/// from) and `error_reason`.
pub fn rejected_batch(rejected: &[Rejected], rows: &Sorted) -> Result<RecordBatch, BatchError> {
    let at: Vec<usize> = rejected.iter().map(|r| r.row).collect();
    let raw = rows.rows(&at)?;
    let mut columns = raw.columns().to_vec();
    columns.push(Arc::new(StringArray::from_iter_values(
        rejected.iter().map(|r| r.reason),
    )));
    Ok(RecordBatch::try_new(REJECTED.clone(), columns)?)
}

/// The sites of the day as a table: the reference data the metrics join.
fn sites_batch(day: &TenantDay) -> Result<RecordBatch, BatchError> {
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default();
    let days = (day.day - epoch).num_days() as i32;
    let schema = Arc::new(Schema::new(vec![
        Field::new("site_id", DataType::Int64, false),
        Field::new("day", DataType::Date32, false),
        utf8("time_zone", false),
        utf8("currency", false),
    ]));
    let s = &day.sites;
    let columns: Vec<ArrayRef> = vec![
        ints(s, |s| Some(s.site_id)),
        Arc::new(Date32Array::from(vec![days; s.len()])),
        Arc::new(StringArray::from_iter_values(
            s.iter().map(|s| s.zone.name()),
        )),
        Arc::new(StringArray::from_iter_values(
            s.iter().map(|s| s.currency.as_str()),
        )),
    ];
    Ok(RecordBatch::try_new(schema, columns)?)
}

/// The day's `trusted/daily_metrics` from those of chunks of disjoint visitors (each from
/// [`daily_metrics`]): every figure, unique visitors included, is their sum.
pub async fn total_metrics(partials: Vec<RecordBatch>) -> Result<Vec<RecordBatch>, BatchError> {
    let schema = partials
        .first()
        .map(RecordBatch::schema)
        .ok_or_else(|| BatchError::Invalid("no daily metrics to add up".into()))?;
    let ctx = SessionContext::new();
    ctx.register_table(
        "partials",
        Arc::new(MemTable::try_new(schema, vec![partials])?),
    )?;
    let sql = "
        SELECT site_id, day, time_zone, currency,
          CAST(sum(events) AS BIGINT) AS events,
          CAST(sum(pageviews) AS BIGINT) AS pageviews,
          CAST(sum(visitors) AS BIGINT) AS visitors,
          CAST(sum(visits) AS BIGINT) AS visits,
          CAST(sum(bounces) AS BIGINT) AS bounces,
          CAST(sum(duration_us) AS BIGINT) AS duration_us,
          CAST(sum(orders) AS BIGINT) AS orders,
          CAST(sum(revenue_micros) AS BIGINT) AS revenue_micros,
          CAST(sum(bot_events) AS BIGINT) AS bot_events
        FROM partials GROUP BY site_id, day, time_zone, currency ORDER BY site_id";
    Ok(ctx.sql(sql).await?.collect().await?)
}

/// `trusted/daily_metrics`: one row per site of the day (zeros for a site without events).
pub async fn daily_metrics(
    day: &TenantDay,
    events: RecordBatch,
    sessions: RecordBatch,
) -> Result<Vec<RecordBatch>, BatchError> {
    let ctx = SessionContext::new();
    for (name, batch) in [
        ("events", events),
        ("sessions", sessions),
        ("sites", sites_batch(day)?),
    ] {
        let table = MemTable::try_new(batch.schema(), vec![vec![batch]])?;
        ctx.register_table(name, Arc::new(table))?;
    }
    // Orders count on the site's figures only in the site's currency, as in the rollups.
    let sql = "
        WITH e AS (
          SELECT site_id,
            sum(CASE WHEN bot_reason IS NULL THEN 1 ELSE 0 END) AS events,
            sum(CASE WHEN bot_reason IS NULL AND is_pageview THEN 1 ELSE 0 END) AS pageviews,
            count(DISTINCT CASE WHEN bot_reason IS NULL THEN visitor_id END) AS visitors,
            sum(CASE WHEN bot_reason IS NULL AND order_currency = site_currency
                THEN 1 ELSE 0 END) AS orders,
            sum(CASE WHEN bot_reason IS NULL AND order_currency = site_currency
                THEN revenue_micros ELSE 0 END) AS revenue_micros,
            sum(CASE WHEN bot_reason IS NOT NULL THEN 1 ELSE 0 END) AS bot_events
          FROM events GROUP BY site_id),
        s AS (
          SELECT site_id, count(*) AS visits,
            sum(CASE WHEN is_bounce THEN 1 ELSE 0 END) AS bounces,
            sum(duration_us) AS duration_us
          FROM sessions GROUP BY site_id)
        SELECT sites.site_id, sites.day, sites.time_zone, sites.currency,
          CAST(coalesce(e.events, 0) AS BIGINT) AS events,
          CAST(coalesce(e.pageviews, 0) AS BIGINT) AS pageviews,
          CAST(coalesce(e.visitors, 0) AS BIGINT) AS visitors,
          CAST(coalesce(s.visits, 0) AS BIGINT) AS visits,
          CAST(coalesce(s.bounces, 0) AS BIGINT) AS bounces,
          CAST(coalesce(s.duration_us, 0) AS BIGINT) AS duration_us,
          CAST(coalesce(e.orders, 0) AS BIGINT) AS orders,
          CAST(coalesce(e.revenue_micros, 0) AS BIGINT) AS revenue_micros,
          CAST(coalesce(e.bot_events, 0) AS BIGINT) AS bot_events
        FROM sites
        LEFT JOIN e ON e.site_id = sites.site_id
        LEFT JOIN s ON s.site_id = sites.site_id
        ORDER BY sites.site_id";
    Ok(ctx.sql(sql).await?.collect().await?)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use bytes::Bytes;
    use chrono::Utc;
    use sightline_event::Enricher;
    use sightline_lake::schema::raw_event_schema;
    use sightline_proto::events::v1::{Event, EventType};

    use super::*;
    use crate::{
        days::SiteDay,
        enrich::{Rules, prepare, sessionise},
    };

    #[test]
    fn columns_that_pass_through_are_the_raw_rows_own() {
        let date = NaiveDate::from_ymd_opt(2026, 1, 15).unwrap();
        let site = sightline_db::Site {
            tenant_id: 1,
            id: 2,
            domain: "s.example".into(),
            time_zone: "Europe/Paris".into(),
            currency: "EUR".into(),
            created_at: Utc::now(),
        };
        let site_day = SiteDay::of(&site, date).unwrap();
        let t = site_day.starts_us + 3_600_000_000;
        let event = |id: &str, site_id: i64, t: i64, kind: EventType| {
            let mut e = Event {
                message_id: id.into(),
                tenant_id: 1,
                site_id,
                visitor_id: "v".into(),
                timestamp_us: t,
                original_timestamp_us: t,
                received_at_us: t,
                page_url: "https://s.example/cart".into(),
                ..Event::default()
            };
            e.set_type(kind);
            e
        };
        let full = Event {
            name: "Order Completed".into(),
            user_id: "u-1".into(),
            anonymous_id: "a-1".into(),
            page_referrer: "https://www.google.com/".into(),
            page_title: "Cart ✓".into(),
            locale: "fr-FR".into(),
            context_json: Bytes::from_static(br#"{"library":{"name":"analytics.js"}}"#),
            properties_json: Bytes::from_static(br#"{"revenue":3,"currency":"EUR"}"#),
            ..event("full", 2, t, EventType::Track)
        };
        let stranger = Event {
            ip_truncated: "203.0.113.0".into(),
            group_id: "g-1".into(),
            traits_json: Bytes::from_static(br#"{"plan":"pro"}"#),
            sent_at_us: t + 5,
            ..event("stranger", 99, t + 2, EventType::Identify)
        };
        let written = sightline_lake::parquet::events_to_record_batch(&[
            full,
            event("bare", 2, t + 1, EventType::Page),
            stranger,
        ])
        .unwrap();
        // Another writer's empty locale, stored as "" instead of null.
        let (locale, _) = written.schema().column_with_name("locale").unwrap();
        let mut columns = written.columns().to_vec();
        columns[locale] = Arc::new(StringArray::from(vec![Some("fr-FR"), Some(""), None]));
        let raw = RecordBatch::try_new(raw_event_schema(), columns).unwrap();
        let rows = Sorted::in_order(vec![raw.clone()]);

        let enricher = Enricher::new().unwrap();
        let sites = HashSet::from([2]);
        let (mut prepared, rejected) =
            prepare(&enricher, &Rules::default(), rows.events().unwrap(), &sites);
        sessionise(&mut prepared);
        let day = TenantDay {
            tenant_id: 1,
            day: date,
            sites: vec![site_day],
            known_sites: sites,
        };
        let refs: Vec<&Prepared> = prepared.iter().collect();
        let events = events_batch(&refs, &rows, &day, &[]).unwrap();
        let text = |name: &str| -> Vec<Option<String>> {
            let column = events.column_by_name(name).unwrap().as_string::<i32>();
            column.iter().map(|v| v.map(str::to_owned)).collect()
        };
        let some = |v: &str| Some(v.to_owned());
        assert_eq!(text("message_id"), [some("full"), some("bare")]);
        assert_eq!(text("visitor_id"), [some("v"), some("v")]);
        assert_eq!(text("name"), [some("Order Completed"), None]);
        assert_eq!(text("user_id"), [some("u-1"), None]);
        assert_eq!(text("anonymous_id"), [some("a-1"), None]);
        let url = some("https://s.example/cart");
        assert_eq!(text("page_url"), [url.clone(), url]);
        assert_eq!(
            text("page_referrer"),
            [some("https://www.google.com/"), None]
        );
        assert_eq!(text("page_title"), [some("Cart ✓"), None]);
        assert_eq!(text("locale"), [some("fr-FR"), None], "empty is null");
        assert_eq!(
            text("context"),
            [some(r#"{"library":{"name":"analytics.js"}}"#), None]
        );
        assert_eq!(
            text("properties"),
            [some(r#"{"revenue":3,"currency":"EUR"}"#), None]
        );
        assert_eq!(text("path"), [some("/cart"), some("/cart")], "enriched");
        assert_eq!(text("order_currency"), [some("EUR"), None]);

        // A rejected row is kept whole, as stored, with its reason.
        let rejected = rejected_batch(&rejected, &rows).unwrap();
        assert_eq!(rejected.num_rows(), 1);
        let stored = raw.slice(2, 1);
        for (i, field) in raw_event_schema().fields().iter().enumerate() {
            assert_eq!(
                rejected.column(i).to_data(),
                stored.column(i).to_data(),
                "{}",
                field.name()
            );
        }
        let reason = rejected.column_by_name("error_reason").unwrap();
        assert_eq!(reason.as_string::<i32>().value(0), "unknown_site");
    }
}
