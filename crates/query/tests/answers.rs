//! Every figure the service answers equals an independent computation over the same events:
//! rollups produced by the stream processor's own code, read back over gRPC, in UTC and in two
//! other zones (one with a half-hour offset). Closed days: `closures.rs`.

mod support;

use std::collections::BTreeSet;

use chrono::{Datelike, Duration, NaiveDate, Weekday};
use sightline_proto::{
    events::v1::{Event, EventType},
    query::v1::{self as pb, query_client::QueryClient},
};
use support::*;
use tonic::transport::Channel;

const ALL: [&str; 9] = [
    "pageviews",
    "visitors",
    "visits",
    "bounce_rate",
    "visit_duration",
    "views_per_visit",
    "events",
    "revenue",
    "conversion_rate",
];

fn value<'a>(values: &'a [pb::Value], metric: &str) -> &'a pb::Value {
    values
        .iter()
        .find(|v| v.metric == metric)
        .unwrap_or_else(|| panic!("{metric} missing"))
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b } else { 0.0 }
}

/// Asserts every requested figure of `values` against `x`; uniques within three times the
/// relative error the service states.
fn assert_values(values: &[pb::Value], x: &Expected, context: &str) {
    for v in values {
        let exact = match v.metric.as_str() {
            "pageviews" => x.pageviews as f64,
            "events" => x.events as f64,
            "visits" => x.visits as f64,
            "revenue" => x.revenue_micros as f64 / 1e6,
            "bounce_rate" => ratio(x.bounces as f64, x.visits as f64),
            "visit_duration" => ratio(x.duration_us as f64 / 1e6, x.visits as f64),
            "views_per_visit" => ratio(x.pageviews as f64, x.visits as f64),
            "visitors" => x.visitors as f64,
            "conversion_rate" => ratio(x.converted as f64, x.visitors as f64),
            other => panic!("unexpected metric {other}"),
        };
        if v.metric == "visitors" || v.metric == "conversion_rate" {
            assert!(v.approximate && v.relative_error > 0.0, "{context}: {v:?}");
            let tolerance = 3.0 * v.relative_error * exact;
            assert!(
                (v.value - exact).abs() <= tolerance,
                "{context}: {} = {} but {} exactly (±{tolerance})",
                v.metric,
                v.value,
                exact
            );
        } else {
            assert!(!v.approximate, "{context}: {v:?}");
            assert!(
                (v.value - exact).abs() <= 1e-9 * exact.abs().max(1.0),
                "{context}: {} = {} but {} exactly",
                v.metric,
                v.value,
                exact
            );
        }
    }
}

fn figures(events: &[Event], visits: &[Visit], from_us: i64, to_us: i64) -> Expected {
    with_visits(
        expected(events, from_us, to_us, |_| true),
        visits,
        from_us,
        to_us,
        |_| true,
    )
}

async fn check_site(client: &mut QueryClient<Channel>, token: &str, site: &SiteData) {
    let tz = site.tz;
    let name = tz.name();
    let all_visits = visits(&site.events);
    let (first, last) = span(site);

    // Day, week and month series of every metric.
    for interval in ["day", "week", "month"] {
        let answer = timeseries(
            client,
            token,
            pb::TimeseriesRequest {
                site_id: site.id,
                metrics: names(&ALL),
                interval: interval.into(),
                range: dates(first, last),
                conversion_event: ORDER.into(),
                ..Default::default()
            },
        )
        .await;
        assert_eq!(answer.time_zone, name);
        assert_eq!(answer.currency, "EUR");
        let mut covered = 0;
        for (i, bucket) in answer.buckets.iter().enumerate() {
            let label = NaiveDate::parse_from_str(&bucket.label, "%Y-%m-%d").unwrap();
            let period_start = match interval {
                "week" => label.weekday() == Weekday::Mon,
                "month" => label.day() == 1,
                _ => true,
            };
            assert!(period_start, "{name} {interval}: label {label}");
            let starts = if i == 0 { first.max(label) } else { label };
            assert_eq!(
                bucket.start_us,
                day_start(tz, starts),
                "{name} {interval} {label}"
            );
            assert!(!bucket.is_final && bucket.revision == 0, "no closure yet");
            let x = figures(&site.events, &all_visits, bucket.start_us, bucket.end_us);
            covered += x.events;
            assert_values(&bucket.values, &x, &format!("{name} {interval} {label}"));
        }
        let total = expected(&site.events, i64::MIN, i64::MAX, |_| true).events;
        assert_eq!(
            covered, total,
            "{name} {interval}: every event in one bucket"
        );
        let last_end = answer.buckets.last().unwrap().end_us;
        assert_eq!(last_end, day_start(tz, last + Duration::days(1)));
    }

    // Hours of the generated days (UTC buckets in every zone).
    let from_us = site
        .events
        .iter()
        .filter(|e| e.user_agent != BOT)
        .map(|e| e.timestamp_us)
        .min()
        .unwrap();
    let answer = timeseries(
        client,
        token,
        pb::TimeseriesRequest {
            site_id: site.id,
            metrics: names(&["pageviews", "events", "visits", "visitors", "revenue"]),
            interval: "hour".into(),
            range: Some(pb::TimeRange {
                from_us,
                to_us: from_us + 4 * DAY_US,
                ..Default::default()
            }),
            ..Default::default()
        },
    )
    .await;
    let hours =
        (from_us + 4 * DAY_US + HOUR_US - 1).div_euclid(HOUR_US) - from_us.div_euclid(HOUR_US);
    assert_eq!(
        answer.buckets.len() as i64,
        hours,
        "{name}: hours widened outwards"
    );
    for bucket in &answer.buckets {
        assert_eq!(bucket.end_us - bucket.start_us, HOUR_US);
        let x = figures(&site.events, &all_visits, bucket.start_us, bucket.end_us);
        assert_values(&bucket.values, &x, &format!("{name} hour {}", bucket.label));
    }

    // Filtered by one source.
    let answer = timeseries(
        client,
        token,
        pb::TimeseriesRequest {
            site_id: site.id,
            metrics: names(&["pageviews", "visits", "visitors", "bounce_rate", "revenue"]),
            interval: "day".into(),
            range: dates(first, last),
            filter: Some(pb::Filter {
                dimension: "source".into(),
                value: "Google".into(),
            }),
            ..Default::default()
        },
    )
    .await;
    // An event's source is that of its visit.
    let google_visitor = |visitor: &str, t: i64| {
        all_visits.iter().any(|v| {
            v.visitor == visitor && v.start_us <= t && t <= v.end_us && v.source == "Google"
        })
    };
    for bucket in &answer.buckets {
        let x = expected(&site.events, bucket.start_us, bucket.end_us, |e| {
            google_visitor(&e.visitor_id, e.timestamp_us)
        });
        let x = with_visits(x, &all_visits, bucket.start_us, bucket.end_us, |v| {
            v.source == "Google"
        });
        assert_values(
            &bucket.values,
            &x,
            &format!("{name} source=Google {}", bucket.label),
        );
    }

    check_breakdowns(client, token, site, &all_visits, first, last).await;
    check_aggregate(client, token, site, &all_visits, last).await;
}

async fn breakdown(
    client: &mut QueryClient<Channel>,
    token: &str,
    request: pb::BreakdownRequest,
) -> pb::BreakdownResponse {
    client
        .get_breakdown(authed(request, token))
        .await
        .unwrap()
        .into_inner()
}

async fn check_breakdowns(
    client: &mut QueryClient<Channel>,
    token: &str,
    site: &SiteData,
    all_visits: &[Visit],
    first: NaiveDate,
    last: NaiveDate,
) {
    let name = site.tz.name();
    let (from_us, to_us) = (
        day_start(site.tz, first),
        day_start(site.tz, last + Duration::days(1)),
    );
    let events = &site.events;
    let pages: BTreeSet<String> = events
        .iter()
        .filter(|e| e.r#type() == EventType::Page && e.user_agent != BOT)
        .map(|e| path(&e.page_url))
        .collect();
    let names_of_events: BTreeSet<String> = events
        .iter()
        .filter(|e| e.r#type() == EventType::Track)
        .map(|e| e.name.clone())
        .collect();
    // (dimension, metrics, values, expected figures of a value)
    type Of<'a> = Box<dyn Fn(&str) -> Expected + 'a>;
    let cases: Vec<(&str, Vec<&str>, BTreeSet<String>, Of<'_>)> = vec![
        (
            "page",
            vec!["pageviews", "visitors", "events"],
            pages.clone(),
            Box::new(|p: &str| {
                expected(events, from_us, to_us, |e| {
                    e.r#type() == EventType::Page && path(&e.page_url) == p
                })
            }),
        ),
        (
            "entry_page",
            vec!["visits", "bounce_rate"],
            all_visits
                .iter()
                .filter_map(|v| v.pages.first().cloned())
                .collect(),
            Box::new(|p: &str| {
                with_visits(Expected::default(), all_visits, from_us, to_us, |v| {
                    v.pages.first().map(String::as_str) == Some(p)
                })
            }),
        ),
        (
            "exit_page",
            vec!["visits"],
            all_visits
                .iter()
                .filter_map(|v| v.pages.last().cloned())
                .collect(),
            Box::new(|p: &str| {
                with_visits(Expected::default(), all_visits, from_us, to_us, |v| {
                    v.pages.last().map(String::as_str) == Some(p)
                })
            }),
        ),
        (
            "source",
            ALL[..8].to_vec(),
            ["Google".to_string(), "Direct".to_string()].into(),
            Box::new(|s: &str| {
                let x = expected(events, from_us, to_us, |e| {
                    all_visits.iter().any(|v| {
                        v.visitor == e.visitor_id
                            && v.start_us <= e.timestamp_us
                            && e.timestamp_us <= v.end_us
                            && v.source == s
                    })
                });
                with_visits(x, all_visits, from_us, to_us, |v| v.source == s)
            }),
        ),
        (
            "event",
            vec!["events", "visitors", "revenue", "conversion_rate"],
            names_of_events.clone(),
            Box::new(|n: &str| {
                let mut x = expected(events, from_us, to_us, |e| e.name == n);
                // Conversion rate: this event's visitors over every visitor.
                x.converted = x.visitors;
                x.visitors = expected(events, from_us, to_us, |_| true).visitors;
                x
            }),
        ),
    ];
    for (dimension, metrics, values, of) in cases {
        let answer = breakdown(
            client,
            token,
            pb::BreakdownRequest {
                site_id: site.id,
                dimension: dimension.into(),
                metrics: names(&metrics),
                range: dates(first, last),
                page_size: 100,
                ..Default::default()
            },
        )
        .await;
        let got: BTreeSet<String> = answer.rows.iter().map(|r| r.value.clone()).collect();
        assert_eq!(got, values, "{name} {dimension}: values");
        assert_eq!(answer.total_values as usize, values.len());
        for row in &answer.rows {
            let mut x = of(&row.value);
            if dimension == "event" {
                // visitors is the row's own; conversion_rate is over everyone.
                let own = x.converted;
                let rate = value(&row.values, "conversion_rate");
                let want = ratio(own as f64, x.visitors as f64);
                assert!(
                    (rate.value - want).abs() <= 3.0 * rate.relative_error * want,
                    "{name} {}: {rate:?} vs {want}",
                    row.value
                );
                x.visitors = own;
                let others: Vec<pb::Value> = row
                    .values
                    .iter()
                    .filter(|v| v.metric != "conversion_rate")
                    .cloned()
                    .collect();
                assert_values(&others, &x, &format!("{name} event {}", row.value));
            } else {
                assert_values(
                    &row.values,
                    &x,
                    &format!("{name} {dimension} {}", row.value),
                );
            }
        }
        let sort_key: Vec<f64> = answer.rows.iter().map(|r| r.values[0].value).collect();
        assert!(
            sort_key.windows(2).all(|w| w[0] >= w[1]),
            "{name} {dimension}: sorted by the first metric"
        );
    }

    // Pages of two, in the same order as one big page.
    let full = breakdown(
        client,
        token,
        pb::BreakdownRequest {
            site_id: site.id,
            dimension: "page".into(),
            metrics: names(&["visitors", "pageviews"]),
            order_by: "pageviews".into(),
            range: dates(first, last),
            page_size: 100,
            ..Default::default()
        },
    )
    .await;
    let mut paged = Vec::new();
    let mut token_page = String::new();
    loop {
        let page = breakdown(
            client,
            token,
            pb::BreakdownRequest {
                site_id: site.id,
                dimension: "page".into(),
                metrics: names(&["visitors", "pageviews"]),
                order_by: "pageviews".into(),
                range: dates(first, last),
                page_size: 2,
                page_token: token_page.clone(),
                ..Default::default()
            },
        )
        .await;
        assert!(page.rows.len() <= 2);
        paged.extend(page.rows.into_iter().map(|r| r.value));
        if page.next_page_token.is_empty() {
            break;
        }
        token_page = page.next_page_token;
    }
    let order: Vec<String> = full.rows.iter().map(|r| r.value.clone()).collect();
    assert_eq!(paged, order, "{name}: pagination");
    let pageviews: Vec<f64> = full.rows.iter().map(|r| r.values[1].value).collect();
    assert!(
        pageviews.windows(2).all(|w| w[0] >= w[1]),
        "{name}: ordered by pageviews"
    );
}

async fn check_aggregate(
    client: &mut QueryClient<Channel>,
    token: &str,
    site: &SiteData,
    all_visits: &[Visit],
    last: NaiveDate,
) {
    let tz = site.tz;
    // The two days before today against the two days before them.
    let (from, to) = (last - Duration::days(3), last - Duration::days(2));
    let answer = client
        .get_aggregate(authed(
            pb::AggregateRequest {
                site_id: site.id,
                metrics: names(&ALL),
                range: dates(from, to),
                conversion_event: ORDER.into(),
                ..Default::default()
            },
            token,
        ))
        .await
        .unwrap()
        .into_inner();
    let current = answer.current.unwrap();
    let previous = answer.previous.unwrap();
    let days =
        |a: NaiveDate, b: NaiveDate| (day_start(tz, a), day_start(tz, b + Duration::days(1)));
    let (c0, c1) = days(from, to);
    let (p0, p1) = days(from - Duration::days(2), to - Duration::days(2));
    assert_eq!((current.start_us, current.end_us), (c0, c1));
    assert_eq!((previous.start_us, previous.end_us), (p0, p1));
    assert_values(
        &current.values,
        &figures(&site.events, all_visits, c0, c1),
        &format!("{} aggregate", tz.name()),
    );
    assert_values(
        &previous.values,
        &figures(&site.events, all_visits, p0, p1),
        &format!("{} previous", tz.name()),
    );
    assert!(
        expected(&site.events, p0, c1, |_| true).events > 0,
        "the periods hold traffic"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_figure_equals_an_independent_computation_in_every_zone() {
    let world = World::new().await;
    world.roll_up().await;
    let running = Running::start(&world.database_url, &[]).await;
    let mut client = running.client().await;
    // Realtime first, while the generated "now" is within the last five minutes: the three
    // visitors of the last two minutes, each on two pages.
    let now = client
        .get_realtime(authed(
            pb::RealtimeRequest {
                site_id: world.utc.id,
                top_pages: 1,
            },
            &world.acme_token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(now.visitors.unwrap().value, 3.0);
    assert_eq!(now.pageviews, 6);
    assert_eq!(now.top_pages.len(), 1);
    assert_eq!((now.to_us - now.from_us) / MINUTE_US, 5);

    for site in [&world.utc, &world.new_york, &world.kolkata] {
        check_site(&mut client, &world.acme_token, site).await;
    }

    // Freshness: no closure yet, the speed layer as far as its slowest partition.
    let fresh = client
        .get_freshness(authed(pb::FreshnessRequest::default(), &world.acme_token))
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<i64> = fresh.sites.iter().map(|s| s.site_id).collect();
    assert_eq!(ids, [world.utc.id, world.new_york.id, world.kolkata.id]);
    let slowest: i64 = sqlx::query_scalar(
        "SELECT (extract(epoch FROM min(received_until)) * 1000000)::int8 FROM rollup_watermarks",
    )
    .fetch_one(world.store.pool())
    .await
    .unwrap();
    for site in &fresh.sites {
        let mark = site.watermark.unwrap();
        assert_eq!(mark.speed_complete_until_us, slowest);
        assert_eq!(mark.batch_complete_until_us, 0);
        assert!(site.last_closed_day.is_empty());
    }
    running.stop().await;
    world.finish().await;
}
