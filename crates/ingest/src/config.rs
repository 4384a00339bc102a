//! Ingest's configuration: the `[ingest]` section and the whole document it runs on.

use std::net::SocketAddr;

use serde::Deserialize;
use sightline_broker::BrokerConfig;
use sightline_db::DatabaseConfig;
use sightline_kit::{ConfigError, ConfigLoader, Problems, TelemetryConfig, config::Secret};

/// Embedded defaults of the `[ingest]` section.
pub const DEFAULTS: &str = include_str!("../default.toml");

/// Everything ingest runs on.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `[telemetry]`.
    pub telemetry: TelemetryConfig,
    /// `[database]`: where write keys are read from.
    pub database: DatabaseConfig,
    /// `[broker]`: where events are published.
    pub broker: BrokerConfig,
    /// `[ingest]`.
    pub ingest: IngestConfig,
}

impl Config {
    /// A loader with every embedded default ingest needs; add a file and environment on top.
    pub fn loader() -> ConfigLoader {
        ConfigLoader::new()
            .defaults(sightline_kit::telemetry::DEFAULTS)
            .defaults(sightline_db::DEFAULTS)
            .defaults(sightline_broker::config::DEFAULTS)
            .defaults(DEFAULTS)
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
        p.extend(self.ingest.validate());
        p
    }
}

/// `[ingest]`: the HTTP collector.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestConfig {
    /// Address of the collector API.
    pub listen: String,
    /// Address of `/livez`, `/readyz` and `/metrics`.
    pub admin_listen: String,
    /// HTTP worker threads; 0 for one per core.
    pub workers: usize,
    /// Largest event, in bytes of JSON after decompression.
    pub max_event_bytes: usize,
    /// Largest request body, in bytes after decompression (and before).
    pub max_request_bytes: usize,
    /// Client clock skew below which timestamps are kept as sent.
    pub clock_skew_threshold_ms: u64,
    /// How long a request waits for broker confirms.
    pub publish_timeout_ms: u64,
    /// Drain time after SIGTERM.
    pub shutdown_grace_ms: u64,
    /// Secret of the daily cookieless-visitor salt (masked in logs).
    pub visitor_salt_secret: Secret,
    /// Trust the first `X-Forwarded-For` entry as the client IP.
    pub trust_forwarded_for: bool,
    /// Default events a second per write key.
    pub default_rate_limit_per_sec: u32,
    /// Write-key reload interval.
    pub key_refresh_ms: u64,
    /// Duplicate-messageId window.
    pub dedupe_window_secs: u64,
    /// Most messageIds remembered per half-window.
    pub dedupe_capacity: usize,
    /// `[ingest.batching]`.
    pub batching: BatchingConfig,
}

/// `[ingest.batching]`: coalescing events into broker messages.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchingConfig {
    /// Longest wait for more events before sealing a message.
    pub linger_ms: u64,
    /// Most events in one message.
    pub max_events: usize,
    /// Most bytes of encoded events in one message.
    pub max_bytes: usize,
    /// Unconfirmed messages per partition.
    pub max_in_flight: usize,
}

impl IngestConfig {
    /// Every problem with this section.
    pub fn validate(&self) -> Problems {
        let mut p = Problems::new();
        for (key, value) in [
            ("ingest.listen", &self.listen),
            ("ingest.admin_listen", &self.admin_listen),
        ] {
            p.check(
                value.parse::<SocketAddr>().is_ok(),
                key,
                format!("`{value}` is not a socket address such as 0.0.0.0:8080"),
            );
        }
        p.check(
            self.max_event_bytes >= 1024,
            "ingest.max_event_bytes",
            "must be at least 1024",
        );
        p.check(
            self.max_request_bytes >= self.max_event_bytes,
            "ingest.max_request_bytes",
            "must be at least max_event_bytes",
        );
        p.check(
            self.publish_timeout_ms >= 100,
            "ingest.publish_timeout_ms",
            "must be at least 100",
        );
        p.check(
            self.default_rate_limit_per_sec > 0,
            "ingest.default_rate_limit_per_sec",
            "must be positive",
        );
        p.check(
            self.key_refresh_ms >= 50,
            "ingest.key_refresh_ms",
            "must be at least 50",
        );
        p.check(
            self.dedupe_window_secs >= 2 && self.dedupe_capacity >= 1000,
            "ingest.dedupe_window_secs",
            "window must be at least 2 s and capacity at least 1000",
        );
        let b = &self.batching;
        p.check(
            b.max_events >= 1 && b.max_bytes >= self.max_event_bytes,
            "ingest.batching.max_events",
            "max_events must be positive and max_bytes at least max_event_bytes",
        );
        p.check(
            b.max_in_flight >= 1,
            "ingest.batching.max_in_flight",
            "must be positive",
        );
        p
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn embedded_defaults_are_valid() {
        let config = Config::load(&Config::loader().env_map(HashMap::new())).unwrap();
        assert_eq!(config.ingest.listen, "0.0.0.0:8080");
        assert_eq!(config.ingest.max_event_bytes, 32768);
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let env = HashMap::from([
            (
                "SIGHTLINE__INGEST__LISTEN".to_string(),
                "nowhere".to_string(),
            ),
            ("SIGHTLINE__BROKER__PARTITIONS".to_string(), "0".to_string()),
            (
                "SIGHTLINE__INGEST__BATCHING__MAX_IN_FLIGHT".to_string(),
                "0".to_string(),
            ),
        ]);
        let err = Config::load(&Config::loader().env_map(env))
            .unwrap_err()
            .to_string();
        assert!(err.contains("ingest.listen"), "{err}");
        assert!(err.contains("broker.partitions"), "{err}");
        assert!(err.contains("ingest.batching.max_in_flight"), "{err}");
    }
}
