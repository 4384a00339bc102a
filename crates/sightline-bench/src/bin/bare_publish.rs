//! `bare-publish`: the baseline of the ingest benchmark, and the broker housekeeping of the
//! benchmark script.
//!
//! `run` publishes the load generator's events as ingest would, minus HTTP and validation:
//! protobuf `EventBatch` messages of the same events per message, routed to the same partitions
//! of the same topology, with publisher confirms, over the same number of channels and with
//! the same number of messages awaiting their confirm. Its events/s is what the broker takes.
//! `purge` and `delete` empty and remove a namespace's queues.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::Context as _;
use bytes::Bytes;
use clap::{Args, Parser, Subcommand};
use lapin::{
    BasicProperties, Channel, Connection, ConnectionProperties,
    options::{
        BasicPublishOptions, ConfirmSelectOptions, ExchangeDeleteOptions, QueueDeleteOptions,
        QueuePurgeOptions,
    },
    types::{FieldTable, ShortString},
};
use serde::Serialize;
use sightline_bench::{
    Latency, baseline,
    events::EventGen,
    latency_histogram,
    procstat::{self, RssSampler, Snapshot, Watched},
};
use sightline_broker::{CONTENT_TYPE_PROTOBUF, Route, Topology, rabbitmq::declare_topology};

#[derive(Debug, Parser)]
#[command(about = "Bare lapin publisher: the broker baseline of the ingest benchmark")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Publish for a while and report events/s.
    Run(RunArgs),
    /// Purge every queue of the namespace.
    Purge(BrokerArgs),
    /// Delete every queue and exchange of the namespace.
    Delete(BrokerArgs),
}

#[derive(Debug, Args)]
struct BrokerArgs {
    /// AMQP URI.
    #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    amqp: String,
    /// Namespace of the topology (`broker.namespace`).
    #[arg(long)]
    namespace: String,
    /// Partitions per consumer group (`broker.partitions`).
    #[arg(long, default_value_t = 8)]
    partitions: u32,
    /// Consumer groups (`broker.consumer_groups`), comma separated.
    #[arg(long, default_value = "rollup,archive", value_delimiter = ',')]
    groups: Vec<String>,
}

impl BrokerArgs {
    fn topology(&self) -> Topology {
        Topology {
            namespace: self.namespace.clone(),
            partitions: self.partitions,
            consumer_groups: self.groups.clone(),
        }
    }
}

#[derive(Debug, Args)]
struct RunArgs {
    #[command(flatten)]
    broker: BrokerArgs,
    /// `broker.delivery_limit`.
    #[arg(long, default_value_t = 5)]
    delivery_limit: u32,
    /// Confirm-mode channels (`broker.publish_channels`).
    #[arg(long, default_value_t = 4)]
    channels: usize,
    /// Messages awaiting confirms per partition (`ingest.batching.max_in_flight`).
    #[arg(long, default_value_t = 8)]
    in_flight: usize,
    /// Events in each message (ingest's mean `sightline_ingest_batch_events`).
    #[arg(long)]
    events_per_message: f64,
    /// Open loop: messages a second over all publishers, latency counted from each message's
    /// scheduled time; without it, every publisher sends its next message when the previous
    /// one is confirmed.
    #[arg(long)]
    rate: Option<f64>,
    /// Seconds measured.
    #[arg(long, default_value_t = 20.0)]
    duration: f64,
    /// Seconds of publishing before measuring.
    #[arg(long, default_value_t = 5.0)]
    warmup: f64,
    /// The load generator's settings, to make the same events.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// As `ingest-load --visitors`.
    #[arg(long, default_value_t = 20_000)]
    visitors: usize,
    /// As `ingest-load --events`.
    #[arg(long, default_value_t = 50)]
    request_events: usize,
    /// Distinct encoded messages per partition, sent in turn.
    #[arg(long, default_value_t = 8)]
    pool: usize,
    /// Compress each message with zstd at this level as it is sent, as ingest does with
    /// `broker.compression = "zstd"` (0: send the protobuf as it is).
    #[arg(long, default_value_t = 0)]
    zstd_level: i32,
    /// Tenant and site ids written into the events.
    #[arg(long, default_value_t = 1)]
    tenant_id: i64,
    /// See `--tenant-id`.
    #[arg(long, default_value_t = 1)]
    site_id: i64,
    /// Report the CPU and memory of another process: NAME=PID (repeatable).
    #[arg(long = "watch", value_parser = procstat::parse_watch)]
    watch: Vec<Watched>,
}

#[derive(Debug, Serialize)]
struct BaselineResult {
    seconds: f64,
    channels: usize,
    partitions: u32,
    in_flight_per_partition: usize,
    events_per_message: usize,
    message_bytes: usize,
    /// zstd level of the wire payload (0: none).
    zstd_level: i32,
    messages_confirmed: u64,
    events_per_sec: f64,
    messages_per_sec: f64,
    /// Messages a second asked for (open loop).
    target_rate: Option<f64>,
    /// Publish to confirm (open loop: from the scheduled time).
    confirm_latency: Latency,
    nacked: u64,
    returned: u64,
    errors: u64,
    first_error: Option<String>,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Run(args) => run(args).await,
            Command::Purge(args) => housekeeping(&args, false).await,
            Command::Delete(args) => housekeeping(&args, true).await,
        }
    })
}

async fn connect(url: &str) -> anyhow::Result<Connection> {
    Connection::connect(
        url,
        ConnectionProperties::default().with_connection_name("sightline-bench".into()),
    )
    .await
    .context("cannot connect to RabbitMQ")
}

/// Every queue of the namespace; a missing one is skipped (a failed operation closes its
/// channel, so each gets a channel of its own).
async fn housekeeping(args: &BrokerArgs, delete: bool) -> anyhow::Result<()> {
    let topology = args.topology();
    let connection = connect(&args.amqp).await?;
    let mut queues: Vec<String> = topology.partition_queues().map(|(_, _, q)| q).collect();
    queues.push(topology.invalid_queue());
    queues.push(topology.dead_letter_queue());
    let mut messages = 0;
    for queue in &queues {
        let channel = connection.create_channel().await?;
        let outcome = if delete {
            channel
                .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                .await
        } else {
            channel
                .queue_purge(queue.as_str().into(), QueuePurgeOptions::default())
                .await
        };
        match outcome {
            Ok(n) => {
                messages += n;
                let _ = channel.close(200, "done".into()).await;
            }
            Err(error) => eprintln!("{queue}: {error}"),
        }
    }
    if delete {
        for exchange in [topology.events_exchange(), topology.dead_letter_exchange()] {
            let channel = connection.create_channel().await?;
            if let Err(error) = channel
                .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
                .await
            {
                eprintln!("{exchange}: {error}");
            }
        }
    }
    eprintln!(
        "{} {} queues of {} ({messages} messages)",
        if delete { "deleted" } else { "purged" },
        queues.len(),
        topology.namespace
    );
    let _ = connection.close(200, "done".into()).await;
    Ok(())
}

/// Ingest's message properties (see sightline-broker's publisher).
fn properties(id: String, encoding: Option<&str>) -> BasicProperties {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let properties = BasicProperties::default();
    let properties = match encoding {
        Some(encoding) => properties.with_content_encoding(encoding.into()),
        None => properties,
    };
    properties
        .with_message_id(id.into())
        .with_content_type(CONTENT_TYPE_PROTOBUF.into())
        .with_type(ingest::batcher::EVENT_BATCH_KIND.into())
        .with_delivery_mode(2)
        .with_timestamp(now)
        .with_headers(FieldTable::default())
}

#[derive(Default)]
struct Counters {
    confirmed: AtomicU64,
    events: AtomicU64,
    nacked: AtomicU64,
    returned: AtomicU64,
    errors: AtomicU64,
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let topology = args.broker.topology();
    let events_per_message = args.events_per_message.round().max(1.0) as usize;

    // The same events as the load generator's, as ingest turns them into protobuf.
    let templates_count = (args.visitors / args.request_events).max(64);
    let mut generator = EventGen::new(args.seed, args.visitors);
    let templates: Vec<_> = (0..templates_count)
        .map(|_| generator.batch_template(args.request_events))
        .collect();
    let by_partition = baseline::events_by_partition(
        &templates,
        args.tenant_id,
        args.site_id,
        topology.partitions,
    )?;
    let pools: Vec<Vec<Bytes>> = by_partition
        .iter()
        .enumerate()
        .map(|(p, events)| baseline::payloads(events, p as u32, events_per_message, args.pool))
        .collect();
    let sizes: Vec<usize> = pools.iter().flatten().map(Bytes::len).collect();
    let message_bytes = sizes.iter().sum::<usize>() / sizes.len().max(1);

    let connection = connect(&args.broker.amqp).await?;
    let setup = connection.create_channel().await?;
    declare_topology(&setup, &topology, args.delivery_limit)
        .await
        .map_err(|e| anyhow::anyhow!("cannot declare the topology: {e}"))?;
    let _ = setup.close(200, "topology declared".into()).await;
    let mut channels = Vec::with_capacity(args.channels);
    for _ in 0..args.channels.max(1) {
        let channel = connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        channels.push(channel);
    }
    let channels = Arc::new(channels);
    let exchange: ShortString = topology.events_exchange().into();

    let start = Instant::now();
    let measure_from = start + Duration::from_secs_f64(args.warmup);
    let end = measure_from + Duration::from_secs_f64(args.duration);
    let counters = Arc::new(Counters::default());
    let first_error = Arc::new(std::sync::Mutex::new(None::<String>));
    let next_channel = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    let publishers = pools.len() * args.in_flight;
    let rate = args.rate.filter(|r| *r > 0.0);
    let zstd_level = args.zstd_level;
    for (partition, pool) in pools.into_iter().enumerate() {
        let pool = Arc::new(pool);
        let routing_key: ShortString =
            Topology::routing_key(Route::Partition(partition as u32)).into();
        for slot in 0..args.in_flight {
            let (pool, channels, exchange, routing_key, counters, first_error, next_channel) = (
                pool.clone(),
                channels.clone(),
                exchange.clone(),
                routing_key.clone(),
                counters.clone(),
                first_error.clone(),
                next_channel.clone(),
            );
            let index = partition * args.in_flight + slot;
            tasks.push(tokio::spawn(async move {
                let mut latency = latency_histogram();
                let mut i = slot;
                let mut sequence: u64 = 0;
                while Instant::now() < end && !pool.is_empty() {
                    let scheduled = match rate {
                        None => Instant::now(),
                        Some(rate) => {
                            let at = start
                                + Duration::from_secs_f64(
                                    (sequence * publishers as u64 + index as u64) as f64 / rate,
                                );
                            sequence += 1;
                            if at >= end {
                                break;
                            }
                            tokio::time::sleep_until(at.into()).await;
                            at
                        }
                    };
                    let (payload, encoding) = match zstd_level {
                        0 => (pool[i % pool.len()].as_ref().into(), None),
                        level => sightline_broker::encoding::encode(
                            &pool[i % pool.len()],
                            sightline_broker::Compression::Zstd,
                            level,
                        ),
                    };
                    i += 1;
                    let channel: &Channel =
                        &channels[next_channel.fetch_add(1, Ordering::Relaxed) % channels.len()];
                    let outcome = async {
                        channel
                            .basic_publish(
                                exchange.clone(),
                                routing_key.clone(),
                                BasicPublishOptions {
                                    mandatory: true,
                                    ..Default::default()
                                },
                                &payload,
                                properties(uuid::Uuid::now_v7().to_string(), encoding),
                            )
                            .await?
                            .await
                    }
                    .await;
                    let done = Instant::now();
                    let measured = match rate {
                        None => done >= measure_from && done < end,
                        Some(_) => scheduled >= measure_from,
                    };
                    if !measured {
                        continue;
                    }
                    let micros = u64::try_from(done.duration_since(scheduled).as_micros())
                        .unwrap_or(u64::MAX)
                        .max(1);
                    let _ = latency.record(micros);
                    match outcome {
                        Ok(c) if c.is_ack() => {
                            if c.take_message().is_none() {
                                counters.confirmed.fetch_add(1, Ordering::Relaxed);
                                counters
                                    .events
                                    .fetch_add(events_per_message as u64, Ordering::Relaxed);
                            } else {
                                counters.returned.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Ok(_) => {
                            counters.nacked.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(error) => {
                            counters.errors.fetch_add(1, Ordering::Relaxed);
                            if let Ok(mut first) = first_error.lock() {
                                first.get_or_insert(error.to_string());
                            }
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    }
                }
                latency
            }));
        }
    }

    tokio::time::sleep_until(measure_from.into()).await;
    let snapshot = Snapshot::take(&args.watch, None);
    let sampler = RssSampler::start(
        args.watch.iter().map(|w| w.pid).collect(),
        Duration::from_millis(250),
    );
    let mut latency = latency_histogram();
    for task in tasks {
        let _ = latency.add(task.await?);
    }
    let cpu = snapshot.report(&sampler.peaks());
    drop(sampler);
    let _ = connection.close(200, "done".into()).await;

    let seconds = args.duration;
    let confirmed = counters.confirmed.load(Ordering::Relaxed);
    let result = BaselineResult {
        seconds,
        channels: channels.len(),
        partitions: topology.partitions,
        in_flight_per_partition: args.in_flight,
        events_per_message,
        message_bytes,
        zstd_level: args.zstd_level,
        messages_confirmed: confirmed,
        events_per_sec: counters.events.load(Ordering::Relaxed) as f64 / seconds,
        messages_per_sec: confirmed as f64 / seconds,
        target_rate: rate,
        confirm_latency: Latency::of(&latency),
        nacked: counters.nacked.load(Ordering::Relaxed),
        returned: counters.returned.load(Ordering::Relaxed),
        errors: counters.errors.load(Ordering::Relaxed),
        first_error: first_error.lock().ok().and_then(|f| f.clone()),
    };
    eprintln!(
        "bare publish: {:.0} events/s, {:.0} messages/s of {} events ({} bytes); \
         confirm latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; \
         nacked {}, returned {}, errors {}",
        result.events_per_sec,
        result.messages_per_sec,
        result.events_per_message,
        result.message_bytes,
        result.confirm_latency.p50_us as f64 / 1000.0,
        result.confirm_latency.p99_us as f64 / 1000.0,
        result.confirm_latency.max_us as f64 / 1000.0,
        result.nacked,
        result.returned,
        result.errors
    );
    for p in &cpu.processes {
        eprintln!("cpu {:>15}: {:.2} cores", p.name, p.cores);
    }
    println!("{}", serde_json::json!({ "baseline": result, "cpu": cpu }));
    Ok(())
}
