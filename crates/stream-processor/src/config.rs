//! The stream processor's configuration: the `[stream]` section and the document it runs on.

use std::{net::SocketAddr, time::Duration};

use serde::Deserialize;
use sightline_broker::BrokerConfig;
use sightline_db::DatabaseConfig;
use sightline_kit::{ConfigError, ConfigLoader, Problems, TelemetryConfig};
use sightline_lake::LakeConfig;

/// Embedded defaults of the `[stream]` section.
pub const DEFAULTS: &str = include_str!("../default.toml");

/// The consumer groups the stream processor implements.
pub const GROUPS: [&str; 2] = [ROLLUP, ARCHIVE];
/// The rollup group's name (also its queues' infix).
pub const ROLLUP: &str = "rollup";
/// The archive group's name.
pub const ARCHIVE: &str = "archive";

/// Everything the stream processor runs on.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `[telemetry]`.
    pub telemetry: TelemetryConfig,
    /// `[database]`: the serving database the rollups go to.
    pub database: DatabaseConfig,
    /// `[broker]`: where the partition queues are.
    pub broker: BrokerConfig,
    /// `[lake]`: where the archive goes.
    pub lake: LakeConfig,
    /// `[stream]`.
    pub stream: StreamConfig,
}

impl Config {
    /// A loader with every embedded default the stream processor needs.
    pub fn loader() -> ConfigLoader {
        ConfigLoader::new()
            .defaults(sightline_kit::telemetry::DEFAULTS)
            .defaults(sightline_db::DEFAULTS)
            .defaults(sightline_broker::config::DEFAULTS)
            .defaults(sightline_lake::config::DEFAULTS)
            .defaults(DEFAULTS)
            .list("stream.groups")
            .list("broker.consumer_groups")
    }

    /// Loads and validates.
    pub fn load(loader: &ConfigLoader) -> Result<Self, ConfigError> {
        let config: Self = loader.load()?;
        config.validate().into_result()?;
        Ok(config)
    }

    /// Every problem in every section.
    pub fn validate(&self) -> Problems {
        let mut p = self.telemetry.validate();
        p.extend(self.database.validate());
        p.extend(self.broker.validate());
        p.extend(self.lake.validate());
        p.extend(self.stream.validate(&self.broker));
        p
    }
}

/// `[stream]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamConfig {
    /// Address of `/livez`, `/readyz` and `/metrics`.
    pub admin_listen: String,
    /// Consumer groups this process runs (`rollup`, `archive`).
    pub groups: Vec<String>,
    /// Unacknowledged messages per partition consumer.
    pub prefetch: u16,
    /// First delay before retrying a failed flush or connection.
    pub retry_backoff_min_ms: u64,
    /// Longest delay between retries.
    pub retry_backoff_max_ms: u64,
    /// Time to flush buffers after SIGTERM.
    pub shutdown_grace_ms: u64,
    /// etl-metrics' gRPC endpoint (`http://etl-metrics:50052`) for window reports; empty: none.
    pub ledger_endpoint: String,
    /// Length of a ledger window report.
    pub report_interval_ms: u64,
    /// `[stream.rollup]`.
    pub rollup: RollupConfig,
    /// `[stream.archive]`.
    pub archive: ArchiveConfig,
}

/// `[stream.rollup]`: the speed layer's aggregates.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RollupConfig {
    /// In-memory aggregation time before a flush.
    pub flush_interval_ms: u64,
    /// Buffered events of one partition that force a flush.
    pub max_buffered_events: usize,
    /// Oldest event time (against the wall clock) the speed layer still counts.
    pub late_event_max_age_secs: u64,
    /// How long processed batch ids are remembered.
    pub batch_id_retention_hours: u64,
    /// Visitor states go to the partition's log on each flush and to the `rollup_visitors`
    /// snapshot, written beside the flushes, every this many flushes
    /// (`migrations/0010_rollup_visitor_log.sql`, `rollup::store::write_snapshot`).
    pub visitor_snapshot_flushes: u64,
}

/// `[stream.archive]`: raw events to the lake.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchiveConfig {
    /// Longest time events wait in the buffer.
    pub flush_interval_ms: u64,
    /// Buffered events that force a write.
    pub max_buffered_events: usize,
    /// Buffered bytes (encoded events) that force a write.
    pub max_buffered_bytes: usize,
    /// How long the archive ledger remembers which batches were stored.
    pub ledger_retention_hours: u64,
    /// Flushes of this process that encode Parquet at once; 0: half the cores the process may
    /// use, at least one ([`ArchiveConfig::encoder_count`]).
    pub encoders: usize,
}

impl ArchiveConfig {
    /// How many flushes may encode at once: `encoders`, or for 0 half the cores this process
    /// may use (its CPU quota included), at least one.
    pub fn encoder_count(&self) -> usize {
        match self.encoders {
            0 => std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1)),
            n => n,
        }
    }
}

/// The retry schedule shared by connections and flushes.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    /// First delay.
    pub min: Duration,
    /// Longest delay.
    pub max: Duration,
}

impl Backoff {
    /// The delay after `failures` consecutive failures (doubling, capped).
    pub fn delay(&self, failures: u32) -> Duration {
        let factor = 1u32 << failures.min(16);
        self.min.saturating_mul(factor).min(self.max)
    }
}

impl StreamConfig {
    /// The retry schedule.
    pub fn backoff(&self) -> Backoff {
        Backoff {
            min: Duration::from_millis(self.retry_backoff_min_ms),
            max: Duration::from_millis(self.retry_backoff_max_ms),
        }
    }

    /// Whether this process runs `group`.
    pub fn runs(&self, group: &str) -> bool {
        self.groups.iter().any(|g| g == group)
    }

    /// Every problem with this section (`broker`: the groups must have queues).
    pub fn validate(&self, broker: &BrokerConfig) -> Problems {
        let mut p = Problems::new();
        p.check(
            self.admin_listen.parse::<SocketAddr>().is_ok(),
            "stream.admin_listen",
            format!(
                "`{}` is not a socket address such as 0.0.0.0:9102",
                self.admin_listen
            ),
        );
        p.check(
            !self.groups.is_empty(),
            "stream.groups",
            "must name at least one consumer group",
        );
        for group in &self.groups {
            p.check(
                GROUPS.contains(&group.as_str()),
                "stream.groups",
                format!("`{group}` is not a consumer group (rollup, archive)"),
            );
            p.check(
                broker.consumer_groups.contains(group),
                "stream.groups",
                format!("`{group}` has no queues: add it to broker.consumer_groups"),
            );
        }
        p.check(self.prefetch > 0, "stream.prefetch", "must be at least 1");
        let endpoint = self.ledger_endpoint.trim();
        p.check(
            endpoint.is_empty()
                || endpoint.starts_with("http://")
                || endpoint.starts_with("https://"),
            "stream.ledger_endpoint",
            "must be an http:// or https:// URL, or empty",
        );
        p.check(
            self.report_interval_ms > 0,
            "stream.report_interval_ms",
            "must be positive",
        );
        p.check(
            self.retry_backoff_min_ms > 0 && self.retry_backoff_min_ms <= self.retry_backoff_max_ms,
            "stream.retry_backoff_min_ms",
            "must be positive and at most stream.retry_backoff_max_ms",
        );
        p.check(
            self.rollup.flush_interval_ms > 0,
            "stream.rollup.flush_interval_ms",
            "must be positive",
        );
        p.check(
            self.rollup.max_buffered_events > 0,
            "stream.rollup.max_buffered_events",
            "must be positive",
        );
        p.check(
            (1..=10_000).contains(&self.rollup.visitor_snapshot_flushes),
            "stream.rollup.visitor_snapshot_flushes",
            "must be between 1 (a snapshot on every flush) and 10000",
        );
        p.check(
            self.rollup.batch_id_retention_hours >= 1,
            "stream.rollup.batch_id_retention_hours",
            "must be at least 1: redeliveries after it would count twice",
        );
        p.check(
            self.archive.flush_interval_ms > 0,
            "stream.archive.flush_interval_ms",
            "must be positive",
        );
        p.check(
            self.archive.max_buffered_events > 0 && self.archive.max_buffered_bytes > 0,
            "stream.archive.max_buffered_events",
            "size bounds must be positive",
        );
        p.check(
            self.archive.ledger_retention_hours >= 1,
            "stream.archive.ledger_retention_hours",
            "must be at least 1: redeliveries after it would be archived twice",
        );
        p
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn load(env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::load(&Config::loader().env_map(env))
    }

    #[test]
    fn defaults_run_both_groups_and_are_valid() {
        let config = load(&[]).unwrap();
        assert!(config.stream.runs(ROLLUP) && config.stream.runs(ARCHIVE));
        assert_eq!(config.stream.admin_listen, "0.0.0.0:9102");
    }

    #[test]
    fn every_problem_is_reported() {
        let error = load(&[
            ("SIGHTLINE__STREAM__GROUPS", "rollup,sessions"),
            ("SIGHTLINE__STREAM__ADMIN_LISTEN", "nowhere"),
            ("SIGHTLINE__STREAM__ROLLUP__FLUSH_INTERVAL_MS", "0"),
        ])
        .unwrap_err()
        .to_string();
        for expected in ["`sessions`", "stream.admin_listen", "flush_interval_ms"] {
            assert!(error.contains(expected), "{expected} missing in {error}");
        }
    }

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let b = Backoff {
            min: Duration::from_millis(100),
            max: Duration::from_millis(1000),
        };
        assert_eq!(b.delay(0), Duration::from_millis(100));
        assert_eq!(b.delay(2), Duration::from_millis(400));
        assert_eq!(b.delay(30), Duration::from_millis(1000));
    }
}
