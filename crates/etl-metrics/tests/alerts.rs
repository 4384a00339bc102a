//! Alert rules end to end: each alert fires once and resolves once at a local webhook
//! receiver, across a restart of the service, with a failed post retried (not duplicated).

mod support;

use chrono::Utc;
use sightline_proto::pipeline::v1::{self as pb, pipeline_ledger_client::PipelineLedgerClient};
use support::{Receiver, Service, World};
use tonic::transport::Channel;
use uuid::Uuid;

const ALERTS: [&str; 4] = [
    "daily_run_missing",
    "freshness_lag",
    "dead_letters",
    "rejected_ratio",
];

fn env(world: &World, receiver: &Receiver) -> Vec<(String, String)> {
    let mut env = world.env();
    env.push((
        "SIGHTLINE__ETL_METRICS__WEBHOOK__URL".into(),
        receiver.url.clone(),
    ));
    // Fire at once: the for-duration is the state machine's unit tests' business.
    env.push((
        "SIGHTLINE__ETL_METRICS__ALERTS__FRESHNESS_LAG__FOR_SECS".into(),
        "0".into(),
    ));
    env
}

async fn batch_run(
    client: &mut PipelineLedgerClient<Channel>,
    job: &str,
    read: i64,
    rejected: i64,
    status: pb::Status,
) {
    let run_id = Uuid::new_v4().to_string();
    let now = Utc::now().timestamp_micros();
    client
        .start_run(pb::StartRunRequest {
            run_id: run_id.clone(),
            pipeline: "batch-enricher".into(),
            job: job.into(),
            version: "0.1.0".into(),
            tenant_id: None,
            params_json: "{}".into(),
            started_at_us: now - 10_000_000,
        })
        .await
        .unwrap();
    client
        .report_stage(pb::ReportStageRequest {
            report: Some(pb::StageReport {
                run_id: run_id.clone(),
                stage: "trusted".into(),
                attempt: 1,
                tenant_id: None,
                rows_read: read,
                rows_written: read - rejected,
                rows_rejected: rejected,
                bytes_read: 0,
                bytes_written: 0,
                started_at_us: now - 5_000_000,
                finished_at_us: now,
                status: pb::Status::Succeeded.into(),
                error: String::new(),
            }),
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

#[tokio::test]
async fn each_alert_fires_and_resolves_exactly_once_across_a_restart() {
    let world = World::new("etl_alerts").await;
    // The first post is refused: it must be retried, and count once.
    let receiver = Receiver::start(1).await;
    let t = world.topology.clone();

    // Arrange all four conditions.
    // No successful daily run since the ledger was installed 30 hours ago.
    sqlx::query("UPDATE pipeline_ledger_epoch SET created_at = now() - interval '30 hours'")
        .execute(&world.pool)
        .await
        .unwrap();
    // The speed layer is 2 hours behind with events waiting.
    sqlx::query(
        "INSERT INTO rollup_watermarks (shard, flushed_at, received_until, event_until) \
         VALUES (0, now(), now() - interval '2 hours', now() - interval '2 hours')",
    )
    .execute(&world.pool)
    .await
    .unwrap();
    world.publish(&t.partition_queue("rollup", 0), 2).await;
    world.publish(&t.dead_letter_queue(), 1).await;

    let service = Service::start(env(&world, &receiver)).await;
    let mut client = service.client().await;
    // Half the rows of an import rejected; the import is not the daily job.
    batch_run(&mut client, "import", 100, 50, pb::Status::Succeeded).await;

    support::wait_for("four firing posts", || async {
        ALERTS.iter().all(|a| receiver.count(a, "firing") == 1)
    })
    .await;
    assert_eq!(receiver.refused(), 1, "one post was refused and retried");
    // The gauges are set when the evaluation that posted ends, after the receiver has the post.
    support::wait_for("the firing gauges", || async {
        let metrics = service.metrics().await;
        ALERTS.iter().all(|alert| {
            let label = format!("alertname=\"{alert}\"");
            support::metric_value(&metrics, "sightline_etl_alert_firing", &label) == Some(1.0)
        })
    })
    .await;
    let firing = receiver.accepted();
    let rejected = firing
        .iter()
        .find(|p| p["alerts"][0]["labels"]["alertname"] == "rejected_ratio")
        .unwrap();
    assert_eq!(
        rejected["alerts"][0]["labels"]["pipeline"],
        "batch-enricher"
    );
    assert_eq!(rejected["alerts"][0]["annotations"]["value"], "0.5");
    let ratio = service
        .metric(
            "sightline_etl_rejected_ratio",
            "pipeline=\"batch-enricher\"",
        )
        .await;
    assert_eq!(ratio, Some(0.5));

    // A restart does not page again. The receiver counts a post before the service hears its
    // 200: stop only once the service has recorded all four as delivered, as a post cut off
    // in flight is (by design) sent again.
    support::wait_for("four deliveries recorded", || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM alert_state WHERE state = 'firing' AND notified_at IS NOT NULL",
        )
        .fetch_one(&world.pool)
        .await
        .unwrap()
            == 4
    })
    .await;
    service.stop().await;
    let service = Service::start(env(&world, &receiver)).await;
    service.wait_evaluations(3).await;
    assert_eq!(
        receiver.accepted().len(),
        4,
        "no page repeated after the restart"
    );

    // Clear every condition.
    let mut client = service.client().await;
    batch_run(&mut client, "daily", 100_000, 0, pb::Status::Succeeded).await;
    world.purge(&t.partition_queue("rollup", 0)).await;
    // The speed layer caught up: what its flush (or a drained consumer's heartbeat) writes.
    sqlx::query("UPDATE rollup_watermarks SET received_until = now()")
        .execute(&world.pool)
        .await
        .unwrap();
    world.purge(&t.dead_letter_queue()).await;

    support::wait_for("four resolved posts", || async {
        ALERTS.iter().all(|a| receiver.count(a, "resolved") == 1)
    })
    .await;
    service.wait_evaluations(3).await;
    for alert in ALERTS {
        assert_eq!(receiver.count(alert, "firing"), 1, "{alert}");
        assert_eq!(receiver.count(alert, "resolved"), 1, "{alert}");
    }
    assert_eq!(receiver.accepted().len(), 8);
    let resolved = receiver
        .accepted()
        .into_iter()
        .find(|p| p["status"] == "resolved")
        .unwrap();
    assert_ne!(resolved["alerts"][0]["endsAt"], "0001-01-01T00:00:00Z");
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM alert_state")
        .fetch_one(&world.pool)
        .await
        .unwrap();
    assert_eq!(left, 0, "resolved and delivered: nothing left to remember");

    service.stop().await;
    world.cleanup().await;
}
