//! `ingest-load`: HTTP/1.1 keep-alive load on ingest's `/v1/batch`.
//!
//! Closed loop (`--connections C`, each sends its next request when answered) finds the
//! highest throughput; open loop (`--rate R`) sends R requests a second on schedule and
//! measures latency from each request's scheduled time (coordinated omission accounted).
//! Prints a JSON report on stdout and a summary on stderr.

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use base64::Engine as _;
use clap::Parser;
use hyper::header::HeaderValue;
use sightline_bench::{
    events::EventGen,
    load::{self, Pacing, Schedule, Target},
    procstat::{self, RssSampler, Snapshot, Watched},
};

#[derive(Debug, Parser)]
#[command(about = "HTTP load generator for Sightline ingest")]
struct Args {
    /// Ingest's HTTP address.
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: SocketAddr,
    /// Path to POST to.
    #[arg(long, default_value = "/v1/batch")]
    path: String,
    /// Write key (sent as the HTTP Basic user).
    #[arg(long, env = "BENCH_WRITE_KEY")]
    write_key: String,
    /// Events in each request.
    #[arg(long, default_value_t = 50)]
    events: usize,
    /// Keep-alive connections.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Open loop: requests a second over all connections; without it, closed loop.
    #[arg(long)]
    rate: Option<f64>,
    /// Seconds measured.
    #[arg(long, default_value_t = 20.0)]
    duration: f64,
    /// Seconds of load before measuring.
    #[arg(long, default_value_t = 5.0)]
    warmup: f64,
    /// Threads of the load generator's runtime.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Distinct visitors (anonymousIds) the events come from.
    #[arg(long, default_value_t = 20_000)]
    visitors: usize,
    /// Distinct bodies sent in turn (default: enough for every visitor to appear).
    #[arg(long)]
    templates: Option<usize>,
    /// Seed of the event generator.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Report the CPU and memory of another process: NAME=PID (repeatable).
    #[arg(long = "watch", value_parser = procstat::parse_watch)]
    watch: Vec<Watched>,
    /// Report CPU per thread name of this process.
    #[arg(long)]
    threads_of: Option<u32>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.events >= 1, "--events must be at least 1");
    anyhow::ensure!(args.connections >= 1, "--connections must be at least 1");
    anyhow::ensure!(args.rate.is_none_or(|r| r > 0.0), "--rate must be positive");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()?;
    runtime.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let templates_count = args
        .templates
        .unwrap_or_else(|| (args.visitors / args.events).max(64));
    let mut generator = EventGen::new(args.seed, args.visitors);
    let templates = (0..templates_count)
        .map(|_| generator.batch_template(args.events))
        .collect();
    let credentials =
        base64::engine::general_purpose::STANDARD.encode(format!("{}:", args.write_key));
    let target = Arc::new(Target {
        addr: args.addr,
        host: HeaderValue::from_str(&args.addr.to_string()).context("host header")?,
        path: args.path.clone(),
        authorization: HeaderValue::from_str(&format!("Basic {credentials}"))
            .context("authorization header")?,
        templates,
        run_id: rand::random(),
    });
    let pacing = match args.rate {
        Some(rate) => Pacing::Open { rate },
        None => Pacing::Closed,
    };
    let start = Instant::now() + Duration::from_millis(50);
    let measure_from = start + Duration::from_secs_f64(args.warmup);
    let schedule = Schedule {
        start,
        measure_from,
        end: measure_from + Duration::from_secs_f64(args.duration),
    };
    let tasks: Vec<_> = (0..args.connections)
        .map(|i| {
            tokio::spawn(load::connection(
                i,
                args.connections,
                target.clone(),
                pacing,
                schedule,
            ))
        })
        .collect();

    tokio::time::sleep_until(measure_from.into()).await;
    let snapshot = Snapshot::take(&args.watch, args.threads_of);
    let sampler = RssSampler::start(
        args.watch.iter().map(|w| w.pid).collect(),
        Duration::from_millis(250),
    );
    let mut stats = Vec::with_capacity(tasks.len());
    for task in tasks {
        stats.push(task.await?);
    }
    let cpu = snapshot.report(&sampler.peaks());
    drop(sampler);
    let result = load::summarise(stats, pacing, &target, args.duration);

    let l = &result.latency;
    eprintln!(
        "{} loop, {} connections, {} events/request ({} bytes): {:.0} req/s, {:.0} events/s; \
         latency p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms; \
         non-2xx {}, errors {}, not fully accepted {}",
        result.mode,
        result.connections,
        result.events_per_request,
        result.body_bytes,
        result.requests_per_sec,
        result.events_per_sec,
        l.p50_us as f64 / 1000.0,
        l.p99_us as f64 / 1000.0,
        l.p999_us as f64 / 1000.0,
        l.max_us as f64 / 1000.0,
        result.non_2xx,
        result.errors,
        result.not_fully_accepted,
    );
    if let Some(e) = &result.first_error {
        eprintln!("first error: {e}");
    }
    for p in &cpu.processes {
        eprintln!("cpu {:>15}: {:.2} cores", p.name, p.cores);
    }
    println!("{}", serde_json::json!({ "load": result, "cpu": cpu }));
    Ok(())
}
