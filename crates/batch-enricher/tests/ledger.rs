//! What the batch enricher tells the run ledger. With etl-metrics unreachable a job still
//! finishes, and every record of its run waits in the ledger's durable outbox (in the job's own
//! PostgreSQL database) for delivery once etl-metrics is back; the delivery itself is
//! `sightline-ledger`'s, tested there. A tenant-day that fails shows as a failed stage.

mod support;

use std::sync::Arc;

use batch_enricher::{
    Context,
    jobs::{self, DailyJob, ReprocessJob, Shard},
    ledger::Status,
    metrics::BatchMetrics,
};
use sightline_lake::{ObjectStore as _, layout::RawPartition};
use support::{World, day, traffic};

#[tokio::test]
async fn a_job_finishes_without_etl_metrics_and_keeps_its_records() {
    let world = World::new().await;
    let traffic = traffic::generate(world.tenant_id, &world.sites, day(), 10);
    world.write_raw("archive", &traffic.events).await;
    // Nothing listens there: a port bound and released at once.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let config = world.config(&[("SIGHTLINE__BATCH__LEDGER_ENDPOINT", &endpoint)]);
    let ctx = Arc::new(Context::from_config(&config, BatchMetrics::default()).unwrap());
    let job = DailyJob {
        date: Some(day()),
        now: chrono::Utc::now(),
        shard: Shard::default(),
    };
    let summary = jobs::daily(&ctx, job).await.unwrap();
    assert!(summary.succeeded() && summary.closed.len() == 1);

    let kinds: Vec<String> =
        sqlx::query_scalar("SELECT kind FROM ledger_outbox WHERE rejected_at IS NULL ORDER BY id")
            .fetch_all(world.pool())
            .await
            .unwrap();
    assert_eq!(
        kinds,
        ["start_run", "report_stage", "report_stage", "finish_run"],
        "every record of the run waits for etl-metrics"
    );
    world.finish().await;
}

/// A tenant-day that cannot be read (a corrupt object in its raw partition) fails alone: the
/// ledger gets a failed `trusted` stage carrying the reason, the other day closes, and the run
/// ends failed.
#[tokio::test]
async fn a_failed_tenant_day_is_reported_as_a_failed_stage_with_its_error() {
    let world = World::new().await;
    let next = day().succ_opt().unwrap();
    for d in [day(), next] {
        let traffic = traffic::generate(world.tenant_id, &world.sites, d, 10);
        world
            .write_raw(&format!("archive-{d}"), &traffic.events)
            .await;
    }
    // Noon UTC of the next day: inside that tenant-day's window only, in all three zones.
    let corrupt = RawPartition {
        tenant_id: world.tenant_id,
        date: next,
        hour: 12,
    }
    .key("corrupt");
    world
        .bucket
        .store
        .put(&corrupt, b"not a parquet file".to_vec().into())
        .await
        .unwrap();

    let (ctx, ledger) = world.context(&[]);
    let job = ReprocessJob {
        tenant: "acme".into(),
        from: day(),
        to: next,
        dry_run: false,
        shard: Shard::default(),
    };
    let summary = jobs::reprocess(&Arc::new(ctx), job).await.unwrap();
    assert_eq!(summary.closed, [(world.tenant_id, day())]);
    assert_eq!(summary.failed.len(), 1, "{:?}", summary.failed);
    assert_eq!(summary.failed[0].1, next);

    let stages = ledger.stages.lock().clone();
    let mut outcomes: Vec<(String, Status)> =
        stages.iter().map(|s| (s.stage.clone(), s.status)).collect();
    outcomes.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        outcomes,
        [
            (format!("rollups/{}", day()), Status::Succeeded),
            (format!("trusted/{}", day()), Status::Succeeded),
            (format!("trusted/{next}"), Status::Failed),
        ]
    );
    let failed = stages.iter().find(|s| s.status == Status::Failed).unwrap();
    assert_eq!(failed.tenant_id, Some(world.tenant_id));
    assert_eq!(failed.error.as_deref(), Some(summary.failed[0].2.as_str()));
    assert!(failed.finished_at >= failed.started_at);
    let finished = ledger.finished.lock().clone();
    assert_eq!(finished.len(), 1);
    assert_eq!(finished[0].1, Status::Failed);
    world.finish().await;
}
