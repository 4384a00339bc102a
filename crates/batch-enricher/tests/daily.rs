//! A generated day with duplicates across files, late arrivals, bots, invalid rows and sites in
//! three time zones, closed by `daily` against the real PostgreSQL and S3 server: the trusted
//! tables (read back by DuckDB) and the final rollups equal an independent computation, and
//! the events carry the product catalogue joined by the sku of their properties.

mod support;

use std::{collections::BTreeMap, sync::Arc};

use batch_enricher::{
    import::{self, ImportJob, Source},
    jobs::{self, DailyJob, Shard},
    ledger::Status,
};
use sightline_event::VisitorSketch;
use sqlx::Row as _;
use support::{World, day, traffic};

#[tokio::test]
async fn a_closed_day_equals_an_independent_computation() {
    let world = World::new().await;
    let traffic = traffic::generate(world.tenant_id, &world.sites, day(), 60);
    let (first, second) = traffic.events.split_at(traffic.events.len() / 2);
    world.write_raw("archive-1", first).await;
    world.write_raw("archive-2", second).await;
    world.write_raw("redelivered", &traffic.duplicates).await;
    world.write_raw("late", &traffic.late).await;
    world.write_raw("bad", &traffic.invalid).await;
    assert!(!traffic.duplicates.is_empty() && !traffic.late.is_empty());

    // Small chunks: the day is processed a few hundred rows at a time.
    let (ctx, ledger) = world.context(&[
        (
            "SIGHTLINE__BATCH__REFERENCE_JOINS",
            "products.sku = product.sku",
        ),
        ("SIGHTLINE__BATCH__CHUNK_ROWS", "300"),
    ]);
    let ctx = Arc::new(ctx);
    // The catalogue: sku-3 is missing from it, so its events join nothing.
    let catalogue = tempfile::tempdir().unwrap();
    std::fs::write(
        catalogue.path().join("products.csv"),
        "sku,name,category\nsku-0,Red shoes,shoes\nsku-1,Blue hat,hats\nsku-2,\"Socks, 3 pairs\",socks\n",
    )
    .unwrap();
    let reference = ImportJob {
        tenant: "acme".into(),
        site: None,
        source: Source::Local(catalogue.path().to_path_buf()),
        dataset: Some("products".into()),
    };
    let (importer, _) = world.context(&[]);
    import::import(&Arc::new(importer), reference)
        .await
        .unwrap();
    let job = DailyJob {
        date: Some(day()),
        now: chrono::Utc::now(),
        shard: Shard::default(),
    };
    let summary = jobs::daily(&ctx, job).await.unwrap();
    assert_eq!(summary.closed, [(world.tenant_id, day())]);
    assert!(summary.succeeded(), "{:?}", summary.failed);

    let expected = traffic::expected(&traffic, &world.sites, day(), &[]);
    for (site_id, x) in &expected {
        assert!(x.events > 50 && x.visits > 20 && x.orders > 0 && x.bot_events > 0);
        // The final rollups: the site's totals on the `day` row.
        let row = sqlx::query(
            "SELECT events, pageviews, visits, bounces, duration_us, orders, revenue_micros, \
               bot_events, visitors, revision FROM rollups WHERE site_id = $1 AND layer = 'batch' \
               AND granularity = 'day' AND dimension = '' AND value = ''",
        )
        .bind(site_id)
        .fetch_one(world.pool())
        .await
        .unwrap();
        let got = traffic::Expected {
            events: row.get(0),
            pageviews: row.get(1),
            visits: row.get(2),
            bounces: row.get(3),
            duration_us: row.get(4),
            orders: row.get(5),
            revenue_micros: row.get(6),
            bot_events: row.get(7),
            visitors: x.visitors,
        };
        assert_eq!(&got, x, "site {site_id}: day totals");
        let sketch = VisitorSketch::from_bytes(&row.get::<Vec<u8>, _>(8)).unwrap();
        let error = (sketch.estimate() - x.visitors as f64).abs() / x.visitors as f64;
        assert!(
            error < 0.03,
            "site {site_id}: visitors {} vs {}",
            sketch.estimate(),
            x.visitors
        );
        assert_eq!(row.get::<i32, _>(9), 1, "first revision");
    }

    // Every hour row lies in its site's day, and for whole-hour zones they add up to the day.
    let hours: Vec<(i64, i64, i64)> = sqlx::query_as(
        "SELECT r.site_id, sum(r.events)::bigint, count(*) FILTER (WHERE r.bucket < c.starts_at \
           OR r.bucket >= c.ends_at) FROM rollups r JOIN rollup_closures c USING (tenant_id, site_id) \
         WHERE r.layer = 'batch' AND r.granularity = 'hour' AND r.dimension = '' \
         GROUP BY r.site_id ORDER BY 1",
    )
    .fetch_all(world.pool())
    .await
    .unwrap();
    for (site_id, events, outside) in hours {
        assert_eq!(outside, 0, "site {site_id}: an hour outside the closed day");
        if world
            .sites
            .iter()
            .any(|s| s.site_id == site_id && s.zone.name() != "Asia/Kolkata")
        {
            assert_eq!(events, expected[&site_id].events, "site {site_id}: hours");
        }
    }

    // The trusted tables as DuckDB reads them.
    let metrics = world
        .duck(
            "trusted/daily_metrics/",
            "SELECT site_id, events, pageviews, visitors, visits, bounces, duration_us, orders, \
               revenue_micros, bot_events, CAST(day AS VARCHAR) AS day, tenant \
             FROM read_parquet('trusted/daily_metrics/**/*.parquet', hive_partitioning = true) \
             ORDER BY site_id",
        )
        .await;
    let from_lake: BTreeMap<i64, traffic::Expected> = metrics
        .iter()
        .map(|r| {
            let n = |k: &str| r[k].as_i64().unwrap();
            assert_eq!(r["day"], "2025-03-10");
            assert_eq!(n("tenant"), world.tenant_id);
            (
                n("site_id"),
                traffic::Expected {
                    events: n("events"),
                    pageviews: n("pageviews"),
                    visitors: n("visitors"),
                    visits: n("visits"),
                    bounces: n("bounces"),
                    duration_us: n("duration_us"),
                    orders: n("orders"),
                    revenue_micros: n("revenue_micros"),
                    bot_events: n("bot_events"),
                },
            )
        })
        .collect();
    assert_eq!(from_lake, expected, "trusted/daily_metrics");

    let events = world
        .duck(
            "trusted/events/",
            "SELECT site_id, count(*) AS n, count(DISTINCT message_id) AS ids, \
               count(*) FILTER (WHERE bot_reason IS NOT NULL) AS bots, \
               count(DISTINCT session_id) AS sessions \
             FROM read_parquet('trusted/events/**/*.parquet', hive_partitioning = true) \
             GROUP BY site_id ORDER BY site_id",
        )
        .await;
    for r in &events {
        let x = &expected[&r["site_id"].as_i64().unwrap()];
        assert_eq!(r["n"], x.events + x.bot_events);
        assert_eq!(r["ids"], r["n"], "no duplicate event ids");
        assert_eq!(r["bots"], x.bot_events);
    }
    let sessions = world
        .duck(
            "trusted/sessions/",
            "SELECT site_id, count(*) AS visits, sum(duration_us) AS duration_us \
             FROM read_parquet('trusted/sessions/**/*.parquet') GROUP BY 1 ORDER BY 1",
        )
        .await;
    for r in &sessions {
        let x = &expected[&r["site_id"].as_i64().unwrap()];
        assert_eq!(
            (r["visits"].as_i64(), r["duration_us"].as_i64()),
            (Some(x.visits), Some(x.duration_us))
        );
    }

    // Each cart addition carries its product's catalogue row, looked up here from the generator.
    let catalogue: BTreeMap<&str, (&str, &str)> = [
        ("sku-0", ("Red shoes", "shoes")),
        ("sku-1", ("Blue hat", "hats")),
        ("sku-2", ("Socks, 3 pairs", "socks")),
    ]
    .into();
    let added: BTreeMap<String, Option<(&str, &str)>> = traffic
        .events
        .iter()
        .chain(&traffic.late)
        .filter(|e| e.name == "Added To Cart")
        .map(|e| {
            let v: usize = e.visitor_id.rsplit("-v").next().unwrap().parse().unwrap();
            let product = catalogue.get(traffic::sku_of(v).as_str()).copied();
            (e.message_id.clone(), product)
        })
        .collect();
    let joined = world
        .duck(
            "trusted/events/",
            "SELECT message_id, name, products.name AS product, products.category AS category \
             FROM read_parquet('trusted/events/**/*.parquet') WHERE type = 'track'",
        )
        .await;
    let mut matched = 0;
    for r in &joined {
        let id = r["message_id"].as_str().unwrap();
        let got = r["product"].as_str().zip(r["category"].as_str());
        if r["name"] == "Added To Cart" {
            assert_eq!(got, added[id], "{id}: its product");
            matched += usize::from(got.is_some());
        } else {
            assert_eq!(got, None, "{id}: orders name no product");
        }
    }
    assert!(
        matched > 20 && matched < added.len(),
        "{matched} of {}",
        added.len()
    );
    let parts = world.objects("trusted/events/").await.len();
    assert!(parts > 2, "{parts} parts: one per chunk of visitors");

    // Every invalid row is kept with its reason.
    let rejected = world
        .duck(
            "errors/batch/",
            "SELECT error_reason, count(*) AS n FROM read_parquet('errors/batch/**/*.parquet') \
             GROUP BY 1 ORDER BY 1",
        )
        .await;
    let rejected: Vec<(String, i64)> = rejected
        .iter()
        .map(|r| {
            (
                r["error_reason"].as_str().unwrap().to_owned(),
                r["n"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        rejected,
        [
            ("missing_id".into(), 3),
            ("unknown_site".into(), 3),
            ("unknown_type".into(), 3)
        ]
    );

    // The ledger saw both stages with their figures.
    let stages = ledger.stages.lock().clone();
    let names: Vec<&str> = stages.iter().map(|s| s.stage.as_str()).collect();
    assert_eq!(names, ["trusted/2025-03-10", "rollups/2025-03-10"]);
    let total: i64 = expected.values().map(|x| x.events + x.bot_events).sum();
    assert_eq!(stages[0].rows_written, total as u64);
    assert_eq!(stages[0].rows_rejected, 9);
    assert!(stages[0].bytes_read > 0 && stages[0].bytes_written > 0);
    assert_eq!(ledger.finished.lock()[0].1, Status::Succeeded);

    // Running the same job again changes no content.
    let rows_before = world.batch_rows().await;
    let lake_before = world.objects("trusted/").await;
    let job = DailyJob {
        date: Some(day()),
        now: chrono::Utc::now(),
        shard: Shard::default(),
    };
    let again = jobs::daily(&ctx, job).await.unwrap();
    assert_eq!(
        again.closed.len(),
        1,
        "a succeeded run is not resumed: it runs again"
    );
    assert_eq!(world.batch_rows().await, rows_before);
    let lake_after: Vec<Vec<u8>> = world
        .objects("trusted/")
        .await
        .into_iter()
        .map(|(_, b)| b)
        .collect();
    let lake_before: Vec<Vec<u8>> = lake_before.into_iter().map(|(_, b)| b).collect();
    assert_eq!(
        lake_after, lake_before,
        "same bytes, under the next revision's keys"
    );
    world.finish().await;
}
