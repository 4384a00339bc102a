//! `sql-bench`: SQL over the lake through the query service against DuckDB on the same files.
//!
//! Writes N raw events (default 10 million) for one tenant as zstd Parquet in the lake layout
//! (`raw/events/tenant=T/date=D/hour=H/`, the stream processor's writer, one object per hour)
//! into a local folder, boots the query service on it in this process, and times, in the same
//! run, each query through `ExecuteSql` over gRPC (until its last page) and in DuckDB (Python
//! package from the testkit's virtualenv, timed inside the interpreter, over the same files with
//! Hive partitioning). One warm-up run each, then the median of `--runs`.

use std::{
    collections::HashMap,
    net::TcpListener,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use clap::Parser;
use rand::{Rng, SeedableRng, rngs::StdRng};
use serde::Serialize;
use sightline_db::{DatabaseConfig, PgStore, ReadScope, ReadTokens, Tenants};
use sightline_kit::{Shutdown, config::Secret};
use sightline_lake::LocalStore;
use sightline_proto::{
    events::v1::{Event, EventBatch, EventType},
    query::v1::{self as pb, query_client::QueryClient},
};
use tonic::transport::Channel;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(about = "SQL over the lake: the query service against DuckDB on the same Parquet files")]
struct Cli {
    /// Raw events to write.
    #[arg(long, default_value_t = 10_000_000)]
    events: usize,
    /// Hours they spread over (one Parquet object per hour).
    #[arg(long, default_value_t = 240)]
    hours: usize,
    /// Timed runs per query and engine (after one warm-up).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Lake folder; a temporary one when empty. An existing lake with the same tenant is reused.
    #[arg(long, default_value = "")]
    lake: String,
    /// PostgreSQL server (a database is created per run and dropped at the end).
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432")]
    postgres: String,
}

#[derive(Debug, Serialize)]
struct Result1 {
    query: String,
    rows: usize,
    sightline_ms: f64,
    duckdb_ms: f64,
    ratio: f64,
}

const NAMES: [&str; 12] = [
    "Added To Cart",
    "Order Completed",
    "Product Viewed",
    "Signed Up",
    "Logged In",
    "Search",
    "Checkout Started",
    "Coupon Applied",
    "Video Played",
    "Newsletter",
    "Share",
    "Review",
];

fn hour_of_events(tenant: i64, hour: usize, n: usize, rng: &mut StdRng) -> Vec<Event> {
    let base = 1_767_225_600_000_000 + hour as i64 * 3_600_000_000; // 2026-01-01
    (0..n)
        .map(|i| {
            let visitor = format!("v-{}", rng.random_range(0..200_000));
            let kind = match rng.random_range(0..10) {
                0..=5 => EventType::Page,
                6..=8 => EventType::Track,
                _ => EventType::Identify,
            };
            let t = base + rng.random_range(0..3_600_000_000);
            Event {
                message_id: format!("m-{hour}-{i}"),
                tenant_id: tenant,
                site_id: 1 + (i as i64 % 3),
                r#type: kind.into(),
                name: if kind == EventType::Track {
                    NAMES[rng.random_range(0..NAMES.len())].to_string()
                } else {
                    String::new()
                },
                anonymous_id: visitor.clone(),
                visitor_id: visitor,
                timestamp_us: t,
                original_timestamp_us: t,
                received_at_us: t + 500_000,
                user_agent:
                    "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0".into(),
                page_url: format!(
                    "https://shop.example.com/products/{}",
                    rng.random_range(0..500)
                ),
                properties_json: b"{\"revenue\": 12.5}".to_vec().into(),
                ..Event::default()
            }
        })
        .collect()
}

/// DuckDB over the same files: `runs` timings (ms) of `sql`, after a warm-up, and the row count.
fn duckdb(dir: &Path, tenant: i64, sql: &str, runs: usize) -> anyhow::Result<(Vec<f64>, usize)> {
    use std::io::Write as _;
    let python = sightline_testkit::duckdb::python()?;
    let script = format!(
        r#"
import duckdb, json, sys, time
con = duckdb.connect()
con.execute("CREATE VIEW events AS SELECT * FROM read_parquet('raw/events/tenant={tenant}/*/*/*.parquet', hive_partitioning = true)")
q = sys.stdin.read()
rows = len(con.execute(q).fetchall())
times = []
for _ in range({runs}):
    t = time.perf_counter()
    con.execute(q).fetchall()
    times.append((time.perf_counter() - t) * 1000)
json.dump({{"times": times, "rows": rows}}, sys.stdout)
"#
    );
    let mut child = std::process::Command::new(python)
        .args(["-c", &script])
        .current_dir(dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(sql.as_bytes())?;
    let out = child.wait_with_output()?;
    anyhow::ensure!(out.status.success(), "DuckDB failed");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let times = v["times"]
        .as_array()
        .context("times")?
        .iter()
        .filter_map(|t| t.as_f64())
        .collect();
    Ok((times, v["rows"].as_u64().unwrap_or(0) as usize))
}

async fn sightline(
    client: &mut QueryClient<Channel>,
    token: &str,
    sql: &str,
) -> anyhow::Result<(f64, usize)> {
    let started = Instant::now();
    let mut request = tonic::Request::new(pb::SqlRequest {
        sql: sql.into(),
        tenant_id: 0,
        page_size: 0,
    });
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse()?);
    let mut stream = client.execute_sql(request).await?.into_inner();
    let mut rows = 0;
    while let Some(page) = stream.message().await? {
        rows += page.rows as usize;
    }
    Ok((started.elapsed().as_secs_f64() * 1000.0, rows))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let temp = tempfile::tempdir()?;
    let dir = if cli.lake.is_empty() {
        temp.path().to_path_buf()
    } else {
        std::path::PathBuf::from(&cli.lake)
    };
    let name = format!(
        "bench_sql_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let url = format!("{}/{name}", cli.postgres);
    let database = DatabaseConfig {
        url: Secret::new(url.clone()),
        max_connections: 4,
        connect_timeout_ms: 5000,
    };
    let store = PgStore::migrate(&database).await?;
    let tenant = store.create_tenant("bench", "Bench").await?.id;
    let (token, _) = store
        .issue_read_token(
            ReadScope::Tenant {
                tenant_id: tenant,
                site_ids: None,
            },
            "bench",
        )
        .await?;
    let prefix = dir.join(format!("raw/events/tenant={tenant}"));
    if !prefix.exists() {
        let lake = LocalStore::new(&dir)?;
        let mut rng = StdRng::seed_from_u64(7);
        let per_hour = cli.events / cli.hours;
        let started = Instant::now();
        for hour in 0..cli.hours {
            let events = hour_of_events(tenant, hour, per_hour, &mut rng);
            let batch = EventBatch {
                batch_id: format!("bench-{hour}"),
                partition: 0,
                created_at_us: 0,
                events,
            };
            sightline_lake::write_raw_batches(&lake, &[batch]).await?;
        }
        eprintln!(
            "wrote {} events in {:?}",
            per_hour * cli.hours,
            started.elapsed()
        );
    }

    let env: HashMap<String, String> = [
        ("SIGHTLINE__DATABASE__URL", url.clone()),
        ("SIGHTLINE__LAKE__LOCAL_PATH", dir.display().to_string()),
        ("SIGHTLINE__QUERY__SQL__TIMEOUT_MS", "600000".into()),
        ("SIGHTLINE__TELEMETRY__LOG_LEVEL", "warn".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
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
    let mut client = loop {
        match Channel::from_shared(format!("http://{addr}"))?
            .connect()
            .await
        {
            Ok(c) => break QueryClient::new(c),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };

    let queries = [
        "SELECT count(*) FROM events",
        "SELECT name, count(*) AS n, count(DISTINCT visitor_id) AS visitors FROM events \
         WHERE type = 'track' GROUP BY name ORDER BY n DESC",
    ];
    let mut results = Vec::new();
    for sql in queries {
        let (_, rows) = sightline(&mut client, &token, sql).await?;
        let mut ours = Vec::new();
        for _ in 0..cli.runs {
            ours.push(sightline(&mut client, &token, sql).await?.0);
        }
        let (theirs, duck_rows) = duckdb(&dir, tenant, sql, cli.runs)?;
        anyhow::ensure!(
            rows == duck_rows,
            "{sql}: {rows} rows against DuckDB's {duck_rows}"
        );
        let (s, d) = (median(ours), median(theirs));
        eprintln!("{sql}: sightline {s:.0} ms, duckdb {d:.0} ms");
        results.push(Result1 {
            query: sql.into(),
            rows,
            sightline_ms: s,
            duckdb_ms: d,
            ratio: s / d,
        });
    }
    println!("{}", serde_json::to_string_pretty(&results)?);
    shutdown.trigger();
    service.await??;
    store.pool().close().await;
    sightline_testkit::drop_database(&url).await;
    Ok(())
}
