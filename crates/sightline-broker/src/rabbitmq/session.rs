//! Connecting to RabbitMQ.

use lapin::{Connection, ConnectionProperties};

use crate::BrokerError;

/// Opens a connection named `name` (shown in the RabbitMQ management UI and `rabbitmqctl`).
pub async fn connect(url: &str, name: &str) -> Result<Connection, BrokerError> {
    let properties = ConnectionProperties::default().with_connection_name(name.into());
    Connection::connect(url, properties)
        .await
        .map_err(|e| BrokerError::Protocol(e.to_string()))
}
