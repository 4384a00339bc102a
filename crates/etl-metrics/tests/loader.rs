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

/// The SQL block under the docs' heading that starts with `heading`.
fn documented_query(heading: &str) -> String {
    let docs = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/etl-metrics.md"
    ))
    .unwrap();
    let section = docs
        .split("\n### ")
        .find(|s| s.starts_with(heading))
        .unwrap_or_else(|| panic!("docs/etl-metrics.md has no section `{heading}`"));
    let sql = section.split("```sql\n").nth(1).unwrap();
    sql[..sql.find("```").unwrap()].to_string()
}

/// Rows of `sql` as JSON objects.
async fn rows(world: &World, sql: &str) -> Vec<Value> {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT coalesce(jsonb_agg(to_jsonb(q)), '[]') FROM ({}) q",
        sql.trim().trim_end_matches(';')
    )))
    .fetch_one(&world.pool)
    .await
    .map(|v: Value| v.as_array().unwrap().clone())
    .unwrap()
}

/// The dashboard questions of docs/etl-metrics.md, run as written on a loaded star schema, give
/// what the ledger holds: durations, rejected rows per tenant, the slowest stages. (Reports
/// start two minutes ago and "this month" and "this week" are the database's: a run in the two
/// minutes after midnight UTC on the first of a month, or of an ISO week, would cross them.)
#[tokio::test]
async fn the_documented_dashboard_queries_answer_from_the_star_schema() {
    let world = World::new("etl_docs").await;
    let tenant: i64 =
        sqlx::query_scalar("INSERT INTO tenants (slug, name) VALUES ('acme', 'Acme') RETURNING id")
            .fetch_one(&world.pool)
            .await
            .unwrap();
    let service = Service::start(world.env()).await;
    let mut client = service.client().await;
    // Two runs: trusted stages of 20 s and 40 s, rollups of 5 s, one failed import of 90 s.
    let start = Utc::now().timestamp_micros() - 120_000_000;
    let stage = |run_id: &str, stage: &str, seconds: i64, read: i64, rejected: i64, ok: bool| {
        pb::ReportStageRequest {
            report: Some(pb::StageReport {
                run_id: run_id.into(),
                stage: stage.into(),
                attempt: 1,
                tenant_id: Some(tenant),
                rows_read: read,
                rows_written: read - rejected,
                rows_rejected: rejected,
                bytes_read: 0,
                bytes_written: 0,
                started_at_us: start,
                finished_at_us: start + seconds * 1_000_000,
                status: if ok {
                    pb::Status::Succeeded
                } else {
                    pb::Status::Failed
                }
                .into(),
                error: if ok { String::new() } else { "boom".into() },
            }),
        }
    };
    for (job, stages) in [
        (
            "daily",
            vec![
                ("trusted/2025-03-10", 20, 1000, 10, true),
                ("rollups/2025-03-10", 5, 990, 0, true),
            ],
        ),
        (
            "reprocess",
            vec![
                ("trusted/2025-03-09", 40, 500, 30, true),
                ("rollups/2025-03-09", 5, 470, 0, true),
            ],
        ),
        ("import", vec![("import/a.csv", 90, 100, 0, false)]),
    ] {
        let run_id = Uuid::new_v4().to_string();
        client
            .start_run(pb::StartRunRequest {
                run_id: run_id.clone(),
                pipeline: "batch-enricher".into(),
                job: job.into(),
                version: "1.2.0".into(),
                tenant_id: Some(tenant),
                params_json: "{}".into(),
                started_at_us: start,
            })
            .await
            .unwrap();
        for (name, seconds, read, rejected, ok) in stages {
            client
                .report_stage(stage(&run_id, name, seconds, read, rejected, ok))
                .await
                .unwrap();
        }
    }
    load_until(&world, 5, 0).await;

    let trend = rows(&world, &documented_query("Runtime trend per stage")).await;
    let trend: Vec<(String, i64, f64, f64)> = trend
        .iter()
        .map(|r| {
            (
                r["stage"].as_str().unwrap().to_owned(),
                r["runs"].as_i64().unwrap(),
                r["p50_s"].as_f64().unwrap(),
                r["total_s"].as_f64().unwrap(),
            )
        })
        .collect();
    // Succeeded stages only: the failed import is not in the trend.
    assert_eq!(
        trend,
        [
            ("rollups".to_string(), 2, 5.0, 10.0),
            ("trusted".to_string(), 2, 30.0, 60.0)
        ]
    );

    let rejected = rows(&world, &documented_query("Rows rejected per tenant")).await;
    assert_eq!(rejected.len(), 1, "{rejected:?}");
    assert_eq!(rejected[0]["tenant"], "acme");
    assert_eq!(rejected[0]["rows_read"].as_f64(), Some(3060.0));
    assert_eq!(rejected[0]["rows_rejected"].as_f64(), Some(40.0));

    let slowest = rows(&world, &documented_query("Slowest stages this week")).await;
    let order: Vec<(&str, &str)> = slowest
        .iter()
        .map(|r| (r["stage"].as_str().unwrap(), r["job"].as_str().unwrap()))
        .collect();
    assert_eq!(
        order[..3],
        [
            ("import", "import"),
            ("trusted", "reprocess"),
            ("trusted", "daily")
        ]
    );
    assert_eq!(slowest[0]["max_s"].as_f64(), Some(90.0));
    assert_eq!(slowest[0]["version"], "1.2.0");

    service.stop().await;
    world.cleanup().await;
}
