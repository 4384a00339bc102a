//! Shared fixtures: the dev S3 server of `scripts/lib/services.sh` and sample batches.

#![allow(dead_code)]

use bytes::Bytes;
use sightline_kit::config::Secret;
use sightline_lake::{
    LakeError, ObjectStore, S3Config, S3Store, invalid_keys,
    layout::{RawPartition, errors_day_prefix, raw_day_prefix, raw_tenant_prefix},
    parquet::{events_from_parquet, invalid_from_parquet},
    raw_keys, write_invalid_batches, write_raw_batches,
};
use sightline_proto::events::v1::{Event, EventBatch, EventType, InvalidEvent, InvalidEventBatch};

/// The dev server `ensure_s3` starts (scripts/lib/services.sh).
pub const S3_ENDPOINT: &str = "http://127.0.0.1:9000";

/// A store on a fresh, uniquely named bucket; fails loudly when the server is not running.
pub async fn s3_store() -> S3Store {
    let config = S3Config {
        endpoint: S3_ENDPOINT.into(),
        region: "us-east-1".into(),
        // Short: s3s-fs packs base64(bucket) + base64(key) into one file name.
        bucket: format!("t-{}", &uuid::Uuid::new_v4().simple().to_string()[..16]),
        access_key_id: "sightline".into(),
        secret_access_key: Secret::new("sightline-dev-secret"),
        force_path_style: true,
    };
    assert_eq!(config.validate(), sightline_kit::Problems::new());
    if std::net::TcpStream::connect("127.0.0.1:9000").is_err() {
        panic!(
            "no S3 server at {S3_ENDPOINT}: run scripts/test (or `source scripts/lib/services.sh && ensure_s3`) first"
        );
    }
    let store = S3Store::new(&config);
    store
        .create_bucket_if_missing()
        .await
        .expect("creating the test bucket (is the server from scripts/test running?)");
    store
}

/// 2025-03-09T22:30:00Z in µs.
pub const T0: i64 = 1_741_559_400_000_000;
pub const HOUR: i64 = 3_600_000_000;

pub fn event(tenant_id: i64, n: i64, timestamp_us: i64) -> Event {
    let mut e = Event {
        message_id: format!("msg-{tenant_id}-{n}"),
        tenant_id,
        site_id: 10,
        name: "Order Completed".into(),
        anonymous_id: format!("anon-{n}"),
        user_id: String::new(),
        visitor_id: format!("anon-{n}"),
        timestamp_us,
        original_timestamp_us: timestamp_us - 1_000,
        sent_at_us: timestamp_us + 5_000,
        received_at_us: timestamp_us + 9_000,
        ip_truncated: "198.51.100.0".into(),
        user_agent: "Mozilla/5.0 (X11; Linux x86_64)".into(),
        page_url: "https://shop.example/checkout".into(),
        page_referrer: "https://duckduckgo.com/".into(),
        page_title: "Checkout".into(),
        locale: "de-DE".into(),
        group_id: String::new(),
        previous_id: String::new(),
        context_json: Bytes::from_static(br#"{"library":{"name":"analytics.js"}}"#),
        properties_json: Bytes::from(format!(r#"{{"revenue":{n}.5}}"#)),
        traits_json: Bytes::new(),
        ..Default::default()
    };
    e.set_type(EventType::Track);
    e
}

/// Two batches: tenant 1 in hours 22 and 23 of 2025-03-09 and hour 00 of the 10th (a late
/// event), tenant 2 in hour 22.
pub fn batches() -> Vec<EventBatch> {
    vec![
        EventBatch {
            batch_id: "0190-b".into(),
            partition: 3,
            created_at_us: T0,
            events: vec![
                event(1, 1, T0),
                event(1, 2, T0 + HOUR),
                event(2, 3, T0 + 60_000_000),
            ],
        },
        EventBatch {
            batch_id: "0190-a".into(),
            partition: 3,
            created_at_us: T0,
            events: vec![event(1, 4, T0 + 2 * HOUR), event(1, 5, T0 + 1_000)],
        },
    ]
}

pub fn invalid_batches() -> Vec<InvalidEventBatch> {
    let invalid = |reason: &str, n: u8| InvalidEvent {
        tenant_id: 1,
        site_id: 10,
        reason: reason.into(),
        detail: format!("detail {n}"),
        raw: Bytes::from(vec![b'{', n, 0xff]),
        received_at_us: T0,
        message_id: format!("bad-{n}"),
    };
    vec![InvalidEventBatch {
        batch_id: "0190-x".into(),
        created_at_us: T0,
        events: vec![
            invalid("missing_event_name", 1),
            invalid("Event Too Large/../", 2),
            invalid("missing_event_name", 3),
        ],
    }]
}

fn date(s: &str) -> chrono::NaiveDate {
    s.parse().unwrap()
}

fn sorted(mut events: Vec<Event>) -> Vec<Event> {
    events.sort_by(|a, b| a.message_id.cmp(&b.message_id));
    events
}

/// The whole contract, against any store: layout keys, listing by prefix, reading back,
/// idempotent retries, errors with their reason.
pub async fn exercise(store: &dyn ObjectStore) {
    let batches = batches();
    // Planning writes nothing and names exactly the keys the write then produces.
    let planned = raw_keys(&batches).unwrap();
    assert!(store.list("").await.unwrap().is_empty());
    let keys = write_raw_batches(store, &batches).await.unwrap();
    assert_eq!(planned, keys);
    // tenant 1: hours 22, 23 of the 9th and 00 of the 10th; tenant 2: hour 22.
    assert_eq!(keys.len(), 4, "{keys:#?}");

    let day = store
        .list(&raw_day_prefix(1, date("2025-03-09")))
        .await
        .unwrap();
    assert_eq!(day.len(), 2, "{day:#?}");
    assert!(day[0].starts_with("raw/events/tenant=1/date=2025-03-09/hour=22/part-"));
    assert!(day[1].starts_with("raw/events/tenant=1/date=2025-03-09/hour=23/part-"));
    let hour = RawPartition::of_event(1, T0).unwrap();
    assert_eq!(
        store.list(&hour.prefix()).await.unwrap(),
        vec![day[0].clone()]
    );

    // Every event comes back, exactly once, in the partition of its event time.
    let mut read = Vec::new();
    for key in store.list("raw/events/").await.unwrap() {
        for e in events_from_parquet(store.get(&key).await.unwrap()).unwrap() {
            let p = RawPartition::of_event(e.tenant_id, e.timestamp_us).unwrap();
            assert!(key.starts_with(&p.prefix()), "{key} holds {e:?}");
            read.push(e);
        }
    }
    let written: Vec<Event> = batches.iter().flat_map(|b| b.events.clone()).collect();
    assert_eq!(sorted(read), sorted(written));

    // A retry, even with the batches in another order and one redelivered twice, overwrites.
    let mut retry = batches.clone();
    retry.reverse();
    retry.push(batches[0].clone());
    assert_eq!(raw_keys(&retry).unwrap(), keys);
    let again = write_raw_batches(store, &retry).await.unwrap();
    assert_eq!(again, keys);
    // One batch alone: the same keys where it filled a partition by itself, another key where
    // it shared one (tenant 1, hour 22) with the other batch.
    let alone = raw_keys(&batches[..1]).unwrap();
    let new: Vec<&String> = alone.iter().filter(|k| !keys.contains(k)).collect();
    assert_eq!(alone.len(), 3);
    assert_eq!(new.len(), 1, "{alone:#?}");
    assert!(new[0].starts_with(&hour.prefix()));
    assert_eq!(store.list(&raw_tenant_prefix(1)).await.unwrap().len(), 3);
    assert_eq!(store.list("raw/").await.unwrap().len(), 4);

    // Invalid events, by day of receipt and sanitised reason, reason kept verbatim inside.
    let planned = invalid_keys(&invalid_batches()).unwrap();
    let error_keys = write_invalid_batches(store, &invalid_batches())
        .await
        .unwrap();
    assert_eq!(planned, error_keys);
    let listed = store
        .list(&errors_day_prefix(date("2025-03-09")))
        .await
        .unwrap();
    assert_eq!(listed, error_keys);
    assert_eq!(listed.len(), 2);
    assert!(
        listed[0].starts_with("errors/events/date=2025-03-09/reason=event_too_large____/part-")
    );
    assert!(listed[1].starts_with("errors/events/date=2025-03-09/reason=missing_event_name/part-"));
    let bad = invalid_from_parquet(store.get(&listed[0]).await.unwrap()).unwrap();
    assert_eq!(bad.len(), 1);
    assert_eq!(bad[0].reason, "Event Too Large/../");
    assert_eq!(&bad[0].raw[..], &[b'{', 2, 0xff]);
    assert_eq!(
        invalid_from_parquet(store.get(&listed[1]).await.unwrap())
            .unwrap()
            .len(),
        2
    );

    // Plain object semantics.
    store
        .put("misc/a", Bytes::from_static(b"one"))
        .await
        .unwrap();
    store
        .put("misc/a", Bytes::from_static(b"two"))
        .await
        .unwrap();
    assert_eq!(&store.get("misc/a").await.unwrap()[..], b"two");
    assert!(matches!(
        store.get("misc/missing").await,
        Err(LakeError::NotFound { .. })
    ));
    store.delete("misc/a").await.unwrap();
    store.delete("misc/a").await.unwrap();
    assert!(store.list("misc/").await.unwrap().is_empty());
    assert!(matches!(
        store.put("../escape", Bytes::new()).await,
        Err(LakeError::InvalidKey { .. })
    ));
}
