//! Window reports reach the etl-metrics run ledger (the real service, in this process, on the
//! same database): the archive group's windows add up, per partition, to the events it took,
//! archived and rejected, and carry its lag.

mod support;

use std::{collections::HashMap, net::TcpListener, time::Duration};

use sightline_broker::Route;
use sightline_kit::Shutdown;
use sightline_proto::events::v1::{Event, EventBatch, EventType};
use support::World;

/// 2025-03-10T00:00:00Z.
const T0: i64 = 1_741_564_800_000_000;

fn batch(id: &str, partition: u32, events: i64) -> EventBatch {
    EventBatch {
        batch_id: id.into(),
        partition,
        created_at_us: T0,
        events: (0..events)
            .map(|n| Event {
                message_id: format!("{id}-{n}"),
                tenant_id: 1,
                site_id: 1,
                r#type: EventType::Page.into(),
                anonymous_id: format!("anon-{n}"),
                visitor_id: format!("anon-{n}"),
                timestamp_us: T0 + n,
                original_timestamp_us: T0 + n,
                sent_at_us: T0 + n,
                received_at_us: T0 + n,
                page_url: "https://shop.example/".into(),
                ..Default::default()
            })
            .collect(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn window_reports_reach_the_ledger_and_add_up_to_the_work_done() {
    // etl-metrics' sockets first: the stream processor's settings name its address.
    let grpc = TcpListener::bind("127.0.0.1:0").unwrap();
    let admin = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", grpc.local_addr().unwrap());
    let world = World::with_env(&[
        ("SIGHTLINE__STREAM__LEDGER_ENDPOINT", &endpoint),
        ("SIGHTLINE__STREAM__REPORT_INTERVAL_MS", "200"),
    ])
    .await;
    let env: HashMap<String, String> = [
        ("SIGHTLINE__DATABASE__URL", world.database_url.as_str()),
        ("SIGHTLINE__BROKER__NAMESPACE", &world.namespace),
        ("SIGHTLINE__BROKER__PARTITIONS", "2"),
        ("SIGHTLINE__ETL_METRICS__LOAD_INTERVAL_MS", "0"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let config = etl_metrics::Config::load(&etl_metrics::Config::loader().env_map(env)).unwrap();
    let etl_shutdown = Shutdown::new();
    let etl = tokio::spawn(etl_metrics::run(
        config,
        etl_metrics::Listeners { grpc, admin },
        etl_shutdown.clone(),
    ));

    let started = chrono::Utc::now();
    let running = world.start(Default::default()).await;
    world.publish(&batch("b-p0", 0, 5)).await;
    world.publish(&batch("b-p1", 1, 7)).await;
    let pool = world.store.pool().clone();
    let sums = || async {
        sqlx::query_as::<_, (i32, i64, i64, i64)>(
            "SELECT partition, sum(events_in)::bigint, sum(events_out)::bigint, \
                    sum(events_rejected)::bigint \
               FROM pipeline_stream_windows \
              WHERE pipeline = 'stream' AND consumer_group = 'archive' \
              GROUP BY partition ORDER BY partition",
        )
        .fetch_all(&pool)
        .await
        .unwrap()
    };
    let wait_for = |want: Vec<(i32, i64, i64, i64)>| async move {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let rows = sums().await;
            if rows == want {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "windows so far: {rows:?}, waiting for {want:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    wait_for(vec![(0, 5, 5, 0), (1, 7, 7, 0)]).await;

    // The same batch again (a redelivery after the ack was lost) is taken but not archived a
    // second time; a message that is not a batch is taken and, at its delivery limit,
    // dead-lettered: rejected.
    world.publish(&batch("b-p0", 0, 5)).await;
    world
        .publish_message(
            Route::Partition(1),
            "garbage",
            "sightline.events.v1.EventBatch",
            b"not protobuf".to_vec(),
        )
        .await;
    wait_for(vec![(0, 10, 5, 0), (1, 8, 7, 1)]).await;

    // Every partition reports every window, idle or not, with its lag: none before anything
    // was archived, then the time since the newest receipt archived (T0).
    let windows: Vec<(i32, i64, i64, chrono::DateTime<chrono::Utc>)> = sqlx::query_as(
        "SELECT partition, events_out, lag_ms, window_end FROM pipeline_stream_windows \
          WHERE consumer_group = 'archive' ORDER BY window_end",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let idle = windows.iter().filter(|w| w.1 == 0).count();
    assert!(idle >= 2, "idle windows are reported too: {windows:?}");
    let since_t0 = |t: chrono::DateTime<chrono::Utc>| (t.timestamp_micros() - T0) / 1000;
    let lag_ok = |lag_ms: i64, end| lag_ms >= since_t0(started) - 1_000 && lag_ms <= since_t0(end);
    for (partition, _, lag_ms, end) in &windows {
        assert!(
            *lag_ms == 0 || lag_ok(*lag_ms, *end),
            "partition {partition}: lag {lag_ms} ms at {end}"
        );
    }
    for partition in [0, 1] {
        let last = windows.iter().rev().find(|w| w.0 == partition).unwrap();
        assert!(lag_ok(last.2, last.3), "partition {partition}: {last:?}");
    }
    let version: String =
        sqlx::query_scalar("SELECT DISTINCT version FROM pipeline_stream_windows")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(version, env!("CARGO_PKG_VERSION"));

    running.stop().await;
    etl_shutdown.trigger();
    etl.await.unwrap().unwrap();
    world.finish().await;
}
