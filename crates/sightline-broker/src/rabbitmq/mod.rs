//! RabbitMQ backend (lapin): topology, a confirming publisher that reconnects, and consumers.

mod declare;
mod publisher;
mod session;

pub mod consumer;

pub use consumer::{RabbitSubscription, consume};
pub use declare::{declare_topology, delete_topology};
pub use publisher::RabbitPublisher;
pub use session::connect;
