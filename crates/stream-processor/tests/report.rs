//! Window reports reach the etl-metrics run ledger (the real service, in this process, on the
//! same database): the archive group's windows add up to the events it archived, per partition.

mod support;

use std::{collections::HashMap, net::TcpListener, time::Duration};

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

    let running = world.start(Default::default()).await;
    world.publish(&batch("b-p0", 0, 5)).await;
    world.publish(&batch("b-p1", 1, 7)).await;

    let pool = world.store.pool().clone();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let per_partition = loop {
        let rows: Vec<(i32, i64, i64, i64)> = sqlx::query_as(
            "SELECT partition, sum(events_in)::bigint, sum(events_out)::bigint, \
                    sum(events_rejected)::bigint \
               FROM pipeline_stream_windows \
              WHERE pipeline = 'stream' AND consumer_group = 'archive' \
              GROUP BY partition ORDER BY partition",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        if rows.iter().map(|r| r.2).sum::<i64>() >= 12 {
            break rows;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "windows so far: {rows:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(per_partition, vec![(0, 5, 5, 0), (1, 7, 7, 0)]);
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
