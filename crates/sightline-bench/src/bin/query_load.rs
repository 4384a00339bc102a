//! `query-load`: the query service benchmark.
//!
//! Seeds a year of rollups for one tenant's site as the two layers leave them: every past day
//! closed by the batch layer (`day` rows per dimension value, `hour` rows for totals and
//! sources, a closure each), today open with speed `hour` rows from 8 partitions (as many hours
//! as have begun, or `--open-hours`: the speed rows of today are most of what a 30-day answer
//! reads, so say how many when comparing runs). Then boots
//! the query service in this process and runs closed-loop gRPC clients for a while, each
//! alternating a 30-day daily time series (visitors, pageviews, visits, bounce rate) and a
//! top-10 page breakdown over the same days. Reports p50/p99 per kind, queries/s, and the
//! cores this process (service and clients) and PostgreSQL used. `--flush-every-ms` raises the
//! site's rollup version meanwhile, as a live stream's flushes do, so kept answers go stale.

use std::{
    collections::HashMap,
    net::TcpListener,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use clap::Parser;
use hdrhistogram::Histogram;
use parking_lot::Mutex;
use serde::Serialize;
use sightline_bench::{
    Latency, latency_histogram,
    procstat::{CpuReport, RssPeaks, Snapshot, parse_watch},
};
use sightline_db::{DatabaseConfig, NewSite, PgStore, ReadScope, ReadTokens, Sites, Tenants};
use sightline_event::VisitorSketch;
use sightline_kit::{Shutdown, config::Secret};
use sightline_proto::query::v1::{self as pb, query_client::QueryClient};
use tonic::transport::Channel;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    about = "Query service benchmark: a year of rollups, concurrent time series and breakdowns"
)]
struct Cli {
    /// Days of rollups (closed, before today).
    #[arg(long, default_value_t = 365)]
    days: i64,
    /// Distinct pages per day.
    #[arg(long, default_value_t = 100)]
    pages: usize,
    /// Hours of today with speed rows; by default, and at most, the hours begun so far (UTC).
    /// Rows of hours still to come would be read as the live part of every answer, which no
    /// real speed layer holds.
    #[arg(long)]
    open_hours: Option<i64>,
    /// Concurrent clients (each waits for its answer before the next call).
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Open loop: queries a second in all, each sent at its scheduled time (the clients share
    /// the schedule round-robin) and its latency counted from that time, so a stall counts for
    /// every query it delays (coordinated omission accounted). Without it, a closed loop: each
    /// client calls again as soon as it has its answer.
    #[arg(long)]
    rate: Option<f64>,
    /// HTTP/2 connections the clients share.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Seconds of load after a warm-up of 2 s.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// PostgreSQL server (a database is created per run and dropped at the end).
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432")]
    postgres: String,
    /// The service's answer cache, MiB (`query.answer_cache_mib`); 0 computes every answer
    /// from the rollups. By default the service's own default.
    #[arg(long)]
    answer_cache_mib: Option<u64>,
    /// The service's closed-day sums, MiB (`query.closed_sums_cache_mib`); 0 reads every
    /// closed day's rows. By default the service's own default.
    #[arg(long)]
    closed_sums_cache_mib: Option<u64>,
    /// `query.previous_answer_max_age_ms`: while one call computes a changed answer, the
    /// others get the previous one if it is this recent; 0 makes them wait. By default the
    /// service's own default.
    #[arg(long)]
    previous_answer_max_age_ms: Option<u64>,
    /// Raise the site's rollup version this often, ms, as the stream processor's flushes do
    /// under live traffic (no rows change): kept answers go stale at that pace. 0: never.
    #[arg(long, default_value_t = 0)]
    flush_every_ms: u64,
    /// PostgreSQL's postmaster, to count its processes' CPU (`postgres=PID`).
    #[arg(long)]
    watch: Vec<String>,
}

#[derive(Debug, Serialize)]
struct Report {
    open_hours: i64,
    answer_cache_mib: Option<u64>,
    closed_sums_cache_mib: Option<u64>,
    previous_answer_max_age_ms: Option<u64>,
    flush_every_ms: u64,
    /// The open loop's scheduled rate; `None` for a closed loop.
    rate: Option<f64>,
    queries_per_sec: f64,
    timeseries: Latency,
    breakdown: Latency,
    errors: u64,
    cpu: CpuReport,
}

const DAY_US: i64 = 86_400_000_000;
const HOUR_US: i64 = 3_600_000_000;

fn sketch(prefix: &str, n: usize) -> Vec<u8> {
    let mut s = VisitorSketch::new();
    for i in 0..n {
        s.insert(&format!("{prefix}-{i}"));
    }
    s.to_bytes()
}

/// Hours of today with speed rows: `--open-hours`, else those begun so far.
fn open_hours(cli: &Cli) -> anyhow::Result<i64> {
    let now = chrono::Utc::now().timestamp_micros();
    let begun = (now % DAY_US) / HOUR_US + 1;
    match cli.open_hours {
        None => Ok(begun),
        Some(hours) if (0..=begun).contains(&hours) => Ok(hours),
        Some(hours) => anyhow::bail!(
            "--open-hours {hours}: {begun} hours of today (UTC) have begun; rows of hours to \
             come are not what a speed layer holds"
        ),
    }
}

/// A year of batch rows and closures, today's speed rows, and the partitions' watermarks.
async fn seed(
    store: &PgStore,
    tenant: i64,
    site: i64,
    cli: &Cli,
    hours: i64,
) -> anyhow::Result<()> {
    let pool = store.pool();
    let today = chrono::Utc::now().timestamp_micros() / DAY_US * DAY_US;
    let first = today - cli.days * DAY_US;
    let at = |us: i64| chrono::DateTime::from_timestamp_micros(us).unwrap_or_default();
    let sources = [
        "Google",
        "Direct",
        "Bing",
        "Facebook",
        "Twitter",
        "news.example.org",
        "Newsletter",
        "LinkedIn",
        "Reddit",
        "DuckDuckGo",
    ];
    let mut dims = vec![(String::new(), String::new(), sketch("v", 2_000))];
    for (i, s) in sources.iter().enumerate() {
        dims.push((
            "source".into(),
            s.to_string(),
            sketch(&format!("s{i}"), 300),
        ));
    }
    for p in 0..cli.pages {
        dims.push((
            "page".into(),
            format!("/products/{p}"),
            sketch(&format!("p{p}"), 20 + p % 80),
        ));
    }
    let (d, v, s): (Vec<String>, Vec<String>, Vec<Vec<u8>>) = dims.iter().cloned().fold(
        (Vec::new(), Vec::new(), Vec::new()),
        |(mut d, mut v, mut s), (a, b, c)| {
            d.push(a);
            v.push(b);
            s.push(c);
            (d, v, s)
        },
    );
    let insert = "INSERT INTO rollups (tenant_id, site_id, granularity, bucket, dimension, value, \
        layer, shard, events, pageviews, visits, bounces, duration_us, revenue_micros, visitors, revision) \
        SELECT $1, $2, $3, b, x.d, x.v, $4, sh, 1000, 800, 300, 120, 27000000000, 5000000, x.s, $5 \
        FROM generate_series($6::timestamptz, $7::timestamptz, $8::interval) b, \
             unnest($9::text[], $10::text[], $11::bytea[]) AS x(d, v, s), \
             generate_series(0, $12) sh";
    let run = |granularity: &'static str,
               layer: &'static str,
               from: i64,
               to: i64,
               step: &'static str,
               dims: (Vec<String>, Vec<String>, Vec<Vec<u8>>),
               shards: i32,
               revision: i32| {
        let pool = pool.clone();
        async move {
            sqlx::query(insert)
                .bind(tenant)
                .bind(site)
                .bind(granularity)
                .bind(layer)
                .bind(revision)
                .bind(at(from))
                .bind(at(to))
                .bind(step)
                .bind(dims.0)
                .bind(dims.1)
                .bind(dims.2)
                .bind(shards - 1)
                .execute(&pool)
                .await
        }
    };
    eprintln!("seeding {} days x {} rows", cli.days, dims.len());
    run(
        "day",
        "batch",
        first,
        today - DAY_US,
        "1 day",
        (d.clone(), v.clone(), s.clone()),
        1,
        1,
    )
    .await?;
    // Hour rows of totals and sources only: they make the table as deep as a real one, and no
    // benchmark query reads closed hours.
    let k = 1 + sources.len();
    let hourly = (d[..k].to_vec(), v[..k].to_vec(), s[..k].to_vec());
    run(
        "hour",
        "batch",
        first,
        today - HOUR_US,
        "1 hour",
        hourly,
        1,
        1,
    )
    .await?;
    // Today so far: speed hour rows of every value from 8 partitions.
    if hours > 0 {
        let last = today + (hours - 1) * HOUR_US;
        run("hour", "speed", today, last, "1 hour", (d, v, s), 8, 0).await?;
    }
    sqlx::query(
        "INSERT INTO rollup_closures (tenant_id, site_id, day, starts_at, ends_at, revision) \
         SELECT $1, $2, b::date, b, b + interval '1 day', 1 \
         FROM generate_series($3::timestamptz, $4::timestamptz, interval '1 day') b",
    )
    .bind(tenant)
    .bind(site)
    .bind(at(first))
    .bind(at(today - DAY_US))
    .execute(pool)
    .await?;
    sqlx::query(
        "INSERT INTO rollup_watermarks (shard, flushed_at, received_until, event_until) \
         SELECT sh, now(), now(), now() FROM generate_series(0, 7) sh",
    )
    .execute(pool)
    .await?;
    sqlx::query("ANALYZE rollups").execute(pool).await?;
    Ok(())
}

fn authed<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Ok(value) = format!("Bearer {token}").parse() {
        request.metadata_mut().insert("authorization", value);
    }
    request
}

#[derive(Default)]
struct Tally {
    timeseries: Option<Histogram<u64>>,
    breakdown: Option<Histogram<u64>>,
    errors: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let watched = cli
        .watch
        .iter()
        .map(|w| parse_watch(w).map_err(anyhow::Error::msg))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let name = format!(
        "bench_query_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let url = format!("{}/{name}", cli.postgres);
    let database = DatabaseConfig {
        url: Secret::new(url.clone()),
        max_connections: 16,
        connect_timeout_ms: 5000,
    };
    let store = PgStore::migrate(&database)
        .await
        .context("creating the database")?;
    let tenant = store.create_tenant("bench", "Bench").await?.id;
    let site = store
        .create_site(NewSite {
            tenant_id: tenant,
            domain: "bench.example.com".into(),
            time_zone: "UTC".into(),
            currency: "EUR".into(),
        })
        .await?
        .id;
    let (token, _) = store
        .issue_read_token(
            ReadScope::Tenant {
                tenant_id: tenant,
                site_ids: None,
            },
            "bench",
        )
        .await?;
    let hours = open_hours(&cli)?;
    seed(&store, tenant, site, &cli, hours).await?;

    let mut env: HashMap<String, String> = [
        ("SIGHTLINE__DATABASE__URL", url.clone()),
        ("SIGHTLINE__DATABASE__MAX_CONNECTIONS", "16".into()),
        ("SIGHTLINE__QUERY__RATE_LIMIT_PER_SEC", "1000000".into()),
        ("SIGHTLINE__QUERY__RATE_LIMIT_BURST", "1000000".into()),
        ("SIGHTLINE__TELEMETRY__LOG_LEVEL", "warn".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    if let Some(mib) = cli.answer_cache_mib {
        env.insert("SIGHTLINE__QUERY__ANSWER_CACHE_MIB".into(), mib.to_string());
    }
    if let Some(ms) = cli.previous_answer_max_age_ms {
        env.insert(
            "SIGHTLINE__QUERY__PREVIOUS_ANSWER_MAX_AGE_MS".into(),
            ms.to_string(),
        );
    }
    if let Some(mib) = cli.closed_sums_cache_mib {
        env.insert(
            "SIGHTLINE__QUERY__CLOSED_SUMS_CACHE_MIB".into(),
            mib.to_string(),
        );
    }
    let config = query::Config::load(&query::Config::loader().env_map(env))?;
    let grpc = TcpListener::bind("127.0.0.1:0")?;
    let admin = TcpListener::bind("127.0.0.1:0")?;
    let addr = grpc.local_addr()?;
    let shutdown = Shutdown::new();
    let service = tokio::spawn(query::run(
        config,
        query::Listeners { grpc, admin },
        shutdown.clone(),
    ));
    let mut channels = Vec::new();
    for _ in 0..cli.connections.max(1) {
        let mut attempts = 0;
        let channel = loop {
            match Channel::from_shared(format!("http://{addr}"))?
                .connect()
                .await
            {
                Ok(c) => break c,
                Err(e) if attempts > 100 => return Err(e.into()),
                Err(_) => {
                    attempts += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        };
        channels.push(channel);
    }

    let today = chrono::Utc::now().date_naive();
    let range = Some(pb::TimeRange {
        from_date: (today - chrono::Duration::days(29)).to_string(),
        to_date: today.to_string(),
        ..Default::default()
    });
    let series = pb::TimeseriesRequest {
        site_id: site,
        metrics: ["visitors", "pageviews", "visits", "bounce_rate"]
            .map(String::from)
            .to_vec(),
        interval: "day".into(),
        range: range.clone(),
        ..Default::default()
    };
    let top = pb::BreakdownRequest {
        site_id: site,
        dimension: "page".into(),
        metrics: ["visitors", "pageviews"].map(String::from).to_vec(),
        range,
        page_size: 10,
        ..Default::default()
    };
    // Correctness first: the answers the load repeats.
    let mut probe = QueryClient::new(channels[0].clone());
    let answer = probe
        .get_timeseries(authed(series.clone(), &token))
        .await?
        .into_inner();
    anyhow::ensure!(answer.buckets.len() == 30, "30 daily buckets");
    let answer = probe
        .get_breakdown(authed(top.clone(), &token))
        .await?
        .into_inner();
    anyhow::ensure!(answer.rows.len() == 10, "10 rows");

    let tally = Arc::new(Mutex::new(Tally::default()));
    let measuring = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    if cli.flush_every_ms > 0 {
        let (pool, stop) = (store.pool().clone(), stop.clone());
        let every = Duration::from_millis(cli.flush_every_ms);
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                tick.tick().await;
                let changed = async {
                    let mut conn = pool.acquire().await?;
                    // A live flush writes the current minute.
                    let change = sightline_db::rollup::SiteChange {
                        tenant_id: tenant,
                        site_id: site,
                        earliest_bucket_us: chrono::Utc::now().timestamp_micros(),
                    };
                    sightline_db::rollup::record_change(&mut conn, &[change], 0).await
                };
                if let Err(error) = changed.await {
                    eprintln!("raising the site's version failed: {error}");
                }
            }
        }));
    }
    let schedule_start = Instant::now();
    let (clients, rate) = (cli.concurrency, cli.rate);
    for c in 0..cli.concurrency {
        let mut client = QueryClient::new(channels[c % channels.len()].clone());
        let (series, top, token) = (series.clone(), top.clone(), token.clone());
        let (tally, measuring, stop) = (tally.clone(), measuring.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut ts = latency_histogram();
            let mut bd = latency_histogram();
            let mut errors = 0;
            // This client's turns: k-th turn is query c + k·clients of the whole schedule.
            let mut k = 0usize;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let started = match rate {
                    Some(rate) => {
                        let nth = c + k * clients;
                        let at = schedule_start + Duration::from_secs_f64(nth as f64 / rate);
                        tokio::time::sleep_until(at.into()).await;
                        at
                    }
                    None => Instant::now(),
                };
                let is_series = (c + k).is_multiple_of(2);
                let ok = if is_series {
                    client
                        .get_timeseries(authed(series.clone(), &token))
                        .await
                        .is_ok()
                } else {
                    client
                        .get_breakdown(authed(top.clone(), &token))
                        .await
                        .is_ok()
                };
                k += 1;
                if !measuring.load(std::sync::atomic::Ordering::Relaxed) {
                    continue;
                }
                let us = started.elapsed().as_micros().min(u128::from(u64::MAX)) as u64;
                if !ok {
                    errors += 1;
                } else if is_series {
                    let _ = ts.record(us.max(1));
                } else {
                    let _ = bd.record(us.max(1));
                }
            }
            let mut t = tally.lock();
            t.errors += errors;
            match &mut t.timeseries {
                Some(h) => {
                    let _ = h.add(&ts);
                }
                None => t.timeseries = Some(ts),
            }
            match &mut t.breakdown {
                Some(h) => {
                    let _ = h.add(&bd);
                }
                None => t.breakdown = Some(bd),
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pids: Vec<u32> = watched.iter().map(|w| w.pid).collect();
    let snapshot = Snapshot::take(&watched, None);
    measuring.store(true, std::sync::atomic::Ordering::Relaxed);
    let started = Instant::now();
    let mut peaks = RssPeaks::default();
    while started.elapsed() < Duration::from_secs(cli.seconds) {
        peaks.sample(&pids);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    measuring.store(false, std::sync::atomic::Ordering::Relaxed);
    let seconds = started.elapsed().as_secs_f64();
    let cpu = snapshot.report(&peaks);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in tasks {
        t.await?;
    }
    let t = std::mem::take(&mut *tally.lock());
    let empty = latency_histogram();
    let ts = t.timeseries.as_ref().unwrap_or(&empty);
    let bd = t.breakdown.as_ref().unwrap_or(&empty);
    let report = Report {
        open_hours: hours,
        answer_cache_mib: cli.answer_cache_mib,
        closed_sums_cache_mib: cli.closed_sums_cache_mib,
        previous_answer_max_age_ms: cli.previous_answer_max_age_ms,
        flush_every_ms: cli.flush_every_ms,
        rate: cli.rate,
        queries_per_sec: (ts.len() + bd.len()) as f64 / seconds,
        timeseries: Latency::of(ts),
        breakdown: Latency::of(bd),
        errors: t.errors,
        cpu,
    };
    println!("{}", serde_json::to_string_pretty(&report)?);
    shutdown.trigger();
    service.await??;
    store.pool().close().await;
    sightline_testkit::drop_database(&url).await;
    Ok(())
}
