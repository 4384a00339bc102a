//! A day the batch layer closes switches from provisional speed figures to final batch figures
//! atomically, and a re-close moves answers to the new revision.

mod support;

use std::collections::BTreeMap;

use chrono::{Duration, NaiveDate};
use sightline_proto::{events::v1::EventType, query::v1 as pb};
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_day_switches_to_batch_figures_atomically() {
    let world = World::new().await;
    world.roll_up().await;
    let running = Running::start(&world.database_url, &[]).await;
    let mut client = running.client().await;
    let token = world.acme_token.clone();
    let site = &world.utc;
    let (first, last) = span(site);
    let closed = first + Duration::days(1);
    let request = pb::TimeseriesRequest {
        site_id: site.id,
        metrics: names(&["pageviews", "visitors"]),
        interval: "day".into(),
        range: dates(first, last),
        ..Default::default()
    };
    let before = timeseries(&mut client, &token, request.clone()).await;
    let speed: BTreeMap<String, f64> = before
        .buckets
        .iter()
        .map(|b| (b.label.clone(), b.values[0].value))
        .collect();
    assert!(speed[&closed.to_string()] > 0.0);

    close_day(&world, closed, Some((1, 777, 55))).await;
    let after = timeseries(&mut client, &token, request.clone()).await;
    for b in &after.buckets {
        if b.label == closed.to_string() {
            assert!(b.is_final && b.revision == 1, "{b:?}");
            assert_eq!(b.values[0].value, 777.0);
            assert_eq!(b.values[1].value, 5.0, "the batch row's visitors");
        } else {
            assert!(!b.is_final && b.revision == 0);
            assert_eq!(
                b.values[0].value, speed[&b.label],
                "other days stay speed figures"
            );
        }
    }
    let mark = after.watermark.unwrap();
    assert_eq!(
        mark.batch_complete_until_us,
        day_start(site.tz, closed + Duration::days(1))
    );

    // Hours of the closed day come from the batch layer's hour rows only.
    let start = day_start(site.tz, closed);
    let hours = timeseries(
        &mut client,
        &token,
        pb::TimeseriesRequest {
            site_id: site.id,
            metrics: names(&["pageviews"]),
            interval: "hour".into(),
            range: Some(pb::TimeRange {
                from_us: start,
                to_us: start + DAY_US + HOUR_US,
                ..Default::default()
            }),
            ..Default::default()
        },
    )
    .await;
    let pv: Vec<f64> = hours.buckets.iter().map(|b| b.values[0].value).collect();
    let expect_next = expected(
        &site.events,
        start + DAY_US,
        start + DAY_US + HOUR_US,
        |e| e.r#type() == EventType::Page,
    )
    .pageviews;
    assert_eq!(pv[10], 55.0);
    assert_eq!(
        pv.iter().take(24).sum::<f64>(),
        55.0,
        "lingering speed rows of a closed day are ignored"
    );
    assert_eq!(
        pv[24], expect_next as f64,
        "the next, open hour is the speed layer's"
    );
    assert!(hours.buckets[..24].iter().all(|b| b.is_final) && !hours.buckets[24].is_final);

    // Reprocessing closes the day again with a new revision.
    close_day(&world, closed, Some((2, 778, 56))).await;
    let again = timeseries(&mut client, &token, request.clone()).await;
    let b = again
        .buckets
        .iter()
        .find(|b| b.label == closed.to_string())
        .unwrap();
    assert_eq!((b.revision, b.values[0].value), (2, 778.0));

    // While the day flips between speed and batch, every answer is one or the other, whole.
    let flipper = {
        let pool = world.store.pool().clone();
        let (tenant, site_id, tz) = (world.acme, site.id, site.tz);
        tokio::spawn(async move {
            let view = FlipWorld {
                pool,
                tenant,
                site_id,
                tz,
            };
            for i in 0..60 {
                view.flip(closed, (i % 2 == 0).then_some((3 + i, 1000 + i64::from(i))))
                    .await;
            }
        })
    };
    let old = speed[&closed.to_string()];
    while !flipper.is_finished() {
        let answer = timeseries(&mut client, &token, request.clone()).await;
        let b = answer
            .buckets
            .iter()
            .find(|b| b.label == closed.to_string())
            .unwrap();
        let v = b.values[0].value;
        if b.is_final {
            // Revision 2 (778) until the first flip, then revision r holds 1000 + r - 3.
            let want = if b.revision == 2 {
                778.0
            } else {
                1000.0 + f64::from(b.revision - 3)
            };
            assert_eq!(v, want, "a final day holds its revision's rows");
        } else {
            assert_eq!(v, old, "an open day holds the speed figures");
        }
    }
    flipper.await.unwrap();
    running.stop().await;
    world.finish().await;
}

/// The closure flips of the atomicity check, on a pool of their own.
struct FlipWorld {
    pool: sqlx::PgPool,
    tenant: i64,
    site_id: i64,
    tz: chrono_tz::Tz,
}

impl FlipWorld {
    async fn flip(&self, day: NaiveDate, batch: Option<(i32, i64)>) {
        let (start, end) = (
            day_start(self.tz, day),
            day_start(self.tz, day + Duration::days(1)),
        );
        let at = |us: i64| chrono::DateTime::from_timestamp_micros(us).unwrap();
        let mut tx = self.pool.begin().await.unwrap();
        sqlx::query("DELETE FROM rollups WHERE tenant_id = $1 AND site_id = $2 AND layer = 'batch' AND granularity = 'day' AND bucket = $3")
            .bind(self.tenant)
            .bind(self.site_id)
            .bind(at(start))
            .execute(&mut *tx)
            .await
            .unwrap();
        sqlx::query(
            "DELETE FROM rollup_closures WHERE tenant_id = $1 AND site_id = $2 AND day = $3",
        )
        .bind(self.tenant)
        .bind(self.site_id)
        .bind(day)
        .execute(&mut *tx)
        .await
        .unwrap();
        if let Some((revision, pageviews)) = batch {
            sqlx::query(
                "INSERT INTO rollups (tenant_id, site_id, granularity, bucket, dimension, value, layer, shard, \
                 events, pageviews, revision) VALUES ($1, $2, 'day', $3, '', '', 'batch', 0, $4, $4, $5)",
            )
            .bind(self.tenant)
            .bind(self.site_id)
            .bind(at(start))
            .bind(pageviews)
            .bind(revision)
            .execute(&mut *tx)
            .await
            .unwrap();
            sqlx::query(
                "INSERT INTO rollup_closures (tenant_id, site_id, day, starts_at, ends_at, revision) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(self.tenant)
            .bind(self.site_id)
            .bind(day)
            .bind(at(start))
            .bind(at(end))
            .bind(revision)
            .execute(&mut *tx)
            .await
            .unwrap();
        }
        tx.commit().await.unwrap();
    }
}
