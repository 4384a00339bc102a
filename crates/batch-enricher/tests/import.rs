//! `import`: gzip CSV and JSON lines from a local folder into `raw/` as typed Parquet, bad rows
//! kept in `errors/import/` with their reason; importing again changes nothing; the imported
//! day then closes like any other. Reference data lands in `reference/`.

mod support;

use std::{io::Write as _, sync::Arc};

use batch_enricher::{
    import::{self, ImportJob, Source},
    jobs::{self, DailyJob, Shard},
};
use flate2::{Compression, write::GzEncoder};
use support::{World, day};

const CSV: &str = "message_id,type,event,anonymous_id,timestamp,user_agent,page_url,properties
c1,page,,a1,2025-03-10T08:00:00Z,\"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36\",https://paris.example/shoes,
c2,track,Order Completed,a1,2025-03-10T08:05:00Z,\"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36\",,\"{\"\"revenue\"\": 12.5, \"\"currency\"\": \"\"EUR\"\"}\"
c3,page,,,2025-03-10T08:06:00Z,x,https://paris.example/,
c4,page,,a2,yesterday,x,https://paris.example/,
";

const JSONL: &str = r#"{"type":"page","messageId":"j1","anonymousId":"a2","timestamp":"2025-03-10T09:00:00Z","context":{"userAgent":"Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1","page":{"url":"https://paris.example/"}}}
{"type":"track","messageId":"j2","anonymousId":"a2","timestamp":"2025-03-10T09:01:00Z"}
not json
"#;

#[tokio::test]
async fn files_import_into_raw_with_bad_rows_kept_and_close_like_any_day() {
    let world = World::new().await;
    let site = world.sites[0].site_id;
    let dir = tempfile::tempdir().unwrap();
    let mut gz = GzEncoder::new(Vec::new(), Compression::default());
    gz.write_all(CSV.as_bytes()).unwrap();
    std::fs::write(dir.path().join("shop.csv.gz"), gz.finish().unwrap()).unwrap();
    std::fs::write(dir.path().join("app.jsonl"), JSONL).unwrap();
    std::fs::write(dir.path().join("README.txt"), "not a source file").unwrap();

    let (ctx, ledger) = world.context(&[]);
    let ctx = Arc::new(ctx);
    let job = || ImportJob {
        tenant: "acme".into(),
        site: Some(site),
        source: Source::Local(dir.path().to_path_buf()),
        dataset: None,
    };
    let summary = import::import(&ctx, job()).await.unwrap();
    assert_eq!((summary.files, summary.rows, summary.rejected), (2, 3, 4));
    assert_eq!(ledger.stages.lock().len(), 2, "one stage per file");

    let refused = world
        .duck(
            "errors/import/",
            "SELECT error_reason AS reason, detail FROM read_parquet('errors/import/**/*.parquet') ORDER BY detail",
        )
        .await;
    let refused: Vec<String> = refused
        .iter()
        .map(|r| r["reason"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(refused.len(), 4);
    for reason in [
        "missing_visitor",
        "invalid_timestamp",
        "missing_event_name",
        "invalid_json",
    ] {
        assert!(
            refused.iter().any(|r| r == reason),
            "{reason} in {refused:?}"
        );
    }
    let raw = world
        .duck(
            "raw/events/",
            "SELECT message_id, type, visitor_id, hour FROM read_parquet('raw/events/**/*.parquet', \
               hive_partitioning = true) ORDER BY message_id",
        )
        .await;
    let ids: Vec<&str> = raw
        .iter()
        .map(|r| r["message_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["c1", "c2", "j1"]);

    let before = world.objects("raw/").await;
    import::import(&ctx, job()).await.unwrap();
    assert_eq!(
        world.objects("raw/").await,
        before,
        "a reimport writes the same objects"
    );

    let daily = DailyJob {
        date: Some(day()),
        now: chrono::Utc::now(),
        shard: Shard::default(),
    };
    assert!(jobs::daily(&ctx, daily).await.unwrap().succeeded());
    let (events, orders, revenue): (i64, i64, i64) = sqlx::query_as(
        "SELECT events, orders, revenue_micros FROM rollups WHERE site_id = $1 \
         AND layer = 'batch' AND granularity = 'day' AND dimension = ''",
    )
    .bind(site)
    .fetch_one(world.pool())
    .await
    .unwrap();
    assert_eq!((events, orders, revenue), (3, 1, 12_500_000));

    // A merchant catalogue lands where jobs and SQL can join it.
    let catalogue = dir.path().join("merchants");
    std::fs::create_dir(&catalogue).unwrap();
    std::fs::write(
        catalogue.join("m.csv"),
        "merchant_id,name\nm1,Shoes Inc\nm2,\"Hats, Ltd\"\n",
    )
    .unwrap();
    let reference = ImportJob {
        dataset: Some("merchants".into()),
        source: Source::Local(catalogue),
        ..job()
    };
    assert_eq!(import::import(&ctx, reference).await.unwrap().rows, 2);
    let stage = ledger.stages.lock().last().cloned().unwrap();
    assert_eq!(stage.stage, "reference/merchants");
    assert_eq!(
        (stage.rows_read, stage.rows_written, stage.rows_rejected),
        (2, 2, 0)
    );
    assert!(stage.bytes_read > 0 && stage.bytes_written > 0);
    let rows = world
        .duck(
            "reference/",
            "SELECT name FROM read_parquet('reference/merchants/**/*.parquet') ORDER BY merchant_id",
        )
        .await;
    assert_eq!(rows[1]["name"], "Hats, Ltd");
    world.finish().await;
}
