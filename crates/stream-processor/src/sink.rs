//! What a consumer group does with the messages of one queue.
//!
//! A [`Sink`] buffers decoded messages and makes them durable in [`Sink::flush`]. The
//! [`crate::consumer::PartitionConsumer`] around it owns the broker side: it acknowledges the
//! messages of a flush only after the flush succeeded, retries a failed flush with backoff while
//! holding them, and dead-letters messages the sink cannot decode.

/// One message as the broker delivered it.
#[derive(Debug, Clone, Copy)]
pub struct Incoming<'a> {
    /// The message id (the batch id) the publisher set.
    pub message_id: Option<&'a str>,
    /// The protobuf type name the publisher set.
    pub kind: Option<&'a str>,
    /// Whether the broker delivered it before.
    pub redelivered: bool,
    /// The encoded payload.
    pub payload: &'a [u8],
}

/// Why a message cannot be processed, ever: it is dead-lettered with this reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Undecodable(pub String);

/// Why a flush failed; the consumer retries it after a backoff.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The serving database refused or could not be reached.
    #[error("database: {0}")]
    Database(String),
    /// The lake refused or could not be reached.
    #[error("lake: {0}")]
    Lake(String),
}

impl SinkError {
    /// A short label for metrics and readiness (`database`, `lake`).
    pub fn target(&self) -> &'static str {
        match self {
            SinkError::Database(_) => "database",
            SinkError::Lake(_) => "lake",
        }
    }
}

impl From<sqlx::Error> for SinkError {
    fn from(e: sqlx::Error) -> Self {
        SinkError::Database(e.to_string())
    }
}

impl From<sightline_db::DbError> for SinkError {
    fn from(e: sightline_db::DbError) -> Self {
        SinkError::Database(e.to_string())
    }
}

impl From<sightline_lake::LakeError> for SinkError {
    fn from(e: sightline_lake::LakeError) -> Self {
        SinkError::Lake(e.to_string())
    }
}

/// A consumer group's processing of one queue.
#[async_trait::async_trait]
pub trait Sink: Send + 'static {
    /// Decodes and buffers one message; returns the events it holds. On `Err` nothing is
    /// buffered and the consumer dead-letters the message once its delivery limit is reached.
    fn accept(&mut self, message: Incoming<'_>) -> Result<usize, Undecodable>;

    /// Events buffered since the last flush.
    fn buffered_events(&self) -> usize;

    /// Whether a size bound is reached: flush now rather than at the interval.
    fn is_full(&self) -> bool;

    /// Makes everything accepted since the last successful flush durable. On `Ok` the consumer
    /// acknowledges those messages; on `Err` it keeps them, and calls `flush` again after a
    /// backoff, so the sink must keep its buffer (and any state derived from it) as it was
    /// before the failed attempt.
    ///
    /// Returns the events this flush wrote: not those an earlier flush had already made durable
    /// (redelivered batches, repeated events), nor those the group leaves to others (the rollup
    /// group's late events, left to the batch layer).
    async fn flush(&mut self) -> Result<usize, SinkError>;

    /// Forgets the buffer: the broker connection holding its messages was lost, so they come
    /// again. State already made durable stays.
    fn reset(&mut self);

    /// The queue is drained: nothing buffered, nothing unacknowledged, and no delivery for
    /// [`IDLE_AFTER`](crate::consumer::IDLE_AFTER). A sink that publishes a watermark moves it
    /// forward here, so an idle partition does not hold its group's freshness back. Failures
    /// are only logged: the next heartbeat tries again.
    async fn idle(&mut self) -> Result<(), SinkError> {
        Ok(())
    }

    /// The consumer stops: finish any work the sink runs beside its flushes.
    async fn close(&mut self) {}
}
