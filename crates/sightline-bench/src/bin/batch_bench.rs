//! `batch-bench`: the batch enricher's `reprocess` of one day against the same job in PySpark
//! (`local[2]`) on the same raw Parquet files.
//!
//! `batch-bench run --events N` creates a database with a tenant and three sites (Paris EUR,
//! New York USD, Kolkata INR), writes N raw events over the window the tenant-day reads (the
//! sites' local days and the session margins) into a local lake, then, in the same run and one
//! after the other, times `batch-bench reprocess` (the real job, in a child process) and
//! `scripts/bench/batch_pyspark.py`, sampling the resident memory of each process tree. Last,
//! it checks with DataFusion that both wrote the same daily metrics, visits and events, and
//! prints the figures as JSON.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;
use batch_enricher::{
    days::SiteDay,
    jobs::{self, ReprocessJob, Shard},
    metrics::BatchMetrics,
};
use chrono::NaiveDate;
use clap::{Parser, Subcommand};
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use serde::Serialize;
use sightline_bench::{
    batch_day::{DaySpec, GenSite, write_day},
    procstat::tree_rss_kib,
};
use sightline_db::{DatabaseConfig, NewSite, PgStore, Sites as _, Tenants as _};
use sightline_kit::config::Secret;
use sightline_lake::LocalStore;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The batch's default `session_margin_hours`, read on both sides of the day.
const MARGIN_US: i64 = 6 * 3_600_000_000;
const HOUR_US: i64 = 3_600_000_000;

#[derive(Debug, Parser)]
#[command(about = "The batch enricher's reprocess of a day against PySpark local[2]")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Generate a day, run both engines on it, compare their outputs.
    Run(RunArgs),
    /// The Rust side alone: `reprocess` of one tenant-day on a local lake (run by `run`).
    Reprocess(ReprocessArgs),
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Raw events in the window the day reads.
    #[arg(long, default_value_t = 1_000_000)]
    events: usize,
    /// Lake folder; a temporary one when empty.
    #[arg(long, default_value = "")]
    lake: String,
    /// PostgreSQL server (a database is created per run and dropped at the end).
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432")]
    postgres: String,
    /// Python with pyspark and ua-parser (`scripts/bench/batch` makes it).
    #[arg(long, default_value = "python3")]
    python: String,
    /// The PySpark job.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/bench/batch_pyspark.py"))]
    spark_job: PathBuf,
    /// Spark driver memory (the JVM heap of `local[2]`).
    #[arg(long, default_value = "8g")]
    spark_memory: String,
    /// Seed of the generated events.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Time the Rust job alone (how its cost grows with the day's size): no PySpark run, and
    /// so no speed-up and no comparison of outputs.
    #[arg(long)]
    rust_only: bool,
}

#[derive(Debug, clap::Args)]
struct ReprocessArgs {
    /// Lake folder.
    #[arg(long)]
    lake: PathBuf,
    /// The database with the tenant and its sites.
    #[arg(long)]
    database_url: String,
    /// Tenant id.
    #[arg(long)]
    tenant: i64,
    /// The local date.
    #[arg(long)]
    date: NaiveDate,
}

/// One engine's run.
#[derive(Debug, Serialize)]
struct Timed {
    wall_s: f64,
    peak_rss_mib: f64,
}

#[derive(Debug, Serialize)]
struct Report {
    events: u64,
    duplicates: u64,
    invalid: u64,
    objects: usize,
    raw_mib: f64,
    rust: Timed,
    /// The PySpark side; absent with `--rust-only`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pyspark: Option<PySpark>,
}

#[derive(Debug, Serialize)]
struct PySpark {
    #[serde(flatten)]
    timed: Timed,
    /// The job's own time, from its session's start.
    inside_s: f64,
    speedup: f64,
    compared: Vec<Compared>,
}

#[derive(Debug, Serialize)]
struct Compared {
    table: &'static str,
    rows: u64,
    identical: bool,
}

fn main() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match Cli::parse().command {
        Cmd::Run(args) => runtime.block_on(run(args)),
        Cmd::Reprocess(args) => runtime.block_on(reprocess(args)),
    }
}

async fn reprocess(args: ReprocessArgs) -> anyhow::Result<()> {
    // The job's own log (`RUST_LOG`, set by `run`): how long the spill and the chunks took.
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let env: HashMap<String, String> = [
        ("SIGHTLINE__DATABASE__URL", args.database_url),
        ("SIGHTLINE__LAKE__KIND", "local".into()),
        (
            "SIGHTLINE__LAKE__LOCAL_PATH",
            args.lake.display().to_string(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let config = batch_enricher::Config::load(&batch_enricher::Config::loader().env_map(env))?;
    let ctx = Arc::new(batch_enricher::Context::from_config(
        &config,
        BatchMetrics::default(),
    )?);
    let job = ReprocessJob {
        tenant: args.tenant.to_string(),
        from: args.date,
        to: args.date,
        dry_run: false,
        shard: Shard::default(),
    };
    let summary = jobs::reprocess(&ctx, job).await?;
    anyhow::ensure!(
        summary.succeeded(),
        "reprocess failed: {:?}",
        summary.failed
    );
    Ok(())
}

/// Runs `command` to its end; its wall time and the peak of its process tree's resident memory
/// (sampled every 50 ms).
fn timed(mut command: Command) -> anyhow::Result<Timed> {
    let started = Instant::now();
    let mut child = command.spawn().with_context(|| format!("{command:?}"))?;
    let peak = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, done, pid) = (peak.clone(), done.clone(), child.id());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                peak.fetch_max(tree_rss_kib(pid), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let status = child.wait()?;
    let wall_s = started.elapsed().as_secs_f64();
    done.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    anyhow::ensure!(status.success(), "{command:?}: {status}");
    Ok(Timed {
        wall_s,
        peak_rss_mib: peak.load(Ordering::Relaxed) as f64 / 1024.0,
    })
}

fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&e.path()),
            _ => e.metadata().map_or(0, |m| m.len()),
        })
        .sum()
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let temp = tempfile::tempdir()?;
    let dir = if args.lake.is_empty() {
        temp.path().to_path_buf()
    } else {
        PathBuf::from(&args.lake)
    };
    let name = format!(
        "bench_batch_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let url = format!("{}/{name}", args.postgres);
    let database = DatabaseConfig {
        url: Secret::new(url.clone()),
        max_connections: 4,
        connect_timeout_ms: 5000,
    };
    let store = PgStore::migrate(&database).await?;
    let result = bench(&args, &dir, &store, &url).await;
    store.pool().close().await;
    sightline_testkit::drop_database(&url).await;
    let report = result?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

async fn bench(args: &RunArgs, dir: &Path, store: &PgStore, url: &str) -> anyhow::Result<Report> {
    let day = NaiveDate::from_ymd_opt(2026, 1, 15).context("date")?;
    let tenant = store.create_tenant("bench", "Bench").await?.id;
    let mut sites = Vec::new();
    for (domain, zone, currency) in [
        ("paris.example", "Europe/Paris", "EUR"),
        ("ny.example", "America/New_York", "USD"),
        ("delhi.example", "Asia/Kolkata", "INR"),
    ] {
        let site = store
            .create_site(NewSite {
                tenant_id: tenant,
                domain: domain.into(),
                time_zone: zone.into(),
                currency: currency.into(),
            })
            .await?;
        sites.push(SiteDay::of(&site, day)?);
    }
    let sites_listed = store.list_sites(tenant).await?;
    anyhow::ensure!(sites_listed.len() == 3, "three sites");
    let from_us = sites.iter().map(|s| s.starts_us).min().unwrap_or(0) - MARGIN_US;
    let to_us = sites.iter().map(|s| s.ends_us).max().unwrap_or(0) + MARGIN_US;
    let first_hour = from_us.div_euclid(HOUR_US) * HOUR_US;

    let lake = LocalStore::new(dir)?;
    let spec = DaySpec {
        tenant_id: tenant,
        sites: sites_listed
            .iter()
            .map(|s| GenSite {
                site_id: s.id,
                domain: s.domain.clone(),
                currency: s.currency.clone(),
            })
            .collect(),
        from_us: first_hour,
        hours: ((to_us - first_hour) / HOUR_US) as usize,
        events: args.events,
        seed: args.seed,
    };
    let started = Instant::now();
    let written = write_day(&lake, &spec).await?;
    eprintln!(
        "wrote {} events (+{} copies, {} invalid) in {} objects in {:.1?}",
        written.events,
        written.duplicates,
        written.invalid,
        written.objects,
        started.elapsed()
    );
    let raw = dir.join(format!("raw/events/tenant={tenant}"));

    let mut rust = Command::new(std::env::current_exe()?);
    rust.args(["reprocess", "--lake"])
        .arg(dir)
        .args(["--database-url", url, "--tenant", &tenant.to_string()])
        .args(["--date", &day.to_string()])
        .env("RUST_LOG", "warn,batch_enricher::day=info");
    let rust = timed(rust)?;
    eprintln!(
        "rust reprocess: {:.2} s, {:.0} MiB",
        rust.wall_s, rust.peak_rss_mib
    );

    let mut report = Report {
        events: written.events,
        duplicates: written.duplicates,
        invalid: written.invalid,
        objects: written.objects,
        raw_mib: dir_bytes(&raw) as f64 / 1_048_576.0,
        rust,
        pyspark: None,
    };
    if args.rust_only {
        return Ok(report);
    }

    let out = dir.join("pyspark");
    let site_args: Vec<serde_json::Value> = sites
        .iter()
        .map(|s| {
            serde_json::json!({
                "site_id": s.site_id, "currency": s.currency,
                "starts_us": s.starts_us, "ends_us": s.ends_us,
            })
        })
        .collect();
    let inputs: Vec<String> = batch_enricher::raw::utc_dates(from_us, to_us)
        .iter()
        .map(|d| raw.join(format!("date={d}")))
        .filter(|p| p.exists())
        .map(|p| p.display().to_string())
        .collect();
    let mut spark = Command::new(&args.python);
    spark
        .arg(&args.spark_job)
        .args(["--tenant", &tenant.to_string()])
        .args([
            "--from-us",
            &from_us.to_string(),
            "--to-us",
            &to_us.to_string(),
        ])
        .args(["--sites", &serde_json::Value::from(site_args).to_string()])
        .args(["--memory", &args.spark_memory])
        .arg("--out")
        .arg(&out)
        .arg("--timing")
        .arg(dir.join("pyspark-timing.json"))
        .args(&inputs);
    let pyspark = timed(spark)?;
    eprintln!(
        "pyspark: {:.2} s, {:.0} MiB",
        pyspark.wall_s, pyspark.peak_rss_mib
    );
    let inside: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("pyspark-timing.json"))?)?;

    let trusted = |dataset: &str| {
        dir.join(format!("trusted/{dataset}/tenant={tenant}/date={day}/"))
            .display()
            .to_string()
    };
    let compared = compare(&trusted, &out).await?;
    let mismatched: Vec<&str> = compared
        .iter()
        .filter(|c| !c.identical)
        .map(|c| c.table)
        .collect();
    anyhow::ensure!(mismatched.is_empty(), "outputs differ: {mismatched:?}");
    report.pyspark = Some(PySpark {
        speedup: pyspark.wall_s / report.rust.wall_s,
        timed: pyspark,
        inside_s: inside["job_s"].as_f64().unwrap_or(f64::NAN),
        compared,
    });
    Ok(report)
}

/// What each table's comparison reads of it (the same columns on both sides).
const COMPARED: [(&str, &str); 3] = [
    (
        "daily_metrics",
        "site_id, events, pageviews, visitors, visits, bounces, duration_us, orders, \
         revenue_micros, bot_events",
    ),
    (
        "sessions",
        "site_id, visitor_id, CAST(started_at AS BIGINT) AS started_at, \
         CAST(ended_at AS BIGINT) AS ended_at, duration_us, events, pageviews, is_bounce",
    ),
    (
        "events",
        "message_id, site_id, visitor_id, \"type\", CAST(\"timestamp\" AS BIGINT) AS t, \
         CAST(received_at AS BIGINT) AS received, is_pageview, session_id IS NOT NULL AS in_visit, \
         bot_reason, revenue_micros, order_currency",
    ),
];

/// Each table of [`COMPARED`], Rust's against PySpark's: same row count, no row of one missing
/// from the other.
async fn compare(
    trusted: &dyn Fn(&str) -> String,
    pyspark: &Path,
) -> anyhow::Result<Vec<Compared>> {
    let ctx = SessionContext::new();
    let mut out = Vec::new();
    for (table, columns) in COMPARED {
        let spark_dir = pyspark.join(table).display().to_string();
        ctx.register_parquet(
            format!("r_{table}"),
            trusted(table),
            ParquetReadOptions::default(),
        )
        .await?;
        ctx.register_parquet(
            format!("s_{table}"),
            spark_dir,
            ParquetReadOptions::default(),
        )
        .await?;
        let count = |sql: String| {
            let ctx = &ctx;
            async move {
                let batches = ctx.sql(&sql).await?.collect().await?;
                let n = batches
                    .first()
                    .and_then(|b| {
                        b.column(0)
                            .as_any()
                            .downcast_ref::<datafusion::arrow::array::Int64Array>()
                    })
                    .map_or(0, |a| a.value(0));
                anyhow::Ok(n as u64)
            }
        };
        let r = count(format!("SELECT count(*) FROM r_{table}")).await?;
        let s = count(format!("SELECT count(*) FROM s_{table}")).await?;
        let one_way = |a: &str, b: &str| {
            format!(
                "SELECT count(*) FROM (SELECT {columns} FROM {a}_{table} \
                 EXCEPT SELECT {columns} FROM {b}_{table})"
            )
        };
        let missing = count(one_way("r", "s")).await? + count(one_way("s", "r")).await?;
        if r != s || missing > 0 {
            eprintln!("{table}: rust {r} rows, pyspark {s} rows, {missing} rows differ");
        }
        out.push(Compared {
            table,
            rows: r,
            identical: r == s && missing == 0,
        });
    }
    Ok(out)
}
