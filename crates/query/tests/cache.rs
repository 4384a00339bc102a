//! Answers kept between identical requests are never passed off as current when stale: once
//! the speed layer commits a change to the site's rollups, the next answer is computed afresh,
//! and it equals what a service without the cache answers. While that computation runs, other
//! calls are given the previous answer with its own watermark, never across a closure.

mod support;

use sightline_proto::{
    events::v1::{Event, EventType},
    query::v1::{self as pb, query_client::QueryClient},
};
use sightline_testkit::http;
use support::*;
use tonic::transport::Channel;

/// A time series, a page breakdown and an aggregate of the UTC site over its traffic's days.
async fn answers(
    client: &mut QueryClient<Channel>,
    token: &str,
    site: &SiteData,
) -> (
    pb::TimeseriesResponse,
    pb::BreakdownResponse,
    pb::AggregateResponse,
) {
    let (first, last) = span(site);
    let metrics = names(&["pageviews", "visitors", "visits", "bounce_rate"]);
    let series = timeseries(
        client,
        token,
        pb::TimeseriesRequest {
            site_id: site.id,
            metrics: metrics.clone(),
            interval: "day".into(),
            range: dates(first, last),
            ..Default::default()
        },
    )
    .await;
    let breakdown = client
        .get_breakdown(authed(
            pb::BreakdownRequest {
                site_id: site.id,
                dimension: "page".into(),
                metrics: names(&["pageviews", "visitors"]),
                range: dates(first, last),
                ..Default::default()
            },
            token,
        ))
        .await
        .unwrap()
        .into_inner();
    let aggregate = client
        .get_aggregate(authed(
            pb::AggregateRequest {
                site_id: site.id,
                metrics,
                range: dates(first, last),
                ..Default::default()
            },
            token,
        ))
        .await
        .unwrap()
        .into_inner();
    (series, breakdown, aggregate)
}

/// A pageview of `path` on the UTC site at `at_us` by a visitor of its own, received a
/// millisecond later.
fn pageview(world: &World, id: &str, at_us: i64, path: &str) -> Event {
    let visitor = format!("{id}-visitor");
    Event {
        message_id: id.into(),
        tenant_id: world.acme,
        site_id: world.utc.id,
        r#type: EventType::Page.into(),
        visitor_id: visitor.clone(),
        anonymous_id: visitor,
        timestamp_us: at_us,
        received_at_us: at_us + 1_000,
        user_agent: CHROME.into(),
        page_url: format!("https://shop.example.com{path}"),
        ..Event::default()
    }
}

/// Holds an exclusive lock on `rollups` until dropped: a call that reads rollup rows waits
/// for it, while the statement that checks a kept answer (closures, versions, watermarks) does
/// not.
async fn lock_rollups(world: &World) -> sqlx::Transaction<'static, sqlx::Postgres> {
    let mut tx = world.store.pool().begin().await.unwrap();
    sqlx::query("LOCK TABLE rollups IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx
}

/// Waits until the service counts `computed` answers computed (a call has taken the turn).
async fn until_computed(running: &Running, computed: f64) {
    for _ in 0..200 {
        if cache_counts(running).await.1 >= computed {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("no call took the turn to compute");
}

/// Asserts that `call` has not finished 300 ms on: it waits for the call computing.
async fn assert_waits<T>(call: &tokio::task::JoinHandle<T>, why: &str) {
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(!call.is_finished(), "{why}");
}

/// The answer cache's previous answers given, from the service's `/metrics`.
async fn previous_given(running: &Running) -> f64 {
    let (status, body) = http::get(running.admin, "/metrics").await.unwrap();
    assert_eq!(status, 200);
    http::sample(&body, "sightline_query_answer_cache_previous_total")
}

/// The answer cache's (hits, misses) from the service's `/metrics`.
async fn cache_counts(running: &Running) -> (f64, f64) {
    let (status, body) = http::get(running.admin, "/metrics").await.unwrap();
    assert_eq!(status, 200);
    (
        http::sample(&body, "sightline_query_answer_cache_hits_total"),
        http::sample(&body, "sightline_query_answer_cache_misses_total"),
    )
}

fn pageviews_of(series: &pb::TimeseriesResponse) -> f64 {
    series.buckets.iter().map(|b| b.values[0].value).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_answer_is_replaced_when_the_speed_layer_changes_the_site() {
    let world = World::new().await;
    world.roll_up().await;
    let cached = Running::start(&world.database_url, &[]).await;
    let uncached = Running::start(
        &world.database_url,
        &[("SIGHTLINE__QUERY__ANSWER_CACHE_MIB".into(), "0".into())],
    )
    .await;
    let (mut client, mut reference) = (cached.client().await, uncached.client().await);
    let token = world.acme_token.clone();
    let site = &world.utc;

    let first = answers(&mut client, &token, site).await;
    let again = answers(&mut client, &token, site).await;
    assert_eq!(first, again, "nothing changed: the same answers");
    assert_eq!(first, answers(&mut reference, &token, site).await);
    let (hits, misses) = cache_counts(&cached).await;
    assert_eq!(
        (hits, misses),
        (3.0, 3.0),
        "the second round came from the cache"
    );

    // Three new visitors view a page 10 minutes ago: the stream processor's flush commits them.
    let now = chrono::Utc::now().timestamp_micros();
    let fresh: Vec<Event> = (0..3)
        .map(|i| {
            pageview(
                &world,
                &format!("cache-test-{i}"),
                now - 10 * MINUTE_US,
                "/fresh",
            )
        })
        .collect();
    world.roll_up_events(fresh).await;

    let after = answers(&mut client, &token, site).await;
    assert_eq!(
        pageviews_of(&after.0),
        pageviews_of(&first.0) + 3.0,
        "the time series counts the new pageviews"
    );
    let fresh_page = after
        .1
        .rows
        .iter()
        .find(|r| r.value == "/fresh")
        .expect("the breakdown lists the new page");
    assert_eq!(fresh_page.values[0].value, 3.0);
    assert_ne!(after.2, first.2, "the aggregate moved");
    assert_eq!(after, answers(&mut reference, &token, site).await);
    let (hits_after, misses_after) = cache_counts(&cached).await;
    assert_eq!(
        (hits_after, misses_after),
        (3.0, 6.0),
        "the stale answers were computed again"
    );

    cached.stop().await;
    uncached.stop().await;
    world.finish().await;
}

/// The closed-day sums' (hits, misses) from the service's `/metrics`.
async fn closed_sums_counts(running: &Running) -> (f64, f64) {
    let (status, body) = http::get(running.admin, "/metrics").await.unwrap();
    assert_eq!(status, 200);
    (
        http::sample(&body, "sightline_query_closed_sums_hits_total"),
        http::sample(&body, "sightline_query_closed_sums_misses_total"),
    )
}

/// A service with its defaults (both caches on), and one that keeps nothing: the reference
/// every answer of the first must equal.
async fn with_reference(world: &World) -> (Running, Running) {
    let cached = Running::start(&world.database_url, &[]).await;
    let uncached = Running::start(
        &world.database_url,
        &[
            ("SIGHTLINE__QUERY__ANSWER_CACHE_MIB".into(), "0".into()),
            ("SIGHTLINE__QUERY__CLOSED_SUMS_CACHE_MIB".into(), "0".into()),
        ],
    )
    .await;
    (cached, uncached)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_days_are_summed_once_and_answers_stay_exact() {
    let world = World::new().await;
    world.roll_up().await;
    let site = &world.utc;
    let (first, _) = span(site);
    let closed = first + chrono::Duration::days(1);
    close_day(&world, closed, Some((1, 777, 55))).await;
    let (cached, uncached) = with_reference(&world).await;
    let (mut client, mut reference) = (cached.client().await, uncached.client().await);
    let token = world.acme_token.clone();

    let first_round = answers(&mut client, &token, site).await;
    assert_eq!(first_round, answers(&mut reference, &token, site).await);
    // The time series and the aggregate sum the same closed part: the second finds it kept.
    let (hits, misses) = closed_sums_counts(&cached).await;
    assert!(misses > 0.0, "the closed day was read from the database");

    // The speed layer changes the site: every answer is computed again, its closed day summed
    // from what the first round kept.
    let now = chrono::Utc::now().timestamp_micros();
    world
        .roll_up_events(vec![pageview(
            &world,
            "closed-sums-test",
            now - 10 * MINUTE_US,
            "/fresh",
        )])
        .await;
    let second_round = answers(&mut client, &token, site).await;
    assert_eq!(
        pageviews_of(&second_round.0),
        pageviews_of(&first_round.0) + 1.0
    );
    assert_eq!(second_round, answers(&mut reference, &token, site).await);
    let (hits_after, misses_after) = closed_sums_counts(&cached).await;
    assert_eq!(misses_after, misses, "no closed day read again");
    assert_eq!(
        hits_after,
        2.0 * hits + misses,
        "each closed part summed from memory"
    );

    // The batch layer closes the day again with other figures: the kept sums are not used.
    close_day(&world, closed, Some((2, 999, 66))).await;
    let third_round = answers(&mut client, &token, site).await;
    assert_eq!(
        pageviews_of(&third_round.0),
        pageviews_of(&second_round.0) + 999.0 - 777.0
    );
    assert_eq!(third_round, answers(&mut reference, &token, site).await);

    cached.stop().await;
    uncached.stop().await;
    world.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ended_hours_are_summed_once_until_a_late_event_changes_one() {
    let world = World::new().await;
    world.roll_up().await;
    let site = &world.utc;
    // The speed layer alone: every day of the traffic is open, its ended hours settled.
    let (cached, uncached) = with_reference(&world).await;
    let (mut client, mut reference) = (cached.client().await, uncached.client().await);
    let token = world.acme_token.clone();

    let first_round = answers(&mut client, &token, site).await;
    assert_eq!(first_round, answers(&mut reference, &token, site).await);
    let (_, misses) = closed_sums_counts(&cached).await;
    assert!(
        misses > 0.0,
        "the settled hours were read from the database"
    );

    // A live flush: a pageview a minute ago, in an hour that has not settled. The answers are
    // computed again, their settled hours summed from what the first round kept.
    let now = chrono::Utc::now().timestamp_micros();
    world
        .roll_up_events(vec![pageview(&world, "live", now - MINUTE_US, "/settled")])
        .await;
    let second_round = answers(&mut client, &token, site).await;
    assert_eq!(
        pageviews_of(&second_round.0),
        pageviews_of(&first_round.0) + 1.0
    );
    assert_eq!(second_round, answers(&mut reference, &token, site).await);
    let (_, misses_live) = closed_sums_counts(&cached).await;
    // (Unless the settled boundary moved to the next hour between the rounds, at a quarter
    // past: a new settled part is then read once.)
    assert_eq!(
        misses_live, misses,
        "no settled hour read again after a live flush"
    );

    // A late event three hours back changes a settled hour: its sums are read again, and the
    // answers count it.
    world
        .roll_up_events(vec![pageview(
            &world,
            "late",
            now - 3 * HOUR_US,
            "/settled",
        )])
        .await;
    let third_round = answers(&mut client, &token, site).await;
    assert_eq!(
        pageviews_of(&third_round.0),
        pageviews_of(&second_round.0) + 1.0,
        "the late pageview is counted"
    );
    let settled_page = third_round
        .1
        .rows
        .iter()
        .find(|r| r.value == "/settled")
        .expect("the breakdown lists the page of both pageviews");
    assert_eq!(settled_page.values[0].value, 2.0);
    assert_eq!(third_round, answers(&mut reference, &token, site).await);
    let (_, misses_late) = closed_sums_counts(&cached).await;
    assert!(
        misses_late > misses_live,
        "the settled hours were read again"
    );

    cached.stop().await;
    uncached.stop().await;
    world.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_that_miss_the_same_answer_together_compute_it_once() {
    let world = World::new().await;
    world.roll_up().await;
    let running = Running::start(&world.database_url, &[]).await;
    let site = &world.utc;
    let (first, last) = span(site);
    let request = pb::TimeseriesRequest {
        site_id: site.id,
        metrics: names(&["pageviews", "visitors", "visits"]),
        interval: "day".into(),
        range: dates(first, last),
        ..Default::default()
    };
    // Eight callers ask the same question at once, before any answer is kept.
    let client = running.client().await;
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let (mut client, token, request) =
            (client.clone(), world.acme_token.clone(), request.clone());
        calls.spawn(async move { timeseries(&mut client, &token, request).await });
    }
    let answers = calls.join_all().await;
    assert!(
        answers.windows(2).all(|pair| pair[0] == pair[1]),
        "every caller got the same answer"
    );
    assert_eq!(
        cache_counts(&running).await,
        (7.0, 1.0),
        "one caller computed the answer; the seven others were given the one it kept"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_one_call_computes_a_changed_answer_the_others_get_the_previous_one() {
    let world = World::new().await;
    world.roll_up().await;
    // Previous answers of up to a minute, so that the time the flush takes does not matter.
    let running = Running::start(
        &world.database_url,
        &[(
            "SIGHTLINE__QUERY__PREVIOUS_ANSWER_MAX_AGE_MS".into(),
            "60000".into(),
        )],
    )
    .await;
    let waiting = Running::start(
        &world.database_url,
        &[(
            "SIGHTLINE__QUERY__PREVIOUS_ANSWER_MAX_AGE_MS".into(),
            "0".into(),
        )],
    )
    .await;
    let site = &world.utc;
    let (first, last) = span(site);
    let request = pb::TimeseriesRequest {
        site_id: site.id,
        metrics: names(&["pageviews", "visitors"]),
        interval: "day".into(),
        range: dates(first, last),
        ..Default::default()
    };
    let token = world.acme_token.clone();
    let (client, client_waiting) = (running.client().await, waiting.client().await);
    let ask = |client: &QueryClient<Channel>| {
        let (mut client, token, request) = (client.clone(), token.clone(), request.clone());
        tokio::spawn(async move { timeseries(&mut client, &token, request).await })
    };
    let before = ask(&client).await.unwrap();
    assert_eq!(before, ask(&client_waiting).await.unwrap());

    // A flush commits a pageview; reading rows is held up, so the call that computes the
    // changed answer cannot finish.
    let now = chrono::Utc::now().timestamp_micros();
    world
        .roll_up_events(vec![pageview(&world, "previous", now - MINUTE_US, "/new")])
        .await;
    let lock = lock_rollups(&world).await;
    let computing = ask(&client);
    until_computed(&running, 2.0).await;
    let computing_waiting = ask(&client_waiting);
    until_computed(&waiting, 2.0).await;

    // The others are given the previous answer, watermark and all, while the lock holds.
    let meanwhile = tokio::time::timeout(std::time::Duration::from_secs(10), ask(&client))
        .await
        .expect("a call given the previous answer does not wait for the computing one")
        .unwrap();
    assert_eq!(
        meanwhile, before,
        "the previous answer, with the watermark it was computed with"
    );
    assert_eq!(previous_given(&running).await, 1.0);
    // Without previous answers, they wait for the new one.
    let other_waiting = ask(&client_waiting);
    assert_waits(
        &other_waiting,
        "with previous answers off, a call waits for the one computing",
    )
    .await;

    drop(lock);
    let after = computing.await.unwrap();
    assert_eq!(pageviews_of(&after), pageviews_of(&before) + 1.0);
    for call in [computing_waiting, other_waiting] {
        assert_eq!(
            call.await.unwrap(),
            after,
            "the waiting calls get the new answer"
        );
    }
    assert_eq!(ask(&client).await.unwrap(), after, "the new answer is kept");

    // Once the batch layer closed a day the previous answer covers, it is not given again:
    // the day's figures switch layer once for every caller.
    let (closed, _) = span(site);
    close_day(&world, closed, Some((1, 500, 40))).await;
    let lock = lock_rollups(&world).await;
    let computing = ask(&client);
    until_computed(&running, 3.0).await;
    let other = ask(&client);
    assert_waits(
        &other,
        "no previous answer across a closure: the call waits for the new one",
    )
    .await;
    drop(lock);
    let closed_answer = computing.await.unwrap();
    assert!(closed_answer.buckets[0].is_final, "the closed day is final");
    assert_eq!(other.await.unwrap(), closed_answer);
    assert_eq!(previous_given(&running).await, 1.0);

    running.stop().await;
    waiting.stop().await;
    world.finish().await;
}
