//! The rollup group against real RabbitMQ and PostgreSQL: known events in, rollups out equal
//! to an independent computation over the same events; redeliveries and restarts change
//! nothing; a database outage loses and doubles nothing.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::SocketAddr,
    time::{Duration, Instant},
};

use prost::Message as _;
use sightline_broker::{Message, Publisher, Route, partition_for, rabbitmq::RabbitPublisher};
use sightline_db::{NewSite, PgStore, Sites, Tenants};
use sightline_event::VisitorSketch;
use sightline_kit::{HealthRegistry, Shutdown};
use sightline_proto::events::v1::{Event, EventBatch, EventType};
use sightline_testkit::{fresh_database, http::get_status, proxy::Proxy, unique};
use sqlx::{PgPool, Row};
use stream_processor::{Config, Listeners};

const AMQP: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
const PARTITIONS: u32 = 4;
const CHROME: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36";
const IPHONE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1";
const BOT: &str = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";
const MINUTE_US: i64 = 60_000_000;

/// One test's pipeline pieces: a database with a tenant and a EUR site, a broker namespace.
struct World {
    namespace: String,
    database_url: String,
    pool: PgPool,
    tenant_id: i64,
    site_id: i64,
    publisher: RabbitPublisher,
}

impl World {
    async fn new() -> Self {
        let namespace = unique("t_rollup");
        let database_url = fresh_database("t_rollup").await;
        let config = Config::load(&Config::loader().env_map(env(&namespace, &database_url, AMQP)))
            .expect("valid test configuration");
        let store = PgStore::connect_lazy(&config.database).unwrap();
        let tenant = store.create_tenant("acme", "Acme").await.unwrap();
        let site = store
            .create_site(NewSite {
                tenant_id: tenant.id,
                domain: "shop.example.com".into(),
                time_zone: "Europe/Paris".into(),
                currency: "EUR".into(),
            })
            .await
            .unwrap();
        let publisher = RabbitPublisher::start(
            &config.broker,
            "t-rollup-publisher",
            HealthRegistry::new().register("broker"),
        );
        World {
            namespace,
            database_url,
            pool: store.pool().clone(),
            tenant_id: tenant.id,
            site_id: site.id,
            publisher,
        }
    }

    async fn publish(&self, batch: &EventBatch) {
        let message = Message {
            route: Route::Partition(batch.partition),
            id: batch.batch_id.clone(),
            kind: "sightline.events.v1.EventBatch",
            payload: batch.encode_to_vec().into(),
            traceparent: None,
        };
        self.publisher
            .publish(&message, Instant::now() + Duration::from_secs(10))
            .await
            .expect("RabbitMQ confirms");
    }

    /// Deletes the test's queues, exchanges and database.
    async fn finish(self) {
        self.publisher.close().await;
        let topology = sightline_broker::Topology {
            namespace: self.namespace.clone(),
            partitions: PARTITIONS,
            consumer_groups: vec!["rollup".into(), "archive".into()],
        };
        sightline_testkit::delete_topology(&topology).await;
        self.pool.close().await;
        sightline_testkit::drop_database(&self.database_url).await;
    }

    async fn processed_batches(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM rollup_batches")
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    async fn wait_for_batches(&self, n: i64) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let done = self.processed_batches().await;
            if done >= n {
                assert_eq!(done, n, "more batches recorded than published");
                return;
            }
            assert!(
                Instant::now() < deadline,
                "only {done} of {n} batches processed"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn env(namespace: &str, database_url: &str, amqp: &str) -> HashMap<String, String> {
    [
        ("SIGHTLINE__DATABASE__URL", database_url.to_string()),
        ("SIGHTLINE__BROKER__URL", amqp.to_string()),
        ("SIGHTLINE__BROKER__NAMESPACE", namespace.to_string()),
        ("SIGHTLINE__BROKER__PARTITIONS", PARTITIONS.to_string()),
        ("SIGHTLINE__STREAM__GROUPS", "rollup".to_string()),
        ("SIGHTLINE__STREAM__ADMIN_LISTEN", "127.0.0.1:0".to_string()),
        (
            "SIGHTLINE__STREAM__ROLLUP__FLUSH_INTERVAL_MS",
            "200".to_string(),
        ),
        ("SIGHTLINE__STREAM__RETRY_BACKOFF_MAX_MS", "500".to_string()),
        // Visitor states both in snapshots and in the log between them.
        (
            "SIGHTLINE__STREAM__ROLLUP__VISITOR_SNAPSHOT_FLUSHES",
            "3".to_string(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// The stream processor running in this process.
struct Running {
    admin: SocketAddr,
    shutdown: Shutdown,
    task: tokio::task::JoinHandle<Result<(), stream_processor::StreamError>>,
}

impl Running {
    async fn start(world: &World, database_url: &str) -> Self {
        let config =
            Config::load(&Config::loader().env_map(env(&world.namespace, database_url, AMQP)))
                .unwrap();
        let admin = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = admin.local_addr().unwrap();
        let shutdown = Shutdown::new();
        let task = tokio::spawn(stream_processor::run(
            config,
            Listeners { admin },
            shutdown.clone(),
        ));
        Running {
            admin: addr,
            shutdown,
            task,
        }
    }

    async fn stop(self) {
        self.shutdown.trigger();
        self.task.await.unwrap().unwrap();
    }
}

/// A rollup sink of partition 0 on the world's database, driven by the test itself.
fn partition_0_sink(
    world: &World,
    config: stream_processor::config::RollupConfig,
) -> stream_processor::rollup::RollupSink {
    stream_processor::rollup::RollupSink::new(
        (0, 1),
        world.pool.clone(),
        std::sync::Arc::new(sightline_event::Enricher::new().unwrap()),
        config,
        stream_processor::metrics::StreamMetrics::register(
            &sightline_kit::telemetry::Metrics::new(),
        ),
    )
}

/// A day of traffic an hour ago: visitors with several visits (gaps over 30 minutes), pages,
/// track events, orders in the site's and another currency, and a crawler.
fn traffic(world: &World) -> Vec<Event> {
    let base = (chrono::Utc::now().timestamp_micros() / 3_600_000_000 - 3) * 3_600_000_000;
    let mut events = Vec::new();
    let mut n = 0;
    let mut event = |visitor: &str, at_us: i64, kind: EventType, detail: &str, ua: &str| {
        n += 1;
        let mut e = Event {
            message_id: format!("m-{n}"),
            tenant_id: world.tenant_id,
            site_id: world.site_id,
            r#type: kind.into(),
            visitor_id: visitor.to_string(),
            anonymous_id: visitor.to_string(),
            timestamp_us: at_us,
            received_at_us: at_us + 1_000,
            user_agent: ua.to_string(),
            ..Event::default()
        };
        match kind {
            EventType::Page => {
                e.page_url = format!("https://shop.example.com{detail}");
                if visitor.ends_with('0') {
                    e.page_referrer = "https://www.google.com/".into();
                }
            }
            _ => {
                let (name, props) = detail.split_once('|').unwrap_or((detail, ""));
                e.name = name.to_string();
                e.properties_json = props.as_bytes().to_vec().into();
                e.page_url = "https://shop.example.com/checkout".into();
            }
        }
        events.push(e);
    };
    for v in 0..40 {
        let visitor = format!("visitor-{v}");
        let ua = if v % 3 == 0 { IPHONE } else { CHROME };
        let start = base + (v as i64 % 50) * MINUTE_US + (v as i64) * 7_000_000;
        event(&visitor, start, EventType::Page, "/", ua);
        if v % 2 == 0 {
            event(&visitor, start + 40_000_000, EventType::Page, "/shoes", ua);
            event(
                &visitor,
                start + 95_000_000,
                EventType::Track,
                "Added To Cart|{}",
                ua,
            );
        }
        if v % 5 == 0 {
            event(
                &visitor,
                start + 130_000_000,
                EventType::Track,
                "Order Completed|{\"revenue\": 49.9, \"currency\": \"EUR\"}",
                ua,
            );
        }
        if v == 7 {
            event(
                &visitor,
                start + 140_000_000,
                EventType::Track,
                "Order Completed|{\"revenue\": \"12.5\", \"currency\": \"USD\"}",
                ua,
            );
        }
        if v % 4 == 1 {
            // A second visit, 45 minutes later.
            event(
                &visitor,
                start + 45 * MINUTE_US,
                EventType::Page,
                "/shoes/",
                ua,
            );
        }
    }
    for i in 0..5 {
        event("crawler", base + i * MINUTE_US, EventType::Page, "/", BOT);
    }
    events
}

/// Splits events into batches per partition, in time order per visitor, `per_batch` each.
fn batches(events: &[Event], per_batch: usize) -> Vec<EventBatch> {
    let mut by_partition: BTreeMap<u32, Vec<Event>> = BTreeMap::new();
    let mut sorted = events.to_vec();
    sorted.sort_by_key(|e| e.timestamp_us);
    for e in sorted {
        by_partition
            .entry(partition_for(e.tenant_id, &e.visitor_id, PARTITIONS))
            .or_default()
            .push(e);
    }
    let mut out = Vec::new();
    for (partition, events) in by_partition {
        for chunk in events.chunks(per_batch) {
            out.push(EventBatch {
                batch_id: uuid::Uuid::now_v7().to_string(),
                partition,
                created_at_us: 0,
                events: chunk.to_vec(),
            });
        }
    }
    out
}

/// The figures a merchant reads, computed straight from the events with no code of the
/// stream processor: per-minute totals, visits by simple gap rule, exact visitor sets.
#[derive(Debug, Default, PartialEq)]
struct Figures {
    pageviews_by_minute: BTreeMap<i64, i64>,
    events_by_name: BTreeMap<String, i64>,
    pageviews_by_page: BTreeMap<String, i64>,
    visits: i64,
    bounces: i64,
    duration_us: i64,
    entry_pages: BTreeMap<String, i64>,
    revenue_eur_micros: i64,
    usd_orders: i64,
    bot_events: i64,
    visitors_by_hour: BTreeMap<i64, i64>,
}

fn expected(events: &[Event]) -> Figures {
    let mut f = Figures::default();
    let mut by_visitor: BTreeMap<&str, Vec<&Event>> = BTreeMap::new();
    let mut hour_visitors: BTreeMap<i64, BTreeSet<&str>> = BTreeMap::new();
    for e in events {
        if e.user_agent == BOT {
            f.bot_events += 1;
            continue;
        }
        by_visitor.entry(&e.visitor_id).or_default().push(e);
        hour_visitors
            .entry(e.timestamp_us / 3_600_000_000 * 3_600_000_000)
            .or_default()
            .insert(&e.visitor_id);
        if e.r#type() == EventType::Page {
            *f.pageviews_by_minute
                .entry(e.timestamp_us / MINUTE_US * MINUTE_US)
                .or_default() += 1;
            let path = e.page_url.trim_start_matches("https://shop.example.com");
            let path = match path.trim_end_matches('/') {
                "" => "/",
                p => p,
            };
            *f.pageviews_by_page.entry(path.to_string()).or_default() += 1;
        } else {
            *f.events_by_name.entry(e.name.clone()).or_default() += 1;
            let props = String::from_utf8_lossy(&e.properties_json);
            if props.contains("EUR") {
                f.revenue_eur_micros += 49_900_000;
            }
            if props.contains("USD") {
                f.usd_orders += 1;
            }
        }
    }
    for events in by_visitor.values_mut() {
        events.sort_by_key(|e| e.timestamp_us);
        let mut visits: Vec<Vec<&Event>> = Vec::new();
        for e in events.iter() {
            match visits.last_mut() {
                Some(v) if e.timestamp_us - v.last().unwrap().timestamp_us < 30 * MINUTE_US => {
                    v.push(e)
                }
                _ => visits.push(vec![e]),
            }
        }
        for v in visits {
            f.visits += 1;
            let pages: Vec<&&Event> = v.iter().filter(|e| e.r#type() == EventType::Page).collect();
            if pages.len() == 1 {
                f.bounces += 1;
            }
            f.duration_us += v.last().unwrap().timestamp_us - v[0].timestamp_us;
            if let Some(first) = pages.first() {
                let path = first
                    .page_url
                    .trim_start_matches("https://shop.example.com");
                let path = match path.trim_end_matches('/') {
                    "" => "/",
                    p => p,
                };
                *f.entry_pages.entry(path.to_string()).or_default() += 1;
            }
        }
    }
    f.visitors_by_hour = hour_visitors
        .into_iter()
        .map(|(h, set)| (h, set.len() as i64))
        .collect();
    f
}

/// The same figures read back from the rollups (every shard added up, sketches united).
async fn actual(pool: &PgPool, tenant_id: i64) -> Figures {
    let mut f = Figures::default();
    let sum = |dimension: &'static str, column: &'static str| {
        let sql = format!(
            "SELECT value, sum({column})::bigint FROM rollups WHERE tenant_id = $1 \
             AND granularity = 'minute' AND dimension = '{dimension}' GROUP BY value \
             HAVING sum({column}) <> 0"
        );
        async move {
            let rows: Vec<(String, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(tenant_id)
                .fetch_all(pool)
                .await
                .unwrap();
            rows.into_iter().collect::<BTreeMap<String, i64>>()
        }
    };
    f.events_by_name = sum("event", "events").await;
    f.pageviews_by_page = sum("page", "pageviews").await;
    f.entry_pages = sum("entry_page", "visits").await;
    let totals = sum("", "visits").await;
    f.visits = totals.get("").copied().unwrap_or(0);
    f.bounces = sum("", "bounces").await.get("").copied().unwrap_or(0);
    f.duration_us = sum("", "duration_us").await.get("").copied().unwrap_or(0);
    f.revenue_eur_micros = sum("", "revenue_micros")
        .await
        .get("")
        .copied()
        .unwrap_or(0);
    f.usd_orders = sum("currency", "orders")
        .await
        .get("USD")
        .copied()
        .unwrap_or(0);
    f.bot_events = sum("", "bot_events").await.get("").copied().unwrap_or(0);
    let minutes: Vec<(chrono::DateTime<chrono::Utc>, i64)> = sqlx::query_as(
        "SELECT bucket, sum(pageviews)::bigint FROM rollups WHERE tenant_id = $1 \
         AND granularity = 'minute' AND dimension = '' GROUP BY bucket HAVING sum(pageviews) > 0",
    )
    .bind(tenant_id)
    .fetch_all(pool)
    .await
    .unwrap();
    f.pageviews_by_minute = minutes
        .into_iter()
        .map(|(b, n)| (b.timestamp_micros(), n))
        .collect();
    let hours = sqlx::query(
        "SELECT bucket, visitors FROM rollups WHERE tenant_id = $1 AND granularity = 'hour' \
         AND dimension = '' AND visitors IS NOT NULL",
    )
    .bind(tenant_id)
    .fetch_all(pool)
    .await
    .unwrap();
    let mut by_hour: BTreeMap<i64, Vec<VisitorSketch>> = BTreeMap::new();
    for row in hours {
        let bucket: chrono::DateTime<chrono::Utc> = row.get(0);
        let bytes: Vec<u8> = row.get(1);
        by_hour
            .entry(bucket.timestamp_micros())
            .or_default()
            .push(VisitorSketch::from_bytes(&bytes).unwrap());
    }
    f.visitors_by_hour = by_hour
        .into_iter()
        .map(|(h, sketches)| {
            (
                h,
                VisitorSketch::union_of(&sketches).estimate().round() as i64,
            )
        })
        .collect();
    f
}

/// Exact figures must match exactly; unique visitors within three standard errors.
fn assert_figures(actual: &Figures, expected: &Figures) {
    let rse = VisitorSketch::relative_error();
    for (hour, &exact) in &expected.visitors_by_hour {
        let estimate = actual.visitors_by_hour.get(hour).copied().unwrap_or(0);
        let tolerance = (exact as f64 * 3.0 * rse).max(1.0);
        assert!(
            ((estimate - exact) as f64).abs() <= tolerance,
            "hour {hour}: {estimate} visitors estimated, {exact} exact"
        );
    }
    let strip = |f: &Figures| Figures {
        visitors_by_hour: BTreeMap::new(),
        pageviews_by_minute: f.pageviews_by_minute.clone(),
        events_by_name: f.events_by_name.clone(),
        pageviews_by_page: f.pageviews_by_page.clone(),
        entry_pages: f.entry_pages.clone(),
        ..*f
    };
    assert_eq!(strip(actual), strip(expected));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollups_equal_an_independent_computation_and_redeliveries_change_nothing() {
    let world = World::new().await;
    let events = traffic(&world);
    let want = expected(&events);
    assert!(
        want.visits > 40 && want.bounces > 0 && want.bot_events == 5,
        "{want:?}"
    );
    let batches = batches(&events, 7);
    let running = Running::start(&world, &world.database_url).await;
    for batch in &batches {
        world.publish(batch).await;
    }
    world.wait_for_batches(batches.len() as i64).await;
    assert_figures(&actual(&world.pool, world.tenant_id).await, &want);

    // The same batches again (a publisher retry, a redelivery): nothing changes.
    for batch in batches.iter().take(5) {
        world.publish(batch).await;
    }
    // A new batch after them proves the duplicates were consumed first (queues are ordered).
    let marker = EventBatch {
        batch_id: uuid::Uuid::now_v7().to_string(),
        partition: 0,
        created_at_us: 0,
        events: Vec::new(),
    };
    for p in 0..PARTITIONS {
        world
            .publish(&EventBatch {
                batch_id: uuid::Uuid::now_v7().to_string(),
                partition: p,
                ..marker.clone()
            })
            .await;
    }
    world
        .wait_for_batches(batches.len() as i64 + i64::from(PARTITIONS))
        .await;
    assert_figures(&actual(&world.pool, world.tenant_id).await, &want);
    running.stop().await;
    world.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_and_a_database_outage_lose_and_double_nothing() {
    let world = World::new().await;
    let events = traffic(&world);
    let want = expected(&events);
    let batches = batches(&events, 3);
    let database = world.database_url.rsplit('/').next().unwrap().to_string();
    let proxy = Proxy::start("127.0.0.1:5432").await;
    let running = Running::start(&world, &proxy.postgres_url(&database)).await;

    let (first, rest) = batches.split_at(batches.len() / 3);
    for batch in first {
        world.publish(batch).await;
    }
    world.wait_for_batches(first.len() as i64).await;

    // The database goes away mid-stream: the consumers hold their messages and turn not ready.
    proxy.cut();
    let (second, third) = rest.split_at(rest.len() / 2);
    for batch in second {
        world.publish(batch).await;
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while get_status(running.admin, "/readyz").await != Some(503) {
        assert!(
            Instant::now() < deadline,
            "readiness stayed up without the database"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    proxy.restore();
    world
        .wait_for_batches((first.len() + second.len()) as i64)
        .await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while get_status(running.admin, "/readyz").await != Some(200) {
        assert!(Instant::now() < deadline, "readiness did not come back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A hard stop mid-stream (the task and its connections dropped, nothing flushed), then a
    // fresh process resumes from what was committed.
    for batch in third {
        world.publish(batch).await;
    }
    running.task.abort();
    let _ = running.task.await;
    let running = Running::start(&world, &world.database_url).await;
    world.wait_for_batches(batches.len() as i64).await;
    assert_figures(&actual(&world.pool, world.tenant_id).await, &want);
    running.stop().await;
    world.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_commit_and_acknowledgement_counts_nothing_twice() {
    use stream_processor::{
        config::RollupConfig,
        sink::{Incoming, Sink as _},
    };
    let world = World::new().await;
    let events = traffic(&world);
    let want = expected(&events);
    let batches = batches(&events, 5);

    // A consumer of partition 0 commits its first batches, then dies before acknowledging
    // them: the broker still holds them and delivers them again to the next consumer.
    let config = RollupConfig {
        flush_interval_ms: 200,
        max_buffered_events: 100_000,
        late_event_max_age_secs: 86_400,
        batch_id_retention_hours: 168,
        // Visitor states stay in the partition's log: the next consumer must read it.
        visitor_snapshot_flushes: 60,
    };
    let mut sink = partition_0_sink(&world, config);
    let committed: Vec<&EventBatch> = batches
        .iter()
        .filter(|b| b.partition == 0)
        .take(3)
        .collect();
    assert!(!committed.is_empty());
    for batch in &committed {
        let payload = batch.encode_to_vec();
        sink.accept(Incoming {
            message_id: Some(&batch.batch_id),
            kind: Some("sightline.events.v1.EventBatch"),
            redelivered: false,
            payload: &payload,
        })
        .unwrap();
    }
    sink.flush().await.unwrap();
    drop(sink);
    assert_eq!(world.processed_batches().await, committed.len() as i64);

    let running = Running::start(&world, &world.database_url).await;
    for batch in &batches {
        world.publish(batch).await;
    }
    world.wait_for_batches(batches.len() as i64).await;
    assert_figures(&actual(&world.pool, world.tenant_id).await, &want);
    running.stop().await;
    world.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_events_are_left_to_the_batch_layer() {
    let world = World::new().await;
    let now = chrono::Utc::now().timestamp_micros();
    let event = |id: &str, at_us: i64| Event {
        message_id: id.into(),
        tenant_id: world.tenant_id,
        site_id: world.site_id,
        r#type: EventType::Page.into(),
        visitor_id: "late-visitor".into(),
        timestamp_us: at_us,
        received_at_us: now,
        user_agent: CHROME.into(),
        page_url: "https://shop.example.com/".into(),
        ..Event::default()
    };
    let batch = EventBatch {
        batch_id: uuid::Uuid::now_v7().to_string(),
        partition: partition_for(world.tenant_id, "late-visitor", PARTITIONS),
        created_at_us: now,
        events: vec![
            event("too-old", now - 2 * 86_400_000_000),
            event("late-but-counted", now - 3_600_000_000),
        ],
    };
    let running = Running::start(&world, &world.database_url).await;
    world.publish(&batch).await;
    world.wait_for_batches(1).await;
    let pageviews: i64 = sqlx::query_scalar(
        "SELECT coalesce(sum(pageviews), 0)::bigint FROM rollups WHERE granularity = 'minute' \
         AND dimension = ''",
    )
    .fetch_one(&world.pool)
    .await
    .unwrap();
    assert_eq!(
        pageviews, 1,
        "the two-day-old event is not counted by the speed layer"
    );
    running.stop().await;
    world.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_partition_moves_its_watermark_to_the_present() {
    let world = World::new().await;
    let now = chrono::Utc::now().timestamp_micros();
    let hour_ago = now - 3_600_000_000;
    let partition = partition_for(world.tenant_id, "quiet-visitor", PARTITIONS);
    let batch = EventBatch {
        batch_id: uuid::Uuid::now_v7().to_string(),
        partition,
        created_at_us: hour_ago,
        events: vec![Event {
            message_id: "received-an-hour-ago".into(),
            tenant_id: world.tenant_id,
            site_id: world.site_id,
            r#type: EventType::Page.into(),
            visitor_id: "quiet-visitor".into(),
            timestamp_us: hour_ago,
            received_at_us: hour_ago,
            user_agent: CHROME.into(),
            page_url: "https://shop.example.com/".into(),
            ..Event::default()
        }],
    };
    let running = Running::start(&world, &world.database_url).await;
    world.publish(&batch).await;
    world.wait_for_batches(1).await;

    // Then nothing more arrives: the drained partition reports that it is complete up to about
    // now, not up to its last event an hour ago (which would read as an hour of lag).
    let received_until = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT (extract(epoch FROM received_until) * 1000000)::int8 FROM rollup_watermarks \
             WHERE shard = $1",
        )
        .bind(i32::try_from(partition).unwrap())
        .fetch_one(&world.pool)
        .await
        .unwrap()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let until = received_until().await;
        if until >= now - 10_000_000 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the watermark stayed at {until}, {} s behind",
            (now - until) / 1_000_000
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    running.stop().await;
    world.finish().await;
}

/// A flush tells how many events it rolled up: not the late ones it leaves to the batch layer,
/// not an event repeated inside the stream, not a batch counted before.
#[tokio::test]
async fn a_flush_counts_only_the_events_it_rolls_up() {
    use stream_processor::{
        config::RollupConfig,
        sink::{Incoming, Sink},
    };
    let world = World::new().await;
    let now = chrono::Utc::now().timestamp_micros();
    let event = |id: &str, at_us: i64| Event {
        message_id: id.into(),
        tenant_id: world.tenant_id,
        site_id: world.site_id,
        r#type: EventType::Page.into(),
        visitor_id: "counted-visitor".into(),
        timestamp_us: at_us,
        received_at_us: now,
        user_agent: CHROME.into(),
        page_url: "https://shop.example.com/".into(),
        ..Event::default()
    };
    let batch = EventBatch {
        batch_id: uuid::Uuid::now_v7().to_string(),
        partition: 0,
        created_at_us: now,
        events: vec![
            event("too-old", now - 2 * 86_400_000_000),
            event("counted", now - 1_000_000),
            event("counted", now - 1_000_000),
        ],
    };
    let mut sink = partition_0_sink(
        &world,
        RollupConfig {
            flush_interval_ms: 200,
            max_buffered_events: 100_000,
            late_event_max_age_secs: 86_400,
            batch_id_retention_hours: 168,
            visitor_snapshot_flushes: 60,
        },
    );
    let payload = batch.encode_to_vec();
    let message = Incoming {
        message_id: Some(&batch.batch_id),
        kind: Some("sightline.events.v1.EventBatch"),
        redelivered: false,
        payload: &payload,
    };
    assert_eq!(sink.accept(message).unwrap(), 3, "events taken");
    assert_eq!(sink.flush().await.unwrap(), 1, "events rolled up");
    assert_eq!(sink.accept(message).unwrap(), 3);
    assert_eq!(sink.flush().await.unwrap(), 0, "a batch counted before");
    world.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_visitor_snapshot_being_written_holds_no_flush_back() {
    use stream_processor::{
        config::RollupConfig,
        sink::{Incoming, Sink as _},
    };
    let world = World::new().await;
    let events = traffic(&world);
    let want = expected(&events);
    let batches = batches(&events, 5);
    let mine: Vec<&EventBatch> = batches.iter().filter(|b| b.partition == 0).collect();
    assert!(mine.len() >= 3, "partition 0 has {} batches", mine.len());

    // A snapshot that cannot write: another transaction holds a lock on the snapshot table
    // that lets reads through and makes every write wait.
    let mut blocker = world.pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE rollup_visitors IN SHARE MODE")
        .execute(&mut *blocker)
        .await
        .unwrap();

    let mut sink = partition_0_sink(
        &world,
        RollupConfig {
            flush_interval_ms: 200,
            max_buffered_events: 100_000,
            late_event_max_age_secs: 86_400,
            batch_id_retention_hours: 168,
            // A snapshot after every flush: the first one starts at once and stays blocked.
            visitor_snapshot_flushes: 1,
        },
    );
    for batch in &mine {
        let payload = batch.encode_to_vec();
        sink.accept(Incoming {
            message_id: Some(&batch.batch_id),
            kind: Some("sightline.events.v1.EventBatch"),
            redelivered: false,
            payload: &payload,
        })
        .unwrap();
        tokio::time::timeout(Duration::from_secs(20), sink.flush())
            .await
            .expect("a flush does not wait for the snapshot being written")
            .unwrap();
    }
    assert_eq!(world.processed_batches().await, mine.len() as i64);
    let count = |sql: &'static str| {
        let pool = world.pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(sql)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    let log = "SELECT count(*) FROM rollup_visitor_log WHERE shard = 0";
    let snapshot = "SELECT count(*) FROM rollup_visitors WHERE shard = 0";
    let logged = count(log).await;
    assert!(
        logged >= mine.len() as i64,
        "one log entry a flush: {logged}"
    );
    assert_eq!(count(snapshot).await, 0, "the snapshot is still waiting");

    // The lock goes; closing the sink waits for its snapshot, which replaces the entries it
    // covers (the first flush's; later flushes did not start another while it was written).
    blocker.commit().await.unwrap();
    sink.close().await;
    assert!(count(snapshot).await > 0, "the snapshot was written");
    assert_eq!(
        count(log).await,
        logged,
        "the covered entry is kept, emptied; the later ones stay"
    );
    drop(sink);

    // The next consumer resumes from the snapshot and the log after it: figures exact.
    let running = Running::start(&world, &world.database_url).await;
    for batch in &batches {
        world.publish(batch).await;
    }
    world.wait_for_batches(batches.len() as i64).await;
    assert_figures(&actual(&world.pool, world.tenant_id).await, &want);
    running.stop().await;
    world.finish().await;
}
