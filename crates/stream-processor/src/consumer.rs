//! One partition queue of one consumer group: connect, consume, flush, acknowledge.
//!
//! The loop keeps the broker's messages unacknowledged until the sink made them durable, so a
//! crash anywhere means redelivery. While a flush fails (database or lake down) the consumer
//! holds its messages, turns not ready and retries with backoff; the prefetch limit stops the
//! broker from sending more. It never closes its channel over a failed flush: closing would
//! return the messages and count against their delivery limit, dead-lettering good events
//! during an outage.

use std::time::{Duration, Instant};

use sightline_broker::{
    BrokerConfig, Delivery, Subscription,
    rabbitmq::{connect, consume, declare_topology},
};
use sightline_kit::ComponentHealth;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::{
    config::Backoff,
    metrics::{FailureLabels, GroupLabels, StreamMetrics},
    sink::{Incoming, Sink},
};

/// A consumer that has had nothing to do for this long tells its sink so
/// ([`Sink::idle`]), and again every `IDLE_AFTER` while it stays idle.
pub const IDLE_AFTER: Duration = Duration::from_secs(5);

/// How one consumer runs.
#[derive(Debug, Clone)]
pub struct ConsumerSettings {
    /// The consumer group (`rollup`, `archive`).
    pub group: &'static str,
    /// The queue to consume.
    pub queue: String,
    /// Where the broker is.
    pub broker: BrokerConfig,
    /// Unacknowledged messages held at most.
    pub prefetch: u16,
    /// Longest time a message waits in the buffer.
    pub flush_interval: Duration,
    /// Where in each interval this queue flushes: its flush times are the wall clock's
    /// multiples of `flush_interval` shifted by this much (see [`until_next_flush`]).
    pub flush_phase: Duration,
    /// Retry schedule for connections and flushes.
    pub backoff: Backoff,
    /// After shutdown is requested: time left to flush before giving up (messages are then
    /// redelivered to the next consumer).
    pub shutdown_grace: Duration,
}

/// Time from `now` (since the Unix epoch) to the queue's next flush time, in `(0, interval]`:
/// flush times are the wall clock's multiples of `interval` shifted by `phase`. The queues of a
/// group get phases spread over the interval, so their flushes (the rollups' transactions, the
/// archive's Parquet encoding) come one after another rather than all at once, whether the
/// queues share a process or not. Under steady load a queue flushes exactly once an interval;
/// a message never waits longer than the interval.
fn until_next_flush(now: Duration, interval: Duration, phase: Duration) -> Duration {
    let interval_ns = interval.as_nanos().max(1);
    let into = (now.as_nanos() + interval_ns - phase.as_nanos() % interval_ns) % interval_ns;
    Duration::from_nanos(u64::try_from(interval_ns - into).unwrap_or(u64::MAX))
}

/// Why [`PartitionConsumer::serve`] returned.
enum Ended {
    /// Shutdown was requested and handled.
    Shutdown,
    /// The broker connection or channel was lost; unacknowledged messages come again.
    ConnectionLost(String),
}

/// A sink fed by one queue.
pub struct PartitionConsumer<S> {
    settings: ConsumerSettings,
    sink: S,
    health: ComponentHealth,
    metrics: StreamMetrics,
    /// Messages accepted since the last successful flush, acknowledged after the next one.
    pending: Vec<Delivery>,
    /// When the oldest pending message must be flushed.
    flush_due: Option<tokio::time::Instant>,
    /// The latest delivery or idle heartbeat.
    last_activity: tokio::time::Instant,
}

impl<S: Sink> PartitionConsumer<S> {
    /// A consumer of `settings.queue` into `sink`, reporting to `health`.
    pub fn new(
        settings: ConsumerSettings,
        sink: S,
        health: ComponentHealth,
        metrics: StreamMetrics,
    ) -> Self {
        Self {
            settings,
            sink,
            health,
            metrics,
            pending: Vec::new(),
            flush_due: None,
            last_activity: tokio::time::Instant::now(),
        }
    }

    fn labels(&self) -> GroupLabels {
        GroupLabels {
            group: self.settings.group,
        }
    }

    /// Consumes until `shutdown`, reconnecting whenever the broker goes away.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let span =
            info_span!("consumer", group = self.settings.group, queue = %self.settings.queue);
        async move {
            let mut failures = 0u32;
            while !shutdown.is_cancelled() {
                let subscription = match self.subscribe().await {
                    Ok(s) => s,
                    Err(error) => {
                        self.health.not_ready(format!("broker: {error}"));
                        warn!(%error, failures, "cannot consume, retrying");
                        failures = failures.saturating_add(1);
                        let delay = self.settings.backoff.delay(failures);
                        tokio::select! {
                            _ = shutdown.cancelled() => break,
                            _ = tokio::time::sleep(delay) => continue,
                        }
                    }
                };
                failures = 0;
                self.health.ready();
                info!("consuming");
                // The connection must outlive the subscription's channel.
                let (_connection, mut subscription) = subscription;
                match self.serve(subscription.as_mut(), &shutdown).await {
                    Ended::Shutdown => break,
                    Ended::ConnectionLost(reason) => {
                        warn!(%reason, pending = self.pending.len(), "broker connection lost, buffer dropped for redelivery");
                        self.health.not_ready(format!("broker: {reason}"));
                        self.pending.clear();
                        self.flush_due = None;
                        self.sink.reset();
                    }
                }
            }
            self.sink.close().await;
            info!("stopped");
        }
        .instrument(span)
        .await
    }

    async fn subscribe(
        &self,
    ) -> Result<(lapin::Connection, Box<dyn Subscription>), sightline_broker::BrokerError> {
        let s = &self.settings;
        let name = format!("sightline-stream-{}", s.queue);
        let connection = connect(s.broker.url.expose(), &name).await?;
        let topology = s.broker.topology();
        let channel = connection
            .create_channel()
            .await
            .map_err(|e| sightline_broker::BrokerError::Protocol(e.to_string()))?;
        declare_topology(&channel, &topology, s.broker.delivery_limit).await?;
        let _ = channel.close(200, "declared".into()).await;
        let subscription = consume(
            &connection,
            &s.queue,
            &name,
            s.prefetch,
            &topology.dead_letter_exchange(),
        )
        .await?;
        Ok((connection, Box::new(subscription)))
    }

    async fn serve(
        &mut self,
        subscription: &mut dyn Subscription,
        shutdown: &CancellationToken,
    ) -> Ended {
        loop {
            let flush_due = self.flush_due;
            let flush_timer = async move {
                match flush_due {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            // Only a drained consumer is idle: anything pending is the flush timer's.
            let idle_at = self
                .pending
                .is_empty()
                .then_some(self.last_activity + IDLE_AFTER);
            let idle_timer = async move {
                match idle_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => {
                    let deadline = Instant::now() + self.settings.shutdown_grace;
                    if let Err(reason) = self.flush_and_ack(Some(deadline), shutdown).await {
                        warn!(%reason, "final flush incomplete, messages will be redelivered");
                    }
                    return Ended::Shutdown;
                }
                _ = flush_timer => {
                    if let Err(reason) = self.flush_and_ack(None, shutdown).await {
                        return Ended::ConnectionLost(reason);
                    }
                }
                _ = idle_timer => {
                    self.last_activity = tokio::time::Instant::now();
                    if let Err(error) = self.sink.idle().await {
                        debug!(%error, "idle heartbeat failed");
                    }
                }
                next = subscription.next() => match next {
                    None => return Ended::ConnectionLost("the subscription ended".into()),
                    Some(Err(error)) => return Ended::ConnectionLost(error.to_string()),
                    Some(Ok(delivery)) => {
                        self.last_activity = tokio::time::Instant::now();
                        self.receive(delivery).await;
                        if self.sink.is_full()
                            && let Err(reason) = self.flush_and_ack(None, shutdown).await
                        {
                            return Ended::ConnectionLost(reason);
                        }
                    }
                },
            }
        }
    }

    /// Hands one delivery to the sink, or gives it back / dead-letters it if undecodable.
    async fn receive(&mut self, delivery: Delivery) {
        if let Some(unreadable) = &delivery.unreadable {
            let reason = format!(
                "payload not decodable from content-encoding {:?}: {}",
                unreadable.encoding, unreadable.reason
            );
            self.reject(delivery, &reason).await;
            return;
        }
        let incoming = Incoming {
            message_id: delivery.message_id.as_deref(),
            kind: delivery.kind.as_deref(),
            redelivered: delivery.redelivered,
            payload: &delivery.payload,
        };
        match self.sink.accept(incoming) {
            Ok(events) => {
                self.metrics.messages.get_or_create(&self.labels()).inc();
                self.metrics.windows.taken(&self.settings.queue, events);
                if self.flush_due.is_none() {
                    let since_epoch = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap_or_default();
                    let wait = until_next_flush(
                        since_epoch,
                        self.settings.flush_interval,
                        self.settings.flush_phase,
                    );
                    self.flush_due = Some(tokio::time::Instant::now() + wait);
                }
                self.pending.push(delivery);
            }
            Err(reason) => self.reject(delivery, &reason.0).await,
        }
    }

    /// An undecodable message: given back until its last allowed delivery, then moved to the
    /// dead-letter queue with the reason, so it is neither lost nor retried forever.
    async fn reject(&mut self, delivery: Delivery, reason: &str) {
        let limit = self.settings.broker.delivery_limit;
        let last_attempt = delivery.delivery_count.saturating_add(1) >= limit;
        let message_id = delivery.message_id.clone().unwrap_or_default();
        if last_attempt {
            match delivery.dead_letter(&self.settings.queue, reason).await {
                Ok(()) => {
                    self.metrics
                        .dead_lettered
                        .get_or_create(&self.labels())
                        .inc();
                    self.metrics.windows.dead_lettered(&self.settings.queue);
                    warn!(%message_id, %reason, "undecodable message dead-lettered");
                }
                Err(error) => {
                    // Not acknowledged: the broker dead-letters it itself at the limit.
                    warn!(%message_id, %error, "cannot dead-letter, giving the message back");
                    let _ = delivery.nack(true).await;
                }
            }
        } else {
            self.metrics.undecodable.get_or_create(&self.labels()).inc();
            warn!(%message_id, %reason, attempts = delivery.delivery_count + 1, "undecodable message given back");
            let _ = delivery.nack(true).await;
        }
    }

    /// Flushes the sink until it succeeds, then acknowledges the covered messages. Gives up
    /// (messages unacknowledged) at `deadline` or, without one, on shutdown. `Err` means the
    /// acknowledgements could not be sent: the connection is gone.
    async fn flush_and_ack(
        &mut self,
        deadline: Option<Instant>,
        shutdown: &CancellationToken,
    ) -> Result<(), String> {
        self.flush_due = None;
        if self.pending.is_empty() {
            return Ok(());
        }
        let mut failures = 0u32;
        loop {
            let started = Instant::now();
            let events = self.sink.buffered_events();
            match self.sink.flush().await {
                Ok(written) => {
                    let labels = self.labels();
                    self.metrics
                        .flush_seconds
                        .get_or_create(&labels)
                        .observe(started.elapsed().as_secs_f64());
                    self.metrics.flushes.get_or_create(&labels).inc();
                    self.metrics
                        .events_flushed
                        .get_or_create(&labels)
                        .inc_by(events as u64);
                    self.metrics.windows.flushed(&self.settings.queue, written);
                    if failures > 0 {
                        info!(failures, "flush succeeded again");
                        self.health.ready();
                    }
                    debug!(events, messages = self.pending.len(), "flushed");
                    return self.ack_pending().await;
                }
                Err(error) => {
                    failures = failures.saturating_add(1);
                    self.metrics
                        .flush_failures
                        .get_or_create(&FailureLabels {
                            group: self.settings.group,
                            target: error.target(),
                        })
                        .inc();
                    self.health.not_ready(error.to_string());
                    warn!(%error, failures, "flush failed, holding messages and retrying");
                    let delay = self.settings.backoff.delay(failures);
                    match deadline {
                        Some(deadline) => {
                            if Instant::now() + delay >= deadline {
                                return Err("shutdown grace period over".into());
                            }
                            tokio::time::sleep(delay).await;
                        }
                        None => {
                            tokio::select! {
                                _ = shutdown.cancelled() => {
                                    let deadline = Instant::now() + self.settings.shutdown_grace;
                                    return Box::pin(self.flush_and_ack(Some(deadline), shutdown)).await;
                                }
                                _ = tokio::time::sleep(delay) => {}
                            }
                        }
                    }
                }
            }
        }
    }

    async fn ack_pending(&mut self) -> Result<(), String> {
        for delivery in self.pending.drain(..) {
            // Already durable: a failed ack only means a redelivery, deduplicated downstream.
            delivery.ack().await.map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn flushes_fall_on_the_queue_s_own_grid() {
        let ms = Duration::from_millis;
        // Phase 250 ms in a 1 s interval: flush times are …, 10.25 s, 11.25 s, …
        assert_eq!(until_next_flush(ms(10_000), SECOND, ms(250)), ms(250));
        assert_eq!(until_next_flush(ms(10_249), SECOND, ms(250)), ms(1));
        // Exactly on a flush time: the next one, a whole interval later.
        assert_eq!(until_next_flush(ms(10_250), SECOND, ms(250)), SECOND);
        assert_eq!(until_next_flush(ms(10_900), SECOND, ms(250)), ms(350));
        // A phase of a whole interval or more is the same grid.
        assert_eq!(until_next_flush(ms(10_900), SECOND, ms(1_250)), ms(350));
    }

    #[test]
    fn spread_phases_give_queues_distinct_flush_times_within_one_interval() {
        let interval = Duration::from_secs(45);
        let now = Duration::from_secs(1_800_000_000) + Duration::from_millis(1234);
        let mut at: Vec<Duration> = (0..9u32)
            .map(|slot| until_next_flush(now, interval, interval * slot / 9))
            .collect();
        assert!(at.iter().all(|wait| !wait.is_zero() && *wait <= interval));
        at.sort();
        // Nine queues, nine flush times a ninth of the interval apart.
        for pair in at.windows(2) {
            assert_eq!(pair[1] - pair[0], interval / 9);
        }
    }
}
