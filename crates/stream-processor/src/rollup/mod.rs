//! The rollup consumer group: events to per-minute and per-hour rollups in PostgreSQL.
//!
//! Per partition queue, one [`RollupSink`]: messages are decoded and enriched into [`Fact`]s as
//! they arrive; a flush (every `stream.rollup.flush_interval_ms`, or sooner when full) skips
//! batches the database already holds, folds the rest into row deltas and visitor states
//! ([`aggregate::fold`]) and commits everything in one transaction ([`store::commit`]) that
//! also records the batch ids. Messages are acknowledged after that commit, so a crash at any
//! point replays from the last commit and counts nothing twice.
//!
//! Visitor states go to the partition's log, one entry a flush in the flush's transaction; every
//! `stream.rollup.visitor_snapshot_flushes` flushes, the states changed since the last snapshot
//! are written to `rollup_visitors` in a transaction of their own, beside the flushes
//! ([`store::write_snapshot`]), and replace the log entries they cover. The partitions take
//! their turns spread over that interval ([`RollupSink::new`]). A snapshot rewrites
//! thousands of rows; in the flush's transaction it held the partition's events back for a
//! second or more each minute, which was most of the end-to-end freshness tail.
//!
//! The partition's consumer is the only writer of its rows (one row per shard, see
//! `migrations/0002_rollups.sql`) and of its visitors, so caches of visitor states and row
//! sketches stay exact between flushes and are updated only after a commit: a failed flush
//! leaves them as they were, and the retry recomputes from the same buffer.

pub mod aggregate;
pub mod fact;
pub mod state;
pub mod store;

use std::{collections::HashSet, sync::Arc};

use futures_util::FutureExt as _;
use prost::Message as _;
use sightline_db::rollup::Granularity;
use sightline_event::{Enricher, SESSION_TIMEOUT_US, VisitorSketch};
use sightline_proto::events::v1::EventBatch;
use sqlx::PgPool;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::{
    Context,
    config::{ROLLUP, RollupConfig},
    consumer::PartitionConsumer,
    metrics::{GroupLabels, SkipLabels, StreamMetrics},
    sink::{Incoming, Sink, SinkError, Undecodable},
};
use aggregate::{FastMap, FastSet, FoldSettings};
pub use fact::Fact;
use state::{Visitor, visitor_hash};
use store::{Commit, CommitError, RowWrite, SketchCache, SketchKey, Snapshot, SnapshotRow};

/// The protobuf type name of partition messages.
pub const EVENT_BATCH: &str = "sightline.events.v1.EventBatch";

/// Visitors are forgotten this long after their visit ended (event time), leaving room for
/// events that arrive a little out of order.
const VISITOR_GRACE_US: i64 = 5 * 60 * 1_000_000;

/// Processed batch ids are pruned every this many flushes.
const PRUNE_EVERY_FLUSHES: u64 = 600;

/// How far behind "now" an idle partition puts its receipt watermark: an event ingest received
/// just before is still on its way through the broker (confirm, routing, delivery).
const IDLE_MARGIN: std::time::Duration = std::time::Duration::from_secs(2);

/// Starts one consumer per rollup partition queue.
pub(crate) fn start(ctx: &Context, tasks: &mut JoinSet<()>, stop: CancellationToken) {
    let topology = ctx.config.broker.topology();
    let partitions = ctx.config.broker.partitions;
    for partition in 0..partitions {
        let queue = topology.partition_queue(ROLLUP, partition);
        let settings = ctx.consumer_settings(
            ROLLUP,
            queue,
            ctx.config.stream.rollup.flush_interval_ms,
            (partition, partitions),
        );
        let sink = RollupSink::new(
            (partition, partitions),
            ctx.store.pool().clone(),
            ctx.enricher.clone(),
            ctx.config.stream.rollup.clone(),
            ctx.metrics.clone(),
        );
        let health = ctx.health.register(&format!("rollup.p{partition}"));
        let consumer = PartitionConsumer::new(settings, sink, health, ctx.metrics.clone());
        tasks.spawn(consumer.run(stop.clone()));
    }
}

/// A snapshot being written, with the visitors it holds: they go back to `logged` when it is
/// not written (even if its task panicked), so the next snapshot takes them.
struct InFlight {
    visitors: Vec<u128>,
    task: tokio::task::JoinHandle<Result<bool, String>>,
}

/// After how many flushes partition `slot.0` of `slot.1` takes its first visitor snapshot, when
/// each takes one every `every` flushes: the partitions' turns spread evenly over `1..=every`.
fn first_snapshot_after(every: u64, slot: (u32, u32)) -> u64 {
    let partitions = u64::from(slot.1.max(1));
    let partition = u64::from(slot.0) % partitions;
    (every * (partition + 1) / partitions).max(1)
}

/// The earliest event time of the visitors a partition keeps, at event-time watermark
/// `watermark_us`: older ones' visits are over.
fn expire_before(watermark_us: i64) -> i64 {
    watermark_us.saturating_sub(SESSION_TIMEOUT_US + VISITOR_GRACE_US)
}

/// One decoded message.
struct Buffered {
    batch_id: String,
    facts: Vec<Fact>,
}

/// The rollups of one partition.
pub struct RollupSink {
    shard: i32,
    pool: PgPool,
    enricher: Arc<Enricher>,
    settings: RollupConfig,
    metrics: StreamMetrics,
    buffer: Vec<Buffered>,
    buffered_events: usize,
    /// Visitor states as committed.
    visitors: FastMap<u128, Visitor>,
    /// Visitors whose committed state is in the partition's log, not yet in the snapshot.
    logged: FastSet<u128>,
    /// Flushes since the last snapshot of visitor states was started.
    since_snapshot: u64,
    /// The `seq` of the partition's last log entry; `None` until read, or when it has none.
    last_seq: Option<i64>,
    /// The snapshot being written, if any.
    snapshot: Option<InFlight>,
    /// Row sketches as committed (an empty sketch: the row has none yet).
    sketches: SketchCache,
    currencies: FastMap<i64, String>,
    /// Newest event time committed by this partition; `None` until read.
    event_watermark_us: Option<i64>,
    flushes: u64,
}

impl RollupSink {
    /// The sink of partition `slot.0` of the group's `slot.1`. The partitions' visitor
    /// snapshots are spread over the snapshot interval: partition `p` takes its first after
    /// `(p + 1) / partitions` of it, and each snapshot interval thereafter. Started together
    /// (as every partition of a process is), their snapshots would otherwise all run at once,
    /// a few seconds of PostgreSQL's whole capacity that the flushes queue behind.
    pub fn new(
        slot: (u32, u32),
        pool: PgPool,
        enricher: Arc<Enricher>,
        settings: RollupConfig,
        metrics: StreamMetrics,
    ) -> Self {
        let every = settings.visitor_snapshot_flushes;
        let first = first_snapshot_after(every, slot);
        Self {
            shard: i32::try_from(slot.0).unwrap_or(i32::MAX),
            pool,
            enricher,
            settings,
            metrics,
            buffer: Vec::new(),
            buffered_events: 0,
            visitors: FastMap::default(),
            logged: FastSet::default(),
            since_snapshot: every.saturating_sub(first),
            last_seq: None,
            snapshot: None,
            sketches: SketchCache::default(),
            currencies: FastMap::default(),
            event_watermark_us: None,
            flushes: 0,
        }
    }

    fn skipped(&self, reason: &'static str, n: u64) {
        if n > 0 {
            self.metrics
                .rollup_skipped
                .get_or_create(&SkipLabels { reason })
                .inc_by(n);
        }
    }

    /// The buffered batches to count: each batch once, none the database already holds.
    async fn new_batches<'b>(
        &self,
        buffer: &'b [Buffered],
    ) -> Result<Vec<&'b Buffered>, SinkError> {
        let mut seen = HashSet::new();
        let unique: Vec<&Buffered> = buffer
            .iter()
            .filter(|b| seen.insert(b.batch_id.as_str()))
            .collect();
        let ids: Vec<String> = unique.iter().map(|b| b.batch_id.clone()).collect();
        let known: HashSet<String> = store::known_batches(&self.pool, &ids)
            .await?
            .into_iter()
            .collect();
        let fresh: Vec<&Buffered> = unique
            .into_iter()
            .filter(|b| !known.contains(&b.batch_id))
            .collect();
        if buffer.len() > fresh.len() {
            let events: usize = buffer
                .iter()
                .map(|b| b.facts.len())
                .sum::<usize>()
                .saturating_sub(fresh.iter().map(|b| b.facts.len()).sum());
            self.skipped("duplicate_batch", events as u64);
        }
        Ok(fresh)
    }

    /// Reads what the caches lack for `batches`: visitor states, site currencies, watermark.
    /// The first time, also the partition's visitor log: the states committed since the last
    /// snapshot, which the cache then holds until the next one.
    async fn load_missing(&mut self, batches: &[&Buffered]) -> Result<(), SinkError> {
        if self.event_watermark_us.is_none() {
            let log = store::load_visitor_log(&self.pool, self.shard).await?;
            for entry in log.entries {
                match entry {
                    Ok(visitors) => {
                        for v in visitors {
                            let hash = visitor_hash(v.tenant_id, v.site_id, &v.visitor_id);
                            self.visitors.insert(hash, v);
                            self.logged.insert(hash);
                        }
                    }
                    // As an unreadable snapshot row: those visitors start afresh; the batch
                    // layer recomputes visits exactly.
                    Err(error) => warn!(%error, "unreadable visitor log entry ignored"),
                }
            }
            self.last_seq = log.last_seq;
            let watermark_us = store::event_watermark(&self.pool, self.shard)
                .await?
                .unwrap_or(i64::MIN);
            self.event_watermark_us = Some(watermark_us);
            // As the consumer before the restart had evicted them.
            self.evict_visitors(expire_before(watermark_us));
        }
        // Snapshot rows of expired visitors are deleted only with the next snapshot: until then
        // they are not states to resume from, exactly as if they were gone.
        let expired_before_us = expire_before(self.event_watermark_us.unwrap_or(i64::MIN));
        let mut wanted = HashSet::new();
        let mut missing = Vec::new();
        let mut sites = HashSet::new();
        for fact in batches.iter().flat_map(|b| &b.facts) {
            if !self.currencies.contains_key(&fact.site_id) {
                sites.insert(fact.site_id);
            }
            if fact.bot.is_some() {
                continue;
            }
            let hash = visitor_hash(fact.tenant_id, fact.site_id, &fact.visitor_id);
            if !self.visitors.contains_key(&hash) && wanted.insert(hash) {
                missing.push((fact.tenant_id, fact.site_id, fact.visitor_id.clone()));
            }
        }
        if !missing.is_empty() {
            for loaded in store::load_visitors(&self.pool, &missing).await? {
                match loaded {
                    Ok(v) if v.state.last_us < expired_before_us => {}
                    Ok(v) => {
                        let hash = visitor_hash(v.tenant_id, v.site_id, &v.visitor_id);
                        self.visitors.insert(hash, v);
                    }
                    // Unreadable state starts the visitor afresh rather than stopping the
                    // partition; the batch layer recomputes visits exactly.
                    Err(error) => warn!(%error, "unreadable visitor state ignored"),
                }
            }
        }
        if !sites.is_empty() {
            let ids: Vec<i64> = sites.into_iter().collect();
            for (id, currency) in store::site_currencies(&self.pool, &ids).await? {
                self.currencies.insert(id, currency);
            }
        }
        Ok(())
    }

    /// Loads the committed sketches of `keys` the cache lacks.
    async fn load_sketches(&mut self, keys: Vec<SketchKey>) -> Result<(), SinkError> {
        let missing: Vec<SketchKey> = keys
            .into_iter()
            .filter(|k| !self.sketches.contains_key(k))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let mut found: FastMap<SketchKey, VisitorSketch> = FastMap::default();
        for (key, bytes) in store::load_sketches(&self.pool, self.shard, &missing).await? {
            match VisitorSketch::from_bytes(&bytes) {
                Ok(sketch) => {
                    found.insert(key, sketch);
                }
                Err(error) => warn!(%error, "unreadable stored sketch replaced"),
            }
        }
        for key in missing {
            let sketch = found.remove(&key).unwrap_or_default();
            self.sketches.insert(key, sketch);
        }
        Ok(())
    }

    /// Forgets the visitors whose latest event is older than `expire_before_us`.
    fn evict_visitors(&mut self, expire_before_us: i64) {
        self.visitors
            .retain(|_, v| v.state.last_us >= expire_before_us);
        let visitors = &self.visitors;
        self.logged.retain(|hash| visitors.contains_key(hash));
    }

    /// Takes the outcome of the snapshot being written, when it is done.
    fn reap_snapshot(&mut self) {
        if self.snapshot.as_ref().is_some_and(|s| s.task.is_finished())
            && let Some(InFlight { visitors, task }) = self.snapshot.take()
        {
            // Finished: `now_or_never` has its outcome.
            let written = task
                .now_or_never()
                .unwrap_or_else(|| Ok(Err("unfinished".into())));
            self.snapshot_done(visitors, written);
        }
    }

    /// Takes a finished snapshot's outcome: when it was not written, its visitors wait for the
    /// next one, which the next flush starts.
    fn snapshot_done(
        &mut self,
        visitors: Vec<u128>,
        written: Result<Result<bool, String>, tokio::task::JoinError>,
    ) {
        let written = written.unwrap_or_else(|e| Err(format!("the snapshot task failed: {e}")));
        match written {
            Ok(true) => return,
            Ok(false) => warn!(
                shard = self.shard,
                "visitor snapshot not written: a later one covers the log already"
            ),
            Err(error) => {
                warn!(shard = self.shard, %error, "visitor snapshot failed, retried on the next flush")
            }
        }
        self.logged.extend(visitors);
        self.since_snapshot = self.settings.visitor_snapshot_flushes;
    }

    /// Starts writing the latest state of every visitor changed since the last snapshot, with
    /// the log up to its last entry (see [`store::write_snapshot`]).
    fn start_snapshot(&mut self, expire_before_us: i64) {
        let visitors: Vec<u128> = self.logged.drain().collect();
        let snapshot = Snapshot {
            shard: self.shard,
            rows: visitors
                .iter()
                .filter_map(|hash| self.visitors.get(hash))
                .map(SnapshotRow::of)
                .collect(),
            covers_seq: self.last_seq,
            expire_before_us,
        };
        let pool = self.pool.clone();
        self.since_snapshot = 0;
        let task = tokio::spawn(async move {
            store::write_snapshot(&pool, &snapshot)
                .await
                .map_err(|e| e.to_string())
        });
        self.snapshot = Some(InFlight { visitors, task });
    }

    /// Drops cached state no flush will need again: visitors whose visit ended, sketches of
    /// buckets the stream has moved past (a late event reloads them).
    fn evict(&mut self, expire_before_us: i64, watermark_us: i64) {
        self.evict_visitors(expire_before_us);
        let minute_horizon = watermark_us.saturating_sub(2 * 3_600_000_000);
        let hour_horizon = watermark_us.saturating_sub(26 * 3_600_000_000);
        self.sketches.retain(|k, _| match k.granularity {
            Granularity::Minute => k.bucket_us >= minute_horizon,
            _ => k.bucket_us >= hour_horizon,
        });
    }
}

#[async_trait::async_trait]
impl Sink for RollupSink {
    fn accept(&mut self, message: Incoming<'_>) -> Result<usize, Undecodable> {
        if let Some(kind) = message.kind
            && kind != EVENT_BATCH
        {
            return Err(Undecodable(format!(
                "unexpected message type {kind}, expected {EVENT_BATCH}"
            )));
        }
        let batch = EventBatch::decode(message.payload)
            .map_err(|e| Undecodable(format!("not an EventBatch: {e}")))?;
        let batch_id = match (batch.batch_id.as_str(), message.message_id) {
            ("", Some(id)) if !id.is_empty() => id.to_owned(),
            ("", _) => return Err(Undecodable("the batch has no id".into())),
            (id, _) => id.to_owned(),
        };
        let facts: Vec<Fact> = batch
            .events
            .iter()
            .map(|e| Fact::of(&self.enricher, e))
            .collect();
        let events = facts.len();
        self.buffered_events += events;
        self.buffer.push(Buffered { batch_id, facts });
        Ok(events)
    }

    fn buffered_events(&self) -> usize {
        self.buffered_events
    }

    fn is_full(&self) -> bool {
        self.buffered_events >= self.settings.max_buffered_events
    }

    async fn flush(&mut self) -> Result<usize, SinkError> {
        if self.buffer.is_empty() {
            return Ok(0);
        }
        let buffer = std::mem::take(&mut self.buffer);
        let result = self.flush_buffer(&buffer).await;
        match result {
            Ok(rolled_up) => {
                self.buffered_events = 0;
                Ok(rolled_up)
            }
            Err(e) => {
                self.buffer = buffer;
                Err(e)
            }
        }
    }

    fn reset(&mut self) {
        self.buffer.clear();
        self.buffered_events = 0;
    }

    async fn idle(&mut self) -> Result<(), SinkError> {
        store::advance_idle_watermark(&self.pool, self.shard, IDLE_MARGIN).await?;
        Ok(())
    }

    async fn close(&mut self) {
        if let Some(InFlight { visitors, task }) = self.snapshot.take() {
            let written = task.await;
            self.snapshot_done(visitors, written);
        }
    }
}

impl RollupSink {
    /// Commits `buffer`; returns the events it rolled up.
    async fn flush_buffer(&mut self, buffer: &[Buffered]) -> Result<usize, SinkError> {
        self.reap_snapshot();
        let batches = self.new_batches(buffer).await?;
        let fresh_events: u64 = batches.iter().map(|b| b.facts.len() as u64).sum();
        self.load_missing(&batches).await?;
        let now_us = chrono::Utc::now().timestamp_micros();
        let settings = FoldSettings {
            now_us,
            late_max_age_us: i64::try_from(self.settings.late_event_max_age_secs)
                .unwrap_or(i64::MAX / 1_000_000)
                .saturating_mul(1_000_000),
            buckets: aggregate::Buckets::Minutes,
        };
        let visitors = &self.visitors;
        let fold = aggregate::fold(
            batches.iter().flat_map(|b| &b.facts),
            |hash| visitors.get(&hash).cloned(),
            &self.currencies,
            settings,
        );

        // Full sketches after the flush: the committed ones united with this flush's visitors.
        let keyed: Vec<(SketchKey, &aggregate::RowDelta)> = fold
            .rows
            .iter()
            .map(|(key, delta)| (SketchKey::of(key, fold.values.get(key.value)), delta))
            .collect();
        self.load_sketches(
            keyed
                .iter()
                .filter(|(_, d)| d.visitors.is_some())
                .map(|(k, _)| k.clone())
                .collect(),
        )
        .await?;
        let mut merged: Vec<(SketchKey, VisitorSketch)> = Vec::new();
        let mut rows = Vec::with_capacity(keyed.len());
        for (key, delta) in &keyed {
            let visitors = match &delta.visitors {
                Some(new) => {
                    let mut sketch = self
                        .sketches
                        .get(key)
                        .cloned()
                        .unwrap_or_else(VisitorSketch::new);
                    sketch.merge(new);
                    let bytes = sketch.to_bytes();
                    merged.push((key.clone(), sketch));
                    bytes
                }
                None => Vec::new(),
            };
            rows.push(RowWrite {
                key: key.clone(),
                counters: &delta.counters,
                visitors,
            });
        }

        let watermark_us = self
            .event_watermark_us
            .unwrap_or(i64::MIN)
            .max(fold.event_until_us);
        let expire_before_us = expire_before(watermark_us);
        let batch_ids: Vec<String> = batches.iter().map(|b| b.batch_id.clone()).collect();
        self.flushes += 1;
        let prune = (self.flushes % PRUNE_EVERY_FLUSHES == 1)
            .then(|| i64::try_from(self.settings.batch_id_retention_hours).unwrap_or(i64::MAX));
        let visitors = fold
            .visitors
            .values()
            .filter(|v| v.state.last_us >= expire_before_us)
            .collect();
        let commit = Commit {
            shard: self.shard,
            batch_ids: &batch_ids,
            rows,
            visitors,
            received_until_us: fold.received_until_us,
            event_until_us: fold.event_until_us,
            prune_batches_hours: prune,
        };
        let logged_seq = match store::commit(&self.pool, commit).await {
            Ok(seq) => seq,
            Err(CommitError::Sql(e)) => return Err(e.into()),
            Err(e @ CommitError::Raced(_)) => return Err(SinkError::Database(e.to_string())),
        };

        // Committed: the caches follow the database.
        self.skipped("late", fold.late);
        self.skipped("duplicate_event", fold.duplicates);
        let rolled_up = fresh_events.saturating_sub(fold.late + fold.duplicates);
        if fold.received_until_us > i64::MIN {
            self.metrics
                .watermark_seconds
                .get_or_create(&GroupLabels { group: ROLLUP })
                .set(fold.received_until_us / 1_000_000);
        }
        self.event_watermark_us = Some(watermark_us);
        if logged_seq.is_some() {
            self.last_seq = logged_seq;
        }
        self.logged.extend(fold.visitors.keys().copied());
        self.since_snapshot += 1;
        self.visitors.extend(fold.visitors);
        self.sketches.extend(merged);
        self.evict(expire_before_us, watermark_us);
        if self.since_snapshot >= self.settings.visitor_snapshot_flushes && self.snapshot.is_none()
        {
            self.start_snapshot(expire_before_us);
        }
        Ok(usize::try_from(rolled_up).unwrap_or(usize::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::first_snapshot_after;

    #[test]
    fn partitions_take_their_first_snapshots_in_turn() {
        let turns: Vec<u64> = (0..8).map(|p| first_snapshot_after(60, (p, 8))).collect();
        assert_eq!(turns, [7, 15, 22, 30, 37, 45, 52, 60]);
        assert_eq!(
            first_snapshot_after(60, (0, 1)),
            60,
            "one partition: a whole interval"
        );
        assert_eq!(
            (0..8)
                .map(|p| first_snapshot_after(1, (p, 8)))
                .collect::<Vec<_>>(),
            [1; 8],
            "never before the first flush"
        );
    }
}
