//! The archive consumer group: raw events to `raw/` and invalid events to `errors/` in the lake,
//! the Kinesis Firehose role.
//!
//! Per queue (each archive partition queue, and the invalid queue), one [`ArchiveSink`] buffers
//! decoded batches until a time bound (`stream.archive.flush_interval_ms`) or a size bound
//! (`max_buffered_events`, `max_buffered_bytes`), then writes zstd Parquet objects, one per
//! tenant and UTC hour of event time (errors: per day of receipt and reason), at keys derived
//! from the set of batches each holds. Messages are acknowledged after the flush.
//!
//! Deterministic keys alone do not make a crash harmless: batches redelivered after a crash
//! between "objects written" and "acknowledged" may be buffered with other batches and so land
//! under other keys, beside the objects that already hold them. The ledger in PostgreSQL
//! ([`sightline_db::ArchiveLedger`], `migrations/0003_archive_ledger.sql`) closes that gap.
//! A flush:
//!
//! 1. asks which buffered batches the ledger knows. Batches of a *stored* flush are dropped
//!    (their objects exist). A *pending* flush is an attempt that never finished: its objects
//!    (listed in its row) are deleted and its rows forgotten, so its batches count as new;
//! 2. plans the keys the remaining batches produce and records them as a *pending* flush with
//!    one row per batch, committed;
//! 3. writes the objects;
//! 4. marks the flush *stored*.
//!
//! Any failure returns a [`SinkError`](crate::sink::SinkError) with the buffer kept; the
//! consumer holds the messages, turns not ready and retries from step 1. A process killed at
//! any step therefore leaves either a stored flush (its redelivered batches are skipped) or a
//! pending one (cleaned up when its batches come back): every accepted event is in the lake
//! exactly once.

mod batch;
mod sink;

use std::sync::Arc;

use sightline_lake::ObjectStore;
use sightline_proto::events::v1::{EventBatch, InvalidEventBatch};
use tokio::{sync::Semaphore, task::JoinSet};
use tokio_util::sync::CancellationToken;

pub use batch::{Archived, EVENT_BATCH, INVALID_EVENT_BATCH};
pub use sink::ArchiveSink;

use crate::{Context, config::ARCHIVE, consumer::PartitionConsumer};

/// The sink of an archive partition queue.
pub type RawArchiveSink = ArchiveSink<EventBatch>;
/// The sink of the invalid queue.
pub type InvalidArchiveSink = ArchiveSink<InvalidEventBatch>;

/// What the archive consumers of one process share.
struct Shared<'a> {
    ctx: &'a Context,
    lake: Arc<dyn ObjectStore>,
    encoders: Arc<Semaphore>,
    stop: CancellationToken,
}

/// Starts one consumer per archive partition queue (`archive.p{p}`) and one for the invalid
/// queue (`archive.invalid`), all writing to `lake`, with at most
/// [`ArchiveConfig::encoders`](crate::config::ArchiveConfig::encoders) flushes encoding at once.
pub(crate) fn start(
    ctx: &Context,
    lake: Arc<dyn ObjectStore>,
    tasks: &mut JoinSet<()>,
    stop: CancellationToken,
) {
    let shared = Shared {
        ctx,
        lake,
        encoders: Arc::new(Semaphore::new(ctx.config.stream.archive.encoder_count())),
        stop,
    };
    let topology = ctx.config.broker.topology();
    let partitions = ctx.config.broker.partitions;
    // The invalid queue is the last of the group's flush slots.
    let slots = partitions + 1;
    for partition in 0..partitions {
        let queue = topology.partition_queue(ARCHIVE, partition);
        let component = format!("archive.p{partition}");
        spawn::<EventBatch>(&shared, tasks, queue, &component, (partition, slots));
    }
    spawn::<InvalidEventBatch>(
        &shared,
        tasks,
        topology.invalid_queue(),
        "archive.invalid",
        (partitions, slots),
    );
}

fn spawn<B: Archived>(
    shared: &Shared<'_>,
    tasks: &mut JoinSet<()>,
    queue: String,
    component: &str,
    slot: (u32, u32),
) {
    let ctx = shared.ctx;
    let archive = &ctx.config.stream.archive;
    let settings = ctx.consumer_settings(ARCHIVE, queue.clone(), archive.flush_interval_ms, slot);
    let sink = ArchiveSink::<B>::new(
        queue,
        Arc::new(ctx.store.clone()),
        shared.lake.clone(),
        archive.clone(),
        ctx.metrics.clone(),
    )
    .with_encoders(shared.encoders.clone());
    let health = ctx.health.register(component);
    let consumer = PartitionConsumer::new(settings, sink, health, ctx.metrics.clone());
    tasks.spawn(consumer.run(shared.stop.clone()));
}
