//! `stream-load`: the stream processor benchmark.
//!
//! Fills one consumer group's partition queues with protobuf `EventBatch` messages of
//! realistic events (a pool of visitors browsing a site, some from search and campaigns, a few
//! orders and crawlers), then, in the same run:
//!
//! 1. **baseline**: bare lapin consumers on the same queues, decoding every batch and
//!    acknowledging it: the rate the broker and protobuf alone allow;
//! 2. **service**: the real stream processor (`stream_processor::run`, in this process) for the
//!    group, until it has flushed every event: the rate it sustains into PostgreSQL (rollup)
//!    or the lake (archive).
//!
//! Each phase reports events/s and the cores used by this process, PostgreSQL's processes and
//! RabbitMQ; the queues are filled afresh before each phase.

use std::{
    collections::HashMap,
    net::TcpListener,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use clap::Parser;
use futures_util::future::join_all;
use prost::Message as _;
use rand::{Rng, SeedableRng, rngs::StdRng};
use serde::Serialize;
use sightline_bench::procstat::{CpuReport, RssPeaks, Snapshot};
use sightline_broker::{
    BrokerConfig, Message, Publisher, Route, Subscription as _, partition_for,
    rabbitmq::{RabbitPublisher, connect, consume},
};
use sightline_kit::{HealthRegistry, Shutdown};
use sightline_proto::events::v1::{Event, EventBatch, EventType};

// The allocator the `sightline` binary runs with, so the service measures as it runs.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(about = "Stream processor benchmark: queues to rollups or to the lake")]
struct Cli {
    /// `rollup` or `archive`.
    #[arg(long, default_value = "rollup")]
    group: String,
    /// Events per phase.
    #[arg(long, default_value_t = 1_000_000)]
    events: usize,
    /// Events per broker message (ingest's `batching.max_events` under load).
    #[arg(long, default_value_t = 500)]
    batch_events: usize,
    /// Distinct visitors.
    #[arg(long, default_value_t = 100_000)]
    visitors: usize,
    /// Event-time span of the events, seconds: how long a live stream at the target rate
    /// takes to produce them (1,000,000 events at 300,000/s: about 3 s).
    #[arg(long, default_value_t = 4)]
    span_secs: i64,
    /// Partition queues.
    #[arg(long, default_value_t = 8)]
    partitions: u32,
    /// AMQP URI.
    #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    amqp: String,
    /// PostgreSQL server (a database is created per run and dropped at the end).
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432")]
    postgres: String,
    /// Lake folder of the archive phase (a temporary folder when empty).
    #[arg(long, default_value = "")]
    lake: String,
    /// Skip the baseline phase.
    #[arg(long)]
    no_baseline: bool,
    /// Extra service settings, `SIGHTLINE__SECTION__KEY=value` (repeatable).
    #[arg(long = "set")]
    settings: Vec<String>,
}

#[derive(Debug, Serialize)]
struct Phase {
    name: String,
    events: usize,
    seconds: f64,
    events_per_sec: f64,
    cpu: CpuReport,
}

/// Realistic events: visitors with a few pages each, in time order per visitor.
fn generate(cli: &Cli, tenant_id: i64, site_id: i64) -> Vec<Event> {
    const AGENTS: [&str; 5] = [
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.3 Safari/605.1.15",
        "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Mobile Safari/537.36",
        "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    ];
    const REFERRERS: [&str; 4] = [
        "",
        "https://www.google.com/",
        "https://l.facebook.com/",
        "https://news.example.org/article",
    ];
    let mut rng = StdRng::seed_from_u64(7);
    let now = chrono::Utc::now().timestamp_micros();
    let start = now - cli.span_secs * 1_000_000;
    let step = (cli.span_secs * 1_000_000) as f64 / cli.events.max(1) as f64;
    (0..cli.events)
        .map(|i| {
            let v = rng.random_range(0..cli.visitors);
            // Events arrive in time order, as a live stream's do.
            let at = start + (i as f64 * step) as i64;
            let visitor = format!("anon-{v:08}");
            let page = rng.random_range(0..200);
            let campaign = if v % 7 == 0 {
                "?utm_source=newsletter&utm_medium=email&utm_campaign=spring"
            } else {
                ""
            };
            let track = i % 5 == 4;
            let properties: &[u8] = if track && i % 25 == 24 {
                br#"{"revenue": 42.5, "currency": "EUR", "products": [{"sku": "a1", "price": 42.5}]}"#
            } else {
                br#"{"path": "/", "title": "Shop"}"#
            };
            Event {
                message_id: format!("bench-{i}"),
                tenant_id,
                site_id,
                r#type: if track { EventType::Track } else { EventType::Page }.into(),
                name: if track { "Added To Cart".into() } else { String::new() },
                anonymous_id: visitor.clone(),
                visitor_id: visitor,
                timestamp_us: at,
                received_at_us: now,
                user_agent: AGENTS[v % AGENTS.len()].into(),
                page_url: format!("https://www.shop.example.com/products/{page}{campaign}"),
                page_referrer: REFERRERS[v % REFERRERS.len()].into(),
                page_title: "Product".into(),
                context_json: br#"{"library":{"name":"analytics.js","version":"5.2.0"},"locale":"en-US"}"#.to_vec().into(),
                properties_json: properties.to_vec().into(),
                ..Event::default()
            }
        })
        .collect()
}

fn batches(events: &[Event], cli: &Cli) -> Vec<EventBatch> {
    let mut by_partition: HashMap<u32, Vec<Event>> = HashMap::new();
    for e in events {
        by_partition
            .entry(partition_for(e.tenant_id, &e.visitor_id, cli.partitions))
            .or_default()
            .push(e.clone());
    }
    let mut out = Vec::new();
    for (partition, events) in by_partition {
        for chunk in events.chunks(cli.batch_events) {
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

async fn fill(
    publisher: &RabbitPublisher,
    payloads: &[(EventBatch, Vec<u8>)],
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(600);
    for chunk in payloads.chunks(64) {
        let sends = chunk.iter().map(|(batch, payload)| {
            let message = Message {
                route: Route::Partition(batch.partition),
                id: uuid::Uuid::now_v7().to_string(),
                kind: "sightline.events.v1.EventBatch",
                payload: payload.clone().into(),
                traceparent: None,
            };
            async move { publisher.publish(&message, deadline).await }
        });
        for result in join_all(sends).await {
            result.context("filling the queues")?;
        }
    }
    Ok(())
}

/// Re-ids the batches so the service sees new batches in each phase.
fn fresh_ids(batches: &mut [(EventBatch, Vec<u8>)]) {
    for (batch, payload) in batches.iter_mut() {
        batch.batch_id = uuid::Uuid::now_v7().to_string();
        *payload = batch.encode_to_vec();
    }
}

async fn baseline(cli: &Cli, broker: &BrokerConfig, total: usize) -> anyhow::Result<()> {
    let topology = broker.topology();
    let connection = connect(&cli.amqp, "stream-load-baseline").await?;
    let mut tasks = Vec::new();
    let remaining = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(total));
    for p in 0..cli.partitions {
        let queue = topology.partition_queue(&cli.group, p);
        let mut sub = consume(
            &connection,
            &queue,
            "baseline",
            1000,
            &topology.dead_letter_exchange(),
        )
        .await?;
        let remaining = remaining.clone();
        tasks.push(tokio::spawn(async move {
            while remaining.load(std::sync::atomic::Ordering::Relaxed) > 0 {
                let Ok(Some(Ok(d))) =
                    tokio::time::timeout(Duration::from_millis(500), sub.next()).await
                else {
                    continue;
                };
                let batch = EventBatch::decode(d.payload.as_slice()).unwrap_or_default();
                remaining.fetch_sub(batch.events.len(), std::sync::atomic::Ordering::Relaxed);
                let _ = d.ack().await;
            }
        }));
    }
    join_all(tasks).await;
    Ok(())
}

async fn flushed(admin: std::net::SocketAddr, group: &str) -> usize {
    let Ok(body) = reqwest_lite(admin).await else {
        return 0;
    };
    let prefix = format!("sightline_stream_events_flushed_total{{group=\"{group}\"}} ");
    body.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as usize)
}

async fn reqwest_lite(addr: std::net::SocketAddr) -> std::io::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
        .await?;
    let mut out = String::new();
    s.read_to_string(&mut out).await?;
    Ok(out)
}

fn measure(name: &str, events: usize, started: Instant, snapshot: &Snapshot) -> Phase {
    let seconds = started.elapsed().as_secs_f64();
    Phase {
        name: name.into(),
        events,
        seconds,
        events_per_sec: events as f64 / seconds,
        cpu: snapshot.report(&RssPeaks::default()),
    }
}

async fn drop_database(server: &str, name: &str) {
    use sqlx::Connection as _;
    if let Ok(mut c) = sqlx::PgConnection::connect(&format!("{server}/postgres")).await {
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
        )))
        .execute(&mut c)
        .await;
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let namespace = format!("bench_{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let database_url = format!("{}/{namespace}", cli.postgres);
    let lake_dir = tempfile::tempdir()?;
    let lake = if cli.lake.is_empty() {
        lake_dir.path().to_string_lossy().into_owned()
    } else {
        cli.lake.clone()
    };
    let env: HashMap<String, String> = [
        ("SIGHTLINE__DATABASE__URL", database_url.clone()),
        ("SIGHTLINE__BROKER__URL", cli.amqp.clone()),
        ("SIGHTLINE__BROKER__NAMESPACE", namespace.clone()),
        ("SIGHTLINE__BROKER__PARTITIONS", cli.partitions.to_string()),
        ("SIGHTLINE__BROKER__CONSUMER_GROUPS", cli.group.clone()),
        ("SIGHTLINE__STREAM__GROUPS", cli.group.clone()),
        ("SIGHTLINE__STREAM__ADMIN_LISTEN", "127.0.0.1:0".into()),
        ("SIGHTLINE__LAKE__LOCAL_PATH", lake),
        ("SIGHTLINE__TELEMETRY__LOG_LEVEL", "warn".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .chain(cli.settings.iter().filter_map(|s| {
        s.split_once('=')
            .map(|(k, v)| (k.to_string(), v.to_string()))
    }))
    .collect();
    let config = stream_processor::Config::load(&stream_processor::Config::loader().env_map(env))?;
    let store = sightline_db::PgStore::migrate(&config.database).await?;
    let tenant = sightline_db::Tenants::create_tenant(&store, "bench", "Bench").await?;
    let site = sightline_db::Sites::create_site(
        &store,
        sightline_db::NewSite {
            tenant_id: tenant.id,
            domain: "shop.example.com".into(),
            time_zone: "UTC".into(),
            currency: "EUR".into(),
        },
    )
    .await?;

    eprintln!("generating {} events", cli.events);
    let events = generate(&cli, tenant.id, site.id);
    let mut payloads: Vec<(EventBatch, Vec<u8>)> = batches(&events, &cli)
        .into_iter()
        .map(|b| {
            let p = b.encode_to_vec();
            (b, p)
        })
        .collect();
    drop(events);
    let publisher = RabbitPublisher::start(
        &config.broker,
        "stream-load",
        HealthRegistry::new().register("broker"),
    );
    let mut phases = Vec::new();

    if !cli.no_baseline {
        eprintln!("baseline: filling {} messages", payloads.len());
        fill(&publisher, &payloads).await?;
        let snapshot = Snapshot::take(&[], None);
        let started = Instant::now();
        baseline(&cli, &config.broker, cli.events).await?;
        phases.push(measure(
            "baseline: lapin consume + decode + ack",
            cli.events,
            started,
            &snapshot,
        ));
        eprintln!(
            "{:.0} events/s",
            phases.last().map_or(0.0, |p: &Phase| p.events_per_sec)
        );
    }

    fresh_ids(&mut payloads);
    eprintln!("service: filling {} messages", payloads.len());
    fill(&publisher, &payloads).await?;
    let admin = TcpListener::bind("127.0.0.1:0")?;
    let admin_addr = admin.local_addr()?;
    let shutdown = Shutdown::new();
    let snapshot = Snapshot::take(&[], None);
    let started = Instant::now();
    eprintln!("service: started");
    let service = tokio::spawn(stream_processor::run(
        config.clone(),
        stream_processor::Listeners { admin },
        shutdown.clone(),
    ));
    while flushed(admin_addr, &cli.group).await < cli.events {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    phases.push(measure(
        &format!("stream processor, {} group", cli.group),
        cli.events,
        started,
        &snapshot,
    ));
    eprintln!(
        "{:.0} events/s",
        phases.last().map_or(0.0, |p: &Phase| p.events_per_sec)
    );
    shutdown.trigger();
    service.await??;
    publisher.close().await;

    println!("{}", serde_json::to_string_pretty(&phases)?);
    let connection = connect(&cli.amqp, "stream-load-cleanup").await?;
    sightline_broker::rabbitmq::delete_topology(&connection, &config.broker.topology()).await;
    store.pool().close().await;
    drop_database(&cli.postgres, &namespace).await;
    Ok(())
}
