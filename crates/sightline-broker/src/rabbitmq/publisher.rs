//! A publisher that waits for RabbitMQ's confirms and rides through reconnects.
//!
//! One background task owns the connection: it connects with exponential backoff, declares the
//! topology, opens confirm-mode channels and hands them out as a *session*. When the connection
//! fails, the session is withdrawn (readiness turns false), and publishes whose confirm was lost
//! wait for the next session and publish again until their deadline. A message can therefore
//! reach the broker twice; consumers dedupe by message id.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use futures_util::StreamExt;
use lapin::{
    BasicProperties, Channel, Connection, Event,
    options::{BasicPublishOptions, ConfirmSelectOptions},
    types::{AMQPValue, FieldTable, ShortString},
};
use sightline_kit::ComponentHealth;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use super::{declare::declare_topology, session::connect};
use crate::{BrokerConfig, BrokerError, CONTENT_TYPE_PROTOBUF, Message, Publisher, Topology};

/// Publishes to RabbitMQ with publisher confirms.
#[derive(Clone)]
pub struct RabbitPublisher {
    inner: Arc<Inner>,
}

struct Inner {
    config: BrokerConfig,
    name: String,
    topology: Topology,
    exchange: ShortString,
    session: watch::Sender<Option<Arc<Session>>>,
    broken: Notify,
    broken_generation: AtomicU64,
    next_channel: AtomicUsize,
    closed: CancellationToken,
    health: ComponentHealth,
}

struct Session {
    generation: u64,
    connection: Connection,
    channels: Vec<Channel>,
}

impl RabbitPublisher {
    /// Starts the connection task; the publisher is usable at once and publishes wait for the
    /// first connection. `name` names the connection in RabbitMQ.
    pub fn start(config: &BrokerConfig, name: &str, health: ComponentHealth) -> Self {
        health.not_ready("connecting");
        let topology = config.topology();
        let inner = Arc::new(Inner {
            config: config.clone(),
            name: name.to_string(),
            exchange: topology.events_exchange().into(),
            topology,
            session: watch::channel(None).0,
            broken: Notify::new(),
            broken_generation: AtomicU64::new(0),
            next_channel: AtomicUsize::new(0),
            closed: CancellationToken::new(),
            health,
        });
        tokio::spawn(maintain(inner.clone()));
        Self { inner }
    }

    async fn current_session(&self, deadline: Instant) -> Result<Arc<Session>, BrokerError> {
        let mut rx = self.inner.session.subscribe();
        let wait = rx.wait_for(Option::is_some);
        tokio::select! {
            biased;
            _ = self.inner.closed.cancelled() => Err(BrokerError::Closed),
            r = tokio::time::timeout_at(deadline.into(), wait) => match r {
                Ok(Ok(session)) => session.clone().ok_or(BrokerError::Closed),
                Ok(Err(_)) => Err(BrokerError::Closed),
                Err(_) => Err(BrokerError::Timeout),
            },
        }
    }

    fn report_broken(&self, generation: u64) {
        // A publish that failed on an older session must not hide a report on the current one.
        self.inner
            .broken_generation
            .fetch_max(generation, Ordering::SeqCst);
        self.inner.broken.notify_one();
    }
}

fn properties(message: &Message, encoding: Option<&str>) -> BasicProperties {
    let mut headers = FieldTable::default();
    if let Some(tp) = &message.traceparent {
        headers.insert(
            sightline_kit::telemetry::trace_context::TRACEPARENT.into(),
            AMQPValue::LongString(tp.as_str().into()),
        );
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let properties = BasicProperties::default();
    let properties = match encoding {
        Some(encoding) => properties.with_content_encoding(encoding.into()),
        None => properties,
    };
    properties
        .with_message_id(message.id.as_str().into())
        .with_content_type(CONTENT_TYPE_PROTOBUF.into())
        .with_type(message.kind.into())
        .with_delivery_mode(2)
        .with_timestamp(now)
        .with_headers(headers)
}

#[async_trait::async_trait]
impl Publisher for RabbitPublisher {
    async fn publish(&self, message: &Message, deadline: Instant) -> Result<(), BrokerError> {
        let routing_key: ShortString = Topology::routing_key(message.route).into();
        let config = &self.inner.config;
        let (body, encoding) =
            crate::encoding::encode(&message.payload, config.compression, config.zstd_level);
        loop {
            let session = self.current_session(deadline).await?;
            let index = self.inner.next_channel.fetch_add(1, Ordering::Relaxed);
            let channel = &session.channels[index % session.channels.len()];
            let attempt = async {
                channel
                    .basic_publish(
                        self.inner.exchange.clone(),
                        routing_key.clone(),
                        // Mandatory: a message no queue takes comes back instead of vanishing.
                        BasicPublishOptions {
                            mandatory: true,
                            ..Default::default()
                        },
                        &body,
                        properties(message, encoding),
                    )
                    .await?
                    .await
            };
            match tokio::time::timeout_at(deadline.into(), attempt).await {
                Err(_) => return Err(BrokerError::Timeout),
                Ok(Ok(confirmation)) if confirmation.is_ack() => {
                    return match confirmation.take_message() {
                        None => Ok(()),
                        Some(_) => Err(BrokerError::Unroutable(message.route)),
                    };
                }
                Ok(Ok(_nack)) => {
                    tracing::warn!(id = %message.id, "broker nacked a message, publishing again");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Ok(Err(error)) => {
                    tracing::warn!(id = %message.id, %error, "publish failed, waiting for a new connection");
                    self.report_broken(session.generation);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    }

    async fn close(&self) {
        self.inner.closed.cancel();
        let session = self.inner.session.send_replace(None);
        if let Some(session) = session {
            // As on a reconnect: a broker gone silent never answers the close.
            let limit = Duration::from_millis(self.inner.config.connect_timeout_ms);
            let _ =
                tokio::time::timeout(limit, session.connection.close(200, "closing".into())).await;
        }
    }
}

async fn open_session(inner: &Inner, generation: u64) -> Result<Session, BrokerError> {
    let connection = connect(inner.config.url.expose(), &inner.name).await?;
    let protocol = |e: lapin::Error| BrokerError::Protocol(e.to_string());
    let setup = connection.create_channel().await.map_err(protocol)?;
    declare_topology(&setup, &inner.topology, inner.config.delivery_limit).await?;
    let _ = setup.close(200, "topology declared".into()).await;
    let mut channels = Vec::with_capacity(inner.config.publish_channels);
    for _ in 0..inner.config.publish_channels {
        let channel = connection.create_channel().await.map_err(protocol)?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(protocol)?;
        channels.push(channel);
    }
    Ok(Session {
        generation,
        connection,
        channels,
    })
}

/// The connection task: connect, hand out the session, wait for it to fail, repeat.
async fn maintain(inner: Arc<Inner>) {
    let min = Duration::from_millis(inner.config.reconnect_backoff_min_ms);
    let max = Duration::from_millis(inner.config.reconnect_backoff_max_ms);
    let mut backoff = min;
    let attempt_limit = Duration::from_millis(inner.config.connect_timeout_ms);
    let mut generation = 0;
    while !inner.closed.is_cancelled() {
        // lapin has no timeout of its own: a peer that accepts the connection and then goes
        // quiet would otherwise hold this task, and readiness, for good.
        let attempt = tokio::time::timeout(attempt_limit, open_session(&inner, generation + 1))
            .await
            .unwrap_or_else(|_| {
                Err(BrokerError::Protocol(format!(
                    "no connection within {attempt_limit:?}"
                )))
            });
        let session = match attempt {
            Ok(session) => Arc::new(session),
            Err(error) => {
                tracing::warn!(%error, retry_in = ?backoff, "cannot connect to the broker");
                inner.health.not_ready(format!("cannot connect: {error}"));
                tokio::select! {
                    _ = inner.closed.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(max);
                continue;
            }
        };
        generation = session.generation;
        backoff = min;
        let mut events = session.connection.events_listener();
        inner.session.send_replace(Some(session.clone()));
        inner.health.ready();
        tracing::info!(generation, "connected to the broker");
        loop {
            tokio::select! {
                _ = inner.closed.cancelled() => return,
                _ = inner.broken.notified() => {
                    if inner.broken_generation.load(Ordering::SeqCst) == generation {
                        break;
                    }
                }
                event = events.next() => match event {
                    None | Some(Event::Error(_)) => break,
                    Some(Event::ConnectionBlocked(reason)) => {
                        tracing::warn!(%reason, "broker blocked publishing");
                        inner.health.not_ready(format!("blocked by the broker: {reason}"));
                    }
                    Some(Event::ConnectionUnblocked) => inner.health.ready(),
                    Some(_) => {}
                },
            }
        }
        inner.session.send_replace(None);
        inner.health.not_ready("reconnecting");
        tracing::warn!(generation, "broker connection lost, reconnecting");
        // A connection that is gone may never answer the close; reconnecting does not wait.
        tokio::spawn(async move {
            let close = session.connection.close(320, "reconnecting".into());
            let _ = tokio::time::timeout(attempt_limit, close).await;
        });
    }
}
