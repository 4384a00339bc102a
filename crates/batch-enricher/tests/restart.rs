//! A run killed between its stages and started again ends with the same rollups, closures and
//! lake objects as a run that was never interrupted.

mod support;

use std::sync::Arc;

use batch_enricher::{
    CheckpointHook,
    day::Checkpoint,
    jobs::{self, ReprocessJob, RunSummary, Shard},
};
use support::{World, day, traffic};
use tokio::sync::mpsc;

async fn seeded() -> World {
    let world = World::new().await;
    for d in [day(), day().succ_opt().unwrap()] {
        let traffic = traffic::generate(world.tenant_id, &world.sites, d, 25);
        world
            .write_raw(&format!("archive-{d}"), &traffic.events)
            .await;
        world.write_raw(&format!("late-{d}"), &traffic.late).await;
    }
    world
}

fn job() -> ReprocessJob {
    ReprocessJob {
        tenant: "acme".into(),
        from: day(),
        to: day().succ_opt().unwrap(),
        dry_run: false,
        shard: Shard::default(),
    }
}

/// Everything a reader can see.
async fn outputs(world: &World) -> (Vec<String>, Vec<(i64, String, i32)>, Vec<(String, Vec<u8>)>) {
    let closures =
        sqlx::query_as("SELECT site_id, day::text, revision FROM rollup_closures ORDER BY 1, 2")
            .fetch_all(world.pool())
            .await
            .unwrap();
    (
        world.batch_rows().await,
        closures,
        world.objects("trusted/").await,
    )
}

#[tokio::test]
async fn a_killed_run_resumes_to_the_same_outputs() {
    let settings = [("SIGHTLINE__BATCH__PARALLELISM", "1")];
    let reference = seeded().await;
    let (ctx, _) = reference.context(&settings);
    let summary = jobs::reprocess(&Arc::new(ctx), job()).await.unwrap();
    assert_eq!(summary.closed.len(), 2);
    let expected = outputs(&reference).await;
    reference.finish().await;

    let world = seeded().await;
    // Stops the job once the second day's trusted objects are written, before its rollups.
    let (reached, mut stopped) = mpsc::unbounded_channel();
    let hook: CheckpointHook = Arc::new(move |point, _tenant, d| {
        let reached = reached.clone();
        Box::pin(async move {
            if point == Checkpoint::TrustedWritten && d != day() {
                let _ = reached.send(());
                std::future::pending::<()>().await;
            }
        })
    });
    let (ctx, _) = world.context(&settings);
    let ctx = Arc::new(ctx.with_hook(hook));
    let running = tokio::spawn({
        let ctx = ctx.clone();
        async move { jobs::reprocess(&ctx, job()).await }
    });
    stopped
        .recv()
        .await
        .expect("the job reached the second day");
    running.abort();
    assert!(running.await.unwrap_err().is_cancelled());
    let half = world.bucket.keys("trusted/events/").await;
    assert_eq!(
        half.len(),
        2,
        "the killed run left the second day's new objects: {half:?}"
    );

    let (ctx, _) = world.context(&settings);
    let resumed: RunSummary = jobs::reprocess(&Arc::new(ctx), job()).await.unwrap();
    assert_eq!(resumed.skipped, [(world.tenant_id, day())]);
    assert_eq!(
        resumed.closed,
        [(world.tenant_id, day().succ_opt().unwrap())]
    );
    let got = outputs(&world).await;
    assert_eq!(got.0, expected.0, "rollups");
    assert_eq!(got.1, expected.1, "closures");
    assert_eq!(got.2, expected.2, "trusted objects");
    let runs: Vec<(String, i32)> = sqlx::query_as("SELECT status, attempts FROM batch_runs")
        .fetch_all(world.pool())
        .await
        .unwrap();
    assert_eq!(runs, [("succeeded".to_owned(), 2)]);
    world.finish().await;
}
