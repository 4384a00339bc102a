//! Coalesces the events of concurrent requests into one broker message per partition.
//!
//! Each partition has a task that collects submissions until the message is full (events or
//! bytes) or the linger time since its first submission has passed, then publishes it and,
//! once the broker confirmed (or the deadline passed), answers every submitter. A request is
//! answered when all the messages holding its events are confirmed.
//!
//! Submitters encode their events themselves, on their own thread, as the `events` field of an
//! `EventBatch`; sealing a message is then writing its header and appending those bytes, which
//! gives exactly the bytes of encoding the whole `EventBatch` at once.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use prost::{Message as _, encoding::message as repeated};
use sightline_broker::{BrokerError, Message, Publisher, Route};
use sightline_proto::events::v1::{Event, EventBatch};
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::{config::BatchingConfig, metrics::IngestMetrics};

/// The protobuf type name on the wire.
pub const EVENT_BATCH_KIND: &str = "sightline.events.v1.EventBatch";

/// The field number of `EventBatch.events`.
const EVENTS_FIELD: u32 = 4;

struct Submission {
    /// How many events `encoded` holds.
    events: usize,
    /// The events, encoded as `EventBatch` field 4 (key, length, message each).
    encoded: Bytes,
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
        let mut encoded = Vec::with_capacity(repeated::encoded_len_repeated(EVENTS_FIELD, &events));
        repeated::encode_repeated(EVENTS_FIELD, &events, &mut encoded);
        let count = events.len();
        // Freed here, on the submitter's thread, rather than in the coalescer.
        drop(events);
        let (done, confirmed) = oneshot::channel();
        let submission = Submission {
            events: count,
            encoded: encoded.into(),
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
        let mut events = first.events;
        let mut bytes = first.encoded.len();
        let mut batch = vec![first];
        // One timer per message, not one per submission.
        let sealed = tokio::time::sleep(linger);
        tokio::pin!(sealed);
        while events < config.max_events && bytes < config.max_bytes {
            tokio::select! {
                biased;
                next = rx.recv() => match next {
                    Some(s) => {
                        events += s.events;
                        bytes += s.encoded.len();
                        batch.push(s);
                    }
                    None => break,
                },
                _ = &mut sealed => break,
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
    let count = submissions.iter().map(|s| s.events).sum::<usize>();
    let batch_id = uuid::Uuid::now_v7().to_string();
    let payload = seal(
        EventBatch {
            batch_id: batch_id.clone(),
            partition,
            created_at_us: chrono::Utc::now().timestamp_micros(),
            events: Vec::new(),
        },
        submissions.iter().map(|s| &s.encoded),
    );
    let waiters: Vec<_> = submissions.into_iter().map(|s| s.done).collect();
    let message = Message {
        route: Route::Partition(partition),
        id: batch_id,
        kind: EVENT_BATCH_KIND,
        payload,
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

/// The encoded `EventBatch` of `header` (without events) and the encoded events: the header's
/// fields come first (1 to 3), then field 4 repeated, as prost writes the whole message.
fn seal<'a>(header: EventBatch, events: impl Iterator<Item = &'a Bytes> + Clone) -> Bytes {
    let mut payload =
        Vec::with_capacity(header.encoded_len() + events.clone().map(Bytes::len).sum::<usize>());
    payload.extend_from_slice(&header.encode_to_vec());
    for part in events {
        payload.extend_from_slice(part);
    }
    payload.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(i: usize) -> Event {
        Event {
            message_id: format!("m-{i}"),
            tenant_id: 7,
            site_id: 9,
            r#type: 1,
            name: "Order Completed".into(),
            visitor_id: format!("v-{i}"),
            timestamp_us: 1_700_000_000_000_000 + i as i64,
            properties_json: Bytes::from(format!(r#"{{"revenue":{i}}}"#)),
            context_json: Bytes::from_static(br#"{"locale":"fr-FR"}"#),
            ..Default::default()
        }
    }

    #[test]
    fn a_sealed_batch_is_the_protobuf_encoding_of_the_whole_batch() {
        let submissions: Vec<Vec<Event>> = vec![
            (0..3).map(event).collect(),
            vec![],
            (3..300).map(event).collect(),
        ];
        let encoded: Vec<Bytes> = submissions
            .iter()
            .map(|events| {
                let mut buf = Vec::new();
                repeated::encode_repeated(EVENTS_FIELD, events, &mut buf);
                Bytes::from(buf)
            })
            .collect();
        for partition in [0, 5] {
            let header = EventBatch {
                batch_id: "0190f6a0-0000-7000-8000-000000000000".into(),
                partition,
                created_at_us: 1_700_000_000_123_456,
                events: Vec::new(),
            };
            let whole = EventBatch {
                events: submissions.concat(),
                ..header.clone()
            };
            assert_eq!(seal(header, encoded.iter()), whole.encode_to_vec());
        }
    }
}
