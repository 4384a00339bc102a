//! Coalesces the events of concurrent requests into one broker message per partition.
//!
//! Each partition has a task that collects submissions until the message is full (events or
//! bytes) or the linger time since its first submission has passed, then publishes it and,
//! once the broker confirmed (or the deadline passed), answers every submitter. A request is
//! answered when all the messages holding its events are confirmed.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use prost::Message as _;
use sightline_broker::{BrokerError, Message, Publisher, Route};
use sightline_proto::events::v1::{Event, EventBatch};
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::{config::BatchingConfig, metrics::IngestMetrics};

/// The protobuf type name on the wire.
pub const EVENT_BATCH_KIND: &str = "sightline.events.v1.EventBatch";

struct Submission {
    events: Vec<Event>,
    bytes: usize,
    traceparent: Option<String>,
    deadline: Instant,
    done: oneshot::Sender<Result<(), BrokerError>>,
}

/// The per-partition coalescers of one ingest process.
#[derive(Clone)]
pub struct Batcher {
    partitions: Vec<mpsc::Sender<Submission>>,
}

impl Batcher {
    /// Starts one coalescing task per partition. The tasks end, after publishing what they
    /// hold, once every clone of the batcher is dropped.
    pub fn start(
        publisher: Arc<dyn Publisher>,
        partitions: u32,
        config: &BatchingConfig,
        metrics: IngestMetrics,
    ) -> (Self, Vec<tokio::task::JoinHandle<()>>) {
        let mut senders = Vec::new();
        let mut tasks = Vec::new();
        for partition in 0..partitions {
            let (tx, rx) = mpsc::channel(4096);
            senders.push(tx);
            tasks.push(tokio::spawn(coalesce(
                partition,
                rx,
                publisher.clone(),
                config.clone(),
                metrics.clone(),
            )));
        }
        (
            Self {
                partitions: senders,
            },
            tasks,
        )
    }

    /// Submits one partition's events; resolves when the broker confirmed the message holding
    /// them, or with an error at `deadline`.
    pub async fn submit(
        &self,
        partition: u32,
        events: Vec<Event>,
        traceparent: Option<String>,
        deadline: Instant,
    ) -> Result<(), BrokerError> {
        let bytes = events.iter().map(|e| e.encoded_len() + 4).sum();
        let (done, confirmed) = oneshot::channel();
        let submission = Submission {
            events,
            bytes,
            traceparent,
            deadline,
            done,
        };
        let sender = self
            .partitions
            .get(partition as usize)
            .ok_or(BrokerError::Closed)?;
        match tokio::time::timeout_at(deadline.into(), sender.send(submission)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(BrokerError::Closed),
            Err(_) => return Err(BrokerError::Timeout),
        }
        confirmed.await.unwrap_or(Err(BrokerError::Closed))
    }
}

async fn coalesce(
    partition: u32,
    mut rx: mpsc::Receiver<Submission>,
    publisher: Arc<dyn Publisher>,
    config: BatchingConfig,
    metrics: IngestMetrics,
) {
    let in_flight = Arc::new(Semaphore::new(config.max_in_flight));
    let linger = Duration::from_millis(config.linger_ms);
    while let Some(first) = rx.recv().await {
        let sealed_by = tokio::time::Instant::now() + linger;
        let mut events = first.events.len();
        let mut bytes = first.bytes;
        let mut batch = vec![first];
        while events < config.max_events && bytes < config.max_bytes {
            tokio::select! {
                biased;
                next = rx.recv() => match next {
                    Some(s) => {
                        events += s.events.len();
                        bytes += s.bytes;
                        batch.push(s);
                    }
                    None => break,
                },
                _ = tokio::time::sleep_until(sealed_by) => break,
            }
        }
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let publisher = publisher.clone();
        let metrics = metrics.clone();
        tokio::spawn(async move {
            publish(partition, batch, publisher.as_ref(), &metrics).await;
            drop(permit);
        });
    }
    // Wait for the messages still awaiting confirms before reporting the partition drained.
    let _ = in_flight.acquire_many(config.max_in_flight as u32).await;
}

async fn publish(
    partition: u32,
    submissions: Vec<Submission>,
    publisher: &dyn Publisher,
    metrics: &IngestMetrics,
) {
    let deadline = submissions
        .iter()
        .map(|s| s.deadline)
        .min()
        .unwrap_or_else(Instant::now);
    let traceparent = submissions.iter().find_map(|s| s.traceparent.clone());
    let mut events = Vec::with_capacity(submissions.iter().map(|s| s.events.len()).sum());
    let mut waiters = Vec::with_capacity(submissions.len());
    for s in submissions {
        events.extend(s.events);
        waiters.push(s.done);
    }
    let count = events.len();
    let batch_id = uuid::Uuid::now_v7().to_string();
    let batch = EventBatch {
        batch_id: batch_id.clone(),
        partition,
        created_at_us: chrono::Utc::now().timestamp_micros(),
        events,
    };
    let message = Message {
        route: Route::Partition(partition),
        id: batch_id,
        kind: EVENT_BATCH_KIND,
        payload: batch.encode_to_vec().into(),
        traceparent,
    };
    let result = publisher.publish(&message, deadline).await;
    match &result {
        Ok(()) => {
            metrics.batches_confirmed.inc();
            metrics.batch_events.observe(count as f64);
        }
        Err(error) => {
            metrics.batches_failed.inc();
            tracing::warn!(partition, events = count, %error, "batch not confirmed");
        }
    }
    for waiter in waiters {
        let _ = waiter.send(result.clone());
    }
}
