//! Window reports to the etl-metrics run ledger: every `stream.report_interval_ms`, one report
//! per partition queue of the groups this process runs (events taken from the broker, events
//! made durable, messages dead-lettered), with the partition's lag, through the ledger client's
//! durable outbox (`sightline-ledger`). Off while `stream.ledger_endpoint` is empty.
//!
//! A partition reports every window, idle or not: a window with nothing taken and a growing
//! lag is how a stalled consumer shows. Events taken but neither made durable nor rejected
//! were redeliveries of work already done, or (rollup group) late events left to the batch
//! layer.
//!
//! Windows are this process's own: the first starts when the process does, each next one where
//! the last ended. So two replicas that both consumed a partition during a failover report two
//! windows, not one key twice (the ledger keeps the first write of a key).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use chrono::{DateTime, Utc};
use sightline_ledger::{LedgerClient, StreamWindow};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::{
    Context,
    config::{ARCHIVE, ROLLUP},
    metrics::GroupLabels,
};

/// The pipeline name of stream windows in the ledger.
pub const PIPELINE: &str = "stream";

/// What one partition queue did since the last report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WindowCounts {
    /// Events taken from the broker (accepted into a buffer; a redelivery counts again).
    pub events_in: u64,
    /// Events made durable (rolled up or archived) for the first time.
    pub events_out: u64,
    /// Messages dead-lettered (undecodable: their events cannot be counted, so each is one).
    pub rejected: u64,
}

/// Per-queue counters the consumers add to and the reporter takes.
#[derive(Debug, Clone, Default)]
pub struct WindowCounters {
    inner: Arc<Mutex<HashMap<String, WindowCounts>>>,
}

impl WindowCounters {
    /// `events` of `queue` were taken from the broker.
    pub fn taken(&self, queue: &str, events: usize) {
        self.add(queue, |c| c.events_in += events as u64);
    }

    /// `events` of `queue` were made durable.
    pub fn flushed(&self, queue: &str, events: usize) {
        self.add(queue, |c| c.events_out += events as u64);
    }

    /// A message of `queue` was dead-lettered.
    pub fn dead_lettered(&self, queue: &str) {
        self.add(queue, |c| c.rejected += 1);
    }

    fn add(&self, queue: &str, f: impl FnOnce(&mut WindowCounts)) {
        if let Ok(mut map) = self.inner.lock() {
            f(map.entry(queue.to_string()).or_default());
        }
    }

    /// The counts since the last call, and zero from here.
    pub fn take(&self) -> HashMap<String, WindowCounts> {
        self.inner
            .lock()
            .map(|mut map| std::mem::take(&mut *map))
            .unwrap_or_default()
    }
}

/// Starts the reporter and the ledger client's delivery loop, when an endpoint is configured.
pub(crate) fn start(ctx: &Context, tasks: &mut JoinSet<()>, stop: CancellationToken) {
    let stream = &ctx.config.stream;
    if stream.ledger_endpoint.trim().is_empty() {
        return;
    }
    let client = LedgerClient::new(
        Some(stream.ledger_endpoint.clone()),
        ctx.store.pool().clone(),
    );
    let every = Duration::from_millis(stream.report_interval_ms);
    tasks.spawn(client.clone().deliver_periodically(every, stop.clone()));
    let reporter = Reporter {
        client,
        counters: ctx.metrics.windows.clone(),
        metrics: ctx.metrics.clone(),
        pool: ctx.store.pool().clone(),
        queues: ctx
            .config
            .broker
            .topology()
            .partition_queues()
            .filter(|(group, _, _)| stream.runs(group))
            .map(|(group, partition, queue)| (queue, (group, partition)))
            .collect(),
    };
    tasks.spawn(reporter.run(every, stop));
}

struct Reporter {
    client: LedgerClient,
    counters: WindowCounters,
    metrics: crate::metrics::StreamMetrics,
    pool: sqlx::PgPool,
    /// Queue name → (group, partition).
    queues: HashMap<String, (String, u32)>,
}

impl Reporter {
    async fn run(self, every: Duration, stop: CancellationToken) {
        let mut window_start = Utc::now();
        let mut stopping = false;
        while !stopping {
            tokio::select! {
                _ = stop.cancelled() => stopping = true,
                _ = tokio::time::sleep(every) => {}
            }
            let window_end = Utc::now();
            self.report(window_start, window_end).await;
            window_start = window_end;
        }
    }

    async fn report(&self, start: DateTime<Utc>, end: DateTime<Utc>) {
        // The invalid queue's counts are not a partition's: its events were refused by ingest
        // and are counted there.
        let mut counts = self.counters.take();
        let rollup_watermarks = if self.queues.values().any(|(group, _)| group == ROLLUP) {
            self.rollup_watermarks().await
        } else {
            HashMap::new()
        };
        for (queue, (group, partition)) in &self.queues {
            let c = counts.remove(queue).unwrap_or_default();
            let received_until = match group.as_str() {
                ROLLUP => rollup_watermarks.get(partition).copied(),
                ARCHIVE => {
                    let seconds = self
                        .metrics
                        .watermark_seconds
                        .get_or_create(&GroupLabels { group: ARCHIVE })
                        .get();
                    // 0: nothing archived yet by this process, so no lag to tell.
                    (seconds > 0)
                        .then(|| DateTime::from_timestamp(seconds, 0))
                        .flatten()
                }
                _ => None,
            };
            let lag_ms = received_until
                .map(|t| (end - t).num_milliseconds().max(0))
                .unwrap_or_default();
            let window = StreamWindow {
                pipeline: PIPELINE.to_string(),
                consumer_group: group.clone(),
                partition: *partition,
                window_start: start,
                window_end: end,
                version: env!("CARGO_PKG_VERSION").to_string(),
                events_in: i64::try_from(c.events_in + c.rejected).unwrap_or(i64::MAX),
                events_out: i64::try_from(c.events_out).unwrap_or(i64::MAX),
                events_rejected: i64::try_from(c.rejected).unwrap_or(i64::MAX),
                lag_ms,
            };
            if let Err(error) = self.client.report_stream_window(window).await {
                warn!(%error, queue = %queue, "cannot record a stream window report");
            }
        }
    }

    /// Receipt watermarks of the rollup partitions; empty when the database does not answer.
    async fn rollup_watermarks(&self) -> HashMap<u32, DateTime<Utc>> {
        let rows: Result<Vec<(i32, DateTime<Utc>)>, _> =
            sqlx::query_as("SELECT shard, received_until FROM rollup_watermarks")
                .fetch_all(&self.pool)
                .await;
        rows.unwrap_or_default()
            .into_iter()
            .filter_map(|(shard, t)| Some((u32::try_from(shard).ok()?, t)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_add_per_queue_and_start_over_when_taken() {
        let c = WindowCounters::default();
        c.taken("ns.rollup.p0", 16);
        c.flushed("ns.rollup.p0", 10);
        c.flushed("ns.rollup.p0", 5);
        c.dead_lettered("ns.rollup.p1");
        let taken = c.take();
        assert_eq!(
            taken["ns.rollup.p0"],
            WindowCounts {
                events_in: 16,
                events_out: 15,
                rejected: 0
            }
        );
        assert_eq!(taken["ns.rollup.p1"].rejected, 1);
        assert!(c.take().is_empty());
    }
}
