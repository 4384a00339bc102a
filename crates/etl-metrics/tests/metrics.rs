//! The health gauges against what a test arranged in RabbitMQ and PostgreSQL.

mod support;

use chrono::{DateTime, Utc};
use sightline_proto::pipeline::v1 as pb;
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
    // Partition 1: nothing ready, but its watermark is 5 hours old: its consumer holds what it
    // took without flushing it, or is gone (a live, drained one moves its watermark).
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

    // The lag is partition 1's five hours plus the time between arranging and measuring, and
    // only tenants with sites have a series.
    let slack = (read_at - arranged_at).as_seconds_f64();
    let lag = "sightline_etl_freshness_lag_seconds";
    for tenant in &tenants[..2] {
        let v =
            value(lag, &format!("tenant_id=\"{tenant}\"")).expect("a series per tenant with sites");
        assert!(
            (18_000.0..=18_000.0 + slack).contains(&v),
            "lag {v} (slack {slack})"
        );
    }
    assert_eq!(value(lag, &format!("tenant_id=\"{}\"", tenants[2])), None);

    // The consumers catch up: partition 0 drained, both watermarks moved to the present (as a
    // flush, or a drained consumer's heartbeat, does). The lag falls to what has passed since.
    world.purge(&t.partition_queue("rollup", 0)).await;
    let caught_up = db_now(&world).await;
    sqlx::query("UPDATE rollup_watermarks SET received_until = $1")
        .bind(caught_up)
        .execute(&world.pool)
        .await
        .unwrap();
    service.wait_evaluations(2).await;
    let v = service
        .metric(lag, &format!("tenant_id=\"{}\"", tenants[0]))
        .await
        .unwrap();
    let since = (db_now(&world).await - caught_up).as_seconds_f64();
    assert!((0.0..=since + 1.0).contains(&v), "lag {v} (since {since})");

    // No daily run ever: its age counts from the ledger's installation.
    let installed: DateTime<Utc> =
        sqlx::query_scalar("SELECT created_at FROM pipeline_ledger_epoch")
            .fetch_one(&world.pool)
            .await
            .unwrap();
    let age = service
        .metric("sightline_etl_daily_run_age_seconds", "")
        .await
        .expect("the daily run's age");
    let upper = (db_now(&world).await - installed).as_seconds_f64();
    assert!(age > 0.0 && age <= upper, "age {age} (at most {upper})");

    service.stop().await;
    world.cleanup().await;
}

/// Starts and finishes one run of the daily job with `params`.
async fn daily_run(service: &Service, params: serde_json::Value, status: pb::Status) {
    let run_id = uuid::Uuid::new_v4().to_string();
    daily_run_with_id(service, &run_id, params, status).await;
}

async fn daily_run_with_id(
    service: &Service,
    run_id: &str,
    params: serde_json::Value,
    status: pb::Status,
) {
    let mut client = service.client().await;
    let run_id = run_id.to_string();
    let now = Utc::now().timestamp_micros();
    client
        .start_run(pb::StartRunRequest {
            run_id: run_id.clone(),
            pipeline: "batch-enricher".into(),
            job: "daily".into(),
            version: "0.1.0".into(),
            tenant_id: None,
            params_json: params.to_string(),
            started_at_us: now - 60_000_000,
        })
        .await
        .unwrap();
    client
        .finish_run(pb::FinishRunRequest {
            run_id,
            status: status.into(),
            error: String::new(),
            finished_at_us: now,
        })
        .await
        .unwrap();
}

/// A daily run sharded over two pods counts as a success only once both shards succeeded: one
/// shard failing every night must still page.
#[tokio::test]
async fn a_sharded_daily_run_succeeds_when_every_shard_did() {
    let world = World::new("etl_daily_shards").await;
    sqlx::query("UPDATE pipeline_ledger_epoch SET created_at = now() - interval '30 hours'")
        .execute(&world.pool)
        .await
        .unwrap();
    let service = Service::start(world.env()).await;
    let age = "sightline_etl_daily_run_age_seconds";
    let shard = |i: u32| serde_json::json!({"date": "2026-03-10", "shard": i, "shards": 2});

    daily_run(&service, shard(0), pb::Status::Succeeded).await;
    daily_run(&service, shard(1), pb::Status::Failed).await;
    service.wait_evaluations(2).await;
    let v = service.metric(age, "").await.unwrap();
    assert!(
        v >= 30.0 * 3600.0,
        "one shard of two is not the day: age {v}"
    );

    // The failed shard's retry succeeds: the day is complete.
    daily_run(&service, shard(1), pb::Status::Succeeded).await;
    service.wait_evaluations(2).await;
    let v = service.metric(age, "").await.unwrap();
    assert!(v < 600.0, "every shard succeeded: age {v}");

    service.stop().await;
    world.cleanup().await;
}

/// Every `sightline_etl_*` series the Grafana dashboard and the Prometheus rules in `deploy/`
/// use is one the service exports (a counter's `_total`, a histogram's `_bucket`, `_sum` and
/// `_count` included), so a renamed metric cannot leave a silent panel or a dead alert.
#[tokio::test]
async fn the_deploy_dashboard_and_rules_use_only_exported_series() {
    let world = World::new("etl_deploy_names").await;
    // Families without a sample are not exported: give each one.
    sqlx::query(
        "WITH t AS (INSERT INTO tenants (slug, name) VALUES ('a', 'A') RETURNING id) \
         INSERT INTO sites (tenant_id, domain, time_zone, currency) \
         SELECT id, 'a.example', 'UTC', 'EUR' FROM t",
    )
    .execute(&world.pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO rollup_watermarks (shard, flushed_at, received_until, event_until) \
         VALUES (0, now(), now(), now())",
    )
    .execute(&world.pool)
    .await
    .unwrap();
    let service = Service::start(world.env()).await;
    let run_id = uuid::Uuid::new_v4().to_string();
    daily_run_with_id(
        &service,
        &run_id,
        serde_json::json!({}),
        pb::Status::Succeeded,
    )
    .await;
    let now = Utc::now().timestamp_micros();
    service
        .client()
        .await
        .report_stage(pb::ReportStageRequest {
            report: Some(pb::StageReport {
                run_id,
                stage: "trusted/2026-03-10".into(),
                attempt: 1,
                tenant_id: None,
                rows_read: 10,
                rows_written: 9,
                rows_rejected: 1,
                bytes_read: 0,
                bytes_written: 0,
                started_at_us: now - 1_000_000,
                finished_at_us: now,
                status: pb::Status::Succeeded.into(),
                error: String::new(),
            }),
        })
        .await
        .unwrap();
    service.wait_evaluations(2).await;
    let exported = service.metrics().await;
    let types: Vec<&str> = exported
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let deploy = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy");
    let mut used = std::collections::BTreeSet::new();
    for file in [
        "grafana/sightline-pipeline.json",
        "prometheus/sightline-alerts.yaml",
    ] {
        let text = std::fs::read_to_string(format!("{deploy}/{file}")).unwrap();
        let mut rest = text.as_str();
        while let Some(at) = rest.find("sightline_etl_") {
            let name: String = rest[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            rest = &rest[at + name.len()..];
            used.insert(name);
        }
    }
    assert!(
        used.len() >= 10,
        "the deploy files name the metrics: {used:?}"
    );
    for name in &used {
        let family = ["_total", "_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .filter(|base| types.contains(base))
            .unwrap_or(name);
        assert!(types.contains(&family), "{name} is not exported: {types:?}");
    }
    service.stop().await;
    world.cleanup().await;
}
