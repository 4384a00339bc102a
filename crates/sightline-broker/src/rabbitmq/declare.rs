//! Declares the topology idempotently: every service may do it at start.

use lapin::{
    Channel, ExchangeKind,
    options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions},
    types::{AMQPValue, FieldTable, ShortString},
};

use crate::{BrokerError, Route, Topology};

fn protocol(e: lapin::Error) -> BrokerError {
    BrokerError::Protocol(e.to_string())
}

/// Arguments of a quorum queue that dead-letters to the topology's DLX.
fn quorum_arguments(topology: &Topology, delivery_limit: u32, single_active: bool) -> FieldTable {
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    // RabbitMQ 3.10 sets no delivery limit on quorum queues by default; poison messages would
    // otherwise be redelivered forever.
    args.insert(
        "x-delivery-limit".into(),
        AMQPValue::LongInt(i32::try_from(delivery_limit).unwrap_or(i32::MAX)),
    );
    args.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString(topology.dead_letter_exchange().into()),
    );
    if single_active {
        // One consumer per partition at a time keeps a visitor's events in order.
        args.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
    }
    args
}

async fn durable_exchange(channel: &Channel, name: String) -> Result<(), BrokerError> {
    channel
        .exchange_declare(
            ShortString::from(name),
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(protocol)
}

async fn durable_queue(
    channel: &Channel,
    name: &str,
    arguments: FieldTable,
) -> Result<(), BrokerError> {
    channel
        .queue_declare(
            name.into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            arguments,
        )
        .await
        .map(|_| ())
        .map_err(protocol)
}

async fn bind(
    channel: &Channel,
    queue: &str,
    exchange: &str,
    key: &str,
) -> Result<(), BrokerError> {
    channel
        .queue_bind(
            queue.into(),
            exchange.into(),
            key.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(protocol)
}

/// Declares exchanges, partition queues of every consumer group, the invalid queue and the
/// dead-letter queue. Declaring again with the same arguments is a no-op; with different ones
/// RabbitMQ refuses (`PRECONDITION_FAILED`), which is reported as an error.
pub async fn declare_topology(
    channel: &Channel,
    topology: &Topology,
    delivery_limit: u32,
) -> Result<(), BrokerError> {
    durable_exchange(channel, topology.events_exchange()).await?;
    durable_exchange(channel, topology.dead_letter_exchange()).await?;

    let mut dlq_args = FieldTable::default();
    dlq_args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    let dlq = topology.dead_letter_queue();
    durable_queue(channel, &dlq, dlq_args).await?;
    bind(channel, &dlq, &topology.dead_letter_exchange(), "#").await?;

    let exchange = topology.events_exchange();
    for (_, partition, queue) in topology.partition_queues() {
        durable_queue(
            channel,
            &queue,
            quorum_arguments(topology, delivery_limit, true),
        )
        .await?;
        let key = Topology::routing_key(Route::Partition(partition));
        bind(channel, &queue, &exchange, &key).await?;
    }
    let invalid = topology.invalid_queue();
    durable_queue(
        channel,
        &invalid,
        quorum_arguments(topology, delivery_limit, false),
    )
    .await?;
    bind(
        channel,
        &invalid,
        &exchange,
        &Topology::routing_key(Route::Invalid),
    )
    .await?;
    Ok(())
}

/// Deletes every queue and exchange of `topology`, messages included: the end of a test or
/// benchmark namespace. Missing ones are skipped (each operation gets its own channel, since a
/// failed one closes its channel).
pub async fn delete_topology(connection: &lapin::Connection, topology: &Topology) {
    let mut queues: Vec<String> = topology.partition_queues().map(|(_, _, q)| q).collect();
    queues.push(topology.invalid_queue());
    queues.push(topology.dead_letter_queue());
    for queue in queues {
        if let Ok(channel) = connection.create_channel().await {
            let _ = channel
                .queue_delete(queue.as_str().into(), Default::default())
                .await;
            let _ = channel.close(200, "deleted".into()).await;
        }
    }
    for exchange in [topology.events_exchange(), topology.dead_letter_exchange()] {
        if let Ok(channel) = connection.create_channel().await {
            let _ = channel
                .exchange_delete(exchange.as_str().into(), Default::default())
                .await;
            let _ = channel.close(200, "deleted".into()).await;
        }
    }
}
