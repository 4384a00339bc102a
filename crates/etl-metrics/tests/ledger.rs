//! The run ledger over gRPC, against the real service and PostgreSQL: writes, retries that do
//! not duplicate, refusals, reads.

mod support;

use chrono::Utc;
use sightline_proto::pipeline::v1::{self as pb};
use support::{Service, World};
use tonic::Code;
use uuid::Uuid;

fn now_us() -> i64 {
    Utc::now().timestamp_micros()
}

fn start(run_id: Uuid, job: &str, tenant: Option<i64>) -> pb::StartRunRequest {
    pb::StartRunRequest {
        run_id: run_id.to_string(),
        pipeline: "batch-enricher".into(),
        job: job.into(),
        version: "1.2.3".into(),
        tenant_id: tenant,
        params_json: r#"{"day":"2025-03-10"}"#.into(),
        started_at_us: now_us() - 60_000_000,
    }
}

fn stage(
    run_id: Uuid,
    name: &str,
    attempt: u32,
    read: i64,
    rejected: i64,
) -> pb::ReportStageRequest {
    let end = now_us();
    pb::ReportStageRequest {
        report: Some(pb::StageReport {
            run_id: run_id.to_string(),
            stage: name.into(),
            attempt,
            tenant_id: None,
            rows_read: read,
            rows_written: read - rejected,
            rows_rejected: rejected,
            bytes_read: read * 100,
            bytes_written: (read - rejected) * 80,
            started_at_us: end - 42_000_000,
            finished_at_us: end,
            status: pb::Status::Succeeded.into(),
            error: String::new(),
        }),
    }
}

async fn count(world: &World, table: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
        .fetch_one(&world.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn retried_reports_are_recorded_once() {
    let world = World::new("etl_ledger_retry").await;
    let service = Service::start(world.env()).await;
    let mut client = service.client().await;
    let run_id = Uuid::new_v4();

    for (i, expect_duplicate) in [false, true].into_iter().enumerate() {
        let ctx = format!("delivery {i}");
        let r = client
            .start_run(start(run_id, "daily", Some(7)))
            .await
            .unwrap();
        assert_eq!(r.into_inner().duplicate, expect_duplicate, "{ctx}");
        let r = client
            .report_stage(stage(run_id, "trusted/2025-03-10", 1, 1000, 10))
            .await
            .unwrap();
        assert_eq!(r.into_inner().duplicate, expect_duplicate, "{ctx}");
        let r = client
            .finish_run(pb::FinishRunRequest {
                run_id: run_id.to_string(),
                status: pb::Status::Succeeded.into(),
                error: String::new(),
                finished_at_us: 1_900_000_000_000_000,
            })
            .await
            .unwrap();
        assert_eq!(r.into_inner().duplicate, expect_duplicate, "{ctx}");
        let window = pb::StreamWindow {
            pipeline: "stream".into(),
            consumer_group: "rollup".into(),
            partition: 1,
            window_start_us: 1_800_000_000_000_000,
            window_end_us: 1_800_000_060_000_000,
            version: "1.2.3".into(),
            events_in: 500,
            events_out: 499,
            events_rejected: 1,
            lag_ms: 1200,
        };
        let r = client
            .report_stream_window(pb::ReportStreamWindowRequest {
                window: Some(window),
            })
            .await
            .unwrap();
        assert_eq!(r.into_inner().duplicate, expect_duplicate, "{ctx}");
    }

    assert_eq!(count(&world, "pipeline_runs").await, 1);
    assert_eq!(count(&world, "pipeline_stage_runs").await, 1);
    assert_eq!(count(&world, "pipeline_stream_windows").await, 1);
    let run = client
        .get_run(pb::GetRunRequest {
            run_id: run_id.to_string(),
        })
        .await
        .unwrap()
        .into_inner()
        .run
        .unwrap();
    assert_eq!(run.status(), pb::Status::Succeeded);
    assert_eq!(run.tenant_id, Some(7));
    assert_eq!(run.stages.len(), 1);
    assert_eq!(run.stages[0].rows_rejected, 10);

    // The stage duration was observed once, under the stage's family name.
    let metrics = service.metrics().await;
    let observed = support::metric_value(
        &metrics,
        "sightline_etl_stage_duration_seconds_count",
        "stage=\"trusted\"",
    );
    assert_eq!(observed, Some(1.0), "{metrics}");
    let duplicates = support::metric_value(
        &metrics,
        "sightline_etl_ledger_reports_total",
        "kind=\"report_stage\",outcome=\"duplicate\"",
    );
    assert_eq!(duplicates, Some(1.0));

    service.stop().await;
    world.cleanup().await;
}

#[tokio::test]
async fn invalid_reports_are_refused_with_every_problem_named() {
    let world = World::new("etl_ledger_invalid").await;
    let service = Service::start(world.env()).await;
    let mut client = service.client().await;

    let mut bad = start(Uuid::new_v4(), "", None);
    bad.run_id = "not-a-uuid".into();
    bad.params_json = "[1, 2]".into();
    let status = client.start_run(bad).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    for field in ["run_id", "job", "params_json"] {
        assert!(
            status.message().contains(field),
            "{field}: {}",
            status.message()
        );
    }

    // A stage of a run nobody started.
    let status = client
        .report_stage(stage(Uuid::new_v4(), "dedupe", 1, 10, 0))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(count(&world, "pipeline_stage_runs").await, 0);

    let status = client
        .get_run(pb::GetRunRequest {
            run_id: Uuid::new_v4().to_string(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);

    service.stop().await;
    world.cleanup().await;
}

#[tokio::test]
async fn a_resumed_run_reopens_and_runs_are_listed_page_by_page() {
    let world = World::new("etl_ledger_resume").await;
    let service = Service::start(world.env()).await;
    let mut client = service.client().await;

    let run_id = Uuid::new_v4();
    let first = start(run_id, "daily", None);
    client.start_run(first.clone()).await.unwrap();
    let finish = |status: pb::Status, at: i64| pb::FinishRunRequest {
        run_id: run_id.to_string(),
        status: status.into(),
        error: if status == pb::Status::Failed {
            "lake down".into()
        } else {
            String::new()
        },
        finished_at_us: at,
    };
    let failed_at = first.started_at_us + 1_000_000;
    client
        .finish_run(finish(pb::Status::Failed, failed_at))
        .await
        .unwrap();
    // The original start again (a retry) changes nothing ...
    assert!(
        client
            .start_run(first.clone())
            .await
            .unwrap()
            .into_inner()
            .duplicate
    );
    // ... a later start (the resume) reopens the run, and its finish counts.
    let mut resume = first.clone();
    resume.started_at_us = failed_at + 1_000_000;
    assert!(
        !client
            .start_run(resume)
            .await
            .unwrap()
            .into_inner()
            .duplicate
    );
    let get = |client: &mut pb::pipeline_ledger_client::PipelineLedgerClient<_>| {
        let mut client = client.clone();
        async move {
            client
                .get_run(pb::GetRunRequest {
                    run_id: run_id.to_string(),
                })
                .await
                .unwrap()
                .into_inner()
                .run
                .unwrap()
        }
    };
    assert_eq!(get(&mut client).await.status(), pb::Status::Running);
    client
        .finish_run(finish(pb::Status::Succeeded, failed_at + 5_000_000))
        .await
        .unwrap();
    let run = get(&mut client).await;
    assert_eq!(
        (run.status(), run.error.as_str()),
        (pb::Status::Succeeded, "")
    );

    for _ in 0..4 {
        client
            .start_run(start(Uuid::new_v4(), "import", Some(3)))
            .await
            .unwrap();
    }
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_runs(pb::ListRunsRequest {
                job: "import".into(),
                limit: 3,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        seen.extend(page.runs.into_iter().map(|r| r.run_id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    seen.sort();
    seen.dedup();
    assert_eq!(
        seen.len(),
        4,
        "every import run once, none of the daily job"
    );

    service.stop().await;
    world.cleanup().await;
}
