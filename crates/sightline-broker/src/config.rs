//! `[broker]`: which broker, where, and the shape of the topology.

use serde::Deserialize;
use sightline_kit::{Problems, config::Secret};

/// Embedded defaults of the `[broker]` section.
pub const DEFAULTS: &str = include_str!("../default.toml");

/// The broker backend.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum BrokerKind {
    /// RabbitMQ through lapin.
    Rabbitmq,
}

/// `[broker]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerConfig {
    /// Which backend.
    pub kind: BrokerKind,
    /// AMQP URI, credentials included (masked in logs).
    pub url: Secret,
    /// Prefix of every exchange and queue name.
    pub namespace: String,
    /// Partition queues per consumer group.
    pub partitions: u32,
    /// Consumer groups; each gets its own copy of every partition.
    pub consumer_groups: Vec<String>,
    /// Deliveries before a message is dead-lettered.
    pub delivery_limit: u32,
    /// Confirm-mode channels per publisher.
    pub publish_channels: usize,
    /// First reconnect delay.
    pub reconnect_backoff_min_ms: u64,
    /// Longest reconnect delay.
    pub reconnect_backoff_max_ms: u64,
    /// Longest wait for one connection attempt (handshake, topology, channels).
    pub connect_timeout_ms: u64,
    /// How publishers encode payloads on the wire (see [`crate::encoding`]).
    pub compression: crate::Compression,
    /// zstd level when `compression = "zstd"`.
    pub zstd_level: i32,
}

impl BrokerConfig {
    /// Every problem with this section.
    pub fn validate(&self) -> Problems {
        let mut p = Problems::new();
        p.check(
            self.url.expose().starts_with("amqp://") || self.url.expose().starts_with("amqps://"),
            "broker.url",
            "must be an amqp:// or amqps:// URI",
        );
        p.check(
            !self.namespace.is_empty()
                && self
                    .namespace
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)),
            "broker.namespace",
            "must be non-empty ASCII letters, digits, '-', '_' or '.'",
        );
        p.check(
            (1..=1024).contains(&self.partitions),
            "broker.partitions",
            "must be between 1 and 1024",
        );
        p.check(
            !self.consumer_groups.is_empty(),
            "broker.consumer_groups",
            "needs at least one group",
        );
        p.check(
            self.delivery_limit >= 1,
            "broker.delivery_limit",
            "must be at least 1",
        );
        p.check(
            (1..=64).contains(&self.publish_channels),
            "broker.publish_channels",
            "must be between 1 and 64",
        );
        p.check(
            self.reconnect_backoff_min_ms >= 1
                && self.reconnect_backoff_min_ms <= self.reconnect_backoff_max_ms,
            "broker.reconnect_backoff_min_ms",
            "must be at least 1 and at most reconnect_backoff_max_ms",
        );
        p.check(
            self.connect_timeout_ms >= 1,
            "broker.connect_timeout_ms",
            "must be at least 1",
        );
        p.check(
            (1..=19).contains(&self.zstd_level),
            "broker.zstd_level",
            "must be between 1 and 19",
        );
        p
    }

    /// The names this configuration gives the topology.
    pub fn topology(&self) -> crate::Topology {
        crate::Topology {
            namespace: self.namespace.clone(),
            partitions: self.partitions,
            consumer_groups: self.consumer_groups.clone(),
        }
    }
}
