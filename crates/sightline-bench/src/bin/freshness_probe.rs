//! `freshness-probe`: how long an event takes from ingest's 2xx to being counted in the
//! rollups, end to end through the broker and the stream processor.
//!
//! Sends one `track` event a request, open loop at `--rate` a second, while other load runs
//! beside it (`scripts/bench/freshness` runs `ingest-load` at half the pipeline's maximum).
//! Probes are grouped in cohorts by their scheduled send time (`--cohort-ms`); every probe of a
//! cohort carries the event name `fresh-<run>-<cohort>`, so the rollups' `event` breakdown
//! counts each cohort apart. PostgreSQL is polled every `--poll-ms`; a cohort is visible once
//! its count there reaches the number of its probes that got a 2xx. A probe's freshness is
//! taken as its cohort's visible time minus its own 2xx: an upper bound (every probe of the
//! cohort was counted by then; the poll adds up to `--poll-ms`). A cohort's probes belong to
//! different visitors and so to different partitions, whose flushes are spread over the flush
//! interval: the wider the cohort, the nearer its bound comes to the slowest partition's. A
//! cohort narrower than the probes' spacing (`--cohort-ms 10` at 100 a second) holds one probe,
//! and its bound is that probe's own freshness, to the poll.
//!
//! Prints a JSON report on stdout and a summary on stderr.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use base64::Engine as _;
use clap::Parser;
use hdrhistogram::Histogram;
use parking_lot::Mutex;
use serde::Serialize;
use sightline_bench::{Latency, latency_histogram};
use sqlx::PgPool;

/// A browser's user agent: a crawler's events are counted apart, not under `event`.
const USER_AGENT: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0";

#[derive(Debug, Parser)]
#[command(about = "End-to-end freshness: ingest's 2xx to the event counted in the rollups")]
struct Args {
    /// Ingest's HTTP base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    ingest: String,
    /// Write key of the site the rollups are read for.
    #[arg(long, env = "BENCH_WRITE_KEY")]
    write_key: String,
    /// The pipeline's database.
    #[arg(long)]
    database: String,
    /// The site's tenant id.
    #[arg(long)]
    tenant_id: i64,
    /// The site id.
    #[arg(long)]
    site_id: i64,
    /// Probes a second.
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// Seconds of probing.
    #[arg(long, default_value_t = 30.0)]
    duration: f64,
    /// Width of a cohort of probes, milliseconds of scheduled send time.
    #[arg(long, default_value_t = 100)]
    cohort_ms: u64,
    /// How often the rollups are read, milliseconds.
    #[arg(long, default_value_t = 20)]
    poll_ms: u64,
    /// Seconds to wait, after the last probe, for every cohort to become visible.
    #[arg(long, default_value_t = 60.0)]
    drain: f64,
}

/// One cohort's probes.
#[derive(Debug, Default)]
struct Cohort {
    /// Probes not answered yet.
    pending: u32,
    /// When each 2xx arrived.
    acked: Vec<Instant>,
    /// Probes answered with something else, or not at all.
    failed: u32,
    /// When the rollups first counted every acknowledged probe.
    visible: Option<Instant>,
}

#[derive(Debug, Serialize)]
struct Report {
    run: String,
    rate: f64,
    seconds: f64,
    cohort_ms: u64,
    poll_ms: u64,
    probes_acked: u64,
    probes_failed: u64,
    cohorts: usize,
    cohorts_never_visible: usize,
    /// Upper bounds of each acknowledged probe's freshness, microseconds.
    freshness: Latency,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.rate > 0.0, "--rate must be positive");
    anyhow::ensure!(args.cohort_ms > 0, "--cohort-ms must be positive");
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?
        .block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let run = format!("{:08x}", rand::random::<u32>());
    let pool = PgPool::connect(&args.database)
        .await
        .context("connecting to the pipeline's database")?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()?;
    let authorization = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{}:", args.write_key))
    );
    let url = format!("{}/v1/track", args.ingest.trim_end_matches('/'));
    let cohorts: Arc<Mutex<HashMap<u64, Cohort>>> = Arc::default();

    let total = (args.rate * args.duration).round() as u64;
    let start = Instant::now() + Duration::from_millis(20);
    let poller = tokio::spawn(poll(
        pool.clone(),
        args.tenant_id,
        args.site_id,
        run.clone(),
        cohorts.clone(),
        Duration::from_millis(args.poll_ms),
    ));
    let mut senders = Vec::with_capacity(total as usize);
    for i in 0..total {
        let at = start + Duration::from_secs_f64(i as f64 / args.rate);
        let cohort = at.duration_since(start).as_millis() as u64 / args.cohort_ms;
        cohorts.lock().entry(cohort).or_default().pending += 1;
        tokio::time::sleep_until(at.into()).await;
        let body = serde_json::json!({
            "type": "track",
            "event": format!("fresh-{run}-{cohort}"),
            "anonymousId": format!("probe-{run}-{i}"),
            "properties": { "probe": i },
            "context": { "userAgent": USER_AGENT },
        })
        .to_string();
        let request = http
            .post(&url)
            .header("authorization", &authorization)
            .header("content-type", "application/json")
            .header("user-agent", USER_AGENT)
            .body(body);
        let cohorts = cohorts.clone();
        senders.push(tokio::spawn(async move {
            let ok = matches!(request.send().await, Ok(r) if r.status().is_success());
            let now = Instant::now();
            let mut cohorts = cohorts.lock();
            let c = cohorts.entry(cohort).or_default();
            c.pending -= 1;
            if ok {
                c.acked.push(now);
            } else {
                c.failed += 1;
            }
        }));
    }
    for sender in senders {
        sender.await?;
    }
    let deadline = Instant::now() + Duration::from_secs_f64(args.drain);
    while Instant::now() < deadline && !all_visible(&cohorts.lock()) {
        tokio::time::sleep(Duration::from_millis(args.poll_ms)).await;
    }
    poller.abort();
    pool.close().await;

    let report = summarise(&run, &args, &cohorts.lock());
    let f = &report.freshness;
    eprintln!(
        "{} probes acknowledged ({} failed) in {} cohorts, {} never visible; freshness (upper \
         bound) p50 {:.0} ms, p90 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        report.probes_acked,
        report.probes_failed,
        report.cohorts,
        report.cohorts_never_visible,
        f.p50_us as f64 / 1e3,
        f.p90_us as f64 / 1e3,
        f.p99_us as f64 / 1e3,
        f.max_us as f64 / 1e3,
    );
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

fn all_visible(cohorts: &HashMap<u64, Cohort>) -> bool {
    cohorts
        .values()
        .all(|c| c.visible.is_some() || c.acked.is_empty())
}

/// Reads the counts of the cohorts not yet visible from the rollups until aborted, marking
/// cohorts visible. Only those names are asked for, so a poll stays as cheap at the end of a
/// run as at its start, and the probe takes little from the pipeline it measures.
async fn poll(
    pool: PgPool,
    tenant_id: i64,
    site_id: i64,
    run: String,
    cohorts: Arc<Mutex<HashMap<u64, Cohort>>>,
    every: Duration,
) {
    let prefix = format!("fresh-{run}-");
    loop {
        let waiting: Vec<String> = cohorts
            .lock()
            .iter()
            .filter(|(_, c)| c.visible.is_none())
            .map(|(id, _)| format!("{prefix}{id}"))
            .collect();
        let counts: Vec<(String, i64)> = match sqlx::query_as(
            "SELECT value, sum(events)::bigint FROM rollups \
             WHERE tenant_id = $1 AND site_id = $2 AND granularity = 'minute' \
               AND dimension = 'event' AND value = ANY($3) AND layer = 'speed' \
             GROUP BY value",
        )
        .bind(tenant_id)
        .bind(site_id)
        .bind(&waiting)
        .fetch_all(&pool)
        .await
        {
            Ok(rows) => rows,
            Err(e) => {
                eprintln!("reading the rollups: {e}");
                Vec::new()
            }
        };
        mark_visible(&mut cohorts.lock(), prefix.len(), counts);
        tokio::time::sleep(every).await;
    }
}

/// Marks visible the finished cohorts whose rollup count covers every acknowledged probe.
fn mark_visible(cohorts: &mut HashMap<u64, Cohort>, prefix_len: usize, counts: Vec<(String, i64)>) {
    let now = Instant::now();
    for (value, count) in counts {
        let Ok(id) = value[prefix_len..].parse::<u64>() else {
            continue;
        };
        if let Some(c) = cohorts.get_mut(&id)
            && c.visible.is_none()
            && c.pending == 0
            && !c.acked.is_empty()
            && count >= c.acked.len() as i64
        {
            c.visible = Some(now);
        }
    }
}

fn summarise(run: &str, args: &Args, cohorts: &HashMap<u64, Cohort>) -> Report {
    let mut histogram: Histogram<u64> = latency_histogram();
    let (mut acked, mut failed, mut never) = (0u64, 0u64, 0usize);
    for c in cohorts.values() {
        acked += c.acked.len() as u64;
        failed += u64::from(c.failed);
        match c.visible {
            Some(visible) => {
                for ack in &c.acked {
                    let us = visible.saturating_duration_since(*ack).as_micros() as u64;
                    let _ = histogram.record(us.max(1));
                }
            }
            None if !c.acked.is_empty() => never += 1,
            None => {}
        }
    }
    Report {
        run: run.to_string(),
        rate: args.rate,
        seconds: args.duration,
        cohort_ms: args.cohort_ms,
        poll_ms: args.poll_ms,
        probes_acked: acked,
        probes_failed: failed,
        cohorts: cohorts.len(),
        cohorts_never_visible: never,
        freshness: Latency::of(&histogram),
    }
}
