//! One archive queue's buffer and its flush protocol with the ledger.

use std::{
    collections::HashSet,
    sync::Arc,
    time::{Duration, Instant},
};

use sightline_db::{ArchiveFlushState, ArchiveLedger};
use sightline_lake::ObjectStore;
use tokio::sync::Semaphore;
use tracing::{debug, error, info, warn};
use uuid::Uuid;

use super::batch::Archived;
use crate::{
    config::{ARCHIVE, ArchiveConfig},
    metrics::{GroupLabels, StreamMetrics},
    sink::{Incoming, Sink, SinkError, Undecodable},
};

/// Ledger rows are pruned at most this often per sink.
const PRUNE_EVERY: Duration = Duration::from_secs(600);
/// Flushes forgotten by one prune at most (keeps the delete short).
const PRUNE_LIMIT: i64 = 10_000;

/// Buffers the batches of one queue and writes them to the lake exactly once (see the module
/// documentation of [`crate::archive`] for the protocol).
pub struct ArchiveSink<B: Archived> {
    queue: String,
    ledger: Arc<dyn ArchiveLedger>,
    lake: Arc<dyn ObjectStore>,
    settings: ArchiveConfig,
    metrics: StreamMetrics,
    /// Permits to encode, shared by the archive sinks of a process.
    encoders: Arc<Semaphore>,
    /// Accepted batches, each batch id once.
    buffer: Vec<B>,
    ids: HashSet<String>,
    events: usize,
    bytes: usize,
    last_prune: Option<Instant>,
}

impl<B: Archived> ArchiveSink<B> {
    /// The sink of `queue` (the ledger's name for it), writing to `lake`, encoding whenever it
    /// flushes (see [`ArchiveSink::with_encoders`]).
    pub fn new(
        queue: String,
        ledger: Arc<dyn ArchiveLedger>,
        lake: Arc<dyn ObjectStore>,
        settings: ArchiveConfig,
        metrics: StreamMetrics,
    ) -> Self {
        Self {
            queue,
            ledger,
            lake,
            settings,
            metrics,
            encoders: Arc::new(Semaphore::new(1)),
            buffer: Vec::new(),
            ids: HashSet::new(),
            events: 0,
            bytes: 0,
            last_prune: None,
        }
    }

    /// Shares `encoders` with other sinks: a flush encodes only while it holds one of its
    /// permits, so the sinks of a process encode at most that many flushes at once and leave
    /// the other cores to the rest of the process (the rollup group, taking messages).
    pub fn with_encoders(mut self, encoders: Arc<Semaphore>) -> Self {
        self.encoders = encoders;
        self
    }

    fn clear(&mut self) {
        self.buffer.clear();
        self.ids.clear();
        self.events = 0;
        self.bytes = 0;
    }

    /// Step 1: asks the ledger about the buffered batches. Batches of a stored flush are
    /// dropped (their objects exist; their messages are still acknowledged). A pending flush
    /// is an attempt that never finished: its objects (maybe partial) are deleted and it is
    /// forgotten, so its batches are written anew. Nothing here depends on the buffer's
    /// grouping, so a later attempt finds the same state again.
    async fn reconcile(&mut self) -> Result<(), SinkError> {
        let ids: Vec<String> = self
            .buffer
            .iter()
            .map(|b| b.batch_id().to_owned())
            .collect();
        let known = self
            .ledger
            .archive_flushes_holding(&self.queue, &ids)
            .await?;
        let mut stored = HashSet::new();
        for flush in known {
            match flush.state {
                ArchiveFlushState::Stored => stored.extend(flush.batch_ids),
                ArchiveFlushState::Pending => {
                    warn!(flush = %flush.flush_id, objects = flush.keys.len(), "cleaning up an unfinished flush");
                    for key in &flush.keys {
                        self.lake.delete(key).await?;
                    }
                    self.ledger.forget_archive_flush(flush.flush_id).await?;
                }
            }
        }
        if !stored.is_empty() {
            let before = self.buffer.len();
            self.buffer.retain(|b| !stored.contains(b.batch_id()));
            self.ids.retain(|id| !stored.contains(id));
            self.events = self.buffer.iter().map(Archived::event_count).sum();
            info!(
                batches = before - self.buffer.len(),
                "batches archived by an earlier flush skipped"
            );
        }
        Ok(())
    }

    /// Steps 2 to 4: records the intent, writes the objects, marks the flush stored.
    async fn write(&mut self) -> Result<(), SinkError> {
        let keys = B::keys(&self.buffer)?;
        let ids: Vec<String> = self
            .buffer
            .iter()
            .map(|b| b.batch_id().to_owned())
            .collect();
        let flush_id = Uuid::now_v7();
        self.ledger
            .begin_archive_flush(flush_id, &self.queue, &keys, &ids)
            .await?;
        let objects = self.encode().await?;
        let written = sightline_lake::put_all(&*self.lake, objects).await?;
        if written != keys {
            // Cannot happen (planning and writing share their grouping); if it did, objects
            // outside the intent would escape a later cleanup.
            error!(flush = %flush_id, ?keys, ?written, "written keys differ from the planned ones");
        }
        self.ledger.finish_archive_flush(flush_id).await?;
        debug!(flush = %flush_id, batches = ids.len(), objects = keys.len(), "archived");
        Ok(())
    }

    /// The buffer's objects, encoded on a blocking thread once an encoder permit is free: a
    /// flush's Parquet and zstd take up to a core for tenths of a second, which on a runtime
    /// worker would stall the other queues' consumers (and their acknowledgements) behind it.
    /// The permit goes with the thread, so it is held for as long as the encoding runs. The
    /// buffer is shared with that thread, not moved, so it is still here if encoding panics or
    /// the task never runs.
    async fn encode(&mut self) -> Result<Vec<(String, prost::bytes::Bytes)>, SinkError> {
        let permit = Arc::clone(&self.encoders)
            .acquire_owned()
            .await
            .map_err(|_| SinkError::Lake("the encoders are closed".into()))?;
        let shared = Arc::new(std::mem::take(&mut self.buffer));
        let batches = Arc::clone(&shared);
        let encoded = tokio::task::spawn_blocking(move || {
            let objects = B::objects(&batches);
            drop(permit);
            objects
        })
        .await;
        self.buffer = Arc::try_unwrap(shared).unwrap_or_else(|shared| (*shared).clone());
        match encoded {
            Ok(objects) => Ok(objects?),
            Err(error) => Err(SinkError::Lake(format!("encoding failed: {error}"))),
        }
    }

    /// Forgets old stored flushes now and then; a failure only delays it.
    async fn maybe_prune(&mut self) {
        if self.last_prune.is_some_and(|t| t.elapsed() < PRUNE_EVERY) {
            return;
        }
        self.last_prune = Some(Instant::now());
        let hours = i64::try_from(self.settings.ledger_retention_hours).unwrap_or(i64::MAX);
        let before = chrono::Utc::now() - chrono::TimeDelta::try_hours(hours).unwrap_or_default();
        match self.ledger.prune_archive_ledger(before, PRUNE_LIMIT).await {
            Ok(0) => {}
            Ok(pruned) => debug!(pruned, "archive ledger pruned"),
            Err(error) => warn!(%error, "archive ledger prune failed, retried later"),
        }
    }

    fn record_watermark(&self) {
        let Some(until_us) = self.buffer.iter().filter_map(B::received_until_us).max() else {
            return;
        };
        let gauge = self
            .metrics
            .watermark_seconds
            .get_or_create(&GroupLabels { group: ARCHIVE });
        let seconds = until_us / 1_000_000;
        if seconds > gauge.get() {
            gauge.set(seconds);
        }
    }
}

#[async_trait::async_trait]
impl<B: Archived> Sink for ArchiveSink<B> {
    fn accept(&mut self, message: Incoming<'_>) -> Result<usize, Undecodable> {
        if let Some(kind) = message.kind
            && kind != B::KIND
        {
            return Err(Undecodable(format!(
                "unexpected message type {kind}, expected {}",
                B::KIND
            )));
        }
        let mut batch = B::decode(message.payload)
            .map_err(|e| Undecodable(format!("not a {}: {e}", B::KIND)))?;
        if batch.batch_id().is_empty() {
            match message.message_id {
                Some(id) if !id.is_empty() => batch.set_batch_id(id.to_owned()),
                _ => return Err(Undecodable("the batch has no id".into())),
            }
        }
        // A batch the lake cannot place (an event time outside the calendar) would fail every
        // flush of the partition: refuse it here, alone.
        B::keys(std::slice::from_ref(&batch))
            .map_err(|e| Undecodable(format!("cannot be archived: {e}")))?;
        // A redelivery inside one buffer: the message is acknowledged with the others, the
        // batch is written once.
        let events = batch.event_count();
        if self.ids.insert(batch.batch_id().to_owned()) {
            self.events += events;
            self.bytes += message.payload.len();
            self.buffer.push(batch);
        }
        Ok(events)
    }

    fn buffered_events(&self) -> usize {
        self.events
    }

    fn is_full(&self) -> bool {
        self.events >= self.settings.max_buffered_events
            || self.bytes >= self.settings.max_buffered_bytes
    }

    async fn flush(&mut self) -> Result<usize, SinkError> {
        if self.buffer.is_empty() {
            return Ok(0);
        }
        // Any error leaves the buffer as it is (less batches already stored): the retry starts
        // again at step 1, which also cleans up this attempt's pending flush.
        self.reconcile().await?;
        let archived = self.events;
        if !self.buffer.is_empty() {
            self.write().await?;
            self.record_watermark();
        }
        self.clear();
        self.maybe_prune().await;
        Ok(archived)
    }

    fn reset(&mut self) {
        self.clear();
    }
}

#[cfg(test)]
mod tests {
    use prost::Message as _;
    use sightline_proto::events::v1::{Event, EventBatch};

    use super::*;
    use crate::archive::EVENT_BATCH;
    use stubs::Untouched;

    /// Stand-ins for the database and the lake: `accept` must touch neither.
    mod stubs {
        use sightline_db::{ArchiveFlush, ArchiveLedger, DbError};
        use sightline_lake::{LakeError, ObjectStore};

        #[derive(Debug)]
        pub struct Untouched;

        #[async_trait::async_trait]
        impl ArchiveLedger for Untouched {
            async fn archive_flushes_holding(
                &self,
                _: &str,
                _: &[String],
            ) -> Result<Vec<ArchiveFlush>, DbError> {
                unreachable!("accept does not read the ledger")
            }
            async fn begin_archive_flush(
                &self,
                _: uuid::Uuid,
                _: &str,
                _: &[String],
                _: &[String],
            ) -> Result<(), DbError> {
                unreachable!()
            }
            async fn finish_archive_flush(&self, _: uuid::Uuid) -> Result<(), DbError> {
                unreachable!()
            }
            async fn forget_archive_flush(&self, _: uuid::Uuid) -> Result<(), DbError> {
                unreachable!()
            }
            async fn prune_archive_ledger(
                &self,
                _: chrono::DateTime<chrono::Utc>,
                _: i64,
            ) -> Result<u64, DbError> {
                unreachable!()
            }
        }

        #[async_trait::async_trait]
        impl ObjectStore for Untouched {
            async fn put(&self, _: &str, _: prost::bytes::Bytes) -> Result<(), LakeError> {
                unreachable!("accept does not write")
            }
            async fn get(&self, _: &str) -> Result<prost::bytes::Bytes, LakeError> {
                unreachable!()
            }
            async fn list(&self, _: &str) -> Result<Vec<String>, LakeError> {
                unreachable!()
            }
            async fn delete(&self, _: &str) -> Result<(), LakeError> {
                unreachable!()
            }
        }
    }

    fn sink(max_events: usize, max_bytes: usize) -> ArchiveSink<EventBatch> {
        ArchiveSink::new(
            "q".into(),
            Arc::new(Untouched),
            Arc::new(Untouched),
            ArchiveConfig {
                flush_interval_ms: 1000,
                max_buffered_events: max_events,
                max_buffered_bytes: max_bytes,
                ledger_retention_hours: 1,
                encoders: 1,
            },
            StreamMetrics::register(&sightline_kit::telemetry::Metrics::new()),
        )
    }

    fn batch(id: &str, events: usize, timestamp_us: i64) -> Vec<u8> {
        EventBatch {
            batch_id: id.into(),
            events: (0..events)
                .map(|n| Event {
                    message_id: format!("{id}-{n}"),
                    tenant_id: 1,
                    timestamp_us,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
        .encode_to_vec()
    }

    fn incoming<'a>(payload: &'a [u8], id: Option<&'a str>, kind: Option<&'a str>) -> Incoming<'a> {
        Incoming {
            message_id: id,
            kind,
            redelivered: false,
            payload,
        }
    }

    #[test]
    fn unreadable_or_unplaceable_batches_are_refused_alone() {
        let mut s = sink(100, 1 << 20);
        let garbage = [0xffu8; 12];
        let (typed, unnamed, timeless) =
            (batch("b", 1, 0), batch("", 1, 0), batch("t", 1, i64::MAX));
        let refused = [
            (incoming(&garbage, Some("g"), Some(EVENT_BATCH)), "not a"),
            (
                incoming(&typed, Some("b"), Some("other.Type")),
                "unexpected message type",
            ),
            (incoming(&unnamed, None, None), "no id"),
            (incoming(&timeless, Some("t"), None), "cannot be archived"),
        ];
        for (message, reason) in refused {
            let error = s.accept(message).unwrap_err();
            assert!(error.0.contains(reason), "{error} lacks {reason}");
        }
        assert_eq!(s.buffered_events(), 0);
        // The message id stands in for a missing batch id.
        s.accept(incoming(&batch("", 2, 0), Some("from-message"), None))
            .unwrap();
        assert_eq!(s.buffer[0].batch_id, "from-message");
    }

    #[test]
    fn a_batch_redelivered_into_the_same_buffer_is_kept_once() {
        let mut s = sink(100, 1 << 20);
        let a = batch("a", 3, 0);
        s.accept(incoming(&a, Some("a"), Some(EVENT_BATCH)))
            .unwrap();
        s.accept(incoming(&a, Some("a"), Some(EVENT_BATCH)))
            .unwrap();
        assert_eq!((s.buffer.len(), s.buffered_events()), (1, 3));
        s.reset();
        assert_eq!((s.buffer.len(), s.buffered_events()), (0, 0));
    }

    #[tokio::test]
    async fn a_flush_encodes_only_while_it_holds_an_encoder_permit() {
        let encoders = Arc::new(Semaphore::new(1));
        let mut s = sink(100, 1 << 20).with_encoders(encoders.clone());
        s.accept(incoming(&batch("a", 3, 0), Some("a"), None))
            .unwrap();
        // Another sink's flush is encoding.
        let busy = encoders.clone().acquire_owned().await.unwrap();
        {
            let mut encode = std::pin::pin!(s.encode());
            let waited =
                tokio::time::timeout(std::time::Duration::from_millis(200), &mut encode).await;
            assert!(waited.is_err(), "encoded while no permit was free");
            drop(busy);
            let objects = encode.await.unwrap();
            assert_eq!(objects.len(), 1, "one tenant and hour, one object");
        }
        assert_eq!(encoders.available_permits(), 1, "the permit was given back");
        assert_eq!(
            s.buffered_events(),
            3,
            "the buffer stays until the flush is stored"
        );
        assert_eq!(s.buffer.len(), 1);
    }

    #[test]
    fn either_size_bound_fills_the_buffer() {
        let mut by_events = sink(5, 1 << 20);
        by_events
            .accept(incoming(&batch("a", 4, 0), Some("a"), None))
            .unwrap();
        assert!(!by_events.is_full());
        by_events
            .accept(incoming(&batch("b", 1, 0), Some("b"), None))
            .unwrap();
        assert!(by_events.is_full());

        let payload = batch("c", 1, 0);
        let mut by_bytes = sink(100, payload.len());
        by_bytes
            .accept(incoming(&payload, Some("c"), None))
            .unwrap();
        assert!(by_bytes.is_full());
    }
}
