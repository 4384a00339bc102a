//! The rollup group against real RabbitMQ and PostgreSQL: known events in, rollups out equal
//! to an independent computation over the same events; redeliveries and restarts change
//! nothing; a database outage loses and doubles nothing.

mod rollup_support;

use std::time::{Duration, Instant};

use prost::Message as _;
use rollup_support::*;
use sightline_broker::partition_for;
use sightline_proto::events::v1::{Event, EventBatch, EventType};
use sightline_testkit::{http::get_status, proxy::Proxy};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollups_equal_an_independent_computation_and_redeliveries_change_nothing() {
    let world = World::new().await;
    let events = traffic(&world);
    let want = expected(&events);
    assert!(
        want.visits > 40 && want.bounces > 0 && want.bot_events == 5,
        "{want:?}"
    );
    let batches = batches(&events, 7);
    let running = Running::start(&world, &world.database_url).await;
    for batch in &batches {
        world.publish(batch).await;
    }
    world.wait_for_batches(batches.len() as i64).await;
    assert_figures(&actual(&world.pool, world.tenant_id).await, &want);

    // The same batches again (a publisher retry, a redelivery): nothing changes.
    for batch in batches.iter().take(5) {
        world.publish(batch).await;
    }
    // A new batch after them proves the duplicates were consumed first (queues are ordered).
    let marker = EventBatch {
        batch_id: uuid::Uuid::now_v7().to_string(),
        partition: 0,
        created_at_us: 0,
        events: Vec::new(),
    };
    for p in 0..PARTITIONS {
        world
            .publish(&EventBatch {
                batch_id: uuid::Uuid::now_v7().to_string(),
                partition: p,
                ..marker.clone()
            })
            .await;
    }
    world
        .wait_for_batches(batches.len() as i64 + i64::from(PARTITIONS))
        .await;
    assert_figures(&actual(&world.pool, world.tenant_id).await, &want);
    running.stop().await;
    world.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_and_a_database_outage_lose_and_double_nothing() {
    let world = World::new().await;
    let events = traffic(&world);
    let want = expected(&events);
    let batches = batches(&events, 3);
    let database = world.database_url.rsplit('/').next().unwrap().to_string();
    let proxy = Proxy::start("127.0.0.1:5432").await;
    let running = Running::start(&world, &proxy.postgres_url(&database)).await;

    let (first, rest) = batches.split_at(batches.len() / 3);
    for batch in first {
        world.publish(batch).await;
    }
    world.wait_for_batches(first.len() as i64).await;

    // The database goes away mid-stream: the consumers hold their messages and turn not ready.
    proxy.cut();
    let (second, third) = rest.split_at(rest.len() / 2);
    for batch in second {
        world.publish(batch).await;
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while get_status(running.admin, "/readyz").await != Some(503) {
        assert!(
            Instant::now() < deadline,
            "readiness stayed up without the database"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    proxy.restore();
    world
        .wait_for_batches((first.len() + second.len()) as i64)
        .await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while get_status(running.admin, "/readyz").await != Some(200) {
        assert!(Instant::now() < deadline, "readiness did not come back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A hard stop mid-stream (the task and its connections dropped, nothing flushed), then a
    // fresh process resumes from what was committed.
    for batch in third {
        world.publish(batch).await;
    }
    running.task.abort();
    let _ = running.task.await;
    let running = Running::start(&world, &world.database_url).await;
    world.wait_for_batches(batches.len() as i64).await;
    assert_figures(&actual(&world.pool, world.tenant_id).await, &want);
    running.stop().await;
    world.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_commit_and_acknowledgement_counts_nothing_twice() {
    use stream_processor::{
        config::RollupConfig,
        sink::{Incoming, Sink as _},
    };
    let world = World::new().await;
    let events = traffic(&world);
    let want = expected(&events);
    let batches = batches(&events, 5);

    // A consumer of partition 0 commits its first batches, then dies before acknowledging
    // them: the broker still holds them and delivers them again to the next consumer.
    let config = RollupConfig {
        flush_interval_ms: 200,
        max_buffered_events: 100_000,
        late_event_max_age_secs: 86_400,
        batch_id_retention_hours: 168,
        // Visitor states stay in the partition's log: the next consumer must read it.
        visitor_snapshot_flushes: 60,
    };
    let mut sink = partition_0_sink(&world, config);
    let committed: Vec<&EventBatch> = batches
        .iter()
        .filter(|b| b.partition == 0)
        .take(3)
        .collect();
    assert!(!committed.is_empty());
    for batch in &committed {
        let payload = batch.encode_to_vec();
        sink.accept(Incoming {
            message_id: Some(&batch.batch_id),
            kind: Some("sightline.events.v1.EventBatch"),
            redelivered: false,
            payload: &payload,
        })
        .unwrap();
    }
    sink.flush().await.unwrap();
    drop(sink);
    assert_eq!(world.processed_batches().await, committed.len() as i64);

    let running = Running::start(&world, &world.database_url).await;
    for batch in &batches {
        world.publish(batch).await;
    }
    world.wait_for_batches(batches.len() as i64).await;
    assert_figures(&actual(&world.pool, world.tenant_id).await, &want);
    running.stop().await;
    world.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_events_are_left_to_the_batch_layer() {
    let world = World::new().await;
    let now = chrono::Utc::now().timestamp_micros();
    let event = |id: &str, at_us: i64| Event {
        message_id: id.into(),
        tenant_id: world.tenant_id,
        site_id: world.site_id,
        r#type: EventType::Page.into(),
        visitor_id: "late-visitor".into(),
        timestamp_us: at_us,
        received_at_us: now,
        user_agent: CHROME.into(),
        page_url: "https://shop.example.com/".into(),
        ..Event::default()
    };
    let batch = EventBatch {
        batch_id: uuid::Uuid::now_v7().to_string(),
        partition: partition_for(world.tenant_id, "late-visitor", PARTITIONS),
        created_at_us: now,
        events: vec![
            event("too-old", now - 2 * 86_400_000_000),
            event("late-but-counted", now - 3_600_000_000),
        ],
    };
    let running = Running::start(&world, &world.database_url).await;
    world.publish(&batch).await;
    world.wait_for_batches(1).await;
    let pageviews: i64 = sqlx::query_scalar(
        "SELECT coalesce(sum(pageviews), 0)::bigint FROM rollups WHERE granularity = 'minute' \
         AND dimension = ''",
    )
    .fetch_one(&world.pool)
    .await
    .unwrap();
    assert_eq!(
        pageviews, 1,
        "the two-day-old event is not counted by the speed layer"
    );
    running.stop().await;
    world.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_partition_moves_its_watermark_to_the_present() {
    let world = World::new().await;
    let now = chrono::Utc::now().timestamp_micros();
    let hour_ago = now - 3_600_000_000;
    let partition = partition_for(world.tenant_id, "quiet-visitor", PARTITIONS);
    let batch = EventBatch {
        batch_id: uuid::Uuid::now_v7().to_string(),
        partition,
        created_at_us: hour_ago,
        events: vec![Event {
            message_id: "received-an-hour-ago".into(),
            tenant_id: world.tenant_id,
            site_id: world.site_id,
            r#type: EventType::Page.into(),
            visitor_id: "quiet-visitor".into(),
            timestamp_us: hour_ago,
            received_at_us: hour_ago,
            user_agent: CHROME.into(),
            page_url: "https://shop.example.com/".into(),
            ..Event::default()
        }],
    };
    let running = Running::start(&world, &world.database_url).await;
    world.publish(&batch).await;
    world.wait_for_batches(1).await;

    // Then nothing more arrives: the drained partition reports that it is complete up to about
    // now, not up to its last event an hour ago (which would read as an hour of lag).
    let received_until = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT (extract(epoch FROM received_until) * 1000000)::int8 FROM rollup_watermarks \
             WHERE shard = $1",
        )
        .bind(i32::try_from(partition).unwrap())
        .fetch_one(&world.pool)
        .await
        .unwrap()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let until = received_until().await;
        if until >= now - 10_000_000 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the watermark stayed at {until}, {} s behind",
            (now - until) / 1_000_000
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    running.stop().await;
    world.finish().await;
}

/// A flush tells how many events it rolled up: not the late ones it leaves to the batch layer,
/// not an event repeated inside the stream, not a batch counted before.
#[tokio::test]
async fn a_flush_counts_only_the_events_it_rolls_up() {
    use stream_processor::{
        config::RollupConfig,
        sink::{Incoming, Sink},
    };
    let world = World::new().await;
    let now = chrono::Utc::now().timestamp_micros();
    let event = |id: &str, at_us: i64| Event {
        message_id: id.into(),
        tenant_id: world.tenant_id,
        site_id: world.site_id,
        r#type: EventType::Page.into(),
        visitor_id: "counted-visitor".into(),
        timestamp_us: at_us,
        received_at_us: now,
        user_agent: CHROME.into(),
        page_url: "https://shop.example.com/".into(),
        ..Event::default()
    };
    let batch = EventBatch {
        batch_id: uuid::Uuid::now_v7().to_string(),
        partition: 0,
        created_at_us: now,
        events: vec![
            event("too-old", now - 2 * 86_400_000_000),
            event("counted", now - 1_000_000),
            event("counted", now - 1_000_000),
        ],
    };
    let mut sink = partition_0_sink(
        &world,
        RollupConfig {
            flush_interval_ms: 200,
            max_buffered_events: 100_000,
            late_event_max_age_secs: 86_400,
            batch_id_retention_hours: 168,
            visitor_snapshot_flushes: 60,
        },
    );
    let payload = batch.encode_to_vec();
    let message = Incoming {
        message_id: Some(&batch.batch_id),
        kind: Some("sightline.events.v1.EventBatch"),
        redelivered: false,
        payload: &payload,
    };
    assert_eq!(sink.accept(message).unwrap(), 3, "events taken");
    assert_eq!(sink.flush().await.unwrap(), 1, "events rolled up");
    assert_eq!(sink.accept(message).unwrap(), 3);
    assert_eq!(sink.flush().await.unwrap(), 0, "a batch counted before");
    world.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_visitor_snapshot_being_written_holds_no_flush_back() {
    use stream_processor::{
        config::RollupConfig,
        sink::{Incoming, Sink as _},
    };
    let world = World::new().await;
    let events = traffic(&world);
    let want = expected(&events);
    let batches = batches(&events, 5);
    let mine: Vec<&EventBatch> = batches.iter().filter(|b| b.partition == 0).collect();
    assert!(mine.len() >= 3, "partition 0 has {} batches", mine.len());

    // A snapshot that cannot write: another transaction holds a lock on the snapshot table
    // that lets reads through and makes every write wait.
    let mut blocker = world.pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE rollup_visitors IN SHARE MODE")
        .execute(&mut *blocker)
        .await
        .unwrap();

    let mut sink = partition_0_sink(
        &world,
        RollupConfig {
            flush_interval_ms: 200,
            max_buffered_events: 100_000,
            late_event_max_age_secs: 86_400,
            batch_id_retention_hours: 168,
            // A snapshot after every flush: the first one starts at once and stays blocked.
            visitor_snapshot_flushes: 1,
        },
    );
    for batch in &mine {
        let payload = batch.encode_to_vec();
        sink.accept(Incoming {
            message_id: Some(&batch.batch_id),
            kind: Some("sightline.events.v1.EventBatch"),
            redelivered: false,
            payload: &payload,
        })
        .unwrap();
        tokio::time::timeout(Duration::from_secs(20), sink.flush())
            .await
            .expect("a flush does not wait for the snapshot being written")
            .unwrap();
    }
    assert_eq!(world.processed_batches().await, mine.len() as i64);
    let count = |sql: &'static str| {
        let pool = world.pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(sql)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    let log = "SELECT count(*) FROM rollup_visitor_log WHERE shard = 0";
    let snapshot = "SELECT count(*) FROM rollup_visitors WHERE shard = 0";
    let logged = count(log).await;
    assert!(
        logged >= mine.len() as i64,
        "one log entry a flush: {logged}"
    );
    assert_eq!(count(snapshot).await, 0, "the snapshot is still waiting");

    // The lock goes; closing the sink waits for its snapshot, which replaces the entries it
    // covers (the first flush's; later flushes did not start another while it was written).
    blocker.commit().await.unwrap();
    sink.close().await;
    assert!(count(snapshot).await > 0, "the snapshot was written");
    assert_eq!(
        count(log).await,
        logged,
        "the covered entry is kept, emptied; the later ones stay"
    );
    drop(sink);

    // The next consumer resumes from the snapshot and the log after it: figures exact.
    let running = Running::start(&world, &world.database_url).await;
    for batch in &batches {
        world.publish(batch).await;
    }
    world.wait_for_batches(batches.len() as i64).await;
    assert_figures(&actual(&world.pool, world.tenant_id).await, &want);
    running.stop().await;
    world.finish().await;
}
