//! Consuming a queue with manual acknowledgements.

use futures_util::StreamExt;
use lapin::{
    Channel, Connection,
    options::{BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions},
    types::{AMQPValue, FieldTable},
};

use crate::BrokerError;

fn protocol(e: lapin::Error) -> BrokerError {
    BrokerError::Protocol(e.to_string())
}

/// A message taken from a queue; it stays unacknowledged until [`Delivery::ack`].
#[derive(Debug)]
pub struct Delivery {
    /// The message id (batch id) set by the publisher.
    pub message_id: Option<String>,
    /// The protobuf type name of the payload.
    pub kind: Option<String>,
    /// The W3C trace context the publisher sent.
    pub traceparent: Option<String>,
    /// Whether the broker delivered this message before.
    pub redelivered: bool,
    /// The encoded payload.
    pub payload: Vec<u8>,
    inner: lapin::message::Delivery,
}

impl Delivery {
    /// Acknowledges: the broker forgets the message.
    pub async fn ack(&self) -> Result<(), BrokerError> {
        self.inner
            .ack(BasicAckOptions::default())
            .await
            .map(|_| ())
            .map_err(protocol)
    }

    /// Returns the message: requeued for another delivery, or dead-lettered when `requeue` is
    /// false (and, on quorum queues, once the delivery limit is reached).
    pub async fn nack(&self, requeue: bool) -> Result<(), BrokerError> {
        self.inner
            .nack(BasicNackOptions {
                requeue,
                ..Default::default()
            })
            .await
            .map(|_| ())
            .map_err(protocol)
    }
}

/// A consumer on one queue; keeps its channel open while alive.
pub struct Subscription {
    _channel: Channel,
    consumer: lapin::Consumer,
}

impl Subscription {
    /// The next delivery; `None` when the consumer was cancelled or the channel closed.
    pub async fn next(&mut self) -> Option<Result<Delivery, BrokerError>> {
        let delivery = self.consumer.next().await?;
        Some(delivery.map(convert).map_err(protocol))
    }
}

fn header_string(headers: Option<&FieldTable>, key: &str) -> Option<String> {
    match headers?.inner().get(key)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_string()),
        _ => None,
    }
}

fn convert(inner: lapin::message::Delivery) -> Delivery {
    let properties = &inner.properties;
    Delivery {
        message_id: properties.message_id().as_ref().map(|s| s.to_string()),
        kind: properties.kind().as_ref().map(|s| s.to_string()),
        traceparent: header_string(
            properties.headers().as_ref(),
            sightline_kit::telemetry::trace_context::TRACEPARENT,
        ),
        redelivered: inner.redelivered,
        payload: inner.data.clone(),
        inner,
    }
}

/// Starts consuming `queue` with at most `prefetch` unacknowledged deliveries.
pub async fn consume(
    connection: &Connection,
    queue: &str,
    consumer_tag: &str,
    prefetch: u16,
) -> Result<Subscription, BrokerError> {
    let channel = connection.create_channel().await.map_err(protocol)?;
    channel
        .basic_qos(prefetch, BasicQosOptions::default())
        .await
        .map_err(protocol)?;
    let consumer = channel
        .basic_consume(
            queue.into(),
            consumer_tag.into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(protocol)?;
    Ok(Subscription {
        _channel: channel,
        consumer,
    })
}
