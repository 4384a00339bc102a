//! What the query tests share: a fresh database with two tenants and their sites and tokens;
//! events generated per site and turned into rollups by the stream processor's own
//! `RollupSink` (no broker: the sinks are driven directly); the query service booted in-process
//! and called over gRPC; and an independent computation of every figure from the events.

#![allow(dead_code)]

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::SocketAddr,
    sync::Arc,
};

use chrono::{NaiveDate, TimeZone};
use chrono_tz::Tz;
use prost::Message as _;
use query::{Config, Listeners};
use sightline_db::{NewSite, PgStore, ReadScope, ReadTokens, Sites, Tenants};
use sightline_kit::{Shutdown, telemetry::Metrics};
use sightline_proto::{
    events::v1::{Event, EventBatch, EventType},
    query::v1::{self as pb, query_client::QueryClient},
};
use sightline_testkit::{drop_database, fresh_database};
use stream_processor::{
    config::RollupConfig,
    metrics::StreamMetrics,
    rollup::RollupSink,
    sink::{Incoming, Sink as _},
};
use tonic::transport::Channel;

pub const CHROME: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36";
pub const BOT: &str = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";
pub const MINUTE_US: i64 = 60_000_000;
pub const HOUR_US: i64 = 3_600_000_000;
pub const DAY_US: i64 = 86_400_000_000;
pub const ORDER: &str = "Order Completed";
const SHARDS: u32 = 2;

/// One site's generated traffic.
pub struct SiteData {
    pub id: i64,
    pub tz: Tz,
    pub events: Vec<Event>,
}

/// A database with tenants `acme` (three sites in three zones) and `globex` (one site), a read
/// token for each tenant, one limited to acme's first site, and an admin token.
pub struct World {
    pub database_url: String,
    pub store: PgStore,
    pub acme: i64,
    pub globex: i64,
    pub utc: SiteData,
    pub new_york: SiteData,
    pub kolkata: SiteData,
    pub globex_site: SiteData,
    pub acme_token: String,
    pub acme_utc_only_token: String,
    pub globex_token: String,
    pub admin_token: String,
}

impl World {
    pub async fn new() -> Self {
        let database_url = fresh_database("t_query").await;
        let store = PgStore::connect_lazy(&sightline_db::DatabaseConfig {
            url: sightline_kit::config::Secret::new(database_url.clone()),
            max_connections: 4,
            connect_timeout_ms: 5000,
        })
        .unwrap();
        let acme = store.create_tenant("acme", "Acme").await.unwrap().id;
        let globex = store.create_tenant("globex", "Globex").await.unwrap().id;
        let site = |tenant_id: i64, domain: &str, zone: &str| {
            let store = store.clone();
            let (domain, zone) = (domain.to_string(), zone.to_string());
            async move {
                store
                    .create_site(NewSite {
                        tenant_id,
                        domain,
                        time_zone: zone,
                        currency: "EUR".into(),
                    })
                    .await
                    .unwrap()
                    .id
            }
        };
        let utc = site(acme, "utc.example.com", "UTC").await;
        let new_york = site(acme, "ny.example.com", "America/New_York").await;
        let kolkata = site(acme, "in.example.com", "Asia/Kolkata").await;
        let globex_site = site(globex, "globex.example.com", "Europe/Paris").await;
        let token = |scope: ReadScope| {
            let store = store.clone();
            async move { store.issue_read_token(scope, "test").await.unwrap().0 }
        };
        let acme_token = token(ReadScope::Tenant {
            tenant_id: acme,
            site_ids: None,
        })
        .await;
        let acme_utc_only_token = token(ReadScope::Tenant {
            tenant_id: acme,
            site_ids: Some(vec![utc]),
        })
        .await;
        let globex_token = token(ReadScope::Tenant {
            tenant_id: globex,
            site_ids: None,
        })
        .await;
        let admin_token = token(ReadScope::Admin).await;
        let now = chrono::Utc::now().timestamp_micros();
        let data = |id: i64, zone: &str, tenant: i64, seed: u64| SiteData {
            id,
            tz: zone.parse().unwrap(),
            events: traffic(tenant, id, now, seed),
        };
        World {
            utc: data(utc, "UTC", acme, 1),
            new_york: data(new_york, "America/New_York", acme, 2),
            kolkata: data(kolkata, "Asia/Kolkata", acme, 3),
            globex_site: data(globex_site, "Europe/Paris", globex, 4),
            database_url,
            store,
            acme,
            globex,
            acme_token,
            acme_utc_only_token,
            globex_token,
            admin_token,
        }
    }

    /// Every generated event, of every site.
    pub fn all_events(&self) -> Vec<Event> {
        [&self.utc, &self.new_york, &self.kolkata, &self.globex_site]
            .iter()
            .flat_map(|s| s.events.iter().cloned())
            .collect()
    }

    /// Turns every site's events into rollups with the stream processor's own sinks.
    pub async fn roll_up(&self) {
        self.roll_up_events(self.all_events()).await;
    }

    /// Turns `events` into rollups with the stream processor's own sinks.
    pub async fn roll_up_events(&self, all: Vec<Event>) {
        let config = RollupConfig {
            flush_interval_ms: 1000,
            max_buffered_events: 1_000_000,
            late_event_max_age_secs: 10 * 86_400,
            batch_id_retention_hours: 168,
            visitor_snapshot_flushes: 60,
        };
        let enricher = Arc::new(sightline_event::Enricher::new().unwrap());
        let metrics = StreamMetrics::register(&Metrics::new());
        let mut sinks: Vec<RollupSink> = (0..SHARDS)
            .map(|p| {
                RollupSink::new(
                    (p, SHARDS),
                    self.store.pool().clone(),
                    enricher.clone(),
                    config.clone(),
                    metrics.clone(),
                )
            })
            .collect();
        // A visitor's events go to one partition, in time order, in batches of 50.
        for (partition, sink) in sinks.iter_mut().enumerate() {
            let mut events: Vec<Event> = all
                .iter()
                .filter(|e| shard_of(&e.visitor_id) == partition as u32)
                .cloned()
                .collect();
            events.sort_by_key(|e| e.timestamp_us);
            for chunk in events.chunks(50) {
                let batch = EventBatch {
                    batch_id: uuid::Uuid::now_v7().to_string(),
                    partition: partition as u32,
                    created_at_us: 0,
                    events: chunk.to_vec(),
                };
                let payload = batch.encode_to_vec();
                sink.accept(Incoming {
                    message_id: Some(&batch.batch_id),
                    kind: Some("sightline.events.v1.EventBatch"),
                    redelivered: false,
                    payload: &payload,
                })
                .unwrap();
                sink.flush().await.unwrap();
            }
        }
    }

    pub async fn finish(self) {
        self.store.pool().close().await;
        drop_database(&self.database_url).await;
    }
}

fn shard_of(visitor: &str) -> u32 {
    visitor.bytes().map(u32::from).sum::<u32>() % SHARDS
}

/// A tiny deterministic generator (no dependency, the same events every run).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

const PAGES: [&str; 5] = ["/", "/shoes", "/shoes/red", "/cart", "/about"];

/// Three days of traffic ending two days ago (60 visitors, 1-4 visits each, pages, carts and
/// orders, visits around every zone's midnight), a crawler, and a few visitors right now.
pub fn traffic(tenant_id: i64, site_id: i64, now_us: i64, seed: u64) -> Vec<Event> {
    let mut rng = Lcg(seed);
    let base = (now_us / DAY_US - 5) * DAY_US;
    let mut events = Vec::new();
    let mut n = 0;
    let mut push =
        |visitor: &str, at_us: i64, kind: EventType, detail: &str, ua: &str, google: bool| {
            n += 1;
            let mut e = Event {
                message_id: format!("m-{site_id}-{n}"),
                tenant_id,
                site_id,
                r#type: kind.into(),
                visitor_id: visitor.to_string(),
                anonymous_id: visitor.to_string(),
                timestamp_us: at_us,
                received_at_us: at_us + 1_000,
                user_agent: ua.to_string(),
                ..Event::default()
            };
            if google {
                e.page_referrer = "https://www.google.com/".into();
            }
            if kind == EventType::Page {
                e.page_url = format!("https://shop.example.com{detail}");
            } else {
                let (name, props) = detail.split_once('|').unwrap_or((detail, ""));
                e.name = name.to_string();
                e.properties_json = props.as_bytes().to_vec().into();
                e.page_url = "https://shop.example.com/checkout".into();
            }
            events.push(e);
        };
    for v in 0..60u64 {
        let visitor = format!("visitor-{site_id}-{v}");
        let google = v % 3 == 0;
        let visits = 1 + rng.next(4);
        // Visits start anywhere in the three days, at minute precision plus seconds.
        let mut t = base + (rng.next(72 * 60) as i64) * MINUTE_US + rng.next(60) as i64 * 1_000_000;
        for _ in 0..visits {
            let pages = 1 + rng.next(4);
            for p in 0..pages {
                let page = PAGES[rng.next(PAGES.len() as u64) as usize];
                push(&visitor, t, EventType::Page, page, CHROME, google);
                t += (20 + rng.next(400) as i64) * 1_000_000;
                if p == 0 && rng.next(3) == 0 {
                    push(
                        &visitor,
                        t,
                        EventType::Track,
                        "Added To Cart|{}",
                        CHROME,
                        google,
                    );
                    t += 30_000_000;
                }
            }
            if rng.next(4) == 0 {
                let cents = 1_000 + rng.next(20_000);
                let props = format!(
                    "{ORDER}|{{\"revenue\": {}.{:02}, \"currency\": \"EUR\"}}",
                    cents / 100,
                    cents % 100
                );
                push(&visitor, t, EventType::Track, &props, CHROME, google);
            }
            // 31 minutes to 10 hours later: a new visit.
            t += (31 + rng.next(600) as i64) * MINUTE_US;
        }
    }
    // Visits that start just before a local midnight somewhere and go on after it.
    // UTC, New York (UTC-5 in winter, -4 in summer) and Kolkata (UTC+5:30) midnights.
    for (i, (hour, minute)) in [(23i64, 50i64), (4, 50), (3, 50), (18, 20)]
        .into_iter()
        .enumerate()
    {
        let visitor = format!("night-{site_id}-{i}");
        let start = base + DAY_US + hour * HOUR_US + minute * MINUTE_US;
        for k in 0..4 {
            push(
                &visitor,
                start + k * 5 * MINUTE_US,
                EventType::Page,
                PAGES[k as usize],
                CHROME,
                false,
            );
        }
    }
    for i in 0..5 {
        push(
            "crawler",
            base + i * HOUR_US,
            EventType::Page,
            "/",
            BOT,
            false,
        );
    }
    // Right now, for the realtime view.
    for i in 0..3 {
        let visitor = format!("now-{site_id}-{i}");
        push(
            &visitor,
            now_us - 70_000_000 + i * 1_000_000,
            EventType::Page,
            "/",
            CHROME,
            false,
        );
        push(
            &visitor,
            now_us - 40_000_000,
            EventType::Page,
            "/shoes",
            CHROME,
            false,
        );
    }
    events
}

/// The path the stream processor counts a page URL under.
pub fn path(url: &str) -> String {
    let path = url.trim_start_matches("https://shop.example.com");
    match path.trim_end_matches('/') {
        "" => "/".to_string(),
        p => p.to_string(),
    }
}

/// Revenue of an order event, micros.
pub fn revenue_micros(e: &Event) -> i64 {
    let props = String::from_utf8_lossy(&e.properties_json);
    let Some(rest) = props.split("\"revenue\": ").nth(1) else {
        return 0;
    };
    let number = rest.split(',').next().unwrap_or("0");
    let (units, cents) = number.split_once('.').unwrap_or((number, "0"));
    units.parse::<i64>().unwrap() * 1_000_000 + cents.parse::<i64>().unwrap() * 10_000
}

/// One visit, as the independent computation sees it.
#[derive(Debug, Clone)]
pub struct Visit {
    pub visitor: String,
    pub start_us: i64,
    pub end_us: i64,
    pub pages: Vec<String>,
    pub source: &'static str,
}

/// Figures of a set of events (a day, a week, a range), computed from scratch.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Expected {
    pub pageviews: i64,
    pub events: i64,
    pub visitors: usize,
    pub visits: i64,
    pub bounces: i64,
    pub duration_us: i64,
    pub revenue_micros: i64,
    pub converted: usize,
}

/// Visits by the 30-minute rule, from the non-bot events.
pub fn visits(events: &[Event]) -> Vec<Visit> {
    let mut by_visitor: BTreeMap<&str, Vec<&Event>> = BTreeMap::new();
    for e in events.iter().filter(|e| e.user_agent != BOT) {
        by_visitor.entry(&e.visitor_id).or_default().push(e);
    }
    let mut out = Vec::new();
    for (visitor, mut list) in by_visitor {
        list.sort_by_key(|e| e.timestamp_us);
        let mut current: Option<Visit> = None;
        for e in list {
            let continues = current
                .as_ref()
                .is_some_and(|v| e.timestamp_us - v.end_us < 30 * MINUTE_US);
            if !continues {
                out.extend(current.take());
                current = Some(Visit {
                    visitor: visitor.to_string(),
                    start_us: e.timestamp_us,
                    end_us: e.timestamp_us,
                    pages: Vec::new(),
                    source: if e.page_referrer.is_empty() {
                        "Direct"
                    } else {
                        "Google"
                    },
                });
            }
            let v = current.as_mut().unwrap();
            v.end_us = e.timestamp_us;
            if e.r#type() == EventType::Page {
                v.pages.push(path(&e.page_url));
            }
        }
        out.extend(current);
    }
    out
}

/// The figures of the events in `[from_us, to_us)` (visits by their start).
pub fn expected(
    events: &[Event],
    from_us: i64,
    to_us: i64,
    keep: impl Fn(&Event) -> bool,
) -> Expected {
    let inside = |t: i64| from_us <= t && t < to_us;
    let mut x = Expected::default();
    let mut visitors = BTreeSet::new();
    let mut converted = BTreeSet::new();
    for e in events
        .iter()
        .filter(|e| e.user_agent != BOT && inside(e.timestamp_us) && keep(e))
    {
        x.events += 1;
        visitors.insert(e.visitor_id.clone());
        if e.r#type() == EventType::Page {
            x.pageviews += 1;
        }
        if e.name == ORDER {
            x.revenue_micros += revenue_micros(e);
            converted.insert(e.visitor_id.clone());
        }
    }
    x.visitors = visitors.len();
    x.converted = converted.len();
    x
}

/// Adds the visit figures of the visits starting in `[from_us, to_us)` that `keep` keeps.
pub fn with_visits(
    mut x: Expected,
    all: &[Visit],
    from_us: i64,
    to_us: i64,
    keep: impl Fn(&Visit) -> bool,
) -> Expected {
    for v in all
        .iter()
        .filter(|v| from_us <= v.start_us && v.start_us < to_us && keep(v))
    {
        x.visits += 1;
        x.duration_us += v.end_us - v.start_us;
        if v.pages.len() == 1 {
            x.bounces += 1;
        }
    }
    x
}

/// The first instant of a local date.
pub fn day_start(tz: Tz, date: NaiveDate) -> i64 {
    tz.from_local_datetime(&date.and_hms_opt(0, 0, 0).unwrap())
        .earliest()
        .unwrap()
        .timestamp_micros()
}

/// The local date of an instant.
pub fn local_date(tz: Tz, t_us: i64) -> NaiveDate {
    chrono::DateTime::from_timestamp_micros(t_us)
        .unwrap()
        .with_timezone(&tz)
        .date_naive()
}

/// The query service running in this process.
pub struct Running {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub shutdown: Shutdown,
    pub task: tokio::task::JoinHandle<Result<(), query::QueryError>>,
}

impl Running {
    /// Boots the service on `database_url` with extra `SIGHTLINE__…` settings.
    pub async fn start(database_url: &str, extra: &[(String, String)]) -> Self {
        let mut env: HashMap<String, String> = [
            ("SIGHTLINE__DATABASE__URL", database_url.to_string()),
            ("SIGHTLINE__QUERY__RATE_LIMIT_PER_SEC", "1000".into()),
            ("SIGHTLINE__QUERY__RATE_LIMIT_BURST", "1000".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        env.extend(extra.iter().cloned());
        let config =
            Config::load(&Config::loader().env_map(env)).expect("valid test configuration");
        let grpc = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let admin = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let (addr, admin_addr) = (grpc.local_addr().unwrap(), admin.local_addr().unwrap());
        let shutdown = Shutdown::new();
        let task = tokio::spawn(query::run(
            config,
            Listeners { grpc, admin },
            shutdown.clone(),
        ));
        Running {
            addr,
            admin: admin_addr,
            shutdown,
            task,
        }
    }

    /// A client on the running service.
    pub async fn client(&self) -> QueryClient<Channel> {
        let endpoint = format!("http://{}", self.addr);
        for _ in 0..100 {
            if let Ok(channel) = Channel::from_shared(endpoint.clone())
                .unwrap()
                .connect()
                .await
            {
                return QueryClient::new(channel);
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("the query service did not start on {endpoint}");
    }

    pub async fn stop(self) {
        self.shutdown.trigger();
        self.task.await.unwrap().unwrap();
    }
}

/// `message` with `authorization: Bearer token`.
pub fn authed<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

/// Owned metric names.
pub fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// A range of local dates, both inclusive.
pub fn dates(from: NaiveDate, to: NaiveDate) -> Option<pb::TimeRange> {
    Some(pb::TimeRange {
        from_date: from.to_string(),
        to_date: to.to_string(),
        ..Default::default()
    })
}

/// `GetTimeseries` with a bearer token.
pub async fn timeseries(
    client: &mut QueryClient<Channel>,
    token: &str,
    request: pb::TimeseriesRequest,
) -> pb::TimeseriesResponse {
    client
        .get_timeseries(authed(request, token))
        .await
        .unwrap()
        .into_inner()
}

/// The local days a site's traffic spans: the first event's to today.
pub fn span(site: &SiteData) -> (NaiveDate, NaiveDate) {
    let first = site.events.iter().map(|e| e.timestamp_us).min().unwrap();
    let now = chrono::Utc::now().timestamp_micros();
    (local_date(site.tz, first), local_date(site.tz, now))
}

/// Replaces day `day` of the UTC site with batch rows holding `pageviews` (and an hour row at
/// 10:00 with `hour_pageviews`), closed with `revision`, in one transaction as the batch enricher
/// does; `None` reopens the day.
pub async fn close_day(world: &World, day: NaiveDate, batch: Option<(i32, i64, i64)>) {
    let site = &world.utc;
    let (start, end) = (
        day_start(site.tz, day),
        day_start(site.tz, day + chrono::Duration::days(1)),
    );
    let at = |us: i64| chrono::DateTime::from_timestamp_micros(us).unwrap();
    let mut tx = world.store.pool().begin().await.unwrap();
    sqlx::query("DELETE FROM rollups WHERE tenant_id = $1 AND site_id = $2 AND layer = 'batch' AND bucket >= $3 AND bucket < $4")
        .bind(world.acme)
        .bind(site.id)
        .bind(at(start))
        .bind(at(end))
        .execute(&mut *tx)
        .await
        .unwrap();
    match batch {
        None => {
            sqlx::query(
                "DELETE FROM rollup_closures WHERE tenant_id = $1 AND site_id = $2 AND day = $3",
            )
            .bind(world.acme)
            .bind(site.id)
            .bind(day)
            .execute(&mut *tx)
            .await
            .unwrap();
        }
        Some((revision, pageviews, hour_pageviews)) => {
            let mut sketch = sightline_event::VisitorSketch::new();
            for i in 0..5 {
                sketch.insert(&format!("batch-visitor-{i}"));
            }
            for (granularity, bucket, pv) in [
                ("day", start, pageviews),
                ("hour", start + 10 * HOUR_US, hour_pageviews),
            ] {
                sqlx::query(
                    "INSERT INTO rollups (tenant_id, site_id, granularity, bucket, dimension, value, layer, shard, \
                     events, pageviews, visitors, revision) VALUES ($1, $2, $3, $4, '', '', 'batch', 0, $5, $5, $6, $7)",
                )
                .bind(world.acme)
                .bind(site.id)
                .bind(granularity)
                .bind(at(bucket))
                .bind(pv)
                .bind(sketch.to_bytes())
                .bind(revision)
                .execute(&mut *tx)
                .await
                .unwrap();
            }
            sqlx::query(
                "INSERT INTO rollup_closures (tenant_id, site_id, day, starts_at, ends_at, revision) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (tenant_id, site_id, day) \
                 DO UPDATE SET revision = EXCLUDED.revision, closed_at = now()",
            )
            .bind(world.acme)
            .bind(site.id)
            .bind(day)
            .bind(at(start))
            .bind(at(end))
            .bind(revision)
            .execute(&mut *tx)
            .await
            .unwrap();
        }
    }
    tx.commit().await.unwrap();
}
