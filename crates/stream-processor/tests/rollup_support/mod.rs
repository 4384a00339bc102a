//! What the rollup tests share: a world (a database with a tenant and a EUR site, a broker
//! namespace, the stream processor booted in-process with only the rollup group), a day of
//! generated traffic, and the independent computation the rollups are compared with.

#![allow(dead_code)]

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
use sightline_testkit::{fresh_database, unique};
use sqlx::{PgPool, Row};
use stream_processor::{Config, Listeners};

pub const AMQP: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
pub const PARTITIONS: u32 = 4;
pub const CHROME: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36";
pub const IPHONE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1";
pub const BOT: &str = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";
pub const MINUTE_US: i64 = 60_000_000;

/// One test's pipeline pieces: a database with a tenant and a EUR site, a broker namespace.
pub struct World {
    pub namespace: String,
    pub database_url: String,
    pub pool: PgPool,
    pub tenant_id: i64,
    pub site_id: i64,
    pub publisher: RabbitPublisher,
}

impl World {
    pub async fn new() -> Self {
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

    pub async fn publish(&self, batch: &EventBatch) {
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
    pub async fn finish(self) {
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

    pub async fn processed_batches(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM rollup_batches")
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    pub async fn wait_for_batches(&self, n: i64) {
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

pub fn env(namespace: &str, database_url: &str, amqp: &str) -> HashMap<String, String> {
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
pub struct Running {
    pub admin: SocketAddr,
    pub shutdown: Shutdown,
    pub task: tokio::task::JoinHandle<Result<(), stream_processor::StreamError>>,
}

impl Running {
    pub async fn start(world: &World, database_url: &str) -> Self {
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

    pub async fn stop(self) {
        self.shutdown.trigger();
        self.task.await.unwrap().unwrap();
    }
}

/// A rollup sink of partition 0 on the world's database, driven by the test itself.
pub fn partition_0_sink(
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
pub fn traffic(world: &World) -> Vec<Event> {
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
pub fn batches(events: &[Event], per_batch: usize) -> Vec<EventBatch> {
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
pub struct Figures {
    pub pageviews_by_minute: BTreeMap<i64, i64>,
    pub events_by_name: BTreeMap<String, i64>,
    pub pageviews_by_page: BTreeMap<String, i64>,
    pub visits: i64,
    pub bounces: i64,
    pub duration_us: i64,
    pub entry_pages: BTreeMap<String, i64>,
    pub revenue_eur_micros: i64,
    pub usd_orders: i64,
    pub bot_events: i64,
    pub visitors_by_hour: BTreeMap<i64, i64>,
}

pub fn expected(events: &[Event]) -> Figures {
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
pub async fn actual(pool: &PgPool, tenant_id: i64) -> Figures {
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
pub fn assert_figures(actual: &Figures, expected: &Figures) {
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
