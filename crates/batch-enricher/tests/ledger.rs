//! With etl-metrics unreachable a job still finishes, and every record of its run waits in the
//! ledger's durable outbox (in the job's own PostgreSQL database) for delivery once etl-metrics
//! is back; the delivery itself is `sightline-ledger`'s, tested there.

mod support;

use std::sync::Arc;

use batch_enricher::{
    Context,
    jobs::{self, DailyJob, Shard},
    metrics::BatchMetrics,
};
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
