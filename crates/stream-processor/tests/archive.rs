//! The archive group against real RabbitMQ, PostgreSQL and the S3 server, read back by DuckDB:
//! known batches land at their tenant/date/hour keys with their values; redeliveries, crashes
//! between store and acknowledgement, unfinished flushes and outages of the lake or the
//! database leave every event in the lake exactly once; invalid events land in `errors/`.
//! Messages the group cannot read are in `dead_letters.rs`.

mod support;

use std::{
    collections::BTreeSet,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use chrono::Timelike;
use sightline_db::{ArchiveFlushState, ArchiveLedger, DbError};
use sightline_lake::{LakeError, ObjectStore, S3Store};
use sightline_proto::events::v1::{EventBatch, InvalidEvent, InvalidEventBatch};
use sightline_testkit::{duckdb, proxy::Proxy};
use stream_processor::sink::Sink;
use support::{
    PARTITIONS, Start, World,
    batches::{HOUR, T0, accept_all, assert_archived_exactly_once, batch, utc},
};

#[tokio::test]
async fn known_batches_land_at_their_tenant_date_hour_keys_exactly_once() {
    let world = World::new().await;
    let service = world.start(Start::default()).await;
    let batches: Vec<EventBatch> = (0..6)
        .map(|i| {
            batch(
                &format!("b{i}"),
                i % PARTITIONS,
                (i as i64 * 20)..(i as i64 * 20 + 20),
            )
        })
        .collect();
    for b in &batches {
        world.publish(b).await;
    }
    world.wait_for_events(120).await;
    service.stop().await;

    let all: Vec<&EventBatch> = batches.iter().collect();
    assert_archived_exactly_once(&world, &all).await;
    // One folder per tenant and hour the events fall in, nothing else.
    let folders: BTreeSet<String> = world
        .bucket
        .keys("")
        .await
        .iter()
        .map(|k| k[..k.rfind('/').unwrap()].to_string())
        .collect();
    let expected: BTreeSet<String> = batches
        .iter()
        .flat_map(|b| &b.events)
        .map(|e| {
            let t = utc(e.timestamp_us);
            format!(
                "raw/events/tenant={}/date={}/hour={:02}",
                e.tenant_id,
                t.format("%Y-%m-%d"),
                t.hour()
            )
        })
        .collect();
    assert_eq!(folders, expected);
    assert!(
        folders
            .iter()
            .any(|f| f.contains("date=2025-03-10/hour=00"))
    );
    for p in 0..PARTITIONS {
        let queue = world.topology().partition_queue("archive", p);
        assert_eq!(world.ready_messages(&queue).await, 0, "{queue} not drained");
    }
    world.finish().await;
}

#[tokio::test]
async fn a_batch_published_twice_is_archived_once() {
    let world = World::new().await;
    let service = world.start(Start::default()).await;
    let a = batch("dup-a", 0, 0..15);
    let b = batch("dup-b", 0, 15..30);
    // Twice in a row (likely one buffer)...
    world.publish(&a).await;
    world.publish(&a).await;
    world.publish(&b).await;
    world.wait_for_events(30).await;
    // ...and again once it was stored, followed by a marker on the same queue: once the marker
    // is in the lake, the copy before it was handled.
    let marker = batch("dup-marker", 0, 30..33);
    world.publish(&a).await;
    world.publish(&marker).await;
    world.wait_for_events(33).await;
    service.stop().await;
    assert_archived_exactly_once(&world, &[&a, &b, &marker]).await;
    world.finish().await;
}

#[tokio::test]
async fn batches_stored_but_never_acknowledged_are_not_archived_again() {
    // A long interval so the redelivered batches share a buffer with new ones: other keys.
    let world = World::with_env(&[("SIGHTLINE__STREAM__ARCHIVE__FLUSH_INTERVAL_MS", "1000")]).await;
    let a = batch("crash-a", 0, 0..12);
    let b = batch("crash-b", 0, 12..24);
    // A consumer stores a and b, then dies before acknowledging them.
    let mut sink = world.sink(0, Arc::new(world.bucket.store.clone()));
    accept_all(&mut sink, &[&a, &b]);
    sink.flush().await.unwrap();
    drop(sink);
    let stored = world.bucket.keys("raw/").await;
    assert!(!stored.is_empty());

    // The broker delivers them again, with new batches whose events share their hours.
    let c = batch("crash-c", 0, 24..36);
    let d = batch("crash-d", 0, 36..48);
    for x in [&a, &b, &c, &d] {
        world.publish(x).await;
    }
    let service = world.start(Start::default()).await;
    world.wait_for_events(48).await;
    service.stop().await;
    assert_archived_exactly_once(&world, &[&a, &b, &c, &d]).await;
    let now = world.bucket.keys("raw/").await;
    assert!(
        stored.iter().all(|k| now.contains(k)),
        "stored objects kept"
    );
    assert_eq!(
        world
            .ready_messages(&world.topology().partition_queue("archive", 0))
            .await,
        0,
        "the redelivered messages were acknowledged"
    );
    world.finish().await;
}

/// A lake whose `put`s fail once `puts_left` reaches zero: a crash or outage mid-flush.
#[derive(Debug)]
struct FailingStore {
    inner: S3Store,
    puts_left: AtomicUsize,
}

#[async_trait::async_trait]
impl ObjectStore for FailingStore {
    async fn put(&self, key: &str, body: Bytes) -> Result<(), LakeError> {
        let left = self.puts_left.load(Ordering::SeqCst);
        if left == 0 {
            return Err(LakeError::S3 {
                op: "put",
                target: key.to_string(),
                message: "injected failure".into(),
            });
        }
        self.puts_left.store(left - 1, Ordering::SeqCst);
        self.inner.put(key, body).await
    }
    async fn get(&self, key: &str) -> Result<Bytes, LakeError> {
        self.inner.get(key).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<String>, LakeError> {
        self.inner.list(prefix).await
    }
    async fn delete(&self, key: &str) -> Result<(), LakeError> {
        self.inner.delete(key).await
    }
}

#[tokio::test]
async fn an_unfinished_flush_is_cleaned_up_after_a_crash_and_archived_once() {
    let world = World::with_env(&[("SIGHTLINE__STREAM__ARCHIVE__FLUSH_INTERVAL_MS", "1000")]).await;
    let a = batch("partial-a", 0, 0..12);
    let b = batch("partial-b", 0, 12..24);
    // The intent is recorded, one object of several is written, then the process dies.
    let failing = Arc::new(FailingStore {
        inner: world.bucket.store.clone(),
        puts_left: AtomicUsize::new(1),
    });
    let mut sink = world.sink(0, failing);
    accept_all(&mut sink, &[&a, &b]);
    assert!(sink.flush().await.is_err());
    drop(sink);
    let partial = world.bucket.keys("raw/").await;
    assert_eq!(partial.len(), 1);
    assert_eq!(world.ledger().await.0, 1, "one pending flush");

    // Redelivered with a new batch: another grouping, so other keys than the partial object's.
    let c = batch("partial-c", 0, 24..36);
    for x in [&a, &b, &c] {
        world.publish(x).await;
    }
    let service = world.start(Start::default()).await;
    world.wait_for_events(36).await;
    service.stop().await;
    assert_archived_exactly_once(&world, &[&a, &b, &c]).await;
    assert!(!world.bucket.keys("raw/").await.contains(&partial[0]));
    world.finish().await;
}

#[tokio::test]
async fn a_flush_retried_by_the_same_sink_after_a_failure_writes_once() {
    let world = World::new().await;
    let a = batch("retry-a", 1, 0..30);
    let failing = Arc::new(FailingStore {
        inner: world.bucket.store.clone(),
        puts_left: AtomicUsize::new(2),
    });
    let mut sink = world.sink(1, failing.clone());
    accept_all(&mut sink, &[&a]);
    assert!(sink.flush().await.is_err());
    // A batch arriving while the flush is retried joins it: another key set.
    let b = batch("retry-b", 1, 30..40);
    accept_all(&mut sink, &[&b]);
    failing.puts_left.store(usize::MAX, Ordering::SeqCst);
    sink.flush().await.unwrap();
    assert_eq!(world.ledger().await, (0, 1, 2));
    assert_archived_exactly_once(&world, &[&a, &b]).await;
    world.finish().await;
}

/// Publishes `batches` while the service runs behind `proxy`, cuts the proxy in the middle,
/// checks readiness turns 503, restores it and checks everything is archived exactly once.
async fn outage(world: &World, proxy: &Proxy, start: Start, name: &str) {
    let service = world.start(start).await;
    let before: Vec<EventBatch> = (0..3)
        .map(|i| {
            batch(
                &format!("{name}-before-{i}"),
                i % PARTITIONS,
                (i as i64 * 10)..(i as i64 * 10 + 10),
            )
        })
        .collect();
    for b in &before {
        world.publish(b).await;
    }
    world.wait_for_events(30).await;

    proxy.cut();
    let during: Vec<EventBatch> = (0..4)
        .map(|i| {
            batch(
                &format!("{name}-during-{i}"),
                i % PARTITIONS,
                (30 + i as i64 * 10)..(40 + i as i64 * 10),
            )
        })
        .collect();
    for b in &during {
        world.publish(b).await;
    }
    service
        .wait_status(503, Duration::from_secs(20))
        .await
        .expect("readiness turns 503 while the flush fails");
    proxy.restore();
    service
        .wait_status(200, Duration::from_secs(30))
        .await
        .expect("ready again once the service is back");
    world.wait_for_events(70).await;
    service.stop().await;
    let all: Vec<&EventBatch> = before.iter().chain(&during).collect();
    assert_archived_exactly_once(world, &all).await;
}

#[tokio::test]
async fn an_s3_outage_holds_the_messages_and_loses_or_doubles_nothing() {
    let world = World::new().await;
    let proxy = Proxy::start("127.0.0.1:9000").await;
    let start = Start {
        s3_endpoint: Some(proxy.http_url()),
        ..Start::default()
    };
    outage(&world, &proxy, start, "s3").await;
    world.finish().await;
}

#[tokio::test]
async fn a_database_outage_holds_the_messages_and_loses_or_doubles_nothing() {
    let world = World::new().await;
    let proxy = Proxy::start("127.0.0.1:5432").await;
    let database = world.database_url.rsplit('/').next().unwrap().to_string();
    let start = Start {
        database_url: Some(proxy.postgres_url(&database)),
        ..Start::default()
    };
    outage(&world, &proxy, start, "pg").await;
    world.finish().await;
}

#[tokio::test]
async fn invalid_events_land_in_errors_by_receipt_date_and_reason() {
    let world = World::new().await;
    let service = world.start(Start::default()).await;
    let invalid = |n: u8, reason: &str, received_at_us: i64| InvalidEvent {
        tenant_id: 7,
        site_id: 70,
        reason: reason.into(),
        detail: format!("detail {n}"),
        raw: Bytes::from(vec![b'{', n, 0xff, 0x00, b'}']),
        received_at_us,
        message_id: format!("bad-{n}"),
    };
    let first = InvalidEventBatch {
        batch_id: "inv-1".into(),
        created_at_us: T0,
        events: vec![
            invalid(1, "missing_event_name", T0),
            invalid(2, "Event Too Large/../", T0),
            invalid(3, "missing_event_name", T0 + 2 * HOUR),
        ],
    };
    let second = InvalidEventBatch {
        batch_id: "inv-2".into(),
        created_at_us: T0,
        events: vec![invalid(4, "invalid_json", T0)],
    };
    world.publish_invalid(&first).await;
    world.publish_invalid(&second).await;
    world.publish_invalid(&first).await;

    let sql = "SELECT CAST(date AS VARCHAR) AS date, reason, error_reason, detail, raw, \
               message_id, tenant_id, site_id, epoch_us(received_at) AS received_at_us, filename \
               FROM read_parquet('errors/events/**/*.parquet', hive_partitioning = true, filename = true) \
               ORDER BY message_id";
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if !world.bucket.keys("errors/").await.is_empty() {
            let rows = duckdb::query_store(&world.bucket.store, "errors/", sql)
                .await
                .unwrap();
            if rows.len() >= 4 {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "invalid events did not reach errors/"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    service.stop().await;
    let rows = duckdb::query_store(&world.bucket.store, "errors/", sql)
        .await
        .unwrap();
    assert_eq!(rows.len(), 4, "each invalid event once: {rows:#?}");
    let expected = [
        (
            "bad-1",
            "2025-03-09",
            "missing_event_name",
            "missing_event_name",
        ),
        (
            "bad-2",
            "2025-03-09",
            "event_too_large____",
            "Event Too Large/../",
        ),
        (
            "bad-3",
            "2025-03-10",
            "missing_event_name",
            "missing_event_name",
        ),
        ("bad-4", "2025-03-09", "invalid_json", "invalid_json"),
    ];
    for (row, (id, date, path_reason, reason)) in rows.iter().zip(expected) {
        let n = &id[4..];
        assert_eq!(row["message_id"], id);
        assert_eq!(row["date"], date, "{row:?}");
        assert_eq!(row["reason"], path_reason, "{row:?}");
        assert!(
            row["filename"].as_str().unwrap().contains(&format!(
                "errors/events/date={date}/reason={path_reason}/part-"
            )),
            "{row:?}"
        );
        assert_eq!(row["error_reason"], reason);
        assert_eq!(row["detail"], format!("detail {n}"));
        assert_eq!(
            row["raw"],
            format!("7b0{n}ff007d"),
            "raw bytes kept byte for byte"
        );
        assert_eq!(row["tenant_id"], 7);
        assert_eq!(row["site_id"], 70);
    }
    let (pending, _, batches) = world.ledger().await;
    assert_eq!(
        (pending, batches),
        (0, 2),
        "each invalid batch recorded once"
    );
    world.finish().await;
}

#[tokio::test]
async fn the_ledger_refuses_a_batch_twice_and_prunes_only_old_stored_flushes() {
    let world = World::new().await;
    let ledger = &world.store;
    let ids = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let (old, pending, fresh) = (
        uuid::Uuid::now_v7(),
        uuid::Uuid::now_v7(),
        uuid::Uuid::now_v7(),
    );
    ledger
        .begin_archive_flush(old, "q", &ids(&["k1"]), &ids(&["a", "b"]))
        .await
        .unwrap();
    ledger.finish_archive_flush(old).await.unwrap();
    assert!(matches!(
        ledger.finish_archive_flush(old).await,
        Err(DbError::NotFound(_))
    ));
    assert!(matches!(
        ledger
            .begin_archive_flush(pending, "q", &ids(&["k2"]), &ids(&["c", "b"]))
            .await,
        Err(DbError::Conflict(_))
    ));
    // The same batch id on another queue is another batch.
    ledger
        .begin_archive_flush(pending, "other", &ids(&["k2"]), &ids(&["b"]))
        .await
        .unwrap();
    ledger
        .begin_archive_flush(fresh, "q", &ids(&["k3"]), &ids(&["d"]))
        .await
        .unwrap();
    ledger.finish_archive_flush(fresh).await.unwrap();
    sqlx::query(
        "UPDATE archive_flushes SET created_at = now() - interval '2 days' WHERE flush_id <> $1",
    )
    .bind(fresh)
    .execute(world.store.pool())
    .await
    .unwrap();

    let held = ledger
        .archive_flushes_holding("q", &ids(&["a", "b", "d", "x"]))
        .await
        .unwrap();
    assert_eq!(held.len(), 2);
    assert_eq!(
        (held[0].flush_id, held[0].state),
        (old, ArchiveFlushState::Stored)
    );
    assert_eq!(held[0].batch_ids, ids(&["a", "b"]));
    assert_eq!(held[0].keys, ids(&["k1"]));

    let day_ago = chrono::Utc::now() - chrono::TimeDelta::hours(24);
    assert_eq!(ledger.prune_archive_ledger(day_ago, 100).await.unwrap(), 1);
    // The old pending flush stays: its objects are deleted when its batches come back.
    assert_eq!(world.ledger().await, (1, 1, 2));
    let left = ledger
        .archive_flushes_holding("other", &ids(&["b"]))
        .await
        .unwrap();
    assert_eq!(left[0].state, ArchiveFlushState::Pending);
    world.finish().await;
}
