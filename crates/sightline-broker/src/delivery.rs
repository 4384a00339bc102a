//! What consumers receive, the same for every backend.

use crate::BrokerError;

/// How a delivery is settled with the backend it came from.
pub(crate) enum Settle {
    /// A RabbitMQ delivery tag on its channel, and where dead letters go.
    Rabbit {
        acker: lapin::Acker,
        dead_letters: crate::rabbitmq::consumer::DeadLetters,
    },
}

/// A message taken from the broker; the broker keeps it until [`Delivery::ack`].
pub struct Delivery {
    /// The message id (the batch id) set by the publisher.
    pub message_id: Option<String>,
    /// The protobuf type name of the payload.
    pub kind: Option<String>,
    /// The W3C trace context the publisher sent.
    pub traceparent: Option<String>,
    /// Whether the broker delivered this message before (a consumer died holding it).
    pub redelivered: bool,
    /// Earlier deliveries of this message that were given back (RabbitMQ quorum queues'
    /// `x-delivery-count`); the broker dead-letters it once this reaches the delivery limit.
    pub delivery_count: u32,
    /// The encoded protobuf, decoded from the wire's content encoding.
    pub payload: Vec<u8>,
    /// Set when the payload could not be decoded from its content encoding: `payload` then
    /// holds the bytes as received, and the consumer should dead-letter the message with
    /// this reason (a dead letter keeps the encoding, so it stays readable).
    pub unreadable: Option<crate::Unreadable>,
    pub(crate) settle: Settle,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("message_id", &self.message_id)
            .field("kind", &self.kind)
            .field("redelivered", &self.redelivered)
            .field("bytes", &self.payload.len())
            .finish_non_exhaustive()
    }
}

impl Delivery {
    /// Acknowledges: the broker forgets the message. Call only once its effects are durable.
    pub async fn ack(&self) -> Result<(), BrokerError> {
        match &self.settle {
            Settle::Rabbit { acker, .. } => acker
                .ack(lapin::options::BasicAckOptions::default())
                .await
                .map(|_| ())
                .map_err(|e| BrokerError::Protocol(e.to_string())),
        }
    }

    /// Gives the message back: redelivered when `requeue`, else dead-lettered (RabbitMQ also
    /// dead-letters a message once its delivery limit is reached).
    pub async fn nack(&self, requeue: bool) -> Result<(), BrokerError> {
        match &self.settle {
            Settle::Rabbit { acker, .. } => acker
                .nack(lapin::options::BasicNackOptions {
                    requeue,
                    ..Default::default()
                })
                .await
                .map(|_| ())
                .map_err(|e| BrokerError::Protocol(e.to_string())),
        }
    }
}

impl Delivery {
    /// Moves the message to the dead-letter queue with `reason` (a header operators read),
    /// waiting for the broker to confirm the copy before acknowledging the original: a message
    /// the consumer can never process is kept for inspection, not lost and not retried forever.
    pub async fn dead_letter(&self, queue: &str, reason: &str) -> Result<(), BrokerError> {
        match &self.settle {
            Settle::Rabbit { dead_letters, .. } => {
                dead_letters.publish(self, queue, reason).await?
            }
        }
        self.ack().await
    }
}

/// A stream of deliveries from one queue or shard.
#[async_trait::async_trait]
pub trait Subscription: Send {
    /// The next delivery; `None` once the subscription ended (cancelled or disconnected).
    async fn next(&mut self) -> Option<Result<Delivery, BrokerError>>;
}
