//! The star-schema loader against the real database: loading twice, or again from scratch,
//! gives the same star schema; later ledger rows are added incrementally.

mod support;

use chrono::Utc;
use serde_json::Value;
use sightline_proto::pipeline::v1::{self as pb, pipeline_ledger_client::PipelineLedgerClient};
use support::{Service, World};
use tonic::transport::Channel;
use uuid::Uuid;

/// Every row of every `olap` table, as JSON, in a stable order.
async fn dump(world: &World) -> Value {
    let mut all = serde_json::Map::new();
    for (table, order) in [
        ("dim_date", "date_key"),
        ("dim_stage", "stage_key"),
        ("dim_pipeline", "pipeline_key"),
        ("dim_tenant", "tenant_key"),
        ("dim_status", "status_key"),
        ("fact_stage_run", "run_id, stage, attempt"),
        (
            "fact_stream_window",
            "pipeline, consumer_group, partition, window_start",
        ),
    ] {
        let rows: Value = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT coalesce(jsonb_agg(to_jsonb(t) ORDER BY {order}), '[]') FROM olap.{table} t"
        )))
        .fetch_one(&world.pool)
        .await
        .unwrap();
        all.insert(table.to_string(), rows);
    }
    Value::Object(all)
}

async fn report_run(
    client: &mut PipelineLedgerClient<Channel>,
    tenant: Option<i64>,
    version: &str,
    stages: &[(&str, i64, i64)],
) {
    let run_id = Uuid::new_v4();
    let start = Utc::now().timestamp_micros() - 3_600_000_000;
    client
        .start_run(pb::StartRunRequest {
            run_id: run_id.to_string(),
            pipeline: "batch-enricher".into(),
            job: "daily".into(),
            version: version.into(),
            tenant_id: tenant,
            params_json: "{}".into(),
            started_at_us: start,
        })
        .await
        .unwrap();
    for (i, (name, read, rejected)) in stages.iter().enumerate() {
        let begin = start + i as i64 * 60_000_000;
        client
            .report_stage(pb::ReportStageRequest {
                report: Some(pb::StageReport {
                    run_id: run_id.to_string(),
                    stage: name.to_string(),
                    attempt: 1,
                    tenant_id: None,
                    rows_read: *read,
                    rows_written: read - rejected,
                    rows_rejected: *rejected,
                    bytes_read: read * 10,
                    bytes_written: read * 8,
                    started_at_us: begin,
                    finished_at_us: begin + 30_000_000,
                    status: pb::Status::Succeeded.into(),
                    error: String::new(),
                }),
            })
            .await
            .unwrap();
    }
}

/// Loads until `stage_runs` and `stream_windows` facts were upserted in all, summing what the
/// loads report: a transaction still open anywhere on the server (another test's) holds the
/// watermark back, and its rows wait for a later load.
async fn load_until(world: &World, stage_runs: u64, stream_windows: u64) -> (u64, u64) {
    let mut total = (0, 0);
    for _ in 0..1200 {
        let r = etl_metrics::loader::load(&world.pool).await.unwrap();
        total.0 += r.stage_runs;
        total.1 += r.stream_windows;
        if total.0 >= stage_runs && total.1 >= stream_windows {
            return total;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the loader never reached every row: {total:?}");
}

#[tokio::test]
async fn loading_twice_or_from_scratch_gives_the_same_star_schema() {
    let world = World::new("etl_loader").await;
    let tenant: i64 = sqlx::query_scalar(
        "INSERT INTO tenants (slug, name) VALUES ('acme', 'Acme Inc') RETURNING id",
    )
    .fetch_one(&world.pool)
    .await
    .unwrap();
    let service = Service::start(world.env()).await;
    let mut client = service.client().await;
    report_run(
        &mut client,
        Some(tenant),
        "1.0.0",
        &[
            ("trusted/2025-03-10", 1000, 10),
            ("rollups/2025-03-10", 990, 0),
        ],
    )
    .await;
    report_run(&mut client, None, "1.0.1", &[("import", 50, 5)]).await;
    client
        .report_stream_window(pb::ReportStreamWindowRequest {
            window: Some(pb::StreamWindow {
                pipeline: "stream".into(),
                consumer_group: "rollup".into(),
                partition: 0,
                window_start_us: 1_763_700_000_000_000,
                window_end_us: 1_763_700_060_000_000,
                version: "1.0.0".into(),
                events_in: 100,
                events_out: 99,
                events_rejected: 1,
                lag_ms: 800,
            }),
        })
        .await
        .unwrap();

    assert_eq!(load_until(&world, 3, 1).await, (3, 1));
    let loaded = dump(&world).await;
    assert_eq!(loaded["fact_stage_run"].as_array().unwrap().len(), 3);
    let stages: Vec<&str> = loaded["dim_stage"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["stage"].as_str())
        .collect();
    assert_eq!(
        stages.len(),
        4,
        "trusted, rollups, import, rollup: {stages:?}"
    );
    assert!(
        loaded["dim_tenant"].to_string().contains("\"acme\""),
        "the tenant's slug comes along"
    );

    // Again: nothing new, nothing changed.
    let second = etl_metrics::loader::load(&world.pool).await.unwrap();
    assert_eq!((second.stage_runs, second.stream_windows), (0, 0));
    assert_eq!(dump(&world).await, loaded);

    // From scratch (watermarks reset): every row upserted again, to the same values.
    sqlx::query("UPDATE olap.load_watermarks SET loaded_below_xid = '0'")
        .execute(&world.pool)
        .await
        .unwrap();
    assert_eq!(load_until(&world, 3, 1).await, (3, 1));
    assert_eq!(dump(&world).await, loaded);

    // Two loads at once (advisory lock): the same again.
    sqlx::query("UPDATE olap.load_watermarks SET loaded_below_xid = '0'")
        .execute(&world.pool)
        .await
        .unwrap();
    let (a, b) = tokio::join!(
        etl_metrics::loader::load(&world.pool),
        etl_metrics::loader::load(&world.pool)
    );
    let together = a.unwrap().stage_runs + b.unwrap().stage_runs;
    assert!(together <= 3, "no row loaded by both");
    load_until(&world, 3 - together, 0).await;
    assert_eq!(dump(&world).await, loaded);

    // New ledger rows are added; the loaded ones stay as they were.
    report_run(
        &mut client,
        Some(tenant),
        "1.0.0",
        &[("trusted/2025-03-11", 10, 0)],
    )
    .await;
    assert_eq!(load_until(&world, 1, 0).await, (1, 0));
    let grown = dump(&world).await;
    assert_eq!(grown["fact_stage_run"].as_array().unwrap().len(), 4);
    assert_eq!(grown["dim_stage"], loaded["dim_stage"], "same stage family");
    for fact in loaded["fact_stage_run"].as_array().unwrap() {
        assert!(grown["fact_stage_run"].as_array().unwrap().contains(fact));
    }

    service.stop().await;
    world.cleanup().await;
}

#[tokio::test]
async fn the_service_loads_on_its_interval() {
    let world = World::new("etl_loader_loop").await;
    let mut env = world.env();
    env.push((
        "SIGHTLINE__ETL_METRICS__LOAD_INTERVAL_MS".into(),
        "100".into(),
    ));
    let service = Service::start(env).await;
    let mut client = service.client().await;
    report_run(&mut client, None, "2.0.0", &[("dedupe", 10, 1)]).await;
    support::wait_for("the loop to load the stage", || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM olap.fact_stage_run")
            .fetch_one(&world.pool)
            .await
            .unwrap()
            == 1
    })
    .await;
    let loaded = service
        .metric(
            "sightline_etl_loaded_rows_total",
            "source=\"pipeline_stage_runs\"",
        )
        .await;
    assert_eq!(loaded, Some(1.0));
    service.stop().await;
    world.cleanup().await;
}
