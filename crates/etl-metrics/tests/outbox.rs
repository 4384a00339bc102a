//! The ledger client (`sightline-ledger`) against the real service: reports made while
//! etl-metrics is unreachable wait in the PostgreSQL outbox and arrive once, in order.

mod support;

use std::time::Duration;

use chrono::Utc;
use sightline_ledger::{
    DeliveryOptions, LedgerClient, RunStart, StageReport, Status, StreamWindow,
};
use sightline_testkit::proxy::Proxy;
use support::{Service, World};
use uuid::Uuid;

fn run_start(run_id: Uuid) -> RunStart {
    RunStart {
        run_id,
        pipeline: "batch-enricher".into(),
        job: "daily".into(),
        version: "0.1.0".into(),
        tenant_id: Some(1),
        params_json: "{}".into(),
        started_at: Utc::now(),
    }
}

fn stage(run_id: Uuid, name: &str) -> StageReport {
    let now = Utc::now();
    StageReport {
        run_id,
        stage: name.into(),
        attempt: 1,
        tenant_id: None,
        rows_read: 100,
        rows_written: 98,
        rows_rejected: 2,
        bytes_read: 1000,
        bytes_written: 900,
        started_at: now - chrono::Duration::seconds(3),
        finished_at: now,
        status: Status::Succeeded,
        error: None,
    }
}

async fn ledger_counts(world: &World) -> (i64, i64, i64, String) {
    let runs: i64 = sqlx::query_scalar("SELECT count(*) FROM pipeline_runs")
        .fetch_one(&world.pool)
        .await
        .unwrap();
    let stages: i64 = sqlx::query_scalar("SELECT count(*) FROM pipeline_stage_runs")
        .fetch_one(&world.pool)
        .await
        .unwrap();
    let windows: i64 = sqlx::query_scalar("SELECT count(*) FROM pipeline_stream_windows")
        .fetch_one(&world.pool)
        .await
        .unwrap();
    let status: String = sqlx::query_scalar("SELECT coalesce(max(status), '') FROM pipeline_runs")
        .fetch_one(&world.pool)
        .await
        .unwrap();
    (runs, stages, windows, status)
}

fn options() -> DeliveryOptions {
    DeliveryOptions {
        connect_timeout: Duration::from_millis(500),
        call_timeout: Duration::from_secs(5),
        retry_delay: Duration::from_secs(60),
        batch_size: 2,
    }
}

#[tokio::test]
async fn reports_made_while_etl_metrics_is_down_are_delivered_once_in_order() {
    let world = World::new("etl_outbox_down").await;
    let service = Service::start(world.env()).await;
    let proxy = Proxy::start(&service.grpc.to_string()).await;
    proxy.cut();

    let client = LedgerClient::with_options(Some(proxy.http_url()), world.pool.clone(), options());
    let run_id = Uuid::new_v4();
    let (start, trusted) = (run_start(run_id), stage(run_id, "trusted"));
    // Every call succeeds although etl-metrics cannot be reached: the job is not failed.
    client.start_run(start.clone()).await.unwrap();
    client.report_stage(trusted.clone()).await.unwrap();
    client.report_stage(stage(run_id, "rollups")).await.unwrap();
    client
        .report_stream_window(StreamWindow {
            pipeline: "stream".into(),
            consumer_group: "rollup".into(),
            partition: 0,
            window_start: Utc::now() - chrono::Duration::seconds(60),
            window_end: Utc::now(),
            version: "0.1.0".into(),
            events_in: 10,
            events_out: 10,
            events_rejected: 0,
            lag_ms: 50,
        })
        .await
        .unwrap();
    client
        .finish_run(run_id, Status::Succeeded, None)
        .await
        .unwrap();
    assert_eq!(
        client.flush().await.unwrap(),
        5,
        "all five wait in the outbox"
    );
    assert_eq!(ledger_counts(&world).await, (0, 0, 0, String::new()));

    proxy.restore();
    assert_eq!(client.flush().await.unwrap(), 0);
    assert_eq!(
        ledger_counts(&world).await,
        (1, 2, 1, "succeeded".to_string()),
        "in order: the stages found their run, the finish came last"
    );

    // A crash after delivery and before the outbox delete sends reports again: simulated by a
    // second client sending the same reports. Nothing changes.
    let again = LedgerClient::with_options(Some(service.endpoint()), world.pool.clone(), options());
    again.start_run(start).await.unwrap();
    again.report_stage(trusted).await.unwrap();
    assert_eq!(again.flush().await.unwrap(), 0);
    assert_eq!(
        ledger_counts(&world).await,
        (1, 2, 1, "succeeded".to_string())
    );

    drop(proxy);
    service.stop().await;
    world.cleanup().await;
}

#[tokio::test]
async fn a_service_started_late_gets_what_waited_and_refused_reports_do_not_block() {
    let world = World::new("etl_outbox_late").await;
    // Nothing listens at this address yet.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = port.local_addr().unwrap();
    drop(port);

    let client = LedgerClient::with_options(
        Some(format!("http://{addr}")),
        world.pool.clone(),
        options(),
    );
    let run_id = Uuid::new_v4();
    // A stage of a run never started: etl-metrics will refuse it for good.
    client
        .report_stage(stage(Uuid::new_v4(), "orphan"))
        .await
        .unwrap();
    client.start_run(run_start(run_id)).await.unwrap();
    client.report_stage(stage(run_id, "trusted")).await.unwrap();
    client
        .finish_run(run_id, Status::Failed, Some("lake down".into()))
        .await
        .unwrap();
    assert_eq!(client.pending().await.unwrap(), 4);

    let mut env = world.env();
    env.push((
        "SIGHTLINE__ETL_METRICS__GRPC_LISTEN".into(),
        addr.to_string(),
    ));
    let service = Service::start(env).await;
    assert_eq!(
        client.flush().await.unwrap(),
        0,
        "the refused report is set aside"
    );
    assert_eq!(ledger_counts(&world).await, (1, 1, 0, "failed".to_string()));
    let refused: (i64, Option<String>) = sqlx::query_as(
        "SELECT count(*), max(last_error) FROM ledger_outbox WHERE rejected_at IS NOT NULL",
    )
    .fetch_one(&world.pool)
    .await
    .unwrap();
    assert_eq!(refused.0, 1);
    assert!(refused.1.unwrap_or_default().contains("unknown run_id"));

    service.stop().await;
    world.cleanup().await;
}
