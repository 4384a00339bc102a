//! The health gauges against what a test arranged in RabbitMQ and PostgreSQL.

mod support;

use chrono::{DateTime, Utc};
use support::{Service, World};

async fn db_now(world: &World) -> DateTime<Utc> {
    sqlx::query_scalar("SELECT now()")
        .fetch_one(&world.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn queue_depths_and_freshness_lag_are_what_the_test_arranged() {
    let world = World::new("etl_gauges").await;
    let t = &world.topology;
    // Partition 0: 7 events waiting, last flush received events up to 2 hours ago.
    // Partition 1: nothing waiting (caught up), although its last flush is 5 hours old.
    world.publish(&t.partition_queue("rollup", 0), 7).await;
    world.publish(&t.dead_letter_queue(), 3).await;
    let tenants: Vec<i64> = sqlx::query_scalar(
        "WITH t AS (INSERT INTO tenants (slug, name) VALUES ('a', 'A'), ('b', 'B'), ('c', 'C') RETURNING id) \
         SELECT id FROM t ORDER BY id",
    )
    .fetch_all(&world.pool)
    .await
    .unwrap();
    for tenant in &tenants[..2] {
        sqlx::query(
            "INSERT INTO sites (tenant_id, domain, time_zone, currency) VALUES ($1, 'x.example', 'UTC', 'EUR')",
        )
        .bind(tenant)
        .execute(&world.pool)
        .await
        .unwrap();
    }
    let arranged_at = db_now(&world).await;
    sqlx::query(
        "INSERT INTO rollup_watermarks (shard, flushed_at, received_until, event_until) VALUES \
         (0, $1, $1 - interval '2 hours', $1 - interval '2 hours'), \
         (1, $1, $1 - interval '5 hours', $1 - interval '5 hours')",
    )
    .bind(arranged_at)
    .execute(&world.pool)
    .await
    .unwrap();

    let service = Service::start(world.env()).await;
    service.wait_evaluations(2).await;
    let metrics = service.metrics().await;
    let read_at = db_now(&world).await;
    let value = |name: &str, label: &str| support::metric_value(&metrics, name, label);

    let depth = "sightline_etl_queue_depth_messages";
    assert_eq!(
        value(
            depth,
            &format!("queue=\"{}\"", t.partition_queue("rollup", 0))
        ),
        Some(7.0)
    );
    assert_eq!(
        value(
            depth,
            &format!("queue=\"{}\"", t.partition_queue("rollup", 1))
        ),
        Some(0.0)
    );
    assert_eq!(
        value(
            depth,
            &format!("queue=\"{}\"", t.partition_queue("archive", 0))
        ),
        Some(0.0)
    );
    assert_eq!(
        value("sightline_etl_dead_letter_depth_messages", ""),
        Some(3.0)
    );
    assert_eq!(value("sightline_etl_broker_up", ""), Some(1.0));

    // The lag is partition 0's two hours plus the time between arranging and measuring; the
    // idle partition does not count, and only tenants with sites have a series.
    let slack = (read_at - arranged_at).as_seconds_f64();
    let lag = "sightline_etl_freshness_lag_seconds";
    for tenant in &tenants[..2] {
        let v =
            value(lag, &format!("tenant_id=\"{tenant}\"")).expect("a series per tenant with sites");
        assert!(
            (7200.0..=7200.0 + slack).contains(&v),
            "lag {v} (slack {slack})"
        );
    }
    assert_eq!(value(lag, &format!("tenant_id=\"{}\"", tenants[2])), None);

    // Draining partition 0 leaves the lag at zero: the speed layer has nothing left to do.
    world.purge(&t.partition_queue("rollup", 0)).await;
    service.wait_evaluations(2).await;
    let v = service
        .metric(lag, &format!("tenant_id=\"{}\"", tenants[0]))
        .await;
    assert_eq!(v, Some(0.0));

    service.stop().await;
    world.cleanup().await;
}
