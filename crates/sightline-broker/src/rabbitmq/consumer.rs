//! Consuming a RabbitMQ queue with manual acknowledgements.

use futures_util::StreamExt;
use lapin::{
    BasicProperties, Channel, Connection,
    options::{BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions},
    types::{AMQPValue, FieldTable, ShortString},
};

use crate::{
    BrokerError,
    delivery::{Delivery, Settle, Subscription},
};

fn protocol(e: lapin::Error) -> BrokerError {
    BrokerError::Protocol(e.to_string())
}

/// Header naming why a consumer dead-lettered a message.
pub const REASON_HEADER: &str = "x-sightline-reason";
/// Header naming the queue a dead-lettered message came from.
pub const QUEUE_HEADER: &str = "x-sightline-queue";

/// A confirm-mode channel that copies messages to the dead-letter exchange.
#[derive(Clone)]
pub(crate) struct DeadLetters {
    channel: Channel,
    exchange: ShortString,
}

impl DeadLetters {
    pub(crate) async fn publish(
        &self,
        delivery: &Delivery,
        queue: &str,
        reason: &str,
    ) -> Result<(), BrokerError> {
        let mut headers = FieldTable::default();
        headers.insert(REASON_HEADER.into(), AMQPValue::LongString(reason.into()));
        headers.insert(QUEUE_HEADER.into(), AMQPValue::LongString(queue.into()));
        let mut properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_headers(headers);
        if let Some(id) = &delivery.message_id {
            properties = properties.with_message_id(id.as_str().into());
        }
        if let Some(kind) = &delivery.kind {
            properties = properties.with_type(kind.as_str().into());
        }
        if let Some(unreadable) = &delivery.unreadable {
            properties = properties.with_content_encoding(unreadable.encoding.as_str().into());
        }
        let confirm = self
            .channel
            .basic_publish(
                self.exchange.clone(),
                queue.into(),
                BasicPublishOptions::default(),
                &delivery.payload,
                properties,
            )
            .await
            .map_err(protocol)?
            .await
            .map_err(protocol)?;
        if confirm.is_nack() {
            return Err(BrokerError::Protocol(
                "the broker refused the dead letter".into(),
            ));
        }
        Ok(())
    }
}

/// A consumer on one queue; keeps its channels open while alive.
pub struct RabbitSubscription {
    _channel: Channel,
    consumer: lapin::Consumer,
    dead_letters: DeadLetters,
}

#[async_trait::async_trait]
impl Subscription for RabbitSubscription {
    async fn next(&mut self) -> Option<Result<Delivery, BrokerError>> {
        let delivery = self.consumer.next().await?;
        let dead_letters = self.dead_letters.clone();
        Some(delivery.map(|d| convert(d, dead_letters)).map_err(protocol))
    }
}

fn header<'a>(headers: Option<&'a FieldTable>, key: &str) -> Option<&'a AMQPValue> {
    headers?.inner().get(key)
}

fn header_string(headers: Option<&FieldTable>, key: &str) -> Option<String> {
    match header(headers, key)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_string()),
        _ => None,
    }
}

/// RabbitMQ sends `x-delivery-count` in whichever integer width it likes.
fn header_count(headers: Option<&FieldTable>, key: &str) -> u32 {
    let value = match header(headers, key) {
        Some(AMQPValue::LongLongInt(n)) => *n,
        Some(AMQPValue::LongInt(n)) => i64::from(*n),
        Some(AMQPValue::ShortInt(n)) => i64::from(*n),
        Some(AMQPValue::LongUInt(n)) => i64::from(*n),
        Some(AMQPValue::ShortUInt(n)) => i64::from(*n),
        _ => 0,
    };
    u32::try_from(value).unwrap_or(0)
}

fn convert(inner: lapin::message::Delivery, dead_letters: DeadLetters) -> Delivery {
    let properties = &inner.properties;
    let headers = properties.headers().as_ref();
    let encoding = properties.content_encoding().as_ref().map(|e| e.as_str());
    let (payload, unreadable) = match crate::encoding::decode(encoding, inner.data) {
        Ok(payload) => (payload, None),
        Err((payload, why)) => (payload, Some(why)),
    };
    Delivery {
        message_id: properties.message_id().as_ref().map(|s| s.to_string()),
        kind: properties.kind().as_ref().map(|s| s.to_string()),
        traceparent: header_string(
            headers,
            sightline_kit::telemetry::trace_context::TRACEPARENT,
        ),
        redelivered: inner.redelivered,
        delivery_count: header_count(headers, "x-delivery-count"),
        payload,
        unreadable,
        settle: Settle::Rabbit {
            acker: inner.acker,
            dead_letters,
        },
    }
}

/// Starts consuming `queue` with at most `prefetch` unacknowledged deliveries. Messages the
/// consumer gives up on ([`Delivery::dead_letter`]) go to `dead_letter_exchange`.
pub async fn consume(
    connection: &Connection,
    queue: &str,
    consumer_tag: &str,
    prefetch: u16,
    dead_letter_exchange: &str,
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
    let dead_letter_channel = connection.create_channel().await.map_err(protocol)?;
    dead_letter_channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(protocol)?;
    Ok(RabbitSubscription {
        _channel: channel,
        consumer,
        dead_letters: DeadLetters {
            channel: dead_letter_channel,
            exchange: dead_letter_exchange.into(),
        },
    })
}
