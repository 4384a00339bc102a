//! Broker clients for Sightline's event stream.
//!
//! Producers see a [`Publisher`]: it sends a [`Message`] to a [`Route`] and resolves only when
//! the broker has confirmed it, republishing through reconnects until the caller's deadline.
//! Consumers see a [`Subscription`] of [`Delivery`]s that they acknowledge once their effects are
//! durable. The RabbitMQ backend ([`rabbitmq`]) is the one here; a Kinesis backend and an
//! in-process one for the single binary implement the same traits, so callers do not change.
//!
//! Pitfalls are listed in this crate's README.

pub mod config;
mod delivery;
pub mod encoding;
pub mod rabbitmq;
pub mod topology;

use std::time::Instant;

use bytes::Bytes;

pub use config::{BrokerConfig, BrokerKind};
pub use delivery::{Delivery, Subscription};
pub use encoding::{Compression, Unreadable};
pub use topology::{Route, Topology, partition_for};

/// The content type of every Sightline message.
pub const CONTENT_TYPE_PROTOBUF: &str = "application/x-protobuf";

/// One message to publish.
#[derive(Debug, Clone)]
pub struct Message {
    /// Where it goes.
    pub route: Route,
    /// The message id (the batch id): consumers dedupe on it.
    pub id: String,
    /// The protobuf type name of `payload`, such as `sightline.events.v1.EventBatch`.
    pub kind: &'static str,
    /// The encoded protobuf.
    pub payload: Bytes,
    /// W3C trace context to continue on the consumer side.
    pub traceparent: Option<String>,
}

/// Why a message was not confirmed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BrokerError {
    /// No confirm before the deadline (broker down, reconnecting, or too slow).
    #[error("the broker did not confirm before the deadline")]
    Timeout,
    /// The broker accepted the message but no queue was bound to its route.
    #[error("no queue is bound to route {0:?}")]
    Unroutable(Route),
    /// The publisher was closed.
    #[error("the publisher is closed")]
    Closed,
    /// A broker protocol or connection error.
    #[error("broker error: {0}")]
    Protocol(String),
}

/// Publishes messages and waits for the broker to confirm them.
#[async_trait::async_trait]
pub trait Publisher: Send + Sync + 'static {
    /// Publishes `message` and resolves when the broker confirmed it. On a lost connection the
    /// message is published again on the next one; gives up with [`BrokerError::Timeout`] at
    /// `deadline`. A message may reach the broker more than once; consumers dedupe by id.
    async fn publish(&self, message: &Message, deadline: Instant) -> Result<(), BrokerError>;

    /// Stops publishing and closes connections. Call after callers have drained.
    async fn close(&self);
}
