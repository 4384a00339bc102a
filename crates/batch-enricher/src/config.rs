//! The batch enricher's configuration: the `[batch]` section and the document it runs on.

use std::net::SocketAddr;

use chrono::NaiveTime;
use serde::Deserialize;
use sightline_db::DatabaseConfig;
use sightline_kit::{ConfigError, ConfigLoader, Problems, TelemetryConfig};
use sightline_lake::LakeConfig;

use crate::reference::Join;

/// Embedded defaults of the `[batch]` section.
pub const DEFAULTS: &str = include_str!("../default.toml");

/// Everything the batch enricher runs on.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `[telemetry]`.
    pub telemetry: TelemetryConfig,
    /// `[database]`: sites, rollups, closures and the run tables.
    pub database: DatabaseConfig,
    /// `[lake]`: where `raw/` is read and `trusted/` written.
    pub lake: LakeConfig,
    /// `[batch]`.
    pub batch: BatchConfig,
}

impl Config {
    /// A loader with every embedded default the batch enricher needs.
    pub fn loader() -> ConfigLoader {
        ConfigLoader::new()
            .defaults(sightline_kit::telemetry::DEFAULTS)
            .defaults(sightline_db::DEFAULTS)
            .defaults(sightline_lake::config::DEFAULTS)
            .defaults(DEFAULTS)
            .list("batch.extra_bot_user_agents")
            .list("batch.reference_joins")
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
        p.extend(self.lake.validate());
        p.extend(self.batch.validate());
        p
    }
}

/// `[batch]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchConfig {
    /// Address of `/livez`, `/readyz` and `/metrics` in `serve` mode.
    pub admin_listen: String,
    /// Tenant-days processed concurrently.
    pub parallelism: usize,
    /// Raw rows processed at once (a chunk of whole visitors).
    pub chunk_rows: u64,
    /// Hours read around a local day so visits crossing its edges are whole.
    pub session_margin_hours: u32,
    /// The etl-metrics ledger's gRPC endpoint; empty: log only.
    pub ledger_endpoint: String,
    /// Extra bot user agent substrings (case-insensitive), on top of the shared detector.
    pub extra_bot_user_agents: Vec<String>,
    /// Reference datasets joined into `trusted/events`: `DATASET.COLUMN = PROPERTY.PATH` rules
    /// ([`crate::reference`]).
    pub reference_joins: Vec<String>,
    /// `[batch.schedule]`.
    pub schedule: ScheduleConfig,
    /// `[batch.import]`.
    pub import: ImportConfig,
}

/// `[batch.schedule]`: when `serve` runs `daily`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleConfig {
    /// Whether `serve` runs the daily job at all.
    pub enabled: bool,
    /// Local time of day, `HH:MM`.
    pub daily_at: String,
    /// IANA time zone of `daily_at`.
    pub time_zone: String,
}

/// `[batch.import]`: bulk source files to `raw/`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportConfig {
    /// Files converted concurrently.
    pub parallelism: usize,
    /// Rows per output Parquet file at most.
    pub max_rows_per_file: usize,
}

impl ScheduleConfig {
    /// The validated time of day.
    pub fn time(&self) -> Option<NaiveTime> {
        NaiveTime::parse_from_str(&self.daily_at, "%H:%M").ok()
    }

    /// The validated time zone.
    pub fn zone(&self) -> Option<chrono_tz::Tz> {
        self.time_zone.parse().ok()
    }
}

impl BatchConfig {
    /// The validated `reference_joins`.
    pub fn joins(&self) -> Result<Vec<Join>, String> {
        let joins = self
            .reference_joins
            .iter()
            .map(|rule| Join::parse(rule))
            .collect::<Result<Vec<_>, _>>()?;
        let mut names: Vec<&str> = joins.iter().map(|j| j.dataset.as_str()).collect();
        names.sort_unstable();
        match names.windows(2).find(|w| w[0] == w[1]) {
            Some(twice) => Err(format!("dataset `{}` is joined twice", twice[0])),
            None => Ok(joins),
        }
    }

    /// Every problem with this section.
    pub fn validate(&self) -> Problems {
        let mut p = Problems::new();
        p.check(
            self.admin_listen.parse::<SocketAddr>().is_ok(),
            "batch.admin_listen",
            format!(
                "`{}` is not a socket address such as 0.0.0.0:9103",
                self.admin_listen
            ),
        );
        p.check(
            (1..=64).contains(&self.parallelism),
            "batch.parallelism",
            "must be between 1 and 64",
        );
        p.check(self.chunk_rows > 0, "batch.chunk_rows", "must be positive");
        p.check(
            (1..=48).contains(&self.session_margin_hours),
            "batch.session_margin_hours",
            "must be between 1 and 48",
        );
        p.check(
            self.ledger_endpoint.is_empty()
                || self.ledger_endpoint.starts_with("http://")
                || self.ledger_endpoint.starts_with("https://"),
            "batch.ledger_endpoint",
            "must be empty or an http(s):// URL",
        );
        p.check(
            self.extra_bot_user_agents
                .iter()
                .all(|s| !s.trim().is_empty()),
            "batch.extra_bot_user_agents",
            "must not hold empty patterns (they would match every user agent)",
        );
        if let Err(reason) = self.joins() {
            p.check(false, "batch.reference_joins", reason);
        }
        p.check(
            self.schedule.time().is_some(),
            "batch.schedule.daily_at",
            format!("`{}` is not a time such as 03:00", self.schedule.daily_at),
        );
        p.check(
            self.schedule.zone().is_some(),
            "batch.schedule.time_zone",
            format!("`{}` is not an IANA time zone", self.schedule.time_zone),
        );
        p.check(
            (1..=64).contains(&self.import.parallelism),
            "batch.import.parallelism",
            "must be between 1 and 64",
        );
        p.check(
            self.import.max_rows_per_file > 0,
            "batch.import.max_rows_per_file",
            "must be positive",
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
    fn defaults_are_valid() {
        let config = load(&[]).unwrap();
        assert_eq!(config.batch.admin_listen, "0.0.0.0:9103");
        assert_eq!(
            config.batch.schedule.time(),
            NaiveTime::from_hms_opt(3, 0, 0)
        );
    }

    #[test]
    fn every_problem_is_reported() {
        let error = load(&[
            ("SIGHTLINE__BATCH__ADMIN_LISTEN", "nowhere"),
            ("SIGHTLINE__BATCH__SCHEDULE__DAILY_AT", "25:99"),
            ("SIGHTLINE__BATCH__SCHEDULE__TIME_ZONE", "Mars/Olympus"),
            ("SIGHTLINE__BATCH__PARALLELISM", "0"),
        ])
        .unwrap_err()
        .to_string();
        for expected in [
            "batch.admin_listen",
            "daily_at",
            "Mars/Olympus",
            "batch.parallelism",
        ] {
            assert!(error.contains(expected), "{expected} missing in {error}");
        }
    }

    #[test]
    fn bot_patterns_come_as_a_list_from_the_environment() {
        let config = load(&[("SIGHTLINE__BATCH__EXTRA_BOT_USER_AGENTS", "Foo,BarBot")]).unwrap();
        assert_eq!(config.batch.extra_bot_user_agents, ["Foo", "BarBot"]);
    }

    #[test]
    fn reference_joins_are_checked() {
        let config = load(&[(
            "SIGHTLINE__BATCH__REFERENCE_JOINS",
            "products.sku = product.id,stores.code = store",
        )])
        .unwrap();
        let joins = config.batch.joins().unwrap();
        assert_eq!(joins[1].path, ["store"]);
        let error = load(&[("SIGHTLINE__BATCH__REFERENCE_JOINS", "products.sku")])
            .unwrap_err()
            .to_string();
        assert!(error.contains("batch.reference_joins"), "{error}");
        let twice = load(&[(
            "SIGHTLINE__BATCH__REFERENCE_JOINS",
            "products.sku = a,products.id = b",
        )]);
        assert!(twice.is_err());
    }
}
