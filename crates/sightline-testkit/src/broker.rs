//! Removing a test's broker namespace, so test runs do not leave quorum queues behind (each is
//! a Raft group RabbitMQ keeps running: a few hundred of them slow the broker for everyone).

use lapin::{Connection, ConnectionProperties};
use sightline_broker::Topology;

/// The local RabbitMQ every test uses.
pub const AMQP: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// Deletes every queue and exchange of `topology` on the local RabbitMQ; errors are ignored
/// (cleanup only).
pub async fn delete_topology(topology: &Topology) {
    if let Ok(connection) = Connection::connect(AMQP, ConnectionProperties::default()).await {
        sightline_broker::rabbitmq::delete_topology(&connection, topology).await;
        let _ = connection.close(200, "cleaned up".into()).await;
    }
}
