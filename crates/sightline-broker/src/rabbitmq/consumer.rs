//! Consuming a RabbitMQ queue with manual acknowledgements.

use futures_util::StreamExt;
use lapin::{
    Channel, Connection,
    options::{BasicConsumeOptions, BasicQosOptions},
    types::{AMQPValue, FieldTable},
};

use crate::{
    BrokerError,
    delivery::{Delivery, Settle, Subscription},
};

fn protocol(e: lapin::Error) -> BrokerError {
    BrokerError::Protocol(e.to_string())
}

/// A consumer on one queue; keeps its channel open while alive.
pub struct RabbitSubscription {
    _channel: Channel,
    consumer: lapin::Consumer,
}

#[async_trait::async_trait]
impl Subscription for RabbitSubscription {
    async fn next(&mut self) -> Option<Result<Delivery, BrokerError>> {
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
        payload: inner.data,
        settle: Settle::Rabbit(inner.acker),
    }
}

/// Starts consuming `queue` with at most `prefetch` unacknowledged deliveries.
pub async fn consume(
    connection: &Connection,
    queue: &str,
    consumer_tag: &str,
    prefetch: u16,
) -> Result<RabbitSubscription, BrokerError> {
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
    Ok(RabbitSubscription {
        _channel: channel,
        consumer,
    })
}
