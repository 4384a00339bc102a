//! The speed and batch layers agree: the same generated day goes through the real stream
//! processor (RabbitMQ and PostgreSQL, in arrival order, duplicates and late arrivals
//! included) and through the batch enricher (from the raw files); the counts of every site's
//! day are equal in both layers.

mod support;

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
    time::{Duration, Instant},
};

use batch_enricher::jobs::{self, DailyJob, Shard};
use prost::Message as _;
use sightline_broker::{
    Message, Publisher, Route, Topology, partition_for, rabbitmq::RabbitPublisher,
};
use sightline_kit::{HealthRegistry, Shutdown};
use sightline_proto::events::v1::{Event, EventBatch};
use sightline_testkit::{http::get_status, unique};
use support::{World, day, traffic};

const AMQP: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
const PARTITIONS: u32 = 2;

fn stream_config(namespace: &str, database_url: &str) -> stream_processor::Config {
    let env: HashMap<String, String> = [
        ("SIGHTLINE__DATABASE__URL", database_url),
        ("SIGHTLINE__BROKER__URL", AMQP),
        ("SIGHTLINE__BROKER__NAMESPACE", namespace),
        ("SIGHTLINE__BROKER__PARTITIONS", "2"),
        ("SIGHTLINE__STREAM__GROUPS", "rollup"),
        ("SIGHTLINE__STREAM__ADMIN_LISTEN", "127.0.0.1:0"),
        ("SIGHTLINE__STREAM__ROLLUP__FLUSH_INTERVAL_MS", "200"),
        // The generated day is in the past: the speed layer must still count it.
        (
            "SIGHTLINE__STREAM__ROLLUP__LATE_EVENT_MAX_AGE_SECS",
            "3153600000",
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    stream_processor::Config::load(&stream_processor::Config::loader().env_map(env))
        .expect("valid stream configuration")
}

/// Events in arrival order, in broker batches per partition.
fn batches(events: &[Event]) -> Vec<EventBatch> {
    let mut sorted = events.to_vec();
    sorted.sort_by_key(|e| (e.received_at_us, e.message_id.clone()));
    let mut by_partition: BTreeMap<u32, Vec<Event>> = BTreeMap::new();
    for e in sorted {
        by_partition
            .entry(partition_for(e.tenant_id, &e.visitor_id, PARTITIONS))
            .or_default()
            .push(e);
    }
    let mut out = Vec::new();
    for (partition, events) in by_partition {
        for chunk in events.chunks(40) {
            out.push(EventBatch {
                batch_id: uuid::Uuid::now_v7().to_string(),
                partition,
                created_at_us: 0,
                events: chunk.to_vec(),
            });
        }
    }
    out
}

#[tokio::test]
async fn speed_and_batch_figures_of_a_day_agree_on_counts() {
    let world = World::new().await;
    let namespace = unique("t_batch");
    let config = stream_config(&namespace, &world.database_url);
    let publisher = RabbitPublisher::start(
        &config.broker,
        "t-batch-publisher",
        HealthRegistry::new().register("broker"),
    );
    let admin = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let admin_addr = admin.local_addr().unwrap();
    let shutdown = Shutdown::new();
    let stream = tokio::spawn(stream_processor::run(
        config,
        stream_processor::Listeners { admin },
        shutdown.clone(),
    ));

    let traffic = traffic::generate(world.tenant_id, &world.sites, day(), 40);
    let all: Vec<Event> = traffic
        .events
        .iter()
        .chain(&traffic.duplicates)
        .chain(&traffic.late)
        .cloned()
        .collect();
    let batches = batches(&all);
    for batch in &batches {
        let message = Message {
            route: Route::Partition(batch.partition),
            id: batch.batch_id.clone(),
            kind: "sightline.events.v1.EventBatch",
            payload: batch.encode_to_vec().into(),
            traceparent: None,
        };
        publisher
            .publish(&message, Instant::now() + Duration::from_secs(30))
            .await
            .expect("RabbitMQ confirms (is it running at 127.0.0.1:5672?)");
    }
    // Waits (with a generous deadline, not an assertion on speed) until every batch is counted.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let done: i64 = sqlx::query_scalar("SELECT count(*) FROM rollup_batches")
            .fetch_one(world.pool())
            .await
            .unwrap();
        if done == batches.len() as i64 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the stream processor counted {done} of {} batches (ready: {:?})",
            batches.len(),
            get_status(admin_addr, "/readyz").await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The archive's files, as the archive group writes them.
    world.write_raw("archive", &traffic.events).await;
    world.write_raw("redelivered", &traffic.duplicates).await;
    world.write_raw("late", &traffic.late).await;
    let (ctx, _) = world.context(&[]);
    let job = DailyJob {
        date: Some(day()),
        now: chrono::Utc::now(),
        shard: Shard::default(),
    };
    assert!(jobs::daily(&Arc::new(ctx), job).await.unwrap().succeeded());

    for site in &world.sites {
        let speed: (i64, i64, i64, i64, i64) = sqlx::query_as(
            "SELECT sum(r.events)::bigint, sum(r.pageviews)::bigint, sum(r.orders)::bigint, \
               sum(r.revenue_micros)::bigint, sum(r.bot_events)::bigint \
             FROM rollups r JOIN rollup_closures c USING (tenant_id, site_id) \
             WHERE r.site_id = $1 AND r.layer = 'speed' AND r.granularity = 'minute' \
               AND r.dimension = '' AND r.bucket >= c.starts_at AND r.bucket < c.ends_at",
        )
        .bind(site.site_id)
        .fetch_one(world.pool())
        .await
        .unwrap();
        let batch: (i64, i64, i64, i64, i64) = sqlx::query_as(
            "SELECT events, pageviews, orders, revenue_micros, bot_events FROM rollups \
             WHERE site_id = $1 AND layer = 'batch' AND granularity = 'day' AND dimension = ''",
        )
        .bind(site.site_id)
        .fetch_one(world.pool())
        .await
        .unwrap();
        assert!(batch.0 > 0 && batch.4 > 0);
        assert_eq!(speed, batch, "site {}: speed vs batch counts", site.site_id);
    }

    shutdown.trigger();
    stream.await.unwrap().unwrap();
    publisher.close().await;
    sightline_testkit::delete_topology(&Topology {
        namespace,
        partitions: PARTITIONS,
        consumer_groups: vec!["rollup".into(), "archive".into()],
    })
    .await;
    world.finish().await;
}
