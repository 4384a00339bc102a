//! The archive tests' batches: known events over three UTC hours across midnight, and the
//! check that the lake holds each of them exactly once.

use std::collections::{BTreeSet, HashMap};

use bytes::Bytes;
use chrono::{DateTime, Timelike};
use sightline_proto::events::v1::{Event, EventBatch, EventType};
use stream_processor::{
    archive::EVENT_BATCH,
    sink::{Incoming, Sink},
};

use super::World;

pub const HOUR: i64 = 3_600_000_000;
pub const MINUTE: i64 = 60_000_000;
/// 2025-03-09T22:30:00Z: batches span hours 22 and 23 of the 9th and 00 of the 10th.
pub const T0: i64 = 1_741_559_400_000_000;

/// Event `n` of batch `batch`: three tenants, their own sites, pages and tracks, over three
/// UTC hours across midnight.
pub fn event(batch: &str, n: i64) -> Event {
    let tenant_id = 1 + n % 3;
    let timestamp_us = T0 + (n * 17 * MINUTE) % (3 * HOUR) - 25 * MINUTE + n * 1_000;
    let r#type = if n % 2 == 0 {
        EventType::Track
    } else {
        EventType::Page
    };
    Event {
        message_id: format!("{batch}-{n}"),
        tenant_id,
        site_id: 100 + tenant_id,
        r#type: r#type.into(),
        name: if n % 2 == 0 {
            "Order Completed".into()
        } else {
            String::new()
        },
        anonymous_id: format!("anon-{n}"),
        user_id: if n % 4 == 0 {
            format!("user-{n}")
        } else {
            String::new()
        },
        visitor_id: format!("anon-{n}"),
        timestamp_us,
        original_timestamp_us: timestamp_us - 2_000,
        sent_at_us: timestamp_us + 1_000,
        received_at_us: timestamp_us + 5_000,
        page_url: format!("https://shop{tenant_id}.example/p/{n}"),
        context_json: Bytes::from(format!(
            r#"{{"library":{{"name":"analytics.js"}},"n":{n}}}"#
        )),
        properties_json: Bytes::from(format!(
            r#"{{"revenue":{n}.25,"items":[{{"sku":"A-{n}"}}],"note":"é ✓"}}"#
        )),
        ..Default::default()
    }
}

pub fn batch(id: &str, partition: u32, events: std::ops::Range<i64>) -> EventBatch {
    EventBatch {
        batch_id: id.into(),
        partition,
        created_at_us: T0,
        events: events.map(|n| event(id, n)).collect(),
    }
}

pub fn incoming(batch: &EventBatch) -> (Vec<u8>, String) {
    (prost::Message::encode_to_vec(batch), batch.batch_id.clone())
}

/// Hands `batches` to `sink` as the broker would.
pub fn accept_all(sink: &mut impl Sink, batches: &[&EventBatch]) {
    for b in batches {
        let (payload, id) = incoming(b);
        sink.accept(Incoming {
            message_id: Some(&id),
            kind: Some(EVENT_BATCH),
            redelivered: false,
            payload: &payload,
        })
        .unwrap();
    }
}

pub fn utc(us: i64) -> DateTime<chrono::Utc> {
    DateTime::from_timestamp_micros(us).unwrap()
}

/// DuckDB's rows hold every event of `batches` exactly once, in the partition of its tenant and
/// UTC event hour, with the values sent; the ledger has no unfinished flush and one row per
/// batch.
pub async fn assert_archived_exactly_once(world: &World, batches: &[&EventBatch]) {
    let rows = world.raw_rows().await;
    let mut sent: HashMap<String, &Event> = HashMap::new();
    let mut batch_ids = BTreeSet::new();
    for b in batches {
        batch_ids.insert(b.batch_id.clone());
        for e in &b.events {
            sent.insert(e.message_id.clone(), e);
        }
    }
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for row in &rows {
        *seen.entry(row["message_id"].as_str().unwrap()).or_default() += 1;
    }
    let doubled: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        doubled.is_empty(),
        "events archived more than once: {doubled:?}"
    );
    let missing: Vec<_> = sent
        .keys()
        .filter(|id| !seen.contains_key(id.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "events missing from the lake: {missing:?}"
    );
    assert_eq!(rows.len(), sent.len(), "events that were never sent");

    for row in &rows {
        let e = sent[row["message_id"].as_str().unwrap()];
        let t = utc(e.timestamp_us);
        let date = t.format("%Y-%m-%d").to_string();
        assert_eq!(row["tenant"], e.tenant_id, "{row:?}");
        assert_eq!(row["date"], date.as_str(), "{row:?}");
        assert_eq!(row["hour"], t.hour(), "{row:?}");
        let folder = format!(
            "raw/events/tenant={}/date={date}/hour={:02}/part-",
            e.tenant_id,
            t.hour()
        );
        assert!(
            row["filename"].as_str().unwrap().contains(&folder),
            "{row:?} not in {folder}"
        );
        assert_eq!(row["tenant_id"], e.tenant_id);
        assert_eq!(row["site_id"], e.site_id);
        let kind = if e.r#type() == EventType::Track {
            "track"
        } else {
            "page"
        };
        assert_eq!(row["type"], kind);
        let or_null = |s: &str| {
            if s.is_empty() {
                serde_json::Value::Null
            } else {
                s.into()
            }
        };
        assert_eq!(row["name"], or_null(&e.name));
        assert_eq!(row["user_id"], or_null(&e.user_id));
        assert_eq!(row["anonymous_id"], e.anonymous_id.as_str());
        assert_eq!(row["visitor_id"], e.visitor_id.as_str());
        assert_eq!(row["page_url"], e.page_url.as_str());
        assert_eq!(row["timestamp_us"], e.timestamp_us);
        assert_eq!(row["original_timestamp_us"], e.original_timestamp_us);
        assert_eq!(row["sent_at_us"], e.sent_at_us);
        assert_eq!(row["received_at_us"], e.received_at_us);
        assert_eq!(
            row["properties"],
            std::str::from_utf8(&e.properties_json).unwrap()
        );
        assert_eq!(
            row["context"],
            std::str::from_utf8(&e.context_json).unwrap()
        );
        assert_eq!(row["traits"], serde_json::Value::Null);
    }

    let (pending, _, recorded) = world.ledger().await;
    assert_eq!(pending, 0, "unfinished flushes left in the ledger");
    assert_eq!(recorded as usize, batch_ids.len(), "ledger rows per batch");
}
