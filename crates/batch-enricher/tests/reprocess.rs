//! Reprocessing after an enrichment rule changed (a user agent newly listed as a bot): only the
//! figures that rule affects move, the dry run predicted exactly that move, and the new figures
//! equal an independent computation under the new rule.

mod support;

use std::sync::Arc;

use batch_enricher::jobs::{self, DailyJob, ReprocessJob, Shard};
use support::{World, day, traffic};

const LISTED: &str = "KioskMonitor";

/// The site's totals on its batch `day` row, in the order of `rollup::METRICS` minus visitors.
async fn totals(world: &World, site_id: i64) -> Vec<(String, i64)> {
    let row: (i64, i64, i64, i64, i64, i64, i64, i64) = sqlx::query_as(
        "SELECT events, pageviews, visits, bounces, duration_us, orders, revenue_micros, bot_events \
         FROM rollups WHERE site_id = $1 AND layer = 'batch' AND granularity = 'day' \
           AND dimension = '' AND value = ''",
    )
    .bind(site_id)
    .fetch_one(world.pool())
    .await
    .unwrap();
    let names = [
        "events",
        "pageviews",
        "visits",
        "bounces",
        "duration_us",
        "orders",
        "revenue_micros",
        "bot_events",
    ];
    let values = [row.0, row.1, row.2, row.3, row.4, row.5, row.6, row.7];
    names.iter().map(|n| n.to_string()).zip(values).collect()
}

#[tokio::test]
async fn a_rule_change_moves_only_what_it_affects_as_the_dry_run_predicted() {
    let world = World::new().await;
    let traffic = traffic::generate(world.tenant_id, &world.sites, day(), 40);
    world.write_raw("archive", &traffic.events).await;
    world.write_raw("late", &traffic.late).await;
    let (ctx, _) = world.context(&[]);
    let job = DailyJob {
        date: Some(day()),
        now: chrono::Utc::now(),
        shard: Shard::default(),
    };
    assert!(jobs::daily(&Arc::new(ctx), job).await.unwrap().succeeded());
    let rows_before = world.batch_rows().await;
    let mut before = Vec::new();
    for site in &world.sites {
        before.push(totals(&world, site.site_id).await);
    }

    // Today's logic lists the kiosk browser as a bot.
    let (ctx, _) = world.context(&[("SIGHTLINE__BATCH__EXTRA_BOT_USER_AGENTS", LISTED)]);
    let ctx = Arc::new(ctx);
    let reprocess = |dry_run| ReprocessJob {
        tenant: "acme".into(),
        from: day(),
        to: day(),
        dry_run,
        shard: Shard::default(),
    };
    let dry = jobs::reprocess(&ctx, reprocess(true)).await.unwrap();
    assert_eq!(
        world.batch_rows().await,
        rows_before,
        "a dry run writes nothing"
    );
    assert_eq!(dry.diff.len(), world.sites.len() * 9);
    let real = jobs::reprocess(&ctx, reprocess(false)).await.unwrap();
    assert!(real.succeeded());

    let expected = traffic::expected(&traffic, &world.sites, day(), &[LISTED]);
    for (site, before) in world.sites.iter().zip(&before) {
        let after = totals(&world, site.site_id).await;
        for ((metric, old), (_, new)) in before.iter().zip(&after) {
            let line = dry
                .diff
                .iter()
                .find(|l| l.site_id == site.site_id && l.metric == metric)
                .unwrap();
            assert_eq!(
                (line.current, line.new),
                (*old, *new),
                "site {} {metric}",
                site.site_id
            );
        }
        let get = |m: &str| after.iter().find(|(n, _)| n == m).unwrap().1;
        let x = &expected[&site.site_id];
        assert_eq!(
            (
                get("events"),
                get("pageviews"),
                get("visits"),
                get("bot_events"),
                get("revenue_micros")
            ),
            (
                x.events,
                x.pageviews,
                x.visits,
                x.bot_events,
                x.revenue_micros
            ),
            "site {}: new figures under the new rule",
            site.site_id
        );
        let moved = x.bot_events - before.iter().find(|(n, _)| n == "bot_events").unwrap().1;
        assert!(moved > 0, "the rule reclassified events");
        assert_eq!(
            get("events") + get("bot_events"),
            before[0].1 + before.iter().find(|(n, _)| n == "bot_events").unwrap().1,
            "events only moved from people to bots"
        );
    }

    // Rows the rule does not touch (other browsers) are unchanged; the kiosk's Firefox rows
    // are gone from the people's figures; the closure moved to revision 2.
    let rows_after = world.batch_rows().await;
    let untouched = |rows: &[String]| -> Vec<String> {
        rows.iter()
            .filter(|r| r.contains("|browser|") && !r.contains("|browser|Firefox|"))
            .cloned()
            .collect()
    };
    assert!(!untouched(&rows_before).is_empty());
    assert_eq!(untouched(&rows_after), untouched(&rows_before));
    assert!(rows_before.iter().any(|r| r.contains("|browser|Firefox|")));
    assert!(!rows_after.iter().any(|r| r.contains("|browser|Firefox|")));
    let revisions: Vec<i32> = sqlx::query_scalar("SELECT DISTINCT revision FROM rollup_closures")
        .fetch_all(world.pool())
        .await
        .unwrap();
    assert_eq!(revisions, [2]);
    let keys = world.bucket.keys("trusted/events/").await;
    assert!(
        !keys.is_empty() && keys.iter().all(|k| k.contains("part-r000002-")),
        "{keys:?}"
    );
    world.finish().await;
}
