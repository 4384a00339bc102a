//! The two kinds of batch the archive stores: raw events (`raw/`) and invalid events
//! (`errors/`), behind one trait so one sink serves both.

use prost::Message;
use prost::bytes::Bytes;
use sightline_lake::{
    LakeError, encode_invalid_batches, encode_raw_batches, invalid_keys, raw_keys,
};
use sightline_proto::events::v1::{EventBatch, InvalidEventBatch};

/// The protobuf type name of partition messages.
pub const EVENT_BATCH: &str = "sightline.events.v1.EventBatch";
/// The protobuf type name of invalid-queue messages.
pub const INVALID_EVENT_BATCH: &str = "sightline.events.v1.InvalidEventBatch";

/// A broker batch the archive writes to the lake.
pub trait Archived: Message + Default + Clone + Send + Sync + 'static {
    /// The protobuf type name publishers set as the message type.
    const KIND: &'static str;

    /// The batch id (also the message id).
    fn batch_id(&self) -> &str;

    /// Replaces the batch id (when only the message carried it).
    fn set_batch_id(&mut self, id: String);

    /// Events in the batch.
    fn event_count(&self) -> usize;

    /// Newest receipt time in the batch (µs), for the freshness gauge; `None` when the batch
    /// says nothing about the raw stream's freshness.
    fn received_until_us(&self) -> Option<i64>;

    /// The object keys writing `batches` produces, without writing (the flush's intent).
    fn keys(batches: &[Self]) -> Result<Vec<String>, LakeError>;

    /// The objects of `batches` at their deterministic keys, in [`Archived::keys`]' order.
    /// CPU-bound (Parquet and zstd).
    fn objects(batches: &[Self]) -> Result<Vec<(String, Bytes)>, LakeError>;
}

impl Archived for EventBatch {
    const KIND: &'static str = EVENT_BATCH;

    fn batch_id(&self) -> &str {
        &self.batch_id
    }

    fn set_batch_id(&mut self, id: String) {
        self.batch_id = id;
    }

    fn event_count(&self) -> usize {
        self.events.len()
    }

    fn received_until_us(&self) -> Option<i64> {
        self.events.iter().map(|e| e.received_at_us).max()
    }

    fn keys(batches: &[Self]) -> Result<Vec<String>, LakeError> {
        raw_keys(batches)
    }

    fn objects(batches: &[Self]) -> Result<Vec<(String, Bytes)>, LakeError> {
        encode_raw_batches(batches)
    }
}

impl Archived for InvalidEventBatch {
    const KIND: &'static str = INVALID_EVENT_BATCH;

    fn batch_id(&self) -> &str {
        &self.batch_id
    }

    fn set_batch_id(&mut self, id: String) {
        self.batch_id = id;
    }

    fn event_count(&self) -> usize {
        self.events.len()
    }

    fn received_until_us(&self) -> Option<i64> {
        None
    }

    fn keys(batches: &[Self]) -> Result<Vec<String>, LakeError> {
        invalid_keys(batches)
    }

    fn objects(batches: &[Self]) -> Result<Vec<(String, Bytes)>, LakeError> {
        encode_invalid_batches(batches)
    }
}
